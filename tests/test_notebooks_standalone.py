"""A section notebook runs as it is, as in JupyterLab: no injected parameters, params/local.yaml found from the cwd."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import nbformat
import papermill

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_section_notebook_runs_without_the_runner(sandbox: Callable, tmp_path: Path) -> None:
    instance = sandbox("hardened")
    # a working folder laid out like the kit: params/local.yaml (here: the hardened instance's params)
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "local.yaml").symlink_to(instance.params_path)
    executed = tmp_path / "00_serving_mode.out.ipynb"

    papermill.execute_notebook(
        str(NOTEBOOKS / "00_serving_mode.ipynb"), str(executed), cwd=str(tmp_path), progress_bar=False
    )

    notebook = nbformat.read(executed, as_version=4)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.output_type == "error"]
    shown = "\n".join(str(output.get("data", {}).get("text/html", "")) for output in outputs)
    card = r'id="check-serving\.live-recommend"[^>]*><p class="ra-finding-line"><span class="ra-badge ra-pass"'
    assert re.search(card, shown), shown[:500]
    # the signal-age cell draws only recorded evidence: the hardened sandbox serves artifacts, so no signal age was
    # recorded and the cell says so in a sentence instead of drawing empty axes
    assert not [o for o in outputs if "image/png" in o.get("data", {})]
    assert '<p class="ra-chart-note">No newest signal day age to chart (skip: no tenant declares DB-only' in shown
    # the default run directory is a fresh temporary folder, not the kit's audits/
    assert not (tmp_path / "audits").exists()
