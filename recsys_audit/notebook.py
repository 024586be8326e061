"""The notebook side of an audit: open a section, run its checks one by one, record and show each finding.

The same code runs under the runner (papermill passes ``env``, ``params_path`` and ``run_dir``) and by hand in
JupyterLab (defaults: ``params/local.yaml`` and a temporary run directory).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from recsys_audit.catalog import Check, CheckFunction, Section, section_by_number
from recsys_audit.context import AuditContext
from recsys_audit.findings import Finding, Outcome, append_finding, errored
from recsys_audit.params import ParamsError, load_params
from recsys_audit.probes import ProbeError
from recsys_audit.redaction import describe_exception, redact_outcome
from recsys_audit.render.components import finding_html
from recsys_audit.render.notebook import section_header_html, section_summary_html


def find_params(env: str, params_path: str = "") -> Path:
    """``params_path`` if given, else ``params/<env>.yaml`` in the nearest folder above the working directory."""
    if params_path:
        return Path(params_path)
    for folder in [Path.cwd(), *Path.cwd().parents]:
        candidate = folder / "params" / f"{env}.yaml"
        if candidate.is_file():
            return candidate
    return Path("params") / f"{env}.yaml"


def _show(html_text: str) -> None:
    try:
        from IPython.display import HTML, display

        display(HTML(html_text))
    except ImportError:  # pragma: no cover - outside IPython
        print(html_text)


class SectionRun:
    """One section's checks in one kernel; findings go to ``run_dir/findings/<notebook>.jsonl`` at once."""

    def __init__(self, section: Section, context: AuditContext, env: str) -> None:
        self.section = section
        self.ctx = context
        self.env = env
        self.findings_path = context.run_dir / "findings" / f"{section.notebook}.jsonl"
        self.findings: list[Finding] = []

    def evaluate(self, check: Check) -> Finding:
        started = time.perf_counter()
        try:
            outcome = check.function(self.ctx)
            if not isinstance(outcome, Outcome):
                outcome = errored(f"check returned {type(outcome).__name__}, not an Outcome")
        except (ProbeError, ParamsError) as exc:
            outcome = errored((str(exc).strip().splitlines() or [type(exc).__name__])[0])
        except Exception as exc:  # a check bug must not stop the section: it is an error finding
            outcome = errored(describe_exception(exc))
        outcome = redact_outcome(outcome)  # before anything is shown or written
        finding = Finding(
            id=check.id,
            section=check.section,
            title=check.title,
            severity=check.severity,
            status=outcome.status,
            summary=outcome.summary,
            evidence=outcome.evidence,
            remediation=check.remediation,
            reference=check.reference,
            duration_s=round(time.perf_counter() - started, 3),
            items=list(check.items),
            notebook=self.section.notebook,
        )
        append_finding(self.findings_path, finding)
        self.findings = [f for f in self.findings if f.id != finding.id] + [finding]
        return finding

    def run(self, check: str | CheckFunction) -> Finding:
        """Evaluate one check (by id or function), record its finding and show it."""
        check_id = check if isinstance(check, str) else check.check_id  # type: ignore[attr-defined]
        finding = self.evaluate(self.section.checks[check_id])
        _show(finding_html(finding))
        return finding

    def run_remaining(self) -> None:
        """Evaluate every check of the section not run yet (keeps the notebook complete by construction)."""
        done = {f.id for f in self.findings}
        for check_id in self.section.checks:
            if check_id not in done:
                self.run(check_id)

    def header(self) -> None:
        """Show what this section audits: environment, target and the configured probes (no secret values)."""
        _show(section_header_html(self.section, self.ctx.params, self.env, self.ctx.run_dir))

    def summary(self) -> None:
        _show(section_summary_html(self.section, self.findings))


def open_section(
    number: int, env: str = "local", params_path: str = "", run_dir: str = "", *, section: Section | None = None
) -> SectionRun:
    """Load the params and open section ``number`` (or a given ``section``) for this environment."""
    params = load_params(find_params(env, params_path))
    folder = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix=f"recsys-audit-{env}-"))
    folder.mkdir(parents=True, exist_ok=True)
    return SectionRun(section or section_by_number(number), AuditContext(params, folder), env)
