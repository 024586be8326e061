"""Diff between audits: new, resolved, persisting findings by fingerprint, and "since last audit" in the report."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import pytest
from test_signoff import REVIEWER, build_run, write_params

from recsys_audit.diff import PROBLEM_STATUSES, diff_runs, fingerprint, previous_signed_run, since_last_audit_html
from recsys_audit.report import render_report
from recsys_audit.signoff import generate_key_pair, read_run, sign_run, verify_run
from recsys_audit.signoff_cli import main

OLD = {
    "auth.cross-tenant-admin": "fail",  # persists
    "db.rls-enabled": "warn",  # resolved (pass)
    "db.restore-tested": "manual",  # persists, becomes error
    "auth.dev-auth-disabled": "pass",  # new (fail)
    "perf.pprof-off": "fail",  # resolved (absent from the new run)
    "obs.runbooks-exercised": "manual",  # attested at sign-off; manual again in the new run -> new
}
NEW = {
    "auth.cross-tenant-admin": "fail",
    "db.rls-enabled": "pass",
    "db.restore-tested": "error",
    "auth.dev-auth-disabled": "fail",
    "obs.runbooks-exercised": "manual",
}


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path, Path]:
    params = write_params(tmp_path / "params")
    old = build_run(tmp_path / "audits", params, "20250301T100000Z", OLD)
    new = build_run(tmp_path / "audits", params, "20250302T100000Z", NEW)
    key = tmp_path / "rita.key"
    generate_key_pair(key)
    today = dt.datetime.now(dt.UTC).date()
    sign_run(
        old,
        reviewer=REVIEWER,
        role="SRE",
        decision="approve-with-exceptions",
        key_path=key,
        attest=[f"obs.runbooks-exercised=https://wiki.example/runbooks@{today}"],
    )
    return old, new, key


def _ids(changes) -> list[str]:
    return [c.check for c in changes]


def test_new_resolved_persisting_and_status_changes(runs: tuple[Path, Path, Path]) -> None:
    old, new, _ = runs
    result = diff_runs(old, new)
    assert _ids(result.new) == ["auth.dev-auth-disabled", "obs.runbooks-exercised"]
    assert _ids(result.resolved) == ["db.rls-enabled", "perf.pprof-off"]
    assert _ids(result.persisting) == ["auth.cross-tenant-admin", "db.restore-tested"]
    changed = {c.check: (c.old_status, c.new_status) for c in result.status_changes}
    assert changed == {
        "auth.dev-auth-disabled": ("pass", "fail"),
        "db.rls-enabled": ("warn", "pass"),
        "db.restore-tested": ("manual", "error"),
        "obs.runbooks-exercised": ("pass", "manual"),  # attested in the old run
    }
    assert result.resolved[1].new_status is None  # the check is absent from the new run
    assert result.new[0].fingerprint == fingerprint("staging", "auth.dev-auth-disabled")


def test_fingerprint_is_stable_and_per_environment() -> None:
    assert fingerprint("staging", "db.rls-enabled") == fingerprint("staging", "db.rls-enabled")
    assert fingerprint("staging", "db.rls-enabled") != fingerprint("production", "db.rls-enabled")
    assert len(fingerprint("staging", "db.rls-enabled")) == 16


def test_cli_prints_text_and_json(runs: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    old, new, _ = runs
    assert main(["diff", str(old), str(new)]) == 0
    text = capsys.readouterr().out
    assert "2 new, 2 resolved, 2 persisting, 4 status changes" in text
    assert f"new        {fingerprint('staging', 'auth.dev-auth-disabled')}" in text
    assert main(["diff", str(old), str(new), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == {"new": 2, "resolved": 2, "persisting": 2, "status_changes": 4}
    assert data["env"] == "staging" and data["old_run"] == old.name and data["new_run"] == new.name
    assert {c["check"] for c in data["resolved"]} == {"db.rls-enabled", "perf.pprof-off"}


def test_runs_of_different_environments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    staging = build_run(tmp_path / "a", write_params(tmp_path / "p"), "20250301T100000Z", NEW)
    production = build_run(tmp_path / "a", write_params(tmp_path / "p", "production"), "20250301T100000Z", NEW)
    assert main(["diff", str(staging), str(production)]) == 2
    assert "compare one environment" in capsys.readouterr().err


def test_report_shows_diff_against_previous_signed_audit(runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    old, new, _ = runs
    assert previous_signed_run(new) == old.resolve()
    assert "Since last audit: 2 new, 2 resolved" in since_last_audit_html(new)
    report = render_report(new).read_text()
    assert "Since last audit: 2 new, 2 resolved" in report and "auth.dev-auth-disabled" in report
    # A later run that is not signed is not "the last audit"; an altered signed run is not either.
    newest = build_run(old.parent.parent, write_params(tmp_path / "params"), "20250303T100000Z", NEW)
    assert previous_signed_run(newest) == old.resolve()
    (old / "junit.xml").write_text("changed")
    assert previous_signed_run(newest) is None
    assert "No earlier signed audit" in since_last_audit_html(newest)


# --- two real audits (papermill) of one environment --------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "engine"


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Section 0 of the engine fixture catalog run twice; the manual check is attested in the first run only."""
    import yaml

    sys.path.insert(0, str(FIXTURES))
    from engine_fixture_checks import HEALTHY

    from recsys_audit.run import run_audit

    folder = tmp_path_factory.mktemp("real")
    patch = pytest.MonkeyPatch()
    for name in ("RA_CANARY_TOKEN", "RA_CANARY_API_KEY", "RA_CANARY_DSN"):
        patch.setenv(name, f"canary-{name.lower()}-value")
    patch.setenv("PYTHONPATH", os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]))
    base = yaml.safe_load((FIXTURES / "params" / "engine.yaml").read_text())
    base["environment"]["owner"] = OWNER_OF_FIXTURE
    attested = {
        **base,
        "attestations": [
            {
                "check": "h.manual",
                "by": "Ann",
                "date": str(dt.date.today()),
                "evidence_url": "https://wiki.example/runbook",
            }
        ],
    }
    paths = []
    for name, data in (("attested", attested), ("plain", base)):
        path = folder / "params" / name / "engine.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(data))
        paths.append(path)
    runs = []
    try:
        for path in paths:
            result = run_audit(
                path,
                sections=[0],
                catalog=[HEALTHY],
                notebooks_dir=FIXTURES / "notebooks",
                out_dir=folder / "audits",
                timeout_s=120,
            )
            runs.append(result.run_dir)
            time.sleep(1.1)  # run directories are named by the second
    finally:
        patch.undo()
        sys.path.remove(str(FIXTURES))
    key = folder / "rita.key"
    generate_key_pair(key)
    return runs[0], runs[1], key


