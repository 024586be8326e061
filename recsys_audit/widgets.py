"""JupyterLab review desk: an environment and run picker, a findings explorer (with pandas DataFrames of the
findings and their evidence), the comparison with the last signed audit and a sign-off form.

In a live frontend they are interactive ipywidgets. Executed headless (papermill, nbconvert), a widget cannot render,
so :func:`show` also displays a static HTML table, and the widget's plain-text fallback says what it is.
Findings are shown as the run was judged (:mod:`recsys_audit.judgement`: at the run, or at its sign-off), exactly as
in its findings.json and report. The sign-off form calls :func:`recsys_audit.signoff.sign_run`, exactly as
``recsys-audit sign`` does.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w
import pandas as pd

from recsys_audit import storage
from recsys_audit.findings import Finding, Severity, Status
from recsys_audit.judgement import DECISIONS, JudgedRun, read_judged_run, score_text
from recsys_audit.params import expand_user
from recsys_audit.render import plots
from recsys_audit.render.components import STATUS_ORDER, esc, finding_card, findings_table_html, grid_html, ordered
from recsys_audit.render.diff import since_last_audit_html
from recsys_audit.rundir import SIGNATURE_FILE, RunDirError, load_recorded_params
from recsys_audit.signoff import SignoffError, trusted_signers, verify_run

ALL = "all"


def live_frontend() -> bool:
    """True inside a kernel driven by an interactive frontend (it allows stdin; papermill/nbclient do not)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    return bool(kernel is not None and getattr(kernel, "_allow_stdin", False))


def show(widget: w.Widget, static_html: str, label: str) -> None:
    """Display a widget; outside a live frontend also display its static HTML equivalent."""
    from IPython.display import HTML, display

    bundle = widget._repr_mimebundle_()
    bundle["text/plain"] = f"[{label}: interactive in JupyterLab]"
    display(bundle, raw=True)
    if not live_frontend():
        display(HTML(static_html))


def find_folder(name: str, start: Path | None = None) -> Path:
    """``name`` in the working directory or the nearest parent that has it (notebooks run from notebooks/)."""
    start = start or Path.cwd()
    for folder in [start, *start.parents]:
        if (folder / name).is_dir():
            return folder / name
    return start / name


# --- environment and run picker --------------------------------------------------------------------------------


def list_environments(params_dir: Path, audits_dir: Path | str) -> list[str]:
    """Environments with a params file (examples excluded) or with audits (a folder or s3://…)."""
    from_params = {p.stem for p in params_dir.glob("*.yaml") if not p.name.endswith(".example.yaml")}
    try:
        from_audits = set(storage.open_store(audits_dir).environments())
    except storage.StoreError:
        from_audits = set()
    return sorted(from_params | from_audits)


def list_runs(audits_dir: Path | str, env: str) -> list[str]:
    """Where the runs of an environment are (folders, or s3:// locations), newest first (never through a symlink)."""
    store = storage.open_store(audits_dir)
    try:
        return [store.run_location(env, run) for run in store.runs(env)]
    except storage.StoreError:
        return []


def newest_environment(audits_dir: Path | str, environments: list[str]) -> str | None:
    """Of ``environments``, the one with the newest audit (run ids are UTC start times); None when none has one."""
    store = storage.open_store(audits_dir)
    newest: list[tuple[str, str]] = []
    for env in environments:
        try:
            runs = store.runs(env)
        except storage.StoreError:
            continue
        if runs:
            newest.append((runs[0], env))
    return max(newest)[1] if newest else None


def _run_label(location: str | Path) -> str:
    if storage.is_remote(location):
        return f"{str(location).rsplit('/', 1)[-1]} — in {str(location).rsplit('/', 2)[0]}"
    run_dir = Path(location)
    try:
        verdict = read_judged_run(run_dir).verdict
    except RunDirError:
        verdict = "unreadable"
    signed = "signature present" if os.path.lexists(run_dir / SIGNATURE_FILE) else "unsigned"
    return f"{run_dir.name} — {verdict}, {signed}"


