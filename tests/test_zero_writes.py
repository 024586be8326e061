"""Zero writes: a full audit of the hardened sandbox changes nothing it can reach.

Before and after one full audit: every user table's write counters (pg_stat_user_tables) and content checksum, and
every manifest file, must be identical. The sandbox's request log shows what the audit sent: only reads, the
read-only POSTs, and write-denial PUTs that were refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql

from recsys_audit.probes.service import READ_ONLY_POSTS

if TYPE_CHECKING:
    from recsys_audit.run import AuditResult
    from recsys_audit.sandbox.harness import SandboxInstance

pytestmark = pytest.mark.slow

READ_METHODS = {"GET", "HEAD", "OPTIONS"}
WRITE_DENIED = {403, 409, 422}
Snapshot = dict[str, tuple[Any, ...]]


def database_snapshot(admin_dsn: str) -> Snapshot:
    """Per user table: (rows inserted, updated, deleted — aborted writes included — and md5 of its content)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT s.relid, s.schemaname, s.relname, s.n_tup_ins, s.n_tup_upd, s.n_tup_del "
            "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE c.relkind = 'r' "
            "ORDER BY s.schemaname, s.relname"
        ).fetchall()
        snapshot: Snapshot = {}
        for _, schema, name, inserted, updated, deleted in tables:
            checksum = conn.execute(
                sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t").format(
                    sql.Identifier(schema, name)
                )
            ).fetchone()[0]
            snapshot[f"{schema}.{name}"] = (inserted, updated, deleted, checksum)
    return snapshot


STATS_FLUSH_LAG_S = 11  # a backend publishes its table counters at the latest 10 s after it goes idle


def settled_snapshot(admin_dsn: str, timeout_s: float = 40) -> Snapshot:
    """A snapshot taken once every other client of the database has been idle long enough for its write counters
    to be published (so a write made just before is counted before, not after)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            busy, quiet_s = conn.execute(
                "SELECT count(*) FILTER (WHERE state <> 'idle'), "
                "coalesce(extract(epoch FROM now() - max(state_change)), 1e9)::float "
                "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            ).fetchone()
            if busy == 0 and quiet_s >= STATS_FLUSH_LAG_S:
                break
            time.sleep(max(0.5, min(STATS_FLUSH_LAG_S - quiet_s, 2.0)))
    return database_snapshot(admin_dsn)


def files_snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def request_log_lines(instance: SandboxInstance) -> list[dict[str, Any]]:
    path = instance.directory / "logs" / "requests.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def audited(sandbox: Callable[[str], SandboxInstance], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One full audit of the hardened instance, with everything it could touch captured before and after."""
    from recsys_audit.run import run_audit

    instance = sandbox("hardened")
    before = {
        "db": settled_snapshot(instance.admin_dsn),
        "registry": files_snapshot(instance.directory / "registry"),
        "log_lines": len(request_log_lines(instance)),
    }
    result: AuditResult = run_audit(instance.params_path, out_dir=tmp_path_factory.mktemp("zero-writes"))
    after = {
        "db": settled_snapshot(instance.admin_dsn),
        "registry": files_snapshot(instance.directory / "registry"),
        "requests": request_log_lines(instance)[before["log_lines"] :],
    }
    return {"before": before, "after": after, "result": result}


def test_the_audit_was_a_real_full_audit(audited: dict[str, Any]) -> None:
    result = audited["result"]
    assert {run.section for run in result.notebooks} == set(range(8))
    assert all(run.status == "ok" for run in result.notebooks), result.notebooks
    requests = audited["after"]["requests"]
    assert any(r["method"] == "POST" and r["path"] == "/v1/recommend" for r in requests)
    assert any(r["method"] == "PUT" for r in requests), "the write-denial probes must have run"


def test_database_content_and_write_counters_unchanged(audited: dict[str, Any]) -> None:
    before, after = audited["before"]["db"], audited["after"]["db"]
    assert before, "the sandbox database has user tables"
    changed = {table: (before.get(table), after.get(table)) for table in before.keys() | after.keys()}
    changed = {table: pair for table, pair in changed.items() if pair[0] != pair[1]}
    assert not changed, f"tables changed by the audit (ins, upd, del, md5): {changed}"


def test_manifest_store_unchanged(audited: dict[str, Any]) -> None:
    assert audited["before"]["registry"], "the sandbox has manifests"
    assert audited["after"]["registry"] == audited["before"]["registry"]


def test_service_saw_only_reads_read_only_posts_and_refused_puts(audited: dict[str, Any]) -> None:
    requests = audited["after"]["requests"]
    assert requests, "the request log recorded the audit"
    unexpected = []
    for request in requests:
        method, path, status = request["method"], request["path"].rstrip("/"), request["status"]
        if method in READ_METHODS or (method == "POST" and path in READ_ONLY_POSTS):
            continue
        if method == "PUT" and path.startswith("/v1/admin/") and status in WRITE_DENIED:
            continue
        unexpected.append(f"{method} {path} -> {status}")
    assert not unexpected, f"requests outside the read-only set: {sorted(set(unexpected))}"
