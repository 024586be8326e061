"""The audit runner: validate params, execute the section notebooks in parallel, merge, write the reports.

Notebooks run through papermill's Python API on a pool of kernels (:mod:`recsys_audit.kernel_pool`, one per core by
default) that every environment of a batch shares: a kernel pays its start and imports once and then executes
notebooks one after another, each from a fresh start. Each notebook has a deadline; a cell error, a timeout or a dead
kernel ends that notebook only. Each notebook's part of the report is rendered as soon as it ends.

Before the notebooks start, :mod:`recsys_audit.preflight` probes the endpoints the params name once, so that an
unreachable one is named as the root cause; after them, the run's outputs are written from findings.json through
:mod:`recsys_audit.outputs` (``--format``).

Only three parameters reach a notebook: ``env``, ``params_path`` and ``run_dir``. Secrets are resolved inside the
kernel; the runner reveals them too, solely to mask them in every file it writes (defence in depth).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import recsys_audit
from recsys_audit import catalog as check_catalog
from recsys_audit import judgement, kernel_pool, merge, outputs, preflight, rundir
from recsys_audit.catalog import Section
from recsys_audit.findings import Finding, Severity, Status, read_findings
from recsys_audit.params import Params, ParamsError, load_params, walk_secrets
from recsys_audit.redaction import redact_json, redact_text

NOTEBOOKS_ENV = "RECSYS_AUDIT_NOTEBOOKS"


class UsageError(Exception):
    """A command-line or API misuse (unknown section, missing notebooks folder): exit code 2."""

    exit_code = 2


@dataclass
class NotebookRun:
    name: str  # notebook stem, e.g. 01_tenancy_auth
    status: str  # ok | failed | timeout | died | missing
    seconds: float
    error: str | None = None
    section: int | None = None
    kernel: str = ""  # the pool's kernel that ran it ("k0 pid 4242, notebook 2"); "" when it did not run


@dataclass
class AuditResult:
    env: str
    run_dir: Path
    findings: list[Finding]
    exit_code: int
    notebooks: list[NotebookRun] = field(default_factory=list)
    verdict: str = ""
    not_evaluated: str = ""  # what the run did not evaluate, in words ("" when complete)
    score_text: str = ""  # the score as displayed
    connectivity: list[dict[str, Any]] = field(default_factory=list)  # the preflight (recsys_audit.preflight)

    @property
    def root_cause(self) -> str:
        """What could not be reached, in one line ("" when everything answered)."""
        errors = sum(finding.status == Status.ERROR for finding in self.findings)
        return preflight.root_cause(self.connectivity, errors)

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report.html"


@dataclass
class _PreparedAudit:
    params: Params
    params_path: Path
    env: str
    run_dir: Path
    sections: list[Section]
    sections_not_run: list[Section]
    notebooks_dir: Path
    started_at: dt.datetime
    runs: list[NotebookRun] = field(default_factory=list)
    connectivity: list[dict[str, Any]] = field(default_factory=list)


# --- locating things -------------------------------------------------------------------------------------------


def default_notebooks_dir() -> Path:
    """``$RECSYS_AUDIT_NOTEBOOKS`` if set, else the repository's ``notebooks/`` beside the package."""
    override = os.environ.get(NOTEBOOKS_ENV)
    if override:
        return Path(override)
    return Path(recsys_audit.__file__).resolve().parent.parent / "notebooks"


def _select_sections(catalog: list[Section], wanted: Sequence[int] | None) -> list[Section]:
    if wanted is None:
        return sorted(catalog, key=lambda s: s.number)
    known = {s.number: s for s in catalog}
    unknown = sorted(set(wanted) - known.keys())
    if unknown:
        raise UsageError(
            f"unknown section(s) {', '.join(map(str, unknown))} — choose from {', '.join(map(str, sorted(known)))}"
        )
    return [known[n] for n in sorted(set(wanted))]


def _new_run_dir(out_dir: Path, env: str, started_at: dt.datetime, run_id: str | None = None) -> Path:
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    parent = out_dir / rundir.env_folder(env)
    if parent.resolve().parent != out_dir.resolve():
        raise UsageError(f"environment name {env!r} would write outside {out_dir} — use a plain name like staging")
    parent.mkdir(parents=True, exist_ok=True)
    if run_id is not None:  # given by the run store (a retried trigger keeps its run id)
        try:
            (parent / run_id).mkdir()
        except FileExistsError:
            raise UsageError(f"{parent / run_id}: exists — move it away or use another output folder") from None
        return parent / run_id
    for attempt in range(1000):
        candidate = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise UsageError(f"{parent}: too many runs in the same second")


