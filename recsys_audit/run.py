"""The audit runner: validate params, execute the section notebooks in parallel, merge, write the reports.

Notebooks run in-process through papermill's Python API, one thread per notebook and one kernel per thread, so the
costly imports (papermill, nbformat, nbconvert) are paid once per run rather than once per notebook, and kernels
start concurrently. Each notebook has a deadline; a cell error, a timeout or a dead kernel ends that notebook only.

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
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import recsys_audit
from recsys_audit import catalog as check_catalog
from recsys_audit import judgement, merge, rundir
from recsys_audit.catalog import Section
from recsys_audit.findings import Finding, Severity
from recsys_audit.params import Params, ParamsError, load_params, walk_secrets
from recsys_audit.redaction import redact_json, redact_text

NOTEBOOKS_ENV = "RECSYS_AUDIT_NOTEBOOKS"
KERNEL_START_TIMEOUT_S = 60


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


# --- locating things -------------------------------------------------------------------------------------------


def default_notebooks_dir() -> Path:
    """``$RECSYS_AUDIT_NOTEBOOKS`` if set, else the repository's ``notebooks/`` beside the package."""
    override = os.environ.get(NOTEBOOKS_ENV)
    if override:
        return Path(override)
    return Path(recsys_audit.__file__).resolve().parent.parent / "notebooks"


def default_jobs(notebook_count: int) -> int:
    """Kernels mostly wait on the network, so twice the cores, at least 2, never more than there are notebooks."""
    return max(1, min(max(2, (os.cpu_count() or 1) * 2), notebook_count))


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


# --- executing one notebook ------------------------------------------------------------------------------------


def _cell_error(exc: BaseException) -> str:
    """``ename: evalue`` of a failed cell, or the exception's one-line description."""
    ename = getattr(exc, "ename", None)
    if ename:
        text = f"{ename}: {getattr(exc, 'evalue', '')}"
    else:
        first = (str(exc).strip().splitlines() or [""])[0]
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return redact_text(text)[:300]


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


def _execute_notebook(audit: _PreparedAudit, section: Section, timeout_s: float, socket_prefix: str) -> NotebookRun:
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from traitlets.config import Config

    name = section.notebook
    source = audit.notebooks_dir / f"{name}.ipynb"
    output = audit.run_dir / "notebooks" / f"{name}.ipynb"
    started = time.monotonic()
    if not source.is_file():
        return NotebookRun(name, "missing", 0.0, f"notebook {source} not found", section.number)
    deadline = started + timeout_s

    def remaining(_cell: object) -> float:
        return max(0.01, deadline - time.monotonic())

    status, error = "ok", None
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters={"env": audit.env, "params_path": str(audit.params_path), "run_dir": str(audit.run_dir)},
            kernel_name=_kernel_name(source),
            progress_bar=False,
            start_timeout=KERNEL_START_TIMEOUT_S,
            timeout_func=remaining,
            shutdown_kernel="immediate",
            # Unix sockets (one prefix per kernel): private to the user, no plain-TCP warning on the kernel's stderr.
            config=Config({"KernelManager": {"transport": "ipc", "ip": socket_prefix}}),
        )
    except CellTimeoutError:
        status, error = "timeout", f"timeout after {timeout_s:g} s"
    except DeadKernelError:
        status, error = "died", "DeadKernelError: the kernel died"
    except Exception as exc:  # a cell error (PapermillExecutionError) or a kernel that would not start
        status, error = "failed", _cell_error(exc)
    seconds = round(time.monotonic() - started, 3)
    if status == "failed" and seconds >= timeout_s:
        status, error = "timeout", f"timeout after {timeout_s:g} s"
    _scrub_notebook(output)
    return NotebookRun(name, status, seconds, error, section.number)


def _kernel_name(notebook: Path) -> str:
    metadata = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {})
    return metadata.get("kernelspec", {}).get("name") or "python3"


# --- progress --------------------------------------------------------------------------------------------------


