"""The audit report: ONE self-contained HTML page rendered from the files of a run directory alone.

Triage first: the verdict with the severity and status counts, then one compact table of every failing, erroring and
warning finding (each linked to its evidence) and a chart of statuses by section and severity. Below come the run's
facts, the sign-off, what changed since the last signed audit, the evidence cards (folded), the checklist items with
their checks, waivers and attestations, and every section's executed notebook (code folded).

Nothing is loaded from outside: no scripts, no web fonts, images stay ``data:`` URIs, and a Content-Security-Policy
forbids the browser any request should a notebook output carry a remote reference. Print styles keep the colours,
unfold the evidence of what needs attention and leave the code out.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from recsys_audit import checklist, judgement, preflight
from recsys_audit.findings import Finding, Severity, Status, worst
from recsys_audit.lean_imports import skip_unused_format_checkers
from recsys_audit.render import plots
from recsys_audit.render.components import (
    ATTENTION,
    PROBLEMS,
    STATUS_ORDER,
    badge,
    check_anchor,
    esc,
    finding_anchor,
    finding_card,
    grid_html,
    ordered,
    severity_badge,
)
from recsys_audit.render.diff import since_last_audit
from recsys_audit.render.signoff import signoff_block_html, signoff_line_html
from recsys_audit.rundir import REPORT_FILE

ASSETS = Path(__file__).resolve().parent.parent / "report_assets"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src 'none'; script-src 'none'"
# Output types a static page cannot show; their text/html or text/plain fallback is kept instead.
DYNAMIC_MIME_TYPES = {
    "application/vnd.jupyter.widget-view+json",
    "application/vnd.jupyter.widget-state+json",
    "application/javascript",
    "text/javascript",
}
IMAGE_TYPES = {"image/png", "image/jpeg"}
SECTION_TEMPLATE = """{%- extends 'basic/index.html.j2' -%}
{% block input_group -%}
<details class="ra-code"><summary>code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
"""
_HEADING = re.compile(r"^(#{1,5}) ", re.MULTILINE)
EVIDENCE_GROUPS = (
    (Status.FAIL, "Failing", "No failing checks."),
    (Status.ERROR, "Not evaluated", "Every check was evaluated."),
    (Status.WARN, "Warnings", "No warnings."),
    (Status.MANUAL, "Awaiting attestation", "No manual checks left open."),
)


# --- notebooks -------------------------------------------------------------------------------------------------


def _for_the_report(notebook: Any) -> Any:
    """The notebook as the report shows it: widget views and scripts dropped (each output keeps its static
    fallback), the title left to the report's section heading, the notebook's headings one level down, and an image
    without alt text described by the prose it follows."""
    notebook.metadata.pop("widgets", None)
    titled, context = False, "the section's notebook"
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            source = cell.source.lstrip()
            if not titled and source.startswith("# "):
                source = source.split("\n", 1)[1] if "\n" in source else ""
            titled = True
            cell.source = _HEADING.sub(lambda m: "#" + m.group(1) + " ", source)
            context = next((line.strip("# ") for line in source.splitlines() if line.strip()), context)[:160]
            continue
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if "data" in output:
                for mime in DYNAMIC_MIME_TYPES & set(output["data"]):
                    del output["data"][mime]
                if not output["data"]:
                    continue
                for mime in IMAGE_TYPES & set(output["data"]):
                    described = output.setdefault("metadata", {}).setdefault(mime, {})
                    described.setdefault("alt", f"A figure without a recorded description, shown after: {context}")
            kept.append(output)
        cell.outputs = kept
    return notebook


def _lean_html_exporter(**options: Any) -> Any:
    """nbconvert's HTML exporter without its last step, which parses the whole page again with BeautifulSoup to give
    images without alt text a placeholder and JupyterLab cells a tab stop: more than half of the export's time. The
    report gives every image its alt text itself (:func:`_for_the_report`) and the basic template has no such cells."""
    from nbconvert import HTMLExporter
    from nbconvert.exporters.html import WidgetsDataTypeFilter
    from nbconvert.exporters.templateexporter import TemplateExporter
    from nbconvert.filters.highlight import Highlight2HTML

    class LeanHTMLExporter(HTMLExporter):
        def from_notebook_node(self, nb: Any, resources: Any = None, **kw: Any) -> tuple[str, dict[str, Any]]:
            # HTMLExporter.from_notebook_node up to its BeautifulSoup pass
            language = nb.metadata.get("language_info", {})
            lexer = language.get("pygments_lexer", language.get("name"))
            self.register_filter(
                "highlight_code", self.filters.get("highlight_code", Highlight2HTML(pygments_lexer=lexer, parent=self))
            )
            resources = self._init_resources(resources)
            self.register_filter(
                "filter_data_type",
                WidgetsDataTypeFilter(notebook_metadata=self._nb_metadata, parent=self, resources=resources),
            )
            return TemplateExporter.from_notebook_node(self, nb, resources, **kw)

    return LeanHTMLExporter(**options)


class NotebookRenderer:
    """One in-process nbconvert exporter (basic template, no page chrome) for all notebooks of a report."""

    def __init__(self) -> None:
        skip_unused_format_checkers()
        self.exporter = _lean_html_exporter(
            template_name="basic", raw_template=SECTION_TEMPLATE, exclude_input_prompt=True, exclude_anchor_links=True
        )

    def render(self, text: str) -> str:
        import nbformat

        notebook = _for_the_report(nbformat.reads(text, as_version=4))
        body, _ = self.exporter.from_notebook_node(notebook)
        return body


_renderer = functools.cache(NotebookRenderer)  # created for the first notebook, then shared
_rendered: OrderedDict[str, str] = OrderedDict()  # a notebook's SHA-256 -> its HTML, the newest few
RENDERED_KEPT = 32


def warm_up() -> None:
    """Build the notebook exporter and load the chart library (the runner calls it while the notebooks run)."""
    _renderer()
    plots.load_matplotlib()


def notebook_html(path: Path) -> str:
    """A section's executed notebook as the report shows it. The same content is rendered once per process: the
    runner renders each notebook as it ends, while the others still run, and the report then finds it done."""
    data = path.read_bytes()
    key = hashlib.sha256(data).hexdigest()
    if key not in _rendered:
        _rendered[key] = _renderer().render(data.decode("utf-8"))
        while len(_rendered) > RENDERED_KEPT:
            _rendered.popitem(last=False)
    _rendered.move_to_end(key)
    return _rendered[key]


# --- the top: verdict, counts, what needs attention ---------------------------------------------------------------


def _attention(findings: list[Finding]) -> list[Finding]:
    """Every failing, erroring and warning finding, the waived ones last."""
    return sorted(ordered(f for f in findings if f.status in ATTENTION), key=lambda f: f.waived)


def _counts_html(findings: list[Finding]) -> str:
    open_findings = [f for f in findings if f.status in ATTENTION and not f.waived]
    severities = " ".join(
        f'<span class="ra-count">{severity_badge(s)} {n}</span>'
        for s in Severity
        if (n := sum(f.severity == s for f in open_findings))
    )
    statuses = " · ".join(f"{sum(f.status == s for f in findings)} {s}" for s in STATUS_ORDER)
    waived = sum(f.waived for f in findings)
    return (
        f'<p class="ra-counts"><strong>Open by severity:</strong> {severities or "none"}'
        f'<span class="ra-muted"> — {esc(statuses)}{f" · {waived} waived" if waived else ""}</span></p>'
    )


def _verdict_html(doc: dict[str, Any], run_dir: Path, since_headline: str) -> str:
    verdict = str(doc["verdict"])
    return (
        f'<p class="ra-verdict-line"><span class="ra-verdict ra-verdict-{esc(verdict)}">{esc(verdict)}</span>'
        f'<span class="ra-score">score {esc(judgement.score_text(doc))}</span>'
        f'<span class="ra-muted"> · exit code {doc["exit_code"]} · fail on {esc(doc.get("fail_on", ""))} and above · '
        f'{signoff_line_html(run_dir)} · <a href="#since-last">{esc(since_headline)}</a></span></p>'
    )


def _banner_html(doc: dict[str, Any]) -> str:
    """Says loudly what a partial or incomplete run did not evaluate: such a run is never a pass."""
    missing = judgement.not_evaluated_text(doc)
    if doc.get("completeness", {}).get("complete", False) or not missing:
        return ""
    kind = "incomplete" if doc.get("verdict") == "incomplete" else "partial"
    headline = {"incomplete": "Incomplete audit", "partial": "Partial audit"}[kind]
    errors = sum(finding.get("status") == Status.ERROR for finding in doc.get("findings", []))
    cause = preflight.root_cause(doc.get("connectivity") or [], errors)
    return (
        f'<div class="ra-banner ra-banner-{kind}"><p><strong>{headline} — not a pass.</strong> '
        f"Not evaluated: {esc(missing)}.</p>"
        + (f'<p class="ra-root-cause">Root cause: {esc(cause)}.</p>' if cause else "")
        + "</div>"
    )


def _item_cell(finding: Finding) -> str:
    if not finding.items:
        return ""
    more = f' <span class="ra-muted">+{len(finding.items) - 1}</span>' if len(finding.items) > 1 else ""
    return f'<span title="{esc(", ".join(finding.items))}">{esc(finding.items[0])}</span>{more}'


def _triage_html(findings: list[Finding], titles: dict[int, str]) -> str:
    attention = _attention(findings)
    manual = sum(f.status == Status.MANUAL for f in findings)
    awaiting = (
        f'<p class="ra-muted">{manual} check(s) await a reviewer\'s attestation: '
        '<a href="#evidence-manual">awaiting attestation</a>.</p>'
        if manual
        else ""
    )
    if not attention:
        return f'<p class="ra-all-clear">No failing, erroring or warning finding.</p>{awaiting}'
    rows = (
        [
            badge(f.status),
            severity_badge(f.severity),
            f'<a href="#{esc(finding_anchor(f.id))}">{esc(f.id)}</a>'
            f'<span class="ra-print-only"><br><small>{_item_cell(f)}</small></span>',
            f'<a href="#section-{f.section}" title="{esc(titles.get(f.section, ""))}">{f.section}</a>',
            _item_cell(f),
            f'<span class="ra-one-line" title="{esc(f.summary)}">{"<em>waived</em> — " if f.waived else ""}'
            f"{esc(f.summary)}</span>",
        ]
        for f in attention
    )
    headers = ["status", "severity", "check", "section", "checklist item", "summary"]
    return grid_html(headers, rows, "ra-table ra-triage") + awaiting


# --- the run, the checklist, waivers ------------------------------------------------------------------------------


def _run_html(doc: dict[str, Any]) -> str:
    facts = [
        ("environment", doc["env"]),
        ("target", doc.get("target", "")),
        (
            "run",
            f"{doc.get('run', '')} — {doc['started_at']} to {doc['finished_at']} ({doc.get('duration_s', 0):.1f} s)",
        ),
        ("kit version", doc["kit_version"]),
        ("judged on", doc.get("judged_on", "")),
        ("params", f"{doc.get('params_file', '')} (merged copy params.yaml, sha256 {doc['params_sha256'][:16]}…)"),
    ]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    return f'<table class="ra-kv">{table}</table>{_sections_html(doc)}'


def _sections_html(doc: dict[str, Any]) -> str:
    statuses = [str(s) for s in STATUS_ORDER]
    runs = {run["name"]: run for run in doc.get("notebooks", [])}
    rows = []
    for section in doc.get("sections", []):
        counts = doc["counts"]["by_section"].get(str(section["number"]), {})
        run = runs.get(section["notebook"], {})
        rows.append(
            [
                f'<a href="#section-{section["number"]}">{section["number"]}. {esc(section["title"])}</a>',
                *(
                    f'<span class="{"ra-count-zero" if not counts.get(s) else ""}">{counts.get(s, 0)}</span>'
                    for s in statuses
                ),
                esc(run.get("status", "not run")) + (f" — {esc(run['error'])}" if run.get("error") else ""),
                f"{run.get('seconds', 0):.1f} s",
            ]
        )
    for section in doc.get("sections_not_run", []):
        title = f"{section['number']}. {esc(section['title'])}"
        rows.append([title, *("—" for _ in statuses), "<strong>not run</strong> (--sections)", ""])
    return grid_html(["section", *statuses, "notebook", "time"], rows, "ra-table ra-sections")


def _check_link(finding: Finding) -> str:
    """A finding's badge and id, linked to its evidence card (a problem) or to its place in its section notebook."""
    target = finding_anchor(finding.id) if finding.status in PROBLEMS else check_anchor(finding.id)
    return f'<span class="ra-check">{badge(finding.status)} <a href="#{esc(target)}">{esc(finding.id)}</a></span>'