class EnvironmentPicker:
    """Pick an environment, then one of its audit runs; it opens on the newest run of the environment with the
    newest audit (or of ``env`` when given)."""

    def __init__(self, params_dir: Path, audits_dir: Path | str, env: str = "") -> None:
        self.audits_dir = audits_dir if storage.is_remote(audits_dir) else Path(audits_dir)
        environments = list_environments(Path(params_dir), self.audits_dir)
        initial = env if env in environments else newest_environment(self.audits_dir, environments)
        if initial is None and environments:
            initial = environments[0]
        self.env = w.Dropdown(options=environments, value=initial, description="Environment")
        self.run = w.Dropdown(options=[], description="Run", layout=w.Layout(width="480px"))
        self.widget = w.VBox([self.env, self.run])
        self._callbacks: list[Callable[[Path], Any]] = []
        self.env.observe(lambda _: self._refresh_runs(), names="value")
        self.run.observe(lambda _: self._notify(), names="value")
        self._refresh_runs()

    def _refresh_runs(self) -> None:
        runs = [_location(r) for r in list_runs(self.audits_dir, self.env.value)] if self.env.value else []
        self.run.options = [(_run_label(r), r) for r in runs]
        self.run.value = runs[0] if runs else None

    def select(self, run_dir: Path | str) -> None:
        """Pick a given run (a folder or s3://…/ENV/RUN_ID; its environment is the name of its parent)."""
        location = _location(run_dir)
        env = location.rstrip("/").rsplit("/", 2)[-2] if storage.is_remote(location) else Path(location).parent.name
        if env in self.env.options:
            self.env.value = env
        if location not in [value for _, value in self.run.options]:
            self.run.options = [(_run_label(location), location), *self.run.options]
        self.run.value = location

    def _notify(self) -> None:
        run_dir = self.run_dir
        if run_dir is not None:
            for callback in self._callbacks:
                callback(run_dir)

    def on_pick(self, callback: Callable[[Path], Any]) -> None:
        """Call ``callback(run_dir)`` whenever another run is picked."""
        self._callbacks.append(callback)

    @property
    def run_dir(self) -> Path | None:
        """The picked run as a local run directory (a checked copy of a run in S3)."""
        return storage.local_copy(self.run.value) if self.run.value else None

    def static_html(self) -> str:
        rows = ([esc(env), esc(_run_label(run))] for env in self.env.options for run in list_runs(self.audits_dir, env))
        chosen = esc(self.run.value or "none")
        return f"<p>Selected run: <code>{chosen}</code></p>" + grid_html(["environment", "run"], rows)

    def show(self) -> None:
        show(self.widget, self.static_html(), "environment picker")


def _location(run: Path | str) -> str:
    return str(run) if storage.is_remote(run) else str(Path(run).resolve())


# --- findings explorer -----------------------------------------------------------------------------------------

FRAME_COLUMNS = ("id", "status", "severity", "section", "items", "title", "summary", "waived", "remediation")


def run_heading_html(run: JudgedRun) -> str:
    """The picked run in one block: environment, run id, verdict and score, and the chart of statuses by section."""
    doc = run.document
    sections = sorted((int(s["number"]), str(s["title"])) for s in doc.get("sections", []))
    return (
        f"<p><strong>{esc(run.env)}</strong> run <code>{esc(doc.get('run', run.run_dir.name))}</code>: "
        f"<strong>{esc(run.verdict)}</strong>, score {esc(score_text(doc))}</p>"
        + plots.status_overview(run.findings, sections).html()
    )


