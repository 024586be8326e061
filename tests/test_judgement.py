"""The one judgement: verdict precedence, score, completeness, waivers and attestations — and every output showing
the same statuses for the same fixtures; the params check knowing the catalog; the run's recorded params."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml
from run_fixtures import REVIEWER, build_run, make_signer, write_allowed_signers, write_params

from recsys_audit import judgement
from recsys_audit.cli import main as cli_main
from recsys_audit.diff import diff_runs
from recsys_audit.findings import Finding, Severity, Status
from recsys_audit.judgement import ExitCode, Scope, judge, observed, overall_exit_code
from recsys_audit.params import Attestation, Params, load_params
from recsys_audit.rundir import load_recorded_params, recorded_params_yaml
from recsys_audit.signoff import sign_run
from recsys_audit.widgets import FindingsExplorer

DAY = dt.date(2026, 3, 1)
SECTIONS = [{"number": 9, "title": "Fixture", "notebook": "09_fixture"}]


def finding(check_id: str, status: Status, severity: Severity = Severity.HIGH) -> Finding:
    return Finding(check_id, 9, check_id, severity, status, f"{check_id} observed", {}, "r", "", 0.1, notebook="09_x")


def params(**extra: object) -> Params:
    base = {
        "environment": {"name": "t"},
        "target": {"base_url": "http://x"},
        "tenants": [{"id": "a", "surfaces": ["h"]}],
    }
    return Params.model_validate({**base, **extra})


def scope(*, not_run: bool = False, notebook_failed: bool = False, fail_on: Severity = Severity.HIGH) -> Scope:
    notebooks = [{"name": "09_x", "status": "timeout" if notebook_failed else "ok", "error": None, "seconds": 1.0}]
    left_out = [{"number": 10, "title": "Left out", "notebook": "10_y"}] if not_run else []
    return Scope(fail_on, SECTIONS, left_out, notebooks)


# --- verdict, precedence, score ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "options", "expected"),
    [
        ([Status.PASS, Status.PASS], {}, ExitCode.PASSED),
        ([Status.PASS, Status.FAIL], {}, ExitCode.FAILED),
        ([Status.PASS, Status.PASS], {"not_run": True}, ExitCode.PARTIAL),
        ([Status.PASS, Status.FAIL], {"not_run": True}, ExitCode.FAILED),  # a failure wins over partial
        ([Status.PASS, Status.ERROR], {}, ExitCode.INCOMPLETE),
        ([Status.FAIL, Status.ERROR], {"not_run": True}, ExitCode.INCOMPLETE),  # incomplete wins over all
        ([Status.PASS, Status.PASS], {"notebook_failed": True}, ExitCode.INCOMPLETE),
        ([Status.PASS, Status.MANUAL, Status.WARN, Status.SKIP], {}, ExitCode.PASSED),
    ],
    ids=["pass", "fail", "partial", "fail-over-partial", "incomplete", "incomplete-over-all", "notebook", "lenient"],
)
def test_verdict_precedence(statuses: list[Status], options: dict, expected: ExitCode) -> None:
    findings = [finding(f"c{i}", status) for i, status in enumerate(statuses)]
    result = judge(findings, params(), scope(**options), DAY)
    assert result.exit_code == expected and result.verdict == judgement.VERDICTS[expected]


def test_exit_codes_and_overall_precedence() -> None:
    assert [int(c) for c in (ExitCode.PASSED, ExitCode.FAILED, ExitCode.INCOMPLETE, ExitCode.PARTIAL)] == [0, 1, 3, 4]
    assert overall_exit_code([0, 4, 1]) == ExitCode.FAILED
    assert overall_exit_code([0, 4]) == ExitCode.PARTIAL
    assert overall_exit_code([4, 3, 1]) == ExitCode.INCOMPLETE
    assert overall_exit_code([]) == ExitCode.PASSED


def test_fail_on_and_waivers_decide_what_blocks() -> None:
    low = finding("c.low", Status.FAIL, Severity.LOW)
    assert judge([low], params(), scope(), DAY).exit_code == ExitCode.PASSED
    assert judge([low], params(), scope(fail_on=Severity.LOW), DAY).blocking == ["c.low"]
    waiver = {
        "check": "c.err",
        "justification": "known outage of the probe",
        "expires": "2026-03-01",
        "approved_by": "x",
    }
    waived = judge([finding("c.err", Status.ERROR)], params(waivers=[waiver]), scope(), DAY)
    assert waived.exit_code == ExitCode.PASSED and waived.findings[0].waived  # last day still counts
    lapsed = judge([finding("c.err", Status.ERROR)], params(waivers=[waiver]), scope(), DAY + dt.timedelta(days=1))
    assert lapsed.exit_code == ExitCode.INCOMPLETE and lapsed.findings[0].waiver["note"].startswith("waiver expired")
    assert lapsed.findings[0].summary == "c.err observed"  # a waiver never rewrites what the check said


def test_score_only_for_a_complete_run() -> None:
    everything = [Status.PASS, Status.PASS, Status.FAIL, Status.WARN, Status.SKIP, Status.MANUAL]
    result = judge([finding(f"c{i}", s) for i, s in enumerate(everything)], params(), scope(), DAY)
    assert result.score == 0.5 and result.completeness["evaluated"] == 4
    all_pass = [finding("a", Status.PASS), finding("b", Status.PASS)]
    assert judge(all_pass, params(), scope(), DAY).score == 1.0
    for options in ({"not_run": True}, {"notebook_failed": True}):
        partial = judge(all_pass, params(), scope(**options), DAY)
        document = {"verdict": partial.verdict, **partial.document_fields()}
        assert partial.score is None and "100" not in judgement.score_text(document)
        assert judgement.score_text(document).startswith("n/a — ")
    incomplete = judge([*all_pass, finding("c", Status.ERROR)], params(), scope(), DAY)
    assert incomplete.score is None and incomplete.completeness["not_evaluated"] == ["c"]
    assert judge([finding("s", Status.SKIP)], params(), scope(), DAY).score is None


def test_attestations_with_the_params_policy_and_sign_off() -> None:
    def attestation(days_old: int, check: str = "m") -> dict[str, str]:
        date = DAY - dt.timedelta(days=days_old)
        return {"check": check, "by": "ops", "date": date.isoformat(), "evidence_url": "https://wiki/x"}

    policy = {"attestation_max_age_days": 30}
    manual = [finding("m", Status.MANUAL)]
    fresh = judge(manual, params(attestations=[attestation(30)], policies=policy), scope(), DAY)
    assert fresh.findings[0].status == Status.PASS and fresh.findings[0].attestation["expires"] == DAY.isoformat()
    stale = judge(manual, params(attestations=[attestation(31)], policies=policy), scope(), DAY)
    assert stale.findings[0].status == Status.MANUAL and "expired on" in stale.findings[0].summary
    assert stale.attestations[0]["state"] == "expired"
    future = judge(manual, params(attestations=[attestation(-1)]), scope(), DAY)
    assert future.findings[0].status == Status.MANUAL and "in the future" in future.findings[0].summary
    # Recorded at sign-off, judged with the same policy; the newer one counts.
    signed = Attestation(check="m", by="Rita", date=DAY - dt.timedelta(days=2), evidence_url="https://wiki/y")
    both = judge(manual, params(attestations=[attestation(31)], policies=policy), scope(), DAY, [signed])
    assert both.findings[0].status == Status.PASS and both.findings[0].attestation["source"] == "sign-off"
    assert [(row["source"], row["state"]) for row in both.attestations] == [
        ("params", "expired"),
        ("sign-off", "applied"),
    ]
    # A passing or failing check is never attested into something else.
    failing = judge([finding("m", Status.FAIL)], params(attestations=[attestation(1)]), scope(), DAY)
    assert failing.findings[0].status == Status.FAIL and failing.findings[0].attestation is None


def test_judging_again_starts_from_the_observations() -> None:
    waiver = {"check": "f", "justification": "compensating control", "expires": "2026-06-01", "approved_by": "ciso"}
    attest = {"check": "m", "by": "ops", "date": "2026-02-20", "evidence_url": "https://wiki/x"}
    chosen = params(waivers=[waiver], attestations=[attest])
    observations = [finding("m", Status.MANUAL), finding("f", Status.FAIL), finding("p", Status.PASS)]
    first = judge(observations, chosen, scope(), DAY)
    assert [observed(f) for f in first.findings] == observations
    again = judge(first.findings, chosen, scope(), DAY)
    assert [f.to_dict() for f in again.findings] == [f.to_dict() for f in first.findings]
    later = judge(first.findings, params(), scope(), DAY)  # without the params' waiver and attestation
    assert [f.status for f in later.findings] == [Status.MANUAL, Status.FAIL, Status.PASS]
    assert later.exit_code == ExitCode.FAILED and later.findings[0].summary == "m observed"


# --- the same statuses everywhere ----------------------------------------------------------------------------

OBSERVED = {
    "auth.dev-auth-disabled": "pass",
    "auth.cross-tenant-admin": "fail",  # waived until next month
    "db.rls-enabled": "warn",  # its waiver expired yesterday
    "db.restore-tested": "manual",  # attested 60 days ago in params and 40 days ago at sign-off: both too old
    "obs.runbooks-exercised": "manual",  # attested 10 days ago at sign-off
    "perf.pprof-off": "skip",
}
JUDGED = {**OBSERVED, "obs.runbooks-exercised": "pass"}


@pytest.fixture(scope="module")
def judged_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An earlier run (every check differently) and a signed run judged with a 30-day policy set in an include
    fragment — 60- and 40-day-old attestations fail it, and would pass the default of 180 days."""
    folder = tmp_path_factory.mktemp("judged")
    today = dt.datetime.now(dt.UTC).date()
    rita = make_signer(folder / "keys")
    trusted = write_allowed_signers(folder / "allowed_signers", rita)
    fragment = folder / "params" / "dated.yaml"
    fragment.parent.mkdir()
    fragment.write_text(yaml.safe_dump({
        "policies": {"attestation_max_age_days": 30},
        "attestations": [{"check": "db.restore-tested", "by": "ops", "date": str(today - dt.timedelta(days=60)),
                          "evidence_url": "https://wiki.example/restore"}],
        "waivers": [
            {"check": "auth.cross-tenant-admin", "justification": "gateway blocks it until the fix ships",
             "expires": str(today + dt.timedelta(days=30)), "approved_by": "ciso"},
            {"check": "db.rls-enabled", "justification": "accepted for the last quarter",
             "expires": str(today - dt.timedelta(days=1)), "approved_by": "ciso"},
        ],
    }))  # fmt: skip
    params_path = write_params(folder / "params", allowed_signers=trusted, include=["dated.yaml"])
    earlier = {**{check: "skip" for check in OBSERVED}, "perf.pprof-off": "pass"}
    base = build_run(folder / "audits", params_path, f"{today - dt.timedelta(days=1):%Y%m%d}T000000Z", earlier)
    run = build_run(folder / "audits", params_path, f"{today:%Y%m%d}T000000Z", OBSERVED)
    sign_run(
        run, reviewer=REVIEWER, role="SRE", decision="approve", key_path=rita.key,
        attest=[f"db.restore-tested=https://wiki.example/drill@{today - dt.timedelta(days=40)}",
                f"obs.runbooks-exercised=https://wiki.example/runbooks@{today - dt.timedelta(days=10)}"],
    )  # fmt: skip
    return base, run