def _checklist_html(findings: list[Finding]) -> str:
    """Every checklist item the run gave evidence for, with its checks: the findings grouped by item."""
    known = checklist.checklist()
    by_item: dict[str, list[Finding]] = {}
    for finding in findings:
        for item in finding.items:
            by_item.setdefault(item, []).append(finding)
    order = [i for i in known if i in by_item] + sorted(i for i in by_item if i not in known)
    rows = []
    for item in order:
        covering = ordered(by_item[item])
        text = known[item].text if item in known else ""
        rows.append(
            [badge(worst(*(f.status for f in covering))), esc(item), esc(text), " ".join(map(_check_link, covering))]
        )
    failing = sum(any(f.status == Status.FAIL for f in by_item[i]) for i in order)
    table = grid_html(["worst", "item", "what the checklist asks", "checks"], rows, "ra-table ra-checklist")
    return (
        f'<details class="ra-fold" id="checklist"><summary>{len(order)} checklist items, {failing} with a failing '
        f"check</summary>{table}</details>"
    )


def _waivers_html(doc: dict[str, Any]) -> str:
    waivers, attestations = doc.get("waivers", []), doc.get("attestations", [])
    parts = []
    if waivers:
        keys = ("check", "state", "justification", "expires", "approved_by")
        parts.append(
            "<h3>Waivers</h3>"
            + grid_html(
                ["check", "state", "justification", "expires", "approved by"],
                ([esc(w[key]) for key in keys] for w in waivers),
            )
        )
    if attestations:
        parts.append(
            "<h3>Attestations</h3>"
            + grid_html(
                ["check", "state", "source", "by", "date", "evidence", "note"],
                (
                    [
                        *(esc(a.get(key)) for key in ("check", "state", "source", "by", "date")),
                        f"<code>{esc(a['evidence_url'])}</code>",
                        esc(a["note"]),
                    ]
                    for a in attestations
                ),
            )
        )
    if not parts:
        return '<p class="ra-muted">No waivers and no attestations in the params.</p>'
    return "".join(parts)


