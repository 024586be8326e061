"""The runner end to end: real papermill runs of fixture notebooks in parallel, merge, layout, schema, JUnit."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "engine"))

from engine_fixture_checks import SECTIONS
from engine_support import NOTEBOOKS, days_from_today, kernel_environment, write_params

from recsys_audit.cli import main as cli_main
from recsys_audit.findings import Severity, Status
from recsys_audit.run import AuditResult, UsageError, run_audit

SCHEMA = json.loads((Path(__file__).parents[1] / "recsys_audit" / "findings_schema.json").read_text())
TIMEOUT_S = 8


@pytest.fixture(scope="module")
def kernel_env():
    with pytest.MonkeyPatch.context() as patch:
        for name, value in kernel_environment().items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, kernel_env) -> AuditResult:
    """Sections 0-3: healthy (with a waiver, an expired waiver, an attestation), raises, killed kernel, timeout."""
    folder = tmp_path_factory.mktemp("engine-run")
    params = write_params(
        folder,
        waivers=[
            {
                "check": "h.fail-high",
                "justification": "compensating control in the gateway",
                "expires": days_from_today(30),
                "approved_by": "ciso",
            },
            {
                "check": "h.warn",
                "justification": "accepted until the next quarter",
                "expires": days_from_today(-1),
                "approved_by": "ciso",
            },
        ],
        attestations=[
            {"check": "h.manual", "by": "sre-lead", "date": days_from_today(-3), "evidence_url": "wiki/runbook"}
        ],
    )
    return run_audit(
        params,
        sections=[0, 1, 2, 3],
        timeout_s=TIMEOUT_S,
        out_dir=folder / "audits",
        notebooks_dir=NOTEBOOKS,
        catalog=SECTIONS,
    )


def by_id(result: AuditResult):
    return {f.id: f for f in result.findings}


def test_layout_and_parallel_execution(mixed_run: AuditResult) -> None:
    run_dir = mixed_run.run_dir
    assert run_dir.parent.name == "engine-fixture"
    for name in ("findings.json", "junit.xml", "report.html", "params.yaml"):
        assert (run_dir / name).is_file(), name
    stems = ["00_healthy", "01_raises", "02_killed", "03_slow"]
    assert sorted(p.stem for p in (run_dir / "notebooks").glob("*.ipynb")) == stems
    assert sorted(p.stem for p in (run_dir / "findings").glob("*.jsonl")) == stems
    # On the pool's kernels, in parallel; a notebook that failed or killed its kernel shared it with no other.
    kernels = {n.name: n.kernel.split(",")[0] for n in mixed_run.notebooks}
    assert len(set(kernels.values())) >= 2, kernels
    for broken in ("01_raises", "02_killed"):
        assert list(kernels.values()).count(kernels[broken]) == 1, kernels
    document = json.loads((run_dir / "findings.json").read_text())
    assert [n["kernel"] for n in document["notebooks"]] == [n.kernel for n in mixed_run.notebooks]


def test_failures_become_error_findings_and_exit_3(mixed_run: AuditResult) -> None:
    statuses = {n.name: (n.status, n.error) for n in mixed_run.notebooks}
    assert statuses["00_healthy"] == ("ok", None)
    assert statuses["01_raises"] == ("failed", "RuntimeError: database exploded")
    assert statuses["02_killed"][0] == "died"
    assert statuses["03_slow"] == ("timeout", f"timeout after {TIMEOUT_S} s")
    findings = by_id(mixed_run)
    assert findings["r.first"].status == Status.PASS  # recorded before the crash, kept
    for check_id in ("r.second", "r.third"):
        assert findings[check_id].status == Status.ERROR
        assert findings[check_id].summary == "not evaluated: RuntimeError: database exploded"
    assert findings["k.first"].status == Status.PASS
    assert findings["k.second"].summary == "not evaluated: DeadKernelError: the kernel died"
    assert findings["s.second"].summary == f"not evaluated: timeout after {TIMEOUT_S} s"
    # Every catalog check of the chosen sections has exactly one finding.
    expected = [c for s in SECTIONS[:4] for c in s.checks]
    assert [f.id for f in mixed_run.findings] == expected
    assert mixed_run.exit_code == 3 and mixed_run.verdict == "incomplete"


def test_an_incomplete_run_is_never_shown_as_a_pass(mixed_run: AuditResult) -> None:
    document = json.loads((mixed_run.run_dir / "findings.json").read_text())
    assert document["score"] is None and document["completeness"]["complete"] is False
    assert document["completeness"]["not_evaluated"] == ["r.second", "r.third", "k.second", "s.second"]
    assert [n["name"] for n in document["completeness"]["notebooks_failed"]] == ["01_raises", "02_killed", "03_slow"]
    page = (mixed_run.run_dir / "report.html").read_text()
    assert "Incomplete audit — not a pass." in page and "4 check(s) not evaluated: r.second" in page
    body = page.split("<main>", 1)[1]  # not the stylesheet
    assert "score n/a — incomplete run" in body and "100%" not in body


def test_waivers_and_attestations(mixed_run: AuditResult) -> None:
    findings = by_id(mixed_run)
    waived = findings["h.fail-high"]
    assert waived.status == Status.FAIL and waived.waived
    assert waived.waiver["justification"] == "compensating control in the gateway"
    assert waived.waiver["approved_by"] == "ciso" and waived.waiver["expires"] == days_from_today(30)
    expired = findings["h.warn"]
    assert expired.status == Status.WARN and not expired.waived
    assert expired.waiver["note"].startswith(f"waiver expired on {days_from_today(-1)}")
    attested = findings["h.manual"]
    assert attested.status == Status.PASS
    assert attested.attestation["by"] == "sre-lead" and attested.attestation["applied"] is True
    document = json.loads((mixed_run.run_dir / "findings.json").read_text())
    assert {w["check"]: w["state"] for w in document["waivers"]} == {"h.fail-high": "applied", "h.warn": "expired"}
    assert document["attestations"][0]["state"] == "applied"


def test_findings_json_matches_schema(mixed_run: AuditResult) -> None:
    document = json.loads((mixed_run.run_dir / "findings.json").read_text())
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(document)
    assert document["counts"]["by_section"]["1"] == {
        "pass": 1,
        "fail": 0,
        "warn": 0,
        "error": 2,
        "skip": 0,
        "manual": 0,
    }
    assert document["exit_code"] == 3 and document["verdict"] == "incomplete"
    assert document["schema_version"] == 2 and document["run"] == mixed_run.run_dir.name
    broken = {**document, "verdict": "maybe"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_junit_mapping(mixed_run: AuditResult) -> None:
    root = ET.parse(mixed_run.run_dir / "junit.xml").getroot()
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == [
        "audit",
        "0 Healthy section",
        "1 Raises half-way",
        "2 Kernel killed",
        "3 Exceeds the timeout",
    ]
    properties = {p.get("name"): p.get("value") for p in suites["audit"].iter("property")}
    assert properties["verdict"] == "incomplete" and properties["exit_code"] == "3"
    assert properties["not_evaluated"].startswith("sections not run: 4 Secrets in failures (--sections); 4 check(s)")
    verdict_case = suites["audit"].find("testcase[@name='verdict: incomplete']")
    assert verdict_case.find("error").get("type") == "incomplete"
    assert suites["audit"].find("testcase[@name='section 4']/skipped").get("message").startswith("not evaluated")
    cases = {c.get("name").split(":")[0]: c for s in suites.values() for c in s.findall("testcase")}
    assert cases["h.fail-low"].find("failure").get("message") == "a minor gap"
    # grouped by checklist item: the class is the first item the check covers, the property lists them all
    assert cases["h.fail-low"].get("classname") == "0.serving-mode-per-tenant"
    items = cases["h.fail-low"].find("properties/property[@name='checklist_items']")
    assert items.get("value") == "0.serving-mode-per-tenant"
    assert cases["h.fail-high"].find("failure") is None
    assert cases["h.fail-high"].find("skipped").get("message").startswith("waived: compensating control")
    assert cases["r.second"].find("error").get("message").startswith("not evaluated: RuntimeError")
    assert cases["h.skip"].find("skipped").get("message") == "skip: no such feature here"
    assert [child.tag for child in cases["h.pass"]] == ["properties"]  # a pass: no failure, error or skip
    healthy = suites["0 Healthy section"]
    assert (healthy.get("tests"), healthy.get("failures"), healthy.get("skipped")) == ("6", "1", "2")
    assert root.get("errors") == "5"  # four checks and the verdict


def test_exit_codes_follow_fail_on(tmp_path: Path, kernel_env, capsys: pytest.CaptureFixture[str]) -> None:
    waiver = {
        "check": "h.fail-high",
        "justification": "compensating control in the gateway",
        "expires": days_from_today(1),
        "approved_by": "ciso",
    }
    params = write_params(tmp_path, waivers=[waiver])
    # As `recsys-audit run --sections 0` does: the only high failure is waived, h.fail-low is low — but sections 1-4
    # did not run, so the verdict is partial, never pass.
    command = [
        "run",
        str(params),
        "--sections",
        "0",
        "--catalog",
        "engine_fixture_checks",
        "--notebooks",
        str(NOTEBOOKS),
    ]
    assert cli_main([*command, "--out", str(tmp_path / "audits")]) == 4
    line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("engine-fixture: partial"))
    assert line.startswith("engine-fixture: partial (exit 4; 2 fail, 1 manual, 1 pass, 1 skip, 1 warn; score n/a — ")
    assert line.endswith("not evaluated: sections not run: 1 Raises half-way, 2 Kernel killed, 3 Exceeds the timeout, "
                         "4 Secrets in failures (--sections)")  # fmt: skip
    high = json.loads(next((tmp_path / "audits").glob("*/*/findings.json")).read_text())
    assert (high["verdict"], high["score"], high["completeness"]["sections_not_run"]) == ("partial", None, [1, 2, 3, 4])
    low = run_audit(params, fail_on=Severity.LOW, sections=[0], out_dir=tmp_path / "audits", notebooks_dir=NOTEBOOKS,
                    catalog=SECTIONS)  # fmt: skip
    assert (low.exit_code, low.verdict) == (1, "fail")  # a failure wins over partial
    assert low.run_dir.parent.name == "engine-fixture"


def test_bad_usage_is_refused_before_anything_runs(tmp_path: Path) -> None:
    params = write_params(tmp_path)
    with pytest.raises(UsageError, match="unknown section"):
        run_audit(params, sections=[42], out_dir=tmp_path / "audits", notebooks_dir=NOTEBOOKS, catalog=SECTIONS)
    assert not (tmp_path / "audits").exists()


def test_missing_notebook_is_an_error_finding(tmp_path: Path, kernel_env) -> None:
    params = write_params(tmp_path)
    empty = tmp_path / "no-notebooks"
    empty.mkdir()
    result = run_audit(params, sections=[1], out_dir=tmp_path / "audits", notebooks_dir=empty, catalog=SECTIONS)
    assert result.exit_code == 3
    assert result.notebooks[0].status == "missing"
    assert all(f.status == Status.ERROR and "not found" in f.summary for f in result.findings)
