"""The rendering layer on small inputs: evidence as a reviewer reads it, charts that never draw an empty axis, a
report that puts triage first, JUnit grouped by checklist item, and imports that go one way."""

from __future__ import annotations

import ast
import datetime as dt
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import nbformat
import pytest
from run_fixtures import build_run, write_params
from test_signoff import STATUSES

from recsys_audit.findings import Finding, Severity, Status, append_finding, read_findings
from recsys_audit.junit import junit_xml
from recsys_audit.render import plots
from recsys_audit.render.components import evidence_html, table_html
from recsys_audit.render.report import render_report

PACKAGE = Path(__file__).resolve().parents[1] / "recsys_audit"


def finding(check_id: str, status: str = "pass", **evidence: Any) -> Finding:
    return Finding(
        id=check_id, section=0, title=f"title of {check_id}", severity=Severity.MEDIUM, status=Status(status),
        summary=f"{check_id} is {status}", evidence=evidence, remediation="Fix it.", reference="", duration_s=0.01,
        items=["0.serving-mode-per-tenant"],
    )  # fmt: skip


# --- evidence ----------------------------------------------------------------------------------------------------


def test_evidence_keeps_the_checks_order_and_hides_what_is_empty() -> None:
    rows = [
        {"table": "audit_log", "rls": False, "forced": False, "owner": "app", "policies": 0, "note": None},
        {"table": "item_tags", "rls": True, "forced": False, "owner": "app", "policies": 1, "note": ""},
    ]
    page = evidence_html({"policy_max_age_days": 2, "absent": [], "missing": None, "tables": rows, "blank": ""})
    headers = page.split("<thead>", 1)[1].split("</thead>", 1)[0]
    assert headers == "<tr><th>table</th><th>rls</th><th>forced</th><th>owner</th><th>policies</th></tr>"
    assert '<span class="ra-fact"><strong>policy_max_age_days</strong> <code>2</code></span>' in page  # inline
    assert "absent" not in page and "missing" not in page and "blank" not in page and "note" not in page
    assert '<div class="ra-scroll" style="overflow-x:auto"><table' in page  # wide tables scroll in their own box


def test_evidence_values_tables_then_long_text_all_escaped() -> None:
    query = (
        "SELECT c.relname AS table, c.relrowsecurity AS rls FROM pg_class c WHERE c.relname = ANY(%s) -- " + "x" * 40
    )
    page = evidence_html(
        {
            "sql": query,
            "status_codes": {"200": 20, "503": 1},
            "roles": ["viewer", "admin"],
            "by_table": {"exposure_events": {"rows": 3}, "interaction_events": {"rows": 5}},
            "echo": "<script>alert(1)</script>",
        }
    )
    assert "<code>200: 20, 503: 1</code>" in page and "<code>viewer, admin</code>" in page
    assert page.index("exposure_events") < page.index("<pre")  # records before the long query
    assert "<th>name</th><th>rows</th>" in page  # a mapping of records is a table too
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page


def test_long_tables_say_where_the_rest_is() -> None:
    page = table_html([{"n": i} for i in range(55)])
    assert page.count("<tr>") == 51 and "5 more rows in findings.json" in page


def test_recorded_evidence_keeps_its_order(tmp_path: Path) -> None:
    path = tmp_path / "00.jsonl"
    append_finding(path, finding("a.check", rows=[{"tenant": "t", "surface": "s", "age_days": 1}], zeta=1, alpha=2))
    (recorded,) = read_findings(path)
    assert list(recorded.evidence) == ["rows", "zeta", "alpha"]
    assert list(recorded.evidence["rows"][0]) == ["tenant", "surface", "age_days"]


# --- charts ------------------------------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n"


