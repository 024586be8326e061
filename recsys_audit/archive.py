"""The audit archive: one offline index page of every audit run under ``audits/<env>/<timestamp>/``.

The page is static HTML with relative links, so the whole folder can be copied, zipped or served as it is.
Each run is verified: with a trusted public key when one matches its signer, else with the key in the run directory
(which proves the files are unchanged, not who signed).
"""

from __future__ import annotations

import datetime as dt
import html
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from recsys_audit.display import STATUS_COLOURS, TABLE_OPEN, badge
from recsys_audit.findings import Status
from recsys_audit.signoff import (
    FINDINGS_FILE,
    REPORT_FILE,
    SignoffError,
    key_fingerprint,
    load_public_key,
    read_record,
    read_run,
    verify_run,
)

INDEX_FILE = "index.html"


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
    state: str = "unsigned"  # unsigned | verified | intact | failed | unreadable
    detail: str = ""


def _trusted_fingerprints(keys: list[Path]) -> dict[str, Path]:
    return {key_fingerprint(load_public_key(path)): path for path in keys}


def _signer_fingerprint(run_dir: Path) -> str:
    """The key fingerprint the sign-off record names (unverified; "" when there is no readable record)."""
    try:
        record = read_record(run_dir)
    except SignoffError:
        return ""
    return str((record or {}).get("key_fingerprint", ""))


def archive_entry(root: Path, run_dir: Path, trusted: dict[str, Path]) -> ArchiveEntry:
    rel = run_dir.relative_to(root).as_posix()
    try:
        run = read_run(run_dir)
    except SignoffError as exc:
        return ArchiveEntry(run_dir.parent.name, run_dir.name, rel, "", state="unreadable", detail=str(exc))
    entry = ArchiveEntry(
        env=run.env,
        run=run_dir.name,
        link=f"{rel}/{REPORT_FILE}",
        verdict=run.verdict,
        counts=dict(Counter(str(f.status) for f in run.findings)),
    )
    trusted_key = trusted.get(_signer_fingerprint(run_dir))
    check = verify_run(run_dir, trusted_key)  # one pass over the files, with the trusted key when there is one
    record = check.record
    if record is None:
        entry.detail = "" if "not signed" in check.problem else check.problem
        entry.state = "unsigned" if "not signed" in check.problem else "failed"
        return entry
    entry.signer = f"{record.get('reviewer', '')} ({record.get('role', '')})"
    entry.decision = str(record.get("decision", ""))
    entry.signed_at = str(record.get("signed_at", ""))
    if not check.ok:
        entry.state, entry.detail = "failed", check.problem
    elif trusted_key is not None:
        entry.state, entry.detail = "verified", f"signature valid with trusted key {trusted_key.name}"
    else:
        entry.state, entry.detail = "intact", "files match the signature; signer's key not in the trusted keys"
    return entry


def collect_entries(root: Path, trusted_keys: list[Path] | None = None) -> list[ArchiveEntry]:
    """Every run under ``root/<env>/<run>/`` (newest first within each environment)."""
    trusted = _trusted_fingerprints(trusted_keys or [])
    runs = sorted(root.glob(f"*/*/{FINDINGS_FILE}"), key=lambda p: (p.parent.parent.name, p.parent.name))
    entries = [archive_entry(root, path.parent, trusted) for path in runs]
    newest_first = sorted(entries, key=lambda e: e.run, reverse=True)
    return sorted(newest_first, key=lambda e: e.env)


_STATE_COLOURS = {
    "verified": STATUS_COLOURS[Status.PASS],
    "intact": STATUS_COLOURS[Status.MANUAL],
    "unsigned": STATUS_COLOURS[Status.SKIP],
    "failed": STATUS_COLOURS[Status.FAIL],
    "unreadable": STATUS_COLOURS[Status.FAIL],
}
_STATE_LABELS = {
    "verified": "verified",
    "intact": "intact (identity not checked)",
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
        f"{generated_at:%Y-%m-%d %H:%M} UTC. <em>intact</em>: files match the signature, checked with the key kept in "
        "the run directory (integrity, not identity); <em>verified</em>: checked with a trusted public key.</p>"
        f"{body}</body></html>"
    )


def write_index(root: Path, trusted_keys: list[Path] | None = None) -> tuple[Path, list[ArchiveEntry]]:
    """Write ``root/index.html`` listing every audit under ``root``; returns its path and the entries."""
    root = Path(root)
    if not root.is_dir():
        raise SignoffError(f"{root}: no such archive directory — audits are written to audits/<env>/<timestamp>/")
    entries = collect_entries(root, trusted_keys)
    path = root / INDEX_FILE
    path.write_text(index_html(entries, dt.datetime.now(dt.UTC)), encoding="utf-8")
    return path, entries
