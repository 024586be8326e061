"""Concurrency: three environments audited at once give the same findings as the same three audited one by one.

The environments are three params copies of one hardened instance under different names; each audit is its own
``recsys-audit run`` process writing into one shared output folder.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fault_servers import CliRun, run_cli_audit, write_params_variant

if TYPE_CHECKING:
    from recsys_audit.sandbox.harness import SandboxInstance

pytestmark = pytest.mark.slow

ENVIRONMENTS = ("concurrent-a", "concurrent-b", "concurrent-c")
SECTIONS = [0, 1, 4]  # service, config and database probes; no load test, no time-dependent traffic figures


def statuses(run: CliRun) -> dict[str, str]:
    return {check: finding["status"] for check, finding in run.findings.items()}


@pytest.fixture(scope="module")
def runs(
    sandbox: Callable[[str], SandboxInstance], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[CliRun]]:
    instance = sandbox("hardened")

    def named(env: str) -> Callable[[dict[str, Any]], None]:
        def change(doc: dict[str, Any]) -> None:
            doc["environment"]["name"] = env
            # Three real environments have three scratch databases; these three copies would share the instance's one.
            doc.pop("restore_drill", None)

        return change

    params = [write_params_variant(instance.params_path, env, named(env)) for env in ENVIRONMENTS]
    out: dict[str, Path] = {mode: tmp_path_factory.mktemp(mode) for mode in ("sequential", "parallel")}
    try:
        sequential = [run_cli_audit(path, out["sequential"], sections=SECTIONS, quiet=True) for path in params]
        with ThreadPoolExecutor(max_workers=len(params)) as pool:
            parallel = list(
                pool.map(lambda path: run_cli_audit(path, out["parallel"], sections=SECTIONS, quiet=True), params)
            )
    finally:
        for path in params:
            path.unlink(missing_ok=True)
    return {"sequential": sequential, "parallel": parallel}


def test_each_run_completed_in_its_own_run_directory(runs: dict[str, list[CliRun]]) -> None:
    for mode, results in runs.items():
        run_dirs = [run.run_dir for run in results]
        assert all(run_dirs) and len(set(run_dirs)) == len(ENVIRONMENTS), (mode, [r.stderr for r in results])
        assert [run.document["env"] for run in results] == list(ENVIRONMENTS)
        for run in results:
            # a subset of the sections: partial (4), or fail (1) when a failure is found — never pass, never incomplete
            assert run.exit_code in (1, 4), (mode, run.document.get("blocking"), run.stderr)
            assert all(nb["status"] == "ok" for nb in run.notebooks.values()), run.notebooks
            assert (run.run_dir / "report.html").is_file()


def test_parallel_findings_equal_sequential_findings(runs: dict[str, list[CliRun]]) -> None:
    for sequential, parallel in zip(runs["sequential"], runs["parallel"], strict=True):
        before, during = statuses(sequential), statuses(parallel)
        assert len(before) > 40, before
        differing = {check: (before.get(check), during.get(check)) for check in before.keys() | during.keys()}
        differing = {check: pair for check, pair in differing.items() if pair[0] != pair[1]}
        assert not differing, f"{sequential.document['env']}: (one by one, at once) {differing}"
        assert sequential.document["exit_code"] == parallel.document["exit_code"]


def test_all_three_environments_agree(runs: dict[str, list[CliRun]]) -> None:
    maps = [statuses(run) for run in runs["parallel"]]
    assert maps[0] == maps[1] == maps[2]