def _evidence_html(findings: list[Finding]) -> str:
    parts = []
    for status, title, empty in EVIDENCE_GROUPS:
        group = ordered(f for f in findings if f.status == status)
        heading = f'<h3 id="evidence-{status}">{esc(title)} ({len(group)})</h3>'
        body = "".join(finding_card(f) for f in group) if group else f'<p class="ra-muted">{esc(empty)}</p>'
        parts.append(heading + body)
    return "".join(parts)


# --- sections ------------------------------------------------------------------------------------------------------


def _section_html(section: dict[str, Any], findings: list[Finding], run_dir: Path) -> str:
    number = section["number"]
    notebook = run_dir / "notebooks" / f"{section['notebook']}.ipynb"
    if notebook.is_file():
        body = f'<div class="ra-notebook">{notebook_html(notebook)}</div>'
    else:
        body = "<p class='ra-muted'>The notebook did not run; see the findings above.</p>"
    mine = [f for f in findings if f.section == number]
    counts = " ".join(f"{badge(s)}&nbsp;{n}" for s in STATUS_ORDER if (n := sum(f.status == s for f in mine)))
    return (
        f'<section class="ra-section" id="section-{number}"><h2>{number}. {esc(section["title"])}</h2>'
        f'<p class="ra-section-counts">{counts}</p>{body}</section>'
    )