class Progress:
    """One line per notebook on stderr: redrawn live on a terminal, printed once when it ends otherwise."""

    def __init__(self, labels: list[str], enabled: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.labels = labels
        self.width = max((len(label) for label in labels), default=0)
        self.state: dict[str, tuple[str, float, float | None]] = {label: ("queued", 0.0, None) for label in labels}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.drawn = False
        self.ticker: threading.Thread | None = None
        if self.live:
            self.ticker = threading.Thread(target=self._tick, daemon=True)
            self.ticker.start()

    def _line(self, label: str) -> str:
        status, started, seconds = self.state[label]
        shown = seconds if seconds is not None else (time.monotonic() - started if started else 0.0)
        return f"  {status:<8} {label:<{self.width}}  {shown:6.1f} s"

    def _draw(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{len(self.labels)}F")
        self.stream.write("".join(f"\x1b[2K{self._line(label)}\n" for label in self.labels))
        self.stream.flush()
        self.drawn = True

    def _tick(self) -> None:
        while not self.stop.wait(0.5):
            with self.lock:
                self._draw()

    def started(self, label: str) -> None:
        with self.lock:
            self.state[label] = ("running", time.monotonic(), None)

    def finished(self, label: str, run: NotebookRun) -> None:
        with self.lock:
            self.state[label] = (run.status, 0.0, run.seconds)
            if self.enabled and not self.live:
                detail = f"  {run.error}" if run.error else ""
                self.stream.write(self._line(label) + detail + "\n")
                self.stream.flush()

    def close(self) -> None:
        self.stop.set()
        if self.ticker:
            self.ticker.join()
            with self.lock:
                self._draw()


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


def _finish(audit: _PreparedAudit, fail_on: Severity) -> AuditResult:
    from recsys_audit.junit import write_junit
    from recsys_audit.render.report import render_report

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
        **judged.document_fields(),
    }
    document = redact_json(document)
    (audit.run_dir / rundir.FINDINGS_FILE).write_text(
        json.dumps(document, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8"
    )
    write_junit(audit.run_dir)
    render_report(audit.run_dir)
    return AuditResult(
        audit.env,
        audit.run_dir,
        judged.findings,
        int(judged.exit_code),
        sorted(audit.runs, key=lambda r: r.name),
        judged.verdict,
        judgement.not_evaluated_text(document),
        judgement.score_text(document),
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


def _warm_up_renderer() -> None:
    """Import the HTML exporter while kernels run: the main process is otherwise idle then."""
    with contextlib.suppress(ImportError):
        import nbconvert  # noqa: F401


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
) -> list[AuditResult]:
    """Audit several environments in one bounded batch: every params file is validated before any notebook starts
    (:class:`ParamsError`, :class:`UsageError`), then all notebooks share one pool of ``jobs`` kernels.
    ``run_ids``: environment name -> the run id to use (default: the UTC start of the run)."""
    if timeout_s <= 0:
        raise UsageError(f"--timeout must be positive, got {timeout_s:g}")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    folder = Path(notebooks_dir) if notebooks_dir else default_notebooks_dir()
    if not folder.is_dir():
        raise UsageError(f"{folder}: no notebooks folder — set {NOTEBOOKS_ENV} or pass --notebooks")
    chosen_catalog = catalog if catalog is not None else check_catalog.sections()
    loaded = [(Path(p), load_params(p)) for p in params_paths]  # validate all before creating any run directory
    chosen = _select_sections(chosen_catalog, sections)
    ids = run_ids or {}
    audits = [
        _prepare(path, params, chosen, chosen_catalog, Path(out_dir), folder, ids.get(params.environment.name))
        for path, params in loaded
    ]
    tasks = [(audit, section) for audit in audits for section in audit.sections]
    multi_env = len(audits) > 1
    labels = [f"{a.env}/{s.notebook}" if multi_env else s.notebook for a, s in tasks]
    display = Progress(labels, progress)
    warm_up = threading.Thread(target=_warm_up_renderer, daemon=True)
    warm_up.start()
    import papermill  # noqa: F401  (imported once here, not concurrently in every worker)

    papermill_log = logging.getLogger("papermill")
    saved = (papermill_log.level, papermill_log.propagate)
    papermill_log.setLevel(logging.CRITICAL)
    papermill_log.propagate = False

    def work(index: int) -> NotebookRun:
        audit, section = tasks[index]
        display.started(labels[index])
        try:
            return _execute_notebook(audit, section, timeout_s, f"{sockets}/k{index}")
        except Exception as exc:  # never let one notebook end the batch
            return NotebookRun(section.notebook, "failed", 0.0, _cell_error(exc), section.number)

    sockets = tempfile.mkdtemp(prefix="recsys-audit-")
    try:
        with ThreadPoolExecutor(max_workers=jobs or default_jobs(len(tasks))) as pool:
            futures = {pool.submit(work, i): i for i in range(len(tasks))}
            for future in as_completed(futures):
                index = futures[future]
                run = future.result()
                tasks[index][0].runs.append(run)
                display.finished(labels[index], run)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
        display.close()
        papermill_log.setLevel(saved[0])
        papermill_log.propagate = saved[1]
    warm_up.join()
    return [_finish(audit, fail_on) for audit in audits]


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
    )[0]
