"""Section 2 — Data contracts, logging and privacy."""

from __future__ import annotations

from recsys_audit.catalog import Section

SECTION = Section(2, "Data contracts, logging and privacy", notebook="02_data_privacy")
