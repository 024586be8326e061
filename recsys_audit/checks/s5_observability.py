"""Section 5 — Observability and runbooks."""

from __future__ import annotations

from recsys_audit.catalog import Section

SECTION = Section(5, "Observability and runbooks", notebook="05_observability")
