"""Reviewer sign-off: a signed record of who decided what about an audit run, bound to every file of the run.

A run directory is signed in three files:

- ``signoff.json`` — the record (reviewer, role, decision, comment, UTC time, kit version, environment, params hash,
  attestations, and the SHA-256 of every other file of the run in sorted path order), as canonical JSON;
- ``signoff.sig`` — the Ed25519 signature over the exact bytes of ``signoff.json`` (base64, one line);
- ``signoff.pub`` — a copy of the public key, for convenience. A key read from the run directory proves that nothing
  changed since signing (integrity), not who signed (identity): for that, verify with the reviewer's own public key.

The report is re-rendered (with its sign-off block) before the files are hashed, so the signature covers it too.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ValidationError

import recsys_audit
from recsys_audit.display import STATUS_COLOURS, grid_html, label_badge
from recsys_audit.findings import Finding, Status
from recsys_audit.params import EnvironmentParams, Policies

SIGNOFF_FILE = "signoff.json"
SIGNATURE_FILE = "signoff.sig"
PUBLIC_KEY_FILE = "signoff.pub"
FINDINGS_FILE = "findings.json"
REPORT_FILE = "report.html"
PARAMS_COPY_FILE = "params.yaml"
RECORD_FORMAT = "recsys-audit-signoff/1"
DECISIONS = ("approve", "approve-with-exceptions", "reject")
INTEGRITY_ONLY_NOTE = "key read from the run directory: this proves integrity only, not identity (pass --pubkey)"

ModelT = TypeVar("ModelT", bound=BaseModel)

# Files written by signing itself; everything else in the run directory is hashed into the record.
_UNHASHED = {SIGNOFF_FILE, SIGNATURE_FILE}


class SignoffError(Exception):
    """Signing or reading a sign-off is not possible; the message is one line and says what to do."""


# --- canonical bytes and file hashes ---------------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the exact bytes that are signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_run_files(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every file under ``run_dir`` except the signature files, keyed by sorted relative POSIX path."""
    files = sorted(
        path.relative_to(run_dir).as_posix() for path in run_dir.rglob("*") if path.is_file() or path.is_symlink()
    )
    return {rel: sha256_file(run_dir / rel) for rel in files if rel not in _UNHASHED}


# --- keys ------------------------------------------------------------------------------------------------------


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_key_pair(private_path: Path) -> tuple[Path, str]:
    """Write a new Ed25519 private key (mode 0600) and ``<private_path>.pub``; return the public path, fingerprint."""
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise SignoffError(f"{path} exists — choose another path or remove it first")
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.touch(mode=0o600, exist_ok=False)
    private_path.chmod(0o600)
    private_path.write_bytes(pem)
    public_path.write_bytes(public_key_pem(private_key.public_key()))
    return public_path, key_fingerprint(private_key.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    if not path.is_file():
        raise SignoffError(f"{path}: no such key file — create one with 'recsys-audit keygen {path}'")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SignoffError(f"{path}: private key is readable by others — run 'chmod 600 {path}'")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SignoffError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignoffError(f"{path}: not an Ed25519 key — create one with 'recsys-audit keygen'")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    if not path.is_file():
        raise SignoffError(f"{path}: no such public key file")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError):
        raise SignoffError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignoffError(f"{path}: not an Ed25519 public key")
    return key


# --- the audited run -------------------------------------------------------------------------------------------


@dataclass
class RunInfo:
    run_dir: Path
    env: str
    kit_version: str
    verdict: str
    params_sha256: str
    params_path: str | None
    findings: list[Finding]
    data: dict[str, Any] = field(repr=False)


