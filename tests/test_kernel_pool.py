"""The kernel pool: notebooks share kernels but nothing else, a broken notebook costs only itself, and a pooled
notebook's papermill record is the one a kernel of its own would give. Real kernels, real papermill runs."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from recsys_audit.kernel_pool import JobResult, KernelPool, NotebookJob

PARAMETERS = 'out = ""'


def notebook(folder: Path, name: str, *cells: str) -> Path:
    """A notebook whose first code cell is the parameters cell (``out``), then ``cells``."""
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell(PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    book.cells = [nbformat.v4.new_markdown_cell(f"# {name}"), parameters]
    book.cells += [nbformat.v4.new_code_cell(source) for source in cells]
    path = folder / f"{name}.ipynb"
    nbformat.write(book, path)
    return path


def run_all(pool: KernelPool, sources: list[Path], tmp_path: Path, timeout_s: float = 60) -> dict[str, JobResult]:
    for source in sources:
        output = tmp_path / "out" / source.name
        output.parent.mkdir(exist_ok=True)
        parameters = {"out": str(tmp_path / f"{source.stem}.json")}
        pool.submit(NotebookJob(source, output, parameters, timeout_s, key=source.stem))
    return {result.job.key: result for result in pool.results()}


def recorded(tmp_path: Path, name: str) -> Any:
    return json.loads((tmp_path / f"{name}.json").read_text())


def kernel_of(result: JobResult) -> str:
    return result.kernel.split(",")[0]  # "k0 pid 4242"


MUTATE = [
    # the namespace, the kit's module state (a registered secret, a module attribute), a notebook's own module
    "leak = 'from the first notebook'",
    "from recsys_audit import findings, redaction\n"
    "redaction.register_secret('canary-secret-0123456789')\n"
    "findings.LEAKED = True",
    "import sys\n"
    "from pathlib import Path\n"
    "folder = Path(out).parent / 'mods'\n"
    "folder.mkdir(exist_ok=True)\n"
    "(folder / 'notebook_helper.py').write_text('STATE = []\\n')\n"
    "sys.path.insert(0, str(folder))\n"
    "import notebook_helper\n"
    "notebook_helper.STATE.append('first')",
    # process state: environment, working directory, warning filters, pandas options, an open pyplot figure
    "import os, warnings\nos.environ['RA_LEAK'] = '1'\nos.chdir(Path(out).parent)\nwarnings.simplefilter('error')",
    "import pandas as pd\npd.set_option('display.max_rows', 3)",
    "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.figure()",
    "import json\nPath(out).write_text(json.dumps({'pid': os.getpid()}))",
]

INSPECT = [
    "_left = __import__('recsys_audit.kernel_state', fromlist=['_']).leftovers()",
    "import json, os, sys, warnings\n"
    "import pandas as pd\n"
    "from recsys_audit import findings, redaction\n"
    "seen = {\n"
    "    'pid': os.getpid(),\n"
    "    'leftovers': _left,\n"
    "    'leak' : 'leak' in globals(),\n"
    "    'kit attribute': hasattr(findings, 'LEAKED'),\n"
    "    'secret masked': redaction.redact_text('canary-secret-0123456789') != 'canary-secret-0123456789',\n"
    "    'notebook module': 'notebook_helper' in sys.modules,\n"
    "    'environment': os.environ.get('RA_LEAK'),\n"
    "    'warnings as errors': ('error', None, Warning, None, 0) in warnings.filters,\n"
    "    'pandas rows': pd.get_option('display.max_rows'),\n"
    "    'figures': __import__('matplotlib.pyplot').pyplot.get_fignums() if 'matplotlib.pyplot' in sys.modules"
    " else [],\n"
    "}\n"
    "open(out, 'w').write(json.dumps(seen))",
]


def test_notebooks_share_a_kernel_and_nothing_else(tmp_path: Path) -> None:
    first = notebook(tmp_path, "a_mutates", *MUTATE)
    second = notebook(tmp_path, "b_inspects", *INSPECT)
    with KernelPool(1) as pool:
        results = run_all(pool, [first, second], tmp_path)
    assert [r.status for r in results.values()] == ["ok", "ok"]
    assert kernel_of(results["a_mutates"]) == kernel_of(results["b_inspects"])
    assert results["b_inspects"].kernel.endswith("notebook 2")
    seen = recorded(tmp_path, "b_inspects")
    assert seen.pop("pid") == recorded(tmp_path, "a_mutates")["pid"]  # the same process ...
    assert seen == {  # ... and nothing of the first notebook in it
        "leftovers": ["name out"],  # its own parameter, nothing else
        "leak": False,
        "kit attribute": False,
        "secret masked": False,
        "notebook module": False,
        "environment": None,
        "warnings as errors": False,
        "pandas rows": 60,
        "figures": [],
    }
    executed = nbformat.read(tmp_path / "out" / "b_inspects.ipynb", as_version=4)
    assert [c.execution_count for c in executed.cells if c.cell_type == "code"] == [1, 2, 3, 4]  # as in a new kernel


def test_a_timeout_or_a_killed_kernel_costs_only_that_notebook(tmp_path: Path) -> None:
    pid = "import json, os\nopen(out, 'w').write(json.dumps(os.getpid()))"
    killer = notebook(tmp_path, "a_kills", "import os\nos.kill(os.getpid(), 9)")
    after_kill = notebook(tmp_path, "b_after_kill", pid)
    sleeper = notebook(tmp_path, "c_sleeps", "import time\ntime.sleep(60)")
    after_timeout = notebook(tmp_path, "d_after_timeout", pid)
    with KernelPool(1) as pool:
        results = run_all(pool, [killer, after_kill, sleeper, after_timeout], tmp_path, timeout_s=3)
    statuses = {name: (r.status, r.error) for name, r in results.items()}
    assert statuses == {
        "a_kills": ("died", "DeadKernelError: the kernel died"),
        "b_after_kill": ("ok", None),
        "c_sleeps": ("timeout", "timeout after 3 s"),
        "d_after_timeout": ("ok", None),
    }
    kernels = [kernel_of(results[name]) for name in ("a_kills", "b_after_kill", "d_after_timeout")]
    assert len(set(kernels)) == 3  # a new kernel after the kill and after the timeout
    assert results["d_after_timeout"].kernel.endswith("notebook 1")
    # the timed-out notebook is still recorded, up to where it stopped
    partial = nbformat.read(tmp_path / "out" / "c_sleeps.ipynb", as_version=4)
    assert partial.metadata.papermill["parameters"] == {"out": str(tmp_path / "c_sleeps.json")}


def comparable(path: Path) -> list[dict[str, Any]]:
    """A notebook's cells without what differs from run to run (timings, ids of messages)."""
    book = nbformat.read(path, as_version=4)
    cells = []
    for cell in book.cells:
        papermill = cell.metadata.get("papermill", {})
        cells.append(
            {
                "type": cell.cell_type,
                "source": cell.source,
                "tags": cell.metadata.get("tags", []),
                "status": papermill.get("status"),
                "exception": papermill.get("exception"),
                "count": cell.get("execution_count"),
                "outputs": [{k: v for k, v in o.items() if k != "metadata"} for o in cell.get("outputs", [])],
            }
        )
    return cells