def test_status_overview_counts_by_section_and_severity() -> None:
    findings = [finding("a", "fail"), finding("b", "pass"), finding("c", "warn")]
    chart = plots.status_overview(findings, [(0, "Serving mode"), (1, "Tenancy")])
    assert chart.drawn and chart.png.startswith(PNG) and chart.width == 1000
    assert chart.text == (
        "Checks by section and status: 0 Serving mode: 1 fail, 1 warn, 1 pass; 1 Tenancy: none. "
        "Needing attention, by severity: medium: 1 fail, 1 warn."
    )
    assert plots.status_overview(findings, [(0, "Serving mode"), (1, "Tenancy")]).png == chart.png  # reproducible
    assert not plots.status_overview([], []).drawn


def test_ages_at_zero_still_draw_against_the_policy() -> None:
    rows = [{"tenant": "demo", "surface": "home", "age_days": 0}, {"tenant": "demo", "surface": "pdp", "age_days": 0}]
    chart = plots.ages_against_policy(finding("serving.db-signals-fresh", signals=rows, policy_max_age_days=2))
    assert chart.drawn
    assert chart.text == (
        "Age of each newest signal day against the policy of 2 d: demo/home 0 d, demo/pdp 0 d — all within the policy."
    )


def test_ages_over_the_policy_and_unknown_ones_are_named() -> None:
    rows = [
        {"tenant": "acme", "surface": "home", "age_s": 7200},
        {"tenant": "acme", "surface": "pdp", "age_s": 93600},
        {"tenant": "acme", "surface": "cart", "age_s": None},
    ]
    chart = plots.ages_against_policy(finding("pipelines.manifest-fresh", "fail", manifests=rows, slo_s=86400))
    assert chart.drawn
    assert chart.text == (
        "Age of each manifest against the policy of 24 h: acme/home 2 h, acme/pdp 26 h — 1 over the policy: acme/pdp. "
        "Age unknown: acme/cart."
    )


@pytest.mark.parametrize(
    ("check", "evidence", "sentence"),
    [
        (
            "pipelines.manifest-fresh",
            {"manifests": [{"tenant": "a", "surface": "b", "age_s": None}]},
            "No manifest age",
        ),
        ("serving.db-signals-fresh", {}, "No newest signal day age to chart (skip: serving.db-signals-fresh is skip)."),
        ("obs.golden-signals", {"latency_p95_ms": 3}, "obs.golden-signals records no ages to chart."),
    ],
)
def test_too_little_to_draw_is_a_sentence(check: str, evidence: dict[str, Any], sentence: str) -> None:
    chart = plots.ages_against_policy(finding(check, "skip", **evidence))
    assert not chart.drawn and chart.text.startswith(sentence)
    assert chart.html() == f'<p class="ra-chart-note">{chart.text}</p>'


def test_latency_percentiles_against_the_slo() -> None:
    golden = finding("obs.golden-signals", latency_p50_ms=9.3, latency_p95_ms=300.0, latency_p99_ms=None,
                     slo_p95_ms=250)  # fmt: skip
    recorded = finding("perf.load-report-latency", latency_ms={"p50": 1.05, "p95": 11.42, "p99": 11.42})
    chart = plots.latency_percentiles([golden, recorded, finding("db.backups", latency_ms={"p95": 1})])
    assert chart.drawn
    assert chart.text == (
        "Latency percentiles against the p95 SLO of 250 ms — live traffic (Prometheus): p50 9.3 ms, p95 300 ms; "
        "recorded load test: p50 1.05 ms, p95 11.4 ms, p99 11.4 ms — p95 over the SLO: live traffic (Prometheus)."
    )
    empty = plots.latency_percentiles([finding("obs.golden-signals", "warn", latency_p95_ms="no data")])
    assert not empty.drawn and empty.text.startswith("No latency percentiles were recorded")


