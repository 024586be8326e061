"""The audit report: ONE self-contained HTML page rendered from the files of a run directory alone.

A summary (verdict, score, counts per section, failing and warning findings with evidence and remediation, waivers,
attestations, sign-off) is followed by every section's executed notebook, code hidden in ``<details>``. Nothing is
loaded from outside: no scripts, no web fonts, images stay ``data:`` URIs, and a Content-Security-Policy forbids the
browser any request should a notebook output carry a remote reference.
"""

from __future__ import annotations

import functools
import html
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsys_audit import judgement
from recsys_audit.display import finding_html, findings_table_html, grid_html
from recsys_audit.findings import Finding, Severity, Status
from recsys_audit.rundir import REPORT_FILE

ASSETS = Path(__file__).parent / "report_assets"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src 'none'; script-src 'none'"
# Output types a static page cannot show; their text/html or text/plain fallback is kept instead.
DYNAMIC_MIME_TYPES = {
    "application/vnd.jupyter.widget-view+json",
    "application/vnd.jupyter.widget-state+json",
    "application/javascript",
    "text/javascript",
}
SECTION_TEMPLATE = """{%- extends 'basic/index.html.j2' -%}
{% block input_group -%}
<details class="ra-code"><summary>code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
"""


# --- notebooks -------------------------------------------------------------------------------------------------


def _static_outputs(notebook: Any) -> Any:
    """Drop widget views and scripts, keeping each output's static fallback; drop outputs left with nothing."""
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if "data" in output:
                for mime in DYNAMIC_MIME_TYPES & set(output["data"]):
                    del output["data"][mime]
                if not output["data"]:
                    continue
            kept.append(output)
        cell.outputs = kept
    return notebook


class NotebookRenderer:
    """One in-process nbconvert exporter (basic template, no page chrome) for all notebooks of a report."""

    def __init__(self) -> None:
        from nbconvert import HTMLExporter

        self.exporter = HTMLExporter(
            template_name="basic", raw_template=SECTION_TEMPLATE, exclude_input_prompt=True, exclude_anchor_links=True
        )

    def render(self, path: Path) -> str:
        import nbformat

        notebook = _static_outputs(nbformat.read(path, as_version=4))
        body, _ = self.exporter.from_notebook_node(notebook)
        return body


# --- summary ---------------------------------------------------------------------------------------------------


def _optional_html(module: str, function: str, run_dir: Path, **options: Any) -> str | None:
    """HTML from an optional companion module (sign-off, diff); None if it is not installed."""
    try:
        render = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError):
        return None
    try:
        return render(run_dir, **options)
    except Exception as exc:  # a broken companion must not cost the report
        return f'<p class="ra-muted">{html.escape(module)} could not render: {html.escape(str(exc))}</p>'


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _meta_html(doc: dict[str, Any]) -> str:
    rows = [
        ("environment", doc["env"]),
        ("target", doc.get("target", "")),
        ("kit version", doc["kit_version"]),
        ("started", doc["started_at"]),
        ("finished", doc["finished_at"]),
        ("run time", f"{doc.get('duration_s', 0):.1f} s"),
        ("fail on", f"{doc.get('fail_on', '')} and above"),
        ("params", f"{doc.get('params_file', '')} (merged copy params.yaml, sha256 {doc['params_sha256'][:16]}…)"),
        ("judged on", doc.get("judged_on", "")),
        ("score", judgement.score_text(doc)),
    ]
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="ra-meta">{body}</table>'


def _sections_html(doc: dict[str, Any]) -> str:
    statuses = [str(s) for s in Status]
    runs = {run["name"]: run for run in doc.get("notebooks", [])}
    rows = []
    for section in doc.get("sections", []):
        counts = doc["counts"]["by_section"].get(str(section["number"]), {})
        run = runs.get(section["notebook"], {})
        cells = [
            f'<a href="#section-{section["number"]}">{section["number"]}. {_esc(section["title"])}</a>',
            *(
                f'<span class="{"ra-count-zero" if not counts.get(s) else ""}">{counts.get(s, 0)}</span>'
                for s in statuses
            ),
            _esc(run.get("status", "not run")) + (f" — {_esc(run['error'])}" if run.get("error") else ""),
            f"{run.get('seconds', 0):.1f} s",
        ]
        rows.append(cells)
    for section in doc.get("sections_not_run", []):
        title = f"{section['number']}. {_esc(section['title'])}"
        rows.append([title, *("—" for _ in statuses), "<strong>not run</strong> (--sections)", ""])
    return grid_html(["section", *statuses, "notebook", "time"], rows)


def _findings_block(title: str, findings: list[Finding], empty: str) -> str:
    if not findings:
        return f"<h3>{_esc(title)}</h3><p class='ra-muted'>{_esc(empty)}</p>"
    ordered = sorted(findings, key=lambda f: (Severity(f.severity).rank, f.section, f.id))
    return f"<h3>{_esc(title)} ({len(findings)})</h3>" + "".join(finding_html(f) for f in ordered)