@pytest.mark.parametrize("reuse", [True, False])
def test_a_pooled_record_is_the_one_a_kernel_of_its_own_gives(tmp_path: Path, reuse: bool) -> None:
    warm_up = notebook(tmp_path, "a_before", "x = 41")
    probe = notebook(
        tmp_path,
        "b_record",
        "print('stdout line')\nx = 1 + 1\nx",
        "from IPython.display import HTML, display\ndisplay(HTML('<b>evidence</b>'))",
        "import sys\nprint('stderr line', file=sys.stderr)",
    )
    with KernelPool(1, reuse=reuse) as pool:
        run_all(pool, [warm_up, probe], tmp_path)
    pooled = tmp_path / "out" / "b_record.ipynb"
    book = nbformat.read(pooled, as_version=4)
    assert book.metadata.papermill["parameters"] == {"out": str(tmp_path / "b_record.json")}
    assert "injected-parameters" in book.cells[2].metadata.tags
    cells = comparable(pooled)
    assert [c["count"] for c in cells if c["type"] == "code"] == [1, 2, 3, 4, 5]
    assert cells[3]["outputs"] == [
        {"name": "stdout", "output_type": "stream", "text": "stdout line\n"},
        {"data": {"text/plain": "2"}, "execution_count": 3, "output_type": "execute_result"},
    ]
    # The same notebook alone on a new kernel (papermill's own default engine) gives the same cells.
    import papermill

    alone = tmp_path / "alone.ipynb"
    papermill.execute_notebook(
        str(probe), str(alone), parameters={"out": str(tmp_path / "b_record.json")}, progress_bar=False
    )
    assert comparable(alone) == cells