# --- the page ----------------------------------------------------------------------------------------------------


def stylesheet() -> str:
    """The report's stylesheet (also the archive page's)."""
    css = (ASSETS / "report.css").read_text(encoding="utf-8")
    try:
        from pygments.formatters import HtmlFormatter

        css += HtmlFormatter(style="default").get_style_defs(".highlight")
    except ImportError:  # pragma: no cover - pygments comes with nbconvert
        pass
    return css


def page(title: str, body: str, css: str | None = None) -> str:
    """A complete offline page: the stylesheet inline and a Content-Security-Policy that allows no request."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{stylesheet() if css is None else css}</style></head><body>"
        f"{body}</body></html>\n"
    )


def report_html(run_dir: Path, allowed_signers: Path | None = None) -> str:
    """The whole report page for a run directory (reads findings.json, signoff.json and notebooks/*.ipynb only).
    "Since the last audit" compares with the newest earlier run whose sign-off verifies with ``allowed_signers``
    (default: the one the run's params name)."""
    run_dir = Path(run_dir)
    run = judgement.read_judged_run(run_dir)
    doc, findings = run.document, run.findings
    titles = {int(s["number"]): str(s["title"]) for s in doc.get("sections", [])}
    since = since_last_audit(run_dir, allowed_signers)
    overview = plots.status_overview(findings, sorted(titles.items()))
    sections = "".join(_section_html(s, findings, run_dir) for s in doc.get("sections", []))
    print_note = (
        '<p class="ra-print-only ra-muted">The section notebooks — each question, its probe and the evidence of every '
        "check — follow in the HTML report and are in notebooks/ of the run directory; print leaves them out.</p>"
    )
    attention = _attention(findings)
    summary = "".join(
        [
            f"<header><h1>Production-readiness audit — {esc(doc['env'])}</h1>",
            _verdict_html(doc, run_dir, since.headline),
            _banner_html(doc),
            _counts_html(findings),
            "</header>",
            f'<h2 id="attention">Needs attention ({len(attention)})</h2>',
            _triage_html(findings, titles),
            overview.html("ra-chart ra-overview"),
            '<h2 id="run">Run</h2>',
            _run_html(doc),
            '<h2 id="signoff">Sign-off</h2>',
            f'<div class="ra-signoff">{signoff_block_html(run_dir)}</div>',
            f'<h2 id="since-last">Since the last audit</h2>{since.html}',
            '<h2 id="evidence">Evidence</h2>',
            _evidence_html(findings),
            '<h2 id="checklist-items">Checklist items</h2>',
            _checklist_html(findings),
            '<h2 id="waivers">Waivers and attestations</h2>',
            _waivers_html(doc),
            print_note,
        ]
    )
    footer = (
        f"<footer class='ra-muted'><p>recsys-audit {esc(doc['kit_version'])} · run {esc(run_dir.name)}</p></footer>"
    )
    title = f"recsys-audit — {doc['env']} — {doc['verdict']} — {doc['started_at']}"
    return page(title, f"<main>{summary}{sections}</main>{footer}")


def render_report(run_dir: Path, allowed_signers: Path | None = None) -> Path:
    """(Re-)render ``run_dir/report.html`` from the run directory's files; returns its path."""
    run_dir = Path(run_dir)
    path = run_dir / REPORT_FILE
    temporary = path.with_suffix(".html.tmp")
    temporary.write_text(report_html(run_dir, allowed_signers), encoding="utf-8")
    os.replace(temporary, path)
    return path
