"""Read-only PostgreSQL session for the audit.

Every statement runs in a read-only transaction (``default_transaction_read_only=on`` and ``SET TRANSACTION READ
ONLY``) under a statement timeout, with ``application_name=recsys-audit`` so the DBA can see who is asking. Each
query is its own transaction and is rolled back, and it is sent with the extended query protocol, which accepts one
statement only, so no ``…; SET TRANSACTION READ WRITE; …; COMMIT`` can slip through. Checks must stay bounded:
catalog statistics, ``TABLESAMPLE``, ``LIMIT`` and indexes — never an unbounded scan of an event table.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from recsys_audit.params import ParamsError, Secret
from recsys_audit.probes import ProbeError
from recsys_audit.redaction import redact_text


class ReadOnlyDatabase:
    def __init__(self, dsn: Secret, statement_timeout_ms: int = 3000, connect_timeout_s: int = 5) -> None:
        self._dsn = dsn
        self.statement_timeout_ms = statement_timeout_ms
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    def _connection(self) -> psycopg.Connection[dict[str, Any]]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self._dsn.reveal(),
                    autocommit=False,
                    row_factory=dict_row,
                    connect_timeout=self.connect_timeout_s,
                    application_name="recsys-audit",
                    options=(
                        "-c default_transaction_read_only=on "
                        f"-c statement_timeout={self.statement_timeout_ms} "
                        "-c lock_timeout=1000 -c idle_in_transaction_session_timeout=60000"
                    ),
                )
            except psycopg.Error as exc:
                raise ProbeError(f"database connection failed: {describe_connection_error(exc, self._dsn)}") from None
        return self._conn

    def query(self, sql: str, params: dict[str, Any] | tuple[Any, ...] | None = None) -> list[dict[str, Any]]:
        """Run one read-only statement and return its rows as dicts."""
        conn = self._connection()
        try:
            with conn.cursor() as cursor:
                # pipeline mode always uses the extended protocol: a single statement per call
                with conn.pipeline() as pipeline:
                    cursor.execute("SET TRANSACTION READ ONLY")
                    cursor.execute(sql, params)  # type: ignore[arg-type]
                    pipeline.sync()
                rows = cursor.fetchall() if cursor.description else []
            return rows
        except psycopg.errors.QueryCanceled:
            raise ProbeError(
                f"query cancelled by statement_timeout ({self.statement_timeout_ms} ms): {_sql_head(sql)}"
            ) from None
        except psycopg.Error as exc:
            raise ProbeError(f"query failed: {_one_line(exc)} [{_sql_head(sql)}]") from None
        finally:
            if not conn.closed:
                conn.rollback()

    def scalar(self, sql: str, params: dict[str, Any] | tuple[Any, ...] | None = None) -> Any:
        rows = self.query(sql, params)
        return next(iter(rows[0].values())) if rows else None

    def table_exists(self, name: str, schema: str = "public") -> bool:
        return bool(self.scalar("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.{name}",)))

    def has_rows(self, table: str, schema: str = "public") -> bool:
        """Whether a table holds at least one row (``SELECT 1 … LIMIT 1``: bounded whatever its size)."""
        statement = sql.SQL("SELECT 1 AS found FROM {} LIMIT 1").format(sql.Identifier(schema, table))
        return bool(self.query(statement.as_string(None)))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _one_line(exc: Exception) -> str:
    """A server-side error (from a query, not a connection): SQLSTATE and the server's primary message."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    state = getattr(exc, "sqlstate", None)
    text = f"{state} {primary}" if primary else type(exc).__name__
    return redact_text(" ".join(text.split()))[:300]


def describe_connection_error(exc: Exception, dsn: Secret) -> str:
    """Why libpq could not connect, in the kit's words: libpq's own messages can quote the DSN (an unparsable DSN is
    echoed back, password included), so only the host, port, role and database — never the password — are named."""
    try:
        parts = conninfo_to_dict(dsn.reveal())
    except (psycopg.Error, ParamsError):
        return "the DSN could not be parsed (libpq's message is not shown: it may quote the password)"
    host, port = parts.get("host") or "the default host", parts.get("port") or "5432"
    user, database = parts.get("user") or "the default role", parts.get("dbname") or "the default database"
    where = f"server at {host} port {port}"
    text = str(exc).lower()
    if "password authentication failed" in text or "authentication failed" in text:
        return f"authentication failed for role {user} at the {where}"
    if "role" in text and "does not exist" in text:
        return f"role {user} does not exist at the {where}"
    if "database" in text and "does not exist" in text:
        return f"database {database} does not exist at the {where}"
    if "pg_hba.conf" in text:
        return f"the {where} refuses role {user} (pg_hba.conf)"
    if "refused" in text or "is the server running" in text or "no such file or directory" in text:
        return f"no {where} (connection refused or not running)"
    if "timeout" in text or "timed out" in text:
        return f"no answer from the {where} within the connect timeout"
    if "translate host name" in text or "name or service not known" in text:
        return f"host name {host} not resolved"
    if "ssl" in text or "tls" in text:
        return f"TLS negotiation with the {where} failed"
    return f"libpq could not connect to the {where} (its message is not shown: it may quote the DSN)"


def _sql_head(sql: str) -> str:
    return " ".join(sql.split())[:120]
