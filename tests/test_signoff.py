"""Sign-off: keys, signing, four-eyes, attestations, verification of every file, and the signed report in Chromium."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys_audit import merge
from recsys_audit.findings import Finding, Severity, Status
from recsys_audit.signoff import (
    PUBLIC_KEY_FILE,
    SIGNATURE_FILE,
    SIGNOFF_FILE,
    SignoffError,
    apply_attestation,
    effective_findings,
    generate_key_pair,
    sign_run,
    verify_run,
)
from recsys_audit.signoff_cli import main

OWNER = "Olga Owner"
REVIEWER = "Rita Reviewer"

# check id -> (section, severity)
CHECKS = {
    "auth.dev-auth-disabled": (1, Severity.CRITICAL),
    "auth.cross-tenant-admin": (1, Severity.CRITICAL),
    "db.rls-enabled": (4, Severity.HIGH),
    "obs.runbooks-exercised": (5, Severity.MEDIUM),
    "db.restore-tested": (4, Severity.HIGH),
    "perf.pprof-off": (6, Severity.MEDIUM),
}


# --- hand-built run directories (the layout run.py writes) -------------------------------------------------------


def write_params(folder: Path, env: str = "staging", *, owner: str = OWNER, allow: bool = False, **policies) -> Path:
    data = {
        "environment": {"name": env, "owner": owner, "allow_owner_signoff": allow},
        "target": {"base_url": "http://127.0.0.1:9"},
        "tenants": [{"id": "acme", "surfaces": ["home"]}],
        "policies": policies,
    }
    path = folder / f"{env}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def make_finding(check: str, status: str) -> Finding:
    section, severity = CHECKS[check]
    return Finding(
        id=check,
        section=section,
        title=f"title of {check}",
        severity=severity,
        status=Status(status),
        summary=f"{check} is {status}",
        evidence={"probe": "GET /v1/status", "rows": [{"name": "a", "value": 1}]},
        remediation="Fix it.",
        reference="checklist",
        duration_s=0.01,
        notebook=f"{section:02d}_section",
    )


def build_run(root: Path, params: Path, stamp: str, statuses: dict[str, str]) -> Path:
    """audits/<env>/<stamp>/ with notebooks, findings JSONL, findings.json, junit.xml, params.yaml and report.html."""
    env = yaml.safe_load(params.read_text())["environment"]["name"]
    run_dir = root / env / stamp
    (run_dir / "notebooks").mkdir(parents=True)
    (run_dir / "findings").mkdir()
    shutil.copyfile(params, run_dir / "params.yaml")
    findings = [make_finding(check, status) for check, status in statuses.items()]
    for finding in findings:
        with (run_dir / "findings" / f"{finding.notebook}.jsonl").open("a") as handle:
            handle.write(json.dumps(finding.to_dict(), sort_keys=True) + "\n")
    notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    for name in sorted({f.notebook for f in findings}):
        (run_dir / "notebooks" / f"{name}.ipynb").write_text(json.dumps(notebook))
    outcome = merge.verdict(findings, Severity.HIGH, notebook_failed=False)
    started = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    document = {
        "schema_version": 1,
        "kit_version": "0.1.0",
        "env": env,
        "target": "http://127.0.0.1:9",
        "params_file": str(params.resolve()),
        "params_sha256": hashlib.sha256(params.read_bytes()).hexdigest(),
        "started_at": started.isoformat(),
        "finished_at": started.isoformat(),
        "duration_s": 1.0,
        "fail_on": "high",
        "verdict": outcome.label,
        "exit_code": int(outcome.exit_code),
        "blocking": outcome.blocking,
        "score": merge.score(findings),
        "counts": {"by_status": merge.counts_by_status(findings), "by_section": merge.counts_by_section(findings)},
        "sections": [],
        "notebooks": [],
        "waivers": [],
        "attestations": [],
        "findings": [f.to_dict() for f in findings],
    }
    (run_dir / "findings.json").write_text(json.dumps(document, indent=2))
    (run_dir / "junit.xml").write_text('<?xml version="1.0"?><testsuites name="recsys-audit"></testsuites>\n')
    (run_dir / "report.html").write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{env}</title></head>"
        f"<body><h1>Audit of {env}</h1><p>verdict: {outcome.label}</p></body></html>"
    )
    return run_dir


STATUSES = {
    "auth.dev-auth-disabled": "pass",
    "auth.cross-tenant-admin": "fail",
    "db.rls-enabled": "warn",
    "obs.runbooks-exercised": "manual",
    "db.restore-tested": "manual",
    "perf.pprof-off": "skip",
}


@pytest.fixture
def key(tmp_path: Path) -> Path:
    private = tmp_path / "keys" / "rita.key"
    generate_key_pair(private)
    return private


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    params = write_params(tmp_path / "params")
    return build_run(tmp_path / "audits", params, "20250301T100000Z", STATUSES)


def sign(run_dir: Path, key: Path, *extra: str, reviewer: str = REVIEWER) -> int:
    command = ["sign", str(run_dir), "--reviewer", reviewer, "--role", "SRE lead", "--decision", "approve"]
    return main([*command, "--key", str(key), *extra])


# --- keys --------------------------------------------------------------------------------------------------------


def test_keygen_writes_private_key_0600_and_public_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private = tmp_path / "k" / "signing.key"
    assert main(["keygen", str(private)]) == 0
    out = capsys.readouterr().out
    assert private.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    public = private.with_name("signing.key.pub")
    assert b"PUBLIC KEY" in public.read_bytes()
    assert "fingerprint: SHA256:" in out
    assert main(["keygen", str(private)]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err


def test_private_key_readable_by_others_is_refused(run_dir: Path, key: Path, capsys: pytest.CaptureFixture) -> None:
    key.chmod(0o644)
    assert sign(run_dir, key) == 2
    assert "chmod 600" in capsys.readouterr().err
    assert not (run_dir / SIGNOFF_FILE).exists()


# --- sign and verify ---------------------------------------------------------------------------------------------


def test_sign_then_verify(run_dir: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sign(run_dir, key, "--comment", "ok for launch") == 0
    record = json.loads((run_dir / SIGNOFF_FILE).read_text())
    assert record["reviewer"] == REVIEWER and record["role"] == "SRE lead" and record["decision"] == "approve"
    assert record["environment"] == "staging" and record["kit_version"] == "0.1.0"
    assert record["params_sha256"] == hashlib.sha256((run_dir / "params.yaml").read_bytes()).hexdigest()
    assert record["signed_at"].endswith("Z") and record["owner"] == OWNER
    files = record["files"]
    assert list(files) == sorted(files)
    assert {"report.html", "findings.json", "junit.xml", "params.yaml", PUBLIC_KEY_FILE} <= set(files)
    assert files["report.html"] == hashlib.sha256((run_dir / "report.html").read_bytes()).hexdigest()
    # The canonical form is what is signed: sorted keys, no spaces.
    assert (run_dir / SIGNOFF_FILE).read_bytes() == json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    report = (run_dir / "report.html").read_text()
    assert "Signed by <strong>Rita Reviewer</strong> (SRE lead)" in report
    assert record["key_fingerprint"] in report and "APPROVE" in report
    capsys.readouterr()

    assert main(["verify", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "integrity only, not identity" in out
    assert main(["verify", str(run_dir), "--pubkey", str(key) + ".pub"]) == 0
    assert "integrity only" not in capsys.readouterr().out


def _all_files(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.rglob("*") if p.is_file())


def test_any_changed_byte_in_any_file_fails_verify_and_names_the_file(run_dir: Path, key: Path) -> None:
    sign_run(run_dir, reviewer=REVIEWER, role="SRE", decision="approve", key_path=key)
    pubkey = Path(str(key) + ".pub")
    files = _all_files(run_dir)
    assert len(files) >= 10  # notebooks, JSONL, findings.json, junit, params copy, report, signoff.*
    for path in files:
        original = path.read_bytes()
        rel = path.relative_to(run_dir).as_posix()
        for offset in sorted({0, len(original) // 2, len(original) - 1}):
            changed = bytearray(original)
            changed[offset] ^= 0x01
            path.write_bytes(bytes(changed))
            for given in (None, pubkey):
                result = verify_run(run_dir, given)
                assert not result.ok, f"{rel} byte {offset} changed but verify passed"
                assert rel in result.problem, f"{rel} byte {offset}: {result.problem}"
            path.write_bytes(original)
    assert verify_run(run_dir, pubkey).ok


def test_added_and_removed_files_fail_verify(run_dir: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sign_run(run_dir, reviewer=REVIEWER, role="SRE", decision="approve", key_path=key)
    extra = run_dir / "notebooks" / "99_extra.ipynb"
    extra.write_text("{}")
    assert main(["verify", str(run_dir)]) == 1
    assert "notebooks/99_extra.ipynb: added after signing" in capsys.readouterr().out
    extra.unlink()
    (run_dir / "junit.xml").unlink()
    assert verify_run(run_dir).problem == "junit.xml: missing (signed file was removed)"


def test_wrong_public_key_fails(run_dir: Path, key: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sign_run(run_dir, reviewer=REVIEWER, role="SRE", decision="approve", key_path=key)
    other_public, other_fingerprint = generate_key_pair(tmp_path / "other.key")
    assert main(["verify", str(run_dir), "--pubkey", str(other_public)]) == 1
    out = capsys.readouterr().out
    assert "verify FAILED" in out and "key_fingerprint" in out and other_fingerprint in out
    # A run directory whose key copy was swapped for another key fails too.
    shutil.copyfile(other_public, run_dir / PUBLIC_KEY_FILE)
    assert not verify_run(run_dir).ok


def test_unsigned_run_does_not_verify(run_dir: Path) -> None:
    result = verify_run(run_dir)
    assert not result.ok and "not signed" in result.problem


def test_signing_twice_needs_replace(run_dir: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sign(run_dir, key) == 0
    assert sign(run_dir, key, "--decision", "reject") == 2
    assert "already signed by Rita Reviewer" in capsys.readouterr().err
    again = ["sign", str(run_dir), "--reviewer", "Sam", "--role", "SecEng", "--decision", "reject"]
    assert main([*again, "--key", str(key), "--replace", "--comment", "RLS missing"]) == 0
    result = verify_run(run_dir)
    assert result.ok and result.record["decision"] == "reject" and result.record["reviewer"] == "Sam"
    report = (run_dir / "report.html").read_text()
    assert report.count("ra-signoff-block") == 1 and "Rita Reviewer" not in report and "REJECT" in report


# --- four eyes ---------------------------------------------------------------------------------------------------


def test_owner_may_not_sign_own_environment(run_dir: Path, key: Path) -> None:
    report_before = (run_dir / "report.html").read_bytes()
    # Run as a user would: a subprocess, one line on stderr, no traceback.
    command = [sys.executable, "-m", "recsys_audit.signoff_cli", "sign", str(run_dir), "--reviewer", "  olga OWNER "]
    command += ["--role", "owner", "--decision", "approve", "--key", str(key)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "owns environment staging" in done.stderr and "allow_owner_signoff" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (run_dir / SIGNOFF_FILE).exists() and not (run_dir / SIGNATURE_FILE).exists()
    assert (run_dir / "report.html").read_bytes() == report_before


def test_owner_may_sign_when_params_allow_it(tmp_path: Path, key: Path) -> None:
    params = write_params(tmp_path / "params", allow=True)
    run = build_run(tmp_path / "audits", params, "20250301T100000Z", STATUSES)
    record = sign_run(run, reviewer=OWNER, role="owner", decision="approve", key_path=key)
    assert "allowed by params" in record["four_eyes"]
    assert verify_run(run).ok


def test_changed_params_copy_is_refused(run_dir: Path, key: Path) -> None:
    params_copy = run_dir / "params.yaml"
    params_copy.write_text(params_copy.read_text().replace(OWNER, "Someone Else"))
    with pytest.raises(SignoffError, match="differs from the params the audit ran with"):
        sign_run(run_dir, reviewer=OWNER, role="owner", decision="approve", key_path=key)


# --- attestations ------------------------------------------------------------------------------------------------


def test_attestations_fresh_counts_expired_reverts_to_manual(run_dir: Path, key: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    fresh, old = today - dt.timedelta(days=10), today - dt.timedelta(days=400)
    assert (
        sign(
            run_dir,
            key,
            "--attest",
            f"obs.runbooks-exercised=https://wiki.example/runbooks@{fresh}",
            "--attest",
            f"db.restore-tested=https://wiki.example/restore@{old}",
        )
        == 0
    )
    record = verify_run(run_dir).record
    assert [a["check"] for a in record["attestations"]] == ["obs.runbooks-exercised", "db.restore-tested"]
    assert record["attestations"][0]["by"] == REVIEWER and record["attestation_max_age_days"] == 180
    statuses = {f.id: f.status for f in effective_findings(run_dir)}
    assert statuses["obs.runbooks-exercised"] == Status.PASS
    assert statuses["db.restore-tested"] == Status.MANUAL
    # Judged later, the fresh attestation has expired too.
    later = {f.id: f for f in effective_findings(run_dir, as_of=fresh + dt.timedelta(days=181))}
    assert later["obs.runbooks-exercised"].status == Status.MANUAL
    assert "expired" in later["obs.runbooks-exercised"].summary
    report = (run_dir / "report.html").read_text()
    assert "https://wiki.example/runbooks" in report and "EXPIRED — counts as manual" in report


def test_params_attestation_applied_at_run_expires_later() -> None:
    finding = make_finding("obs.runbooks-exercised", "pass")
    finding.attestation = {"applied": True, "by": "Ann", "date": "2025-01-01", "evidence_url": "https://x/y"}
    still = apply_attestation(finding, finding.attestation, 180, dt.date(2025, 6, 1))
    assert still.status == Status.PASS
    expired = apply_attestation(finding, finding.attestation, 180, dt.date(2025, 7, 1))
    assert expired.status == Status.MANUAL and expired.attestation["expired"] is True
    assert expired.attestation["expires"] == "2025-06-30"
    failing = make_finding("auth.cross-tenant-admin", "fail")
    assert apply_attestation(failing, finding.attestation, 180, dt.date(2025, 2, 1)).status == Status.FAIL


@pytest.mark.parametrize(
    ("attest", "message"),
    [
        ("obs.runbooks-exercised=https://x", "expected CHECK_ID=URL@YYYY-MM-DD"),
        ("obs.runbooks-exercised=https://x@2025-13-01", "is not YYYY-MM-DD"),
        ("no.such-check=https://x@2025-01-01", "no such check"),
        ("auth.cross-tenant-admin=https://x@2025-01-01", "only manual checks are attested"),
        ("obs.runbooks-exercised=https://x@2999-01-01", "in the future"),
    ],
)
def test_bad_attestations_are_refused(run_dir: Path, key: Path, attest: str, message: str) -> None:
    with pytest.raises(SignoffError, match=message):
        sign_run(run_dir, reviewer=REVIEWER, role="SRE", decision="approve", key_path=key, attest=[attest])
    assert not (run_dir / SIGNOFF_FILE).exists()


# --- the signed report opens offline ------------------------------------------------------------------------------


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (make system-deps)")
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    base += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    return subprocess.run(
        [*base, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_signed_report_renders_offline_with_signoff_block(run_dir: Path, key: Path, tmp_path: Path) -> None:
    import matplotlib.image

    sign_run(run_dir, reviewer=REVIEWER, role="SRE lead", decision="approve-with-exceptions", key_path=key)
    url = (run_dir / "report.html").resolve().as_uri()
    png = tmp_path / "report.png"
    _chromium([f"--screenshot={png}", "--window-size=1280,2000", url], tmp_path / "profile-shot")
    assert png.is_file() and png.stat().st_size > 1000
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.01  # not a blank page
    dom = _chromium(["--dump-dom", url], tmp_path / "profile-dom").stdout
    assert REVIEWER in dom and "APPROVE-WITH-EXCEPTIONS" in dom and "ra-signed" in dom
