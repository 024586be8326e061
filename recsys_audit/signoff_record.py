"""The sign-off record: its format, reading it, and verifying a run directory against it.

A sign-off is ``signoff.json`` — canonical JSON naming the environment, the run id, the reviewer, the signer, the
decision and every entry of the run directory (regular files with size and SHA-256; the two expected folders) — and
``signoff.json.sig``, its SSH signature. :func:`verify_run` trusts only an ``allowed_signers`` file given by the
verifier (never anything in the run directory), checks that the run sits where the record says (environment folder,
run id), and that the directory holds exactly the recorded entries: a symlink, FIFO, device or unexpected folder is
tampering, never followed or opened.

Signing lives in :mod:`recsys_audit.signoff`, the report's sign-off block in :mod:`recsys_audit.render.signoff`; both
read records through this module.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_audit import signatures
from recsys_audit.params import Params
from recsys_audit.rundir import (
    SIGNATURE_FILE,
    SIGNOFF_FILE,
    MissingEntry,
    RunDirError,
    list_entries,
    location_problem,
    read_entry,
    sha256_entry,
)

RECORD_FORMAT = "recsys-audit-signoff/2"
MAX_RECORD_BYTES = 8 << 20
MAX_SIGNATURE_BYTES = 64 << 10
MAX_RUN_BYTES = 1 << 30  # a full audit is a few MB; a record claiming more is not verified
SIGNOFF_FILES = frozenset({SIGNOFF_FILE, SIGNATURE_FILE})
CLOCK_SKEW = dt.timedelta(minutes=5)


class SignoffError(Exception):
    """Signing or reading a sign-off is not possible; the message is one line and says what to do."""


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the exact bytes that are signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def trusted_signers(params: Params | None, given: Path | None = None) -> Path | None:
    """The allowed_signers file: the one given (``--allowed-signers``), else ``environment.allowed_signers`` of the
    params (relative to the params file); None when neither names one."""
    if given is not None:
        return Path(given)
    if params is not None and params.environment.allowed_signers:
        return params.path(params.environment.allowed_signers)
    return None


def parse_signed_at(text: object) -> dt.datetime:
    return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(dt.UTC)


# --- the run directory's entries -------------------------------------------------------------------------------


def run_entries(run_dir: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every entry to be signed: regular files with size and SHA-256, and the expected folders. Anything else
    raises SignoffError naming it (signoff.json and its signature are not listed)."""
    try:
        entries = list_entries(run_dir)
        problems = [e.problem for e in entries if e.problem]
        if problems:
            raise SignoffError(f"{run_dir}: {problems[0]} — remove it; recsys-audit writes only regular files")
        files: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if entry.kind == "file" and entry.path not in SIGNOFF_FILES:
                digest, size = sha256_entry(run_dir, entry.path)
                files[entry.path] = {"sha256": digest, "size": size}
    except RunDirError as exc:
        raise SignoffError(str(exc)) from None
    return files, [e.path for e in entries if e.kind == "dir"]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


# --- verification ----------------------------------------------------------------------------------------------


@dataclass
class Verification:
    ok: bool
    problem: str = ""  # the first thing that does not hold, naming the entry or field
    record: dict[str, Any] | None = None

    @property
    def signed(self) -> bool:
        return self.record is not None


def read_record(run_dir: Path) -> tuple[bytes, dict[str, Any]] | None:
    """The sign-off record of a run (its exact bytes and content), None when unsigned; SignoffError if unreadable."""
    try:
        payload = read_entry(run_dir, SIGNOFF_FILE, MAX_RECORD_BYTES)
    except MissingEntry:
        return None
    except RunDirError as exc:
        raise SignoffError(str(exc)) from None
    try:
        record = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise SignoffError(f"{SIGNOFF_FILE}: not valid JSON — the sign-off record was altered") from None
    if not isinstance(record, dict) or canonical_json(record) != payload:
        raise SignoffError(f"{SIGNOFF_FILE}: not in canonical form — the sign-off record was altered")
    return payload, record