class FindingsExplorer:
    """A run's judged findings: filter by section, status and severity; pick one to see its evidence and
    remediation. :meth:`frame` and :meth:`evidence_frames` give the same data as pandas DataFrames."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.run: JudgedRun | None = None
        self.findings: list[Finding] = []
        self.heading = w.HTML()
        self.section = w.Dropdown(description="Section")
        self.status = w.Dropdown(options=[ALL, *[str(s) for s in Status]], value=ALL, description="Status")
        self.severity = w.Dropdown(options=[ALL, *[str(s) for s in Severity]], value=ALL, description="Severity")
        self.count = w.Label()
        self.table = w.HTML()
        self.choice = w.Select(description="Finding", rows=10, layout=w.Layout(width="95%"))
        self.detail = w.HTML()
        filters = w.HBox([self.section, self.status, self.severity])
        self.widget = w.VBox([self.heading, filters, self.count, self.choice, self.detail, self.table])
        for control in (self.section, self.status, self.severity):
            control.observe(lambda _: self.refresh(), names="value")
        self.choice.observe(lambda _: self._show_detail(), names="value")
        if run_dir is not None:
            self.load(run_dir)

    def load(self, run_dir: Path) -> None:
        """Show another run; the status and severity filters stay as they were."""
        self.run = read_judged_run(Path(run_dir))
        self.findings = ordered(self.run.findings)
        self.heading.value = run_heading_html(self.run)
        sections = sorted({f.section for f in self.findings})
        kept = self.section.value if self.section.value in [str(n) for n in sections] else ALL
        self.section.options = [(ALL, ALL)] + [(str(n), str(n)) for n in sections]
        self.section.value = kept
        self.refresh()

    def filtered(self) -> list[Finding]:
        return [
            f
            for f in self.findings
            if self.section.value in (ALL, str(f.section))
            and self.status.value in (ALL, str(f.status))
            and self.severity.value in (ALL, str(f.severity))
        ]

    def refresh(self) -> None:
        shown = self.filtered()
        self.count.value = f"{len(shown)} of {len(self.findings)} findings"
        self.table.value = findings_table_html(shown)
        chosen = self.choice.value
        self.choice.options = [(f"{f.status.upper():<6} {f.severity:<8} {f.id} — {f.title}", f.id) for f in shown]
        self.choice.value = chosen if chosen in {f.id for f in shown} else (shown[0].id if shown else None)
        self._show_detail()

    def choose(self, check_id: str) -> None:
        """Show one finding's evidence and remediation (as a click in the list does)."""
        self.choice.value = check_id

    def chosen(self) -> Finding | None:
        return next((f for f in self.findings if f.id == self.choice.value), None)

    def _show_detail(self) -> None:
        finding = self.chosen()
        self.detail.value = finding_card(finding, unfolded=True) if finding else ""

    def frame(self) -> pd.DataFrame:
        """The findings shown (filters applied), one row each; status and severity sort in their own order."""
        rows = [
            {**{key: getattr(f, key) for key in FRAME_COLUMNS if key != "items"}, "items": ", ".join(f.items)}
            for f in self.filtered()
        ]
        frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
        frame["status"] = pd.Categorical(frame["status"].astype(str), categories=[str(s) for s in STATUS_ORDER],
                                         ordered=True)  # fmt: skip
        frame["severity"] = pd.Categorical(frame["severity"].astype(str), categories=[str(s) for s in Severity],
                                           ordered=True)  # fmt: skip
        return frame.set_index("id")

    def evidence_frames(self, check_id: str | None = None) -> dict[str, pd.DataFrame]:
        """A finding's evidence (default: the one picked) as DataFrames: ``facts`` for the single values, and one
        per table of records."""
        finding = next((f for f in self.findings if f.id == (check_id or self.choice.value)), None)
        if finding is None:
            return {}
        frames: dict[str, pd.DataFrame] = {}
        facts = []
        for key, value in finding.evidence.items():
            if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
                frames[key] = pd.DataFrame(value)
            elif isinstance(value, dict) and value and all(isinstance(row, dict) for row in value.values()):
                frames[key] = pd.DataFrame.from_dict(value, orient="index")
            else:
                facts.append({"key": key, "value": value})
        return {"facts": pd.DataFrame(facts, columns=["key", "value"]), **frames}

    def static_html(self) -> str:
        finding = self.chosen()
        picked = ""
        if finding:
            picked = f"<p>Picked: <code>{esc(finding.id)}</code> (pick another in the list in JupyterLab)</p>"
            picked += self.detail.value
        return f"{self.heading.value}<p>{len(self.findings)} findings</p>{findings_table_html(self.findings)}{picked}"

    def show(self) -> None:
        show(self.widget, self.static_html(), "findings explorer")


# --- since the last signed audit ---------------------------------------------------------------------------------