def test_partition_rows() -> None:
    partitions = [
        {"table": "exposure_events", "partition": "exposure_events_2026_11", "bound": "FOR VALUES …", "rows": 0},
        {"table": "exposure_events", "partition": "exposure_events_default", "bound": "DEFAULT", "rows": 200},
    ]
    chart = plots.partition_rows(finding("db.event-partitions-ahead", partitions=partitions))
    assert chart.drawn
    assert chart.text == (
        "Estimated rows per partition: exposure_events_2026_11 0, exposure_events_default 200 (default)."
    )
    for row in partitions:
        row["rows"] = 0
    empty = plots.partition_rows(finding("db.event-partitions-ahead", partitions=partitions))
    assert not empty.drawn and empty.text.startswith("Every one of the 2 partitions of the event tables is empty")


def test_run_trend_needs_two_runs() -> None:
    one = plots.run_trend("staging", [("20250301T100000Z", {"fail": 1, "warn": 2})])
    assert not one.drawn
    assert one.text == "1 audit(s) of staging so far (20250301T100000Z: 1 fail, 2 warn, 0 error): a trend needs two."
    two = plots.run_trend("staging", [("20250301T100000Z", {"fail": 1}), ("20250301T100000Z-2", {"warn": 3})])
    assert two.drawn and two.text.endswith("20250301T100000Z-2: 0 fail, 3 warn, 0 error.")
    assert plots.run_time("20250301T100000Z-2") == dt.datetime(2025, 3, 1, 10, 0, 0, 2000, tzinfo=dt.UTC)
    assert plots.run_time("latest") is None


def test_charts_leave_pyplot_and_the_backend_alone() -> None:
    """Drawing (and importing every check module) neither imports pyplot nor switches the backend a user chose."""
    script = (
        "import sys, matplotlib\n"
        "from recsys_audit import catalog\n"
        "from recsys_audit.render import plots, report\n"
        "catalog.sections()\n"
        "plots.run_trend('x', [('20250301T100000Z', {'fail': 1}), ('20250302T100000Z', {'fail': 2})])\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    env = {"MPLBACKEND": "svg", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.split() == ["svg", "False"], result.stderr


# --- the report --------------------------------------------------------------------------------------------------


def test_report_puts_triage_first(tmp_path: Path) -> None:
    params = write_params(
        tmp_path / "params",
        waivers=[{"check": "db.rls-enabled", "justification": "gateway rule", "approved_by": "ciso",
                  "expires": str(dt.date.today() + dt.timedelta(days=9))}],
    )  # fmt: skip
    run = build_run(tmp_path / "audits", params, "20250301T100000Z", {**STATUSES, "perf.pprof-off": "fail"})
    page = (run / "report.html").read_text()
    order = ["<h1>", 'class="ra-counts"', 'class="ra-table ra-triage"', 'class="ra-chart ra-overview"', 'id="run"',
             'id="signoff"', 'id="since-last"', 'id="evidence"', 'id="checklist-items"', 'id="waivers"',
             'id="section-1"']  # fmt: skip
    positions = [page.index(marker) for marker in order]
    assert positions == sorted(positions)
    triage = page.split('class="ra-table ra-triage"', 1)[1].split("</table>", 1)[0]
    linked = [part.split('"', 1)[0] for part in triage.split('<a href="#finding-')[1:]]
    # attention first: the critical failure, the medium one, then the waived warning, marked
    assert linked == ["auth.cross-tenant-admin", "perf.pprof-off", "db.rls-enabled"]
    assert "<em>waived</em> — db.rls-enabled is warn" in triage
    assert '<span class="ra-count"><span class="ra-severity ra-sev-critical"' in page  # counts by severity
    assert page.count('<details class="ra-card ') == 5 and "<details open" not in page  # evidence folded
    assert "2 check(s) await a reviewer's attestation" in page


def test_one_heading_per_section_from_the_notebook(tmp_path: Path) -> None:
    run = build_run(tmp_path / "audits", write_params(tmp_path / "params"), "20250301T100000Z", STATUSES)
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# 4) Database\n\nWhat the database shows."),
            nbformat.v4.new_markdown_cell("## Is RLS on?"),
            nbformat.v4.new_code_cell("chart()", outputs=[nbformat.v4.new_output(
                "display_data", {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})]),
        ]
    )  # fmt: skip
    nbformat.write(notebook, run / "notebooks" / "04_section.ipynb")
    page = render_report(run).read_text()
    section = page.split('id="section-4"', 1)[1].split("</section>", 1)[0]
    assert section.count("<h2>") == 1 and "<h2>4. Database</h2>" in section and "4) Database" not in section
    assert "What the database shows." in section and ">Is RLS on?</h3>" in section  # headings one level down
    assert 'alt="A figure without a recorded description, shown after: Is RLS on?"' in section