def _from_findings_json(base: Path, run: Path) -> dict[str, str]:
    return {f.id: str(f.status) for f in judgement.read_judged_run(run).findings}


BADGE = r'<span class="ra-badge ra-(\w+)"[^>]*>[^<]*</span>'


SEVERITY = r'<span class="ra-severity[^>]*>[^<]*</span>'


def _from_report(base: Path, run: Path) -> dict[str, str]:
    page = (run / "report.html").read_text()

    def shown(pattern: str) -> dict[str, str]:
        return {check: status for status, check in re.findall(pattern, page)}

    checklist = shown(BADGE + r' <a href="#[^"]*">([\w.-]+)</a></span>')  # every finding, by checklist item
    cards = shown(BADGE + " " + SEVERITY + r" <strong>([\w.-]+)</strong>")  # evidence of the problems
    triage = shown(BADGE + "</td><td>" + SEVERITY + r'</td><td><a href="#finding-([\w.-]+)"')  # fail, error, warn
    assert cards and triage
    assert all(checklist[check] == status for check, status in [*cards.items(), *triage.items()]), (cards, triage)
    return checklist


def _from_diff(base: Path, run: Path) -> dict[str, str]:
    return {c.check: str(c.new_status) for c in diff_runs(base, run).status_changes}


def _from_widgets(base: Path, run: Path) -> dict[str, str]:
    explorer = FindingsExplorer(run)
    shown = dict(
        (check, status) for status, check in re.findall(BADGE + r"</td><td>([\w.-]+)</td>", explorer.table.value)
    )
    assert shown == {f.id: str(f.status) for f in explorer.findings}
    return shown


