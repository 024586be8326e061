"""The audit's own traffic is marked and its traces are few and findable: every exposure record an audit leaves on
the target carries a request id starting ``recsys-audit-``, and only the live recommends listed in the README leave
one (a broken cross-tenant control would not: that probe uses ``/v1/recommend/validate``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fault_servers import run_cli_audit, write_params_variant

from recsys_audit.probes.http import REQUEST_ID_PREFIX

if TYPE_CHECKING:
    from recsys_audit.sandbox.harness import SandboxInstance

pytestmark = pytest.mark.slow


def exposure_request_ids(instance: SandboxInstance) -> list[str]:
    folder = instance.directory / "logs" / "exposure"
    return [
        json.loads(line)["request_id"]
        for path in sorted(folder.glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def test_an_audit_leaves_only_marked_exposure_records(
    sandbox: Callable[[str], SandboxInstance], tmp_path: Path
) -> None:
    instance = sandbox("code-defects")  # the cross-tenant holes are open here: a refused probe still leaves nothing
    before = len(exposure_request_ids(instance))

    def no_load_test(doc: dict[str, Any]) -> None:
        doc["load_test"]["allowed"] = False

    params = write_params_variant(instance.params_path, "traffic", no_load_test)
    try:
        run = run_cli_audit(params, tmp_path, sections=[0, 1, 5, 7], timeout_s=120)
    finally:
        params.unlink(missing_ok=True)
    assert run.run_dir is not None, run.stderr
    new = exposure_request_ids(instance)[before:]
    assert new and all(request_id.startswith(REQUEST_ID_PREFIX) for request_id in new), new
    assert len(set(new)) == len(new), "one request id per request"
    # serving.live-recommend (2 surfaces, shared with mode-observed), the obs.metrics-series warm-up, runbook
    # diagnostics (2) and the rollout section's shared answers (2 tenant/surfaces of the audited tenant)
    assert len(new) == 7, new
