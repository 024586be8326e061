"""``recsys-audit sandbox up / status / down`` end to end, in a subprocess, on non-default ports."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from recsys_audit.params import ParamsError, load_params
from recsys_audit.sandbox.harness import (
    DATED_DEPLOYMENT_FIELDS,
    LOCAL_PARAMS_HEADER,
    local_params_document,
    pid_alive,
    port_in_use,
    read_state,
    stable_params_document,
    write_params,
)

ROOT = Path(__file__).resolve().parents[1]

CLI = [sys.executable, "-m", "recsys_audit.cli", "sandbox"]


def _free_port_block() -> int:
    for _ in range(50):
        base = random.randrange(20000, 60000)
        if not any(port_in_use(base + offset) for offset in range(4)):
            return base
    raise RuntimeError("no block of 4 free ports")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


@pytest.fixture
def instances_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "instances"
    yield directory
    for state_dir in directory.glob("*"):  # never leave processes behind, whatever failed
        _cli("down", "--name", state_dir.name, "--dir", str(directory), cwd=tmp_path)


def test_up_status_down(instances_dir: Path, tmp_path: Path) -> None:
    port = _free_port_block()
    up = _cli(
        "up",
        "--name",
        "cli-test",
        "--dir",
        str(instances_dir),
        "--port",
        str(port),
        "--defect",
        "pprof-exposed",
        cwd=tmp_path,
    )
    assert up.returncode == 0, up.stderr
    assert f"http://127.0.0.1:{port}" in up.stdout
    assert "recsys_auditor:***@" in up.stdout  # the DSN is printed with its password masked
    instance = instances_dir / "cli-test"
    password = (instance / "secrets" / "auditor.dsn").read_text().split(":")[2].split("@")[0]
    assert password not in up.stdout + up.stderr

    # the params file loads and points at this instance
    params = load_params(instance / "params.yaml")
    assert params.target.base_url == f"http://127.0.0.1:{port}"
    assert params.prometheus.url == f"http://127.0.0.1:{port + 2}"
    assert params.database.dsn.reveal().startswith("postgresql://recsys_auditor:")
    assert httpx.get(f"{params.target.base_url}/readyz", timeout=5).status_code == 200
    env = (instance / "service.env").read_text()
    assert env.rstrip().endswith("PPROF_ENABLED=true")  # the defect override comes last

    # Prometheus scrapes the service
    targets = httpx.get(f"{params.prometheus.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("recsys-service", "up")]
    rules = httpx.get(f"{params.prometheus.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert len(rules[0]["rules"]) == 9

    status = _cli("status", "--dir", str(instances_dir), cwd=tmp_path)
    assert "cli-test: running (hardened + pprof-exposed)" in status.stdout
    state = read_state(instance)
    assert state is not None
    pids = {name: info["pid"] for name, info in state["processes"].items()}
    assert set(pids) == {"service", "prometheus"}

    again = _cli("up", "--name", "cli-test", "--dir", str(instances_dir), "--port", str(port), cwd=tmp_path)
    assert again.returncode == 2 and "already running" in again.stderr and "Traceback" not in again.stderr

    down = _cli("down", "--name", "cli-test", "--dir", str(instances_dir), cwd=tmp_path)
    assert down.returncode == 0 and "service" in down.stdout and "postgres" in down.stdout
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not any(port_in_use(port + offset) for offset in range(4))
    assert "cli-test: stopped" in _cli("status", "--dir", str(instances_dir), cwd=tmp_path).stdout


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    result = _cli("up", "--name", "x", "--dir", str(tmp_path), "--defect", "no-such-defect", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown defect 'no-such-defect'" in result.stderr
    missing = _cli("down", "--name", "nothing-here", "--dir", str(tmp_path), cwd=tmp_path)
    assert missing.returncode == 2 and "no instance 'nothing-here'" in missing.stderr


def test_instance_object(sandbox) -> None:  # type: ignore[no-untyped-def]
    instance = sandbox("as-shipped")
    params = load_params(instance.params_path)
    assert params.auth.credentials.viewer is not None and params.auth.credentials.viewer.headers
    assert [(t.id, t.serving_mode) for t in params.tenants] == [("demo", "db_only")]
    assert params.target.production is False and not params.attestations
    assert params.database.service_role == "recsys_app"
    response = httpx.post(
        f"{instance.base_url}/v1/recommend",
        json={"surface": "home", "k": 3, "user": {"user_id": "u1"}},
        headers=params.auth.credentials.viewer.headers,
        timeout=5,
    )
    assert response.status_code == 200 and response.json()["items"]
    requests_log = (instance.directory / "logs" / "requests.jsonl").read_text()
    assert requests_log.count('"/v1/recommend"') >= 12  # the warm-up traffic


# --- the committed params/local.yaml never changes; what ages comes from the instance ----------------------------


def test_committed_local_params_are_stable(tmp_path: Path) -> None:
    regenerated = tmp_path / "local.yaml"
    write_params(regenerated, local_params_document(ROOT), LOCAL_PARAMS_HEADER)
    committed = (ROOT / "params" / "local.yaml").read_text(encoding="utf-8")
    assert regenerated.read_text(encoding="utf-8") == committed  # regenerating it today gives the same bytes
    assert not re.search(r"\d{4}-\d{2}-\d{2}", committed)  # nothing in it ages
    document = yaml.safe_load(committed)
    assert document["include"] == ["../.sandbox/local/dated-facts.yaml"]
    assert "attestations" not in document and not set(DATED_DEPLOYMENT_FIELDS) & set(document["deployment"])
    assert document["restore_drill"]["scratch_dsn"] == "file:../.sandbox/local/secrets/restore-scratch.dsn"
    assert "# The sandbox is production-like" in committed  # why the drill may run on a production target


def test_stable_params_plus_dated_facts_equal_the_instance_params(sandbox) -> None:  # type: ignore[no-untyped-def]
    instance = sandbox("hardened")
    stable_path = instance.directory / "stable-params.yaml"
    document = stable_params_document(
        instance.directory,
        instance.directory,
        name=instance.name,
        ports=instance.ports,
        prometheus_url=instance.prometheus_url,
    )
    write_params(stable_path, document, "# the stable form of this instance's params\n")
    try:
        combined, generated = load_params(stable_path), load_params(instance.params_path)
    finally:
        stable_path.unlink()
    assert combined.include == ["dated-facts.yaml"] and not generated.include
    operator = generated.auth.credentials.operator
    assert operator is not None and operator.bearer is None and operator.api_key is not None  # the API-key path
    assert combined.attestations and combined.attestations == generated.attestations
    assert combined.deployment.last_backup_at is not None
    assert combined.deployment.last_backup_at == generated.deployment.last_backup_at
    assert combined.model_dump(exclude={"include", "source"}) == generated.model_dump(exclude={"include", "source"})


def test_include_problems_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(
        "include: [facts.yaml]\nenvironment: {name: x}\ntarget: {base_url: 'http://127.0.0.1:9'}\n"
        "tenants: [{id: demo, surfaces: [home]}]\n",
        encoding="utf-8",
    )
    with pytest.raises(ParamsError) as missing:
        load_params(tmp_path / "params.yaml")
    assert "include" in str(missing.value) and "facts.yaml does not exist" in str(missing.value)
    assert "\n" not in str(missing.value)
    (tmp_path / "facts.yaml").write_text("include: [more.yaml]\n", encoding="utf-8")
    with pytest.raises(ParamsError, match="without its own include"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "facts.yaml").write_text(
        "attestations: [{check: runbook.diagnostics, by: R, date: 2026-01-02, evidence_url: 'https://w/e'}]\n"
        "target: {timeout_s: 9, base_url: 'http://ignored'}\n",
        encoding="utf-8",
    )
    params = load_params(tmp_path / "params.yaml")
    assert [a.check for a in params.attestations] == ["runbook.diagnostics"]
    assert params.target.timeout_s == 9 and params.target.base_url == "http://127.0.0.1:9"  # the file itself wins
