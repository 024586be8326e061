"""Audit time against an empty database vs one holding 10 million exposure and 1 million interaction rows.

Starts a hardened sandbox, times the full audit (load test off; median of N runs after a warm-up), then bulk-loads
the event tables of the same instance (``recsys_audit.sandbox.seed``), analyzes them and times the audit again. The
checks read catalog statistics, samples and indexes only, so the two figures should stay close (target: the loaded
audit takes at most 1.2x the empty one). The restore drill is left out of both: it dumps the whole database and
restores it into a scratch one, so its time grows with the data by design (an opt-in drill; run it against a replica).
Figures only; nothing is asserted.

Usage: python benchmarks/bench_scale.py [--runs 3] [--exposures 10000000] [--interactions 1000000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import yaml
from bench_audit import hardened_sandbox, timed_audits

from recsys_audit.sandbox.seed import SeedOptions, seed_exposures, seed_interactions

EVENT_TABLES = ("exposure_events", "interaction_events")


def bulk_load(admin_dsn: str, salt: str, exposures: int, interactions: int) -> float:
    started = time.perf_counter()
    options = SeedOptions(subject_hash_salt=salt)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        seed_exposures(conn, exposures, options)
        seed_interactions(conn, interactions, options)
        for table in EVENT_TABLES:
            conn.execute(f"ANALYZE {table}")  # what autovacuum would do soon after such a load
    return time.perf_counter() - started


def table_sizes(admin_dsn: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_size_pretty(sum(pg_total_relation_size(i.inhrelid))), "
            "sum(s.n_live_tup)::bigint FROM pg_class c JOIN pg_inherits i ON i.inhparent = c.oid "
            "JOIN pg_stat_user_tables s ON s.relid = i.inhrelid WHERE c.relname = ANY(%s) GROUP BY c.relname",
            (list(EVENT_TABLES),),
        ).fetchall()
    return ", ".join(f"{name}: ~{live:,} rows, {size}" for name, size, live in rows)


def median_audit(params: Path, out_dir: Path, runs: int) -> float:
    return statistics.median(run.seconds for run, _ in timed_audits(params, out_dir, runs))


def without_drill(params: Path) -> None:
    document = yaml.safe_load(params.read_text(encoding="utf-8"))
    document.pop("restore_drill", None)
    params.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--exposures", type=int, default=10_000_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        with hardened_sandbox() as (instance, params):
            without_drill(params)
            print(f"event tables before: {table_sizes(instance.admin_dsn)}", flush=True)
            empty = median_audit(params, work / "empty", args.runs)
            salt = instance.env.get("EXPOSURE_HASH_SALT", "")
            loaded_in = bulk_load(instance.admin_dsn, salt, args.exposures, args.interactions)
            print(f"bulk load of {args.exposures:,} + {args.interactions:,} rows: {loaded_in:.1f} s", flush=True)
            print(f"event tables after: {table_sizes(instance.admin_dsn)}", flush=True)
            loaded = median_audit(params, work / "loaded", args.runs)
        print(f"full audit, empty database:  median {empty:.2f} s")
        print(f"full audit, loaded database: median {loaded:.2f} s")
        print(f"ratio: {loaded / empty:.2f}x (target <= 1.2x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
