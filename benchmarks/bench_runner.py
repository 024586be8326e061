"""Runner vs the plain sequential loop (papermill CLI, then nbconvert CLI, per notebook) over the same notebooks.

Writes N section-like notebooks (they import recsys_audit, evaluate a few checks with light work and a short probe-like
wait, show a table) and a bench catalog into a temporary folder, times both ways, and prints where the time goes.
Figures only; nothing is asserted.  Usage: python benchmarks/bench_runner.py [--notebooks 8] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

BIN = Path(sys.executable).parent
CHECKS_PER_SECTION = 6

CATALOG_MODULE = '''
"""Bench catalog: sections whose checks do light work and wait briefly, like a probe answering."""
import json
import time

from recsys_audit.catalog import Section
from recsys_audit.findings import Severity, passed, warned

SECTIONS = []
for number in range({count}):
    section = Section(number, f"Bench section {{number}}", notebook=f"{{number:02d}}_bench")
    for index in range({checks}):
        def check(ctx, index=index):
            time.sleep(0.05)
            rows = [json.loads(json.dumps({{"row": i, "value": i * index}})) for i in range(200)]
            total = sum(r["value"] for r in rows)
            return passed("ok", total=total) if index % 3 else warned("look", rows=rows[:5])
        section.check(f"bench.{{number}}.{{index}}", item="bench", title=f"check {{index}}",
                      severity=Severity.MEDIUM, remediation="none")(check)
    SECTIONS.append(section)
'''

PARAMS = """\
environment:
  name: bench
target:
  base_url: http://127.0.0.1:9
tenants:
  - id: acme
    surfaces: [home]
"""


def write_fixtures(folder: Path, count: int) -> tuple[Path, Path]:
    (folder / "bench_catalog.py").write_text(
        textwrap.dedent(CATALOG_MODULE.format(count=count, checks=CHECKS_PER_SECTION))
    )
    params = folder / "bench.yaml"
    params.write_text(PARAMS)
    notebooks = folder / "notebooks"
    notebooks.mkdir()
    for number in range(count):
        cells = [
            new_markdown_cell(f"# Bench section {number}"),
            new_code_cell('env = "bench"\nparams_path = ""\nrun_dir = ""', metadata={"tags": ["parameters"]}),
            new_code_cell(
                "from bench_catalog import SECTIONS\n\nfrom recsys_audit.notebook import open_section\n\n"
                f"audit = open_section({number}, env, params_path, run_dir, section=SECTIONS[{number}])\n"
                "audit.header()"
            ),
            new_code_cell("audit.run_remaining();"),
            new_code_cell(
                "import pandas as pd\n\n"
                "pd.DataFrame([{'id': f.id, 'status': str(f.status), 's': f.duration_s} for f in audit.findings])"
            ),
            new_code_cell("audit.summary()"),
        ]
        notebook = new_notebook(cells=cells)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, notebooks / f"{number:02d}_bench.ipynb")
    return params, notebooks


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def import_seconds(module: str, env: dict[str, str]) -> float:
    baseline = timed([sys.executable, "-c", "pass"], env)
    return timed([sys.executable, "-c", f"import {module}"], env) - baseline


def cell_seconds(notebook: Path) -> float:
    """Seconds spent executing cells, from papermill's per-cell metadata."""
    cells = json.loads(notebook.read_text())["cells"]
    return sum(c.get("metadata", {}).get("papermill", {}).get("duration") or 0 for c in cells)


def sequential_loop(params: Path, notebooks: Path, out: Path, env: dict[str, str]) -> dict[str, float]:
    out.mkdir()
    totals = {"papermill": 0.0, "nbconvert": 0.0, "cells": 0.0}
    for source in sorted(notebooks.glob("*.ipynb")):
        target = out / source.name
        totals["papermill"] += timed(
            [
                *(str(BIN / "papermill"), str(source), str(target), "-p", "env", "bench"),
                *("-p", "params_path", str(params), "-p", "run_dir", str(out), "--no-progress-bar"),
            ],
            env,
        )
        totals["nbconvert"] += timed([str(BIN / "jupyter"), "nbconvert", "--to", "html", str(target)], env)
        totals["cells"] += cell_seconds(target)
    totals["total"] = totals["papermill"] + totals["nbconvert"]
    return totals


def runner(params: Path, notebooks: Path, out: Path, jobs: int | None) -> dict[str, float]:
    from bench_catalog import SECTIONS

    from recsys_audit.render.report import render_report
    from recsys_audit.run import run_audit

    started = time.perf_counter()
    result = run_audit(params, catalog=SECTIONS, notebooks_dir=notebooks, out_dir=out, jobs=jobs)
    total = time.perf_counter() - started
    render_started = time.perf_counter()
    render_report(result.run_dir)
    return {
        "total": total,
        "notebook_seconds_sum": sum(n.seconds for n in result.notebooks),
        "longest_notebook": max(n.seconds for n in result.notebooks),
        "cells": sum(cell_seconds(p) for p in (result.run_dir / "notebooks").glob("*.ipynb")),
        "render_again": time.perf_counter() - render_started,
        "failed": sum(n.status != "ok" for n in result.notebooks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-runner-"))
    try:
        params, notebooks = write_fixtures(folder, args.notebooks)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
        sys.path.insert(0, str(folder))
        os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # the runner's kernels inherit this process's environment
        print(f"{args.notebooks} notebooks x {CHECKS_PER_SECTION} checks, {os.cpu_count()} cores")
        print("where a fresh process spends its time (imports, seconds):")
        for module in ("papermill", "nbconvert", "ipykernel.kernelapp", "recsys_audit.notebook", "pandas"):
            print(f"  import {module:<24} {import_seconds(module, env):6.2f}")
        empty = folder / "empty.ipynb"
        blank = new_notebook(cells=[new_code_cell("pass")])
        blank.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(blank, empty)
        papermill_empty = timed([str(BIN / "papermill"), str(empty), str(folder / "e.out.ipynb")], env)
        print(f"  papermill CLI, one-cell notebook     {papermill_empty:6.2f}  (process + imports + kernel start)")

        loop = sequential_loop(params, notebooks, folder / "sequential", env)
        print("\nsequential loop (papermill CLI + nbconvert CLI per notebook):")
        print(f"  total {loop['total']:.2f} s = papermill {loop['papermill']:.2f} + nbconvert {loop['nbconvert']:.2f}")
        print(f"  of which executing cells {loop['cells']:.2f} s; the rest is start-up, imports and kernels")

        result = runner(params, notebooks, folder / "audits", args.jobs)
        print(f"\nrunner (in-process papermill, parallel kernels, one report), jobs={args.jobs or 'default'}:")
        print(f"  total {result['total']:.2f} s (notebooks failed: {int(result['failed'])})")
        summed, longest = result["notebook_seconds_sum"], result["longest_notebook"]
        print(f"  notebook times summed {summed:.2f} s, longest {longest:.2f} s")
        print(f"  executing cells {result['cells']:.2f} s; rendering the whole report {result['render_again']:.2f} s")
        print(f"\nspeed-up: {loop['total'] / result['total']:.1f}x")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
