"""Section 3 — Pipelines and manifests."""

from __future__ import annotations

from recsys_audit.catalog import Section

SECTION = Section(3, "Pipelines and manifests", notebook="03_pipelines")
