"""The report's "since the last audit" block: what changed since the previous signed audit of the environment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recsys_audit.diff import Change, DiffError, diff_runs, previous_signed_run, run_trust
from recsys_audit.findings import Status
from recsys_audit.render.components import badge, esc, grid_html


@dataclass(frozen=True)
class SinceLastAudit:
    headline: str  # one line of text for the top of the report
    html: str  # the block: counts, the new findings, the resolved and persisting ones folded


def _changes_table(title: str, changes: list[Change], show_old: bool, folded: bool) -> str:
    if not changes:
        return ""
    rows = (
        [
            badge(Status(c.old_status if show_old else c.new_status)),
            f'<a href="#finding-{esc(c.check)}">{esc(c.check)}</a>' if not show_old else esc(c.check),
            esc(c.severity),
            esc(c.title),
            f"<code>{c.fingerprint}</code>",
        ]
        for c in changes
    )
    table = grid_html(["status", "check", "severity", "title", "fingerprint"], rows)
    if folded:
        return f'<details class="ra-fold"><summary>{esc(title)} ({len(changes)})</summary>{table}</details>'
    return f"<h4>{esc(title)} ({len(changes)})</h4>{table}"


def since_last_audit(run_dir: Path, allowed_signers: Path | None = None) -> SinceLastAudit:
    """The diff against the newest earlier run of the environment whose sign-off verifies (trust: the one given,
    else the run's own params)."""
    run_dir = Path(run_dir)
    previous = previous_signed_run(run_dir, allowed_signers or run_trust(run_dir))
    skipped = "".join(f"<li><code>{esc(name)}</code>: {esc(problem)}</li>" for name, problem in previous.skipped)
    skipped_html = f"<p>Earlier runs passed over (sign-off does not verify):</p><ul>{skipped}</ul>" if skipped else ""
    if previous.run_dir is None:
        return SinceLastAudit(
            "no earlier signed audit to compare with",
            f"<div class='ra-diff'><p>No earlier signed audit of this environment to compare with: "
            f"{esc(previous.note)}.</p>{skipped_html}</div>",
        )
    try:
        result = diff_runs(previous.run_dir, run_dir)
    except DiffError as exc:
        return SinceLastAudit(
            "not compared with the last audit",
            f"<div class='ra-diff'><p>Not compared: {esc(exc)}</p>{skipped_html}</div>",
        )
    counts = result.counts()
    record = (previous.verification.record if previous.verification else None) or {}
    signer = esc(f"{record.get('reviewer', '?')} ({record.get('signer', '?')}) on {record.get('signed_at', '?')}")
    headline = f"since last audit: {counts['new']} new, {counts['resolved']} resolved"
    return SinceLastAudit(
        headline,
        f"<div class='ra-diff'><p><strong>Since last audit: {counts['new']} new, "
        f"{counts['resolved']} resolved</strong>, "
        f"{counts['persisting']} persisting, {counts['status_changes']} status changes — compared with "
        f"<code>{esc(previous.run_dir.name)}</code> (signed by {signer}).</p>"
        + skipped_html
        + _changes_table("New findings", result.new, show_old=False, folded=False)
        + _changes_table("Resolved findings", result.resolved, show_old=True, folded=True)
        + _changes_table("Persisting findings", result.persisting, show_old=False, folded=True)
        + "</div>",
    )


def since_last_audit_html(run_dir: Path, allowed_signers: Path | None = None) -> str:
    return since_last_audit(run_dir, allowed_signers).html
