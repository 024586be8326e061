"""One sandbox instance, end to end: database, data, files, identities, the service, Prometheus and a params file.

``start_sandbox(directory, profile, defects)`` builds ``<directory>/<name>/`` (layout in sandbox/README.md), starts the
processes, sends a little warm-up traffic so metrics, logs and Prometheus have data, and writes ``params.yaml`` for
the audit. ``SandboxInstance.stop()`` (or :func:`stop_instance` from another process, via ``state.json``) stops
every process it started, by PID.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from recsys_audit.probes.config import parse_env_file
from recsys_audit.sandbox import defects as defect_registry
from recsys_audit.sandbox import deployment, prometheus
from recsys_audit.sandbox.database import (
    MIGRATIONS_DIR,
    SandboxDatabase,
    SandboxDatabaseError,
    finish_database,
    migrations,
    setup_database,
    stop_cluster,
)
from recsys_audit.sandbox.identity import AUDITED_TENANT, OTHER_TENANT, SandboxIdentity, create_identity
from recsys_audit.sandbox.manifests import write_registry
from recsys_audit.sandbox.prometheus import PrometheusError
from recsys_audit.sandbox.seed import TENANTS, SeedOptions, seed

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_NAME = "local"
DEFAULT_PORTS = {"service": 18080, "jwks": 18443, "prometheus": 19090, "postgres": 15433}
STATE_FILE = "state.json"
OWNER = "Platform Team"
DOCS_URL = "https://wiki.example.internal/recsys"
# Manual checklist items a careful operator has attested (hardened profile only).
ATTESTED_CHECKS = (
    "auth.key-rotation-documented",
    "privacy.salt-rotation-attested",
    "privacy.pii-stance-documented",
    "db.migration-preflight-ci",
    "db.schema-rollback-documented",
    "runbook.service-not-ready",
    "runbook.empty-recs",
    "runbook.rollback-config-rules",
    "runbook.stale-manifest",
    "pipelines.publish-owner",
    "rollout.procedures-documented",
    "rollout.ship-gates-documented",
)
_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")

Log = Callable[[str], None]


class SandboxError(Exception):
    """The sandbox could not start or stop; one line that says what failed and where to look."""


def _quiet(message: str) -> None:
    return None


# --- the instance ------------------------------------------------------------------------------------------------


@dataclass
class SandboxInstance:
    name: str
    directory: Path
    profile: str
    defects: tuple[str, ...]
    ports: dict[str, int]
    base_url: str
    metrics_url: str
    prometheus_url: str | None
    dsn: str  # the auditor's DSN (read-only role)
    admin_dsn: str  # superuser connection to the instance database
    service_dsn: str
    params_path: Path
    env_file: Path
    pids: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return parse_env_file(self.env_file.read_text(encoding="utf-8"))

    def stop(self) -> None:
        stop_instance(self.directory, self._processes)

    def restart_server(self, defects: Sequence[str] = ()) -> None:
        """Restart only the HTTP server with these code-level defect switches (see :func:`restart_server`)."""
        restart_server(self, defects)


# --- ports, processes, state --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something listens on (or holds) ``127.0.0.1:port``. SO_REUSEADDR, as the servers set it when they
    bind: a connection of a stopped instance still in TIME_WAIT does not make the port taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _choose_ports(requested: Mapping[str, int] | None) -> dict[str, int]:
    ports = {name: int((requested or {}).get(name) or 0) or free_port() for name in DEFAULT_PORTS}
    taken = sorted(
        f"{name} {port}" for name, port in ports.items() if requested and requested.get(name) and port_in_use(port)
    )
    if taken:
        raise SandboxError(
            f"port(s) already in use on 127.0.0.1: {', '.join(taken)} — stop what uses them or pick others"
        )
    return ports


def _write_state(directory: Path, state: dict[str, Any]) -> None:
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """The process exists, is not a zombie, and (when given) its command line contains ``marker``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker is None or marker in cmdline


def _terminate(pid: int, marker: str, process: subprocess.Popen[bytes] | None, timeout_s: float = 8) -> None:
    if not pid_alive(pid, marker):
        if process is not None:
            process.poll()
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return
        if not pid_alive(pid, marker):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    if process is not None:
        process.wait(timeout=5)


