"""Full audit of the sandbox: median of N runs, where the time goes, and the plain papermill + nbconvert loop.

Starts a hardened sandbox, audits it (all sections, report, findings.json, junit.xml; load test off) once to warm
the disk cache, then N timed runs. Breaks one run down into imports, kernel start, probes (time inside checks) and
rendering, and runs the same notebooks the plain way — ``papermill`` then ``jupyter nbconvert --to html``, one
notebook after the other, as separate commands — for the speed-up. Figures only; nothing is asserted.

Usage: python benchmarks/bench_audit.py [--runs 5] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def timed_audits(params: Path, out_dir: Path, runs: int) -> list[tuple[float, dict[str, Any]]]:
    """One untimed warm-up audit, then ``runs`` timed ones, each in a fresh process as a user would run it."""
    results = []
    for index in range(runs + 1):
        started = time.perf_counter()
        completed = subprocess.run(
            [str(BIN / "recsys-audit"), "run", str(params), "--out", str(out_dir), "--quiet"],
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        run_dir = Path(completed.stdout.strip().splitlines()[-1]).parent
        if index == 0:
            continue
        results.append((seconds, load_result(run_dir)))
        print(f"  run {index}: {seconds:.2f} s, exit {completed.returncode}", flush=True)
    return results


def load_result(run_dir: Path) -> Any:
    """The parts of findings.json the breakdown needs."""
    return json.loads((run_dir / "findings.json").read_text(encoding="utf-8")) | {"run_dir": str(run_dir)}


def seconds_of(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - started


def kernel_start_seconds() -> float:
    """Start a python3 kernel and wait until it answers, as papermill does for every notebook."""
    from jupyter_client.manager import start_new_kernel

    started = time.perf_counter()
    manager, client = start_new_kernel(kernel_name="python3", stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    client.stop_channels()
    manager.shutdown_kernel(now=True)
    return seconds


def breakdown(document: dict[str, Any]) -> dict[str, float]:
    """Where the time of one audit goes."""
    from recsys_audit.junit import write_junit
    from recsys_audit.render.report import render_report

    run_dir = Path(document["run_dir"])
    imports = seconds_of([sys.executable, "-c", "import recsys_audit.cli, recsys_audit.run, papermill, nbclient"])
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
        "imports (CLI process)": imports,
        "kernel start (one)": kernel_start_seconds(),
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
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the plain papermill + nbconvert loop")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-audit-out-"))
    try:
        with hardened_sandbox() as (_, params):
            results = timed_audits(params, work / "audits", args.runs)
            times = [seconds for seconds, _ in results]
            median = statistics.median(times)
            print(f"full audit, {args.runs} runs: median {median:.2f} s (min {min(times):.2f}, max {max(times):.2f})")
            print("where the time goes (median run):")
            middle = sorted(results, key=lambda pair: pair[0])[len(results) // 2][1]
            for label, seconds in breakdown(middle).items():
                print(report_line(label, seconds))
            by_status = middle["counts"]["by_status"]
            print(f"  findings: {len(middle['findings'])} ({by_status['pass']} pass, {by_status['error']} error)")
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
