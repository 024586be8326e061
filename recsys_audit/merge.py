"""Merge a run's recorded findings into one list: the last finding of each check, in catalog order, and an ``error``
finding for every catalog check that recorded none.

This gathers what the notebooks observed; judging it (waivers, attestations, verdict, score) is
:mod:`recsys_audit.judgement`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from recsys_audit.catalog import Section
from recsys_audit.findings import Finding, Status, read_findings

NOT_EVALUATED = "not evaluated"


def complete_findings(
    recorded: Iterable[Finding], sections: Iterable[Section], failures: Mapping[str, str]
) -> list[Finding]:
    """The recorded findings (last one per check wins) plus an ``error`` finding for every catalog check that has none.

    ``failures`` maps a notebook stem to why it did not finish (the failing cell's ``ename: evalue``, or a timeout).
    Findings come back in catalog order; findings of checks unknown to the catalog follow.
    """
    by_id: dict[str, Finding] = {}
    for finding in recorded:
        by_id.pop(finding.id, None)
        by_id[finding.id] = finding
    merged: list[Finding] = []
    for section in sections:
        reason = failures.get(section.notebook, "the notebook finished without evaluating it")
        for check in section.checks.values():
            finding = by_id.pop(check.id, None)
            if finding is None:
                finding = Finding(
                    id=check.id,
                    section=check.section,
                    title=check.title,
                    severity=check.severity,
                    status=Status.ERROR,
                    summary=f"{NOT_EVALUATED}: {reason}",
                    evidence={"notebook": section.notebook},
                    remediation=check.remediation,
                    reference=check.reference,
                    duration_s=0.0,
                    items=list(check.items),
                    notebook=section.notebook,
                )
            merged.append(finding)
    return merged + list(by_id.values())


def recorded_findings(findings_dir: Path) -> list[Finding]:
    """Every finding the notebooks appended to ``findings/*.jsonl``, notebook by notebook."""
    return [f for path in sorted(Path(findings_dir).glob("*.jsonl")) for f in read_findings(path)]