def _waivers_html(doc: dict[str, Any]) -> str:
    waivers = doc.get("waivers", [])
    attestations = doc.get("attestations", [])
    parts = ["<h3>Waivers</h3>"]
    if waivers:
        parts.append(
            grid_html(
                ["check", "state", "justification", "expires", "approved by"],
                [
                    [_esc(w[key]) for key in ("check", "state", "justification", "expires", "approved_by")]
                    for w in waivers
                ],
            )
        )
    else:
        parts.append("<p class='ra-muted'>No waivers.</p>")
    parts.append("<h3>Attestations</h3>")
    if attestations:
        parts.append(
            grid_html(
                ["check", "state", "source", "by", "date", "evidence", "note"],
                [
                    [
                        *(_esc(a.get(key)) for key in ("check", "state", "source", "by", "date")),
                        f"<code>{_esc(a['evidence_url'])}</code>",
                        _esc(a["note"]),
                    ]
                    for a in attestations
                ],
            )
        )
    else:
        parts.append("<p class='ra-muted'>No attestations.</p>")
    return "".join(parts)


def _banner_html(doc: dict[str, Any]) -> str:
    """Says loudly what a partial or incomplete run did not evaluate: such a run is never a pass."""
    missing = judgement.not_evaluated_text(doc)
    if doc.get("completeness", {}).get("complete", False) or not missing:
        return ""
    kind = "incomplete" if doc.get("verdict") == "incomplete" else "partial"
    headline = {"incomplete": "Incomplete audit", "partial": "Partial audit"}[kind]
    return (
        f'<div class="ra-banner ra-banner-{kind}"><p><strong>{headline} — not a pass.</strong> '
        f"Not evaluated: {_esc(missing)}.</p></div>"
    )


def _summary_html(doc: dict[str, Any], findings: list[Finding], run_dir: Path, allowed_signers: Path | None) -> str:
    verdict = doc["verdict"]
    signoff = _optional_html("recsys_audit.signoff", "signoff_block_html", run_dir)
    since_last = _optional_html("recsys_audit.diff", "since_last_audit_html", run_dir, allowed_signers=allowed_signers)
    by_status = {status: [f for f in findings if f.status == status] for status in Status}
    return "".join(
        [
            f"<h1>Production-readiness audit — {_esc(doc['env'])}</h1>",
            f'<p><span class="ra-verdict ra-verdict-{_esc(verdict)}">{_esc(verdict)}</span>',
            f'<span class="ra-score">score {_esc(judgement.score_text(doc))}</span>',
            f' <span class="ra-muted">exit code {doc["exit_code"]}</span></p>',
            _banner_html(doc),
            _meta_html(doc),
            '<h2 id="signoff">Sign-off</h2>',
            f'<div class="ra-signoff">{signoff or "<p><strong>Not signed.</strong></p>"}</div>',
            f'<h2 id="since-last">Since the last audit</h2>{since_last}' if since_last else "",
            '<h2 id="sections">Sections</h2>',
            _sections_html(doc),
            '<h2 id="findings">Findings that need attention</h2>',
            _findings_block("Failing", by_status[Status.FAIL], "No failing checks."),
            _findings_block("Not evaluated", by_status[Status.ERROR], "Every check was evaluated."),
            _findings_block("Warnings", by_status[Status.WARN], "No warnings."),
            _findings_block("Awaiting attestation", by_status[Status.MANUAL], "No manual checks left open."),
            '<h2 id="waivers">Waivers and attestations</h2>',
            _waivers_html(doc),
        ]
    )


def _section_html(
    section: dict[str, Any], findings: list[Finding], run_dir: Path, renderer: Callable[[], NotebookRenderer]
) -> str:
    number = section["number"]
    notebook = run_dir / "notebooks" / f"{section['notebook']}.ipynb"
    if notebook.is_file():
        body = f'<div class="ra-notebook">{renderer().render(notebook)}</div>'
    else:
        body = "<p class='ra-muted'>The notebook did not run; see the findings above.</p>"
    return (
        f'<section class="ra-section" id="section-{number}"><h2>{number}. {_esc(section["title"])}</h2>'
        f"{findings_table_html([f for f in findings if f.section == number])}{body}</section>"
    )


def report_html(run_dir: Path, allowed_signers: Path | None = None) -> str:
    """The whole report page for a run directory (reads findings.json and notebooks/*.ipynb only). "Since the last
    audit" compares with the newest earlier run whose sign-off verifies with ``allowed_signers`` (default: the one
    the run's params name)."""
    run = judgement.read_judged_run(run_dir)
    doc, findings = run.document, run.findings
    renderer = functools.cache(NotebookRenderer)  # created on the first notebook, then shared
    css = (ASSETS / "report.css").read_text(encoding="utf-8")
    try:
        from pygments.formatters import HtmlFormatter

        css += HtmlFormatter(style="default").get_style_defs(".highlight")
    except ImportError:  # pragma: no cover - pygments comes with nbconvert
        pass
    sections = "".join(_section_html(s, findings, run_dir, renderer) for s in doc.get("sections", []))
    title = f"recsys-audit — {doc['env']} — {doc['verdict']} — {doc['started_at']}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_esc(title)}</title><style>{css}</style></head><body>"
        f"<main>{_summary_html(doc, findings, run_dir, allowed_signers)}{sections}</main>"
        f"<footer class='ra-muted'><p>recsys-audit {_esc(doc['kit_version'])} · run {_esc(run_dir.name)}</p></footer>"
        "</body></html>\n"
    )


def render_report(run_dir: Path, allowed_signers: Path | None = None) -> Path:
    """(Re-)render ``run_dir/report.html`` from the run directory's files; returns its path."""
    run_dir = Path(run_dir)
    path = run_dir / REPORT_FILE
    temporary = path.with_suffix(".html.tmp")
    temporary.write_text(report_html(run_dir, allowed_signers), encoding="utf-8")
    os.replace(temporary, path)
    return path
