"""Section 4 — database and migrations.

Two kinds of evidence: the full notebook run against the sandbox variants (``audit_findings``), and the checks run
directly against real sandbox databases (own PostgreSQL clusters built by the sandbox's database module: hardened and
with the ops defects), plus a 10-million-row event table that every check must handle within its statement timeout.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from fakes import CannedDatabase, Case, check_case
from psycopg import sql

from recsys_audit.catalog import section_by_number
from recsys_audit.checks import s4_database as s4
from recsys_audit.findings import Finding, Status
from recsys_audit.notebook import SectionRun, open_section
from recsys_audit.sandbox.database import DatabaseSettings, finish_database, setup_database, stop_database
from recsys_audit.sandbox.harness import free_port

MIGRATIONS = Path(__file__).resolve().parents[1] / "recsys_audit" / "sandbox" / "migrations"
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

# check -> the ops defect that breaks it
BROKEN_BY = {
    "db.migrations-succeeded": "failed-migration",
    "db.migrations-current": "pending-migration",
    "db.backups": "archive-off",
    "db.rls-tenant-tables": "rls-off",
    "db.service-role-privileges": "superuser-service-role",
    "db.default-partition-empty": "default-partition-rows",
    "db.event-partitions-ahead": "default-partition-rows",
}


# --- every check on a fake context: the exact status for a healthy and a broken input --------------------------------

NOW = dt.datetime.now(dt.UTC)
BOOTED = NOW - dt.timedelta(hours=2)  # when the fake service's process started


def history(*rows: tuple[int, bool, dt.datetime]) -> list[dict[str, Any]]:
    return [
        {"version": v, "name": f"m{v}", "success": ok, "applied_at": at, "exec_ms": 3, "checksum": "ab" * 32}
        for v, ok, at in sorted(rows, reverse=True)
    ]


GOOD_HISTORY = history(
    (20260130100000, True, NOW - dt.timedelta(days=9)), (20260201080000, True, BOOTED - dt.timedelta(hours=1))
)


def migrations_db(rows: list[dict[str, Any]]) -> CannedDatabase:
    return CannedDatabase({s4.HISTORY_SQL: rows}, tables={"schema_migrations"})


def started_metrics(started: dt.datetime) -> str:
    return f"# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {started.timestamp()}\n"


def archiver(mode: str = "on", archived: dt.datetime | None = NOW - dt.timedelta(minutes=5), failed: Any = None):
    return CannedDatabase(
        {
            s4.ARCHIVER_SQL: [
                {
                    "archive_mode": mode,
                    "archive_command": "pgbackrest --stanza=main archive-push %p" if mode == "on" else "(disabled)",
                    "archive_library": "",
                    "archived_count": 120,
                    "last_archived_time": archived,
                    "failed_count": 1 if failed else 0,
                    "last_failed_time": failed,
                    "stats_reset": NOW - dt.timedelta(days=30),
                }
            ]
        }
    )


def tenant_tables(rls: bool = True, forced: bool = True, owner: str = "recsys_owner") -> list[dict[str, Any]]:
    return [
        {"table": table, "rls": rls, "forced": forced, "owner": owner, "policies": 1 if rls else 0}
        for table in s4.TENANT_TABLES
    ]


def role_db(superuser: bool = False, owns: bool = False) -> CannedDatabase:
    attributes = {
        "role": "recsys_app",
        "superuser": superuser,
        "bypassrls": False,
        "createrole": False,
        "createdb": False,
        "replication": False,
    }
    return CannedDatabase(
        {
            s4.ROLE_SQL: [attributes],
            s4.RLS_SQL: tenant_tables(forced=not owns, owner="recsys_app" if owns else "recsys_owner"),
            "SELECT pg_has_role": [{"pg_has_role": owns}],
        }
    )


def tls_db(server_ssl: str = "on", sessions: list[dict[str, Any]] | None = None) -> CannedDatabase:
    sessions = [{"ssl": True, "version": "TLSv1.3", "sessions": 4}] if sessions is None else sessions
    return CannedDatabase(
        {
            s4.TLS_SQL: [{"server_ssl": server_ssl, "auditor_ssl": True, "auditor_tls_version": "TLSv1.3"}],
            s4.SESSION_TLS_SQL: sessions,
        }
    )


def version_db(number: int) -> CannedDatabase:
    return CannedDatabase({"server_version_num": [{"current_setting": str(number)}]})


def headroom_db(backends: int) -> CannedDatabase:
    return CannedDatabase({s4.HEADROOM_SQL: [{"backends": backends, "max_connections": 100, "reserved": 3}]})


def transactions_db(*states: str) -> CannedDatabase:
    rows = [
        {"pid": 4100 + i, "role": "recsys_app", "application_name": "recsys", "state": state,
         "wait_event_type": None, "open_s": 3600 - i}
        for i, state in enumerate(states)
    ]  # fmt: skip
    return CannedDatabase({s4.LONG_XACT_SQL: rows, s4.HIDDEN_SQL: [{"count": 0}]})


def _bound(month: dt.datetime) -> str:
    start = month.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return f"FOR VALUES FROM ('{start:%Y-%m-%d %H:%M:%S}+00') TO ('{end:%Y-%m-%d %H:%M:%S}+00')"


def partitions_db(monthly: bool = True, default_rows: bool = False) -> CannedDatabase:
    next_month = (NOW.replace(day=1) + dt.timedelta(days=32)).replace(day=15)

    def partitions(params: Any) -> list[dict[str, Any]]:
        table = params[0].removeprefix("public.")
        rows = [{"partition": f"{table}_default", "bound": "DEFAULT", "reltuples": 0, "live_estimate": 0}]
        if monthly:
            rows += [
                {"partition": f"{table}_{m:%Y_%m}", "bound": _bound(m), "reltuples": 10, "live_estimate": 10}
                for m in (NOW, next_month)
            ]
        return rows

    filled = {"interaction_events_default"} if default_rows else set()
    return CannedDatabase({"relkind::text": [{"relkind": "p"}], "FROM pg_inherits": partitions}, filled=filled)


MIGRATIONS_DIR = {f"migrations/{n}_m.{d}.sql": "SELECT 1;\n" for n in (1, 2) for d in ("up", "down")}
SERVICE_ENV = {"ENV": "production", "DATABASE_URL": "postgresql://recsys_app@db:5432/recsys?sslmode=verify-full"}
DRILL_TAG = f"ra_drill_{os.getpid()}"
DRILL_PARAMS = {
    "database": {"dsn": "file:source.dsn"},
    "restore_drill": {"enabled": True, "scratch_dsn": "file:scratch.dsn", "timeout_s": 60},
}


def drill_files(source: str) -> dict[str, str]:
    return {
        "source.dsn": f"host=127.0.0.1 port=5432 user={DRILL_TAG}_reader dbname={DRILL_TAG}_{source}",
        "scratch.dsn": f"host=127.0.0.1 port=5432 user={DRILL_TAG}_reader dbname={DRILL_TAG}_scratch",
    }


CASES = [
    Case("db.migrations-succeeded", "all applied", Status.PASS, {"db": migrations_db(GOOD_HISTORY)}),
    Case(
        "db.migrations-succeeded",
        "a failed row",
        Status.FAIL,
        {"db": migrations_db(history((20260130100000, True, NOW), (20260201080000, False, NOW)))},
        summary="1 failed migration row(s): 20260201080000",
    ),
    Case(
        "db.migrations-current",
        "at the expected version",
        Status.PASS,
        {"db": migrations_db(GOOD_HISTORY), "params": {"migrations": {"expected_latest": 20260201080000}}},
    ),
    Case(
        "db.migrations-current",
        "one pending",
        Status.FAIL,
        {"db": migrations_db(GOOD_HISTORY), "params": {"migrations": {"expected_latest": 20260301000000}}},
        summary="pending migrations",
    ),
    Case(
        "db.migrate-on-start-off",
        "off, explicit job, migration applied before the replica started",
        Status.PASS,
        {
            "env": {"MIGRATE_ON_START": "false"},
            "params": {"migrations": {"explicit_job": "Argo CD PreSync Job"}},
            "db": migrations_db(GOOD_HISTORY),
            "metrics": started_metrics(BOOTED),
        },
    ),
    Case(
        "db.migrate-on-start-off",
        "on in production",
        Status.FAIL,
        {"env": {"ENV": "production", "MIGRATE_ON_START": "true"}, "db": migrations_db(GOOD_HISTORY)},
        summary="every replica migrates at boot",
    ),
    Case(
        "db.migrate-on-start-off",
        "hidden switch, data shows a migration at boot",
        Status.FAIL,
        {
            "helm": {"api": {"existingSecret": "recsys-env"}},
            "db": migrations_db(history((20260201080000, True, BOOTED + dt.timedelta(seconds=4)))),
            "metrics": started_metrics(BOOTED),
        },
        summary="applied 4 s after metrics_url started: a replica migrates at boot",
    ),
    Case(
        "db.migrate-on-start-off",
        "off in config, data shows a migration at boot",
        Status.WARN,
        {
            "env": {"MIGRATE_ON_START": "false"},
            "params": {"migrations": {"explicit_job": "release pipeline"}},
            "db": migrations_db(history((20260201080000, True, BOOTED + dt.timedelta(seconds=4)))),
            "metrics": started_metrics(BOOTED),
        },
        summary="MIGRATE_ON_START is off, but migration 20260201080000 was applied 4 s after",
    ),
    Case("db.migration-preflight-ci", "never probed", Status.MANUAL, {}),
    Case("db.backups", "WAL archived 5 minutes ago", Status.PASS, {"db": archiver()}),
    Case("db.backups", "no archiving, no tool", Status.FAIL, {"db": archiver("off", None)}, summary="no backups"),
    Case(
        "db.backups",
        "archiving failing",
        Status.FAIL,
        {"db": archiver(failed=NOW - dt.timedelta(minutes=1))},
        summary="WAL archiving is failing",
    ),
    Case(
        "db.backups",
        "external backup dated in the future",
        Status.WARN,
        {
            "db": archiver("off", None),
            "params": {"deployment": {"backup_tool": "pgBackRest", "last_backup_at": "2099-01-01T00:00:00Z"}},
        },
        summary="in the future",
    ),
    Case(
        "db.backups",
        "archived segment dated in the future",
        Status.WARN,
        {"db": archiver(archived=NOW + dt.timedelta(days=3))},
        summary="in the future",
    ),
    Case("db.restore-tested", "not enabled", Status.MANUAL, {}),
    Case(
        "db.restore-tested",
        "faithful drill",
        Status.PASS,
        {"params": DRILL_PARAMS, "files": drill_files("plain")},
        summary="restored in",
    ),
    Case(
        "db.restore-tested",
        "rows hidden from the dump by row-level security",
        Status.FAIL,
        {"params": DRILL_PARAMS, "files": drill_files("hidden")},
        summary="1 table(s) with wrong row counts",
    ),
    Case(
        "db.down-migrations",
        "every up has a down",
        Status.PASS,
        {"params": {"migrations": {"directory": "migrations"}}, "files": MIGRATIONS_DIR},
    ),
    Case(
        "db.down-migrations",
        "a down migration missing",
        Status.FAIL,
        {
            "params": {"migrations": {"directory": "migrations"}},
            "files": {**{k: v for k, v in MIGRATIONS_DIR.items() if k != "migrations/2_m.down.sql"}},
        },
        summary="1 of 2 migrations have no down migration",
    ),
    Case("db.schema-rollback-documented", "a document", Status.MANUAL, {}),
    Case(
        "db.rls-tenant-tables",
        "forced with policies",
        Status.PASS,
        {"db": CannedDatabase({s4.RLS_SQL: tenant_tables()})},
    ),
    Case(
        "db.rls-tenant-tables",
        "RLS off",
        Status.FAIL,
        {"db": CannedDatabase({s4.RLS_SQL: tenant_tables(rls=False)})},
        summary="RLS off or without policies on 11 of 11",
    ),
    Case(
        "db.service-role-privileges",
        "least privilege",
        Status.PASS,
        {"db": role_db(), "params": {"database": {"service_role": "recsys_app"}}},
    ),
    Case(
        "db.service-role-privileges",
        "superuser owning the tables",
        Status.FAIL,
        {"db": role_db(superuser=True, owns=True), "env": SERVICE_ENV},
        summary="recsys_app is a superuser",
    ),
    Case("db.connection-tls", "TLS everywhere", Status.PASS, {"db": tls_db(), "env": SERVICE_ENV}),
    Case(
        "db.connection-tls",
        "service sessions in clear text",
        Status.FAIL,
        {"db": tls_db(sessions=[{"ssl": False, "version": None, "sessions": 2}]), "env": SERVICE_ENV},
        summary="2 service session(s) without TLS",
    ),
    Case(
        "db.connection-tls",
        "service role unknown: no session examined",
        Status.WARN,
        {"db": tls_db(sessions=[]), "env": {"ENV": "production"}},
        summary="service role unknown",
    ),
    Case(
        "db.connection-tls",
        "sessions hidden from the auditor",
        Status.WARN,
        {
            "db": tls_db(sessions=[{"ssl": None, "version": None, "sessions": 3}]),
            "params": {"database": {"service_role": "recsys_app"}},
        },
        summary="TLS of 3 service session(s) not visible",
    ),
    Case("db.server-version", "PostgreSQL 16", Status.PASS, {"db": version_db(160004)}),
    Case("db.server-version", "PostgreSQL 11", Status.FAIL, {"db": version_db(110022)}, summary="reached end of life"),
    Case("db.connection-headroom", "plenty", Status.PASS, {"db": headroom_db(20)}),
    Case("db.connection-headroom", "exhausted", Status.FAIL, {"db": headroom_db(96)}, summary="96 of 97"),
    Case("db.long-transactions", "none", Status.PASS, {"db": transactions_db()}),
    Case(
        "db.long-transactions",
        "abandoned idle transaction",
        Status.FAIL,
        {"db": transactions_db("idle in transaction")},
        summary="1 transaction(s) idle for more than 300 s",
    ),
    Case(
        "db.long-transactions",
        "a long report query",
        Status.WARN,
        {"db": transactions_db("active")},
        summary="1 transaction(s) open longer than 300 s",
    ),
    Case("db.event-partitions-ahead", "this and next month", Status.PASS, {"db": partitions_db()}),
    Case(
        "db.event-partitions-ahead",
        "default partition only",
        Status.FAIL,
        {"db": partitions_db(monthly=False)},
        summary="no monthly partition for",
    ),
    Case("db.default-partition-empty", "empty defaults", Status.PASS, {"db": partitions_db()}),
    Case(
        "db.default-partition-empty",
        "rows in the default partition",
        Status.FAIL,
        {"db": partitions_db(default_rows=True)},
        summary="interaction_events_default",
    ),
]


@pytest.fixture(scope="module")
def drill_databases() -> Iterator[None]:
    """Two audited databases and a scratch one on the local server, read by a non-superuser reader role: in
    ``hidden`` the rows are behind forced row-level security the reader does not pass, so its dump holds none."""
    reader = f"{DRILL_TAG}_reader"
    names = {kind: f"{DRILL_TAG}_{kind}" for kind in ("plain", "hidden", "scratch")}
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(reader)))
        for kind, name in names.items():
            owner = sql.SQL(" OWNER {}").format(sql.Identifier(reader)) if kind == "scratch" else sql.SQL("")
            conn.execute(sql.SQL("CREATE DATABASE {}{}").format(sql.Identifier(name), owner))
    try:
        for kind in ("plain", "hidden"):
            dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={names[kind]}"
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE events (id int PRIMARY KEY, tenant text NOT NULL)")
                conn.execute("INSERT INTO events SELECT g, 't' || (g % 3) FROM generate_series(1, 400) g")
            with psycopg.connect(dsn, autocommit=True) as conn:  # after the insert's statistics are flushed
                conn.execute("ANALYZE events")
                conn.execute(sql.SQL("GRANT SELECT ON events TO {}").format(sql.Identifier(reader)))
                if kind == "hidden":
                    conn.execute("ALTER TABLE events ENABLE ROW LEVEL SECURITY")
                    conn.execute("ALTER TABLE events FORCE ROW LEVEL SECURITY")
                    conn.execute("CREATE POLICY own_rows ON events USING (tenant = current_user)")
        yield
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            for name in names.values():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(reader)))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fake_context(fake_audit: Any, case: Case, request: pytest.FixtureRequest) -> None:
    if case.check == "db.restore-tested" and "files" in case.evidence:
        request.getfixturevalue("drill_databases")
    check_case(fake_audit, case)


def test_migrate_at_boot_reads_every_replica_start_from_prometheus(fake_audit: Any) -> None:
    """With Prometheus, the start times of all replicas exporting recsys series are compared, not one scrape."""
    starts = [BOOTED.timestamp(), (BOOTED + dt.timedelta(minutes=30)).timestamp()]

    def query(request: Any) -> Any:
        from fakes import Answer

        promql = request.query["query"][0]
        assert "process_start_time_seconds" in promql and 'job="recsys"' in promql
        result = [
            {"metric": {"job": "recsys", "instance": f"pod-{i}"}, "value": [0, str(v)]} for i, v in enumerate(starts)
        ]
        return Answer(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

    applied = BOOTED + dt.timedelta(minutes=30, seconds=12)
    audit = fake_audit(
        env={"MIGRATE_ON_START": "false"},
        params={"prometheus": {"url": "{url}", "job": "recsys"}, "migrations": {"explicit_job": "job"}},
        routes={"GET /api/v1/query": query},
        db=migrations_db(history((20260201080000, True, applied))),
    )
    finding = audit.run("db.migrate-on-start-off")
    assert finding.status == Status.WARN, finding.summary
    assert "applied 12 s after pod-1 started" in finding.summary
    assert [row["newest_migration_after_start_s"] for row in finding.evidence["replica_starts"]] == [1812.0, 12.0]


# --- the full audit against the sandbox variants ---------------------------------------------------------------------


@pytest.mark.parametrize("check_id", sorted(BROKEN_BY))
def test_sandbox_variants(audit_findings: Any, check_id: str) -> None:
    assert audit_findings("hardened")[check_id].status == Status.PASS, audit_findings("hardened")[check_id].summary
    assert audit_findings("ops-defects")[check_id].status == Status.FAIL


FAILING = {
    "as-shipped": {
        "db.backups",
        "db.connection-tls",
        "db.default-partition-empty",
        "db.event-partitions-ahead",
        "db.rls-tenant-tables",
        "db.service-role-privileges",
    },
    "code-defects": set(),
    "ops-defects": set(BROKEN_BY),
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(FAILING))
def test_variants_fail_exactly_the_checks_they_break(audit_findings: Any, variant: str) -> None:
    failing = {f.id for f in audit_findings(variant).values() if f.section == 4 and f.status == Status.FAIL}
    assert failing == FAILING[variant]


def test_sandbox_as_shipped_database(audit_findings: Any) -> None:
    findings = audit_findings("as-shipped")
    assert findings["db.migrate-on-start-off"].status == Status.WARN  # MIGRATE_ON_START=true; ENV is not production
    assert "the server has ssl=off" in findings["db.connection-tls"].summary


# --- direct runs against real sandbox databases --------------------------------------------------------------------


def _write_params(folder: Path, auditor_dsn: str, service_dsn: str, service_role: str, env: str, **extra: Any) -> Path:
    (folder / "auditor.dsn").write_text(auditor_dsn, encoding="utf-8")
    (folder / "service.env").write_text(f"{env}\nDATABASE_URL={service_dsn}\n", encoding="utf-8")
    document = {
        "environment": {"name": folder.name},
        "target": {"base_url": "http://127.0.0.1:9", "production": True},
        "tenants": [{"id": "demo", "surfaces": ["home"]}],
        "database": {"dsn": "file:auditor.dsn", "service_role": service_role, "statement_timeout_ms": 2000},
        "migrations": {"directory": str(MIGRATIONS), "explicit_job": "release pipeline: migrate up"},
        "config_sources": [{"kind": "env_file", "path": "service.env"}],
        **extra,
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


VARIANTS = {
    "hardened": (DatabaseSettings(), "ENV=production\nMIGRATE_ON_START=false"),
    "ops": (
        DatabaseSettings(
            archive=False,
            rls=False,
            monthly_partitions=False,
            service_role_superuser=True,
            failed_migration=True,
            pending_migration=True,
        ),
        "ENV=production\nMIGRATE_ON_START=true",
    ),
}


@pytest.fixture(scope="module")
def sandbox_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A hardened and an ops-defect sandbox database (each its own cluster), with params for the auditor."""
    built, params = [], {}
    try:
        for name, (settings, env) in VARIANTS.items():
            folder = tmp_path_factory.mktemp(f"s4-{name}")
            database = setup_database(
                folder, free_port(), settings, f"s4{name}{uuid.uuid4().hex[:6]}", log=lambda _: None
            )
            built.append(database)
            # one tenant and a few interactions from the last minutes, never before this month (whose partition exists)
            with database.connect() as conn:
                tenant = conn.execute("INSERT INTO tenants (external_id, name) VALUES ('demo', 'Demo') RETURNING id")
                conn.execute(
                    "INSERT INTO interaction_events (tenant_id, occurred_at, event_type, item_id) "
                    "SELECT %s, greatest(date_trunc('month', now()), now() - g * interval '1 minute'), 'click', "
                    "'item-1' FROM generate_series(1, 40) g",
                    (tenant.fetchone()[0],),
                )
            finish_database(database, settings)
            params[name] = _write_params(
                folder, database.auditor_dsn, database.service_dsn, database.roles.service, env
            )
            admin = {"conninfo": database.admin_conninfo, "owner": database.roles.owner}
            (folder / "admin.json").write_text(json.dumps(admin), encoding="utf-8")
            if name == "hardened":
                (folder / "scratch.dsn").write_text(database.create_restore_scratch(), encoding="utf-8")
        yield params
    finally:
        for database in built:
            stop_database(database)


