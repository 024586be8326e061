"""The sandbox's data: schema and migrations, seeding, partitions, roles and RLS, archiving, manifests, identity."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from psycopg import sql

from recsys_audit.probes.config import parse_env_file
from recsys_audit.sandbox import database, defects, prometheus, seed
from recsys_audit.sandbox.harness import SandboxError, SandboxInstance, render_env
from recsys_audit.sandbox.manifests import artifact_version

Sandbox = Callable[[str], SandboxInstance]
MIGRATION_NAMES = [
    "extensions",
    "types",
    "util",
    "tenants",
    "config_rules",
    "audit_log",
    "cache_invalidation",
    "exposure_events",
    "interaction_events",
    "partition_helpers",
    "optional_rls",
    "signal_tables",
    "item_covisit_daily",
    "api_keys",
]
FACT_SHEET_INDEXES = [
    "tenant_config_versions_tenant_created_idx",
    "tenant_config_versions_config_gin",
    "tenant_rule_versions_tenant_created_idx",
    "tenant_rule_versions_rules_gin",
    "audit_log_tenant_time_idx",
    "audit_log_action_time_idx",
    "audit_log_request_id_idx",
    "cache_invalidation_tenant_time_idx",
    "cache_invalidation_status_idx",
    "exposure_events_tenant_time_idx",
    "exposure_events_req_idx",
    "exposure_events_surface_time_idx",
    "exposure_events_user_time_idx",
    "exposure_events_request_gin",
    "exposure_events_response_gin",
    "interaction_events_tenant_time_idx",
    "interaction_events_req_idx",
    "interaction_events_user_time_idx",
    "interaction_events_item_time_idx",
    "interaction_events_meta_gin",
    "item_tags_tags_gin",
    "item_tags_tenant_ns_created_idx",
    "item_popularity_daily_tenant_ns_day_idx",
    "item_popularity_daily_tenant_item_day_idx",
    "item_covisit_daily_tenant_item_day_idx",
    "item_covisit_daily_tenant_neighbor_day_idx",
    "tenant_api_keys_tenant_idx",
    "tenant_api_keys_active_idx",
    "tenants_external_id_key",
    "tenant_config_versions_tenant_id_etag_key",
    "tenant_api_keys_key_hash_key",
]


def _admin(instance: SandboxInstance) -> psycopg.Connection[Any]:
    return psycopg.connect(instance.admin_dsn, autocommit=True)


def _rows(instance: SandboxInstance, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with _admin(instance) as conn:
        return conn.execute(query, params).fetchall()


# --- migrations and schema.sql (no database needed) ----------------------------------------------------------------


def test_migrations_are_the_fourteen_upstream_versions() -> None:
    found = database.migrations()
    expected_versions = [20260130100000 + 10 * i for i in range(13)] + [20260201080000]
    assert [m.version for m in found] == expected_versions
    assert [m.name for m in found] == MIGRATION_NAMES
    assert all(len(m.checksum) == 64 for m in found)


def test_schema_sql_is_generated_from_the_migrations() -> None:
    assert database.SCHEMA_FILE.read_text(encoding="utf-8") == database.render_schema_sql(), (
        "schema.sql is stale: python -m recsys_audit.sandbox.database --write-schema"
    )


# --- schema objects ------------------------------------------------------------------------------------------------


def test_schema_objects_match_the_fact_sheet(sandbox: Sandbox) -> None:
    instance = sandbox("hardened")
    indexes = {row[0] for row in _rows(instance, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert set(FACT_SHEET_INDEXES) <= indexes, sorted(set(FACT_SHEET_INDEXES) - indexes)
    enums = dict(
        _rows(
            instance,
            "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)::text FROM pg_type t"
            " JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname",
        )
    )
    assert enums["interaction_type"] == "{impression,click,add_to_cart,purchase,view}"
    assert enums["cache_invalidation_status"] == "{requested,applied,failed}"
    triggers = {row[0] for row in _rows(instance, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
    assert {"audit_log_immutable_ud", "tenant_config_versions_immutable_ud", "tenants_set_updated_at"} <= triggers
    partitioned = dict(_rows(instance, "SELECT relname, relkind::text FROM pg_class WHERE relkind = 'p'"))
    assert set(partitioned) >= {"exposure_events", "interaction_events"}
    assert _rows(instance, "SELECT to_regclass('exposure_events_default') IS NOT NULL")[0][0]
    assert _rows(instance, "SELECT extname FROM pg_extension WHERE extname = 'pgcrypto'")


def test_etag_is_sha256_of_the_stored_json_and_audit_rows_are_immutable(sandbox: Sandbox) -> None:
    instance = sandbox("hardened")
    with _admin(instance) as conn:
        config, etag = conn.execute("SELECT config::text, etag FROM tenant_config_versions LIMIT 1").fetchone()
        assert etag == hashlib.sha256(config.encode()).hexdigest()
        with pytest.raises(psycopg.errors.FeatureNotSupported), conn.transaction():
            conn.execute("UPDATE audit_log SET action = 'tampered'")


def test_schema_migrations_per_variant(sandbox: Sandbox) -> None:
    checksums = {m.version: m.checksum for m in database.migrations()}
    rows = _rows(sandbox("hardened"), "SELECT version, name, checksum, success FROM schema_migrations ORDER BY 1")
    assert [(v, c, s) for v, _, c, s in rows] == [(v, c, True) for v, c in checksums.items()]
    broken = _rows(sandbox("ops-defects"), "SELECT version, success FROM schema_migrations ORDER BY 1")
    assert len(broken) == 13 and 20260201080000 not in [v for v, _ in broken]  # pending-migration
    assert broken[-1] == (20260130100120, False)  # failed-migration
    assert all(success for _, success in broken[:-1])


# --- seeded data ---------------------------------------------------------------------------------------------------


def test_config_history_and_audit_rows(sandbox: Sandbox) -> None:
    instance = sandbox("hardened")
    per_tenant = _rows(
        instance,
        "SELECT t.external_id, count(v.id), max(v.etag) FILTER (WHERE v.id = c.config_version_id)"
        " FROM tenants t JOIN tenant_config_versions v ON v.tenant_id = t.id"
        " JOIN tenant_configs_current c ON c.tenant_id = t.id GROUP BY 1 ORDER BY 1",
    )
    assert [(tenant, count) for tenant, count, _ in per_tenant] == [("beta", 2), ("demo", 2)]
    newest = _rows(
        instance,
        "SELECT DISTINCT ON (t.external_id) t.external_id, v.etag FROM tenant_config_versions v"
        " JOIN tenants t ON t.id = v.tenant_id ORDER BY t.external_id, v.created_at DESC",
    )
    assert [etag for _, _, etag in per_tenant] == [etag for _, etag in newest]  # current = newest version
    actions = _rows(instance, "SELECT action, count(*), count(DISTINCT actor_sub) FROM audit_log GROUP BY 1 ORDER BY 1")
    # seeded history, plus the operator's cache invalidation sent by the warm-up
    assert actions == [("cache.invalidate", 1, 1), ("config.update", 4, 2), ("rules.update", 4, 2)]


def test_api_keys_are_hashed_with_the_service_secret(sandbox: Sandbox) -> None:
    hardened = sandbox("hardened")
    secret = hardened.env["API_KEY_HASH_SECRET"]
    raw = (hardened.directory / "secrets" / "api-key-active-viewer.key").read_text().strip()
    expected = hmac.new(secret.encode(), raw.encode(), hashlib.sha256).hexdigest()
    keys = _rows(
        hardened,
        "SELECT name, key_hash, expires_at - created_at <= interval '90 days', revoked_at IS NOT NULL,"
        " expires_at < now() FROM tenant_api_keys ORDER BY name",
    )
    assert [k[0] for k in keys] == ["active-operator", "active-viewer", "expired-viewer", "revoked-viewer"]
    assert dict((k[0], k[1]) for k in keys)["active-viewer"] == expected
    assert all(k[2] for k in keys)  # every expiry within the 90-day policy
    assert [(k[3], k[4]) for k in keys] == [(False, False), (False, False), (False, True), (True, False)]

    shipped = sandbox("as-shipped")
    assert shipped.env["API_KEY_HASH_SECRET"] == ""
    legacy = _rows(
        shipped,
        "SELECT key_hash, expires_at, created_at < now() - interval '90 days' FROM tenant_api_keys"
        " WHERE name = 'legacy-integration'",
    )
    raw = (shipped.directory / "secrets" / "api-key-legacy-integration.key").read_text().strip()
    assert legacy == [(hashlib.sha256(raw.encode()).hexdigest(), None, True)]


def test_signals_are_fresh_or_stale(sandbox: Sandbox) -> None:
    newest = _rows(sandbox("hardened"), "SELECT namespace, max(day) FROM item_popularity_daily GROUP BY 1 ORDER BY 1")
    assert [surface for surface, _ in newest] == ["home", "pdp"]
    assert all(day == dt.date.today() for _, day in newest)


def test_stale_signals_defect(tmp_path: Path) -> None:
    with _scratch_database(tmp_path) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        seed.seed(conn, seed.SeedOptions(stale_signals=True, exposure_rows=10, interaction_rows=10))
        newest = conn.execute("SELECT max(day) FROM item_popularity_daily").fetchone()[0]
    assert (dt.date.today() - newest).days == seed.STALE_SIGNAL_AGE_DAYS


def test_subject_keys_hashed_unless_pii_unhashed(sandbox: Sandbox) -> None:
    query = "SELECT user_key FROM exposure_events WHERE user_key IS NOT NULL LIMIT 20"
    hashed = [bytes(row[0]) for row in _rows(sandbox("hardened"), query)]
    assert hashed and all(len(key) == 32 and b"example.com" not in key for key in hashed)
    raw = [bytes(row[0]) for row in _rows(sandbox("code-defects"), query)]
    assert raw and all(key.endswith(b"@example.com") for key in raw)


# --- partitions, roles, RLS, TLS, archiving -----------------------------------------------------------------------


def test_partitions_per_variant(sandbox: Sandbox) -> None:
    month = dt.date.today().replace(day=1)
    following = (month + dt.timedelta(days=32)).replace(day=1)
    expected = {f"exposure_events_{d:%Y_%m}" for d in (month, following)}
    hardened = sandbox("hardened")
    partitions = {
        row[0]
        for row in _rows(
            hardened,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'exposure_events'::regclass",
        )
    }
    assert partitions == expected | {"exposure_events_default"}
    landing = dict(_rows(hardened, "SELECT tableoid::regclass::text, count(*) FROM exposure_events GROUP BY 1"))
    assert set(landing) == {f"exposure_events_{month:%Y_%m}"} and landing[f"exposure_events_{month:%Y_%m}"] > 0
    ops = dict(
        _rows(sandbox("ops-defects"), "SELECT tableoid::regclass::text, count(*) FROM exposure_events GROUP BY 1")
    )
    assert set(ops) == {"exposure_events_default"}


def test_roles_and_rls_hardened(sandbox: Sandbox) -> None:
    instance = sandbox("hardened")
    flags = _rows(
        instance,
        "SELECT relname, relrowsecurity, relforcerowsecurity, pg_get_userbyid(relowner) FROM pg_class"
        " WHERE relname = ANY(%s) AND relkind IN ('r', 'p')",
        (list(database.TENANT_TABLES),),
    )
    assert len(flags) == 11
    assert all(rls and force and owner == "recsys_owner" for _, rls, force, owner in flags)
    policies = _rows(instance, "SELECT count(*) FROM pg_policies WHERE policyname = 'tenant_isolation'")
    assert policies == [(11,)]
    role = _rows(instance, "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'recsys_app'")
    assert role == [(False, False)]
    demo = _rows(instance, "SELECT id::text FROM tenants WHERE external_id = 'demo'")[0][0]
    with psycopg.connect(instance.service_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM tenant_config_versions").fetchone() == (0,)
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (demo,))
        seen = conn.execute("SELECT DISTINCT tenant_id::text FROM tenant_config_versions").fetchall()
        assert seen == [(demo,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("CREATE TABLE not_allowed (id int)")
    with psycopg.connect(instance.dsn, autocommit=True) as conn:  # the auditor reads every tenant, read-only
        assert conn.execute("SELECT count(DISTINCT tenant_id) FROM tenant_config_versions").fetchone() == (2,)
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("DELETE FROM tenant_api_keys")


def test_roles_and_rls_defects(sandbox: Sandbox) -> None:
    for variant in ("ops-defects", "as-shipped"):
        instance = sandbox(variant)
        assert _rows(instance, "SELECT count(*) FROM pg_class WHERE relrowsecurity") == [(0,)]
        owners = {
            row[0]
            for row in _rows(instance, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'tenants'")
        }
        assert owners == {"recsys_app"}
        assert _rows(instance, "SELECT rolsuper FROM pg_roles WHERE rolname = 'recsys_app'") == [(True,)]
    with psycopg.connect(sandbox("as-shipped").dsn, autocommit=True) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (False,)


def test_wal_archiving(sandbox: Sandbox) -> None:
    hardened = sandbox("hardened")
    archived, last = _rows(hardened, "SELECT archived_count, last_archived_time FROM pg_stat_archiver")[0]
    assert archived >= 1 and dt.datetime.now(dt.UTC) - last < dt.timedelta(minutes=10)
    assert any((hardened.directory / "pg" / "wal-archive").iterdir())
    assert _rows(sandbox("ops-defects"), "SHOW archive_mode") == [("off",)]


# --- bulk seeding ----------------------------------------------------------------------------------------------------


class _ScratchDatabase:
    def __init__(self, tmp_path: Path) -> None:
        self.name = f"recsys_seed_test_{uuid.uuid4().hex[:10]}"
        self.server = database.SHARED_SERVER_DSN

    def __enter__(self) -> str:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        dsn = psycopg.conninfo.make_conninfo(self.server, dbname=self.name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            database.apply_migrations(conn, "postgres")
            database.create_monthly_partitions(conn, "postgres")
        return dsn

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))


def _scratch_database(tmp_path: Path) -> _ScratchDatabase:
    return _ScratchDatabase(tmp_path)


@pytest.fixture
def small_bulk_threshold(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(seed, "BULK_THRESHOLD", 1000)
    yield


def test_bulk_load_keeps_every_index_and_key(tmp_path: Path, small_bulk_threshold: None) -> None:
    with _scratch_database(tmp_path) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        seed.seed(conn, seed.SeedOptions(exposure_rows=5000, interaction_rows=3000))
        month = dt.date.today().replace(day=1)
        partition = f"exposure_events_{month:%Y_%m}"
        counts = dict(
            conn.execute("SELECT tableoid::regclass::text, count(*) FROM exposure_events GROUP BY 1").fetchall()
        )
        assert counts == {partition: 5000}
        assert conn.execute("SELECT count(*) FROM interaction_events").fetchone() == (3000,)
        parent_indexes = conn.execute(
            "SELECT count(*) FROM pg_partitioned_table p JOIN pg_index i ON i.indrelid = p.partrelid"
            " WHERE p.partrelid = 'exposure_events'::regclass"
        ).fetchone()[0]
        child_indexes = conn.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", (partition,)
        ).fetchone()[0]
        assert child_indexes == parent_indexes == 7
        keys = {
            row[0]
            for row in conn.execute(
                "SELECT contype::text FROM pg_constraint WHERE conrelid = %s::regclass", (partition,)
            )
        }
        assert {"p", "f"} <= keys
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN SELECT * FROM exposure_events WHERE request_id = '00000000-0000-0000-0000-000000000001'"
            ).fetchall()
        )
        assert "Index" in plan or "Bitmap" in plan


# --- manifests -----------------------------------------------------------------------------------------------------

MANIFEST_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["v", "tenant", "surface", "current", "updated_at"],
    "properties": {
        "v": {"const": 1},
        "tenant": {"type": "string"},
        "surface": {"type": "string"},
        "current": {
            "type": "object",
            "propertyNames": {"enum": ["popularity", "cooc", "implicit", "content_sim", "session_seq"]},
            "additionalProperties": {"type": "string"},
        },
        "updated_at": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
    },
}


def _manifest_age(manifest: dict[str, Any]) -> dt.timedelta:
    updated = dt.datetime.strptime(manifest["updated_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC) - updated


def test_manifests_are_valid_and_blobs_verify(sandbox: Sandbox) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    registry = sandbox("hardened").directory / "registry"
    manifests = sorted((registry / "current").glob("*/*/manifest.json"))
    assert [p.relative_to(registry / "current").parts[:2] for p in manifests] == [
        ("beta", "home"),
        ("demo", "home"),
        ("demo", "pdp"),
    ]
    for path in manifests:
        manifest = json.loads(path.read_text())
        jsonschema.validate(manifest, MANIFEST_SCHEMA)
        assert (manifest["tenant"], manifest["surface"]) == path.parts[-3:-1]
        assert _manifest_age(manifest) < dt.timedelta(hours=3)
        for kind, uri in manifest["current"].items():
            blob = Path(uri.removeprefix("file://"))
            artifact = json.loads(blob.read_text())
            assert artifact["artifact_type"] == kind
            assert artifact["build"]["version"] == artifact_version(artifact) == blob.stem
        previous = sorted((registry / "previous" / manifest["tenant"] / manifest["surface"]).glob("*.json"))
        assert len(previous) == 2
        older = json.loads(previous[-1].read_text())
        assert older["current"] != manifest["current"] and _manifest_age(older) > _manifest_age(manifest)


def test_manifest_defects(sandbox: Sandbox) -> None:
    registry = sandbox("ops-defects").directory / "registry"
    manifest = json.loads((registry / "current" / "demo" / "home" / "manifest.json").read_text())
    assert _manifest_age(manifest) > dt.timedelta(days=4)  # stale-manifest
    assert not list((registry / "previous").rglob("*.json"))  # no-retained-manifest


# --- identity ------------------------------------------------------------------------------------------------------


def test_tokens_verify_against_the_served_jwks(sandbox: Sandbox) -> None:
    instance = sandbox("hardened")
    env = instance.env
    trust = ssl.create_default_context(cafile=str(instance.directory / "jwks" / "ca.pem"))
    jwks = httpx.get(env["JWT_JWKS_URL"], verify=trust, timeout=5).json()
    keys = {key["kid"]: jwt.PyJWK(key) for key in jwks["keys"]}
    expected = {"viewer": ["viewer"], "operator": ["operator"], "admin": ["admin"], "no_role": []}
    for role, roles in {**expected, "other_tenant": ["viewer"]}.items():
        token = (instance.directory / "secrets" / f"{role}.jwt").read_text().strip()
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(
            token, keys[header["kid"]], algorithms=["RS256"], audience=env["JWT_AUDIENCE"], issuer=env["JWT_ISSUER"]
        )
        assert claims["roles"] == roles
        assert claims["tenant_id"] == ("beta" if role == "other_tenant" else "demo")
        assert 23 * 3600 < claims["exp"] - claims["iat"] <= 24 * 3600
    key_file = instance.directory / "secrets" / "jwt-signing.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    with pytest.raises(httpx.ConnectError):  # the JWKS endpoint's certificate is not publicly trusted
        httpx.get(env["JWT_JWKS_URL"], timeout=5)


# --- alert rules and env rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alert_set", ["complete", "upstream", "missing"])
def test_alert_rules_pass_promtool(alert_set: str, tmp_path: Path) -> None:
    if prometheus.shutil.which("promtool") is None:
        pytest.skip("promtool not installed")
    path = tmp_path / "rules.yml"
    path.write_text(prometheus.rules_text(alert_set))
    output = prometheus.check_rules(path)
    counts = {"complete": 9, "upstream": 5, "missing": 7}
    assert f"SUCCESS: {counts[alert_set]} rules found" in output
    names = path.read_text()
    assert ("RecSysStaleArtifactManifest" in names) is (alert_set != "missing")
    if alert_set == "upstream":
        assert "> 900" in names and 'outcome!="success"' in names


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    if prometheus.shutil.which("promtool") is None:
        pytest.skip("promtool not installed")
    path = tmp_path / "bad.yml"
    path.write_text("groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: rate(x[5m]\n")
    with pytest.raises(prometheus.PrometheusError, match=r"bad\.yml"):
        prometheus.check_rules(path)


def test_env_rendering(tmp_path: Path) -> None:
    template = tmp_path / "p.env"
    template.write_text("API_ADDR=${API_ADDR}\nPPROF_ENABLED=false\n")
    text = render_env(template, {"API_ADDR": "127.0.0.1:1"}, {"PPROF_ENABLED": "true"})
    assert parse_env_file(text) == {"API_ADDR": "127.0.0.1:1", "PPROF_ENABLED": "true"}
    template.write_text("X=${NOT_KNOWN}\n")
    with pytest.raises(SandboxError, match=r"p.env: unknown placeholder \$\{NOT_KNOWN\}"):
        render_env(template, {"API_ADDR": "x"}, {})


def test_defect_registry_is_documented() -> None:
    readme = (Path(defects.__file__).parent / "README.md").read_text()
    for name in defects.DEFECTS:
        assert f"`{name}`" in readme
    with pytest.raises(defects.UnknownDefectError, match="unknown defect 'no-such'"):
        defects.validate("hardened", ["no-such"])