OWNER_OF_FIXTURE = "Fiona Fixture"


def test_real_runs_diff_sign_verify(real_runs: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    first, second, key = real_runs
    result = diff_runs(first, second)
    assert _ids(result.new) == ["h.manual"]
    assert _ids(result.persisting) == ["h.fail-high", "h.fail-low", "h.warn"]
    assert _ids(result.resolved) == []
    assert _ids(diff_runs(second, first).resolved) == ["h.manual"]
    # Sign the first run (a real report with executed notebooks), then the second run's report shows the diff.
    assert (
        main(
            [
                "sign",
                str(first),
                "--reviewer",
                OWNER_OF_FIXTURE,
                "--role",
                "owner",
                "--decision",
                "approve",
                "--key",
                str(key),
            ]
        )
        == 2
    )
    assert "owns environment engine-fixture" in capsys.readouterr().err
    assert (
        main(["sign", str(first), "--reviewer", REVIEWER, "--role", "SRE", "--decision", "approve", "--key", str(key)])
        == 0
    )
    assert main(["verify", str(first), "--pubkey", f"{key}.pub"]) == 0
    assert "Rita Reviewer" in (first / "report.html").read_text()
    assert "canary-" not in (first / "signoff.json").read_text()  # no secret reaches the record
    assert "Since last audit: 1 new, 0 resolved" in render_report(second).read_text()
    notebook = first / "notebooks" / "00_healthy.ipynb"
    notebook.write_text(notebook.read_text().replace("replicas", "replicaz"))
    check = verify_run(first)
    assert not check.ok and check.problem.startswith("notebooks/00_healthy.ipynb: changed after signing")


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

    baseline_problems = {f.id for f in read_run(baseline).findings if f.status in PROBLEM_STATUSES}
    assert baseline_problems and not baseline_problems & BROKEN_BY_SWITCHES  # e.g. obs.liveness-route

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
