"""Static HTML pieces shared by the report, the notebooks, the review widgets and the archive page.

Everything is escaped and static (no scripts), so it survives nbconvert and opens offline. Pieces that appear in
notebook outputs carry the few inline styles they need to read well without the report's stylesheet.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

from recsys_audit.findings import Finding, Severity, Status

STATUS_COLOURS = {
    Status.PASS: "#1a7f37",
    Status.FAIL: "#cf222e",
    Status.WARN: "#9a6700",
    Status.ERROR: "#8250df",
    Status.SKIP: "#57606a",
    Status.MANUAL: "#0969da",
}
SEVERITY_COLOURS = {
    Severity.CRITICAL: "#82071e",
    Severity.HIGH: "#bc4c00",
    Severity.MEDIUM: "#7d4e00",
    Severity.LOW: "#0a3069",
    Severity.INFO: "#57606a",
}
STATUS_ORDER = (Status.FAIL, Status.ERROR, Status.WARN, Status.MANUAL, Status.PASS, Status.SKIP)  # attention first
ATTENTION = (Status.FAIL, Status.ERROR, Status.WARN)  # what a reviewer must look at
PROBLEMS = frozenset({Status.FAIL, Status.ERROR, Status.WARN, Status.MANUAL})  # findings that carry a remediation
LONG_TEXT = 100  # characters: a longer evidence value (a query, a command) gets a block of its own
MAX_TABLE_ROWS = 50


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def label_badge(text: str, colour: str, css_class: str) -> str:
    """A coloured, upper-case label (status, decision) that keeps its colours without a stylesheet."""
    return (
        f'<span class="{css_class}" style="background:{colour};color:#fff;border-radius:3px;'
        f'padding:1px 6px;font-weight:600;font-size:0.85em">{esc(text.upper())}</span>'
    )


def badge(status: Status) -> str:
    return label_badge(status, STATUS_COLOURS[status], f"ra-badge ra-{status}")


def severity_badge(severity: Severity) -> str:
    """An outlined label, so that a severity never reads as a status."""
    colour = SEVERITY_COLOURS[severity]
    return (
        f'<span class="ra-severity ra-sev-{severity}" style="border:1px solid {colour};color:{colour};'
        f'border-radius:3px;padding:0 5px;font-size:0.8em;font-weight:600">{esc(severity)}</span>'
    )


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Attention first: by status (fail, error, warn, manual, pass, skip), then severity, section and id."""
    return sorted(findings, key=lambda f: (STATUS_ORDER.index(f.status), f.severity.rank, f.section, f.id))


def scroll_box(inner: str) -> str:
    """A box that scrolls sideways on its own, so a wide table never widens the page."""
    return f'<div class="ra-scroll" style="overflow-x:auto">{inner}</div>'


def grid_html(headers: Sequence[str], rows: Iterable[Sequence[str]], css_class: str = "ra-table") -> str:
    """A bordered table in its own scroll box: escaped column headers over rows of ready-made (escaped) cell HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return scroll_box(f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


# --- evidence --------------------------------------------------------------------------------------------------


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _is_table(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(row, dict) for row in value)


def _is_keyed_table(value: Any) -> bool:
    """A mapping of names to records (``{"exposure_events": {"rows": 3, …}, …}``): shown as a table too."""
    return isinstance(value, dict) and bool(value) and all(isinstance(row, dict) for row in value.values())


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _inline(value: Any) -> str | None:
    """A value as one short line of text when it is flat (scalar, list of scalars, mapping of scalars), else None."""
    if not isinstance(value, dict | list):
        return _scalar_text(value)
    if isinstance(value, list) and not any(isinstance(v, dict | list) for v in value):
        return ", ".join(_scalar_text(v) for v in value)
    if isinstance(value, dict) and not any(isinstance(v, dict | list) for v in value.values()):
        return ", ".join(f"{k}: {_scalar_text(v)}" for k, v in value.items())
    return None


def _text(value: Any) -> str:
    inline = _inline(value)
    return inline if inline is not None else json.dumps(value, default=str, ensure_ascii=False)


def table_html(rows: list[dict[str, Any]], max_rows: int = MAX_TABLE_ROWS) -> str:
    """Rows of records as a table: columns in the order the check wrote them, columns empty in every row left out."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    columns = [c for c in columns if any(not _empty(row.get(c)) for row in rows)]
    body = ([esc(_text(row[c])) if not _empty(row.get(c)) else "" for c in columns] for row in rows[:max_rows])
    more = f'<p class="ra-muted">{len(rows) - max_rows} more rows in findings.json</p>' if len(rows) > max_rows else ""
    return grid_html(columns, body, "ra-table ra-evidence-table") + more