@pytest.mark.parametrize(
    "surface", [_from_findings_json, _from_report, _from_diff, _from_widgets], ids=["findings.json", "report", "diff",
                                                                                    "widgets"]
)  # fmt: skip
def test_every_output_shows_the_same_statuses(judged_runs: tuple[Path, Path], surface) -> None:
    base, run = judged_runs
    assert surface(base, run) == JUDGED


def test_the_judged_fixture_is_what_the_test_says(judged_runs: tuple[Path, Path]) -> None:
    run = judgement.read_judged_run(judged_runs[1])
    by_id = {f.id: f for f in run.findings}
    assert by_id["auth.cross-tenant-admin"].waived and not by_id["db.rls-enabled"].waived
    assert by_id["db.restore-tested"].attestation["source"] == "sign-off"  # the newer one, still too old
    assert by_id["db.restore-tested"].attestation["max_age_days"] == 30
    assert run.document["verdict"] == "pass" and run.document["exit_code"] == 0


# --- params check knows the catalog --------------------------------------------------------------------------


def test_params_check_reports_unknown_ids_expired_waivers_and_old_attestations(tmp_path: Path, capsys) -> None:
    today = dt.datetime.now(dt.UTC).date()
    good = write_params(
        tmp_path / "good",
        waivers=[{"check": "auth.cross-tenant-admin-refused", "justification": "gateway rule until the fix",
                  "expires": str(today - dt.timedelta(days=3)), "approved_by": "ciso"}],
        attestations=[{"check": "db.restore-tested", "by": "ops", "date": str(today - dt.timedelta(days=200)),
                       "evidence_url": "https://wiki/x"}],
    )  # fmt: skip
    assert cli_main(["params", "check", str(good)]) == 0
    captured = capsys.readouterr()
    assert "ok — environment staging" in captured.out and "2 warning(s)" in captured.out
    assert f"waivers[0] (auth.cross-tenant-admin-refused): expired on {today - dt.timedelta(days=3)}" in captured.err
    assert "attestations[0] (db.restore-tested): 200 days old, older than policies.attestation_max_age_days (180)" in (
        captured.err
    )
    bad = write_params(
        tmp_path / "bad",
        waivers=[{"check": "auth.cross-tenant-admin-refusd", "justification": "gateway rule until the fix",
                  "expires": str(today), "approved_by": "ciso"}],
        attestations=[{"check": "no.such.thing", "by": "ops", "date": str(today), "evidence_url": "https://wiki/x"}],
    )  # fmt: skip
    assert cli_main(["params", "check", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"recsys-audit: {bad}: waivers[0].check: unknown check 'auth.cross-tenant-admin-refusd' — did you mean "
        "'auth.cross-tenant-admin-refused'?",
        f"{bad}: attestations[0].check: unknown check 'no.such.thing' — see 'recsys-audit checks' for the ids",
    ]


# --- the params a run keeps ----------------------------------------------------------------------------------


def test_recorded_params_are_the_merged_document_without_secret_values(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RA_JUDGEMENT_TOKEN", "canary-token-Zq81x")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "dsn").write_text("postgresql://u:canary-dsn-pw@h/db")
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump({
        "environment": {"owner": "Fiona Fragment"},
        "deployment": {"last_backup_at": "2026-02-27T03:00:00+00:00"},
        "attestations": [{"check": "db.restore-tested", "by": "ops", "date": "2026-02-01", "evidence_url": "u"}],
    }))  # fmt: skip
    viewer = {"bearer": "env:RA_JUDGEMENT_TOKEN"}
    path = write_params(
        tmp_path, owner=None, include=["extra.yaml"], auth={"credentials": {"viewer": viewer}},
        database={"dsn": "file:secrets/dsn"}, config_sources=[{"kind": "env_file", "path": "deploy/app.env"}],
    )  # fmt: skip
    original = load_params(path)
    text = recorded_params_yaml(original)
    assert "canary" not in text and "env:RA_JUDGEMENT_TOKEN" in text and "file:secrets/dsn" in text
    run = tmp_path / "run"
    run.mkdir()
    (run / "params.yaml").write_text(text)
    monkeypatch.delenv("RA_JUDGEMENT_TOKEN")  # judging a finished run needs no secret
    (tmp_path / "extra.yaml").unlink()  # nor the fragments
    recorded = load_recorded_params(run, {"params_file": str(path)})
    assert recorded.model_dump(exclude={"include"}) == original.model_dump(exclude={"include"})
    assert recorded.environment.owner == "Fiona Fragment" and recorded.include == []
    assert recorded.path("deploy/app.env") == tmp_path / "deploy" / "app.env"  # relative to the original file
