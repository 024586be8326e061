"""Restore drill: dump the audited database read-only, restore it into a scratch database, compare the two.

The scratch database named by ``restore_drill.scratch_dsn`` is the only place the kit ever writes. The dump runs with
``pg_dump`` (a read-only, repeatable-read snapshot; ``default_transaction_read_only=on`` is forced on top) and the
restore with ``pg_restore --single-transaction --exit-on-error`` into the emptied scratch database. Passwords travel
to the client programs in ``PGPASSWORD``, never on a command line. The comparison uses catalog queries on the audited
side (schema objects, ``n_live_tup``/``reltuples`` estimates) and exact counts on the scratch side, the kit's own copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from recsys_audit.params import Secret
from recsys_audit.probes import ProbeError
from recsys_audit.probes.database import describe_connection_error
from recsys_audit.redaction import redact_text

# Schema objects compared between the audited and the scratch database (user schemas only).
SCHEMA_OBJECTS_SQL = """
WITH user_ns AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND nspname NOT LIKE 'pg_temp%'
      AND nspname NOT LIKE 'pg_toast_temp%'
)
SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'i' THEN 'index' WHEN 'I' THEN 'index'
       WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' END AS kind,
       n.nspname || '.' || c.relname AS name
FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'i', 'I', 'S', 'v', 'm')
UNION ALL
SELECT 'constraint', n.nspname || '.' || cl.relname || '.' || co.conname
FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid JOIN user_ns n ON n.oid = cl.relnamespace
WHERE co.conparentid = 0
UNION ALL
SELECT 'trigger', n.nspname || '.' || cl.relname || '.' || t.tgname
FROM pg_trigger t JOIN pg_class cl ON cl.oid = t.tgrelid JOIN user_ns n ON n.oid = cl.relnamespace
WHERE NOT t.tgisinternal
UNION ALL
SELECT 'policy', n.nspname || '.' || cl.relname || '.' || p.polname
FROM pg_policy p JOIN pg_class cl ON cl.oid = p.polrelid JOIN user_ns n ON n.oid = cl.relnamespace
UNION ALL
SELECT 'function', n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
FROM pg_proc p JOIN user_ns n ON n.oid = p.pronamespace
WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'type', n.nspname || '.' || t.typname
FROM pg_type t JOIN user_ns n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'c') AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')
UNION ALL
SELECT 'extension', e.extname FROM pg_extension e WHERE e.extname <> 'plpgsql'
"""

# Tables with data (partitioned parents hold none) and the audited side's estimates: never a count(*).
TABLE_ESTIMATES_SQL = """
SELECT n.nspname || '.' || c.relname AS name, n.nspname AS schema, c.relname AS table,
       c.reltuples::bigint AS reltuples, s.n_live_tup AS live
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1
"""

USER_SCHEMAS_SQL = """
SELECT nspname FROM pg_namespace
WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'
"""

IDENTITY_SQL = """
SELECT current_database() AS database, pg_postmaster_start_time()::text AS started,
       (SELECT oid FROM pg_database WHERE datname = current_database())::int AS database_oid
