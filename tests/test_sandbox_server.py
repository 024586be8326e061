"""The sandbox recsys-service, run for real: uvicorn subprocesses on free loopback ports over a fresh database built
from the sandbox migrations (row-level security forced, a non-owner service role), with the shipped profiles."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from psycopg import sql

from recsys_audit.sandbox.database import RoleNames, apply_migrations, enable_row_level_security, grant_privileges
from recsys_audit.sandbox.file_logs import ExposureLog, chain_hash
from recsys_audit.sandbox.harness import free_port
from recsys_audit.sandbox.identity import SandboxIdentity, create_identity
from recsys_audit.sandbox.manifests import write_registry
from recsys_audit.sandbox.settings import StartupError, load_settings
from recsys_audit.sandbox.store import check_startup

SERVER_ADMIN_DSN = os.environ.get("RECSYS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PROFILES = Path(__file__).resolve().parents[1] / "recsys_audit" / "sandbox" / "profiles"
ISSUER, AUDIENCE = "https://login.sandbox.recsys.example/", "recsys-service"
HASH_SECRET = secrets.token_hex(32)
EXPOSURE_SALT = secrets.token_hex(32)
HEX64 = re.compile(r"^[0-9a-f]{64}$")
PROBLEM = "application/problem+json"
RECOMMEND = {"surface": "home", "k": 5, "user": {"user_id": "alice@example.com"}, "options": {}}


# --- infrastructure ----------------------------------------------------------------------------------------------


@dataclass
class SeededDatabase:
    name: str
    roles: RoleNames
    tenants: dict[str, str]  # external id -> uuid
    api_keys: dict[str, str]  # label -> raw key

    def dsn(self, role: str = "postgres") -> str:
        return f"postgresql://{role}@127.0.0.1:5432/{self.name}"

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def _seed(conn: psycopg.Connection[Any], tenants: dict[str, str], api_keys: dict[str, str]) -> None:
    for external_id in ("demo", "beta", "gamma"):
        tenant_id = conn.execute(
            "INSERT INTO tenants (external_id, name) VALUES (%s, %s) RETURNING id::text", (external_id, external_id)
        ).fetchone()[0]
        tenants[external_id] = tenant_id
        for kind, table, pointer, column in (
            ("config", "tenant_config_versions", "tenant_configs_current", "config_version_id"),
            ("rules", "tenant_rule_versions", "tenant_rules_current", "rules_version_id"),
        ):
            document = {"weights": {"pop": 1.0}, "owner": external_id} if kind == "config" else {"pins": []}
            version = conn.execute(
                f"INSERT INTO {table} (tenant_id, {kind}, created_by_sub) VALUES (%s, %s, 'seed') RETURNING id",
                (tenant_id, json.dumps(document)),
            ).fetchone()[0]
            conn.execute(
                f"INSERT INTO {pointer} (tenant_id, {column}, updated_by_sub) VALUES (%s, %s, 'seed')",
                (tenant_id, version),
            )
    demo = tenants["demo"]
    for rank in range(1, 11):  # item-0001 is the most popular
        conn.execute(
            "INSERT INTO item_popularity_daily (tenant_id, namespace, item_id, day, score) "
            "VALUES (%s, 'home', %s, current_date, %s)",
            (demo, f"item-{rank:04d}", 100 - rank),
        )
    conn.execute(
        "INSERT INTO item_tags (tenant_id, namespace, item_id, tags) VALUES (%s, 'home', 'item-0002', '{sale}')",
        (demo,),
    )
    keys = {
        "demo_viewer": ("demo", ["viewer"], None, None),
        "demo_operator": ("demo", ["operator"], None, None),
        "demo_revoked": ("demo", ["viewer"], "now() - interval '1 day'", None),
        "demo_expired": ("demo", ["viewer"], None, "now() - interval '1 hour'"),
        "beta_viewer": ("beta", ["viewer"], None, None),
    }
    for label, (tenant, roles, revoked, expires) in keys.items():
        raw = f"rk_{label}_{secrets.token_hex(8)}"
        api_keys[label] = raw
        key_hash = hmac.new(HASH_SECRET.encode(), raw.encode(), hashlib.sha256).hexdigest()
        conn.execute(
            f"INSERT INTO tenant_api_keys (tenant_id, name, key_hash, roles, revoked_at, expires_at) "
            f"VALUES (%s, %s, %s, %s, {revoked or 'NULL'}, {expires or 'NULL'})",
            (tenants[tenant], label, key_hash, roles),
        )


@pytest.fixture(scope="module")
def database() -> Iterator[SeededDatabase]:
    tag = f"srv{os.getpid()}_{secrets.token_hex(3)}"
    db = SeededDatabase(f"recsys_server_test_{tag}", RoleNames.suffixed(tag), {}, {})
    with psycopg.connect(SERVER_ADMIN_DSN, autocommit=True) as admin:
        for role in (db.roles.owner, db.roles.service, db.roles.auditor):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db.name), sql.Identifier(db.roles.owner))
        )
    try:
        with psycopg.connect(db.dsn(), autocommit=True) as conn:
            apply_migrations(conn, db.roles.owner)
            grant_privileges(conn, db.roles)
            enable_row_level_security(conn, db.roles)
            _seed(conn, db.tenants, db.api_keys)
        yield db
    finally:
        with psycopg.connect(SERVER_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name)))
            for role in (db.roles.auditor, db.roles.service, db.roles.owner):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def render_profile(name: str, values: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (PROFILES / f"{name}.env").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")

        def fill(match: re.Match[str]) -> str:
            assert match.group(1) in values, f"{name}.env: unknown placeholder ${{{match.group(1)}}}"
            return values[match.group(1)]

        env[key.strip()] = re.sub(r"\$\{([A-Z_]+)\}", fill, value.strip())
    return env


@dataclass
class Server:
    base_url: str
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10, **kwargs)

    def metrics(self) -> str:
        with self.client() as client:
            return client.get("/metrics").text

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_server(env: dict[str, str], log_dir: Path) -> Server:
    log_dir.mkdir(parents=True, exist_ok=True)
    stderr = (log_dir / "service.log").open("wb")
    full_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys_audit.sandbox.server"], env=full_env, stdout=stderr, stderr=stderr
    )
    server = Server(f"http://{env['API_ADDR']}", env, log_dir, process)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {(log_dir / 'service.log').read_text()}")
        try:
            if httpx.get(f"{server.base_url}/livez", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"server did not come up: {(log_dir / 'service.log').read_text()}")


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> SandboxIdentity:
    return create_identity(tmp_path_factory.mktemp("identity"))


def token(identity: SandboxIdentity, roles: list[str], tenant: str = "demo", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"user-{'-'.join(roles) or 'none'}", "tenant_id": tenant}
    claims |= {"roles": roles, "iat": now, "exp": now + 600} | overrides
    claims = {key: value for key, value in claims.items() if value is not None}
    return jwt.encode(claims, identity.signing_key_file.read_bytes(), algorithm="RS256", headers={"kid": identity.kid})


def hs256_with_public_key(claims: dict[str, Any], public_pem: bytes) -> str:
    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment(claims)}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture(scope="module")
def hardened(
    database: SeededDatabase, identity: SandboxIdentity, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hardened")
    registry = write_registry(root / "registry", {"demo": ["home"]})
    jwks_port = free_port()
    env = render_profile(
        "hardened",
        {
            "API_ADDR": f"127.0.0.1:{free_port()}",
            "DATABASE_URL": database.dsn(database.roles.service),
            "JWKS_URL": f"https://127.0.0.1:{jwks_port}/.well-known/jwks.json",
            "JWT_PUBLIC_KEY_FILE": str(identity.public_key_file),
            "LOG_DIR": str(root / "logs"),
            "REGISTRY_DIR": str(registry.root),
            "API_KEY_HASH_SECRET": HASH_SECRET,
            "EXPOSURE_HASH_SALT": EXPOSURE_SALT,
            "EXPERIMENT_ASSIGNMENT_SALT": secrets.token_hex(32),
        },
    )
    env |= {
        "SANDBOX_JWKS_ADDR": f"127.0.0.1:{jwks_port}",
        "SANDBOX_JWKS_CERT_FILE": str(identity.server_cert_file),
        "SANDBOX_JWKS_KEY_FILE": str(identity.server_key_file),
        "AUDIT_LOG_FSYNC": "false",
    }
    server = start_server(env, root / "logs")
    yield server
    server.stop()


def as_shipped_env(database: SeededDatabase, log_dir: Path) -> dict[str, str]:
    return render_profile(
        "as-shipped",
        {"API_ADDR": f"127.0.0.1:{free_port()}", "DATABASE_URL": database.dsn(), "LOG_DIR": str(log_dir)},
    )


@pytest.fixture(scope="module")
def as_shipped(database: SeededDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("as-shipped")
    server = start_server(as_shipped_env(database, root / "logs"), root / "logs")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def defective(database: SeededDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """as-shipped plus API keys, logs, every code-level defect and a tiny backpressure budget."""
    root = tmp_path_factory.mktemp("defective")
    env = as_shipped_env(database, root / "logs") | {
        "SANDBOX_DEFECTS": "cross-tenant-admin,detailed-health-public,pii-unhashed,missing-meta,stale-manifest",
        "API_KEY_ENABLED": "true",
        "API_KEY_HASH_SECRET": HASH_SECRET,
        "EXPOSURE_LOG_ENABLED": "true",
        "EXPOSURE_LOG_PATH": str(root / "logs" / "exposure") + "/",
        "EXPOSURE_HASH_SALT": EXPOSURE_SALT,
        "RECSYS_BACKPRESSURE_MAX_INFLIGHT": "1",
        "RECSYS_BACKPRESSURE_MAX_QUEUE": "1",
        "RECSYS_BACKPRESSURE_WAIT_TIMEOUT": "20ms",
        "RECSYS_BACKPRESSURE_RETRY_AFTER": "2s",
        "SANDBOX_SERVICE_TIME_MS": "60",
    }
    server = start_server(env, root / "logs")
    yield server
    server.stop()


def assert_problem(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body.get("code") == code
    assert body["status"] == status
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    if code:
        assert body["type"] == "https://errors.recsys.example/problem/" + code.lower().replace("_", "-")
    return body


def metric_value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


# --- startup refusals --------------------------------------------------------------------------------------------

BASE_ENV = {"API_ADDR": "127.0.0.1:18000", "DATABASE_URL": "postgresql://x@127.0.0.1/x", "DEV_AUTH_ENABLED": "true"}


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"JWT_AUTH_ENABLED": "true"}, "DEV_AUTH_ENABLED"),
        ({"JWT_AUTH_ENABLED": "false", "DEV_AUTH_ENABLED": "false"}, "AUTH_REQUIRED"),
        ({"JWT_AUTH_ENABLED": "false", "PPROF_ENABLED": "true", "API_ADDR": ":8000"}, "PPROF_ENABLED"),
        ({"JWT_AUTH_ENABLED": "false", "API_ADDR": "0.0.0.0:8000"}, "API_ADDR"),
        ({"JWT_AUTH_ENABLED": "false", "AUDIT_LOG_ENABLED": "true"}, "AUDIT_LOG_PATH"),
        ({"JWT_AUTH_ENABLED": "false", "EXPOSURE_LOG_ENABLED": "true"}, "EXPOSURE_LOG_PATH"),
        ({"JWT_AUTH_ENABLED": "false", "EXPOSURE_LOG_PATH": "/tmp/x", "EXPOSURE_LOG_FORMAT": "csv"}, "FORMAT"),
        ({"JWT_AUTH_ENABLED": "false", "RECSYS_ARTIFACT_MODE_ENABLED": "true"}, "MANIFEST_TEMPLATE"),
        (
            {
                "JWT_AUTH_ENABLED": "false",
                "RECSYS_ARTIFACT_MODE_ENABLED": "1",
                "RECSYS_ARTIFACT_MANIFEST_TEMPLATE": "file:///m",
            },
            "RECSYS_ARTIFACT_FILE_ROOT",
        ),
        ({"JWT_AUTH_ENABLED": "false", "ENV": "production", "EXPOSURE_LOG_PATH": "/tmp/x"}, "EXPOSURE_HASH_SALT"),
        ({"JWT_AUTH_ENABLED": "false", "ENV": "production", "EXPOSURE_HASH_SALT": ""}, "EXPERIMENT_ASSIGNMENT_SALT"),
        ({"JWT_AUTH_ENABLED": "yes"}, "JWT_AUTH_ENABLED"),
        ({"JWT_AUTH_ENABLED": "false", "RECSYS_BACKPRESSURE_WAIT_TIMEOUT": "200"}, "RECSYS_BACKPRESSURE_WAIT_TIMEOUT"),
        ({"JWT_AUTH_ENABLED": "false", "TENANT_RATE_LIMIT_CAPACITY": "lots"}, "TENANT_RATE_LIMIT_CAPACITY"),
        (
            {"JWT_AUTH_ENABLED": "false", "EXPERIMENT_CONFIG_JSON": '[{"id": "x", "traffic_percent": 120}]'},
            "EXPERIMENT",
        ),
        (
            {"DEV_AUTH_ENABLED": "false", "JWT_JWKS_URL": "http://idp/jwks", "JWT_ISSUER": "i", "JWT_AUDIENCE": "a"},
            "https",
        ),
    ],
)
def test_invalid_configuration_refuses_to_start(overrides: dict[str, str], names: str) -> None:
    with pytest.raises(StartupError) as refused:
        load_settings(BASE_ENV | overrides)
    message = str(refused.value)
    assert names in message and "\n" not in message


def test_jwks_allow_list_is_enforced_even_when_insecure_is_allowed(tmp_path: Path) -> None:
    env = BASE_ENV | {"DEV_AUTH_ENABLED": "false", "JWT_ISSUER": "i", "JWT_AUDIENCE": "a"}
    env |= {"JWT_JWKS_URL": "http://idp.internal/jwks", "AUTH_ALLOW_INSECURE_JWKS": "true"}
    with pytest.raises(StartupError, match="AUTH_JWKS_ALLOWED_HOSTS"):
        load_settings(env | {"AUTH_JWKS_ALLOWED_HOSTS": "login.example.com"})


def test_refused_start_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], **BASE_ENV, "JWT_AUTH_ENABLED": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "recsys_audit.sandbox.server"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("recsys-sandbox: JWT_AUTH_ENABLED and DEV_AUTH_ENABLED")


def test_unreachable_database_refuses_to_start() -> None:
    env = {"PATH": os.environ["PATH"], **BASE_ENV, "JWT_AUTH_ENABLED": "false"}
    env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    result = subprocess.run(
        [sys.executable, "-m", "recsys_audit.sandbox.server"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "database unreachable" in result.stderr and "Traceback" not in result.stderr


# --- hardened: JWT, API keys, tenancy, RBAC ----------------------------------------------------------------------


def test_hardened_jwt_recommend_serves_artifacts_with_versions(
    hardened: Server, identity: SandboxIdentity, database: SeededDatabase
) -> None:
    with hardened.client() as client:
        response = client.post(
            "/v1/recommend", json=RECOMMEND, headers=bearer(token(identity, ["viewer"])) | {"X-Request-Id": "req-42"}
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "req-42"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    # the popularity artifact ranks item-0001 first (score 100/(i+0))
    assert [item["item_id"] for item in body["items"]] == [f"item-{i:04d}" for i in range(1, 6)]
    meta = body["meta"]
    config_etag = database.rows(
        "SELECT v.etag FROM tenant_configs_current c JOIN tenant_config_versions v ON v.id = c.config_version_id "
        "WHERE c.tenant_id = %s",
        database.tenants["demo"],
    )[0][0]
    assert meta["config_version"] == config_etag and HEX64.match(meta["rules_version"])
    assert meta | {"config_version": None, "rules_version": None} == {
        "tenant_id": "demo",
        "surface": "home",
        "segment": "default",
        "request_id": "req-42",
        "algo_version": "recsys-algo@1.4.2",
        "config_version": None,
        "rules_version": None,
        "counts": {"returned": 5},
    }
    assert body["warnings"] == [{"code": "DEFAULT_APPLIED", "detail": "segment defaulted to default"}]
    metrics = hardened.metrics()
    assert metric_value(metrics, "recsys_artifact_manifest_artifacts") == 2
    assert 7000 < (metric_value(metrics, "recsys_artifact_manifest_age_seconds") or 0) < 7400  # published 2 h ago


def test_hardened_rejects_bad_tokens_without_code(hardened: Server, identity: SandboxIdentity) -> None:
    public_pem = identity.public_key_file.read_bytes()
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "tenant_id": "demo", "exp": now + 600}
    forged = [
        jwt.encode(claims, "", algorithm="none"),  # type: ignore[arg-type]
        hs256_with_public_key(claims, public_pem),  # algorithm confusion
        jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": identity.kid}),
        token(identity, ["viewer"], iss="https://evil.example/"),
        token(identity, ["viewer"], aud="another-service"),
        token(identity, ["viewer"], exp=now - 3600),
        token(identity, ["viewer"], exp=None),
        token(identity, ["viewer"], sub=None),
    ]
    with hardened.client() as client:
        for value in forged:
            body = assert_problem(client.post("/v1/recommend", json=RECOMMEND, headers=bearer(value)), 401, None)
            assert body["detail"] == "invalid authentication token"
        assert_problem(client.post("/v1/recommend", json=RECOMMEND), 401, "RECSYS_AUTH_REQUIRED")
        dev = {"X-Dev-User-Id": "dev", "X-Dev-Org-Id": "demo"}
        assert_problem(client.post("/v1/recommend", json=RECOMMEND, headers=dev), 401, "RECSYS_AUTH_REQUIRED")
        header_only = client.post("/v1/recommend", json=RECOMMEND, headers={"X-Org-Id": "demo"})
        assert_problem(header_only, 401, "RECSYS_AUTH_REQUIRED")  # no dev auth: a tenant header is no identity


def test_hardened_api_keys(hardened: Server, database: SeededDatabase) -> None:
    keys = database.api_keys
    with hardened.client() as client:
        ok = client.post("/v1/recommend", json=RECOMMEND, headers={"X-API-Key": keys["demo_viewer"]})
        assert ok.status_code == 200 and ok.json()["meta"]["tenant_id"] == "demo"
        for label in ("demo_revoked", "demo_expired"):
            response = client.post("/v1/recommend", json=RECOMMEND, headers={"X-API-Key": keys[label]})
            assert_problem(response, 401, "RECSYS_AUTH_INVALID")
        unknown = client.post("/v1/recommend", json=RECOMMEND, headers={"X-API-Key": "rk_guess"})
        assert_problem(unknown, 401, "RECSYS_AUTH_INVALID")
        wrong_tenant = {"X-API-Key": keys["demo_viewer"], "X-Org-Id": "beta"}
        assert_problem(
            client.post("/v1/recommend", json=RECOMMEND, headers=wrong_tenant), 403, "RECSYS_TENANT_SCOPE_MISMATCH"
        )
        by_uuid = {"X-API-Key": keys["demo_viewer"], "X-Org-Id": database.tenants["demo"]}
        assert client.post("/v1/recommend", json=RECOMMEND, headers=by_uuid).status_code == 200


def test_hardened_tenant_scope(hardened: Server, identity: SandboxIdentity) -> None:
    viewer = bearer(token(identity, ["viewer"]))
    with hardened.client() as client:
        mismatch = client.post("/v1/recommend", json=RECOMMEND, headers=viewer | {"X-Org-Id": "beta"})
        assert_problem(mismatch, 403, "RECSYS_TENANT_SCOPE_MISMATCH")
        several = client.post("/v1/recommend", json=RECOMMEND, headers=viewer | {"X-Org-Id": "demo,beta"})
        assert_problem(several, 403, "RECSYS_TENANT_SCOPE_INVALID")
        no_claim = bearer(token(identity, ["viewer"], tenant_id=None))
        response = client.post("/v1/recommend", json=RECOMMEND, headers=no_claim | {"X-Org-Id": "demo"})
        assert_problem(response, 403, "RECSYS_TENANT_SCOPE_REQUIRED")


def test_hardened_admin_rbac_and_cross_tenant_refusal(
    hardened: Server, identity: SandboxIdentity, database: SeededDatabase
) -> None:
    with hardened.client() as client:
        config = client.get("/v1/admin/tenants/demo/config", headers=bearer(token(identity, ["viewer"])))
        assert config.status_code == 200
        assert HEX64.match(config.headers["etag"]) and config.json()["config_version"] == config.headers["etag"]
        assert config.json()["config"] == {"weights": {"pop": 1.0}, "owner": "demo"}
        no_role = client.get("/v1/admin/tenants/demo/config", headers=bearer(token(identity, [])))
        assert_problem(no_role, 403, "RECSYS_FORBIDDEN")
        put = client.put("/v1/admin/tenants/demo/config", json={}, headers=bearer(token(identity, ["viewer"])))
        assert_problem(put, 403, "RECSYS_FORBIDDEN")
        other = client.get("/v1/admin/tenants/beta/config", headers=bearer(token(identity, ["admin"])))
        assert_problem(other, 403, "RECSYS_TENANT_SCOPE_MISMATCH")
        api_key_other = client.get(
            "/v1/admin/tenants/beta/rules", headers={"X-API-Key": database.api_keys["demo_viewer"]}
        )
        assert_problem(api_key_other, 403, "RECSYS_TENANT_SCOPE_MISMATCH")
        audit = client.get("/v1/admin/tenants/demo/audit", headers=bearer(token(identity, ["viewer"])))
        assert audit.status_code == 200 and audit.json()["tenant_id"] == "demo"


def test_hardened_put_with_if_match_versions_and_audits(
    hardened: Server, identity: SandboxIdentity, database: SeededDatabase
) -> None:
    operator = bearer(token(identity, ["operator"], tenant="gamma", sub="ops-1"))
    gamma = database.tenants["gamma"]
    versions_before = database.rows("SELECT count(*) FROM tenant_config_versions WHERE tenant_id = %s", gamma)[0][0]
    with hardened.client() as client:
        current = client.get("/v1/admin/tenants/gamma/config", headers=operator).headers["etag"]
        stale = client.put(
            "/v1/admin/tenants/gamma/config", json={"weights": {"pop": -1}}, headers=operator | {"If-Match": "0" * 64}
        )
        assert_problem(stale, 409, "RECSYS_VERSION_MISMATCH")
        invalid = client.put(
            "/v1/admin/tenants/gamma/config", json={"weights": {"pop": -1}}, headers=operator | {"If-Match": current}
        )
        assert_problem(invalid, 422, "RECSYS_INVALID_CONFIG")
        new_doc = {"weights": {"pop": 2.0}, "algo": "blend"}
        updated = client.put(
            "/v1/admin/tenants/gamma/config", json=new_doc, headers=operator | {"If-Match": f'"{current}"'}
        )
        assert updated.status_code == 200, updated.text
        new_etag = updated.headers["etag"]
        assert HEX64.match(new_etag) and new_etag != current
        invalidated = client.post(
            "/v1/admin/tenants/gamma/cache/invalidate", json={"targets": ["config", "rules"]}, headers=operator
        )
        assert invalidated.json() == {
            "tenant_id": "gamma",
            "targets": ["config", "rules"],
            "status": "applied",
            "invalidated": {"config": True, "rules": True},
        }
        assert_problem(
            client.post("/v1/admin/tenants/gamma/cache/invalidate", json={"targets": ["x"]}, headers=operator),
            422,
            "RECSYS_INVALID_TARGETS",
        )
        entries = client.get("/v1/admin/tenants/gamma/audit?limit=5", headers=operator).json()["entries"]
    assert database.rows("SELECT count(*) FROM tenant_config_versions WHERE tenant_id = %s", gamma)[0][0] == (
        versions_before + 1
    )
    pointer = database.rows(
        "SELECT v.etag FROM tenant_configs_current c JOIN tenant_config_versions v ON v.id = c.config_version_id "
        "WHERE c.tenant_id = %s",
        gamma,
    )
    assert pointer == [(new_etag,)]
    assert [entry["action"] for entry in entries[:2]] == ["cache.invalidate", "config.update"]
    assert entries[1]["actor_sub"] == "ops-1" and entries[1]["after_state"] == new_doc
    assert entries[1]["ip"] == "127.0.0.1"

    # file audit: only the writes that passed RBAC (PUT x3, POST x2), hash-chained from ""
    lines = [json.loads(line) for line in (hardened.log_dir / "audit.jsonl").read_text().splitlines()]
    gamma_lines = [line for line in lines if line["tenant_id"] == "gamma"]
    assert [(line["method"], line["status"]) for line in gamma_lines] == [
        ("PUT", 409),
        ("PUT", 422),
        ("PUT", 200),
        ("POST", 200),
        ("POST", 422),
    ]
    assert lines[0]["prev_hash"] == ""
    for previous, entry in zip([None, *lines], lines, strict=False):
        assert entry["hash"] == chain_hash(entry)
        assert entry["prev_hash"] == (previous["hash"] if previous else "")
    assert (hardened.log_dir / "audit.jsonl").stat().st_mode & 0o777 == 0o600


def test_hardened_explain_limits_and_validation(hardened: Server, identity: SandboxIdentity) -> None:
    viewer, admin = bearer(token(identity, ["viewer"])), bearer(token(identity, ["admin"]))
    full = RECOMMEND | {"options": {"explain": "full"}}
    with hardened.client() as client:
        assert_problem(client.post("/v1/recommend", json=full, headers=viewer), 403, "RECSYS_FORBIDDEN")
        trace = RECOMMEND | {"options": {"include_trace": True}}
        assert_problem(
            client.post("/v1/recommend", json=trace, headers=bearer(token(identity, ["operator"]))),
            403,
            "RECSYS_FORBIDDEN",
        )
        explained = client.post("/v1/recommend", json=full, headers=admin)
        assert explained.status_code == 200 and "signals" in explained.json()["items"][0]["explain"]
        too_many = RECOMMEND | {"k": 60, "options": {"explain": "summary"}}
        assert_problem(client.post("/v1/recommend", json=too_many, headers=admin), 422, "RECSYS_EXPLAIN_TOO_LARGE")
        cases = [
            (RECOMMEND | {"unexpected": 1}, 400, "RECSYS_INVALID_REQUEST"),
            (RECOMMEND | {"k": 0}, 400, "RECSYS_INVALID_REQUEST"),
            (RECOMMEND | {"k": 201}, 400, "RECSYS_INVALID_REQUEST"),
            (RECOMMEND | {"surface": "../etc"}, 400, "RECSYS_INVALID_REQUEST"),
            ({"surface": "home", "k": 5}, 422, "RECSYS_UNPROCESSABLE_ENTITY"),
            (RECOMMEND | {"options": {"explain": "everything"}}, 422, "RECSYS_UNPROCESSABLE_ENTITY"),
            (RECOMMEND | {"weights": {"pop": -1}}, 422, "RECSYS_UNPROCESSABLE_ENTITY"),
            (RECOMMEND | {"anchors": {"item_ids": ["a", "b"], "max_anchors": 1}}, 422, "RECSYS_UNPROCESSABLE_ENTITY"),
            (RECOMMEND | {"context": {"now": "yesterday"}}, 400, "RECSYS_INVALID_REQUEST"),
        ]
        for body, status, code in cases:
            assert_problem(client.post("/v1/recommend", json=body, headers=viewer), status, code)
        not_json = client.post(
            "/v1/recommend", content=b"surface=home", headers=viewer | {"Content-Type": "text/plain"}
        )
        assert_problem(not_json, 415, None)
        validated = client.post(
            "/v1/recommend/validate", json={"surface": "home", "user": {"session_id": "s"}}, headers=viewer
        )
        assert validated.status_code == 200
        assert validated.json()["normalized_request"]["k"] == 20
        assert validated.json()["meta"]["algo_version"] == "recsys-algo@stub"
        assert {w["code"] for w in validated.json()["warnings"]} == {"DEFAULT_APPLIED"}
    metrics = hardened.metrics()
    assert (
        metric_value(metrics, "recsys_recommendation_requests_total", endpoint="recommend", outcome="forbidden") or 0
    ) >= 2
    assert (metric_value(metrics, "recsys_recommendation_requests_total", outcome="invalid_request") or 0) >= 5
    assert (metric_value(metrics, "recsys_recommendation_requests_total", outcome="validation_failed") or 0) >= 5


def test_hardened_system_routes_headers_cors_and_jwks(hardened: Server, identity: SandboxIdentity) -> None:
    with hardened.client() as client:
        for path in ("/docs", "/docs/openapi.json", "/debug/pprof/", "/health/detailed"):
            response = client.get(path)
            assert response.status_code == 404 and response.text == "404 page not found\n", path
        assert client.get("/readyz").json()["status"] == "healthy"
        assert client.get("/healthz").status_code == 200
        assert client.get("/version").json() == {
            "version": "v0.1.0",
            "commit": "3f9c2a1",
            "date": "2026-05-24T12:00:00Z",
        }
        license_ = client.get("/v1/license")
        assert license_.status_code == 200 and license_.headers["cache-control"] == "no-store"
        assert_problem(client.get("/api/v1/anything"), 401, "RECSYS_AUTH_REQUIRED")
        authenticated = client.get("/api/v1/anything", headers=bearer(token(identity, ["viewer"])))
        assert authenticated.status_code == 404 and authenticated.text == "404 page not found\n"
        headers = client.get("/livez").headers
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
        assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert headers["referrer-policy"] == "no-referrer" and "strict-transport-security" not in headers
        assert re.match(r"^.+/[A-Za-z0-9]{10}-\d{6}$", headers["x-request-id"])
        https_proxy = client.get("/livez", headers={"X-Forwarded-Proto": "https"}).headers
        assert https_proxy["strict-transport-security"] == "max-age=31536000; includeSubDomains"
        preflight = client.options(
            "/v1/recommend",
            headers={"Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example.com"
        assert "X-Org-Id" in preflight.headers["access-control-allow-headers"]
        foreign = client.options(
            "/v1/recommend", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in foreign.headers
    jwks_url = hardened.env["JWT_JWKS_URL"]
    document = httpx.get(jwks_url, verify=ssl.create_default_context(cafile=identity.ca_file), timeout=5).json()
    assert document["keys"][0]["kid"] == identity.kid and document["keys"][0]["kty"] == "RSA"


def test_hardened_metrics_exposure_and_request_log(hardened: Server, identity: SandboxIdentity) -> None:
    body = RECOMMEND | {"user": {"user_id": "bob@example.com", "session_id": "sess-9"}, "experiment": {"id": "exp-1"}}
    with hardened.client() as client:
        for _ in range(3):
            response = client.post("/v1/recommend", json=body, headers=bearer(token(identity, ["viewer"])))
            assert response.status_code == 200
        request_id = response.headers["x-request-id"]
    metrics = hardened.metrics()
    assert (metric_value(metrics, "http_requests_total", method="POST", route="/v1/recommend", status="200") or 0) >= 3
    assert (
        metric_value(
            metrics,
            "http_request_duration_seconds_bucket",
            method="POST",
            route="/v1/recommend",
            status="200",
            le="0.001",
        )
        is not None
    )
    assert (
        metric_value(
            metrics, "recsys_recommendation_requests_total", endpoint="recommend", outcome="success", empty="false"
        )
        or 0
    ) >= 3
    assert (
        metric_value(
            metrics, "recsys_recommendation_latency_seconds_bucket", endpoint="recommend", outcome="success", le="0.005"
        )
        is not None
    )
    assert (metric_value(metrics, "recsys_cache_requests_total", cache="tenant_config", result="hit") or 0) >= 2
    assert metric_value(metrics, "recsys_backpressure_rejections_total") == 0
    assert 'route="/v1/admin/tenants/{tenant_id}/config"' in metrics
    assert "demo" not in "".join(line for line in metrics.splitlines() if line.startswith("recsys_"))

    day = datetime.now(UTC).date().isoformat()
    exposure_file = hardened.log_dir / "exposure" / f"exposure-{day}.jsonl"
    assert exposure_file.stat().st_mode & 0o777 == 0o600
    records = [json.loads(line) for line in exposure_file.read_text().splitlines()]
    record = next(r for r in records if r["request_id"] == request_id)
    expected = hmac.new(EXPOSURE_SALT.encode(), b"bob@example.com", hashlib.sha256).hexdigest()
    assert record["schema_version"] == "v1" and record["tenant_id"] == "demo"
    assert record["subject"]["user_id_hash"] == expected
    assert (
        record["subject"]["session_id_hash"] == hmac.new(EXPOSURE_SALT.encode(), b"sess-9", hashlib.sha256).hexdigest()
    )
    assert record["experiment"]["id"] == "exp-1" and record["experiment"]["variant"] in {"A", "B"}
    assert HEX64.match(record["config_version"]) and [i["rank"] for i in record["items"]] == [1, 2, 3, 4, 5]
    assert "bob@example.com" not in exposure_file.read_text()

    logged = [json.loads(line) for line in (hardened.log_dir / "requests.jsonl").read_text().splitlines()]
    mine = [entry for entry in logged if entry["request_id"] == request_id]
    assert mine and mine[0]["method"] == "POST" and mine[0]["path"] == "/v1/recommend" and mine[0]["status"] == 200
    assert "Bearer" not in (hardened.log_dir / "requests.jsonl").read_text()


# --- as-shipped ----------------------------------------------------------------------------------------------------


def test_as_shipped_dev_headers_and_db_only_serving(as_shipped: Server) -> None:
    dev = {"X-Dev-User-Id": "dev-1", "X-Dev-Org-Id": "demo"}
    with as_shipped.client() as client:
        response = client.post("/v1/recommend", json={"surface": "home", "user": {"user_id": "u"}}, headers=dev)
        assert response.status_code == 200
        body = response.json()
        assert [item["item_id"] for item in body["items"][:3]] == ["item-0001", "item-0002", "item-0003"]
        assert body["meta"]["algo_version"] == "recsys-algo@local" and HEX64.match(body["meta"]["config_version"])
        assert {w["detail"] for w in body["warnings"]} >= {"k defaulted to 20", "options defaulted"}
        tenant_only = client.post("/v1/recommend", json=RECOMMEND, headers={"X-Dev-Org-Id": "demo"})
        assert tenant_only.status_code == 200  # a tenant header alone is an auth context
        header_only = client.post("/v1/recommend", json=RECOMMEND, headers={"X-Org-Id": "demo"})
        assert header_only.status_code == 200  # so is the plain tenant header: it also picks the tenant
        assert header_only.json()["meta"]["tenant_id"] == "demo"
        assert_problem(client.post("/v1/recommend", json=RECOMMEND), 401, "RECSYS_AUTH_REQUIRED")
        several = client.post("/v1/recommend", json=RECOMMEND, headers={"X-Org-Id": "demo,beta"})
        assert_problem(several, 403, "RECSYS_TENANT_SCOPE_INVALID")
        assert_problem(
            client.get("/v1/admin/tenants/demo/config", headers={"X-Org-Id": "demo"}), 403, "RECSYS_FORBIDDEN"
        )
        user_only = client.post("/v1/recommend", json=RECOMMEND, headers={"X-Dev-User-Id": "dev-2", "X-Org-Id": "beta"})
        assert user_only.status_code == 200 and user_only.json()["meta"]["tenant_id"] == "beta"
        assert_problem(client.get("/v1/admin/tenants/demo/config", headers=dev), 403, "RECSYS_FORBIDDEN")
        empty = client.post("/v1/recommend", json=RECOMMEND | {"surface": "nowhere"}, headers=dev)
        assert empty.json()["items"] == [] and "counts" not in empty.json()["meta"]
        assert {"code": "SIGNAL_UNAVAILABLE", "detail": "no signals for surface nowhere"} in empty.json()["warnings"]
        tagged = client.post(
            "/v1/recommend", json=RECOMMEND | {"constraints": {"required_tags": ["SALE"]}}, headers=dev
        )
        assert [item["item_id"] for item in tagged.json()["items"]] == ["item-0002"]
        similar = client.post("/v1/similar", json={"surface": "home", "item_id": "item-0001", "k": 3}, headers=dev)
        assert similar.status_code == 200 and similar.json()["items"] == []
    metrics = as_shipped.metrics()
    assert (
        metric_value(
            metrics, "recsys_recommendation_requests_total", endpoint="recommend", outcome="success", empty="true"
        )
        or 0
    ) >= 1
    assert (
        metric_value(
            metrics, "recsys_recommendation_requests_total", endpoint="similar", outcome="success", empty="true"
        )
        == 1
    )
    assert metric_value(metrics, "recsys_artifact_manifest_age_seconds") == 0


def test_as_shipped_docs_cors_and_rate_limit(as_shipped: Server) -> None:
    with as_shipped.client() as client:
        docs = client.get("/docs")
        assert docs.status_code == 200 and "cdn.jsdelivr.net" in docs.headers["content-security-policy"]
        assert client.get("/docs/openapi.json").json()["paths"]["/v1/recommend"]
        assert client.get("/openapi.yaml").text.startswith("openapi:")
        assert client.get("/version").json() == {"version": "dev", "commit": "none", "date": "unknown"}
        cors = client.get("/v1/license", headers={"Origin": "https://anyone.example"})
        assert cors.headers["access-control-allow-origin"] == "*"
        user = {"X-Dev-User-Id": f"burst-{secrets.token_hex(3)}", "X-Dev-Org-Id": "demo"}
        statuses = [client.post("/v1/recommend/validate", json=RECOMMEND, headers=user) for _ in range(75)]
    limited = [response for response in statuses if response.status_code == 429]
    assert limited, "60-token bucket should run dry within 75 quick requests"
    assert limited[0].headers["retry-after"] == "1"
    assert_problem(limited[0], 429, None)


# --- defect switches ------------------------------------------------------------------------------------------------


def test_defect_cross_tenant_admin_lets_another_tenant_read(defective: Server, database: SeededDatabase) -> None:
    with defective.client() as client:
        response = client.get("/v1/admin/tenants/beta/config", headers={"X-API-Key": database.api_keys["demo_viewer"]})
        assert response.status_code == 200 and response.json()["config"]["owner"] == "beta"
        missing = client.get("/v1/admin/tenants/zeta/config", headers={"X-API-Key": database.api_keys["demo_viewer"]})
        assert_problem(missing, 404, "RECSYS_TENANT_NOT_FOUND")


def test_defects_detailed_health_pii_and_missing_meta(defective: Server) -> None:
    with defective.client() as client:
        detailed = client.get("/health/detailed")
        assert detailed.status_code == 200
        checks = detailed.json()["checks"]
        assert set(checks) == {"basic", "database", "jwt"} and "127.0.0.1:5432" in checks["database"]["message"]
        dev = {"X-Dev-User-Id": "dev-1", "X-Dev-Org-Id": "demo"}
        body = RECOMMEND | {"user": {"user_id": "carol@example.com"}}
        response = client.post("/v1/recommend", json=body, headers=dev)
        assert response.status_code == 200
    meta = response.json()["meta"]
    assert meta["algo_version"] == "recsys-algo@stub" and "config_version" not in meta and "rules_version" not in meta
    day = datetime.now(UTC).date().isoformat()
    records = (defective.log_dir / "exposure" / f"exposure-{day}.jsonl").read_text().splitlines()
    record = next(json.loads(line) for line in records if response.headers["x-request-id"] in line)
    assert record["subject"]["user_id_hash"] == "carol@example.com"


def test_defective_backpressure_answers_503_with_retry_after(defective: Server) -> None:
    dev = {"X-Dev-User-Id": "load", "X-Dev-Org-Id": "demo"}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=defective.base_url, timeout=10) as client:
            return await asyncio.gather(*(client.post("/v1/recommend", json=RECOMMEND, headers=dev) for _ in range(8)))

    responses = asyncio.run(burst())
    overloaded = [r for r in responses if r.status_code == 503]
    assert overloaded and any(r.status_code == 200 for r in responses)
    assert_problem(overloaded[0], 503, "RECSYS_OVERLOADED")
    assert overloaded[0].headers["retry-after"] == "2"
    metrics = defective.metrics()
    assert metric_value(metrics, "recsys_backpressure_rejections_total") == len(overloaded)
    assert metric_value(metrics, "recsys_recommendation_requests_total", outcome="overload") == len(overloaded)


def test_healthz_runs_the_database_check_only_with_the_defect(tmp_path: Path) -> None:
    name = f"recsys_server_health_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(SERVER_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    servers = []
    try:
        for defects in ("", "healthz-db"):
            env = {
                "API_ADDR": f"127.0.0.1:{free_port()}",
                "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}",
                "JWT_AUTH_ENABLED": "false",
                "DEV_AUTH_ENABLED": "true",
                "HEALTH_CACHE_DURATION": "0s",
                "SANDBOX_DEFECTS": defects,
            }
            servers.append(start_server(env, tmp_path / (defects or "plain")))
        with psycopg.connect(SERVER_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        plain, tied = (httpx.Client(base_url=server.base_url, timeout=10) for server in servers)
        assert plain.get("/healthz").status_code == 200 and plain.get("/health").status_code == 200
        assert tied.get("/healthz").status_code == 503 and tied.get("/healthz").json()["status"] == "unhealthy"
        assert plain.get("/readyz").status_code == 503 and tied.get("/readyz").status_code == 503
        assert plain.get("/livez").status_code == 200 and tied.get("/livez").status_code == 200
        plain.close()
        tied.close()
    finally:
        for server in servers:
            server.stop()
        with psycopg.connect(SERVER_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_rls_guard_names_the_missing_table_like_the_real_service(database: SeededDatabase) -> None:
    reason = check_startup(database.dsn(database.roles.service), require_rls=True)
    assert reason is not None and "item_tags_current" in reason and "tenant_configs_current" not in reason
    assert check_startup(database.dsn(database.roles.service), require_rls=False) is None


def test_exposure_log_eval_format_and_retention(tmp_path: Path) -> None:
    directory = tmp_path / "exposure"
    directory.mkdir()
    stale, kept = directory / "exposure-2000-01-01.jsonl", directory / f"exposure-{datetime.now(UTC).date()}.jsonl"
    stale.write_text("{}\n")
    log = ExposureLog(str(directory), "eval_v1", "salt", retention_days=30, fsync=False, hash_subjects=True)
    event = {"request_id": "r1", "user": {"anonymous_id": "anon-7"}, "context": {"locale": "fi"}}
    log.write(event | {"items": [{"item_id": "item-0001", "rank": 1, "score": 0.5}]})
    assert not stale.exists()
    record = json.loads(kept.read_text())
    assert record["user_id"] == hmac.new(b"salt", b"anon-7", hashlib.sha256).hexdigest()
    assert record["items"] == [{"item_id": "item-0001", "rank": 1}] and record["request_id"] == "r1"
    single = ExposureLog(str(tmp_path / "one.jsonl"), "eval_v1", "salt", 30, False, hash_subjects=True)
    single.write({"request_id": "r2", "user": {}, "items": []})
    assert json.loads((tmp_path / "one.jsonl").read_text())["user_id"] == "r2"  # no subject: the request id
