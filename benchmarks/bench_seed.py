"""Seed throughput: 10 million exposure_events rows and 1 million interaction_events in a scratch database.

Uses the shared PostgreSQL server (DATABASE_URL or 127.0.0.1:5432), creates a uniquely named database with the
sandbox schema and monthly partitions, seeds it with ``recsys_audit.sandbox.seed`` and prints the timings; the
database is dropped at the end. Override the sizes with EXPOSURES=… INTERACTIONS=….
"""

from __future__ import annotations

import os
import time
import uuid

import psycopg
from psycopg import sql

from recsys_audit.sandbox import database, seed


def main() -> int:
    exposures = int(os.environ.get("EXPOSURES", "10000000"))
    interactions = int(os.environ.get("INTERACTIONS", "1000000"))
    server = os.environ.get("DATABASE_URL") or database.SHARED_SERVER_DSN
    name = f"recsys_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        dsn = psycopg.conninfo.make_conninfo(server, dbname=name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            user = conn.execute("SELECT current_user").fetchone()[0]
            database.apply_migrations(conn, user)
            database.create_monthly_partitions(conn, user)
            started = time.perf_counter()
            result = seed.seed(conn, seed.SeedOptions(exposure_rows=exposures, interaction_rows=interactions))
            total = time.perf_counter() - started
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
        for label, seconds in result.timings_s.items():
            print(f"{label:>20}: {seconds:8.1f} s")
        rate = exposures / result.timings_s["exposure_events"]
        print(f"{'total':>20}: {total:8.1f} s  ({exposures:,} exposures at {rate:,.0f} rows/s; database {size})")
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
