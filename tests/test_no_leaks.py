"""No leaks: secret values never reach a file of the run directory or the console, even when probes fail.

Every secret field of a params copy points at an ``env:`` canary. Some canaries are the instance's real secrets (so
the probes go deep), others are wrong on purpose (so errors quote the URL or DSN that failed); the deployment's salts
and DSN come from a config copy with canary values. A full audit through the CLI, then every byte it wrote is
searched for every canary.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from fault_servers import CliRun, run_cli_audit, write_params_variant

from recsys_audit.probes.config import parse_env_file
from recsys_audit.sandbox.harness import free_port

if TYPE_CHECKING:
    from recsys_audit.sandbox.harness import SandboxInstance

pytestmark = pytest.mark.slow


def canary(label: str) -> str:
    return f"canary-{label}-{secrets.token_hex(12)}"


def real(instance: SandboxInstance, name: str) -> str:
    return (instance.directory / "secrets" / name).read_text(encoding="utf-8").strip()


@pytest.fixture(scope="module")
def leak_run(
    sandbox: Callable[[str], SandboxInstance], tmp_path_factory: pytest.TempPathFactory
) -> tuple[CliRun, dict[str, str]]:
    instance = sandbox("hardened")
    auditor_dsn = real(instance, "auditor.dsn")
    signing_key = real(instance, "jwt-signing.pem")
    env = {
        "CANARY_VIEWER_TOKEN": real(instance, "viewer.jwt"),
        "CANARY_ADMIN_TOKEN": real(instance, "admin.jwt"),
        "CANARY_OTHER_TENANT_TOKEN": real(instance, "other_tenant.jwt"),
        "CANARY_OPERATOR_TOKEN": canary("operator-token"),  # wrong: refused with 401
        "CANARY_NO_ROLE_API_KEY": canary("api-key"),  # wrong: refused with 401
        "CANARY_SIGNING_KEY": signing_key,
        "CANARY_DSN": auditor_dsn,
        "CANARY_S3_ACCESS_KEY": "AKIA" + secrets.token_hex(8).upper(),
        "CANARY_S3_SECRET_KEY": canary("s3-secret"),
        # wrong: nothing listens there, so the restore drill's error is about this very DSN
        "CANARY_SCRATCH_DSN": f"postgresql://scratch:{canary('scratch-pw')}@127.0.0.1:{free_port()}/scratch",
    }
    config = parse_env_file((instance.directory / "service.env").read_text(encoding="utf-8"))
    salts = {name: canary(name.lower().replace("_", "-")) for name in ("EXPOSURE_HASH_SALT", "API_KEY_HASH_SECRET")}
    salts["EXPERIMENT_ASSIGNMENT_SALT"] = canary("assignment-salt")
    config_db_password = canary("service-db-pw")
    config.update(salts, DATABASE_URL=f"postgresql://recsys_app:{config_db_password}@127.0.0.1:5432/recsys")
    config_copy = instance.directory / f"canary-{secrets.token_hex(4)}.env"
    config_copy.write_text("".join(f"{k}={v}\n" for k, v in config.items()), encoding="utf-8")

    def change(doc: dict[str, Any]) -> None:
        credentials = doc["auth"]["credentials"]
        credentials["viewer"] = {"bearer": "env:CANARY_VIEWER_TOKEN"}
        credentials["admin"] = {"bearer": "env:CANARY_ADMIN_TOKEN"}
        credentials["operator"] = {"bearer": "env:CANARY_OPERATOR_TOKEN"}
        credentials["no_role"] = {"api_key": "env:CANARY_NO_ROLE_API_KEY"}
        doc["auth"]["other_tenant"]["credential"] = {"bearer": "env:CANARY_OTHER_TENANT_TOKEN"}
        doc["auth"]["jwt"]["signing_key"] = "env:CANARY_SIGNING_KEY"
        doc["database"]["dsn"] = "env:CANARY_DSN"
        doc["manifests"]["s3"] = {"access_key": "env:CANARY_S3_ACCESS_KEY", "secret_key": "env:CANARY_S3_SECRET_KEY"}
        doc["restore_drill"] = {"enabled": True, "allow_production": True, "scratch_dsn": "env:CANARY_SCRATCH_DSN"}
        doc["config_sources"][0]["path"] = config_copy.name

    params = write_params_variant(instance.params_path, "canary", change)
    try:
        run = run_cli_audit(params, tmp_path_factory.mktemp("no-leaks"), timeout_s=120, env=env)
    finally:
        params.unlink(missing_ok=True)
        config_copy.unlink(missing_ok=True)
    password = auditor_dsn.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
    key_lines = [line for line in signing_key.splitlines() if line and not line.startswith("-----")]
    values = {
        **{name: value for name, value in env.items() if name not in {"CANARY_DSN", "CANARY_SIGNING_KEY"}},
        "auditor DSN password": password,
        "signing key body": key_lines[1],
        "scratch DSN password": env["CANARY_SCRATCH_DSN"].split(":")[2].split("@")[0],
        "service DSN password (config)": config_db_password,
        **{f"{name} (config)": value for name, value in salts.items()},
    }
    return run, values


def test_the_canary_audit_ran_everything_and_hit_errors(leak_run: tuple[CliRun, dict[str, str]]) -> None:
    run, _ = leak_run
    assert run.run_dir is not None, run.stderr
    assert sorted(nb["section"] for nb in run.notebooks.values()) == list(range(8))
    statuses = {finding["status"] for finding in run.findings.values()}
    assert "error" in statuses, "some probes must fail so that their errors are searched too"
    assert run.findings["db.restore-tested"]["status"] == "error", run.findings["db.restore-tested"]["summary"]
    assert run.findings["auth.api-key-storage"]["status"] != "error", "the real DSN must work"


def test_no_canary_in_any_file_of_the_run_or_on_the_console(leak_run: tuple[CliRun, dict[str, str]]) -> None:
    run, canaries = leak_run
    assert run.run_dir is not None
    files = [path for path in run.run_dir.rglob("*") if path.is_file()]
    assert len(files) >= 10, files
    leaks = []
    for label, value in canaries.items():
        assert len(value) >= 16, label
        needle = value.encode()
        leaks += [f"{label} in {path.relative_to(run.run_dir)}" for path in files if needle in path.read_bytes()]
        leaks += [
            f"{label} on {stream}" for stream, text in (("stdout", run.stdout), ("stderr", run.stderr)) if value in text
        ]
    assert not leaks, leaks


def test_errors_quote_the_failing_target_with_its_secret_masked(leak_run: tuple[CliRun, dict[str, str]]) -> None:
    run, canaries = leak_run
    summary = run.findings["db.restore-tested"]["summary"]
    assert canaries["scratch DSN password"] not in summary
    assert "scratch" in summary or "127.0.0.1" in summary, summary
