"""Secrets, redaction, findings files and the catalog: the pieces every notebook stands on."""

from __future__ import annotations

import json
import re

import pytest

from recsys_audit.catalog import CHECK_MODULES, all_checks, sections
from recsys_audit.findings import Finding, Severity, Status, append_finding, read_findings, worst
from recsys_audit.params import Secret
from recsys_audit.redaction import redact_json, redact_text


def test_secret_never_prints_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_TOKEN_FOUNDATION", "canary-value-7f3a9c")
    secret = Secret("env:CANARY_TOKEN_FOUNDATION")
    assert str(secret) == "***"
    assert "canary" not in repr(secret)
    assert "canary" not in f"{secret} {secret!r} {[secret]}"
    assert secret.reveal() == "canary-value-7f3a9c"
    # once revealed, the value is masked wherever it shows up later
    assert redact_text("token=canary-value-7f3a9c;") == "token=***;"


def test_secret_must_be_a_reference() -> None:
    with pytest.raises(ValueError, match="env:VARIABLE"):
        Secret("plain-password")


def test_file_secret_resolves_relative_to_base(tmp_path) -> None:
    (tmp_path / "token").write_text("file-canary-123\n")
    secret = Secret("file:token", base=tmp_path)
    assert secret.problem() is None
    assert secret.reveal() == "file-canary-123"
    assert Secret("file:missing", base=tmp_path).problem().endswith("does not exist")


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("postgresql://auditor:s3cr3t-pw@db:5432/recsys", "s3cr3t-pw"),
        ("host=db password=s3cr3t-pw user=x", "s3cr3t-pw"),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl in a log", "c2lnbmF0dXJl"),
        ('{"X-API-Key": "rk_live_123456"}', "rk_live_123456"),
    ],
)
def test_secret_shapes_are_redacted(text: str, leaked: str) -> None:
    assert leaked not in redact_text(text)
    assert leaked not in json.dumps(redact_json({"nested": [text], text: 1}))


def _finding(check_id: str = "x.y", status: Status = Status.PASS) -> Finding:
    return Finding(
        id=check_id,
        section=1,
        title="t",
        severity=Severity.HIGH,
        status=status,
        summary="s",
        evidence={"rows": [{"a": 1}]},
        remediation="r",
        reference="",
        duration_s=0.1,
    )


def test_findings_jsonl_round_trip_and_torn_line(tmp_path) -> None:
    path = tmp_path / "findings" / "01.jsonl"
    append_finding(path, _finding("a.one"))
    append_finding(path, _finding("a.two", Status.FAIL))
    with path.open("a") as handle:
        handle.write('{"id": "a.three", "sec')  # kernel killed mid-write
    found = read_findings(path)
    assert [f.id for f in found] == ["a.one", "a.two"]
    assert found[1].status is Status.FAIL
    assert found[0].evidence == {"rows": [{"a": 1}]}


def test_worst_status_order() -> None:
    assert worst(Status.PASS, Status.WARN) is Status.WARN
    assert worst(Status.WARN, Status.FAIL, Status.ERROR) is Status.FAIL
    assert worst(Status.SKIP, Status.PASS) is Status.PASS
    assert worst() is Status.SKIP


def test_severity_threshold() -> None:
    assert Severity.CRITICAL.at_least(Severity.HIGH)
    assert not Severity.MEDIUM.at_least(Severity.HIGH)


def test_catalog_is_complete_and_well_formed() -> None:
    found = sections()
    assert [s.number for s in found] == list(range(len(CHECK_MODULES)))
    checks = all_checks()
    assert checks, "the catalog lists no checks"
    for check in checks.values():
        assert re.fullmatch(r"[a-z]+\.[a-z0-9-]+", check.id), check.id
        assert check.items and check.title and check.remediation, check.id
        assert isinstance(check.severity, Severity)
    # every section has checks, and its notebook calls each of them or run_remaining()
    for section in found:
        assert section.checks, f"section {section.number} has no checks"


def test_section_notebooks_are_clean_and_parameterized() -> None:
    import nbformat

    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "notebooks"
    for section in sections():
        path = root / f"{section.notebook}.ipynb"
        assert path.is_file(), f"missing notebook {path.name}"
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert not any(cell.get("outputs") or cell.get("execution_count") for cell in code), path.name
        tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: exactly one cell tagged 'parameters'"
        assert {"env", "params_path", "run_dir"} <= set(re.findall(r"^(\w+)\s*=", tagged[0].source, re.M))
        source = "\n".join(cell.source for cell in code)
        assert f"open_section({section.number}," in source, path.name
        called = set(re.findall(r'audit\.run\("([^"]+)"\)', source))
        assert called <= set(section.checks), f"{path.name} runs unknown checks {called - set(section.checks)}"
        assert "run_remaining()" in source or called == set(section.checks), path.name