def stop_instance(directory: Path, processes: Mapping[str, subprocess.Popen[bytes]] | None = None) -> list[str]:
    """Stop every process recorded in ``state.json`` (service, Prometheus, PostgreSQL); returns what was stopped."""
    state = read_state(directory)
    if state is None:
        return []
    stopped = []
    for name, info in state.get("processes", {}).items():
        process = (processes or {}).get(name)
        if pid_alive(info["pid"], info["marker"]):
            stopped.append(name)
        _terminate(info["pid"], info["marker"], process)
    database = state.get("database") or {}
    if database.get("mode") == "cluster" and database.get("data_dir"):
        if stop_cluster(Path(database["bindir"]), Path(database["data_dir"])):
            stopped.append("postgres")
        if database.get("outside_home"):
            shutil.rmtree(database["home"], ignore_errors=True)
    elif database.get("mode") == "shared":
        _drop_shared_database(database)
        stopped.append("database")
    state["status"] = "stopped"
    state["stopped_at"] = dt.datetime.now(dt.UTC).isoformat()
    _write_state(directory, state)
    return stopped


def _drop_shared_database(info: Mapping[str, Any]) -> None:
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(info["server_admin"], autocommit=True, connect_timeout=5) as conn:
            for dbname in (info["dbname"], info.get("scratch_dbname")):
                if dbname:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            for role in info["roles"]:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    except psycopg.Error:
        pass


def instance_status(directory: Path) -> dict[str, Any] | None:
    """What ``state.json`` says, with each process checked for being alive."""
    state = read_state(directory)
    if state is None:
        return None
    alive = {name: pid_alive(info["pid"], info["marker"]) for name, info in state.get("processes", {}).items()}
    database = state.get("database") or {}
    if database.get("mode") == "cluster":
        pid_file = Path(database["data_dir"]) / "postmaster.pid"
        try:
            alive["postgres"] = pid_alive(int(pid_file.read_text().split()[0]), "postgres")
        except (OSError, ValueError, IndexError):
            alive["postgres"] = False
    return {**state, "alive": alive, "running": bool(alive) and all(alive.values())}


# --- the env file --------------------------------------------------------------------------------------------------


def render_env(template_path: Path, values: Mapping[str, str], overrides: Mapping[str, str]) -> str:
    """The profile template with placeholders filled, then the sandbox wiring and defect overrides appended."""
    try:
        text = template_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SandboxError(f"{template_path}: cannot read the profile template ({exc.strerror})") from None
    unknown = sorted({name for name in _PLACEHOLDER.findall(text) if name not in values})
    if unknown:
        raise SandboxError(f"{template_path}: unknown placeholder ${{{unknown[0]}}} — use one of {', '.join(values)}")
    text = _PLACEHOLDER.sub(lambda m: values[m.group(1)], text).rstrip() + "\n"
    if overrides:
        text += "\n# --- sandbox wiring and defect switches (later lines win) ---\n"
        text += "".join(f"{name}={value}\n" for name, value in overrides.items())
    return text


# --- the params file -----------------------------------------------------------------------------------------------


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = env.get(name, "").strip().lower()
    return default if not value else value in {"1", "t", "true", "yes", "on"}


