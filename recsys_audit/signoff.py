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

The record's format, reading it and :func:`verify_run` are in :mod:`recsys_audit.signoff_record` (re-exported here).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import recsys_audit
from recsys_audit import judgement, outputs, signatures
from recsys_audit.findings import Status
from recsys_audit.judgement import DECISIONS
from recsys_audit.params import Attestation, Params
from recsys_audit.render.report import render_report
from recsys_audit.rundir import (
    FINDINGS_FILE,
    SIGNATURE_FILE,
    SIGNOFF_FILE,
    RunDirError,
    list_entries,
    load_recorded_params,
    location_problem,
)
from recsys_audit.signoff_record import (
    RECORD_FORMAT,
    SIGNOFF_FILES,
    SignoffError,
    Verification,
    canonical_json,
    read_record,
    run_entries,
    trusted_signers,
    utc_now,
    verify_run,
)

__all__ = [
    "DECISIONS",
    "SignoffError",
    "Verification",
    "canonical_json",
    "read_record",
    "run_entries",
    "sign_run",
    "trusted_signers",
    "verify_run",
]


def same_person(a: str, b: str) -> bool:
    def norm(name: str) -> str:
        return " ".join(name.split()).casefold()

    return norm(a) == norm(b)


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
    render: Callable[[Path, Path | None], None] = render_report,
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
    signed_at = (now or utc_now()).astimezone(dt.UTC).replace(microsecond=0)
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
