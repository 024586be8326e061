"""Full audit of the sandbox: median of N runs, a batch of environments, memory, commands' start-up, and the plain
papermill + nbconvert loop.

Starts a hardened sandbox, audits it (all sections, report, findings.json, junit.xml; load test off) once to warm
the disk cache, then N timed runs on the kernel pool and N with a new kernel for every notebook (``--fresh-kernels``).
Every run is a fresh ``recsys-audit`` process, as a user runs it; the memory of the CLI and all its kernels is sampled
every 0.1 s (summed RSS, and PSS: shared pages divided among the processes sharing them). Then a batch of 8
environments (8 params files for the same sandbox) against a batch of 1, the commands that run no notebook, a
breakdown of one run, and the same notebooks run the plain way — ``papermill`` then ``jupyter nbconvert --to html``,
one notebook after the other, as separate commands — for the speed-up. Figures only; nothing is asserted.

Usage: python benchmarks/bench_audit.py [--runs 5] [--batch 8] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import yaml

if TYPE_CHECKING:
    from recsys_audit.sandbox.harness import SandboxInstance

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


@contextmanager
def hardened_sandbox(rows: int = 0) -> Iterator[tuple[SandboxInstance, Path]]:
    """A running hardened instance and a params copy beside its own with the live load test off."""
    from recsys_audit.sandbox.harness import start_sandbox

    root = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    started = time.perf_counter()
    instance = start_sandbox(root, "hardened", (), rows=rows, name="bench")
    print(f"sandbox started in {time.perf_counter() - started:.1f} s ({instance.directory})", flush=True)
    try:
        yield instance, params_without_load_test(instance)
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)


def params_without_load_test(instance: SandboxInstance) -> Path:
    document = yaml.safe_load(instance.params_path.read_text(encoding="utf-8"))
    document["load_test"]["allowed"] = False
    path = instance.params_path.with_name("bench-params.yaml")
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


MB = 1_000_000


@dataclass
class Measured:
    seconds: float
    code: int
    stdout: str
    peak_rss: float  # bytes, all processes of the command together
    peak_pss: float


def _sample_tree(root: psutil.Process, stop: threading.Event, peaks: dict[str, float]) -> None:
    while not stop.wait(0.1):
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        rss = pss = 0
        for process in processes:
            try:
                info = process.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        peaks["rss"] = max(peaks.get("rss", 0), rss)
        peaks["pss"] = max(peaks.get("pss", 0), pss)
        peaks["processes"] = max(peaks.get("processes", 0), len(processes))


def measured(command: list[str]) -> Measured:
    """Run a command; its wall time, exit code, output and peak memory (it and all its descendants)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peaks: dict[str, float] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_tree, args=(psutil.Process(process.pid), stop, peaks), daemon=True)
    sampler.start()
    stdout, _ = process.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    return Measured(seconds, process.returncode, stdout, peaks.get("rss", 0), peaks.get("pss", 0))


def audit_command(params: list[Path], out_dir: Path, *options: str) -> list[str]:
    return [str(BIN / "recsys-audit"), "run", *map(str, params), "--out", str(out_dir), "--quiet", *options]


def timed_audits(params: Path, out_dir: Path, runs: int, *options: str) -> list[tuple[Measured, dict[str, Any]]]:
    """One untimed warm-up audit, then ``runs`` timed ones, each in a fresh process as a user would run it."""
    results = []
    for index in range(runs + 1):
        run = measured(audit_command([params], out_dir, *options))
        if index == 0:
            continue
        results.append((run, load_result(Path(run.stdout.strip().splitlines()[-1]).parent)))
        print(
            f"  run {index}: {run.seconds:.2f} s, exit {run.code}, peak RSS {run.peak_rss / MB:.0f} MB, "
            f"PSS {run.peak_pss / MB:.0f} MB",
            flush=True,
        )
    return results


def summary(label: str, results: list[tuple[Measured, dict[str, Any]]]) -> float:
    times = [run.seconds for run, _ in results]
    median = statistics.median(times)
    rss = max(run.peak_rss for run, _ in results) / MB
    pss = max(run.peak_pss for run, _ in results) / MB
    print(
        f"{label}, {len(times)} runs: median {median:.2f} s (min {min(times):.2f}, max {max(times):.2f}); "
        f"peak memory RSS {rss:.0f} MB, PSS {pss:.0f} MB"
    )
    return median


def batch(params: Path, out_dir: Path, size: int) -> Measured:
    """One ``recsys-audit run`` of ``size`` environments: copies of the params, each with its own name."""
    document = yaml.safe_load(params.read_text(encoding="utf-8"))
    copies = []
    for index in range(size):
        document["environment"]["name"] = f"bench-{index}"
        copy = params.with_name(f"bench-{size}-{index}.yaml")  # beside the original: relative references hold
        copy.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        copies.append(copy)
    return measured(audit_command(copies, out_dir))


def command_seconds(params: Path, run_dir: Path, repeats: int = 3) -> dict[str, float]:
    """Median wall time of the commands that run no notebook, and of importing the CLI alone."""
    commands = {
        "import recsys_audit.cli": [sys.executable, "-c", "import recsys_audit.cli"],
        "recsys-audit checks": [str(BIN / "recsys-audit"), "checks"],
        "recsys-audit params check": [str(BIN / "recsys-audit"), "params", "check", str(params)],
        "recsys-audit verify (unsigned run)": [str(BIN / "recsys-audit"), "verify", str(run_dir)],
        "recsys-audit diff": [str(BIN / "recsys-audit"), "diff", str(run_dir), str(run_dir)],
    }
    return {label: statistics.median(measured(c).seconds for _ in range(repeats)) for label, c in commands.items()}


