"""A pool of Jupyter kernels that execute notebooks one after another, each run recorded by papermill as usual.

Starting a kernel and importing the audit's libraries costs far more than most sections' probes. The pool starts
``size`` kernels at once (default: one per core), warms each up once (:func:`recsys_audit.kernel_state.warm_up`)
and then feeds them notebooks from one queue, so a batch of environments shares the same few kernels. Before every
notebook the kernel is given a fresh start (:func:`recsys_audit.kernel_state.fresh_start`): an empty namespace, the
kit's modules imported anew, the process state restored.

papermill executes each notebook through its own engine API: the engine registered here is papermill's nbclient engine
handed the pool's kernel manager and client instead of starting a kernel, so the executed notebook carries the same
parameters cell, papermill metadata and outputs as a one-kernel-per-notebook run.

A notebook that times out, kills its kernel or leaves it unable to start afresh costs only itself: its kernel is shut
down and the next notebook gets a new one. ``reuse=False`` gives every notebook a kernel of its own (the reference
the pooled runs are compared with).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys_audit.lean_imports import skip_unused_format_checkers
from recsys_audit.redaction import redact_text

ENGINE_NAME = "recsys-audit-pool"
DEFAULT_KERNEL = "python3"
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"
START_TIMEOUT_S = 60  # a kernel's start, or its warm-up
RESET_TIMEOUT_S = 30  # a fresh start between notebooks
# No input history: nothing of an audit is written to the auditor's IPython history database.
KERNEL_ARGUMENTS = ["--HistoryManager.enabled=False"]
# Run silently in the kernel; they bind no name (a fresh start empties the namespace).
WARM_UP = "__import__('recsys_audit.kernel_state', fromlist=['_']).warm_up()"
FRESH_START = "__import__('recsys_audit.kernel_state', fromlist=['_']).fresh_start()"


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's CPU limit,
    e.g. ``limits.cpu: 2`` in the Helm chart, on a node with many more cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path(CGROUP_CPU_MAX).read_text(encoding="ascii").split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable: the affinity stands
    return cores


def default_size(notebook_count: int) -> int:
    """One kernel per usable core, never more than there are notebooks."""
    return max(1, min(usable_cores(), notebook_count))


def kernel_name(notebook: Path) -> str:
    """The kernel a notebook asks for (its kernelspec); the default when it names none or cannot be read (papermill
    then reports why)."""
    try:
        metadata = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError):
        return DEFAULT_KERNEL
    return metadata.get("kernelspec", {}).get("name") or DEFAULT_KERNEL


@dataclass(frozen=True)
class NotebookJob:
    source: Path
    output: Path
    parameters: dict[str, Any]
    timeout_s: float
    key: Any = None  # the caller's handle, returned with the result


@dataclass
class JobResult:
    job: NotebookJob
    status: str  # ok | failed | timeout | died
    seconds: float
    error: str | None = None
    kernel: str = ""  # which kernel ran it, and its how-many-th notebook: "k0 pid 4242, notebook 2"


class KernelError(Exception):
    """A kernel would not start, warm up or start afresh."""


def failure_text(exc: BaseException) -> str:
    """``ename: evalue`` of a failed cell, or the exception's one-line description (redacted, bounded)."""
    ename = getattr(exc, "ename", None)
    if ename:
        return _one_line(f"{ename}: {getattr(exc, 'evalue', '')}")
    first = (str(exc).strip().splitlines() or [""])[0]
    return _one_line(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


def _one_line(text: str) -> str:
    return redact_text(text)[:300]


# --- one kernel ----------------------------------------------------------------------------------------------------


class _Kernel:
    """One kernel process with its manager and a client kept for its whole life (used from one thread only)."""

    def __init__(self, name: str, sockets: str, label: str, warm: bool) -> None:
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        self.name, self.label = name, label
        self.notebooks_run = 0
        self.warm = False  # warmed up: notebooks may share it
        self._sync = run_sync
        # Unix sockets (one prefix per kernel): private to the user, no plain-TCP warning on the kernel's stderr.
        self.manager = AsyncKernelManager(kernel_name=name, transport="ipc", ip=sockets)
        self.client: Any = None
        try:
            self._sync(self.manager.start_kernel)(extra_arguments=KERNEL_ARGUMENTS)
            self.client = self.manager.client()
            self.client.start_channels()
            self._sync(self.client.wait_for_ready)(timeout=START_TIMEOUT_S)
            self.client.allow_stdin = False
        except Exception as exc:
            self.shutdown()
            raise KernelError(f"kernel {name!r} would not start: {failure_text(exc)}") from exc
        if warm:
            # A kernel whose Python lacks the kit cannot be shared safely: it serves one notebook, then is replaced.
            with contextlib.suppress(KernelError):
                self._run(WARM_UP, START_TIMEOUT_S)
                self.warm = True

    @property
    def pid(self) -> int | None:
        provisioner = getattr(self.manager, "provisioner", None)
        process = getattr(provisioner, "process", None)
        return getattr(process, "pid", None)

    def alive(self) -> bool:
        try:
            return bool(self._sync(self.manager.is_alive)())
        except Exception:
            return False

    def _run(self, code: str, timeout_s: float) -> None:
        """Execute ``code`` silently (no history, no execution count, no outputs kept); :class:`KernelError` if it
        fails or takes longer than ``timeout_s``."""
        try:
            reply = self._sync(self.client.execute_interactive)(
                code, silent=True, store_history=False, timeout=timeout_s, output_hook=lambda _msg: None
            )
        except Exception as exc:
            raise KernelError(f"kernel {self.label}: {failure_text(exc)}") from exc
        content = reply.get("content", {})
        if content.get("status") != "ok":
            failure = _one_line(f"{content.get('ename')}: {content.get('evalue')}")
            raise KernelError(f"kernel {self.label}: {failure}")

    def fresh_start(self) -> None:
        self._run(FRESH_START, RESET_TIMEOUT_S)

    def execute(self, job: NotebookJob) -> None:
        """Execute one notebook with papermill on this kernel; papermill's and nbclient's exceptions propagate."""
        import papermill

        deadline = time.monotonic() + job.timeout_s

        def remaining(_cell: object) -> float:
            return max(0.01, deadline - time.monotonic())

        self.notebooks_run += 1
        papermill.execute_notebook(
            str(job.source),
            str(job.output),
            parameters=job.parameters,
            engine_name=ENGINE_NAME,
            kernel_name=self.name,
            progress_bar=False,
            start_timeout=START_TIMEOUT_S,
            timeout_func=remaining,
            pooled_kernel=self,
        )

    def shutdown(self) -> None:
        """Kill the kernel at once and remove its sockets and connection file (nothing to do if already gone)."""
        with contextlib.suppress(Exception):
            if self.client is not None:
                self.client.stop_channels()
        with contextlib.suppress(Exception):
            if self._sync(self.manager.is_alive)():
                self._sync(self.manager.shutdown_kernel)(now=True)
        with contextlib.suppress(Exception):
            self._sync(self.manager.cleanup_resources)()


def _register_engine() -> None:
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

    class SavedAtEnd(NotebookExecutionManager):
        """papermill's record keeper, writing the notebook when it ends (also on a timeout or a dead kernel) and
        during a long one every ``autosave_cell_every`` seconds — not twice per cell: a full serialization and
        validation of the notebook each time, which cost the runner more CPU than the probes."""

        def save(self, **kwargs: Any) -> None:
            if (
                self.end_time is not None
                or (self.now() - self.last_save_time).total_seconds() >= self.autosave_cell_every
            ):
                super().save(**kwargs)

    class PooledEngine(NBClientEngine):
        """papermill's nbclient engine on a kernel of the pool: its manager and client are handed over, not
        started, and stay up when the notebook ends."""

        @classmethod
        def execute_notebook(  # type: ignore[override]
            cls,
            nb: Any,
            kernel_name: str,
            output_path: str | None = None,
            progress_bar: bool = True,
            log_output: bool = False,
            autosave_cell_every: int = 30,
            **kwargs: Any,
        ) -> Any:
            # papermill's Engine.execute_notebook with the record keeper above
            nb_man = SavedAtEnd(nb, output_path, log_output, progress_bar, autosave_cell_every)
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

        @classmethod
        def execute_managed_notebook(  # type: ignore[override]
            cls,
            nb_man: Any,
            kernel_name: str,
            log_output: bool = False,
            stdout_file: Any = None,
            stderr_file: Any = None,
            start_timeout: int = START_TIMEOUT_S,
            execution_timeout: float | None = None,
            **kwargs: Any,
        ) -> Any:
            from papermill.engines import logger

            kernel: _Kernel = kwargs.pop("pooled_kernel")
            kwargs.pop("input_path", None)
            client = PapermillNotebookClient(
                nb_man,
                km=kernel.manager,
                kernel_name=kernel_name,
                startup_timeout=start_timeout,
                timeout=execution_timeout,
                log=logger,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
                **kwargs,
            )
            client.kc = kernel.client
            return client.execute()

    papermill_engines.register(ENGINE_NAME, PooledEngine)


# --- the pool ------------------------------------------------------------------------------------------------------


@dataclass
class KernelPool:
    """``size`` worker threads, each with one kernel, taking notebooks from one queue.

    Kernels start as soon as the pool is created, while the caller prepares the jobs. ``on_start(job)`` is called in
    the worker thread when a notebook begins; :meth:`results` yields each :class:`JobResult` as it ends."""

    size: int
    reuse: bool = True
    on_start: Callable[[NotebookJob], None] | None = None
    _jobs: queue.Queue[NotebookJob | None] = field(default_factory=queue.Queue, init=False)
    _results: queue.Queue[JobResult] = field(default_factory=queue.Queue, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)
    _submitted: int = field(default=0, init=False)
    _stopping: bool = field(default=False, init=False)
    _sockets: str = field(default="", init=False)
    _counter: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"a kernel pool needs at least one kernel, got {self.size}")
        import jupyter_client.manager  # noqa: F401  (imported once here, not concurrently in every worker)

        self._sockets = tempfile.mkdtemp(prefix="recsys-audit-")
        for index in range(self.size):
            thread = threading.Thread(target=self._work, name=f"recsys-audit-kernel-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        skip_unused_format_checkers()
        _register_engine()  # imports papermill while the kernels start

    def __enter__(self) -> KernelPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def submit(self, job: NotebookJob) -> None:
        self._jobs.put(job)
        self._submitted += 1

    def results(self) -> Iterator[JobResult]:
        """Every submitted notebook's result, in the order they end."""
        for _ in range(self._submitted):
            yield self._results.get()
        self._submitted = 0

    def stop(self) -> None:
        """Let every kernel shut down once the queued notebooks are done (returns at once)."""
        if not self._stopping:
            self._stopping = True
            for _ in self._threads:
                self._jobs.put(None)

    def close(self) -> None:
        """Drop the notebooks not started yet (none are left unless the caller gave up early, e.g. on Ctrl-C), let
        the running ones end, and wait until every kernel is shut down."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._jobs.get_nowait()
        self._stopping = False
        self.stop()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        shutil.rmtree(self._sockets, ignore_errors=True)

    # --- in each worker thread ---

    def _new_kernel(self, name: str) -> _Kernel:
        with self._lock:
            label = f"k{self._counter}"
            self._counter += 1
        return _Kernel(name, f"{self._sockets}/{label}", label, warm=self.reuse)

    def _work(self) -> None:
        kernel: _Kernel | None = None
        with contextlib.suppress(KernelError):  # tried again for the first notebook, which then says why it fails
            kernel = self._new_kernel(DEFAULT_KERNEL)  # at once: it starts while the caller prepares the jobs
        try:
            while (job := self._jobs.get()) is not None:
                try:
                    kernel, result = self._run_one(kernel, job)
                except Exception as exc:  # never leave the caller waiting for a result
                    result = JobResult(job, "failed", 0.0, failure_text(exc))
                self._results.put(result)
        finally:
            if kernel is not None:
                kernel.shutdown()

    def _run_one(self, kernel: _Kernel | None, job: NotebookJob) -> tuple[_Kernel | None, JobResult]:
        """Run ``job`` on ``kernel`` (or a new one); the kernel for the next job, and the result."""
        try:
            kernel, problem = self._ready_kernel(kernel, job), None
        except KernelError as exc:
            kernel, problem = None, str(exc)
        result = self._execute(kernel, problem, job)
        if kernel is not None and (result.status != "ok" or not kernel.warm or not kernel.alive()):
            kernel.shutdown()  # a notebook that timed out or broke its kernel costs only itself
            kernel = None
        return kernel, result

    def _ready_kernel(self, kernel: _Kernel | None, job: NotebookJob) -> _Kernel:
        """The kernel for ``job``: the current one, after a fresh start if it ran a notebook, else a new one."""
        wanted = kernel_name(job.source)
        if kernel is not None and kernel.name == wanted:
            if not kernel.notebooks_run:
                return kernel
            try:
                kernel.fresh_start()
                return kernel
            except KernelError:
                pass
        if kernel is not None:
            kernel.shutdown()
        return self._new_kernel(wanted)

    def _execute(self, kernel: _Kernel | None, problem: str | None, job: NotebookJob) -> JobResult:
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        if self.on_start:
            self.on_start(job)
        started = time.monotonic()
        if kernel is None:
            return JobResult(job, "failed", 0.0, problem)
        status, error = "ok", None
        try:
            kernel.execute(job)
        except CellTimeoutError:
            status, error = "timeout", f"timeout after {job.timeout_s:g} s"
        except DeadKernelError:
            status, error = "died", "DeadKernelError: the kernel died"
        except Exception as exc:  # a cell error (PapermillExecutionError) or a broken kernel
            status, error = "failed", failure_text(exc)
        seconds = round(time.monotonic() - started, 3)
        if status == "failed" and seconds >= job.timeout_s:
            status, error = "timeout", f"timeout after {job.timeout_s:g} s"
        where = f"{kernel.label} pid {kernel.pid}, notebook {kernel.notebooks_run}"
        return JobResult(job, status, seconds, error, where)
