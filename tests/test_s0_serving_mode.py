"""Section 0 — serving mode.

The sandbox variants through the runner, plus focused runs against a small recsys-like service on loopback (recommend
and /metrics) and a real PostgreSQL database holding signal rows.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
import yaml
from psycopg import sql

from recsys_audit.findings import Finding, Status
from recsys_audit.notebook import open_section

SERVER = os.environ.get("RECSYS_AUDIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ARTIFACT_ENV = """ENV=production
RECSYS_ARTIFACT_MODE_ENABLED=true
RECSYS_ARTIFACT_MANIFEST_TEMPLATE=s3://recsys-artifacts/registry/current/{tenant}/{surface}/manifest.json
RECSYS_ARTIFACT_S3_ENDPOINT=https://s3.eu-west-1.amazonaws.com
RECSYS_ARTIFACT_S3_USE_SSL=true
RECSYS_ARTIFACT_MANIFEST_TTL=1m
RECSYS_ARTIFACT_CACHE_TTL=1m
"""


# --- the sandbox variants, through the runner ----------------------------------------------------------------------


@pytest.mark.slow
def test_hardened_serves_in_its_declared_mode(audit_findings) -> None:
    findings = audit_findings("hardened")
    for check_id in (
        "serving.mode-declared",
        "serving.mode-observed",
        "serving.artifact-config",
        "serving.live-recommend",
    ):
        assert findings[check_id].status == Status.PASS, (check_id, findings[check_id].summary)
    assert findings["serving.db-signals-fresh"].status in {Status.PASS, Status.SKIP}
    assert all(row["items"] for row in findings["serving.live-recommend"].evidence["requests"])


@pytest.mark.slow
def test_as_shipped_db_only_mode_is_observed(audit_findings) -> None:
    findings = audit_findings("as-shipped")
    assert findings["serving.artifact-config"].status == Status.SKIP
    observed = findings["serving.mode-observed"]
    assert observed.status == Status.PASS and observed.evidence["declared"] == "db_only"
    undocumented = findings["serving.mode-declared"]
    assert undocumented.status == Status.FAIL and "no documentation link" in undocumented.summary
    signals = findings["serving.db-signals-fresh"]
    assert signals.status == Status.PASS, signals.summary
    assert all(row["age_days"] is not None for row in signals.evidence["signals"])


# --- a recsys-like service on loopback -----------------------------------------------------------------------------


class ServingHandler(BaseHTTPRequestHandler):
    empty: ClassVar[bool] = False
    manifest_artifacts: ClassVar[float] = 2.0

    def log_message(self, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        text = (
            "# TYPE recsys_artifact_manifest_artifacts gauge\n"
            f"recsys_artifact_manifest_artifacts {self.manifest_artifacts}\n"
            "# TYPE recsys_artifact_manifest_age_seconds gauge\n"
            f"recsys_artifact_manifest_age_seconds {60.0 if self.manifest_artifacts else 0.0}\n"
        )
        self._send(200, text.encode(), "text/plain; version=0.0.4")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Authorization") != "Bearer viewer-token":
            return self._send(401, b'{"code":"RECSYS_AUTH_REQUIRED"}', "application/problem+json")
        if self.empty:
            body = {"items": [], "warnings": [{"code": "SIGNAL_UNAVAILABLE", "detail": "no signals"}]}
        else:
            body = {"items": [{"item_id": "i1", "rank": 1, "score": 1.0}], "meta": {"algo_version": "v1"}}
        return self._send(200, json.dumps(body).encode(), "application/json")


@pytest.fixture()
def serving() -> Iterator[str]:
    ServingHandler.empty, ServingHandler.manifest_artifacts = False, 2.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), ServingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_params(folder: Path, base_url: str, env: str, mode: str | None = "artifact", **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "service.env").write_text(env, encoding="utf-8")
    (folder / "viewer.token").write_text("viewer-token", encoding="utf-8")
    tenant: dict[str, Any] = {"id": "acme", "surfaces": ["home", "pdp"]}
    if mode:
        tenant.update(serving_mode=mode, mode_documented_at="https://wiki.example/recsys/serving")
    data = {
        "environment": {"name": "unit"},
        "target": {"base_url": base_url, "timeout_s": 3},
        "auth": {"credentials": {"viewer": {"bearer": "file:viewer.token"}}},
        "tenants": [tenant],
        "config_sources": [{"kind": "env_file", "path": "service.env"}],
        **extra,
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def evaluate(params_path: Path, check_id: str) -> Finding:
    run = open_section(0, "unit", str(params_path), str(params_path.parent / "run"))
    try:
        return run.evaluate(run.section.checks[check_id])
    finally:
        run.ctx.close()


def test_artifact_mode_consistent_passes(tmp_path: Path, serving: str) -> None:
    params = write_params(tmp_path, serving, ARTIFACT_ENV)
    for check_id in (
        "serving.mode-declared",
        "serving.mode-observed",
        "serving.artifact-config",
        "serving.live-recommend",
    ):
        finding = evaluate(params, check_id)
        assert finding.status == Status.PASS, (check_id, finding.summary)
    assert evaluate(params, "serving.db-signals-fresh").status == Status.SKIP


def test_undeclared_mode_fails(tmp_path: Path, serving: str) -> None:
    finding = evaluate(write_params(tmp_path, serving, ARTIFACT_ENV, mode=None), "serving.mode-declared")
    assert finding.status == Status.FAIL and "no serving mode for acme" in finding.summary


def test_declared_db_only_but_artifact_mode_observed_fails(tmp_path: Path, serving: str) -> None:
    finding = evaluate(write_params(tmp_path, serving, ARTIFACT_ENV, mode="db_only"), "serving.mode-observed")
    assert finding.status == Status.FAIL
    modes = {row["source"].split(" ")[0]: row["mode"] for row in finding.evidence["observations"]}
    assert modes == {"config": "artifact", "metrics": "artifact"}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("RECSYS_ARTIFACT_S3_USE_SSL=false", "clear text"),
        ("RECSYS_ARTIFACT_MANIFEST_TEMPLATE=s3://bucket/manifest.json", "lacks {tenant}"),
        ("RECSYS_ARTIFACT_MANIFEST_TTL=0", "disables the cache"),
        ("RECSYS_ARTIFACT_CACHE_TTL=soon", "not a duration"),
    ],
)
def test_artifact_config_defects_fail(tmp_path: Path, serving: str, change: str, needle: str) -> None:
    name = change.split("=")[0]
    env = "".join(line + "\n" for line in ARTIFACT_ENV.splitlines() if not line.startswith(name + "=")) + change
    finding = evaluate(write_params(tmp_path, serving, env), "serving.artifact-config")
    assert finding.status == Status.FAIL and needle in finding.summary


def test_empty_answers_warn_with_warning_codes(tmp_path: Path, serving: str) -> None:
    ServingHandler.empty = True
    finding = evaluate(write_params(tmp_path, serving, ARTIFACT_ENV), "serving.live-recommend")
    assert finding.status == Status.WARN and "SIGNAL_UNAVAILABLE" in finding.summary
    assert [row["items"] for row in finding.evidence["requests"]] == [0, 0]


# --- DB-only signals in a real database ----------------------------------------------------------------------------


@pytest.fixture()
def signal_db() -> Iterator[str]:
    name = f"s0_signals_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = SERVER.rsplit("/", 1)[0] + "/" + name
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE tenants (id uuid PRIMARY KEY, external_id text UNIQUE NOT NULL)")
            for table in ("item_popularity_daily", "item_covisit_daily"):
                conn.execute(
                    f"CREATE TABLE {table} (tenant_id uuid NOT NULL, namespace text NOT NULL, item_id text NOT NULL, "
                    f"day date NOT NULL, score numeric, PRIMARY KEY (tenant_id, namespace, item_id, day))"
                )
                conn.execute(f"CREATE INDEX ON {table} (tenant_id, namespace, day)")
        yield dsn
    finally:
        with psycopg.connect(SERVER, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_db_only_signals_fresh_and_stale(tmp_path: Path, serving: str, signal_db: str) -> None:
    os.environ["S0_TEST_DSN"] = signal_db
    params = write_params(
        tmp_path, serving, "RECSYS_ARTIFACT_MODE_ENABLED=false\n", mode="db_only", database={"dsn": "env:S0_TEST_DSN"}
    )
    today = dt.datetime.now(dt.UTC).date()
    with psycopg.connect(signal_db, autocommit=True) as conn:
        tenant = uuid.uuid4()
        conn.execute("INSERT INTO tenants VALUES (%s, 'acme')", (tenant,))
        conn.execute("INSERT INTO item_popularity_daily VALUES (%s, 'home', 'i1', %s, 1)", (tenant, today))
        conn.execute(
            "INSERT INTO item_popularity_daily VALUES (%s, 'pdp', 'i1', %s, 1)", (tenant, today - dt.timedelta(days=20))
        )
    finding = evaluate(params, "serving.db-signals-fresh")
    assert finding.status == Status.FAIL and "acme/pdp" in finding.summary and "acme/home" not in finding.summary
    ages = {row["surface"]: row["age_days"] for row in finding.evidence["signals"]}
    assert ages == {"home": 0, "pdp": 20}
    ServingHandler.manifest_artifacts = 0.0
    assert evaluate(params, "serving.mode-observed").status == Status.PASS
