"""The audit archive: one offline index page of every audit run under ``audits/<env>/<run id>/`` or
``s3://bucket/prefix/<env>/<run id>/`` (:mod:`recsys_audit.storage`), with a trend per environment.

The page is static HTML with relative links, written at the archive's root (``index.html`` in the folder, or the
object ``prefix/index.html`` in the bucket), so the whole archive can be copied, synced or served as it is.
Each signed run is verified with the same rules as ``recsys-audit verify``: a signature by a trusted signer (the
``allowed_signers`` given, else the one the environment's params name), the run where its record says, exactly the
recorded entries. Folders and runs are listed without following symlinks, and at most ``MAX_LISTED`` of each;
runs in S3 whose upload has not finished (no manifest) are not listed.
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
from recsys_audit.rundir import REPORT_FILE, RunDirError
from recsys_audit.signoff import SignoffError, verify_run
from recsys_audit.storage import IncompleteRun, RunStore, StoreError, open_store

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


def collect_entries(archive: Path | str | RunStore, trust_for: TrustFor) -> list[ArchiveEntry]:
    """Every run under ``<archive>/<env>/<run id>/`` (a folder, ``s3://…`` or a run store), newest first within each
    environment."""
    store = archive if not isinstance(archive, Path | str) else open_store(archive)
    entries = []
    for env in store.environments():
        for run in store.runs(env):
            try:
                with store.local_run(env, run) as run_dir:
                    entries.append(archive_entry(run_dir.parent.parent, run_dir, trust_for))
            except IncompleteRun:
                continue
            except StoreError as exc:
                entries.append(ArchiveEntry(env, run, f"{env}/{run}", "", state="unreadable", detail=str(exc)))
    newest_first = sorted(entries, key=lambda e: e.run, reverse=True)
    return sorted(newest_first, key=lambda e: e.env)


def trend(entries: list[ArchiveEntry]) -> dict[str, list[ArchiveEntry]]:
    """The runs of each environment, oldest first (their ``counts`` are the findings by status)."""
    return {env: sorted((e for e in entries if e.env == env), key=lambda e: e.run) for env in {e.env for e in entries}}


TREND_STATUSES = (Status.FAIL, Status.WARN, Status.ERROR)


def trend_svg(runs: list[ArchiveEntry]) -> str:
    """A small self-contained bar chart: fails, warns and errors per run, oldest left."""
    bar, gap, height = 6, 4, 60
    top = max((sum(r.counts.get(str(s), 0) for s in TREND_STATUSES) for r in runs), default=0) or 1
    width = max(1, len(runs)) * (bar + gap)
    bars = []
    for index, run in enumerate(runs):
        y = float(height)
        for status in TREND_STATUSES:
            count = run.counts.get(str(status), 0)
            if not count:
                continue
            h = count / top * (height - 4)
            y -= h
            bars.append(
                f"<rect x='{index * (bar + gap)}' y='{y:.1f}' width='{bar}' height='{h:.1f}' "
                f"fill='{STATUS_COLOURS[status]}'><title>{html.escape(run.run)}: {count} {status}</title></rect>"
            )
    return (
        f"<svg class='ra-trend' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='fail, warn and error findings per run'>"
        f"{''.join(bars)}</svg>"
    )


def trend_html(runs: list[ArchiveEntry]) -> str:
    """Findings that need attention per run of one environment: the chart and its numbers."""
    heads = "".join(f"<th>{s}</th>" for s in TREND_STATUSES)
    rows = "".join(
        f"<tr class='ra-trend-run'><td>{html.escape(r.run)}</td><td>{html.escape(r.verdict)}</td>"
        + "".join(f"<td>{r.counts.get(str(s), 0)}</td>" for s in TREND_STATUSES)
        + "</tr>"
        for r in runs
    )
    return (
        f"<details class='ra-trend-block'><summary>Trend: {trend_svg(runs)}</summary>"
        f"<table class='ra-trend-table'><tr><th>run (UTC)</th><th>verdict</th>{heads}</tr>{rows}</table></details>"
    )


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
    trends = trend(entries)
    for env in sorted(trends):
        rows = "".join(_entry_row(e) for e in entries if e.env == env)
        sections.append(
            f"<h2 id='env-{html.escape(env, quote=True)}'>{html.escape(env)}</h2>{trend_html(trends[env])}"
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


def write_index(archive: Path | str, trust_for: TrustFor) -> tuple[str, list[ArchiveEntry]]:
    """Write ``index.html`` at the root of the archive (a folder or ``s3://bucket/prefix``) listing every audit in
    it; returns where it is and the entries."""
    store = open_store(archive)
    try:
        store.check()
        entries = collect_entries(store, trust_for)
        return store.write_index(index_html(entries, dt.datetime.now(dt.UTC))), entries
    except StoreError as exc:
        raise SignoffError(str(exc)) from None