def _run(params: Path, tmp_path: Path) -> tuple[SectionRun, dict[str, Finding]]:
    audit = open_section(4, params_path=str(params), run_dir=str(tmp_path / "run"))
    findings = {check.id: audit.evaluate(check) for check in audit.section.checks.values()}
    audit.ctx.close()
    return audit, findings


def test_hardened_database_passes(sandbox_databases: dict[str, Path], tmp_path: Path) -> None:
    _, findings = _run(sandbox_databases["hardened"], tmp_path)
    for check_id in [*BROKEN_BY, "db.migrate-on-start-off", "db.connection-tls", "db.server-version",
                     "db.connection-headroom", "db.long-transactions", "db.down-migrations"]:  # fmt: skip
        assert findings[check_id].status == Status.PASS, (check_id, findings[check_id].summary)
    assert findings["db.migration-preflight-ci"].status == Status.MANUAL
    assert findings["db.restore-tested"].status == Status.MANUAL  # drill not enabled in these params
    history = findings["db.migrations-succeeded"].evidence["history"]
    assert history[0]["version"] == 20260201080000 and all(row["success"] for row in history)
    rls = {row["table"]: row for row in findings["db.rls-tenant-tables"].evidence["tables"]}
    assert len(rls) == 11 and all(row["rls"] and row["forced"] and row["policies"] >= 1 for row in rls.values())
    assert findings["db.backups"].evidence["archiver"][0]["archive_mode"] == "on"
    assert findings["db.connection-tls"].evidence["database_url_sslmode"] == "require"
    assert findings["db.default-partition-empty"].evidence["defaults"][0]["has_rows"] is False
    # every query of the section is quick: catalog and statistics only
    assert all(f.duration_s < 1.0 for f in findings.values() if f.id != "db.restore-tested")


