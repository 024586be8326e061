"""Merging recorded findings without kernels: the last finding of a check wins, and every catalog check without one
becomes an ``error`` with the notebook's reason (judging them is tests/test_judgement.py)."""

from __future__ import annotations

from pathlib import Path

from recsys_audit.catalog import Section
from recsys_audit.findings import Finding, Outcome, Severity, Status, append_finding, passed
from recsys_audit.merge import complete_findings, recorded_findings

SECTION = Section(9, "Merge fixture", notebook="09_merge")
for check_id in ("m.one", "m.two", "m.three"):

    def _check(ctx: object) -> Outcome:
        return passed("ok")

    SECTION.check(
        check_id,
        items=("0.serving-mode-per-tenant",),
        evidence="live",
        title=check_id,
        severity=Severity.HIGH,
        remediation="r",
    )(_check)


def finding(check_id: str, status: Status, severity: Severity = Severity.HIGH) -> Finding:
    return Finding(check_id, 9, check_id, severity, status, "summary", {}, "r", "", 0.1, notebook="09_merge")


def test_missing_checks_become_errors_with_the_notebook_reason() -> None:
    recorded = [finding("m.one", Status.FAIL), finding("m.one", Status.PASS), finding("x.extra", Status.WARN)]
    merged = complete_findings(recorded, [SECTION], {"09_merge": "KeyError: 'tenant'"})
    assert [f.id for f in merged] == ["m.one", "m.two", "m.three", "x.extra"]
    assert merged[0].status == Status.PASS  # the last recorded finding of a check wins
    assert merged[1].status == Status.ERROR and merged[1].summary == "not evaluated: KeyError: 'tenant'"
    quiet = complete_findings([], [SECTION], {})
    assert quiet[0].summary == "not evaluated: the notebook finished without evaluating it"


def test_recorded_findings_are_read_notebook_by_notebook(tmp_path: Path) -> None:
    append_finding(tmp_path / "09_merge.jsonl", finding("m.one", Status.PASS))
    append_finding(tmp_path / "01_other.jsonl", finding("o.one", Status.WARN))
    with (tmp_path / "09_merge.jsonl").open("a") as handle:
        handle.write('{"id": "torn')  # a kernel killed mid-write
    assert [f.id for f in recorded_findings(tmp_path)] == ["o.one", "m.one"]
