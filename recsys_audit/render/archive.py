"""The archive's index page: every audit per environment, newest first, with a trend of fail, warn and error findings
per run, in the report's style.

The page is static HTML with relative links, written at the archive's root (``index.html`` in the folder, or the
object ``prefix/index.html`` in the bucket), so the whole archive can be copied, synced or served as it is.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from recsys_audit.archive import ArchiveEntry, TrustFor, collect_entries, trend
from recsys_audit.findings import Status
from recsys_audit.render import plots
from recsys_audit.render.components import STATUS_COLOURS, STATUS_ORDER, badge, esc, scroll_box
from recsys_audit.render.report import page
from recsys_audit.signoff_record import SignoffError
from recsys_audit.storage import StoreError, open_store

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
    return " ".join(f"{badge(s)}&nbsp;{counts[s]}" for s in STATUS_ORDER if counts.get(s))


def _entry_row(entry: ArchiveEntry) -> str:
    colour = _STATE_COLOURS[entry.state]
    link = esc(entry.link)
    return (
        f"<tr class='ra-run ra-{entry.state}'><td><a href='{link}'>{esc(entry.run)}</a></td>"
        f"<td>{esc(entry.verdict)}</td><td>{_counts_html(entry.counts)}</td>"
        f"<td>{esc(entry.signer) or '—'}</td><td>{esc(entry.decision)}</td>"
        f"<td>{esc(entry.signed_at)}</td>"
        f"<td style='color:{colour};font-weight:600' title='{esc(entry.detail)}'>"
        f"{_STATE_LABELS[entry.state]}</td><td><small>{esc(entry.detail)}</small></td></tr>"
    )


def trend_html(env: str, runs: list[ArchiveEntry]) -> str:
    """Findings that need attention per run of one environment (oldest first): the chart, and its numbers."""
    chart = plots.run_trend(env, [(r.run, r.counts) for r in runs])
    heads = "".join(f"<th>{s}</th>" for s in plots.TREND_STATUSES)
    rows = "".join(
        f"<tr class='ra-trend-run'><td>{esc(r.run)}</td><td>{esc(r.verdict)}</td>"
        + "".join(f"<td>{r.counts.get(str(s), 0)}</td>" for s in plots.TREND_STATUSES)
        + "</tr>"
        for r in runs
    )
    table = scroll_box(
        f"<table class='ra-table ra-trend-table'><tr><th>run (UTC)</th><th>verdict</th>{heads}</tr>{rows}</table>"
    )
    return (
        f"{chart.html('ra-trend')}<details class='ra-fold ra-trend-block'><summary>Fail, warn and error findings "
        f"per run ({len(runs)})</summary>{table}</details>"
    )


def index_html(entries: list[ArchiveEntry], generated_at: dt.datetime) -> str:
    trends = trend(entries)
    sections = []
    for env in sorted(trends):
        rows = "".join(_entry_row(e) for e in entries if e.env == env)
        newest = trends[env][-1]
        sections.append(
            f"<section class='ra-env' id='env-{esc(env)}'><h2>{esc(env)}</h2>"
            f"<p>{len(trends[env])} audit(s); newest <a href='{esc(newest.link)}'>{esc(newest.run)}</a>: "
            f"<strong>{esc(newest.verdict or 'unreadable')}</strong>, {_STATE_LABELS[newest.state]}</p>"
            f"{trend_html(env, trends[env])}"
            + scroll_box(
                "<table class='ra-table ra-runs'><tr><th>run (UTC)</th><th>verdict</th><th>findings</th>"
                "<th>signed by</th><th>decision</th><th>signed at</th><th>verification</th><th></th></tr>"
                f"{rows}</table>"
            )
            + "</section>"
        )
    failing = sum(e.state in {"failed", "unreadable"} for e in entries)
    contents = " · ".join(f"<a href='#env-{esc(env)}'>{esc(env)}</a>" for env in sorted(trends))
    header = (
        f"<header><h1>recsys-audit archive</h1><p>{len(entries)} audits in {len(trends)} environment(s)"
        f"{f', {failing} failing verification' if failing else ''}; index written {generated_at:%Y-%m-%d %H:%M} UTC. "
        "<em>verified</em>: signed by a trusted signer (allowed_signers), in its place, every file as signed; "
        f"anything else is not a valid sign-off.</p>{f'<p>{contents}</p>' if contents else ''}</header>"
    )
    body = "".join(sections) or "<p>No audits found.</p>"
    return page("recsys-audit archive", f"<main>{header}{body}</main>")


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
