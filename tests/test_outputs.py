"""Outputs teams already consume: SARIF 2.1.0 (validated against the OASIS schema, vendored in tests/fixtures/sarif),
OCSF Detection Findings (validated by the py-ocsf-models models) and CSV (read back to the same findings), written
from the as-shipped sandbox's audit and from small runs built by the runner's own code paths."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from py_ocsf_models.events.findings.detection_finding import DetectionFinding
from run_fixtures import build_run, write_params

from recsys_audit.findings import Finding
from recsys_audit.outputs import CSV_FILE, OCSF_FILE, OUTPUTS, SARIF_FILE, parse_formats, rewrite_present, write_outputs
from recsys_audit.outputs.table import csv_text, read_csv

SARIF_SCHEMA = json.loads(
    (Path(__file__).parent / "fixtures" / "sarif" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8")
)
STAMP = "20250301T100000Z"
STATUSES = {
    "auth.dev-auth-disabled": "pass",
    "auth.cross-tenant-admin": "fail",
    "db.rls-enabled": "fail",  # waived below
    "db.restore-tested": "error",
    "obs.runbooks-exercised": "manual",
    "perf.pprof-off": "warn",
}
WAIVER = {"check": "db.rls-enabled", "justification": "compensating control", "expires": "2099-01-01",
          "approved_by": "ciso"}  # fmt: skip


def sarif_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(SARIF_SCHEMA, format_checker=jsonschema.FormatChecker())
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def shipped(audit_result: Callable[[str], Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the as-shipped sandbox's audit with every output written."""
    run_dir = Path(shutil.copytree(audit_result("as-shipped").run_dir, tmp_path_factory.mktemp("outputs") / "run"))
    write_outputs(run_dir, list(OUTPUTS))
    return run_dir


@pytest.fixture
def small_run(tmp_path: Path) -> Path:
    run_dir = build_run(tmp_path / "audits", write_params(tmp_path / "params", waivers=[WAIVER]), STAMP, STATUSES)
    write_outputs(run_dir, ["sarif", "ocsf", "csv"])
    return run_dir


def recorded(run_dir: Path) -> tuple[dict[str, Any], list[Finding]]:
    document = json.loads((run_dir / "findings.json").read_text(encoding="utf-8"))
    return document, [Finding.from_dict(item) for item in document["findings"]]


# --- SARIF -----------------------------------------------------------------------------------------------------------


def test_sarif_of_a_real_audit_is_valid_and_carries_every_finding(shipped: Path) -> None:
    log = json.loads((shipped / SARIF_FILE).read_text(encoding="utf-8"))
    assert sarif_errors(log) == []
    document, findings = recorded(shipped)
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["ruleId"] for r in run["results"]] == [f.id for f in findings]
    assert [rule["id"] for rule in rules] == [f.id for f in findings]  # one rule per check, in the catalog's order
    for finding, result in zip(findings, run["results"], strict=True):
        rule = rules[result["ruleIndex"]]
        assert rule["id"] == finding.id and rule["help"]["text"] == finding.remediation
        assert rule["properties"]["checklist_items"] == result["properties"]["checklist_items"] == finding.items
        assert result["properties"]["status"] == finding.status and result["message"]["text"] == finding.summary
        assert result["properties"]["remediation"] == finding.remediation
    failing = {f.id for f in findings if f.status == "fail" and not f.waived}
    assert failing and {r["ruleId"] for r in run["results"] if r.get("kind", "fail") == "fail"} >= failing
    assert run["properties"]["verdict"] == document["verdict"] == "fail"
    assert run["automationDetails"]["id"] == f"recsys-audit/as-shipped/{document['run']}"