def test_junit_groups_a_section_by_checklist_item() -> None:
    def entry(check_id: str, items: list[str]) -> dict[str, Any]:
        return {**finding(check_id).to_dict(), "section": 1, "items": items}

    document = {
        "env": "staging", "started_at": "2025-03-01T10:00:00+00:00", "verdict": "pass", "exit_code": 0,
        "sections": [{"number": 1, "title": "Tenancy", "notebook": "01_tenancy"}], "completeness": {},
        "findings": [entry("b.rbac", ["1.rbac-admin"]), entry("a.dev", ["1.dev-auth-disabled", "1.auth-mechanism"]),
                     entry("c.jwt", ["1.jwt"]), entry("d.none", [])],
    }  # fmt: skip
    suite = junit_xml(document).getroot().find("testsuite[@name='1 Tenancy']")
    cases = [(c.get("classname"), c.get("name").split(":")[0]) for c in suite.findall("testcase")]
    assert cases == [("1.jwt", "c.jwt"), ("1.dev-auth-disabled", "a.dev"), ("1.rbac-admin", "b.rbac"),
                     ("01_tenancy", "d.none")]  # fmt: skip
    items = suite.find("testcase[@classname='1.dev-auth-disabled']/properties/property[@name='checklist_items']")
    assert items.get("value") == "1.dev-auth-disabled 1.auth-mechanism"
    assert ET.tostring(suite).count(b"<properties>") == 3  # no property without items


# --- imports go one way ------------------------------------------------------------------------------------------

WRITERS = {
    "recsys_audit.outputs",
    "recsys_audit.run",
    "recsys_audit.signoff",
    "recsys_audit.signoff_cli",
    "recsys_audit.notebook",
    "recsys_audit.widgets",
}  # fmt: skip  (outputs writes the report for run and sign-off; run renders each notebook as it ends)


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("recsys_audit")}


def test_the_rendering_layer_imports_the_domain_one_way() -> None:
    modules = {_module(path): path for path in PACKAGE.rglob("*.py")}
    importers = {
        name
        for name, path in modules.items()
        if not name.startswith("recsys_audit.render") and any(i.startswith("recsys_audit.render") for i in
                                                              _imports(path, top_level_only=False))
    }  # fmt: skip
    assert importers == WRITERS  # only the steps that write an output call the renderer
    for name, path in modules.items():
        if name.startswith("recsys_audit.render"):
            assert "importlib" not in path.read_text(encoding="utf-8"), name  # nothing imported by name
    # and no module imports its way back to itself
    graph = {name: {i for i in _imports(path, top_level_only=True) if i in modules} for name, path in modules.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(m == goal or (m not in seen and not seen.add(m) and reaches(m, goal, seen)) for m in graph[start])

    assert [name for name in graph if reaches(name, name, set())] == []


def test_findings_json_of_a_run_is_all_the_report_reads(tmp_path: Path) -> None:
    run = build_run(tmp_path / "audits", write_params(tmp_path / "params"), "20250301T100000Z", STATUSES)
    document = json.loads((run / "findings.json").read_text())
    failing = next(f for f in document["findings"] if f["status"] == "fail")
    failing["summary"] = "changed in findings.json"
    (run / "findings.json").write_text(json.dumps(document))
    assert "changed in findings.json" in render_report(run).read_text()
