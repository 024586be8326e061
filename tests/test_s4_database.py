"""Section 4 — database and migrations.

Two kinds of evidence: the full notebook run against the sandbox variants (``audit_findings``), and the checks run
directly against real sandbox databases (own PostgreSQL clusters built by the sandbox's database module: hardened and
with the ops defects), plus a 10-million-row event table that every check must handle within its statement timeout.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from recsys_audit.catalog import section_by_number
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


# --- the full audit against the sandbox variants ---------------------------------------------------------------------


@pytest.mark.parametrize("check_id", sorted(BROKEN_BY))
def test_sandbox_variants(audit_findings: Any, check_id: str) -> None:
    assert audit_findings("hardened")[check_id].status == Status.PASS, audit_findings("hardened")[check_id].summary
    assert audit_findings("ops-defects")[check_id].status == Status.FAIL


def test_sandbox_as_shipped_database(audit_findings: Any) -> None:
    findings = audit_findings("as-shipped")
    for check_id in ("db.backups", "db.rls-tenant-tables", "db.service-role-privileges", "db.default-partition-empty"):
        assert findings[check_id].status == Status.FAIL, (check_id, findings[check_id].summary)
    assert findings["db.migrate-on-start-off"].status in {Status.FAIL, Status.WARN}


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
            with database.connect() as conn:  # one tenant and a few interactions from the last hours
                tenant = conn.execute("INSERT INTO tenants (external_id, name) VALUES ('demo', 'Demo') RETURNING id")
                conn.execute(
                    "INSERT INTO interaction_events (tenant_id, occurred_at, event_type, item_id) "
                    "SELECT %s, now() - g * interval '1 minute', 'click', 'item-1' FROM generate_series(1, 40) g",
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
                     "db.connection-headroom", "db.long-transactions"]:  # fmt: skip
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
    assert len(findings) == sum(len(section_by_number(n).checks) for n in (3, 4))
    assert {f.id: f.summary for f in findings if f.status not in {Status.PASS}} == {}
