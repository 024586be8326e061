"""Static HTML for findings: the same markup in JupyterLab, in executed notebooks and in the report.

Everything is escaped and static (no scripts), so it survives nbconvert and opens offline.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

from recsys_audit.findings import Finding, Status

STATUS_COLOURS = {
    Status.PASS: "#1a7f37",
    Status.FAIL: "#cf222e",
    Status.WARN: "#9a6700",
    Status.ERROR: "#8250df",
    Status.SKIP: "#57606a",
    Status.MANUAL: "#0969da",
}


TABLE_OPEN = '<table class="ra-table" border="1" style="border-collapse:collapse">'


def label_badge(text: str, colour: str, css_class: str) -> str:
    """A coloured, upper-case label (status, decision) that keeps its colours without a stylesheet."""
    return (
        f'<span class="{css_class}" style="background:{colour};color:#fff;border-radius:3px;'
        f'padding:1px 6px;font-weight:600;font-size:0.85em">{html.escape(text.upper())}</span>'
    )


def badge(status: Status) -> str:
    return label_badge(status, STATUS_COLOURS[status], f"ra-badge ra-{status}")


def grid_html(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A bordered table: escaped column headers over rows of ready-made (already escaped) cell HTML."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"{TABLE_OPEN}<tr>{head}</tr>{body}</table>"


def _is_table(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(row, dict) for row in value)


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return html.escape(json.dumps(value, default=str, sort_keys=True))
    return html.escape("" if value is None else str(value))


def table_html(rows: list[dict[str, Any]], max_rows: int = 50) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows[:max_rows]
    )
    more = f"<p><em>{len(rows) - max_rows} more rows not shown</em></p>" if len(rows) > max_rows else ""
    header = f"<tr>{head}</tr>" if head else ""
    return f"{TABLE_OPEN}{header}{body}</table>{more}"


def evidence_html(evidence: dict[str, Any]) -> str:
    scalars = {k: v for k, v in evidence.items() if not _is_table(v)}
    parts = []
    if scalars:
        parts.append(
            '<dl class="ra-evidence">'
            + "".join(f"<dt>{html.escape(str(k))}</dt><dd><code>{_cell(v)}</code></dd>" for k, v in scalars.items())
            + "</dl>"
        )
    for key, value in evidence.items():
        if _is_table(value):
            parts.append(f"<p><strong>{html.escape(str(key))}</strong></p>" + table_html(value))
    return "".join(parts)


def finding_html(finding: Finding, *, with_evidence: bool = True) -> str:
    waiver = ""
    if finding.waiver:
        waiver = f"<p><em>Waiver: {html.escape(str(finding.waiver.get('note', '')))}</em></p>"
    body = evidence_html(finding.evidence) if with_evidence and finding.evidence else ""
    remediation = (
        f"<p><strong>Remediation:</strong> {html.escape(finding.remediation)}</p>"
        if finding.status in {Status.FAIL, Status.WARN, Status.ERROR, Status.MANUAL}
        else ""
    )
    return (
        f'<div class="ra-finding" id="finding-{html.escape(finding.id)}">'
        f"<p>{badge(finding.status)} <strong>{html.escape(finding.id)}</strong> — {html.escape(finding.title)}"
        f" <small>({finding.severity}, {finding.duration_s:.2f} s)</small></p>"
        f"<p>{html.escape(finding.summary)}</p>{waiver}{body}{remediation}</div>"
    )


def findings_table_html(findings: list[Finding]) -> str:
    return grid_html(
        ["status", "check", "severity", "title", "summary"],
        ([badge(f.status), *(html.escape(str(v)) for v in (f.id, f.severity, f.title, f.summary))] for f in findings),
    )