def read_run(run_dir: Path) -> RunInfo:
    path = run_dir / FINDINGS_FILE
    if not path.is_file():
        raise SignoffError(f"{run_dir}: no {FINDINGS_FILE} — not an audit run directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        findings = [Finding.from_dict(item) for item in data.get("findings", [])]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, ValueError, TypeError) as exc:
        raise SignoffError(f"{path}: unreadable findings ({type(exc).__name__}: {exc})") from None
    if not isinstance(data.get("env"), str):
        raise SignoffError(f"{path}: field 'env' is missing — re-run the audit")
    return RunInfo(
        run_dir=run_dir,
        env=data["env"],
        kit_version=str(data.get("kit_version", "")),
        verdict=str(data.get("verdict", "")),
        params_sha256=str(data.get("params_sha256", "")),
        params_path=data.get("params_file") or data.get("params_path"),
        findings=findings,
        data=data,
    )


@dataclass
class EnvironmentPolicy:
    """What the params file of the audit says about signing it."""

    owner: str | None
    allow_owner_signoff: bool
    attestation_max_age_days: int
    params_path: Path


def environment_policy(run: RunInfo, params_path: Path | None = None) -> EnvironmentPolicy:
    """Read owner and attestation policy from the params the audit ran with (its SHA-256 must match).

    Looked for in order: ``params_path``, the copy ``params.yaml`` in the run directory, the file named in
    findings.json.
    """
    if params_path is None:
        copy = run.run_dir / PARAMS_COPY_FILE
        if copy.is_file():
            params_path = copy
        elif run.params_path:
            params_path = Path(run.params_path)
        else:
            raise SignoffError(
                f"{run.run_dir / FINDINGS_FILE}: names no params file — pass --params params/{run.env}.yaml"
            )
    if not params_path.is_file():
        raise SignoffError(f"{params_path}: params file of the audit not found — pass --params PATH")
    digest = sha256_file(params_path)
    if run.params_sha256 and digest != run.params_sha256:
        raise SignoffError(
            f"{params_path}: differs from the params the audit ran with (sha256 {digest[:12]}… ≠ "
            f"{run.params_sha256[:12]}…) — pass the original file with --params, or re-run the audit"
        )
    try:
        raw = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise SignoffError(f"{params_path}: not valid YAML") from None
    if not isinstance(raw, dict):
        raise SignoffError(f"{params_path}: not a params file (expected a mapping of fields)")
    environment = _validated(EnvironmentParams, raw, "environment", params_path)
    policies = _validated(Policies, raw, "policies", params_path)
    return EnvironmentPolicy(
        environment.owner, environment.allow_owner_signoff, policies.attestation_max_age_days, params_path
    )


def _validated(model: type[ModelT], raw: dict[str, Any], key: str, params_path: Path) -> ModelT:
    try:
        return model.model_validate(raw.get(key) or {})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join([key, *(str(part) for part in error["loc"])])
        raise SignoffError(f"{params_path}: {where}: {error['msg']}") from None


def same_person(a: str, b: str) -> bool:
    def norm(name: str) -> str:
        return " ".join(name.split()).casefold()

    return norm(a) == norm(b)


# --- attestations ----------------------------------------------------------------------------------------------


def parse_attestation(text: str, by: str) -> dict[str, str]:
    """``CHECK_ID=URL@YYYY-MM-DD`` -> an attestation dict (check, evidence_url, date, by)."""
    check, sep, rest = text.partition("=")
    url, at, date_text = rest.rpartition("@")
    if not sep or not at or not check.strip() or not url.strip():
        raise SignoffError(f"--attest {text!r}: expected CHECK_ID=URL@YYYY-MM-DD")
    try:
        date = dt.date.fromisoformat(date_text.strip())
    except ValueError:
        raise SignoffError(f"--attest {text!r}: date {date_text!r} is not YYYY-MM-DD") from None
    return {"check": check.strip(), "evidence_url": url.strip(), "date": date.isoformat(), "by": by}


def attestation_expires(attestation: dict[str, Any], max_age_days: int) -> dt.date:
    return dt.date.fromisoformat(str(attestation["date"])) + dt.timedelta(days=max_age_days)


def attestation_valid(attestation: dict[str, Any], max_age_days: int, as_of: dt.date) -> bool:
    date = dt.date.fromisoformat(str(attestation["date"]))
    return date <= as_of <= attestation_expires(attestation, max_age_days)


def apply_attestation(finding: Finding, attestation: dict[str, Any], max_age_days: int, as_of: dt.date) -> Finding:
    """A manual check with a valid attestation counts as passed; once the attestation expires it is manual again."""
    previously_applied = bool(finding.attestation and finding.attestation.get("applied"))
    if finding.status != Status.MANUAL and not previously_applied:
        return finding
    expires = attestation_expires(attestation, max_age_days)
    base = {k: v for k, v in attestation.items() if k not in {"applied", "expired"}}
    record = {**base, "expires": expires.isoformat()}
    who = attestation.get("by", "?")
    if attestation_valid(attestation, max_age_days, as_of):
        summary = f"attested by {who} on {attestation['date']} ({attestation['evidence_url']}), valid until {expires}"
        return replace(finding, status=Status.PASS, summary=summary, attestation={**record, "applied": True})
    summary = (
        f"attestation by {who} of {attestation['date']} expired on {expires} "
        f"(policy: {max_age_days} days) — needs a new attestation"
    )
    return replace(
        finding, status=Status.MANUAL, summary=summary, attestation={**record, "applied": False, "expired": True}
    )


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The sign-off record of a run, or None when unsigned (unreadable records raise SignoffError)."""
    path = run_dir / SIGNOFF_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SignoffError(f"{path}: not valid JSON") from None
    if not isinstance(record, dict):
        raise SignoffError(f"{path}: not a sign-off record")
    return record


def signed_on(record: dict[str, Any]) -> dt.date:
    return dt.datetime.fromisoformat(str(record["signed_at"]).replace("Z", "+00:00")).date()


def effective_findings(run_dir: Path, as_of: dt.date | None = None) -> list[Finding]:
    """The run's findings with attestations judged as of a date (default: the sign-off date, else today).

    Attestations already on findings (from params) and those recorded at sign-off are both applied.
    """
    run = read_run(run_dir)
    record = read_record(run_dir)
    if as_of is None:
        as_of = signed_on(record) if record and record.get("signed_at") else dt.date.today()
    max_age = int(record.get("attestation_max_age_days", Policies().attestation_max_age_days)) if record else 0
    signed_attestations = {a["check"]: a for a in (record or {}).get("attestations", [])}
    result = []
    for finding in run.findings:
        attestation = signed_attestations.get(finding.id)
        if attestation is not None:
            finding = apply_attestation(finding, attestation, max_age, as_of)
        elif finding.attestation and "date" in finding.attestation:
            age = int(finding.attestation.get("max_age_days", max_age or Policies().attestation_max_age_days))
            finding = apply_attestation(finding, finding.attestation, age, as_of)
        result.append(finding)
    return result


# --- signing ---------------------------------------------------------------------------------------------------


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _rerender_report(run_dir: Path) -> None:
    from recsys_audit.report import render_report

    render_report(run_dir)


def _check_attestation(attestation: dict[str, str], run: RunInfo, today: dt.date) -> None:
    findings = {f.id: f for f in run.findings}
    check = attestation["check"]
    if check not in findings:
        raise SignoffError(f"--attest {check}: no such check in this run — see findings.json for check ids")
    if findings[check].status != Status.MANUAL:
        raise SignoffError(
            f"--attest {check}: the check is {findings[check].status}, not manual — only manual checks are attested"
        )
    if dt.date.fromisoformat(attestation["date"]) > today:
        raise SignoffError(f"--attest {check}: date {attestation['date']} is in the future")


def sign_run(
    run_dir: Path,
    *,
    reviewer: str,
    role: str,
    decision: str,
    key_path: Path,
    comment: str = "",
    attest: Iterable[str] = (),
    params_path: Path | None = None,
    replace_existing: bool = False,
    now: dt.datetime | None = None,
    render_block: Callable[[Path], None] = _rerender_report,
) -> dict[str, Any]:
    """Sign a run directory; returns the record. Refuses the environment's owner unless the params allow it."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    reviewer, role = reviewer.strip(), role.strip()
    if not reviewer or not role:
        raise SignoffError("--reviewer and --role must not be empty")
    if decision not in DECISIONS:
        raise SignoffError(f"--decision {decision!r}: choose one of {', '.join(DECISIONS)}")
    existing = read_record(run_dir)
    if existing and (run_dir / SIGNATURE_FILE).exists() and not replace_existing:
        raise SignoffError(
            f"{run_dir}: already signed by {existing.get('reviewer')} on {existing.get('signed_at')} — "
            "pass --replace to sign again"
        )
    policy = environment_policy(run, params_path)
    if policy.owner and same_person(policy.owner, reviewer):
        if not policy.allow_owner_signoff:
            raise SignoffError(
                f"{reviewer} owns environment {run.env} ({policy.params_path}: environment.owner) and may not sign "
                "its audit — ask another reviewer, or set environment.allow_owner_signoff: true"
            )
        four_eyes = "owner sign-off allowed by params (environment.allow_owner_signoff)"
    else:
        four_eyes = "reviewer is not the environment owner" if policy.owner else "params name no environment owner"
    private_key = load_private_key(Path(key_path))
    signed_at = (now or _utc_now()).astimezone(dt.UTC).replace(microsecond=0)
    attestations = []
    for text in attest:
        attestation = parse_attestation(text, reviewer)
        _check_attestation(attestation, run, signed_at.date())
        attestation["expires"] = attestation_expires(attestation, policy.attestation_max_age_days).isoformat()
        attestations.append(attestation)
    public_key = private_key.public_key()
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "environment": run.env,
        "run": run_dir.name,
        "verdict": run.verdict,
        "kit_version": run.kit_version,
        "signing_kit_version": recsys_audit.__version__,
        "params_sha256": run.params_sha256,
        "owner": policy.owner,
        "four_eyes": four_eyes,
        "reviewer": reviewer,
        "role": role,
        "decision": decision,
        "comment": comment.strip(),
        "signed_at": signed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "key_fingerprint": key_fingerprint(public_key),
        "attestation_max_age_days": policy.attestation_max_age_days,
        "attestations": attestations,
    }
    signoff_path, signature_path, public_path = (run_dir / n for n in (SIGNOFF_FILE, SIGNATURE_FILE, PUBLIC_KEY_FILE))
    signature_path.unlink(missing_ok=True)
    public_path.write_bytes(public_key_pem(public_key))
    # The report block is rendered from the record before the files are hashed, so the signature covers it.
    signoff_path.write_bytes(canonical_json(record))
    try:
        render_block(run_dir)
    except Exception as exc:
        signoff_path.unlink(missing_ok=True)
        public_path.unlink(missing_ok=True)
        raise SignoffError(f"re-rendering {run_dir / REPORT_FILE} failed: {type(exc).__name__}: {exc}") from None
    record["files"] = hash_run_files(run_dir)
    payload = canonical_json(record)
    signoff_path.write_bytes(payload)
    signature_path.write_bytes(base64.b64encode(private_key.sign(payload)) + b"\n")
    return record


