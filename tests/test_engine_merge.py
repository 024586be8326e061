"""Merge rules without kernels: completeness, attestation and waiver expiry, verdict precedence."""

from __future__ import annotations

import datetime as dt

from recsys_audit.catalog import Section
from recsys_audit.findings import Finding, Outcome, Severity, Status, passed
from recsys_audit.merge import (
    ExitCode,
    apply_attestations,
    apply_waivers,
    complete_findings,
    score,
    verdict,
)
from recsys_audit.params import Params

TODAY = dt.date(2026, 3, 1)
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


def params(**extra: object) -> Params:
    base = {
        "environment": {"name": "t"},
        "target": {"base_url": "http://x"},
        "tenants": [{"id": "a", "surfaces": ["h"]}],
    }
    return Params.model_validate({**base, **extra})


def test_missing_checks_become_errors_with_the_notebook_reason() -> None:
    recorded = [finding("m.one", Status.FAIL), finding("m.one", Status.PASS), finding("x.extra", Status.WARN)]
    merged = complete_findings(recorded, [SECTION], {"09_merge": "KeyError: 'tenant'"})
    assert [f.id for f in merged] == ["m.one", "m.two", "m.three", "x.extra"]
    assert merged[0].status == Status.PASS  # the last recorded finding of a check wins
    assert merged[1].status == Status.ERROR and merged[1].summary == "not evaluated: KeyError: 'tenant'"
    quiet = complete_findings([], [SECTION], {})
    assert quiet[0].summary == "not evaluated: the notebook finished without evaluating it"


def test_attestation_fresh_passes_and_expired_stays_manual() -> None:
    fresh = params(attestations=[{"check": "m.one", "by": "ops", "date": "2026-02-01", "evidence_url": "u"}])
    findings = [finding("m.one", Status.MANUAL)]
    apply_attestations(findings, fresh, TODAY)
    assert findings[0].status == Status.PASS and findings[0].attestation["applied"] is True

    stale = params(
        attestations=[{"check": "m.one", "by": "ops", "date": "2025-01-01", "evidence_url": "u"}],
        policies={"attestation_max_age_days": 180},
    )
    findings = [finding("m.one", Status.MANUAL)]
    apply_attestations(findings, stale, TODAY)
    assert findings[0].status == Status.MANUAL
    assert "attestation expired" in findings[0].summary and findings[0].attestation["applied"] is False


def test_waiver_expiry_is_inclusive_of_the_last_day() -> None:
    waiver = {"check": "m.one", "justification": "ten characters at least", "approved_by": "ciso"}
    on_last_day = [finding("m.one", Status.FAIL)]
    apply_waivers(on_last_day, params(waivers=[{**waiver, "expires": "2026-03-01"}]), TODAY)
    assert on_last_day[0].waived
    day_after = [finding("m.one", Status.FAIL)]
    apply_waivers(day_after, params(waivers=[{**waiver, "expires": "2026-02-28"}]), TODAY)
    assert not day_after[0].waived and day_after[0].summary.endswith("(waiver expired on 2026-02-28)")


def test_verdict_precedence_incomplete_over_failed() -> None:
    failing = finding("m.one", Status.FAIL)
    assert verdict([failing], Severity.HIGH, notebook_failed=False).exit_code == ExitCode.FAILED
    assert verdict([failing, finding("m.two", Status.ERROR)], Severity.HIGH, False).exit_code == ExitCode.INCOMPLETE
    assert verdict([failing], Severity.HIGH, notebook_failed=True).exit_code == ExitCode.INCOMPLETE
    low = finding("m.one", Status.FAIL, Severity.LOW)
    assert verdict([low], Severity.HIGH, False).exit_code == ExitCode.PASSED
    assert verdict([low], Severity.LOW, False).exit_code == ExitCode.FAILED
    waived_error = finding("m.two", Status.ERROR)
    waived_error.waiver = {"applied": True}
    assert verdict([waived_error], Severity.HIGH, False).exit_code == ExitCode.PASSED


def test_score_counts_only_evaluated_checks() -> None:
    statuses = [Status.PASS, Status.PASS, Status.FAIL, Status.WARN, Status.SKIP, Status.ERROR, Status.MANUAL]
    assert score([finding(f"c{i}", s) for i, s in enumerate(statuses)]) == 0.5
    assert score([finding("c", Status.SKIP)]) is None
