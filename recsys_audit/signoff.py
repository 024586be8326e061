"""Reviewer sign-off: a signed record of who decided what about an audit run, bound to where the run sits and to
every entry of its directory.

Signing a run directory ``audits/<env>/<run id>/``:

1. judges the run again as of the signing day (:func:`recsys_audit.judgement.rejudge`) with the run's recorded params
   and the attestations the reviewer records, and rewrites findings.json and the outputs written from it (report,
   JUnit, SARIF, OCSF, CSV: those the run holds) with it;
2. refuses what the judgement does not support: ``approve`` needs a ``pass``; ``approve-with-exceptions`` needs every
   failing or erroring finding accepted by id (``accept``); a partial audit is never approved; the environment's owner
   may not sign unless the params allow it;
3. writes ``signoff.json`` — canonical JSON naming the environment, the run id, the kit version, the reviewer, the
   signer (their principal in ``allowed_signers``), the decision, and every entry of the run directory (regular files
   with size and SHA-256; the two expected folders) — and ``signoff.json.sig``, the SSH signature
   (``ssh-keygen -Y sign -n recsys-audit``) over it;
4. checks the new signature with the trusted signers, and restores the run as it was if anything fails.

:func:`verify_run` trusts only an ``allowed_signers`` file given by the verifier (never anything in the run
directory), checks that the run sits where the record says (environment folder, run id), and that the directory holds
exactly the recorded entries: a symlink, FIFO, device or unexpected folder is tampering, never followed or opened.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import recsys_audit
from recsys_audit import judgement, outputs, signatures
from recsys_audit.display import STATUS_COLOURS, grid_html, label_badge
from recsys_audit.findings import Status
from recsys_audit.judgement import DECISIONS
from recsys_audit.params import Attestation, Params
from recsys_audit.rundir import (
    FINDINGS_FILE,
    SIGNATURE_FILE,
    SIGNOFF_FILE,
    MissingEntry,
    RunDirError,
    list_entries,
    load_recorded_params,
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

__all__ = ["DECISIONS", "SignoffError", "Verification", "sign_run", "signoff_block_html", "verify_run"]


class SignoffError(Exception):
    """Signing or reading a sign-off is not possible; the message is one line and says what to do."""


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the exact bytes that are signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def same_person(a: str, b: str) -> bool:
    def norm(name: str) -> str:
        return " ".join(name.split()).casefold()

    return norm(a) == norm(b)


def trusted_signers(params: Params | None, given: Path | None = None) -> Path | None:
    """The allowed_signers file: the one given (``--allowed-signers``), else ``environment.allowed_signers`` of the
    params (relative to the params file); None when neither names one."""
    if given is not None:
        return Path(given)
    if params is not None and params.environment.allowed_signers:
        return params.path(params.environment.allowed_signers)
    return None


def _parse_time(text: object) -> dt.datetime:
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


# --- attestations recorded at sign-off ---------------------------------------------------------------------------


def parse_attestation(text: str, by: str) -> Attestation:
    """``CHECK_ID=URL@YYYY-MM-DD`` -> an attestation by ``by``."""
    check, sep, rest = text.partition("=")
    url, at, date_text = rest.rpartition("@")
    if not sep or not at or not check.strip() or not url.strip():
        raise SignoffError(f"--attest {text!r}: expected CHECK_ID=URL@YYYY-MM-DD")
    try:
        date = dt.date.fromisoformat(date_text.strip())
    except ValueError:
        raise SignoffError(f"--attest {text!r}: date {date_text!r} is not YYYY-MM-DD") from None
    return Attestation(check=check.strip(), by=by, date=date, evidence_url=url.strip())


def _check_attestation(attestation: Attestation, run: judgement.JudgedRun, today: dt.date) -> None:
    findings = {f.id: judgement.observed(f) for f in run.findings}
    check = attestation.check
    if check not in findings:
        raise SignoffError(f"--attest {check}: no such check in this run — see findings.json for check ids")
    if findings[check].status != Status.MANUAL:
        raise SignoffError(
            f"--attest {check}: the check is {findings[check].status}, not manual — only manual checks are attested"
        )
    if attestation.date > today:
        raise SignoffError(f"--attest {check}: date {attestation.date} is in the future")


# --- signing ---------------------------------------------------------------------------------------------------


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _render(run_dir: Path, allowed_signers: Path | None) -> None:
    from recsys_audit.report import render_report

    render_report(run_dir, allowed_signers=allowed_signers)


def _write_judged(run_dir: Path, document: dict[str, Any]) -> None:
    """findings.json as judged at signing, and every output of the run written from it again (the report is rendered
    with the sign-off block, after the record exists)."""
    (run_dir / FINDINGS_FILE).write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    outputs.rewrite_present(run_dir, skip=("html",))


def _four_eyes(params: Params, reviewer: str, env: str) -> str:
    owner = params.environment.owner
    if owner and same_person(owner, reviewer):
        if not params.environment.allow_owner_signoff:
            raise SignoffError(
                f"{reviewer} owns environment {env} (environment.owner: {owner}, in the audit's params) and may not "
                "sign its audit — ask another reviewer, or set environment.allow_owner_signoff: true"
            )
        return "owner sign-off allowed by params (environment.allow_owner_signoff)"
    return "reviewer is not the environment owner" if owner else "params name no environment owner"


def sign_run(
    run_dir: Path,
    *,
    reviewer: str,
    role: str,
    decision: str,
    key_path: Path,
    signer: str | None = None,
    accept: Iterable[str] = (),
    comment: str = "",
    attest: Iterable[str] = (),
    allowed_signers: Path | None = None,
    passphrase: str | None = None,
    prompt_at_terminal: bool = False,
    replace_existing: bool = False,
    now: dt.datetime | None = None,
    render: Callable[[Path, Path | None], None] = _render,
    rewrite_run: bool = True,
) -> dict[str, Any]:
    """Sign a run directory (see the module docstring); returns the record. Raises SignoffError, leaving the run as
    it was, when the sign-off is refused or fails. ``rewrite_run=False`` (a run in write-once storage): findings.json
    and its outputs stay as they are; the record alone carries the judgement at signing."""
    run_dir = Path(run_dir).absolute()
    reviewer, role = reviewer.strip(), role.strip()
    if not reviewer or not role:
        raise SignoffError("--reviewer and --role must not be empty")
    if decision not in DECISIONS:
        raise SignoffError(f"--decision {decision!r}: choose one of {', '.join(DECISIONS)}")
    try:
        run = judgement.read_judged_run(run_dir)
        params = load_recorded_params(run_dir, run.document)
        names = {e.path for e in list_entries(run_dir)}
    except RunDirError as exc:
        raise SignoffError(f"{run_dir}: {exc}") from None
    misplaced = location_problem(run_dir, run.env, str(run.document.get("run", "")))
    if misplaced:
        raise SignoffError(f"{run_dir}: {misplaced} — sign the run where the audit wrote it")
    if SIGNATURE_FILE in names and not replace_existing:
        raise SignoffError(f"{run_dir}: already signed ({SIGNATURE_FILE}) — pass --replace to sign again")
    four_eyes = _four_eyes(params, reviewer, run.env)
    trust = trusted_signers(params, allowed_signers)
    if trust is None:
        raise SignoffError(
            "no trusted signers: nobody could verify this sign-off — set environment.allowed_signers in the params "
            "or pass --allowed-signers FILE (the allowed_signers format git uses)"
        )
    try:
        signatures.check_key(Path(key_path))
        public_key = signatures.read_public_key(signatures.public_key_path(Path(key_path)))
    except signatures.SignatureError as exc:
        raise SignoffError(str(exc)) from None
    principal = (signer or public_key.comment).strip()
    if not principal or any(c.isspace() for c in principal):
        raise SignoffError(
            f"--signer: give your principal in {trust} (e.g. an e-mail address); the key's comment "
            f"{public_key.comment!r} cannot serve"
        )
    signed_at = (now or _utc_now()).astimezone(dt.UTC).replace(microsecond=0)
    attestations = [parse_attestation(text, reviewer) for text in attest]
    for attestation in attestations:
        _check_attestation(attestation, run, signed_at.date())
    document, judged = judgement.rejudge(run.document, params, signed_at.date(), attestations)
    accepted = sorted(set(accept))
    refusal = judgement.decision_problem(decision, judged, accepted)
    if refusal:
        raise SignoffError(f"--decision {decision}: {refusal}")
    run_entries(run_dir)  # refuse a directory with anything but regular files before changing it

    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "environment": run.env,
        "run": run_dir.name,
        "kit_version": str(run.document.get("kit_version", "")),
        "signing_kit_version": recsys_audit.__version__,
        "verdict": judged.verdict,
        "score": judged.score,
        "judged_on": judged.as_of.isoformat(),
        "not_evaluated": judgement.not_evaluated_text(document),
        "params_sha256": str(run.document.get("params_sha256", "")),
        "owner": params.environment.owner,
        "four_eyes": four_eyes,
        "reviewer": reviewer,
        "role": role,
        "signer": principal,
        "decision": decision,
        "accepted": accepted,
        "comment": comment.strip(),
        "signed_at": signed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "key": " ".join(public_key.text.split()[:2]),
        "key_fingerprint": public_key.fingerprint,
        "attestation_max_age_days": params.policies.attestation_max_age_days,
        "attestations": [
            {"check": a.check, "by": a.by, "date": a.date.isoformat(), "evidence_url": a.evidence_url}
            for a in attestations
        ],
    }
    rewritten = (*outputs.output_files(), *SIGNOFF_FILES)
    kept = {name: (run_dir / name).read_bytes() for name in rewritten if name in names}
    try:
        (run_dir / SIGNATURE_FILE).unlink(missing_ok=True)
        if rewrite_run:
            _write_judged(run_dir, document)
            # The report's sign-off block is rendered from the record before the files are hashed: the signature
            # covers it.
            (run_dir / SIGNOFF_FILE).write_bytes(canonical_json(record))
            render(run_dir, trust)
        record["files"], record["directories"] = run_entries(run_dir)
        (run_dir / SIGNOFF_FILE).write_bytes(canonical_json(record))
        signatures.sign_file(
            run_dir / SIGNOFF_FILE, Path(key_path), passphrase=passphrase, prompt_at_terminal=prompt_at_terminal
        )
        check = verify_run(run_dir, trust)
        if not check.ok:
            raise SignoffError(f"the new signature does not verify: {check.problem}")
    except Exception as exc:
        for name in rewritten:
            if name in kept:
                (run_dir / name).write_bytes(kept[name])
            else:
                (run_dir / name).unlink(missing_ok=True)
        if isinstance(exc, SignoffError | signatures.SignatureError):
            raise SignoffError(str(exc)) from None
        raise SignoffError(f"signing {run_dir} failed: {type(exc).__name__}: {exc}") from None
    return record


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
        signed_at = _parse_time(record["signed_at"])
    except (KeyError, ValueError):
        return Verification(False, "signed_at: missing or not a UTC time", record)
    if signed_at > _utc_now() + CLOCK_SKEW:  # the signing time chooses which keys allowed_signers trusts
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


# --- the report's sign-off block -------------------------------------------------------------------------------

_DECISION_COLOURS = {
    "approve": STATUS_COLOURS[Status.PASS],
    "approve-with-exceptions": STATUS_COLOURS[Status.WARN],
    "reject": STATUS_COLOURS[Status.FAIL],
}


def _row(label: str, value: str) -> str:
    return f"<tr><th style='text-align:left;padding:2px 8px'>{html.escape(label)}</th><td>{value}</td></tr>"


def _code_list(ids: Iterable[str]) -> str:
    return ", ".join(f"<code>{html.escape(str(i))}</code>" for i in ids) or "—"


def _attestations_html(document: dict[str, Any]) -> str:
    rows = []
    for row in document.get("attestations", []):
        if row.get("source") != "sign-off":
            continue
        url = html.escape(str(row.get("evidence_url", "")))
        state = {"applied": "valid", "expired": "EXPIRED — counts as manual"}.get(row.get("state"), row.get("state"))
        rows.append(
            [
                html.escape(str(row.get("check"))),
                f"<a href='{url}'>{url}</a>",
                html.escape(str(row.get("date"))),
                html.escape(str(row.get("by", ""))),
                html.escape(str(row.get("expires", ""))),
                f"<span class='ra-attestation-{html.escape(str(row.get('state')))}'>{html.escape(str(state))}</span>",
            ]
        )
    if not rows:
        return ""
    return "<p><strong>Attested at sign-off:</strong></p>" + grid_html(
        ["check", "evidence", "date", "by", "expires", "state"], rows
    )


def signoff_block_html(run_dir: Path) -> str:
    """Static, escaped HTML for the report's sign-off section, from the record and the judged findings."""
    run_dir = Path(run_dir)
    try:
        read = read_record(run_dir)
        document = judgement.read_judged_run(run_dir).document
    except (SignoffError, RunDirError) as exc:
        problem = html.escape(str(exc))
        return f"<div class='ra-signoff-block ra-unsigned'><p><strong>Not signed:</strong> {problem}</p></div>"
    if read is None:
        return (
            "<div class='ra-signoff-block ra-unsigned'><p><strong>Not signed.</strong> A reviewer signs this audit "
            "with <code>recsys-audit sign RUN_DIR --reviewer … --role … --decision … --key …</code>.</p></div>"
        )
    record = read[1]
    decision = str(record.get("decision", ""))
    colour = _DECISION_COLOURS.get(decision, STATUS_COLOURS[Status.SKIP])
    reviewer = html.escape(str(record.get("reviewer", "")))
    role = html.escape(str(record.get("role", "")))
    signer = html.escape(str(record.get("signer", "")))
    signed_at = html.escape(str(record.get("signed_at", "")))
    badge = label_badge(decision, colour, "ra-decision")
    accepted = record.get("accepted") or []
    rows = [
        _row("Reviewer", f"<span class='ra-reviewer'>{reviewer}</span> ({role})"),
        _row("Signer (allowed_signers principal)", f"<code class='ra-signer'>{signer}</code>"),
        _row("Decision", badge),
        _row("Verdict when signed", html.escape(f"{record.get('verdict')} — score {judgement.score_text(document)}")),
    ]
    if decision == "approve-with-exceptions":
        rows.append(
            _row(f"Accepted exceptions ({len(accepted)})", f"<span class='ra-accepted'>{_code_list(accepted)}</span>")
        )
    rows += [
        _row("Signed at (UTC)", signed_at),
        _row("Key (Ed25519)", f"<code>{html.escape(str(record.get('key_fingerprint', '')))}</code>"),
        _row("Comment", html.escape(str(record.get("comment") or "—"))),
        _row("Four-eyes", html.escape(str(record.get("four_eyes", "")))),
    ]
    try:
        command = signatures.verify_command(str(record.get("signer", "")), _parse_time(record.get("signed_at")))
    except ValueError:
        command = "ssh-keygen -Y verify …"
    return (
        f"<div class='ra-signoff-block ra-signed' style='border-left:4px solid {colour};padding:4px 12px'>"
        f"<p>Signed by <strong>{reviewer}</strong> ({role}) as <code>{signer}</code> on {signed_at} — {badge}</p>"
        f"<table class='ra-signoff-record'>{''.join(rows)}</table>{_attestations_html(document)}"
        "<p><small>A page cannot vouch for itself: the SSH signature is in <code>signoff.json.sig</code> beside it and "
        "covers every file of this run directory. It counts only if the signer's key is in <em>your</em> "
        "allowed_signers: <code>recsys-audit verify RUN_DIR --allowed-signers FILE</code>, or by hand in the run "
        f"directory: <code>{html.escape(command)}</code>.</small></p></div>"
    )