def build_params(
    *,
    name: str,
    directory: Path,
    profile: str,
    defects: Sequence[str],
    ports: Mapping[str, int],
    env: Mapping[str, str],
    prometheus_url: str | None,
    service_role: str,
    base: Path,
    auditor_role: str = "recsys_auditor",
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The params document for an instance; every path is relative to ``base`` (where the params file lives)."""
    now = now or dt.datetime.now(dt.UTC)
    hardened = profile == "hardened"
    files = defect_registry.file_settings(profile, defects)
    artifact_mode = _flag(env, "RECSYS_ARTIFACT_MODE_ENABLED")
    dev_auth = _flag(env, "DEV_AUTH_ENABLED")
    jwt_on = _flag(env, "JWT_AUTH_ENABLED", default=True)

    def ref(relative: str) -> str:
        return "file:" + _rel(directory / relative, base)

    auth: dict[str, Any] = {
        "mechanisms": [m for m, on in (("jwt", jwt_on), ("api_key", _flag(env, "API_KEY_ENABLED"))) if on],
        "tenant_source": "claims" if _flag(env, "AUTH_REQUIRE_TENANT_CLAIM") else "header",
        "tenant_header": env.get("TENANT_HEADER_NAME") or "X-Org-Id",
    }
    if jwt_on:
        auth["jwt"] = {
            "jwks_url": env.get("JWT_JWKS_URL"),
            "issuer": env.get("JWT_ISSUER"),
            "audience": env.get("JWT_AUDIENCE"),
            "tenant_claim": "tenant_id",
            "role_claim": "roles",
            "signing_key": ref("secrets/jwt-signing.pem"),
            "ca_bundle": _rel(directory / "jwks" / "ca.pem", base),
            "allow_signing_in_production": True,
        }
        auth["credentials"] = {role: {"bearer": ref(f"secrets/{role}.jwt")} for role in TOKEN_ROLES_IN_PARAMS}
        if hardened and _flag(env, "API_KEY_ENABLED"):  # the operator is an integration: it holds an API key
            auth["credentials"]["operator"] = {"api_key": ref(f"secrets/api-key-{OPERATOR_API_KEY}.key")}
        auth["other_tenant"] = {"tenant": OTHER_TENANT, "credential": {"bearer": ref("secrets/other_tenant.jwt")}}
    elif dev_auth:
        auth["credentials"] = {
            "viewer": {"headers": _dev_headers("sandbox-viewer", AUDITED_TENANT)},
            "no_role": {"headers": _dev_headers("sandbox-no-role", AUDITED_TENANT)},
        }
        auth["other_tenant"] = {
            "tenant": OTHER_TENANT,
            "credential": {"headers": _dev_headers("sandbox-beta-user", OTHER_TENANT)},
        }
    if hardened:
        auth["tenant_source_documented_at"] = f"{DOCS_URL}/tenancy"
        auth["key_rotation_process_documented_at"] = f"{DOCS_URL}/api-key-rotation"

    tenants = [
        {
            "id": tenant,
            "surfaces": surfaces,
            "serving_mode": "artifact" if artifact_mode else "db_only",
            **({"mode_documented_at": f"{DOCS_URL}/serving-mode"} if hardened else {}),
        }
        for tenant, (_, surfaces) in TENANTS.items()
        if tenant == AUDITED_TENANT  # the other tenant only serves the isolation probes (auth.other_tenant)
    ]
    logs: dict[str, Any] = {"service": [_rel(directory / "logs" / "service.log", base)]}
    if env.get("EXPOSURE_LOG_PATH"):
        logs["exposure"] = [_rel(Path(env["EXPOSURE_LOG_PATH"]), base)]
    if env.get("AUDIT_LOG_PATH"):
        logs["audit"] = [_rel(Path(env["AUDIT_LOG_PATH"]), base)]

    current_manifests = _rel(directory / "registry" / "current", base)
    secrets_dir = directory / "secrets"
    outside = not secrets_dir.resolve().is_relative_to(base.resolve())
    params: dict[str, Any] = {
        **({"secrets_root": _rel(secrets_dir, base)} if outside else {}),  # file: secrets outside the params folder
        "environment": {"name": name, "owner": OWNER},
        "target": {
            "base_url": f"http://127.0.0.1:{ports['service']}",
            "timeout_s": 5.0,
            "production": hardened,
            "vantage": "internal",  # the audit runs beside the service, as Prometheus does: no ingress in between
        },
        "auth": auth,
        "tenants": tenants,
        "metrics_url": f"http://127.0.0.1:{ports['service']}/metrics",
        "prometheus": {
            "url": prometheus_url,
            "job": prometheus.JOB,
            "rules_files": [_rel(directory / "prometheus" / "rules" / prometheus.RULES_FILE, base)],
        },
        "database": {
            "dsn": ref("secrets/auditor.dsn"),
            "service_role": service_role,
            "allowed_event_readers": [auditor_role],  # the audit reads event rows by design (privacy sample)
        },
        # a DB-only deployment publishes no manifests
        "manifests": {"template": f"file://{current_manifests}/{{tenant}}/{{surface}}/manifest.json"}
        if artifact_mode
        else {},
        "config_sources": [
            {"kind": "env_file", "path": _rel(directory / "service.env", base)},
            {"kind": "helm_values", "path": _rel(directory / "values.yaml", base)},
        ],
        "logs": logs,
        "policies": {"publish_interval_s": 86400} if hardened else {},
        "privacy": {"allowed_identifiers": ["user_id", "session_id"]} if hardened else {},
        "load_test": {
            # as-shipped: the live run would share the audit identity's tenant bucket (60 requests) with every
            # other probe of the audit, turning their answers into 429s; its recorded report is judged instead
            "allowed": hardened,
            "report": _rel(directory / "loadtest-report.json", base),
            "requests": 200,
            "concurrency": 8,
            "max_seconds": 10,
        },
        "migrations": {
            "directory": _rel(MIGRATIONS_DIR, base),
            "expected_latest": migrations()[-1].version,
        },
        "deployment": {"grafana_dashboard": _rel(directory / "grafana-dashboard.json", base)},
    }
    if prometheus_url is None:
        params["prometheus"].pop("url")
    if hardened:
        manifest_age = dt.timedelta(hours=files.manifest_age_hours)
        params["manifests"]["previous_template"] = (
            f"file://{_rel(directory / 'registry' / 'previous', base)}/{{tenant}}/{{surface}}/"
        )
        params["migrations"]["explicit_job"] = "helm pre-upgrade hook: Job recsys-migrate (migrate up, then preflight)"
        params["deployment"].update(
            {
                "pipelines_schedule": deployment.PIPELINES_SCHEDULE,
                "pipelines_last_success": _iso(now - manifest_age),
                "pipelines_owner": "data-platform on-call (#recsys-pipelines)",
                "backup_tool": "WAL archiving (archive_command) + nightly pg_basebackup",
                "last_backup_at": _iso(now - dt.timedelta(hours=5)),
            }
        )
        if "archive-off" in defects:  # WAL archiving is the backup the params name: without it there is none
            for key in ("backup_tool", "last_backup_at"):
                params["deployment"].pop(key)
        params["restore_drill"] = {
            "enabled": True,
            "scratch_dsn": ref("secrets/restore-scratch.dsn"),
            "allow_production": True,
        }
        attested_on = (now - dt.timedelta(days=20)).date().isoformat()
        params["attestations"] = [
            {"check": check, "by": "Dana Reviewer", "date": attested_on, "evidence_url": f"{DOCS_URL}/evidence/{check}"}
            for check in ATTESTED_CHECKS
        ]
    return params


TOKEN_ROLES_IN_PARAMS = ("viewer", "operator", "admin", "no_role")
OPERATOR_API_KEY = "active-operator"  # seeded for hardened instances (seed.SeedOptions.operator_key)


def _dev_headers(user: str, tenant: str) -> dict[str, str]:
    return {"X-Dev-User-Id": user, "X-Dev-Org-Id": tenant}


# Comments written above top-level params fields: why a value is what it is.
PARAMS_COMMENTS = {
    "restore_drill": "The sandbox is production-like (target.production: true, judged by production rules) but holds\n"
    "only synthetic data, and its scratch database sits beside the instance database: the drill is\n"
    "allowed here. On a real production system, drill against a replica or a restored backup instead.",
}


def write_params(path: Path, params: Mapping[str, Any], header: str) -> None:
    text = yaml.safe_dump(dict(params), sort_keys=False, width=120)
    for key, comment in PARAMS_COMMENTS.items():
        block = "".join(f"# {line}\n" for line in comment.splitlines())
        text = text.replace(f"\n{key}:", f"\n{block}{key}:", 1)
    path.write_text(header + text, encoding="utf-8")


# --- traffic -------------------------------------------------------------------------------------------------------


def _credential_headers(env: Mapping[str, str], directory: Path, tenant: str) -> dict[str, str]:
    if _flag(env, "JWT_AUTH_ENABLED", default=True):
        role = "viewer" if tenant == AUDITED_TENANT else "other_tenant"
        return {"Authorization": "Bearer " + (directory / "secrets" / f"{role}.jwt").read_text().strip()}
    return _dev_headers("sandbox-warmup", tenant)


def warm_up_user_id(i: int) -> str:
    """Every other warm-up request names its user by e-mail address, as some client apps do: the service must hash
    it before logging (the ``pii-unhashed`` defect writes it raw)."""
    return f"shopper{i}@mail.example.com" if i % 2 else f"warmup-user-{i}"


def warm_up(base_url: str, env: Mapping[str, str], directory: Path, requests_per_surface: int = 4) -> int:
    """A few recommend requests per tenant/surface so metrics, exposure logs and Prometheus have data."""
    sent = 0
    with httpx.Client(base_url=base_url, timeout=5) as client:
        for tenant, (_, surfaces) in TENANTS.items():
            headers = {**_credential_headers(env, directory, tenant), "X-Org-Id": tenant}
            for surface in surfaces:
                for i in range(requests_per_surface):
                    body = {
                        "surface": surface,
                        "k": 5,
                        "user": {"user_id": warm_up_user_id(i), "session_id": f"warmup-session-{i}"},
                        "options": {},
                    }
                    client.post("/v1/recommend", json=body, headers=headers)
                    sent += 1
        viewer = _credential_headers(env, directory, AUDITED_TENANT)
        client.get(f"/v1/admin/tenants/{AUDITED_TENANT}/config", headers=viewer)
        if _flag(env, "JWT_AUTH_ENABLED", default=True):  # an operator's cache invalidation: one admin write
            operator = {"Authorization": "Bearer " + (directory / "secrets" / "operator.jwt").read_text().strip()}
            client.post(
                f"/v1/admin/tenants/{AUDITED_TENANT}/cache/invalidate",
                json={"targets": ["config"], "surface": "home"},
                headers=operator,
            )
    return sent + 2


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log_file: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] if log_file.exists() else []
            raise SandboxError(
                f"the sandbox service exited with code {process.returncode}: {' '.join(tail)[:300]} (log: {log_file})"
            )
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SandboxError(f"the sandbox service at {base_url} was not ready after {timeout_s:.0f}s (log: {log_file})")


def _service_environment(env: Mapping[str, str]) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "TZ")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, **env}


# --- start ---------------------------------------------------------------------------------------------------------


def start_sandbox(
    directory: Path,
    profile: str = "hardened",
    defects: Sequence[str] = (),
    *,
    ports: dict[str, int] | None = None,
    prometheus: bool = True,
    rows: int = 0,
    name: str | None = None,
    env_overrides: Mapping[str, str] | None = None,
    params_overrides: Mapping[str, Any] | None = None,
    log: Log = _quiet,
) -> SandboxInstance:
    """Start one instance under ``directory/<name>`` and return it once the service is ready and warmed up.

    ``env_overrides`` are appended to the service env after the defect switches (later lines win);
    ``params_overrides`` are merged into the generated params (mappings key by key, other values replaced)."""
    active = defect_registry.validate(profile, defects)
    name = name or DEFAULT_NAME
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SandboxError(f"instance name '{name}': use letters, digits, '.', '_' and '-'")
    instance_dir = (directory / name).resolve()
    status = instance_status(instance_dir)
    if status and status.get("status") != "stopped" and any(status["alive"].values()):
        raise SandboxError(f"sandbox '{name}' is already running in {instance_dir} — stop it with: sandbox down")
    chosen_ports = _choose_ports(ports)
    _prepare_directory(instance_dir)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    state: dict[str, Any] = {
        "name": name,
        "profile": profile,
        "defects": list(active),
        "directory": str(instance_dir),
        "ports": chosen_ports,
        "status": "starting",
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "processes": {},
    }
    _write_state(instance_dir, state)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        instance = _start(
            instance_dir,
            profile,
            active,
            chosen_ports,
            prometheus,
            rows,
            name,
            state,
            processes,
            timings,
            log,
            dict(env_overrides or {}),
            dict(params_overrides or {}),
        )
    except BaseException as exc:
        stop_instance(instance_dir, processes)
        if isinstance(exc, SandboxDatabaseError | PrometheusError):
            raise SandboxError(str(exc)) from None
        raise
    timings["total"] = time.perf_counter() - started
    instance.timings_s = timings
    state["status"] = "running"
    state["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    _write_state(instance_dir, state)
    return instance


def _prepare_directory(instance_dir: Path) -> None:
    """A clean instance directory (files of an earlier, stopped run are replaced)."""
    if instance_dir.exists():
        for child in instance_dir.iterdir():
            if child.is_symlink() or child.is_file():
                child.unlink()
            else:
                shutil.rmtree(child)
    for sub in ("secrets", "logs", "jwks", "registry", "prometheus"):
        (instance_dir / sub).mkdir(parents=True, exist_ok=True)
    (instance_dir / "secrets").chmod(0o700)
    (instance_dir / "logs" / "exposure").mkdir(mode=0o700, exist_ok=True)


def _start(
    instance_dir: Path,
    profile: str,
    active: tuple[str, ...],
    ports: dict[str, int],
    with_prometheus: bool,
    rows: int,
    name: str,
    state: dict[str, Any],
    processes: dict[str, subprocess.Popen[bytes]],
    timings: dict[str, float],
    log: Log,
    env_overrides: dict[str, str],
    params_overrides: dict[str, Any],
) -> SandboxInstance:
    mark = time.perf_counter()

    def lap(label: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[label] = now - mark
        mark = now

    files = defect_registry.file_settings(profile, active)
    identity = create_identity(instance_dir)
    lap("identity")

    # Prometheus first: it starts while the database and the service come up.
    prometheus_url = None
    if with_prometheus:
        if prometheus.prometheus_binary() is None:
            log("note: the 'prometheus' binary is not installed (Debian package prometheus); running without it")
        else:
            prom_files = prometheus.write_prometheus_files(
                instance_dir / "prometheus", f"127.0.0.1:{ports['service']}", files.alert_set, name
            )
            process = prometheus.start_prometheus(
                prom_files, ports["prometheus"], instance_dir / "logs" / "prometheus.log"
            )
            processes["prometheus"] = process
            state["processes"]["prometheus"] = {"pid": process.pid, "marker": str(prom_files.config)}
            _write_state(instance_dir, state)
            prometheus_url = f"http://127.0.0.1:{ports['prometheus']}"
    else:
        prometheus.write_prometheus_files(
            instance_dir / "prometheus", f"127.0.0.1:{ports['service']}", files.alert_set, name
        )

    db_settings = defect_registry.database_settings(profile, active)
    database = setup_database(instance_dir, ports["postgres"], db_settings, tag=name, log=log)
    state["database"] = _database_state(database)
    _write_state(instance_dir, state)
    lap("database")

    env_text = render_env(
        PROFILES_DIR / f"{profile}.env",
        _placeholders(instance_dir, ports, database, identity),
        _wiring(instance_dir, ports, identity, active) | env_overrides,
    )
    env_file = instance_dir / "service.env"
    env_file.write_text(env_text, encoding="utf-8")
    env_file.chmod(0o600)
    env = parse_env_file(env_text)
    _write_secret(instance_dir / "secrets" / "auditor.dsn", database.auditor_dsn)
    _write_secret(instance_dir / "secrets" / "service.dsn", database.service_dsn)

    options = SeedOptions(
        api_key_hash_secret=env.get("API_KEY_HASH_SECRET", ""),
        subject_hash_salt=env.get("EXPOSURE_HASH_SALT") or "sandbox-subject-salt",
        pii_unhashed="pii-unhashed" in active,
        stale_signals="stale-signals" in active,
        long_lived_key=profile != "hardened",
        operator_key=profile == "hardened",
        **({"exposure_rows": rows, "interaction_rows": rows * 2} if rows else {}),
    )
    with database.connect() as conn:
        seeded = seed(conn, options)
    for key_name, raw in seeded.api_keys.items():
        _write_secret(instance_dir / "secrets" / f"api-key-{key_name}.key", raw)
    finish_database(database, db_settings)
    if profile == "hardened":  # a careful operator drills restores: a scratch database for the audit's drill
        _write_secret(instance_dir / "secrets" / "restore-scratch.dsn", database.create_restore_scratch())
    lap("seed")

    if _flag(env, "RECSYS_ARTIFACT_MODE_ENABLED"):  # pipelines publish manifests only for an artifact-mode service
        write_registry(
            instance_dir / "registry",
            {tenant: surfaces for tenant, (_, surfaces) in TENANTS.items()},
            manifest_age=dt.timedelta(hours=files.manifest_age_hours),
            retained=files.retained_manifests,
        )
        (instance_dir / "registry" / "previous").mkdir(exist_ok=True)
    deployment.write_values(instance_dir / "values.yaml", files, profile == "hardened")
    deployment.write_dashboard(instance_dir / "grafana-dashboard.json", files.dashboard == "complete")
    base_url = f"http://127.0.0.1:{ports['service']}"
    deployment.write_load_report(instance_dir / "loadtest-report.json", files.load_report, base_url)
    if _flag(env, "JWT_AUTH_ENABLED", default=True):
        identity.mint_role_tokens(env.get("JWT_ISSUER", ""), env.get("JWT_AUDIENCE", ""))
    lap("files")

    _start_service(instance_dir, env, base_url, state, processes)
    lap("service")

    warm_up(base_url, env, instance_dir)
    if prometheus_url:
        prometheus.wait_ready(prometheus_url, processes["prometheus"])
        prometheus.wait_scraped(prometheus_url)
    lap("warm_up")

    params = build_params(
        name=name,
        directory=instance_dir,
        profile=profile,
        defects=active,
        ports=ports,
        env=env,
        prometheus_url=prometheus_url,
        service_role=database.roles.service,
        auditor_role=database.roles.auditor,
        base=instance_dir,
    )
    params = _merged_params(params, params_overrides)
    params_path = instance_dir / "params.yaml"
    header = f"# params of sandbox instance '{name}' ({profile}{' + ' + ', '.join(active) if active else ''})\n"
    write_params(params_path, params, header)
    _, dated = split_dated_facts(params)
    write_params(instance_dir / DATED_FACTS_FILE, dated, f"# facts of sandbox instance '{name}' that age\n")
    _check_params(params_path)
    return SandboxInstance(
        name=name,
        directory=instance_dir,
        profile=profile,
        defects=active,
        ports=ports,
        base_url=base_url,
        metrics_url=f"{base_url}/metrics",
        prometheus_url=prometheus_url,
        dsn=database.auditor_dsn,
        admin_dsn=database.admin_conninfo,
        service_dsn=database.service_dsn,
        params_path=params_path,
        env_file=env_file,
        pids={process: info["pid"] for process, info in state["processes"].items()}
        | ({"postgres": database.cluster.pid} if database.cluster and database.cluster.pid else {}),
        _processes=processes,
    )


SERVICE_MARKER = "recsys_audit.sandbox.server"


def _start_service(
    instance_dir: Path,
    env: Mapping[str, str],
    base_url: str,
    state: dict[str, Any],
    processes: dict[str, subprocess.Popen[bytes]],
) -> None:
    """Start the HTTP server with ``env``, record it in ``state.json`` and wait until ``/readyz`` answers."""
    service_log = instance_dir / "logs" / "service.log"
    with service_log.open("ab") as output:
        service = subprocess.Popen(
            [sys.executable, "-m", SERVICE_MARKER],
            env=_service_environment(env),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=instance_dir,
            start_new_session=True,
        )
    processes["service"] = service
    state["processes"]["service"] = {"pid": service.pid, "marker": SERVICE_MARKER}
    _write_state(instance_dir, state)
    _wait_ready(base_url, service, service_log)


def _with_env_line(text: str, name: str, value: str) -> str:
    """``text`` (an env file) with the last ``NAME=`` line set to ``value`` (appended when there is none)."""
    lines = text.rstrip("\n").splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith(f"{name}="):
            lines[index] = f"{name}={value}"
            break
    else:
        lines.append(f"{name}={value}")
    return "\n".join(lines) + "\n"


def restart_server(instance: SandboxInstance, server_defects: Sequence[str]) -> None:
    """Restart only the instance's HTTP server with another set of code-level defect switches (layer ``server``).

    Database, files, Prometheus, environment name and params stay as they are; ``service.env`` changes in its
    ``SANDBOX_DEFECTS`` line only. Like the real service, the restarted server starts a new file-audit hash chain."""
    not_server = sorted(name for name in server_defects if defect_registry.DEFECTS[name].layer != "server")
    if not_server:
        raise SandboxError(f"defect '{not_server[0]}' is not a server switch: only those change with a restart")
    kept = [name for name in instance.defects if defect_registry.DEFECTS[name].layer != "server"]
    active = defect_registry.validate(instance.profile, [*kept, *server_defects])
    state = read_state(instance.directory)
    if state is None:
        raise SandboxError(f"{instance.directory}: no {STATE_FILE} — is the instance running?")
    info = state["processes"]["service"]
    _terminate(info["pid"], info["marker"], instance._processes.get("service"))
    switches = ",".join(defect_registry.server_switches(active))
    instance.env_file.write_text(
        _with_env_line(instance.env_file.read_text(encoding="utf-8"), "SANDBOX_DEFECTS", switches), encoding="utf-8"
    )
    state["defects"] = list(active)
    _start_service(instance.directory, instance.env, instance.base_url, state, instance._processes)
    instance.defects = active
    instance.pids["service"] = instance._processes["service"].pid


def _merged_params(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        merged[key] = _merged_params(current, value) if isinstance(current, dict) and isinstance(value, dict) else value
    return merged


def _placeholders(
    instance_dir: Path, ports: Mapping[str, int], database: SandboxDatabase, identity: SandboxIdentity
) -> dict[str, str]:
    return {
        "API_ADDR": f"127.0.0.1:{ports['service']}",
        "DATABASE_URL": database.service_dsn,
        "DATABASE_URL_FILE": str(instance_dir / "secrets" / "service.dsn"),
        "JWKS_URL": f"https://127.0.0.1:{ports['jwks']}/.well-known/jwks.json",
        "JWT_PUBLIC_KEY_FILE": str(identity.public_key_file),
        "JWKS_CA_FILE": str(identity.ca_file),
        "INSTANCE_DIR": str(instance_dir),
        "LOG_DIR": str(instance_dir / "logs"),
        "REGISTRY_DIR": str(instance_dir / "registry"),
        "API_KEY_HASH_SECRET": secrets.token_hex(32),
        "EXPOSURE_HASH_SALT": secrets.token_hex(32),
        "EXPERIMENT_ASSIGNMENT_SALT": secrets.token_hex(32),
    }


def _wiring(
    instance_dir: Path, ports: Mapping[str, int], identity: SandboxIdentity, active: Sequence[str]
) -> dict[str, str]:
    wiring = {
        "SANDBOX_DEFECTS": ",".join(defect_registry.server_switches(active)),
        "SANDBOX_JWKS_ADDR": f"127.0.0.1:{ports['jwks']}",
        "SANDBOX_JWKS_CERT_FILE": str(identity.server_cert_file),
        "SANDBOX_JWKS_KEY_FILE": str(identity.server_key_file),
        "SANDBOX_JWKS_CA_FILE": str(identity.ca_file),
        "SANDBOX_JWT_PUBLIC_KEY_FILE": str(identity.public_key_file),
        "SANDBOX_JWT_KID": identity.kid,
    }
    return wiring | defect_registry.env_overrides(active)


def _write_secret(path: Path, value: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(value + "\n", encoding="utf-8")


def _database_state(database: SandboxDatabase) -> dict[str, Any]:
    roles = [database.roles.owner, database.roles.service, database.roles.auditor, database.roles.restore]
    if database.cluster is not None:
        cluster = database.cluster
        return {
            "mode": "cluster",
            "data_dir": str(cluster.data_dir),
            "home": str(cluster.home),
            "outside_home": cluster.outside_home,
            "bindir": str(cluster.bindir),
            "port": cluster.port,
            "roles": roles,
        }
    return {
        "mode": "shared",
        "dbname": database.dbname,
        "scratch_dbname": database.scratch_dbname,
        "server_admin": database.server_admin_conninfo,
        "roles": roles,
    }


def _check_params(path: Path) -> None:
    from recsys_audit.params import ParamsError, load_params

    try:
        load_params(path)
    except ParamsError as exc:
        raise SandboxError(f"generated params do not validate: {str(exc).splitlines()[0]}") from None


DATED_FACTS_FILE = "dated-facts.yaml"
DATED_DEPLOYMENT_FIELDS = ("pipelines_last_success", "last_backup_at")


def split_dated_facts(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The params without the fields that age (deployment timestamps, attestations), and those fields as a fragment
    for ``include``."""
    stable = copy.deepcopy(dict(params))
    dated: dict[str, Any] = {}
    deployment = stable.get("deployment", {})
    moved = {key: deployment.pop(key) for key in DATED_DEPLOYMENT_FIELDS if key in deployment}
    if moved:
        dated["deployment"] = moved
    if "attestations" in stable:
        dated["attestations"] = stable.pop("attestations")
    return stable, dated


def stable_params_document(
    directory: Path,
    base: Path,
    *,
    name: str = DEFAULT_NAME,
    ports: Mapping[str, int] = DEFAULT_PORTS,
    prometheus_url: str | None = None,
) -> dict[str, Any]:
    """The params of a hardened instance in ``directory`` without anything that ages: the dated facts come from the
    instance's ``dated-facts.yaml`` (``include``), which every start rewrites. Paths are relative to ``base``."""
    values = {
        "API_ADDR": f"127.0.0.1:{ports['service']}",
        "JWKS_URL": f"https://127.0.0.1:{ports['jwks']}/.well-known/jwks.json",
        "LOG_DIR": str(directory / "logs"),
        "REGISTRY_DIR": str(directory / "registry"),
        "INSTANCE_DIR": str(directory),
    }
    template = (PROFILES_DIR / "hardened.env").read_text(encoding="utf-8")
    env = parse_env_file(_PLACEHOLDER.sub(lambda m: values.get(m.group(1), "x"), template))
    params = build_params(
        name=name,
        directory=directory,
        profile="hardened",
        defects=(),
        ports=ports,
        env=env,
        prometheus_url=prometheus_url or f"http://127.0.0.1:{ports['prometheus']}",
        service_role="recsys_app",
        base=base,
    )
    stable, _ = split_dated_facts(params)
    return {"include": [_rel(directory / DATED_FACTS_FILE, base)], **stable}


def local_params_document(repo_root: Path) -> dict[str, Any]:
    """The content of the committed ``params/local.yaml``: the default instance, paths relative to ``params/``."""
    return stable_params_document(repo_root / ".sandbox" / DEFAULT_NAME, repo_root / "params")


LOCAL_PARAMS_HEADER = """# yaml-language-server: $schema=schema.json
# params of the local sandbox (`recsys-audit sandbox up`): the hardened profile on fixed ports.
# Start it first; the secrets below are files that `sandbox up` writes under .sandbox/local/secrets/, and the facts
# that age (last pipeline success, last backup, attestations) come from .sandbox/local/dated-facts.yaml, which every
# `sandbox up` rewrites — this file itself never changes.
# Regenerate: python -c "from recsys_audit.sandbox.harness import write_local_params; write_local_params()"
"""


def write_local_params(repo_root: Path | None = None) -> Path:
    root = repo_root or Path(__file__).resolve().parents[2]
    path = root / "params" / f"{DEFAULT_NAME}.yaml"
    write_params(path, local_params_document(root), LOCAL_PARAMS_HEADER)
    return path
