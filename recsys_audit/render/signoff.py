"""The report's sign-off block: who signed the run, with what decision, and how to verify it — from the record."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from recsys_audit import judgement, signatures
from recsys_audit.findings import Status
from recsys_audit.render.components import STATUS_COLOURS, esc, grid_html, label_badge
from recsys_audit.rundir import RunDirError
from recsys_audit.signoff_record import SignoffError, parse_signed_at, read_record

_DECISION_COLOURS = {
    "approve": STATUS_COLOURS[Status.PASS],
    "approve-with-exceptions": STATUS_COLOURS[Status.WARN],
    "reject": STATUS_COLOURS[Status.FAIL],
}
UNSIGNED_HINT = "recsys-audit sign RUN_DIR --reviewer … --role … --decision … --key …"


def _row(label: str, value: str) -> str:
    return f"<tr><th>{esc(label)}</th><td>{value}</td></tr>"


def _code_list(ids: Iterable[str]) -> str:
    return ", ".join(f"<code>{esc(i)}</code>" for i in ids) or "—"


def decision_badge(decision: str) -> str:
    return label_badge(decision, _DECISION_COLOURS.get(decision, STATUS_COLOURS[Status.SKIP]), "ra-decision")


def _attestations_html(document: dict[str, Any]) -> str:
    rows = []
    for row in document.get("attestations", []):
        if row.get("source") != "sign-off":
            continue
        url = esc(row.get("evidence_url", ""))
        state = {"applied": "valid", "expired": "EXPIRED — counts as manual"}.get(row.get("state"), row.get("state"))
        rows.append(
            [
                esc(row.get("check")),
                f"<a href='{url}'>{url}</a>",
                esc(row.get("date")),
                esc(row.get("by", "")),
                esc(row.get("expires", "")),
                f"<span class='ra-attestation-{esc(row.get('state'))}'>{esc(state)}</span>",
            ]
        )
    if not rows:
        return ""
    return "<p><strong>Attested at sign-off:</strong></p>" + grid_html(
        ["check", "evidence", "date", "by", "expires", "state"], rows
    )


def signoff_line_html(run_dir: Path) -> str:
    """One line for the top of the report: signed by whom with what decision, or not signed."""
    try:
        read = read_record(Path(run_dir))
    except SignoffError as exc:
        return f"<span class='ra-unsigned'>sign-off unreadable: {esc(exc)}</span>"
    if read is None:
        return "<span class='ra-unsigned'>not signed</span>"
    record = read[1]
    return (
        f"<span class='ra-signed-line'>signed {decision_badge(str(record.get('decision', '')))} by "
        f"{esc(record.get('reviewer', ''))} ({esc(record.get('role', ''))}) on {esc(record.get('signed_at', ''))}"
        "</span>"
    )


def signoff_block_html(run_dir: Path) -> str:
    """Static, escaped HTML for the report's sign-off section, from the record and the judged findings."""
    run_dir = Path(run_dir)
    try:
        read = read_record(run_dir)
        document = judgement.read_judged_run(run_dir).document
    except (SignoffError, RunDirError) as exc:
        return f"<div class='ra-signoff-block ra-unsigned'><p><strong>Not signed:</strong> {esc(exc)}</p></div>"
    if read is None:
        return (
            "<div class='ra-signoff-block ra-unsigned'><p><strong>Not signed.</strong> A reviewer signs this audit "
            f"with <code>{esc(UNSIGNED_HINT)}</code>.</p></div>"
        )
    record = read[1]
    decision = str(record.get("decision", ""))
    colour = _DECISION_COLOURS.get(decision, STATUS_COLOURS[Status.SKIP])
    reviewer, role = esc(record.get("reviewer", "")), esc(record.get("role", ""))
    signer, signed_at = esc(record.get("signer", "")), esc(record.get("signed_at", ""))
    badge = decision_badge(decision)
    accepted = record.get("accepted") or []
    rows = [
        _row("Reviewer", f"<span class='ra-reviewer'>{reviewer}</span> ({role})"),
        _row("Signer (allowed_signers principal)", f"<code class='ra-signer'>{signer}</code>"),
        _row("Decision", badge),
        _row("Verdict when signed", esc(f"{record.get('verdict')} — score {judgement.score_text(document)}")),
    ]
    if decision == "approve-with-exceptions":
        rows.append(
            _row(f"Accepted exceptions ({len(accepted)})", f"<span class='ra-accepted'>{_code_list(accepted)}</span>")
        )
    rows += [
        _row("Signed at (UTC)", signed_at),
        _row("Key (Ed25519)", f"<code>{esc(record.get('key_fingerprint', ''))}</code>"),
        _row("Comment", esc(record.get("comment") or "—")),
        _row("Four-eyes", esc(record.get("four_eyes", ""))),
    ]
    try:
        command = signatures.verify_command(str(record.get("signer", "")), parse_signed_at(record.get("signed_at")))
    except ValueError:
        command = "ssh-keygen -Y verify …"
    return (
        f"<div class='ra-signoff-block ra-signed' style='border-left:4px solid {colour};padding:4px 12px'>"
        f"<p>Signed by <strong>{reviewer}</strong> ({role}) as <code>{signer}</code> on {signed_at} — {badge}</p>"
        f"<table class='ra-signoff-record ra-kv'>{''.join(rows)}</table>{_attestations_html(document)}"
        "<p><small>A page cannot vouch for itself: the SSH signature is in <code>signoff.json.sig</code> beside it and "
        "covers every file of this run directory. It counts only if the signer's key is in <em>your</em> "
        "allowed_signers: <code>recsys-audit verify RUN_DIR --allowed-signers FILE</code>, or by hand in the run "
        f"directory: <code>{esc(command)}</code>.</small></p></div>"
    )