# --- verification ----------------------------------------------------------------------------------------------


@dataclass
class Verification:
    ok: bool
    problem: str = ""  # the first thing that does not match, naming the file or field
    record: dict[str, Any] | None = None
    key_source: str = ""  # "given" (--pubkey) or "run directory"
    note: str = ""

    @property
    def signed(self) -> bool:
        return self.record is not None


def _read_signature(path: Path) -> bytes | None:
    raw = path.read_bytes()
    try:
        signature = base64.b64decode(raw.rstrip(b"\n"), validate=True)
    except ValueError:
        return None
    return signature if len(signature) == 64 and base64.b64encode(signature) + b"\n" == raw else None


def verify_run(run_dir: Path, pubkey_path: Path | None = None) -> Verification:
    """Check the signature and every file of a signed run; the first mismatch is named."""
    run_dir = Path(run_dir)
    signoff_path, signature_path = run_dir / SIGNOFF_FILE, run_dir / SIGNATURE_FILE
    if not signoff_path.is_file() or not signature_path.is_file():
        return Verification(False, f"{run_dir}: not signed (no {SIGNOFF_FILE} / {SIGNATURE_FILE})")
    payload = signoff_path.read_bytes()
    try:
        record = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return Verification(False, f"{SIGNOFF_FILE}: not valid JSON — the sign-off record was altered")
    if not isinstance(record, dict) or canonical_json(record) != payload:
        return Verification(False, f"{SIGNOFF_FILE}: not in canonical form — the sign-off record was altered")
    signature = _read_signature(signature_path)
    if signature is None:
        return Verification(False, f"{SIGNATURE_FILE}: malformed signature (expected one line of base64)", record)
    if pubkey_path is not None:
        key_source, note = "given", ""
        try:
            public_key = load_public_key(Path(pubkey_path))
        except SignoffError as exc:
            return Verification(False, str(exc), record, key_source)
    else:
        key_source, note = "run directory", INTEGRITY_ONLY_NOTE
        try:
            public_key = load_public_key(run_dir / PUBLIC_KEY_FILE)
        except SignoffError:
            return Verification(False, f"{PUBLIC_KEY_FILE}: missing or not a public key — pass --pubkey", record)
    fingerprint = key_fingerprint(public_key)
    if fingerprint != record.get("key_fingerprint"):
        where = f"the given key {pubkey_path}" if key_source == "given" else PUBLIC_KEY_FILE
        return Verification(
            False,
            f"key_fingerprint: signed with {record.get('key_fingerprint')}, not with {where} ({fingerprint})",
            record,
            key_source,
        )
    try:
        public_key.verify(signature, payload)
    except InvalidSignature:
        return Verification(
            False, f"{SIGNOFF_FILE} / {SIGNATURE_FILE}: signature does not match the record", record, key_source
        )
    expected = record.get("files")
    if not isinstance(expected, dict):
        return Verification(False, f"{SIGNOFF_FILE}: field 'files' is missing", record, key_source)
    actual = hash_run_files(run_dir)
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            return Verification(False, f"{rel}: missing (signed file was removed)", record, key_source)
        if rel not in expected:
            return Verification(False, f"{rel}: added after signing", record, key_source)
        if actual[rel] != expected[rel]:
            return Verification(False, f"{rel}: changed after signing (SHA-256 differs)", record, key_source)
    return Verification(True, "", record, key_source, note)


