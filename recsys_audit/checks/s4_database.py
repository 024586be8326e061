"""Section 4 — Database and migrations."""

from __future__ import annotations

from recsys_audit.catalog import Section

SECTION = Section(4, "Database and migrations", notebook="04_database")
