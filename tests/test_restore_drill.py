"""Restore drill: a real pg_dump / pg_restore into a scratch database, and the comparison that catches a bad one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from recsys_audit.findings import Status
from recsys_audit.notebook import open_section
from recsys_audit.params import Secret
from recsys_audit.probes import ProbeError
from recsys_audit.probes.restore import RestoreDrill

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
SOURCE_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TYPE item_state AS ENUM ('active', 'hidden');
CREATE TABLE tenants (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), external_id text UNIQUE NOT NULL);
CREATE TABLE items (id bigserial PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES tenants(id), state item_state,
                    note text);
CREATE INDEX items_tenant_idx ON items (tenant_id);
ALTER TABLE items ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON items USING (tenant_id::text = current_setting('app.tenant_id', true));
CREATE TABLE events (id bigserial, occurred_at timestamptz NOT NULL, payload jsonb, PRIMARY KEY (occurred_at, id))
    PARTITION BY RANGE (occurred_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE TABLE events_2026_05 PARTITION OF events FOR VALUES FROM ('2026-05-01') TO ('2026-06-01');
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();
INSERT INTO tenants (external_id) VALUES ('demo'), ('beta');
INSERT INTO items (tenant_id, state, note) SELECT (SELECT id FROM tenants ORDER BY external_id LIMIT 1),
       'active', 'note ' || g FROM generate_series(1, 3000) g;
INSERT INTO events (occurred_at, payload) SELECT timestamptz '2026-05-01' + g * interval '1 minute', '{}'
       FROM generate_series(1, 2000) g;
INSERT INTO events (occurred_at, payload) SELECT timestamptz '2025-01-01' + g * interval '1 minute', '{}'
       FROM generate_series(1, 500) g;
ANALYZE;
"""


def _admin(statement: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(statement)


@pytest.fixture
def databases(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:10]
    source, scratch = f"ra_drill_src_{tag}", f"ra_drill_scratch_{tag}"
    _admin(f'CREATE DATABASE "{source}"')
    _admin(f'CREATE DATABASE "{scratch}"')
    source_dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={source}"
    scratch_dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={scratch}"
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute(SOURCE_SCHEMA)
    time.sleep(0.6)  # let the cumulative statistics of the seeding session settle (n_live_tup)
    monkeypatch.setenv("RA_TEST_DRILL_SOURCE", source_dsn)
    monkeypatch.setenv("RA_TEST_DRILL_SCRATCH", scratch_dsn)
    yield source_dsn, scratch_dsn
    for name in (source, scratch):
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _writes(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables").fetchone()
        return int(row[0] or 0) if row else 0


def _drill(cls: type[RestoreDrill] = RestoreDrill) -> RestoreDrill:
    return cls(Secret("env:RA_TEST_DRILL_SOURCE"), Secret("env:RA_TEST_DRILL_SCRATCH"), timeout_s=120)


def test_drill_restores_a_faithful_copy(databases: tuple[str, str]) -> None:
    source_dsn, _ = databases
    writes_before = _writes(source_dsn)
    result = _drill().run()
    assert result.faithful, (result.missing, result.row_mismatches)
    assert result.missing == [] and result.extra == []
    by_table = {row["table"]: row for row in result.tables}
    assert by_table["public.items"]["restored_count"] == 3000
    assert by_table["public.events_2026_05"]["restored_count"] == 2000
    assert by_table["public.events_default"]["restored_count"] == 500
    assert all(row["verdict"] in {"equal", "close"} for row in result.tables)
    assert result.objects_source == result.objects_scratch >= 15  # tables, indexes, policy, trigger, function, type…
    assert result.dump_bytes > 0 and result.total_s > 0
    time.sleep(0.6)
    assert _writes(source_dsn) == writes_before  # the audited database was only read

    # a second drill into the same scratch database replaces the previous copy
    assert _drill().run().faithful


class TableLosingDrill(RestoreDrill):
    """A restore that silently loses a table (as a restore from an incomplete dump would)."""

    def restore(self, dump_path: Path) -> None:
        super().restore(dump_path)
        with psycopg.connect(self.scratch_dsn.reveal(), autocommit=True) as conn:
            conn.execute("DROP TABLE events_default")


class RowLosingDrill(RestoreDrill):
    def restore(self, dump_path: Path) -> None:
        super().restore(dump_path)
        with psycopg.connect(self.scratch_dsn.reveal(), autocommit=True) as conn:
            conn.execute("DELETE FROM items WHERE id > 1000")


def test_drill_catches_a_missing_table(databases: tuple[str, str]) -> None:
    result = _drill(TableLosingDrill).run()
    assert not result.faithful
    assert {"kind": "table", "name": "public.events_default"} in result.missing
    assert [row["verdict"] for row in result.tables if row["table"] == "public.events_default"] == ["missing"]


def test_drill_catches_missing_rows(databases: tuple[str, str]) -> None:
    result = _drill(RowLosingDrill).run()
    assert not result.faithful and result.missing == []
    assert result.row_mismatches == [
        {"table": "public.items", "audited_estimate": 3000, "restored_count": 1000, "verdict": "mismatch"}
    ]


def test_drill_refuses_the_audited_database_as_scratch(databases: tuple[str, str], monkeypatch) -> None:
    source_dsn, _ = databases
    monkeypatch.setenv("RA_TEST_DRILL_SCRATCH", source_dsn)
    with pytest.raises(ProbeError, match="points at the audited database itself"):
        _drill().run()


def test_drill_reports_a_failing_dump(databases: tuple[str, str], monkeypatch) -> None:
    monkeypatch.setenv("RA_TEST_DRILL_SOURCE", "host=127.0.0.1 port=5432 user=postgres dbname=ra_no_such_db")
    with pytest.raises(ProbeError, match="connection failed"):
        _drill().run()


def _params(tmp_path: Path, *, production: bool, enabled: bool = True, allow: bool = False) -> Path:
    document = {
        "environment": {"name": "drill"},
        "target": {"base_url": "http://127.0.0.1:9", "production": production},
        "tenants": [{"id": "demo", "surfaces": ["home"]}],
        "database": {"dsn": "env:RA_TEST_DRILL_SOURCE"},
        "restore_drill": {"enabled": enabled, "scratch_dsn": "env:RA_TEST_DRILL_SCRATCH", "allow_production": allow},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_restore_check_measures_the_drill(databases: tuple[str, str], tmp_path: Path) -> None:
    audit = open_section(4, params_path=str(_params(tmp_path, production=False)), run_dir=str(tmp_path / "run"))
    finding = audit.evaluate(audit.section.checks["db.restore-tested"])
    assert finding.status == Status.PASS, finding.summary
    assert finding.evidence["measured_restore_s"] > 0
    assert finding.evidence["missing_after_restore"] == []
    assert "dbname=" not in str(finding.evidence)  # no connection string in the evidence


@pytest.mark.parametrize(("enabled", "production", "phrase"), [(False, False, "not enabled"), (True, True, "refused")])
def test_restore_check_without_a_drill_needs_an_attestation(
    databases: tuple[str, str], tmp_path: Path, enabled: bool, production: bool, phrase: str
) -> None:
    params = _params(tmp_path, production=production, enabled=enabled)
    audit = open_section(4, params_path=str(params), run_dir=str(tmp_path / "run"))
    finding = audit.evaluate(audit.section.checks["db.restore-tested"])
    assert finding.status == Status.MANUAL and phrase in finding.summary
    with psycopg.connect(databases[1]) as conn:  # nothing was restored into the scratch database
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