# --- the report's sign-off block -------------------------------------------------------------------------------

_DECISION_COLOURS = {
    "approve": STATUS_COLOURS[Status.PASS],
    "approve-with-exceptions": STATUS_COLOURS[Status.WARN],
    "reject": STATUS_COLOURS[Status.FAIL],
}


def _row(label: str, value: str) -> str:
    return f"<tr><th style='text-align:left;padding:2px 8px'>{html.escape(label)}</th><td>{value}</td></tr>"


def _attestations_html(record: dict[str, Any]) -> str:
    attestations = record.get("attestations") or []
    if not attestations:
        return ""
    max_age = int(record.get("attestation_max_age_days", Policies().attestation_max_age_days))
    as_of = signed_on(record)
    rows = []
    for attestation in attestations:
        valid = attestation_valid(attestation, max_age, as_of)
        state = "valid" if valid else "EXPIRED — counts as manual"
        url = html.escape(str(attestation.get("evidence_url", "")))
        rows.append(
            [
                html.escape(str(attestation.get("check"))),
                f"<a href='{url}'>{url}</a>",
                html.escape(str(attestation.get("date"))),
                html.escape(str(attestation.get("by", ""))),
                str(attestation_expires(attestation, max_age)),
                f"<span class='ra-attestation-{'valid' if valid else 'expired'}'>{state}</span>",
            ]
        )
    return f"<p><strong>Attested at sign-off</strong> (maximum age {max_age} days):</p>" + grid_html(
        ["check", "evidence", "date", "by", "expires", "state"], rows
    )