def _compare_entries(run_dir: Path, record: dict[str, Any], entries: list[Any]) -> str | None:
    expected_files, expected_dirs = record.get("files"), record.get("directories")
    if not isinstance(expected_files, dict) or not isinstance(expected_dirs, list):
        return f"{SIGNOFF_FILE}: fields 'files' and 'directories' are missing"
    claimed = sum(int(v.get("size", 0)) for v in expected_files.values() if isinstance(v, dict))
    if claimed > MAX_RUN_BYTES:
        return f"{SIGNOFF_FILE}: files: {claimed} bytes recorded, more than an audit run holds ({MAX_RUN_BYTES})"
    actual = {e.path: e for e in entries if e.path not in SIGNOFF_FILES}
    for path in sorted(set(expected_dirs) - {p for p, e in actual.items() if e.kind == "dir"}):
        return f"{path}/: missing (a signed directory was removed)"
    for path in sorted(set(expected_files) | {p for p, e in actual.items() if e.kind == "file"}):
        if path not in actual:
            return f"{path}: missing (signed file was removed)"
        if path not in expected_files:
            return f"{path}: added after signing"
        if actual[path].size != expected_files[path].get("size"):
            return f"{path}: changed after signing (size differs)"
    for path in sorted(p for p, e in actual.items() if e.kind == "dir" and p not in expected_dirs):
        return f"{path}/: added after signing"
    for path in sorted(expected_files):
        try:
            digest, _ = sha256_entry(run_dir, path, int(expected_files[path]["size"]))
        except RunDirError as exc:
            return str(exc)
        if digest != expected_files[path].get("sha256"):
            return f"{path}: changed after signing (SHA-256 differs)"
    return None


def verify_run(run_dir: Path, allowed_signers: Path | None) -> Verification:
    """Check a signed run: a signature by a signer ``allowed_signers`` trusts, the run where the record says, and
    exactly the recorded entries. The first problem is named; nothing is followed, opened if special, or unbounded."""
    run_dir = Path(run_dir).absolute()
    try:
        entries = list_entries(run_dir)
    except RunDirError as exc:
        return Verification(False, str(exc))
    names = {e.path for e in entries}
    if SIGNOFF_FILE not in names or SIGNATURE_FILE not in names:
        return Verification(False, f"{run_dir}: not signed (no {SIGNOFF_FILE} / {SIGNATURE_FILE})")
    problem = next((e.problem for e in entries if e.problem), None)
    if problem:
        return Verification(False, problem)
    try:
        read = read_record(run_dir)
        signature = read_entry(run_dir, SIGNATURE_FILE, MAX_SIGNATURE_BYTES)
    except (SignoffError, RunDirError) as exc:
        return Verification(False, str(exc))
    if read is None:
        return Verification(False, f"{run_dir}: not signed (no {SIGNOFF_FILE})")
    payload, record = read
    if record.get("format") != RECORD_FORMAT:
        return Verification(
            False, f"format: {record.get('format')!r} is not {RECORD_FORMAT} — sign the run again", record
        )
    if allowed_signers is None:
        return Verification(
            False,
            "no trusted signers: pass --allowed-signers FILE, or set environment.allowed_signers in the "
            "environment's params — a signature by an unknown key proves nothing",
            record,
        )
    try:
        signed_at = parse_signed_at(record["signed_at"])
    except (KeyError, ValueError):
        return Verification(False, "signed_at: missing or not a UTC time", record)
    if signed_at > utc_now() + CLOCK_SKEW:  # the signing time chooses which keys allowed_signers trusts
        return Verification(False, f"signed_at: {record['signed_at']} is in the future", record)
    try:
        verified = signatures.verify(
            payload, signature, Path(allowed_signers), str(record.get("signer", "")), signed_at
        )
    except signatures.SignatureError as exc:
        return Verification(False, str(exc), record)
    if verified.fingerprint and verified.fingerprint != record.get("key_fingerprint"):
        return Verification(False, f"key_fingerprint: the record says {record.get('key_fingerprint')}, the signature "
                            f"was made with {verified.fingerprint}", record)  # fmt: skip
    for name in ("environment", "run", "kit_version"):
        if not isinstance(record.get(name), str) or not record[name]:
            return Verification(False, f"{name}: missing from the record", record)
    misplaced = location_problem(run_dir, record["environment"], record["run"])
    if misplaced:
        return Verification(False, misplaced, record)
    problem = _compare_entries(run_dir, record, entries)
    if problem:
        return Verification(False, problem, record)
    return Verification(True, "", record)
