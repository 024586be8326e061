"""The audit's database session cannot write, even as a superuser, and every statement has a timeout."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from recsys_audit.params import Secret
from recsys_audit.probes import ProbeError
from recsys_audit.probes.database import ReadOnlyDatabase

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, ReadOnlyDatabase]]:
    name = f"ra_readonly_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, note text)")
        conn.execute("INSERT INTO events SELECT g, 'row ' || g FROM generate_series(1, 10) g")
    monkeypatch.setenv("RA_TEST_READONLY_DSN", dsn)
    db = ReadOnlyDatabase(Secret("env:RA_TEST_READONLY_DSN"), statement_timeout_ms=300)
    yield dsn, db
    db.close()
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rows(dsn: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


WRITES = [
    "INSERT INTO events VALUES (99, 'written')",
    "UPDATE events SET note = 'changed' WHERE id = 1",
    "DELETE FROM events WHERE id = 2",
    "CREATE TABLE intruder (id int)",
    "ALTER TABLE events ADD COLUMN extra int",
    "WITH moved AS (DELETE FROM events WHERE id = 3 RETURNING *) SELECT count(*) FROM moved",
    "SELECT nextval(pg_get_serial_sequence('events', 'id'))",
]


@pytest.mark.parametrize("statement", WRITES)
def test_writes_are_refused(database: tuple[str, ReadOnlyDatabase], statement: str) -> None:
    dsn, db = database
    with pytest.raises(ProbeError, match="read-only transaction"):
        db.query(statement)
    assert _rows(dsn, "SELECT count(*), count(*) FILTER (WHERE note LIKE 'row %') FROM events") == [(10, 10)]
    assert _rows(dsn, "SELECT to_regclass('intruder')") == [(None,)]


def test_cannot_switch_to_read_write_within_one_call(database: tuple[str, ReadOnlyDatabase]) -> None:
    dsn, db = database
    with pytest.raises(ProbeError, match="multiple commands"):
        db.query("SET TRANSACTION READ WRITE; INSERT INTO events VALUES (100, 'x'); COMMIT")
    # a lone SET in one call is rolled back with its transaction: the next call is read-only again
    db.query("SET TRANSACTION READ WRITE")
    with pytest.raises(ProbeError, match="read-only transaction"):
        db.query("INSERT INTO events VALUES (101, 'y')")
    assert _rows(dsn, "SELECT count(*) FROM events") == [(10,)]


def test_statement_timeout_is_enforced(database: tuple[str, ReadOnlyDatabase]) -> None:
    _, db = database
    with pytest.raises(ProbeError, match=r"statement_timeout \(300 ms\)"):
        db.query("SELECT pg_sleep(3)")
    # the session survives a cancelled statement and keeps its settings
    rows = db.query(
        "SELECT current_setting('statement_timeout') AS timeout, current_setting('transaction_read_only') AS ro"
    )
    assert rows == [{"timeout": "300ms", "ro": "on"}]


def test_reads_and_bounded_helpers(database: tuple[str, ReadOnlyDatabase]) -> None:
    _, db = database
    assert db.scalar("SELECT count(*) FROM events WHERE note LIKE 'row 1%'") == 2  # a literal % needs no escaping
    assert db.query("SELECT id FROM events WHERE id = %s", (4,)) == [{"id": 4}]
    assert db.table_exists("events") and not db.table_exists("missing_table")
    assert db.has_rows("events")
    assert db.scalar("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()") == "recsys-audit"
