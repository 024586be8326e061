"""Section 6 — Performance and capacity."""

from __future__ import annotations

from recsys_audit.catalog import Section

SECTION = Section(6, "Performance and capacity", notebook="06_performance")
