"""What a section notebook shows: the audited target, each finding as it is recorded, and the section's summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from recsys_audit.catalog import Section
from recsys_audit.findings import Finding
from recsys_audit.params import Params
from recsys_audit.redaction import redact_text
from recsys_audit.render.components import STATUS_ORDER, badge, esc, findings_table_html


def section_header_html(section: Section, params: Params, env: str, run_dir: Path) -> str:
    """A static table of the section's environment, target and configured probes; secrets show as configured only.
    (The notebook's own title is its heading; the report hides this table, whose facts it shows once.)"""

    def configured(value: object) -> str:
        return "configured" if value else "not configured"

    rows = [
        ("environment", env),
        ("params", str(params.source or "")),
        ("target", params.target.base_url + (" (production rules)" if params.target.production else "")),
        ("metrics", params.resolved_metrics_url),
        ("prometheus", params.prometheus.url or "not configured"),
        ("database", configured(params.database.dsn)),
        ("manifests", params.manifests.template or "not configured"),
        ("config sources", ", ".join(f"{s.kind}: {s.path}" for s in params.config_sources) or "none"),
        ("checks", f"{len(section.checks)} in section {section.number} ({section.title})"),
        ("run directory", str(run_dir)),
    ]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(redact_text(v))}</td></tr>" for k, v in rows)
    return f'<table class="ra-table ra-section-header ra-kv">{body}</table>'


def section_summary_html(section: Section, findings: Sequence[Finding]) -> str:
    """The section's findings by status, then one row per finding."""
    counts = " ".join(f"{badge(s)}&nbsp;{n}" for s in STATUS_ORDER if (n := sum(f.status == s for f in findings)))
    return (
        f'<div class="ra-summary-table"><p><strong>Section {section.number} summary:</strong> {counts or "no findings"}'
        f"</p>{findings_table_html(list(findings))}</div>"
    )