def test_ops_defects_are_caught(sandbox_databases: dict[str, Path], tmp_path: Path) -> None:
    _, findings = _run(sandbox_databases["ops"], tmp_path)
    for check_id in BROKEN_BY:
        assert findings[check_id].status == Status.FAIL, (check_id, findings[check_id].summary)
    failed_rows = findings["db.migrations-succeeded"].evidence["failed_rows"]
    assert [row["success"] for row in failed_rows] == [False]
    pending = findings["db.migrations-current"].evidence["pending"]
    assert {"version": 20260201080000, "name": "api_keys"} in pending
    assert "WAL archiving is off" in findings["db.backups"].summary
    assert "superuser" in findings["db.service-role-privileges"].summary
    assert len(findings["db.service-role-privileges"].evidence["owns_tenant_tables"]) == 11
    defaults = {row["partition"]: row for row in findings["db.default-partition-empty"].evidence["defaults"]}
    assert defaults["interaction_events_default"]["has_rows"] is True
    assert defaults["exposure_events_default"]["has_rows"] is False
    assert findings["db.migrate-on-start-off"].status == Status.FAIL


def test_restore_drill_on_the_sandbox_database(sandbox_databases: dict[str, Path], tmp_path: Path) -> None:
    """A real drill as the auditor role (pg_read_all_data), into the scratch database the sandbox provides, on a
    production target whose params allow it — including a partition created after every grant was given."""
    params_path = sandbox_databases["hardened"]
    folder = params_path.parent
    admin = json.loads((folder / "admin.json").read_text())
    with psycopg.connect(admin["conninfo"], autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(admin["owner"])))
        conn.execute("SELECT ensure_monthly_partitions('interaction_events'::regclass, current_date + 365, 1)")
    document = yaml.safe_load(params_path.read_text())
    for name in ("auditor.dsn", "scratch.dsn", "service.env"):
        (tmp_path / name).write_text((folder / name).read_text())
    document["restore_drill"] = {"enabled": True, "scratch_dsn": "file:scratch.dsn", "allow_production": True}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(document))
    audit = open_section(4, params_path=str(tmp_path / "params.yaml"), run_dir=str(tmp_path / "run"))
    finding = audit.evaluate(audit.section.checks["db.restore-tested"])
    audit.ctx.close()
    assert finding.status == Status.PASS, finding.summary
    assert finding.evidence["objects_audited"] == finding.evidence["objects_restored"] > 50
    assert finding.evidence["measured_restore_s"] > 0 and finding.evidence["dump_bytes"] > 0
    assert not finding.evidence["missing_after_restore"] and not finding.evidence["row_mismatches"]
    restored = {row["table"]: row for row in finding.evidence["tables"]}
    interactions = [row for name, row in restored.items() if name.startswith("public.interaction_events_")]
    assert sum(row["restored_count"] for row in interactions) == 40  # RLS-forced rows all came back
    assert str(finding.evidence["measured_restore_s"]) in finding.summary

    # the same params without allow_production: a production target is not drilled
    document["restore_drill"]["allow_production"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(document))
    audit = open_section(4, params_path=str(tmp_path / "params.yaml"), run_dir=str(tmp_path / "run2"))
    refused = audit.evaluate(audit.section.checks["db.restore-tested"])
    audit.ctx.close()
    assert refused.status == Status.MANUAL and "allow_production" in refused.summary