def _register_secrets(params: Params) -> None:
    """Reveal every secret of the params so the redaction module masks its value in every file the runner writes."""
    for _, secret in walk_secrets(params):
        with contextlib.suppress(ParamsError):
            secret.reveal()


# --- an executed notebook -----------------------------------------------------------------------------------------


def _scrub_notebook(path: Path) -> None:
    """Mask secret values in an executed notebook's outputs and metadata (images are left as they are)."""
    if not path.is_file():
        return
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            for key, value in list(output.items()):
                if key == "data":
                    output[key] = {
                        mime: (data if mime.startswith("image/") and mime != "image/svg+xml" else redact_json(data))
                        for mime, data in value.items()
                    }
                else:
                    output[key] = redact_json(value)
        if "papermill" in cell.get("metadata", {}):
            cell["metadata"]["papermill"] = redact_json(cell["metadata"]["papermill"])
    notebook.get("metadata", {}).pop("widgets", None)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# --- progress --------------------------------------------------------------------------------------------------


class Progress:
    """A line on stderr as each notebook ends — ``[3/8] 03_pipelines  2 fail 1 warn  3.4 s`` (what its checks
    recorded, before waivers and attestations) — and on a terminal a live bar below them naming the notebooks
    still running."""

    def __init__(self, labels: list[str], enabled: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total = len(labels)
        self.width = max((len(label) for label in labels), default=0)
        self.done = 0
        self.running: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.bar: Any = None
        self.ticker: threading.Thread | None = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                file=self.stream,
                dynamic_ncols=True,
                leave=False,
                bar_format="{n_fmt}/{total_fmt} {bar:20} {elapsed}{postfix}",
            )
            self.ticker = threading.Thread(target=self._tick, daemon=True)
            self.ticker.start()

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _redraw(self) -> None:
        now = time.monotonic()
        running = ", ".join(f"{label} {int(now - t)} s" for label, t in sorted(self.running.items()))
        self.bar.set_postfix_str(f"running: {running}" if running else "", refresh=True)

    def _tick(self) -> None:
        while not self.stop.wait(0.5):
            with self.lock:
                self._redraw()

    def note(self, line: str) -> None:
        """A line above the progress (e.g. the preflight's findings)."""
        if self.enabled:
            with self.lock:
                self._write(line)

    def started(self, label: str) -> None:
        with self.lock:
            self.running[label] = time.monotonic()

    def finished(self, label: str, run: NotebookRun, statuses: list[str], not_evaluated: int) -> None:
        with self.lock:
            self.running.pop(label, None)
            self.done += 1
            if not self.enabled:
                return
            counts = [f"{statuses.count(s)} {s}" for s in ("fail", "error", "warn") if statuses.count(s)]
            counts += [f"{not_evaluated} not evaluated"] if not_evaluated else []
            line = f"[{self.done}/{self.total}] {label:<{self.width}}  {' '.join(counts) or 'no failures'}  "
            line += f"{run.seconds:.1f} s" + (f"  ({run.status}: {run.error})" if run.status != "ok" else "")
            self._write(line)
            if self.bar is not None:
                self.bar.update(1)
                self._redraw()

    def close(self) -> None:
        self.stop.set()
        if self.ticker:
            self.ticker.join()
        if self.bar is not None:
            self.bar.close()


# --- the run ---------------------------------------------------------------------------------------------------