def evidence_html(evidence: dict[str, Any]) -> str:
    """A finding's evidence: short values inline, then records as tables, then long values (queries, commands) in
    blocks — each in the order the check recorded them; empty values are left out."""
    facts, blocks, tables = [], [], []
    for key, value in evidence.items():
        if _empty(value):
            continue
        if _is_table(value):
            tables.append(f'<p class="ra-key"><strong>{esc(key)}</strong></p>{table_html(value)}')
        elif _is_keyed_table(value):
            rows = [{"name": name, **record} for name, record in value.items()]
            tables.append(f'<p class="ra-key"><strong>{esc(key)}</strong></p>{table_html(rows)}')
        else:
            text = _text(value)
            if len(text) > LONG_TEXT or "\n" in text:
                blocks.append(
                    f'<div class="ra-block"><p class="ra-key"><strong>{esc(key)}</strong></p>'
                    f'<pre style="white-space:pre-wrap;overflow-wrap:anywhere">{esc(text)}</pre></div>'
                )
            else:
                facts.append(f'<span class="ra-fact"><strong>{esc(key)}</strong> <code>{esc(text)}</code></span>')
    inline = f'<p class="ra-facts">{" · ".join(facts)}</p>' if facts else ""
    return f'<div class="ra-evidence">{inline}{"".join(tables)}{"".join(blocks)}</div>'


# --- findings --------------------------------------------------------------------------------------------------


def finding_anchor(check_id: str) -> str:
    """The id of a finding's evidence card in the report (cards exist for the problem statuses)."""
    return f"finding-{check_id}"


def check_anchor(check_id: str) -> str:
    """The id of a finding as its section notebook shows it."""
    return f"check-{check_id}"


def _notes_html(finding: Finding) -> str:
    if finding.waiver:
        return f'<p class="ra-waiver"><em>Waiver: {esc(finding.waiver.get("note", ""))}</em></p>'
    return ""


def _remediation_html(finding: Finding) -> str:
    if finding.status not in PROBLEMS or not finding.remediation:
        return ""
    return f'<p class="ra-remediation"><strong>Remediation:</strong> {esc(finding.remediation)}</p>'


def _facts_line(finding: Finding) -> str:
    parts = [f"section {finding.section}", f"{finding.duration_s:.2f} s"]
    if finding.items:
        parts.insert(1, "checklist " + ", ".join(finding.items))
    if finding.reference:
        parts.append(f"reference: {finding.reference}")
    return f'<p class="ra-muted ra-card-facts"><small>{esc(" · ".join(parts))}</small></p>'


def finding_card(finding: Finding, *, unfolded: bool = False) -> str:
    """The report's evidence card: one summary line, the rest folded (opened by a link to ``#finding-<id>``)."""
    status = str(finding.status)
    evidence = evidence_html(finding.evidence) if finding.evidence else ""
    return (
        f'<details class="ra-card ra-card-{status}"{" open" if unfolded else ""}><summary>{badge(finding.status)} '
        f"{severity_badge(finding.severity)} <strong>{esc(finding.id)}</strong> — {esc(finding.title)}</summary>"
        f'<div class="ra-card-body" id="{esc(finding_anchor(finding.id))}">'
        f'<p class="ra-summary">{esc(finding.summary)}</p>{_notes_html(finding)}{_facts_line(finding)}'
        f"{evidence}{_remediation_html(finding)}</div></details>"
    )


def finding_html(finding: Finding) -> str:
    """A finding as a section notebook shows it: status, id, title and summary; evidence and remediation folded."""
    colour = STATUS_COLOURS[finding.status]
    evidence = evidence_html(finding.evidence) if finding.evidence else ""
    remediation = _remediation_html(finding)
    folded = (
        f'<details class="ra-more"><summary>evidence{" and remediation" if remediation else ""}</summary>'
        f"{_facts_line(finding)}{evidence}{remediation}</details>"
        if evidence or remediation
        else ""
    )
    return (
        f'<div class="ra-finding ra-finding-{finding.status}" id="{esc(check_anchor(finding.id))}" '
        f'style="border-left:4px solid {colour};padding:2px 10px;margin:8px 0">'
        f'<p class="ra-finding-line">{badge(finding.status)} <strong>{esc(finding.id)}</strong> — '
        f"{esc(finding.title)} <small>({finding.severity}, {finding.duration_s:.2f} s)</small></p>"
        f'<p class="ra-summary">{esc(finding.summary)}</p>{_notes_html(finding)}{folded}</div>'
    )


def findings_table_html(findings: list[Finding]) -> str:
    return grid_html(
        ["status", "check", "severity", "title", "summary"],
        ([badge(f.status), *(esc(v) for v in (f.id, f.severity, f.title, f.summary))] for f in findings),
        "ra-table ra-findings",
    )
