"""The tamper matrix: every way to alter a signed run makes ``recsys-audit verify`` exit non-zero, naming the entry or
field, within seconds (pytest-timeout per test: a hang fails the test instead of the suite)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from run_fixtures import REVIEWER, Signer, build_run, make_signer, write_allowed_signers, write_params

from recsys_audit.rundir import SIGNOFF_FILE
from recsys_audit.signoff import canonical_json, sign_run, verify_run
from recsys_audit.signoff_cli import main

STAMP = "20250301T100000Z"
STATUSES = {
    "auth.dev-auth-disabled": "pass",
    "auth.cross-tenant-admin": "pass",
    "db.rls-enabled": "warn",
    "db.restore-tested": "manual",
    "obs.runbooks-exercised": "pass",
    "perf.pprof-off": "skip",
}
QUICK = pytest.mark.timeout(5, func_only=True)


class Signed:
    def __init__(self, root: Path, run_dir: Path, trusted: Path, rita: Signer) -> None:
        self.root, self.run_dir, self.trusted, self.rita = root, run_dir, trusted, rita


@pytest.fixture
def signed(tmp_path: Path) -> Signed:
    rita = make_signer(tmp_path / "keys")
    trusted = write_allowed_signers(tmp_path / "trust" / "allowed_signers", rita)
    params = write_params(tmp_path / "params", allowed_signers=trusted)
    run_dir = build_run(tmp_path / "audits", params, STAMP, STATUSES)
    sign_run(run_dir, reviewer=REVIEWER, role="SRE", decision="approve", key_path=rita.key)
    assert verify_run(run_dir, trusted).ok
    return Signed(tmp_path / "audits", run_dir, trusted, rita)


def verify_fails(run_dir: Path, trusted: Path | None, capsys: pytest.CaptureFixture[str]) -> str:
    """``recsys-audit verify`` as a CI job runs it: the exit code is non-zero; returns the message."""
    args = ["verify", str(run_dir)] + (["--allowed-signers", str(trusted)] if trusted else [])
    assert main(args) == 1
    out = capsys.readouterr().out
    assert out.startswith("verify FAILED: "), out
    return out


def _edit(run: Path) -> str:
    path = run / "findings.json"
    path.write_text(path.read_text().replace('"warn"', '"pass"'))
    return "findings.json: changed after signing"


def _edit_same_size(run: Path) -> str:
    path = run / "notebooks" / "04_section.ipynb"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return "notebooks/04_section.ipynb: changed after signing (SHA-256 differs)"


def _add(run: Path) -> str:
    (run / "notebooks" / "99_extra.ipynb").write_text("{}")
    return "notebooks/99_extra.ipynb: added after signing"


def _remove(run: Path) -> str:
    (run / "junit.xml").unlink()
    return "junit.xml: missing (signed file was removed)"


def _symlink_inside(run: Path) -> str:
    (run / "junit.xml").unlink()
    (run / "junit.xml").symlink_to("findings.json")
    return "junit.xml: symlink"


def _symlink_outside(run: Path) -> str:
    outside = run.parent.parent.parent / "junit-copy.xml"
    shutil.copyfile(run / "junit.xml", outside)  # identical bytes: only the symlink gives it away
    (run / "junit.xml").unlink()
    (run / "junit.xml").symlink_to(outside)
    return "junit.xml: symlink"


def _fifo(run: Path) -> str:
    os.mkfifo(run / "notebooks" / "pipe")
    return "notebooks/pipe: FIFO"


def _fifo_instead_of_a_file(run: Path) -> str:
    (run / "findings.json").unlink()
    os.mkfifo(run / "findings.json")
    return "findings.json: FIFO"


def _empty_directory(run: Path) -> str:
    (run / "extra").mkdir()
    return "extra/: unexpected directory"


def _nested_directory(run: Path) -> str:
    (run / "notebooks" / "deeper").mkdir()
    return "notebooks/deeper/: unexpected directory"


def _dev_zero(run: Path) -> str:
    (run / "report.html").unlink()
    (run / "report.html").symlink_to("/dev/zero")
    return "report.html: symlink"


def _symlink_loop(run: Path) -> str:
    (run / "findings" / "loop").symlink_to("loop")
    return "findings/loop: symlink"


def _signed_folder_replaced(run: Path) -> str:
    shutil.rmtree(run / "notebooks")
    (run / "notebooks").symlink_to(run.parent.parent.parent / "keys")
    return "notebooks: symlink"


def _record_edited(run: Path) -> str:
    path = run / SIGNOFF_FILE
    path.write_text(path.read_text().replace('"decision":"approve"', '"decision":"reject"'))  # still canonical
    return "signoff.json.sig: not a valid recsys-audit signature over signoff.json"


def _record_reformatted(run: Path) -> str:
    path = run / SIGNOFF_FILE
    path.write_text(path.read_text().replace(",", ", ", 1))
    return "signoff.json: not in canonical form"


TAMPERING: dict[str, Callable[[Path], str]] = {
    "edit-a-file": _edit,
    "edit-a-byte-same-size": _edit_same_size,
    "add-a-file": _add,
    "remove-a-file": _remove,
    "symlink-inside-the-run": _symlink_inside,
    "symlink-outside-the-run": _symlink_outside,
    "add-a-fifo": _fifo,
    "fifo-instead-of-a-file": _fifo_instead_of_a_file,
    "add-an-empty-directory": _empty_directory,
    "add-a-nested-directory": _nested_directory,
    "symlink-to-dev-zero": _dev_zero,
    "symlink-loop": _symlink_loop,
    "signed-folder-replaced-by-a-symlink": _signed_folder_replaced,
    "record-edited": _record_edited,
    "record-reformatted": _record_reformatted,
}


@QUICK
@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
def test_tampered_entry_fails_verify_and_is_named(
    signed: Signed, tamper: Callable[[Path], str], capsys: pytest.CaptureFixture[str]
) -> None:
    expected = tamper(signed.run_dir)
    assert expected in verify_fails(signed.run_dir, signed.trusted, capsys)


@QUICK
def test_run_moved_to_another_timestamp(signed: Signed, capsys: pytest.CaptureFixture[str]) -> None:
    newer = signed.run_dir.with_name("20260101T000000Z")
    signed.run_dir.rename(newer)  # an old approval passed off as a recent one
    out = verify_fails(newer, signed.trusted, capsys)
    assert f"run: the record is of run {STAMP}, but the directory is 20260101T000000Z" in out


@QUICK
def test_run_copied_to_another_environment(signed: Signed, capsys: pytest.CaptureFixture[str]) -> None:
    production = signed.root / "production" / STAMP
    shutil.copytree(signed.run_dir, production)  # a staging approval passed off as production's
    out = verify_fails(production, signed.trusted, capsys)
    assert "environment: the record is of 'staging', but the run sits in folder 'production'" in out


@QUICK
def test_run_directory_given_as_a_symlink(signed: Signed, capsys: pytest.CaptureFixture[str]) -> None:
    link = signed.root / "staging" / "20260101T000000Z"
    link.symlink_to(signed.run_dir)
    assert "a symlink — pass the run directory itself" in verify_fails(link, signed.trusted, capsys)


@QUICK
def test_resigned_with_an_untrusted_key(signed: Signed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The attacker changes a finding and signs everything again with their own key and their own trust file.
    mallory = make_signer(tmp_path / "attacker", "mallory@example.com")
    own_trust = write_allowed_signers(tmp_path / "attacker" / "allowed_signers", mallory)
    _edit(signed.run_dir)
    sign_run(
        signed.run_dir, reviewer=REVIEWER, role="SRE", decision="approve", key_path=mallory.key,
        allowed_signers=own_trust, replace_existing=True,
    )  # fmt: skip
    assert verify_run(signed.run_dir, own_trust).ok  # intact, but by whom?
    out = verify_fails(signed.run_dir, signed.trusted, capsys)
    assert f"signer: the key that signed ({mallory.public.fingerprint}) is not a trusted signer" in out


@QUICK
def test_resigned_claiming_a_trusted_name(signed: Signed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mallory = make_signer(tmp_path / "attacker", "mallory@example.com")
    write_allowed_signers(signed.trusted, signed.rita, mallory)  # mallory is trusted, but only as herself
    sign_run(
        signed.run_dir, reviewer=REVIEWER, role="SRE", decision="approve", key_path=mallory.key,
        signer="mallory@example.com", replace_existing=True,
    )  # fmt: skip
    path = signed.run_dir / SIGNOFF_FILE
    path.write_text(path.read_text().replace('"signer":"mallory@example.com"', '"signer":"rita@example.com"'))
    (signed.run_dir / "signoff.json.sig").unlink()
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(mallory.key), "-n", "recsys-audit", str(path)],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
    out = verify_fails(signed.run_dir, signed.trusted, capsys)
    assert "signer: the record names 'rita@example.com'" in out and "only as mallory@example.com" in out


@QUICK
def test_signed_at_in_the_future(signed: Signed, capsys: pytest.CaptureFixture[str]) -> None:
    # A key trusted only from some future day on (valid-after) must not verify a record claiming to be signed then.
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    trust = signed.trusted.read_text().replace(
        'namespaces="recsys-audit"', f'namespaces="recsys-audit",valid-after="{future:%Y%m%d}"'
    )
    signed.trusted.write_text(trust)
    path = signed.run_dir / SIGNOFF_FILE
    record = json.loads(path.read_text())
    path.write_bytes(canonical_json({**record, "signed_at": f"{future + dt.timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"}))
    (signed.run_dir / "signoff.json.sig").unlink()
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(signed.rita.key), "-n", "recsys-audit", str(path)],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
    assert "signed_at: " in verify_fails(signed.run_dir, signed.trusted, capsys)
    assert "is in the future" in verify_fails(signed.run_dir, signed.trusted, capsys)


@QUICK
def test_verify_without_trusted_signers(signed: Signed, capsys: pytest.CaptureFixture[str]) -> None:
    out = verify_fails(signed.run_dir, None, capsys)  # no --allowed-signers, no params/staging.yaml here
    assert "no trusted signers" in out
    empty = signed.trusted.with_name("empty_allowed_signers")
    empty.write_text("# nobody\n")
    assert "is not a trusted signer" in verify_fails(signed.run_dir, empty, capsys)


@QUICK
def test_unsigned_run_does_not_verify(signed: Signed, capsys: pytest.CaptureFixture[str]) -> None:
    (signed.run_dir / "signoff.json.sig").unlink()
    assert "not signed" in verify_fails(signed.run_dir, signed.trusted, capsys)
