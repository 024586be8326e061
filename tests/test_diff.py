"""Diff between audits: new, resolved, persisting findings by fingerprint, and "since last audit" in the report —
only against an earlier run whose sign-off verifies with the trusted signers, read safely and boundedly."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import pytest
from run_fixtures import REVIEWER, Signer, build_run, make_signer, write_allowed_signers, write_params

from recsys_audit.diff import (
    MAX_EARLIER_RUNS,
    PROBLEM_STATUSES,
    diff_runs,
    fingerprint,
    previous_signed_run,
)
from recsys_audit.judgement import read_judged_run
from recsys_audit.render.diff import since_last_audit_html
from recsys_audit.render.report import render_report
from recsys_audit.signoff import sign_run, verify_run
from recsys_audit.signoff_cli import main

OLD = {
    "auth.cross-tenant-admin": "fail",  # persists
    "db.rls-enabled": "warn",  # resolved (pass)
    "db.restore-tested": "manual",  # persists, becomes error
    "auth.dev-auth-disabled": "pass",  # new (fail)
    "perf.pprof-off": "fail",  # resolved (skip in the new run)
    "obs.runbooks-exercised": "manual",  # attested at sign-off; manual again in the new run -> new
}
NEW = {
    "auth.cross-tenant-admin": "fail",
    "db.rls-enabled": "pass",
    "db.restore-tested": "error",
    "auth.dev-auth-disabled": "fail",
    "obs.runbooks-exercised": "manual",
    "perf.pprof-off": "skip",
}


class Runs:
    def __init__(self, folder: Path, params: Path, old: Path, new: Path, rita: Signer, trusted: Path) -> None:
        self.folder, self.params, self.old, self.new, self.rita, self.trusted = folder, params, old, new, rita, trusted


@pytest.fixture
def runs(tmp_path: Path) -> Runs:
    rita = make_signer(tmp_path / "keys")
    trusted = write_allowed_signers(tmp_path / "allowed_signers", rita)
    params = write_params(tmp_path / "params", allowed_signers=trusted)
    old = build_run(tmp_path / "audits", params, "20250301T100000Z", OLD)
    new = build_run(tmp_path / "audits", params, "20250302T100000Z", NEW)
    today = dt.datetime.now(dt.UTC).date()
    sign_run(
        old, reviewer=REVIEWER, role="SRE", decision="reject", key_path=rita.key,
        attest=[f"obs.runbooks-exercised=https://wiki.example/runbooks@{today}"],
    )  # fmt: skip
    return Runs(tmp_path, params, old, new, rita, trusted)


def _ids(changes) -> list[str]:
    return [c.check for c in changes]


def test_new_resolved_persisting_and_status_changes(runs: Runs) -> None:
    result = diff_runs(runs.old, runs.new)
    assert _ids(result.new) == ["auth.dev-auth-disabled", "obs.runbooks-exercised"]
    assert _ids(result.resolved) == ["db.rls-enabled", "perf.pprof-off"]
    assert _ids(result.persisting) == ["auth.cross-tenant-admin", "db.restore-tested"]
    changed = {c.check: (c.old_status, c.new_status) for c in result.status_changes}
    assert changed == {
        "auth.dev-auth-disabled": ("pass", "fail"),
        "db.rls-enabled": ("warn", "pass"),
        "db.restore-tested": ("manual", "error"),
        "obs.runbooks-exercised": ("pass", "manual"),  # attested at the old run's sign-off
        "perf.pprof-off": ("fail", "skip"),
    }
    assert result.new[0].fingerprint == fingerprint("staging", "auth.dev-auth-disabled")


def test_fingerprint_is_stable_and_per_environment() -> None:
    assert fingerprint("staging", "db.rls-enabled") == fingerprint("staging", "db.rls-enabled")
    assert fingerprint("staging", "db.rls-enabled") != fingerprint("production", "db.rls-enabled")
    assert len(fingerprint("staging", "db.rls-enabled")) == 16


def test_cli_prints_text_and_json(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(runs.old), str(runs.new)]) == 0
    text = capsys.readouterr().out
    assert "2 new, 2 resolved, 2 persisting, 5 status changes" in text
    assert f"new        {fingerprint('staging', 'auth.dev-auth-disabled')}" in text
    assert main(["diff", str(runs.old), str(runs.new), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == {"new": 2, "resolved": 2, "persisting": 2, "status_changes": 5}
    assert data["env"] == "staging" and data["old_run"] == runs.old.name and data["new_run"] == runs.new.name


def test_runs_of_different_environments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    staging = build_run(tmp_path / "a", write_params(tmp_path / "p"), "20250301T100000Z", NEW)
    production = build_run(tmp_path / "a", write_params(tmp_path / "p", "production"), "20250301T100000Z", NEW)
    assert main(["diff", str(staging), str(production)]) == 2
    assert "compare one environment" in capsys.readouterr().err


def test_a_run_dir_with_a_fifo_for_findings_is_refused_not_waited_on(runs: Runs, capsys) -> None:
    (runs.new / "findings.json").unlink()
    os.mkfifo(runs.new / "findings.json")
    assert main(["diff", str(runs.old), str(runs.new)]) == 2
    assert "findings.json: FIFO, not a regular file" in capsys.readouterr().err


def test_report_shows_diff_against_previous_signed_audit(runs: Runs) -> None:
    previous = previous_signed_run(runs.new, runs.trusted)
    assert previous.run_dir == runs.old and previous.verification.ok
    assert "Since last audit: 2 new, 2 resolved" in since_last_audit_html(runs.new)  # trust from the run's params
    report = render_report(runs.new).read_text()
    assert "Since last audit: 2 new, 2 resolved" in report and "(signed by Rita Reviewer (rita@example.com)" in report
    # At the top, one line; below, the new findings open and the resolved and persisting ones folded.
    assert '<a href="#since-last">since last audit: 2 new, 2 resolved</a>' in report.split("</header>", 1)[0]
    assert "<h4>New findings (2)</h4>" in report
    assert '<details class="ra-fold"><summary>Resolved findings (2)</summary>' in report
    assert '<details class="ra-fold"><summary>Persisting findings (2)</summary>' in report
    # A later run that is not signed is not "the last audit"; an altered signed run is not either, and says why.
    newest = build_run(runs.folder / "audits", runs.params, "20250303T100000Z", NEW)
    assert previous_signed_run(newest, runs.trusted).run_dir == runs.old
    (runs.old / "junit.xml").write_text("changed")
    previous = previous_signed_run(newest, runs.trusted)
    assert previous.run_dir is None and previous.skipped == [
        (runs.old.name, "junit.xml: changed after signing (size differs)")
    ]
    html = since_last_audit_html(newest)
    assert "No earlier signed audit" in html and "junit.xml: changed after signing" in html


def test_without_trusted_signers_nothing_is_compared(runs: Runs) -> None:
    previous = previous_signed_run(runs.new, None)
    assert previous.run_dir is None and "no trusted signers" in previous.note
    other = make_signer(runs.folder / "other", "sam@example.com")
    untrusting = write_allowed_signers(runs.folder / "sam_only", other)
    assert previous_signed_run(runs.new, untrusting).skipped[0][1].startswith("signer: the key that signed")


@pytest.mark.timeout(10, func_only=True)
def test_a_bounded_number_of_earlier_runs_is_examined(runs: Runs) -> None:
    env_dir = runs.old.parent
    for minute in range(MAX_EARLIER_RUNS):  # unsigned runs between the signed one and the newest
        (env_dir / f"20250301T10{minute:02d}01Z").mkdir()
    assert previous_signed_run(runs.new, runs.trusted).run_dir is None
    assert "none of the 20 newest earlier runs" in previous_signed_run(runs.new, runs.trusted).note
    assert previous_signed_run(runs.new, runs.trusted, limit=MAX_EARLIER_RUNS + 1).run_dir == runs.old
    (env_dir / "not-a-run").mkdir()  # other names are not runs
    (env_dir / "20250302T000000Z").symlink_to(runs.old)  # a symlinked run is never one
    assert previous_signed_run(runs.new, runs.trusted, limit=MAX_EARLIER_RUNS + 2).run_dir == runs.old


# --- real audits (papermill) of one environment ------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "engine"
OWNER_OF_FIXTURE = "Fiona Fixture"


def _engine_params(folder: Path, name: str, trusted: Path, **extra: object) -> Path:
    import yaml

    data = yaml.safe_load((FIXTURES / "params" / "engine.yaml").read_text())
    data["environment"].update(owner=OWNER_OF_FIXTURE, allowed_signers=str(trusted))
    path = folder / "params" / name / "engine.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({**data, **extra}))
    return path


def _real_audit(params: Path, out_dir: Path):
    sys.path.insert(0, str(FIXTURES))
    from engine_fixture_checks import HEALTHY

    from recsys_audit.run import run_audit

    patch = pytest.MonkeyPatch()
    for name in ("RA_CANARY_TOKEN", "RA_CANARY_API_KEY", "RA_CANARY_DSN"):
        patch.setenv(name, f"canary-{name.lower()}-value")
    patch.setenv("PYTHONPATH", os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]))
    try:
        return run_audit(
            params,
            sections=[0],
            catalog=[HEALTHY],
            notebooks_dir=FIXTURES / "notebooks",
            out_dir=out_dir,
            timeout_s=120,
        )
    finally:
        patch.undo()
        sys.path.remove(str(FIXTURES))


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Signer, Path]:
    """Section 0 of the engine fixture catalog run twice; the manual check is attested in the first run only."""
    folder = tmp_path_factory.mktemp("real")
    rita = make_signer(folder / "keys")
    trusted = write_allowed_signers(folder / "allowed_signers", rita)
    attestation = {"check": "h.manual", "by": "Ann", "date": str(dt.date.today()), "evidence_url": "https://wiki/r"}
    first = _real_audit(_engine_params(folder, "attested", trusted, attestations=[attestation]), folder / "audits")
    time.sleep(1.1)  # run directories are named by the second
    second = _real_audit(_engine_params(folder, "plain", trusted), folder / "audits")
    return first.run_dir, second.run_dir, rita, trusted


def test_real_runs_diff_sign_verify(real_runs, capsys: pytest.CaptureFixture[str]) -> None:
    first, second, rita, trusted = real_runs
    result = diff_runs(first, second)
    assert _ids(result.new) == ["h.manual"]
    assert _ids(result.persisting) == ["h.fail-high", "h.fail-low", "h.warn"]
    assert _ids(result.resolved) == []
    assert _ids(diff_runs(second, first).resolved) == ["h.manual"]
    sign = ["sign", str(first), "--role", "SRE", "--decision", "reject", "--key", str(rita.key)]
    assert main([*sign, "--reviewer", OWNER_OF_FIXTURE]) == 2
    assert "owns environment engine-fixture" in capsys.readouterr().err
    assert main([*sign, "--reviewer", REVIEWER]) == 0
    assert main(["verify", str(first), "--allowed-signers", str(trusted)]) == 0
    assert "Rita Reviewer" in (first / "report.html").read_text()
    assert "canary-" not in (first / "signoff.json").read_text()  # no secret reaches the record
    assert "Since last audit: 1 new, 0 resolved" in render_report(second).read_text()
    notebook = first / "notebooks" / "00_healthy.ipynb"
    notebook.write_text(notebook.read_text().replace("replicas", "replicaz"))
    check = verify_run(first, trusted)
    assert not check.ok and check.problem.startswith("notebooks/00_healthy.ipynb: changed after signing")


@pytest.mark.timeout(180)
def test_dev_zero_planted_in_an_earlier_signed_run_does_not_hang_the_next_run(tmp_path: Path) -> None:
    rita = make_signer(tmp_path / "keys")
    trusted = write_allowed_signers(tmp_path / "allowed_signers", rita)
    fake = write_params(tmp_path / "fake", "engine-fixture", allowed_signers=trusted)
    earlier = build_run(
        tmp_path / "audits", fake, "20250301T100000Z", {"auth.cross-tenant-admin": "fail"}, sections=[1]
    )
    sign_run(earlier, reviewer=REVIEWER, role="SRE", decision="reject", key_path=rita.key)
    assert verify_run(earlier, trusted).ok
    (earlier / "findings.json").unlink()
    (earlier / "findings.json").symlink_to("/dev/zero")
    (earlier / "notebooks" / "zero.ipynb").symlink_to("/dev/zero")
    started = time.monotonic()
    result = _real_audit(_engine_params(tmp_path, "engine", trusted), tmp_path / "audits")
    report = result.report_path.read_text()
    assert "No earlier signed audit of this environment" in report
    assert f"<code>{earlier.name}</code>: findings.json: symlink" in report
    assert read_judged_run(result.run_dir).document["exit_code"] == 1
    print(f"run with a planted /dev/zero in an earlier run: {time.monotonic() - started:.1f} s")


# --- acceptance: a defect switched on and off between audits of one live sandbox --------------------------------

DIFF_SECTIONS = [1, 5, 7]  # section 5 holds a known warning that persists (the chart's liveness probe)
SWITCHED = ("cross-tenant-admin", "missing-meta")
# the checks those two server switches break in sections 1 and 7 (missing-meta also leaves the exposure record of a
# live request without its versions, so it can no longer be traced)
BROKEN_BY_SWITCHES = {
    "auth.cross-tenant-admin-refused",
    "rollout.response-versions",
    "rollout.config-etag-matches",
    "rollout.request-traceable",
}


@pytest.mark.slow
def test_switching_a_defect_on_and_off_shows_in_the_diff(tmp_path: Path) -> None:
    from recsys_audit.run import run_audit
    from recsys_audit.sandbox.harness import SandboxError, start_sandbox

    instance = start_sandbox(tmp_path / "instances", "hardened", name="diff-live", prometheus=False)
    try:
        with pytest.raises(SandboxError, match="not a server switch"):
            instance.restart_server(["archive-off"])

        def audit() -> Path:
            return run_audit(instance.params_path, sections=DIFF_SECTIONS, out_dir=tmp_path / "audits").run_dir

        params_before = instance.params_path.read_bytes()
        baseline = audit()
        old_pid = instance.pids["service"]
        instance.restart_server(SWITCHED)
        assert instance.pids["service"] != old_pid and instance.defects == SWITCHED
        assert "SANDBOX_DEFECTS=cross-tenant-admin,missing-meta" in instance.env_file.read_text()
        broken = audit()
        instance.restart_server([])
        repaired = audit()
        assert instance.params_path.read_bytes() == params_before  # same environment, same params
    finally:
        instance.stop()

    baseline_problems = {f.id for f in read_judged_run(baseline).findings if f.status in PROBLEM_STATUSES}
    assert baseline_problems and not baseline_problems & BROKEN_BY_SWITCHES  # e.g. obs.liveness-route
    # never a pass: sections 1, 5 and 7 only, and this instance runs no Prometheus (two section-5 checks need one)
    judged = read_judged_run(baseline)
    assert judged.verdict == "incomplete"
    assert {f.id for f in judged.findings if f.status == "error"} == {"obs.prometheus-target-up", "obs.golden-signals"}

    switched_on = diff_runs(baseline, broken)
    assert switched_on.env == "diff-live"
    assert set(_ids(switched_on.new)) == BROKEN_BY_SWITCHES
    assert {c.new_status for c in switched_on.new} == {"fail"}
    assert switched_on.resolved == []
    assert set(_ids(switched_on.persisting)) == baseline_problems
    leak = next(c for c in switched_on.new if c.check == "auth.cross-tenant-admin-refused")
    assert leak.fingerprint == fingerprint("diff-live", "auth.cross-tenant-admin-refused")

    switched_off = diff_runs(broken, repaired)
    assert set(_ids(switched_off.resolved)) == BROKEN_BY_SWITCHES
    assert {c.new_status for c in switched_off.resolved} == {"pass"}
    assert switched_off.new == []
    assert set(_ids(switched_off.persisting)) == baseline_problems