@pytest.mark.slow
def test_hardened_sandbox_audit_runs_a_real_restore_drill(audit_findings: Any) -> None:
    finding = audit_findings("hardened")["db.restore-tested"]
    assert finding.status == Status.PASS, finding.summary
    assert finding.attestation is None  # measured by the drill, not attested
    assert finding.evidence["measured_restore_s"] > 0
    assert finding.evidence["objects_audited"] == finding.evidence["objects_restored"] > 50
    readers = audit_findings("hardened")["privacy.event-table-access"]
    assert readers.status == Status.PASS and readers.evidence["auditor"] in readers.evidence["allowed"]


# --- bounded on a 10-million-row event table -----------------------------------------------------------------------

BIG_SCHEMA = """
CREATE TABLE tenants (id uuid PRIMARY KEY);
CREATE TABLE interaction_events (id bigint, tenant_id uuid, occurred_at timestamptz NOT NULL)
    PARTITION BY RANGE (occurred_at);
CREATE TABLE interaction_events_default PARTITION OF interaction_events DEFAULT;
CREATE TABLE exposure_events (id bigint, tenant_id uuid, occurred_at timestamptz NOT NULL)
    PARTITION BY RANGE (occurred_at);
CREATE TABLE exposure_events_default PARTITION OF exposure_events DEFAULT;
"""