def test_sarif_maps_status_severity_and_waivers(small_run: Path) -> None:
    log = json.loads((small_run / SARIF_FILE).read_text(encoding="utf-8"))
    assert sarif_errors(log) == []
    results = {r["ruleId"]: r for r in log["runs"][0]["results"]}
    # SARIF leaves defaults out: kind "fail", level "warning".
    shape = {check: (r.get("kind", "fail"), r.get("level", "warning")) for check, r in results.items()}
    assert shape == {
        "auth.dev-auth-disabled": ("pass", "none"),
        "auth.cross-tenant-admin": ("fail", "error"),  # critical
        "db.rls-enabled": ("fail", "error"),  # high, waived: a suppression, not a lower level
        "db.restore-tested": ("open", "none"),  # not evaluated
        "obs.runbooks-exercised": ("review", "none"),
        "perf.pprof-off": ("fail", "warning"),  # warn, medium
    }
    assert results["db.rls-enabled"]["suppressions"] == [
        {"kind": "external", "status": "accepted", "justification": "compensating control",
         "properties": {"approved_by": "ciso", "expires": "2099-01-01"}}
    ]  # fmt: skip
    assert "suppressions" not in results["auth.cross-tenant-admin"]
    rules = {rule["id"]: rule for rule in log["runs"][0]["tool"]["driver"]["rules"]}
    assert {check: rule["properties"]["security-severity"] for check, rule in rules.items()} == {
        "auth.dev-auth-disabled": "9.5",
        "auth.cross-tenant-admin": "9.5",
        "db.rls-enabled": "8.0",
        "db.restore-tested": "8.0",
        "obs.runbooks-exercised": "5.5",
        "perf.pprof-off": "5.5",
    }
    location = results["perf.pprof-off"]["locations"][0]
    assert location["physicalLocation"]["artifactLocation"] == {"uri": "staging.yaml", "uriBaseId": "PARAMSROOT"}
    assert location["logicalLocations"][0]["fullyQualifiedName"] == "staging/6/perf.pprof-off"
    assert results["perf.pprof-off"]["partialFingerprints"] == {"recsysAuditFinding/v1": "staging/perf.pprof-off"}
    broken = json.loads(json.dumps(log))
    broken["runs"][0]["results"][0]["kind"] = "broken"
    assert sarif_errors(broken), "the schema check must be able to fail"


# --- OCSF ------------------------------------------------------------------------------------------------------------


def test_ocsf_events_of_a_real_audit_are_valid_detection_findings(shipped: Path) -> None:
    events = json.loads((shipped / OCSF_FILE).read_text(encoding="utf-8"))
    document, findings = recorded(shipped)
    assert len(events) == len(findings)
    for finding, event in zip(findings, events, strict=True):
        model = DetectionFinding.model_validate(event)
        assert (model.class_uid, model.category_uid, int(model.type_uid), model.activity_id) == (2004, 2, 200401, 1)
        assert model.finding_info.analytic is not None and model.finding_info.analytic.uid == finding.id
        assert model.finding_info.uid == f"as-shipped/{document['run']}/{finding.id}"
        assert model.metadata.event_code == finding.id and model.metadata.labels == finding.items
        assert event["unmapped"]["checklist_items"] == finding.items
        assert model.remediation is not None and model.remediation.desc == finding.remediation
        assert model.status_code == finding.status and model.status_detail == finding.summary
        assert model.resources is not None and model.resources[0].uid == document["target"]


def test_ocsf_maps_severity_and_waivers(small_run: Path) -> None:
    events = {e["metadata"]["event_code"]: e for e in json.loads((small_run / OCSF_FILE).read_text("utf-8"))}
    for event in events.values():
        DetectionFinding.model_validate(event)
    assert {check: (e["severity_id"], e["severity"]) for check, e in events.items()} == {
        "auth.dev-auth-disabled": (5, "Critical"),
        "auth.cross-tenant-admin": (5, "Critical"),
        "db.rls-enabled": (4, "High"),
        "db.restore-tested": (4, "High"),
        "obs.runbooks-exercised": (3, "Medium"),
        "perf.pprof-off": (3, "Medium"),
    }
    assert (events["db.rls-enabled"]["status_id"], events["db.rls-enabled"]["status"]) == (3, "Suppressed")
    assert (events["auth.cross-tenant-admin"]["status_id"], events["auth.cross-tenant-admin"]["status"]) == (1, "New")
    assert events["auth.cross-tenant-admin"]["time"] == 1740823200000  # the run's start, 2025-03-01T10:00:00Z
    with pytest.raises(ValueError):
        DetectionFinding.model_validate({**events["perf.pprof-off"], "severity_id": 42})


# --- CSV -------------------------------------------------------------------------------------------------------------


def test_csv_round_trips_to_the_same_findings(shipped: Path, small_run: Path) -> None:
    for run_dir in (shipped, small_run):
        _, findings = recorded(run_dir)
        assert read_csv(run_dir / CSV_FILE) == findings
    header = (small_run / CSV_FILE).read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("env,run,id,section,title,severity,status,waived,summary,remediation")