"""


@dataclass
class RestoreDrillResult:
    dump_s: float
    restore_s: float
    compare_s: float
    dump_bytes: int
    objects_source: int
    objects_scratch: int
    missing: list[dict[str, str]] = field(default_factory=list)  # in the audited database, absent after restore
    extra: list[dict[str, str]] = field(default_factory=list)  # in scratch only (left over from elsewhere)
    tables: list[dict[str, Any]] = field(default_factory=list)  # per-table estimate vs restored count

    @property
    def total_s(self) -> float:
        return round(self.dump_s + self.restore_s, 2)

    @property
    def row_mismatches(self) -> list[dict[str, Any]]:
        return [row for row in self.tables if row["verdict"] == "mismatch"]

    @property
    def faithful(self) -> bool:
        return not self.missing and not self.row_mismatches


def _client_args(dsn: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string without the password, and the environment that carries it."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ProbeError("unreadable DSN (the parser's message is not shown: it may quote the password)") from None
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    password = parts.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    else:
        env.pop("PGPASSWORD", None)
    return make_conninfo(**{k: str(v) for k, v in parts.items() if v is not None}), env


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).is_file():
            return str(folder / name)
    raise ProbeError(f"{name} not found on PATH — install the PostgreSQL client programs")


def _run(command: list[str], env: dict[str, str], timeout_s: float, what: str) -> None:
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"{what} did not finish within {timeout_s:g} s") from None
    if done.returncode != 0:
        message = " ".join((done.stderr or done.stdout or "no output").split())
        raise ProbeError(f"{what} failed (exit {done.returncode}): {redact_text(message)[:240]}")


class RestoreDrill:
    """One drill: :meth:`dump`, :meth:`restore`, :meth:`compare` (or all three with :meth:`run`)."""

    def __init__(self, source_dsn: Secret, scratch_dsn: Secret, timeout_s: float = 600.0) -> None:
        self.source_dsn = source_dsn
        self.scratch_dsn = scratch_dsn
        self.timeout_s = timeout_s

    def _connect(self, dsn: Secret, read_only: bool) -> psycopg.Connection[Any]:
        options = "-c statement_timeout=60000" + (" -c default_transaction_read_only=on" if read_only else "")
        try:
            return psycopg.connect(
                dsn.reveal(), autocommit=True, connect_timeout=10, application_name="recsys-audit-restore-drill",
                options=options,
            )  # fmt: skip
        except psycopg.Error as exc:
            side = "audited" if read_only else "scratch"
            raise ProbeError(f"{side} database connection failed: {describe_connection_error(exc, dsn)}") from None

    @staticmethod
    def _rows(conn: psycopg.Connection[Any], statement: str) -> list[tuple[Any, ...]]:
        with conn.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall()

    def check_distinct(self) -> None:
        """Refuse a scratch database that is the audited database itself."""
        with self._connect(self.source_dsn, True) as source, self._connect(self.scratch_dsn, False) as scratch:
            if self._rows(source, IDENTITY_SQL) == self._rows(scratch, IDENTITY_SQL):
                raise ProbeError("restore_drill.scratch_dsn points at the audited database itself — name a scratch one")

    def dump(self, folder: Path) -> Path:
        conninfo, env = _client_args(self.source_dsn.reveal())
        env["PGOPTIONS"] = "-c default_transaction_read_only=on"
        env["PGAPPNAME"] = "recsys-audit-restore-drill"
        target = folder / "audited.dump"
        command = [
            _binary("pg_dump"), "--format=custom", "--no-password", "--lock-wait-timeout=5000", "--enable-row-security",
            f"--file={target}", f"--dbname={conninfo}",
        ]  # fmt: skip
        _run(command, env, self.timeout_s, "pg_dump of the audited database")
        return target

    def empty_scratch(self) -> None:
        """Drop every user schema of the scratch database, so a drill restores into a blank one every time.

        (``pg_restore --clean`` cannot replay over a previous restore of partitioned tables: it would drop the
        inherited constraints of the partitions first.)
        """
        with self._connect(self.scratch_dsn, False) as scratch:
            for (schema,) in self._rows(scratch, USER_SCHEMAS_SQL):
                scratch.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            scratch.execute("CREATE SCHEMA IF NOT EXISTS public")

    def restore(self, dump_path: Path) -> None:
        self.empty_scratch()
        conninfo, env = _client_args(self.scratch_dsn.reveal())
        command = [
            _binary("pg_restore"), "--single-transaction", "--exit-on-error",
            "--no-owner", "--no-privileges", "--no-password", f"--dbname={conninfo}", str(dump_path),
        ]  # fmt: skip
        _run(command, env, self.timeout_s, "pg_restore into the scratch database")

    def compare(self) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, Any]], int, int]:
        with self._connect(self.source_dsn, True) as source, self._connect(self.scratch_dsn, False) as scratch:
            source_objects = set(self._rows(source, SCHEMA_OBJECTS_SQL))
            scratch_objects = set(self._rows(scratch, SCHEMA_OBJECTS_SQL))
            estimates = self._rows(source, TABLE_ESTIMATES_SQL)
            restored = {row[0] for row in self._rows(scratch, TABLE_ESTIMATES_SQL)}
            tables = []
            for name, schema, table, reltuples, live in estimates:
                estimate = live if live is not None and (live > 0 or reltuples <= 0) else max(reltuples, 0)
                row: dict[str, Any] = {"table": name, "audited_estimate": estimate}
                if name not in restored:
                    row.update(restored_count=None, verdict="missing")
                else:
                    count_sql = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
                    count = self._rows(scratch, count_sql.as_string(scratch))[0][0]
                    row.update(restored_count=count, verdict=_row_verdict(estimate, count))
                tables.append(row)

        def as_rows(objects: set[tuple[Any, ...]]) -> list[dict[str, str]]:
            return [{"kind": kind, "name": name} for kind, name in sorted(objects)]

        missing = as_rows(source_objects - scratch_objects)
        extra = as_rows(scratch_objects - source_objects)
        return missing, extra, tables, len(source_objects), len(scratch_objects)

    def run(self) -> RestoreDrillResult:
        self.check_distinct()
        with tempfile.TemporaryDirectory(prefix="recsys-audit-drill-") as folder:
            started = time.perf_counter()
            dump_path = self.dump(Path(folder))
            dumped = time.perf_counter()
            self.restore(dump_path)
            restored = time.perf_counter()
            dump_bytes = dump_path.stat().st_size
        missing, extra, tables, n_source, n_scratch = self.compare()
        return RestoreDrillResult(
            dump_s=round(dumped - started, 2),
            restore_s=round(restored - dumped, 2),
            compare_s=round(time.perf_counter() - restored, 2),
            dump_bytes=dump_bytes,
            objects_source=n_source,
            objects_scratch=n_scratch,
            missing=missing,
            extra=extra,
            tables=tables,
        )


def _row_verdict(estimate: int, count: int) -> str:
    """Estimates are statistics, not counts: allow 10 % (and 100 rows) of slack before calling it a mismatch."""
    if estimate == count:
        return "equal"
    return "close" if abs(estimate - count) <= max(100, 0.1 * max(estimate, count)) else "mismatch"
