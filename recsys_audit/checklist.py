"""The production-readiness checklist as data (``checklist.yaml``) and the coverage of its bullets by the checks.

Every bullet has a stable id (``1.dev-auth-disabled``); every check names the ids it gives evidence for
(``items=``) and the class of that evidence. :func:`coverage` is the requirement → checks matrix that
``recsys-audit checks`` prints, and :func:`attested_only` lists the bullets no probe can decide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from recsys_audit.catalog import Check

CHECKLIST_FILE = Path(__file__).with_name("checklist.yaml")


class EvidenceClass(StrEnum):
    """Where a check's verdict comes from, strongest first."""

    LIVE = "live"  # the running service: HTTP answers, /metrics, Prometheus
    DATA = "data"  # what the service and its pipelines stored: database rows, manifests, log files, reports
    CONFIG = "config"  # the deployment's config sources (env files, Helm values, compose, alert rules)
    DECLARED = "declared"  # what the params say about the deployment, checked for consistency only
    ATTESTED = "attested"  # a human attestation in params; no probe can decide it


@dataclass(frozen=True)
class ChecklistItem:
    id: str
    section: int
    text: str
    anchor: str
    parent: str | None = None


def load_yaml(path: Path) -> Any:
    """A YAML file of the kit's own (checklist, rules), parsed with libyaml when PyYAML has it."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@cache
def _document() -> dict[str, Any]:
    return load_yaml(CHECKLIST_FILE)


@cache
def checklist() -> dict[str, ChecklistItem]:
    """Every bullet by id, in checklist order."""
    document = _document()
    found: dict[str, ChecklistItem] = {}
    for section in document["sections"]:
        for entry in section["items"]:
            item = ChecklistItem(
                id=entry["id"],
                section=int(section["number"]),
                text=entry["text"],
                anchor=entry["anchor"],
                parent=entry.get("parent"),
            )
            if item.id in found:
                raise ValueError(f"{CHECKLIST_FILE.name}: duplicate item id {item.id}")
            if item.parent is not None and item.parent not in found:
                raise ValueError(f"{CHECKLIST_FILE.name}: {item.id}: parent {item.parent} must come before it")
            found[item.id] = item
    return found


@cache
def section_titles() -> dict[int, str]:
    return {int(section["number"]): section["title"] for section in _document()["sections"]}


def children(item_id: str) -> list[str]:
    return [item.id for item in checklist().values() if item.parent == item_id]


def unknown_items(checks: Iterable[Check]) -> dict[str, list[str]]:
    """check id -> the item ids it names that the checklist does not have."""
    known = checklist()
    bad = {check.id: [item for item in check.items if item not in known] for check in checks}
    return {check_id: items for check_id, items in bad.items() if items}


def coverage(checks: Iterable[Check]) -> list[dict[str, Any]]:
    """One row per checklist bullet: the checks that name it (directly) and those that cover it through a child."""
    checks = list(checks)
    rows = []
    for item in checklist().values():
        direct = [c for c in checks if item.id in c.items]
        via_children = [c for child in children(item.id) for c in checks if child in c.items and c not in direct]
        rows.append(
            {
                "id": item.id,
                "section": item.section,
                "text": item.text,
                "parent": item.parent,
                "checks": [{"id": c.id, "evidence": str(c.evidence)} for c in direct],
                "covered_by_children": sorted({c.id for c in via_children}),
                "evidence": sorted({str(c.evidence) for c in [*direct, *via_children]}),
            }
        )
    return rows


def uncovered(checks: Iterable[Check]) -> list[str]:
    """Bullets no check covers, directly or through a child."""
    return [row["id"] for row in coverage(checks) if not row["checks"] and not row["covered_by_children"]]


def attested_only(checks: Iterable[Check]) -> list[str]:
    """Bullets whose every covering check needs a human attestation: no probe can decide them."""
    return [row["id"] for row in coverage(checks) if row["evidence"] == [str(EvidenceClass.ATTESTED)]]