def test_csv_cells_a_spreadsheet_would_run_are_defused_and_read_back_exactly(tmp_path: Path) -> None:
    hostile = ['=HYPERLINK("http://x","y")', "+1+1", "-2", "@SUM(A1)", "\tTab", "'quoted", "two\nlines", "ü ✓"]
    findings = [
        Finding(id=f"x.check-{i}", section=1, title=text, severity="high", status="fail", summary=text,
                evidence={"value": text}, remediation=text, reference="", duration_s=0.1 * i, items=["1.a"])
        for i, text in enumerate(hostile)
    ]  # fmt: skip
    document = {"env": "=env", "run": STAMP, "findings": [f.to_dict() for f in findings]}
    path = tmp_path / CSV_FILE
    path.write_text(csv_text(document), encoding="utf-8", newline="")
    assert read_csv(path) == [Finding.from_dict(f.to_dict()) for f in findings]
    import csv

    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["summary"] for row in rows] == [
        "'=HYPERLINK(\"http://x\",\"y\")", "'+1+1", "'-2", "'@SUM(A1)", "'\tTab", "''quoted", "two\nlines", "ü ✓"
    ]  # fmt: skip
    assert rows[0]["env"] == "'=env"


# --- the registry ----------------------------------------------------------------------------------------------------


def test_formats_parse_in_the_registrys_order_and_suggest_on_typos() -> None:
    assert parse_formats("csv, SARIF,html") == ["html", "sarif", "csv"]
    with pytest.raises(ValueError, match=r"unknown format 'osfc' — did you mean 'ocsf'\?"):
        parse_formats("html,osfc")


def test_rewriting_follows_the_outputs_a_run_holds(small_run: Path) -> None:
    before = (small_run / SARIF_FILE).read_bytes()
    (small_run / SARIF_FILE).write_text("stale", encoding="utf-8")
    rewritten = rewrite_present(small_run, skip=("html",))
    assert [p.name for p in rewritten] == ["junit.xml", SARIF_FILE, OCSF_FILE, CSV_FILE]
    assert (small_run / SARIF_FILE).read_bytes() == before


def test_sign_off_writes_the_run_s_outputs_again_and_signs_them(tmp_path: Path) -> None:
    """An attestation at sign-off turns a manual finding into a pass: every output the run holds says so, and the
    signature covers them."""
    import datetime as dt

    from run_fixtures import make_signer, write_allowed_signers

    from recsys_audit.signoff import verify_run
    from recsys_audit.signoff_cli import main

    rita = make_signer(tmp_path / "keys")
    trusted = write_allowed_signers(tmp_path / "trust" / "allowed_signers", rita)
    params = write_params(tmp_path / "params", allowed_signers=trusted)
    run_dir = build_run(tmp_path / "audits", params, STAMP, {"auth.dev-auth-disabled": "pass",
                                                             "obs.runbooks-exercised": "manual"})  # fmt: skip
    write_outputs(run_dir, ["sarif", "ocsf", "csv"])
    assert {f.id: f.status for f in read_csv(run_dir / CSV_FILE)}["obs.runbooks-exercised"] == "manual"
    today = dt.datetime.now(dt.UTC).date().isoformat()
    command = ["sign", str(run_dir), "--reviewer", "Rita Reviewer", "--role", "SRE", "--decision", "reject"]
    command += ["--key", str(rita.key), "--attest", f"obs.runbooks-exercised=https://wiki.example/runbooks@{today}"]
    assert main(command) == 0
    sarif = json.loads((run_dir / SARIF_FILE).read_text(encoding="utf-8"))
    kinds = {r["ruleId"]: r.get("kind", "fail") for r in sarif["runs"][0]["results"]}
    assert kinds["obs.runbooks-exercised"] == "pass" and kinds["auth.cross-tenant-admin"] == "open"  # not recorded
    events = {e["metadata"]["event_code"]: e for e in json.loads((run_dir / OCSF_FILE).read_text(encoding="utf-8"))}
    assert events["obs.runbooks-exercised"]["status_code"] == "pass"
    assert {f.id: f.status for f in read_csv(run_dir / CSV_FILE)}["obs.runbooks-exercised"] == "pass"
    result = verify_run(run_dir, trusted)
    assert result.ok, result.problem
    assert {SARIF_FILE, OCSF_FILE, CSV_FILE} <= set(result.record["files"])