def without_numbers(value: Any, run_dir: Path | None = None) -> Any:
    """Text with every number and random id replaced (latencies, timings, dates, request ids differ per run), the
    run's own directory named as such, which request was slowest and the pixels of charts left out."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    text = text.replace(str(run_dir), "RUN_DIR") if run_dir else text
    text = re.sub(r"slowest [A-Z]+ \S+", "slowest REQUEST", text)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png", text)  # charts: compared as present
    return re.sub(r"\d+(\.\d+)?", "N", re.sub(r"\b[0-9a-f]{12,}\b", "H", text))


def audited_cells(run_dir: Path, name: str) -> list[Any]:
    cells = []
    for cell in comparable(run_dir / "notebooks" / name):
        outputs = [
            {
                mime: (without_numbers(data, run_dir) if mime.startswith("text/") else mime)
                for mime, data in o["data"].items()
            }
            if "data" in o
            else without_numbers(o, run_dir)
            for o in cell["outputs"]
        ]
        cells.append({**cell, "source": without_numbers(cell["source"], run_dir), "outputs": outputs})
    return cells


def test_a_pooled_audit_is_the_audit_of_one_kernel_per_notebook(audit_result, sandbox, tmp_path: Path) -> None:
    from recsys_audit.run import run_audit

    pooled = audit_result("hardened")
    alone = run_audit(sandbox("hardened").params_path, out_dir=tmp_path, fresh_kernels=True)
    assert all(n.kernel.endswith(", notebook 1") for n in alone.notebooks)
    assert any(not n.kernel.endswith(", notebook 1") for n in pooled.notebooks)  # kernels were shared
    assert (alone.verdict, alone.exit_code) == (pooled.verdict, pooled.exit_code)

    def finding(f: Any) -> tuple[Any, ...]:
        return f.id, f.status, f.severity, without_numbers(f.summary), sorted(f.evidence)

    assert [finding(f) for f in alone.findings] == [finding(f) for f in pooled.findings]
    names = sorted(p.name for p in (pooled.run_dir / "notebooks").glob("*.ipynb"))
    assert names == sorted(p.name for p in (alone.run_dir / "notebooks").glob("*.ipynb")) and len(names) == 8
    for name in names:
        assert audited_cells(alone.run_dir, name) == audited_cells(pooled.run_dir, name), name


@pytest.mark.parametrize(("cpu_max", "cap"), [("50000 100000\n", 1), ("150000 100000\n", 2), ("max 100000\n", None)])
def test_the_pool_fits_a_containers_cpu_limit(tmp_path: Path, monkeypatch, cpu_max: str, cap: int | None) -> None:
    import os

    from recsys_audit import kernel_pool

    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(kernel_pool, "CGROUP_CPU_MAX", str(tmp_path / "cpu.max"))
    expected = affinity if cap is None else min(affinity, cap)
    assert kernel_pool.usable_cores() == expected
    assert kernel_pool.default_size(notebook_count=1) == 1
    assert kernel_pool.default_size(notebook_count=64) == expected


def test_closing_early_drops_the_notebooks_not_started(tmp_path: Path) -> None:
    """A caller that gives up (Ctrl-C, an error) waits for the running notebook only, not for the queue."""
    started = tmp_path / "started"
    slow = notebook(tmp_path, "a_slow", f"open({str(started)!r}, 'w').close()\nimport time\ntime.sleep(2)")
    quick = [notebook(tmp_path, f"b_quick_{n}", "x = 1") for n in range(3)]
    (tmp_path / "out").mkdir()
    pool = KernelPool(1)
    for source in [slow, *quick]:
        pool.submit(NotebookJob(source, tmp_path / "out" / source.name, {"out": ""}, 60, key=source.stem))
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pool.close()
    assert started.exists()
    assert sorted(p.name for p in (tmp_path / "out").glob("*.ipynb")) == ["a_slow.ipynb"]