def signoff_block_html(run_dir: Path) -> str:
    """Static, escaped HTML for the report's sign-off section: who signed, when, the decision, the key fingerprint."""
    try:
        record = read_record(Path(run_dir))
    except SignoffError as exc:
        problem = html.escape(str(exc))
        return f"<div class='ra-signoff-block ra-unsigned'><p><strong>Not signed:</strong> {problem}</p></div>"
    if record is None or not record.get("reviewer"):
        return (
            "<div class='ra-signoff-block ra-unsigned'><p><strong>Not signed.</strong> A reviewer signs this audit "
            "with <code>recsys-audit sign RUN_DIR --reviewer … --decision … --key …</code>.</p></div>"
        )
    decision = str(record.get("decision", ""))
    colour = _DECISION_COLOURS.get(decision, STATUS_COLOURS[Status.SKIP])
    reviewer = html.escape(str(record["reviewer"]))
    role = html.escape(str(record.get("role", "")))
    signed_at = html.escape(str(record.get("signed_at", "")))
    fingerprint = html.escape(str(record.get("key_fingerprint", "")))
    badge = label_badge(decision, colour, "ra-decision")
    rows = "".join(
        [
            _row("Reviewer", f"<span class='ra-reviewer'>{reviewer}</span>"),
            _row("Role", role),
            _row("Decision", badge),
            _row("Signed at (UTC)", signed_at),
            _row("Key fingerprint (Ed25519)", f"<code>{fingerprint}</code>"),
            _row("Comment", html.escape(str(record.get("comment") or "—"))),
            _row("Four-eyes", html.escape(str(record.get("four_eyes", "")))),
            _row("Params SHA-256", f"<code>{html.escape(str(record.get('params_sha256', '')))}</code>"),
        ]
    )
    return (
        f"<div class='ra-signoff-block ra-signed' style='border-left:4px solid {colour};padding:4px 12px'>"
        f"<p>Signed by <strong>{reviewer}</strong> ({role}) on {signed_at} — {badge}</p>"
        f"<table class='ra-signoff-record'>{rows}</table>{_attestations_html(record)}"
        "<p><small>The Ed25519 signature covers every file of this run directory. Check it with "
        "<code>recsys-audit verify RUN_DIR --pubkey REVIEWER_KEY.pub</code>.</small></p></div>"
    )
