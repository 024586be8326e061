"""Sign-off: OpenSSH keys and signatures (key file, passphrase, ssh-agent), interoperability with ssh-keygen, trust
through allowed_signers, four-eyes from the run's merged params, decisions the judgement supports, attestations, and
the signed report in Chromium."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from run_fixtures import (
    OWNER,
    REVIEWER,
    RITA,
    Signer,
    build_run,
    findings_json,
    make_signer,
    statuses_in_findings_json,
    write_allowed_signers,
    write_params,
)

from recsys_audit.rundir import SIGNATURE_FILE, SIGNOFF_FILE
from recsys_audit.signatures import NAMESPACE, verify_command
from recsys_audit.signoff import SignoffError, canonical_json, sign_run, verify_run
from recsys_audit.signoff_cli import main

STAMP = "20250301T100000Z"
# A run that fails (one critical failure), with a warning and two manual checks.
STATUSES = {
    "auth.dev-auth-disabled": "pass",
    "auth.cross-tenant-admin": "fail",
    "db.rls-enabled": "warn",
    "obs.runbooks-exercised": "manual",
    "db.restore-tested": "manual",
    "perf.pprof-off": "skip",
}
PASSING = {**STATUSES, "auth.cross-tenant-admin": "pass"}


@pytest.fixture
def rita(tmp_path: Path) -> Signer:
    return make_signer(tmp_path / "keys")


@pytest.fixture
def trusted(tmp_path: Path, rita: Signer) -> Path:
    return write_allowed_signers(tmp_path / "trust" / "allowed_signers", rita)


@pytest.fixture
def params(tmp_path: Path, trusted: Path) -> Path:
    return write_params(tmp_path / "params", allowed_signers=trusted)


@pytest.fixture
def run_dir(tmp_path: Path, params: Path) -> Path:
    return build_run(tmp_path / "audits", params, STAMP, PASSING)


def sign(run_dir: Path, signer: Signer, *extra: str, reviewer: str = REVIEWER, decision: str = "approve") -> int:
    command = ["sign", str(run_dir), "--reviewer", reviewer, "--role", "SRE lead", "--decision", decision]
    return main([*command, "--key", str(signer.key), *extra])


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


# --- keys: ssh-keygen ----------------------------------------------------------------------------------------------


def test_keygen_wraps_ssh_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private = tmp_path / "k" / "dana"
    assert main(["keygen", str(private), "--principal", "dana@example.com", "--no-passphrase"]) == 0
    out = capsys.readouterr().out
    assert private.stat().st_mode & 0o777 == 0o600
    assert private.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    public = Path(f"{private}.pub").read_text()
    assert public.startswith("ssh-ed25519 ") and public.strip().endswith("dana@example.com")
    line = f'dana@example.com namespaces="recsys-audit" ssh-ed25519 {public.split()[1]}'
    assert line in out.splitlines() and "fingerprint: SHA256:" in out
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{private}.pub"], capture_output=True, text=True).stdout
    assert fingerprint.split()[1] in out  # the same fingerprint ssh-keygen prints
    assert main(["keygen", str(private), "--principal", "dana@example.com", "--no-passphrase"]) == 2
    assert "exists" in capsys.readouterr().err


def test_non_ed25519_and_exposed_keys_are_refused(run_dir: Path, rita: Signer, tmp_path: Path, capsys) -> None:
    ecdsa = tmp_path / "ecdsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(ecdsa)], check=True)
    assert main(["sign", str(run_dir), "--reviewer", REVIEWER, "--role", "SRE", "--decision", "approve",
                 "--key", str(ecdsa), "--signer", RITA]) == 2  # fmt: skip
    assert "ecdsa-sha2-nistp256 is not an Ed25519 key" in capsys.readouterr().err
    rita.key.chmod(0o644)
    assert sign(run_dir, rita) == 2
    assert "chmod 600" in capsys.readouterr().err
    assert not (run_dir / SIGNOFF_FILE).exists()


def test_key_errors_fit_the_file_given(run_dir: Path, rita: Signer, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    before = snapshot(run_dir)
    public = Path(f"{rita.key}.pub")
    assert sign(run_dir, Signer(public, rita.public, rita.principal)) == 2
    err = capsys.readouterr().err
    assert f"{public} is a public key: pass the private key ({rita.key}) to --key" in err, err
    assert "SSH_AUTH_SOCK is not set" in err and "chmod" not in err
    renamed = tmp_path / "keys" / "reviewer.key"  # a public key under a private key's name, readable by all
    renamed.write_bytes(public.read_bytes())
    renamed.chmod(0o644)
    assert sign(run_dir, Signer(renamed, rita.public, rita.principal)) == 2
    err = capsys.readouterr().err
    assert f"{renamed} is a public key: pass the private key to --key" in err and "chmod" not in err, err
    notes = tmp_path / "notes.txt"
    notes.write_text("not a key\n", encoding="utf-8")
    notes.chmod(0o600)
    assert sign(run_dir, Signer(notes, rita.public, rita.principal)) == 2
    assert f"{notes}: not an SSH private key" in capsys.readouterr().err
    assert sign(run_dir, Signer(tmp_path / "keys" / "nobody", rita.public, rita.principal)) == 2
    assert "no such key file — create one with 'recsys-audit keygen" in capsys.readouterr().err
    assert snapshot(run_dir) == before


# --- sign and verify -------------------------------------------------------------------------------------------


def test_sign_then_verify(run_dir: Path, rita: Signer, trusted: Path, params: Path, capsys) -> None:
    assert sign(run_dir, rita, "--comment", "ok for launch") == 0
    assert "approve by Rita Reviewer (SRE lead) as rita@example.com" in capsys.readouterr().out
    payload = (run_dir / SIGNOFF_FILE).read_bytes()
    record = json.loads(payload)
    assert payload == canonical_json(record)  # sorted keys, no spaces: the exact bytes signed
    assert (record["environment"], record["run"], record["kit_version"]) == ("staging", STAMP, "0.1.0")
    assert (record["reviewer"], record["role"], record["signer"], record["decision"]) == (
        REVIEWER, "SRE lead", RITA, "approve"
    )  # fmt: skip
    assert record["owner"] == OWNER and record["verdict"] == "pass" and record["accepted"] == []
    assert record["key_fingerprint"] == rita.public.fingerprint and record["key"].startswith("ssh-ed25519 ")
    # Every entry of the run directory: regular files with size and SHA-256, and the two folders.
    on_disk = sorted(
        p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file() and p.name not in
        {SIGNOFF_FILE, SIGNATURE_FILE}
    )  # fmt: skip
    assert sorted(record["files"]) == on_disk and record["directories"] == ["findings", "notebooks"]
    report = (run_dir / "report.html").read_bytes()
    assert record["files"]["report.html"]["size"] == len(report)
    assert (run_dir / SIGNATURE_FILE).read_text().startswith("-----BEGIN SSH SIGNATURE-----")
    page = report.decode()
    assert "Signed by <strong>Rita Reviewer</strong> (SRE lead) as <code>rita@example.com</code>" in page
    assert record["key_fingerprint"] in page and "APPROVE" in page and "ssh-keygen -Y verify" in page

    assert main(["verify", str(run_dir), "--allowed-signers", str(trusted)]) == 0
    assert "as trusted signer rita@example.com" in capsys.readouterr().out
    assert main(["verify", str(run_dir), "--params", str(params)]) == 0  # trust from the environment's params
    assert main(["verify", str(run_dir)]) == 1  # no params/staging.yaml here: nobody to trust
    assert "no trusted signers" in capsys.readouterr().out


def test_kit_signature_verifies_with_ssh_keygen(run_dir: Path, rita: Signer, trusted: Path) -> None:
    record = sign_run(run_dir, reviewer=REVIEWER, role="SRE", decision="approve", key_path=rita.key)
    signed_at = dt.datetime.fromisoformat(record["signed_at"].replace("Z", "+00:00"))
    command = verify_command(RITA, signed_at, str(trusted))  # the command the README and the report show
    done = subprocess.run(command, shell=True, cwd=run_dir, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert f'Good "{NAMESPACE}" signature for {RITA} with ED25519 key {rita.public.fingerprint}' in done.stdout
    # The files: the SHA-256 sums in the record check with sha256sum.
    sums = "".join(f"{v['sha256']}  {k}\n" for k, v in record["files"].items())
    check = subprocess.run(["sha256sum", "-c", "-"], input=sums, cwd=run_dir, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def test_ssh_keygen_signature_over_the_record_verifies_in_the_kit(run_dir: Path, rita: Signer, trusted: Path) -> None:
    sign_run(run_dir, reviewer=REVIEWER, role="SRE", decision="approve", key_path=rita.key)
    (run_dir / SIGNATURE_FILE).unlink()
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(rita.key), "-n", "recsys-audit", SIGNOFF_FILE],
        cwd=run_dir, check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert verify_run(run_dir, trusted).ok
    # Another namespace is another purpose: a git commit signature over the same bytes is refused.
    (run_dir / SIGNATURE_FILE).unlink()
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(rita.key), "-n", "git", SIGNOFF_FILE],
        cwd=run_dir, check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    result = verify_run(run_dir, trusted)
    assert not result.ok and "not a valid recsys-audit signature" in result.problem


def test_passphrase_protected_key_file(tmp_path: Path, params: Path, trusted: Path) -> None:
    dana = make_signer(tmp_path / "keys", "dana@example.com", passphrase="correct horse")
    write_allowed_signers(trusted, make_signer(tmp_path / "more", RITA), dana)
    run = build_run(tmp_path / "audits", params, STAMP, PASSING)
    before = snapshot(run)
    with pytest.raises(SignoffError, match="incorrect passphrase"):
        sign_run(run, reviewer="Dana", role="SRE", decision="approve", key_path=dana.key, passphrase="wrong")
    assert snapshot(run) == before  # a failed signing leaves the run as it was
    with pytest.raises(SignoffError, match="passphrase"):
        sign_run(run, reviewer="Dana", role="SRE", decision="approve", key_path=dana.key)  # never waits for a tty
    record = sign_run(
        run, reviewer="Dana", role="SRE", decision="approve", key_path=dana.key, passphrase="correct horse"
    )
    assert record["signer"] == "dana@example.com" and verify_run(run, trusted).ok


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real ssh-agent of this test, on a socket in the test's folder; stopped by its pid."""
    socket = tmp_path / "agent.sock"
    done = subprocess.run(["ssh-agent", "-s", "-a", str(socket)], capture_output=True, text=True, check=True)
    pid = int(done.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        yield {"SSH_AUTH_SOCK": str(socket), "SSH_AGENT_PID": str(pid)}
    finally:
        os.kill(pid, signal.SIGTERM)


def test_sign_through_ssh_agent(
    tmp_path: Path, params: Path, trusted: Path, ssh_agent: dict[str, str], monkeypatch, capsys
) -> None:
    dana = make_signer(tmp_path / "keys", "dana@example.com", passphrase="agent only")
    write_allowed_signers(trusted, dana)
    environment = {**os.environ, **ssh_agent}
    added = subprocess.run(
        ["ssh-add", str(dana.key)], input="agent only\n", env={**environment, "SSH_ASKPASS": "", "DISPLAY": ""},
        capture_output=True, text=True, start_new_session=True, timeout=30,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    public = Path(f"{dana.key}.pub")
    dana.key.rename(tmp_path / "elsewhere")  # only the agent holds the private key now
    run = build_run(tmp_path / "audits", params, STAMP, PASSING)
    monkeypatch.setenv("SSH_AUTH_SOCK", ssh_agent["SSH_AUTH_SOCK"])
    assert sign(run, Signer(public, dana.public, dana.principal), reviewer="Dana") == 0, capsys.readouterr().err
    result = verify_run(run, trusted)
    assert result.ok and result.record["signer"] == "dana@example.com"
    monkeypatch.delenv("SSH_AUTH_SOCK")
    assert sign(run, Signer(public, dana.public, dana.principal), "--replace", reviewer="Dana") == 2
    assert "SSH_AUTH_SOCK is not set" in capsys.readouterr().err


def test_trust_is_checked_when_signing(run_dir: Path, tmp_path: Path, trusted: Path, capsys) -> None:
    mallory = make_signer(tmp_path / "keys", "mallory@example.com")
    before = snapshot(run_dir)
    assert sign(run_dir, mallory, reviewer="Mallory") == 2
    assert f"the key that signed ({mallory.public.fingerprint}) is not a trusted signer" in capsys.readouterr().err
    rita_key = tmp_path / "keys" / "rita"
    assert main(["sign", str(run_dir), "--reviewer", "Rita", "--role", "SRE", "--decision", "approve",
                 "--key", str(rita_key), "--signer", "ceo@example.com"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "the record names 'ceo@example.com'" in err and "only as rita@example.com" in err
    assert snapshot(run_dir) == before


def test_signing_without_trusted_signers_is_refused(tmp_path: Path, rita: Signer) -> None:
    run = build_run(tmp_path / "audits", write_params(tmp_path / "p"), STAMP, PASSING)
    with pytest.raises(SignoffError, match="no trusted signers"):
        sign_run(run, reviewer=REVIEWER, role="SRE", decision="approve", key_path=rita.key)


def test_signing_twice_needs_replace(run_dir: Path, rita: Signer, trusted: Path, capsys) -> None:
    assert sign(run_dir, rita) == 0
    assert sign(run_dir, rita, decision="reject") == 2
    assert "already signed" in capsys.readouterr().err
    assert sign(run_dir, rita, "--replace", "--comment", "RLS missing", reviewer="Sam", decision="reject") == 0
    result = verify_run(run_dir, trusted)
    assert result.ok and result.record["decision"] == "reject" and result.record["reviewer"] == "Sam"
    report = (run_dir / "report.html").read_text()
    assert report.count("ra-signoff-block") == 1 and "Rita Reviewer" not in report and "REJECT" in report


# --- four eyes, from the run's merged params -----------------------------------------------------------------


def test_owner_may_not_sign_own_environment(run_dir: Path, rita: Signer) -> None:
    report_before = (run_dir / "report.html").read_bytes()
    command = [sys.executable, "-m", "recsys_audit.signoff_cli", "sign", str(run_dir), "--reviewer", "  olga OWNER "]
    command += ["--role", "owner", "--decision", "approve", "--key", str(rita.key)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "owns environment staging" in done.stderr and "allow_owner_signoff" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (run_dir / SIGNOFF_FILE).exists() and not (run_dir / SIGNATURE_FILE).exists()
    assert (run_dir / "report.html").read_bytes() == report_before


def test_owner_and_policies_from_an_include_fragment_are_honoured(tmp_path: Path, rita: Signer, trusted: Path) -> None:
    folder = tmp_path / "params"
    fragment = folder / "facts" / "ownership.yaml"
    fragment.parent.mkdir(parents=True)
    fragment.write_text(yaml.safe_dump({
        "environment": {"owner": "Fiona Fragment"},
        "policies": {"attestation_max_age_days": 30},
    }))  # fmt: skip
    params = write_params(folder, owner=None, allowed_signers=trusted, include=["facts/ownership.yaml"])
    run = build_run(tmp_path / "audits", params, STAMP, PASSING)
    recorded = yaml.safe_load((run / "params.yaml").read_text())
    assert recorded["environment"]["owner"] == "Fiona Fragment" and "include" not in recorded
    assert recorded["policies"]["attestation_max_age_days"] == 30
    fragment.write_text("{}")  # the run keeps what it used: later edits of the fragment change nothing
    with pytest.raises(SignoffError, match=r"owns environment staging \(environment.owner: Fiona Fragment"):
        sign_run(run, reviewer="fiona fragment", role="owner", decision="approve", key_path=rita.key)
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=60)).date()
    record = sign_run(
        run, reviewer=REVIEWER, role="SRE", decision="approve", key_path=rita.key,
        attest=[f"db.restore-tested=https://wiki.example/restore@{old}"],
    )  # fmt: skip
    assert record["owner"] == "Fiona Fragment" and record["attestation_max_age_days"] == 30
    assert statuses_in_findings_json(run)["db.restore-tested"] == "manual"  # 60 days > the fragment's 30


# --- decisions the judgement supports ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "options", "verdict", "fix"),
    [
        (
            STATUSES,
            {},
            "fail",
            "fix or waive them and re-run the audit, or sign --decision approve-with-exceptions "
            "--accept auth.cross-tenant-admin",
        ),
        (PASSING, {"sections": [1, 4]}, "partial", "run every section (no --sections)"),
        ({**PASSING, "db.rls-enabled": "error"}, {}, "incomplete", "re-run the audit so that every check is evaluated"),
        (PASSING, {"failed_notebooks": {"06_section": "KeyError: 'x'"}}, "incomplete", "re-run the audit"),
    ],
    ids=["fail", "partial", "incomplete-error", "incomplete-notebook"],
)
def test_approve_is_refused_unless_the_verdict_is_pass(
    tmp_path: Path, params: Path, rita: Signer, statuses: dict[str, str], options: dict, verdict: str, fix: str, capsys
) -> None:
    statuses = {k: v for k, v in statuses.items() if options.get("sections") is None or k.startswith(("auth", "db"))}
    run = build_run(tmp_path / "audits", params, STAMP, statuses, **options)
    assert findings_json(run)["verdict"] == verdict
    before = snapshot(run)
    assert sign(run, rita) == 2
    err = capsys.readouterr().err
    assert "--decision approve: " in err and verdict in err and fix in err, err
    assert snapshot(run) == before
    assert sign(run, rita, decision="reject") == 0  # reject is always allowed


def test_approve_with_exceptions_lists_every_failing_and_erroring_finding(
    tmp_path: Path, params: Path, rita: Signer, trusted: Path, capsys
) -> None:
    statuses = {**STATUSES, "db.rls-enabled": "error", "perf.pprof-off": "fail"}  # perf.pprof-off is medium
    run = build_run(tmp_path / "audits", params, STAMP, statuses)
    assert findings_json(run)["verdict"] == "incomplete"
    exceptions = ["auth.cross-tenant-admin", "db.rls-enabled", "perf.pprof-off"]
    decision = "approve-with-exceptions"
    assert sign(run, rita, "--accept", *exceptions[:2], decision=decision) == 2
    assert "add --accept perf.pprof-off" in capsys.readouterr().err
    assert sign(run, rita, "--accept", *exceptions, "db.restore-tested", decision=decision) == 2
    assert "--accept db.restore-tested: not a failing or erroring finding" in capsys.readouterr().err
    assert sign(run, rita, "--accept", *exceptions, decision="approve") == 2
    assert "--accept goes with --decision approve-with-exceptions" in capsys.readouterr().err
    assert sign(run, rita, "--accept", exceptions[2], "--accept", *exceptions[:2], decision=decision) == 0
    result = verify_run(run, trusted)
    assert result.ok and result.record["accepted"] == exceptions and result.record["verdict"] == "incomplete"
    block = (run / "report.html").read_text()
    assert "Accepted exceptions (3)" in block
    assert all(f"<code>{i}</code>" in block for i in exceptions)


def test_nothing_to_accept_and_partial_runs(tmp_path: Path, params: Path, rita: Signer, capsys) -> None:
    passing = build_run(tmp_path / "a", params, STAMP, PASSING)
    assert sign(passing, rita, decision="approve-with-exceptions") == 2
    assert "nothing to accept" in capsys.readouterr().err
    section_1 = {"auth.cross-tenant-admin": "fail", "auth.dev-auth-disabled": "pass"}
    partial = build_run(tmp_path / "b", params, STAMP, section_1, sections=[1])
    assert findings_json(partial)["verdict"] == "fail"  # a failure wins over partial
    assert sign(partial, rita, "--accept", "auth.cross-tenant-admin", decision="approve-with-exceptions") == 2
    assert "the audit is partial" in capsys.readouterr().err


# --- attestations recorded at sign-off ---------------------------------------------------------------------------


def test_signoff_attestations_are_judged_with_the_params_policy(run_dir: Path, rita: Signer, trusted: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    fresh, old = today - dt.timedelta(days=10), today - dt.timedelta(days=400)
    assert statuses_in_findings_json(run_dir)["obs.runbooks-exercised"] == "manual"
    record = sign_run(
        run_dir, reviewer=REVIEWER, role="SRE", decision="approve", key_path=rita.key,
        attest=[f"obs.runbooks-exercised=https://wiki.example/runbooks@{fresh}",
                f"db.restore-tested=https://wiki.example/restore@{old}"],
    )  # fmt: skip
    assert [a["check"] for a in record["attestations"]] == ["obs.runbooks-exercised", "db.restore-tested"]
    assert record["attestations"][0]["by"] == REVIEWER and record["attestation_max_age_days"] == 180
    document = findings_json(run_dir)
    statuses = {f["id"]: f for f in document["findings"]}
    assert statuses["obs.runbooks-exercised"]["status"] == "pass"
    assert statuses["obs.runbooks-exercised"]["attestation"]["source"] == "sign-off"
    assert statuses["db.restore-tested"]["status"] == "manual"
    assert "expired on" in statuses["db.restore-tested"]["summary"]
    assert document["judged_on"] == today.isoformat()
    report = (run_dir / "report.html").read_text()
    assert "https://wiki.example/runbooks" in report and "EXPIRED — counts as manual" in report
    # Signed again without attestations: judged from the observations, the sign-off attestation is gone.
    sign_run(run_dir, reviewer=REVIEWER, role="SRE", decision="approve", key_path=rita.key, replace_existing=True)
    assert statuses_in_findings_json(run_dir)["obs.runbooks-exercised"] == "manual"
    assert verify_run(run_dir, trusted).ok


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
def test_bad_attestations_are_refused(run_dir: Path, rita: Signer, attest: str, message: str) -> None:
    with pytest.raises(SignoffError, match=message):
        sign_run(run_dir, reviewer=REVIEWER, role="SRE", decision="approve", key_path=rita.key, attest=[attest])
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


def test_signed_report_renders_offline_with_signoff_block(tmp_path: Path, params: Path, rita: Signer) -> None:
    import matplotlib.image

    run = build_run(tmp_path / "audits", params, STAMP, STATUSES)
    sign_run(
        run, reviewer=REVIEWER, role="SRE lead", decision="approve-with-exceptions", key_path=rita.key,
        accept=["auth.cross-tenant-admin"],
    )  # fmt: skip
    url = (run / "report.html").resolve().as_uri()
    png = tmp_path / "report.png"
    _chromium([f"--screenshot={png}", "--window-size=1280,2000", url], tmp_path / "profile-shot")
    assert png.is_file() and png.stat().st_size > 1000
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.01  # not a blank page
    dom = _chromium(["--dump-dom", url], tmp_path / "profile-dom").stdout
    assert REVIEWER in dom and "APPROVE-WITH-EXCEPTIONS" in dom and "ra-signed" in dom
    assert "auth.cross-tenant-admin" in dom.split("Accepted exceptions (1)")[1][:300]
