"""Findings: what a check concluded, with the evidence a reviewer can re-check.

A check returns an :class:`Outcome`; the notebook side turns it into a :class:`Finding` (adding the catalog metadata
and timing) and appends it to ``run_dir/findings/<notebook>.jsonl`` the moment it is known.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from recsys_audit.redaction import redact_json


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    ERROR = "error"  # could not be evaluated
    SKIP = "skip"  # not applicable, with a reason
    MANUAL = "manual"  # needs a human attestation


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)  # critical = 0

    def at_least(self, threshold: Severity) -> bool:
        return self.rank <= threshold.rank


Evidence = dict[str, Any]


@dataclass
class Outcome:
    """What a check function returns: a status, a one-line summary and the evidence behind it.

    Evidence is a JSON-able dict. A value that is a list of dicts is shown as a table.
    """

    status: Status
    summary: str
    evidence: Evidence = field(default_factory=dict)


def passed(summary: str, **evidence: Any) -> Outcome:
    return Outcome(Status.PASS, summary, evidence)


def failed(summary: str, **evidence: Any) -> Outcome:
    return Outcome(Status.FAIL, summary, evidence)


def warned(summary: str, **evidence: Any) -> Outcome:
    return Outcome(Status.WARN, summary, evidence)


def skipped(reason: str, **evidence: Any) -> Outcome:
    return Outcome(Status.SKIP, reason, evidence)


def manual(reason: str, **evidence: Any) -> Outcome:
    return Outcome(Status.MANUAL, reason, evidence)


def errored(reason: str, **evidence: Any) -> Outcome:
    return Outcome(Status.ERROR, reason, evidence)


def worst(*statuses: Status) -> Status:
    """The most serious of several statuses (fail > error > warn > manual > pass > skip)."""
    order = [Status.FAIL, Status.ERROR, Status.WARN, Status.MANUAL, Status.PASS, Status.SKIP]
    return min(statuses, key=order.index) if statuses else Status.SKIP


@dataclass
class Finding:
    id: str
    section: int
    title: str
    severity: Severity
    status: Status
    summary: str
    evidence: Evidence
    remediation: str
    reference: str
    duration_s: float
    items: list[str] = field(default_factory=list)  # checklist item ids (checklist.yaml) the check covers
    notebook: str = ""
    waiver: dict[str, Any] | None = None
    attestation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = str(self.severity)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["severity"] = Severity(known["severity"])
        known["status"] = Status(known["status"])
        return cls(**known)

    @property
    def waived(self) -> bool:
        return bool(self.waiver and self.waiver.get("applied"))


def append_finding(path: Path, finding: Finding) -> None:
    """Append one finding as a JSON line (redacted), flushing at once so a dying kernel loses nothing. Evidence keeps
    the order the check wrote it in: the report shows values and table columns in that order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(redact_json(finding.to_dict()), default=str)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()


def read_findings(path: Path) -> list[Finding]:
    """Read a findings JSONL file; a torn last line (kernel killed mid-write) is ignored."""
    findings = []
    if not path.exists():
        return findings
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            findings.append(Finding.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, ValueError, TypeError):
            continue
    return findings