@pytest.fixture(scope="module")
def big_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    name = f"ra_s4_big_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(BIG_SCHEMA)
            conn.execute(
                "INSERT INTO interaction_events_default SELECT g, NULL, timestamptz '2024-01-01' + g * interval '1 s' "
                "FROM generate_series(1, 10000000) g"
            )
            conn.execute("ANALYZE interaction_events_default")
        folder = tmp_path_factory.mktemp("s4-big")
        yield _write_params(folder, dsn, dsn, "postgres", "ENV=production")
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_checks_stay_bounded_on_ten_million_rows(big_database: Path, tmp_path: Path) -> None:
    document = yaml.safe_load(big_database.read_text())
    document["database"]["statement_timeout_ms"] = 500  # a scan of 10 M rows could not finish in this
    big_database.write_text(yaml.safe_dump(document))
    started = time.perf_counter()
    _, findings = _run(big_database, tmp_path)
    elapsed = time.perf_counter() - started
    assert not [f.id for f in findings.values() if "statement_timeout" in f.summary]
    assert elapsed < 5, f"section took {elapsed:.1f} s"
    default = findings["db.default-partition-empty"]
    assert default.status == Status.FAIL
    rows = {row["partition"]: row for row in default.evidence["defaults"]}
    assert rows["interaction_events_default"]["has_rows"] is True
    assert 9_000_000 < rows["interaction_events_default"]["reltuples"] < 11_000_000
    assert "≈" in default.summary
    assert findings["db.event-partitions-ahead"].status == Status.FAIL
    assert findings["db.service-role-privileges"].status == Status.FAIL  # postgres: a superuser


def test_hardened_sandbox_sections_3_and_4_are_clean(audit_findings: Any) -> None:
    """After attestations are merged, nothing in sections 3–4 of the hardened sandbox is failing or unevaluated."""
    findings = [f for f in audit_findings("hardened").values() if f.section in {3, 4}]
    assert len(findings) == len(section_by_number(3).checks) + len(section_by_number(4).checks)
    assert {f.id: f.summary for f in findings if f.status not in {Status.PASS}} == {}