def _prepare(
    params_path: Path,
    params: Params,
    chosen: list[Section],
    catalog: list[Section],
    out_dir: Path,
    notebooks_dir: Path,
    run_id: str | None = None,
) -> _PreparedAudit:
    _register_secrets(params)
    started_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    run_dir = _new_run_dir(Path(out_dir), params.environment.name, started_at, run_id)
    (run_dir / rundir.NOTEBOOKS_DIR).mkdir()
    (run_dir / rundir.FINDINGS_DIR).mkdir()
    # The merged params (fragments folded in, secrets as references): what sign-off, diff and the widgets judge by.
    (run_dir / rundir.PARAMS_FILE).write_text(rundir.recorded_params_yaml(params), encoding="utf-8")
    numbers = {s.number for s in chosen}
    not_run = sorted((s for s in catalog if s.number not in numbers), key=lambda s: s.number)
    return _PreparedAudit(
        params,
        Path(params_path).resolve(),
        params.environment.name,
        run_dir,
        chosen,
        not_run,
        notebooks_dir,
        started_at,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _finish(audit: _PreparedAudit, fail_on: Severity, formats: Sequence[str] = outputs.DEFAULT_FORMATS) -> AuditResult:
    recorded = merge.recorded_findings(audit.run_dir / rundir.FINDINGS_DIR)
    failures = {run.name: run.error or run.status for run in audit.runs if run.status != "ok"}
    observed = merge.complete_findings(recorded, audit.sections, failures)
    observed = [Finding.from_dict(redact_json(f.to_dict())) for f in observed]
    scope = judgement.Scope(
        fail_on=fail_on,
        sections=[_section_row(s) for s in audit.sections],
        sections_not_run=[_section_row(s) for s in audit.sections_not_run],
        notebooks=[asdict(run) for run in sorted(audit.runs, key=lambda r: r.name)],
    )
    judged = judgement.judge(observed, audit.params, scope, audit.started_at.date())
    finished_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    document = {
        "schema_version": judgement.SCHEMA_VERSION,
        "kit_version": recsys_audit.__version__,
        "env": audit.env,
        "run": audit.run_dir.name,
        "target": audit.params.target.base_url,
        "params_file": str(audit.params_path),
        "params_file_sha256": _sha256(audit.params_path),
        "params_includes": [{"path": str(path), "sha256": _sha256(path)} for path in _included_fragments(audit.params)],
        "params_sha256": _sha256(audit.run_dir / rundir.PARAMS_FILE),
        "started_at": audit.started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "duration_s": round((finished_at - audit.started_at).total_seconds(), 3),
        **scope.to_document(),
        "connectivity": audit.connectivity,
        **judged.document_fields(),
    }
    document = redact_json(document)
    (audit.run_dir / rundir.FINDINGS_FILE).write_text(
        json.dumps(document, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8"
    )
    outputs.write_outputs(audit.run_dir, formats)
    return AuditResult(
        audit.env,
        audit.run_dir,
        judged.findings,
        int(judged.exit_code),
        sorted(audit.runs, key=lambda r: r.name),
        judged.verdict,
        judgement.not_evaluated_text(document),
        judgement.score_text(document),
        audit.connectivity,
    )


def _section_row(section: Section) -> dict[str, object]:
    return {"number": section.number, "title": section.title, "notebook": section.notebook}


def _included_fragments(params: Params) -> list[Path]:
    """The params fragments folded into the file (``include``), recorded in findings.json with their SHA-256."""
    return [params.path(entry) for entry in params.include]


class _AbandonedPollFilter(logging.Filter):
    """Hide asyncio's note about nbclient's output poller left pending when a cell times out (it is harmless)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Task was destroyed but it is pending") and "nbclient" in message)


logging.getLogger("asyncio").addFilter(_AbandonedPollFilter())


def run_many(
    params_paths: Sequence[Path],
    *,
    sections: Sequence[int] | None = None,
    jobs: int | None = None,
    timeout_s: float = 300,
    out_dir: Path = Path("audits"),
    notebooks_dir: Path | None = None,
    fail_on: Severity = Severity.HIGH,
    progress: bool = False,
    catalog: list[Section] | None = None,
    run_ids: Mapping[str, str] | None = None,
    formats: Sequence[str] = outputs.DEFAULT_FORMATS,
    fresh_kernels: bool = False,
) -> list[AuditResult]:
    """Audit several environments in one bounded batch: every params file is validated before any notebook starts
    (:class:`ParamsError`, :class:`UsageError`), the endpoints they name are probed once (:mod:`preflight`), then
    all notebooks share one pool of ``jobs`` kernels (default: one per core; ``fresh_kernels``: a new kernel for
    every notebook). ``run_ids``: environment name -> the run id to use (default: the UTC start of the run);
    ``formats``: the outputs written besides findings.json (:mod:`outputs`)."""
    if timeout_s <= 0:
        raise UsageError(f"--timeout must be positive, got {timeout_s:g}")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    folder = Path(notebooks_dir) if notebooks_dir else default_notebooks_dir()
    if not folder.is_dir():
        raise UsageError(f"{folder}: no notebooks folder — set {NOTEBOOKS_ENV} or pass --notebooks")
    labels: dict[int, str] = {}
    display: Progress | None = None

    def started(job: kernel_pool.NotebookJob) -> None:
        if display is not None:
            display.started(labels[job.key])

    papermill_log = logging.getLogger("papermill")
    saved = (papermill_log.level, papermill_log.propagate)
    papermill_log.setLevel(logging.CRITICAL)
    papermill_log.propagate = False
    # Kernels start first, while the checks' catalog and the params load and the preflight probes.
    most = len(params_paths) * (len(set(sections)) if sections else len(catalog or check_catalog.CHECK_MODULES))
    pool = kernel_pool.KernelPool(jobs or kernel_pool.default_size(most), reuse=not fresh_kernels, on_start=started)
    try:
        chosen_catalog = catalog if catalog is not None else check_catalog.sections()
        chosen = _select_sections(chosen_catalog, sections)
        loaded = [(Path(p), load_params(p)) for p in params_paths]  # all valid before any run directory is made
        ids = run_ids or {}
        audits = [
            _prepare(path, params, chosen, chosen_catalog, Path(out_dir), folder, ids.get(params.environment.name))
            for path, params in loaded
        ]
        tasks = [(audit, section) for audit in audits for section in audit.sections]
        multi_env = len(audits) > 1
        labels.update({i: f"{a.env}/{s.notebook}" if multi_env else s.notebook for i, (a, s) in enumerate(tasks)})
        display = Progress(list(labels.values()), progress)
        if "html" in formats:
            threading.Thread(target=_warm_up_renderer, daemon=True).start()
        for audit, reachability in zip(audits, preflight.check_all([a.params for a in audits]), strict=True):
            audit.connectivity = redact_json([r.to_dict() for r in reachability])
            for unreachable in (r for r in reachability if r.problem):
                note = f"{audit.env}: {unreachable.text} — the checks that need it will not be evaluated"
                display.note(redact_text(note))
        finished: dict[int, AuditResult] = {}

        def ended(index: int, run: NotebookRun) -> None:
            audit, section = tasks[index]
            _notebook_ended(audit, section, run, display, labels[index], formats)
            if len(audit.runs) == len(audit.sections):  # its last notebook: its outputs while others still run
                finished[id(audit)] = _finish(audit, fail_on, formats)

        for index, (audit, section) in enumerate(tasks):
            source = audit.notebooks_dir / f"{section.notebook}.ipynb"
            if not source.is_file():
                ended(
                    index, NotebookRun(section.notebook, "missing", 0.0, f"notebook {source} not found", section.number)
                )
                continue
            parameters = {"env": audit.env, "params_path": str(audit.params_path), "run_dir": str(audit.run_dir)}
            output = audit.run_dir / rundir.NOTEBOOKS_DIR / f"{section.notebook}.ipynb"
            pool.submit(kernel_pool.NotebookJob(source, output, parameters, timeout_s, key=index))
        pool.stop()  # each kernel shuts down once the queue is empty
        for result in pool.results():
            section = tasks[result.job.key][1]
            ended(
                result.job.key,
                NotebookRun(
                    section.notebook, result.status, result.seconds, result.error, section.number, result.kernel
                ),
            )
        return [finished[id(audit)] for audit in audits]
    finally:
        pool.close()
        if display is not None:
            display.close()
        papermill_log.setLevel(saved[0])
        papermill_log.propagate = saved[1]


def _warm_up_renderer() -> None:
    """Make the report's renderer ready while kernels run: the main process is otherwise idle then. Only a head
    start: whatever fails here fails again, and is reported, where the report is rendered."""
    from recsys_audit.render import report

    with contextlib.suppress(Exception):
        report.warm_up()


def _notebook_ended(
    audit: _PreparedAudit, section: Section, run: NotebookRun, display: Progress, label: str, formats: Sequence[str]
) -> None:
    """Record a notebook's end: scrub it, show the progress line, render its part of the report while others run."""
    output = audit.run_dir / rundir.NOTEBOOKS_DIR / f"{section.notebook}.ipynb"
    _scrub_notebook(output)
    audit.runs.append(run)
    recorded = read_findings(audit.run_dir / rundir.FINDINGS_DIR / f"{section.notebook}.jsonl")
    missing = len(set(section.checks) - {f.id for f in recorded})
    display.finished(label, run, [str(f.status) for f in recorded], missing)
    if "html" in formats and output.is_file():
        from recsys_audit.render.report import notebook_html

        notebook_html(output)


def run_audit(
    params_path: Path,
    *,
    sections: Sequence[int] | None = None,
    jobs: int | None = None,
    timeout_s: float = 300,
    out_dir: Path = Path("audits"),
    notebooks_dir: Path | None = None,
    fail_on: Severity = Severity.HIGH,
    progress: bool = False,
    catalog: list[Section] | None = None,
    formats: Sequence[str] = outputs.DEFAULT_FORMATS,
    fresh_kernels: bool = False,
) -> AuditResult:
    """Audit one environment; see :func:`run_many`. Raises ParamsError / UsageError (exit 2) before anything runs."""
    return run_many(
        [params_path],
        sections=sections,
        jobs=jobs,
        timeout_s=timeout_s,
        out_dir=out_dir,
        notebooks_dir=notebooks_dir,
        fail_on=fail_on,
        progress=progress,
        catalog=catalog,
        formats=formats,
        fresh_kernels=fresh_kernels,
    )[0]
