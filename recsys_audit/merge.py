"""Merge a run's findings: catalog completeness, attestations, waivers, verdict and exit code.

Everything here is a pure function of the recorded findings, the catalog, the params and the day of the run, so a
report can be re-derived from the run directory alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from recsys_audit.catalog import Section
from recsys_audit.findings import Finding, Severity, Status
from recsys_audit.params import Params, attestation_for


class ExitCode(IntEnum):
    """What ``recsys-audit run`` returns. INCOMPLETE wins over FAILED: an incomplete audit cannot be trusted."""

    PASSED = 0  # no unwaived fail at or above the fail-on severity
    FAILED = 1  # at least one unwaived fail at or above the fail-on severity
    USAGE = 2  # bad params or command line; nothing ran
    INCOMPLETE = 3  # a notebook failed or a check could not be evaluated (unwaived error finding)


VERDICTS = {
    ExitCode.PASSED: "pass",
    ExitCode.FAILED: "fail",
    ExitCode.USAGE: "usage error",
    ExitCode.INCOMPLETE: "incomplete",
}

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


def apply_attestations(findings: list[Finding], params: Params, today: dt.date) -> None:
    """A ``manual`` finding with a fresh attestation becomes ``pass``; a stale one stays manual and says so."""
    max_age = params.policies.attestation_max_age_days
    for finding in findings:
        if finding.status != Status.MANUAL:
            continue
        attestation = attestation_for(params, finding.id)
        if attestation is None:
            continue
        age_days = (today - attestation.date).days
        fresh = 0 <= age_days <= max_age
        finding.attestation = {
            "applied": fresh,
            "by": attestation.by,
            "date": attestation.date.isoformat(),
            "evidence_url": attestation.evidence_url,
            "note": attestation.note,
            "age_days": age_days,
        }
        if fresh:
            finding.status = Status.PASS
            finding.summary = f"attested by {attestation.by} on {attestation.date} ({attestation.evidence_url})"
        else:
            finding.summary += (
                f" — attestation expired (by {attestation.by} on {attestation.date}, older than {max_age} days)"
            )


def apply_waivers(findings: list[Finding], params: Params, today: dt.date) -> None:
    """Attach waivers to findings that are not passing. Status is kept; an expired waiver does not apply."""
    for finding in findings:
        if finding.status in {Status.PASS, Status.SKIP}:
            continue
        waivers = [w for w in params.waivers if w.check == finding.id]
        if not waivers:
            continue
        waiver = max(waivers, key=lambda w: w.expires)
        applied = waiver.expires >= today
        note = (
            f"waived until {waiver.expires} by {waiver.approved_by}: {waiver.justification}"
            if applied
            else f"waiver expired on {waiver.expires}"
        )
        finding.waiver = {
            "applied": applied,
            "justification": waiver.justification,
            "expires": waiver.expires.isoformat(),
            "approved_by": waiver.approved_by,
            "note": note,
        }
        if not applied:
            finding.summary += f" (waiver expired on {waiver.expires})"


def waiver_report(findings: list[Finding], params: Params, today: dt.date) -> list[dict[str, Any]]:
    """Every waiver in params with its state: applied, expired, or unused (no non-passing finding of that check)."""
    by_id = {f.id: f for f in findings}
    rows = []
    for waiver in params.waivers:
        finding = by_id.get(waiver.check)
        if waiver.expires < today:
            state = "expired"
        elif finding is not None and finding.waived:
            state = "applied"
        else:
            state = "unused"
        rows.append(
            {
                "check": waiver.check,
                "state": state,
                "justification": waiver.justification,
                "expires": waiver.expires.isoformat(),
                "approved_by": waiver.approved_by,
                "finding_status": str(finding.status) if finding else None,
            }
        )
    return rows


def attestation_report(findings: list[Finding], params: Params, today: dt.date) -> list[dict[str, Any]]:
    """Every attestation in params with its state: applied, expired, or unused (no manual finding to attest)."""
    by_id = {f.id: f for f in findings}
    max_age = params.policies.attestation_max_age_days
    rows = []
    for attestation in params.attestations:
        finding = by_id.get(attestation.check)
        expired = (today - attestation.date).days > max_age
        applied = finding is not None and bool(finding.attestation and finding.attestation.get("applied"))
        rows.append(
            {
                "check": attestation.check,
                "state": "expired" if expired else ("applied" if applied else "unused"),
                "by": attestation.by,
                "date": attestation.date.isoformat(),
                "evidence_url": attestation.evidence_url,
                "note": attestation.note,
            }
        )
    return rows


@dataclass(frozen=True)
class Verdict:
    exit_code: ExitCode
    blocking: list[str]  # ids of the findings that decided the verdict

    @property
    def label(self) -> str:
        return VERDICTS[self.exit_code]


def verdict(findings: list[Finding], fail_on: Severity, notebook_failed: bool) -> Verdict:
    """INCOMPLETE (3) if a notebook failed or an unwaived error remains, else FAILED (1) on an unwaived fail at or
    above ``fail_on``, else PASSED (0)."""
    errors = [f.id for f in findings if f.status == Status.ERROR and not f.waived]
    if errors or notebook_failed:
        return Verdict(ExitCode.INCOMPLETE, errors)
    fails = [f.id for f in findings if f.status == Status.FAIL and not f.waived and f.severity.at_least(fail_on)]
    return Verdict(ExitCode.FAILED if fails else ExitCode.PASSED, fails)


def counts_by_status(findings: Iterable[Finding]) -> dict[str, int]:
    counts = {str(status): 0 for status in Status}
    for finding in findings:
        counts[str(finding.status)] += 1
    return counts


def counts_by_section(findings: Iterable[Finding]) -> dict[str, dict[str, int]]:
    sections: dict[str, list[Finding]] = {}
    for finding in findings:
        sections.setdefault(str(finding.section), []).append(finding)
    return {number: counts_by_status(group) for number, group in sorted(sections.items(), key=lambda kv: int(kv[0]))}


def score(findings: Iterable[Finding]) -> float | None:
    """Share of ``pass`` among evaluated checks (pass, fail, warn); None when nothing was evaluated."""
    evaluated = [f for f in findings if f.status in {Status.PASS, Status.FAIL, Status.WARN}]
    if not evaluated:
        return None
    return round(sum(f.status == Status.PASS for f in evaluated) / len(evaluated), 4)
