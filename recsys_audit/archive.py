"""The audit archive: one offline index page of every audit run under ``audits/<env>/<run id>/``.

The page is static HTML with relative links, so the whole folder can be copied, zipped or served as it is.
Each signed run is verified with the same rules as ``recsys-audit verify``: a signature by a trusted signer (the
``allowed_signers`` given, else the one the environment's params name), the run where its record says, exactly the
recorded entries. Folders and runs are listed without following symlinks, and at most ``MAX_LISTED`` of each.
"""

from __future__ import annotations

import datetime as dt
import html
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recsys_audit.display import STATUS_COLOURS, TABLE_OPEN, badge
from recsys_audit.findings import Status
from recsys_audit.judgement import read_judged_run
from recsys_audit.rundir import REPORT_FILE, RunDirError, environments_of, runs_of
from recsys_audit.signoff import SignoffError, verify_run

INDEX_FILE = "index.html"

TrustFor = Callable[[str], Path | None]  # environment name -> its allowed_signers file, if any


@dataclass
class ArchiveEntry:
    env: str
    run: str
    link: str  # relative to the archive root
    verdict: str
    counts: dict[str, int] = field(default_factory=dict)
    signer: str = ""
    decision: str = ""
    signed_at: str = ""
    state: str = "unsigned"  # unsigned | verified | failed | unreadable
    detail: str = ""


def archive_entry(root: Path, run_dir: Path, trust_for: TrustFor) -> ArchiveEntry:
    rel = run_dir.relative_to(root).as_posix()
    try:
        run = read_judged_run(run_dir)
    except RunDirError as exc:
        return ArchiveEntry(run_dir.parent.name, run_dir.name, rel, "", state="unreadable", detail=str(exc))
    entry = ArchiveEntry(
        env=run.env,
        run=run_dir.name,
        link=f"{rel}/{REPORT_FILE}",
        verdict=run.verdict,
        counts=dict(Counter(str(f.status) for f in run.findings)),
    )
    check = verify_run(run_dir, trust_for(run.env))
    record = check.record
    if record is None:
        unsigned = "not signed" in check.problem
        entry.state, entry.detail = ("unsigned", "") if unsigned else ("failed", check.problem)
        return entry
    entry.signer = f"{record.get('reviewer', '')} ({record.get('role', '')}) as {record.get('signer', '')}"
    entry.decision = str(record.get("decision", ""))
    entry.signed_at = str(record.get("signed_at", ""))
    if check.ok:
        entry.state, entry.detail = "verified", f"signed by trusted signer {record.get('signer')}"
    else:
        entry.state, entry.detail = "failed", check.problem
    return entry


def collect_entries(root: Path, trust_for: TrustFor) -> list[ArchiveEntry]:
    """Every run under ``root/<env>/<run id>/``, newest first within each environment."""
    entries = [
        archive_entry(root, run_dir, trust_for) for env_dir in environments_of(root) for run_dir in runs_of(env_dir)
    ]
    newest_first = sorted(entries, key=lambda e: e.run, reverse=True)
    return sorted(newest_first, key=lambda e: e.env)


_STATE_COLOURS = {
    "verified": STATUS_COLOURS[Status.PASS],
    "unsigned": STATUS_COLOURS[Status.SKIP],
    "failed": STATUS_COLOURS[Status.FAIL],
    "unreadable": STATUS_COLOURS[Status.FAIL],
}
_STATE_LABELS = {
    "verified": "verified",
    "unsigned": "not signed",
    "failed": "VERIFY FAILED",
    "unreadable": "unreadable",
}


def _counts_html(counts: dict[str, int]) -> str:
    return " ".join(f"{badge(s)}&nbsp;{counts[s]}" for s in Status if counts.get(s))


def _entry_row(entry: ArchiveEntry) -> str:
    colour = _STATE_COLOURS[entry.state]
    link = html.escape(entry.link, quote=True)
    return (
        f"<tr class='ra-run ra-{entry.state}'><td><a href='{link}'>{html.escape(entry.run)}</a></td>"
        f"<td>{html.escape(entry.verdict)}</td><td>{_counts_html(entry.counts)}</td>"
        f"<td>{html.escape(entry.signer) or '—'}</td><td>{html.escape(entry.decision)}</td>"
        f"<td>{html.escape(entry.signed_at)}</td>"
        f"<td style='color:{colour};font-weight:600' title='{html.escape(entry.detail, quote=True)}'>"
        f"{_STATE_LABELS[entry.state]}</td><td><small>{html.escape(entry.detail)}</small></td></tr>"
    )


def index_html(entries: list[ArchiveEntry], generated_at: dt.datetime) -> str:
    sections = []
    for env in sorted({e.env for e in entries}):
        rows = "".join(_entry_row(e) for e in entries if e.env == env)
        sections.append(
            f"<h2 id='env-{html.escape(env, quote=True)}'>{html.escape(env)}</h2>"
            f"{TABLE_OPEN}<tr><th>run (UTC)</th><th>verdict</th><th>findings</th><th>signed by</th><th>decision</th>"
            f"<th>signed at</th><th>verification</th><th></th></tr>{rows}</table>"
        )
    body = "".join(sections) or "<p>No audits found.</p>"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>recsys-audit archive</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}td,th{padding:3px 8px;vertical-align:top}</style>"
        f"</head><body><h1>recsys-audit archive</h1><p>{len(entries)} audits, index written "
        f"{generated_at:%Y-%m-%d %H:%M} UTC. <em>verified</em>: signed by a trusted signer (allowed_signers), in its "
        "place, every file as signed; anything else is not a valid sign-off.</p>"
        f"{body}</body></html>"
    )


def write_index(root: Path, trust_for: TrustFor) -> tuple[Path, list[ArchiveEntry]]:
    """Write ``root/index.html`` listing every audit under ``root``; returns its path and the entries."""
    root = Path(root)
    if not root.is_dir() or root.is_symlink():
        raise SignoffError(f"{root}: no such archive directory — audits are written to audits/<env>/<run id>/")
    entries = collect_entries(root, trust_for)
    path = root / INDEX_FILE
    path.write_text(index_html(entries, dt.datetime.now(dt.UTC)), encoding="utf-8")
    return path, entries