def load_result(run_dir: Path) -> Any:
    """The parts of findings.json the breakdown needs."""
    return json.loads((run_dir / "findings.json").read_text(encoding="utf-8")) | {"run_dir": str(run_dir)}


def seconds_of(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - started


def kernel_start_seconds() -> tuple[float, float]:
    """Start a kernel of the pool and wait until it answers; then its warm-up (the notebooks' imports)."""
    from recsys_audit import kernel_pool

    with tempfile.TemporaryDirectory() as sockets:
        started = time.perf_counter()
        kernel = kernel_pool._Kernel("python3", f"{sockets}/k", "k0", warm=False)
        start = time.perf_counter() - started
        started = time.perf_counter()
        kernel._run(kernel_pool.WARM_UP, 60)
        warm_up = time.perf_counter() - started
        kernel.shutdown()
    return start, warm_up


def breakdown(document: dict[str, Any]) -> dict[str, float]:
    """Where the time of one audit goes."""
    from recsys_audit.junit import write_junit
    from recsys_audit.render.report import render_report

    run_dir = Path(document["run_dir"])
    imports = seconds_of([sys.executable, "-c", "import recsys_audit.cli, recsys_audit.run, papermill, nbclient"])
    kernel_start, warm_up = kernel_start_seconds()
    started = time.perf_counter()
    render_report(run_dir)
    write_junit(run_dir)
    rendering = time.perf_counter() - started
    per_notebook_checks = {}
    for finding in document["findings"]:
        per_notebook_checks[finding["notebook"]] = (
            per_notebook_checks.get(finding["notebook"], 0.0) + finding["duration_s"]
        )
    notebooks = {run["name"]: run["seconds"] for run in document["notebooks"]}
    return {
        "imports (CLI process, papermill included)": imports,
        "kernel start (one)": kernel_start,
        "kernel warm-up (one)": warm_up,
        "probes: all checks, summed": sum(per_notebook_checks.values()),
        "probes: slowest notebook's checks": max(per_notebook_checks.values()),
        "notebooks: slowest wall time": max(notebooks.values()),
        "notebooks: summed wall time": sum(notebooks.values()),
        "rendering: report + junit": rendering,
    }


def plain_loop_seconds(params: Path, notebooks_dir: Path, work: Path) -> float:
    """The same notebooks run the plain way: papermill CLI, then nbconvert CLI, one notebook after the other."""
    run_dir = work / "plain-run"
    (run_dir / "findings").mkdir(parents=True)
    started = time.perf_counter()
    for notebook in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        if notebook.stem.startswith("99"):
            continue
        output = run_dir / notebook.name
        papermill = [str(BIN / "papermill"), str(notebook), str(output), "--no-progress-bar"]
        papermill += ["-p", "env", "bench", "-p", "params_path", str(params), "-p", "run_dir", str(run_dir)]
        subprocess.run(papermill, capture_output=True, check=False)
        convert = [str(BIN / "jupyter"), "nbconvert", "--to", "html", str(output), "--output-dir", str(run_dir)]
        subprocess.run(convert, capture_output=True, check=False)
    return time.perf_counter() - started


def report_line(label: str, seconds: float) -> str:
    return f"  {label:<38} {seconds:7.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="environments in the batch (default 8)")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the plain papermill + nbconvert loop")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-audit-out-"))
    try:
        with hardened_sandbox() as (_, params):
            print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
            pooled = timed_audits(params, work / "audits", args.runs)
            median = summary("full audit (kernel pool)", pooled)
            fresh = timed_audits(params, work / "fresh", args.runs, "--fresh-kernels")
            fresh_median = summary("full audit (a new kernel per notebook, --fresh-kernels)", fresh)
            print(f"  the pool saves {fresh_median - median:.2f} s ({fresh_median / median:.1f}x)")
            print("where the time goes (median pooled run):")
            middle = sorted(pooled, key=lambda pair: pair[0].seconds)[len(pooled) // 2][1]
            for label, seconds in breakdown(middle).items():
                print(report_line(label, seconds))
            by_status = middle["counts"]["by_status"]
            print(f"  findings: {len(middle['findings'])} ({by_status['pass']} pass, {by_status['error']} error)")
            one, many = batch(params, work / "batch-1", 1), batch(params, work / f"batch-{args.batch}", args.batch)
            marginal = (many.seconds - one.seconds) / (args.batch - 1)
            print(f"batch of {args.batch} environments: {many.seconds:.2f} s (exit {many.code})")
            print(f"batch of 1 environment: {one.seconds:.2f} s (exit {one.code})")
            print(f"  marginal cost: {marginal:.2f} s per extra environment")
            print(f"  peak memory of the batch: RSS {many.peak_rss / MB:.0f} MB, PSS {many.peak_pss / MB:.0f} MB")
            print("commands that run no notebook (median of 3, wall time of a new process):")
            for label, seconds in command_seconds(params, Path(middle["run_dir"])).items():
                print(report_line(label, seconds))
            if not args.skip_baseline:
                from recsys_audit.run import default_notebooks_dir

                plain = plain_loop_seconds(params, default_notebooks_dir(), work)
                print(f"plain sequential papermill + nbconvert loop: {plain:.2f} s")
                print(f"speed-up of the runner: {plain / median:.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
