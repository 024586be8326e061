"""Section 7 — Safe rollout and rollback."""

from __future__ import annotations

from recsys_audit.catalog import Section

SECTION = Section(7, "Safe rollout and rollback", notebook="07_rollout_rollback")