class SinceLastAuditView:
    """The picked run compared with the previous signed audit of its environment (refreshed on every pick)."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.html = w.HTML()
        self.widget = w.VBox([self.html])
        if run_dir is not None:
            self.load(run_dir)

    def load(self, run_dir: Path) -> None:
        self.html.value = since_last_audit_html(Path(run_dir))

    def show(self) -> None:
        show(self.widget, self.html.value, "since the last signed audit")


# --- sign-off form ---------------------------------------------------------------------------------------------


class SignoffForm:
    """The fields of ``recsys-audit sign``; the button signs the run and shows the verification."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.run_dir = Path(run_dir) if run_dir else None
        self.reviewer = w.Text(description="Reviewer")
        self.role = w.Text(description="Role")
        self.decision = w.Dropdown(options=DECISIONS, value=DECISIONS[0], description="Decision")
        self.accept = w.Text(description="Accept", placeholder="approve-with-exceptions: every failing/erroring id")
        self.key = w.Text(description="Key", placeholder="Ed25519 private key, or KEY.pub held by ssh-agent")
        self.passphrase = w.Password(description="Passphrase", placeholder="only for a protected key file")
        self.signer = w.Text(description="Signer", placeholder="principal in allowed_signers (default: key comment)")
        self.allowed_signers = w.Text(description="Trusted", placeholder="allowed_signers (default: from params)")
        self.comment = w.Textarea(description="Comment")
        self.attest = w.Textarea(description="Attest", placeholder="CHECK_ID=URL@YYYY-MM-DD, one per line")
        self.replace = w.Checkbox(description="replace an existing sign-off", value=False)
        self.button = w.Button(description="Sign", button_style="primary")
        self.result = w.HTML()
        self.button.on_click(lambda _: self.submit())
        fields = [self.reviewer, self.role, self.decision, self.accept, self.key, self.passphrase, self.signer]
        fields += [self.allowed_signers, self.comment, self.attest, self.replace]
        self.widget = w.VBox([*fields, self.button, self.result])

    def load(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.result.value = ""

    def submit(self) -> dict[str, Any] | None:
        """Sign the run with the form's values; the outcome (or the one-line refusal) shows under the button."""
        if self.run_dir is None:
            self.result.value = "<p style='color:#cf222e'>Pick a run first.</p>"
            return None
        given = expand_user(self.allowed_signers.value) if self.allowed_signers.value.strip() else None
        try:
            record = storage.sign(
                self.run_dir,
                reviewer=self.reviewer.value,
                role=self.role.value,
                decision=self.decision.value,
                key_path=expand_user(self.key.value),
                signer=self.signer.value.strip() or None,
                accept=self.accept.value.replace(",", " ").split(),
                comment=self.comment.value,
                attest=[line.strip() for line in self.attest.value.splitlines() if line.strip()],
                allowed_signers=given,
                passphrase=self.passphrase.value or None,
                replace_existing=self.replace.value,
            )
        except SignoffError as exc:
            self.result.value = f"<p style='color:#cf222e'>Not signed: {html.escape(str(exc))}</p>"
            return None
        finally:
            self.passphrase.value = ""
        try:
            run = read_judged_run(self.run_dir)
            trust = trusted_signers(load_recorded_params(self.run_dir, run.document), given)
        except RunDirError:
            trust = given
        check = verify_run(self.run_dir, trust)
        state = "verified" if check.ok else f"verify FAILED: {check.problem}"
        summary = f"{record['decision']} by {record['reviewer']} as {record['signer']}, key {record['key_fingerprint']}"
        self.result.value = f"<p style='color:#1a7f37'>Signed: {html.escape(summary)} — {html.escape(state)}</p>"
        return record

    def static_html(self) -> str:
        target = html.escape(str(self.run_dir or "RUN_DIR"))
        return (
            "<p>Sign-off form (interactive in JupyterLab). From a shell: "
            f"<code>recsys-audit sign {target} --reviewer NAME --role ROLE --decision approve --key KEY</code></p>"
        )

    def show(self) -> None:
        show(self.widget, self.static_html(), "sign-off form")
