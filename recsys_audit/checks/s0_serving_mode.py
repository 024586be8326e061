"""Section 0 — Serving mode."""

from __future__ import annotations

from recsys_audit.catalog import Section

SECTION = Section(0, "Serving mode", notebook="00_serving_mode")
