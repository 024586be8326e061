"""Section 0 — serving mode.

Every check on fake contexts (``CASES``: a healthy and a broken input, exact statuses), the sandbox variants through
the runner, and the DB-only signal check against a real PostgreSQL database.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fakes import Answer, CannedDatabase, Case, Request, check_case
from psycopg import sql

from recsys_audit.findings import Status

SERVER = os.environ.get("RECSYS_AUDIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TODAY = dt.datetime.now(dt.UTC).date()
ARTIFACT_ENV = {
    "ENV": "production",
    "RECSYS_ARTIFACT_MODE_ENABLED": "true",
    "RECSYS_ARTIFACT_MANIFEST_TEMPLATE": "file://{folder}/registry/current/{tenant}/{surface}/manifest.json",
    "RECSYS_ARTIFACT_FILE_ROOT": "{folder}/registry",
    "RECSYS_ARTIFACT_MANIFEST_TTL": "1m",
    "RECSYS_ARTIFACT_CACHE_TTL": "1m",
}
DB_ONLY_ENV = {"ENV": "production", "RECSYS_ARTIFACT_MODE_ENABLED": "false"}
MANIFEST_FILE = {"registry/current/acme/home/manifest.json": "{}"}


def metrics(artifacts: float) -> str:
    age = 60.0 if artifacts else 0.0
    return (
        "# TYPE recsys_artifact_manifest_artifacts gauge\n"
        f"recsys_artifact_manifest_artifacts {artifacts}\n"
        "# TYPE recsys_artifact_manifest_age_seconds gauge\n"
        f"recsys_artifact_manifest_age_seconds {age}\n"
    )


def recommend(items: int = 1, status: int = 200) -> Any:
    """POST /v1/recommend: 401 without the viewer token, else ``items`` items (or ``status``)."""

    def answer(request: Request) -> Answer:
        if request.headers.get("authorization") != "Bearer viewer-token":
            return Answer(401, {"code": "RECSYS_AUTH_INVALID"})
        if status != 200:
            return Answer(status, {"code": "RECSYS_INTERNAL"})
        body: dict[str, Any] = {"items": [{"item_id": f"i{n}", "rank": n, "score": 1.0} for n in range(items)]}
        if not items:
            body["warnings"] = [{"code": "SIGNAL_UNAVAILABLE", "detail": "no signals"}]
        return Answer(200, {**body, "meta": {"algo_version": "recsys-algo@1.4.2"}})

    return answer


def serving(
    mode: str | None,
    env: dict[str, str],
    *,
    gauges: float = 2,
    files: dict[str, str] | None = None,
    routes: dict[str, Any] | None = None,
    token: str = "viewer-token",
    **params: Any,
) -> dict[str, Any]:
    """Evidence for a serving-mode case: a declared mode, the service's env, its gauges, its recommend route."""
    tenant: dict[str, Any] = {"id": "acme", "surfaces": ["home"]}
    if files and any(name.startswith("registry/current/") for name in files):  # the auditor reads them where params say
        params.setdefault("manifests", {"template": ARTIFACT_ENV["RECSYS_ARTIFACT_MANIFEST_TEMPLATE"]})
    if mode:
        tenant.update(serving_mode=mode, mode_documented_at="https://wiki.example/recsys/serving")
    return {
        "env": env,
        "metrics": metrics(gauges),
        "routes": {"POST /v1/recommend": recommend(), **(routes or {})},
        "files": {"viewer.token": token, **(files or {})},
        "params": {
            "tenants": [tenant],
            "auth": {"credentials": {"viewer": {"bearer": "file:viewer.token"}}},
            **params,
        },
    }


def signals(last_day: dt.date | None) -> CannedDatabase:
    return CannedDatabase(
        {"SELECT max(day) AS last_day FROM item_popularity_daily": [{"last_day": last_day}]},
        tables={"item_popularity_daily"},
    )


ARTIFACT = serving("artifact", ARTIFACT_ENV, files=MANIFEST_FILE)
CASES = [
    Case("serving.mode-declared", "declared and documented", Status.PASS, ARTIFACT),
    Case("serving.mode-declared", "no mode declared", Status.FAIL, serving(None, ARTIFACT_ENV), "no serving mode"),
    Case("serving.mode-observed", "config, gauges and manifests agree", Status.PASS, ARTIFACT),
    Case(
        "serving.mode-observed",
        "declared db_only, config and gauges say artifact",
        Status.FAIL,
        serving("db_only", ARTIFACT_ENV, files=MANIFEST_FILE),
        "declared db_only, but",
    ),
    Case(
        "serving.mode-observed",
        "db_only confirmed by config and idle gauges",
        Status.PASS,
        serving("db_only", DB_ONLY_ENV, gauges=0),
    ),
    Case(
        "serving.mode-observed",
        "config hidden in a secret",
        Status.WARN,
        {**serving("artifact", {}, gauges=0), "helm": {"api": {"existingSecret": "recsys"}}},
        "not confirmed",
    ),
    Case("serving.artifact-config", "template, TLS and TTLs", Status.PASS, ARTIFACT),
    Case(
        "serving.artifact-config",
        "S3 without TLS",
        Status.FAIL,
        serving(
            "artifact",
            {
                **ARTIFACT_ENV,
                "RECSYS_ARTIFACT_MANIFEST_TEMPLATE": "s3://bucket/{tenant}/{surface}/manifest.json",
                "RECSYS_ARTIFACT_S3_USE_SSL": "false",
            },
        ),
        "clear text",
    ),
    Case(
        "serving.artifact-config",
        "declared db_only does not hide an artifact-mode config",
        Status.FAIL,
        serving("db_only", {**ARTIFACT_ENV, "RECSYS_ARTIFACT_CACHE_TTL": "0"}),
        "disables the cache",
    ),
    Case("serving.artifact-config", "DB-only everywhere", Status.SKIP, serving("db_only", DB_ONLY_ENV, gauges=0)),
    Case(
        "serving.db-signals-fresh",
        "signals from today",
        Status.PASS,
        {**serving("db_only", DB_ONLY_ENV, gauges=0), "db": signals(TODAY)},
    ),
    Case(
        "serving.db-signals-fresh",
        "signals 20 days old",
        Status.FAIL,
        {**serving("db_only", DB_ONLY_ENV, gauges=0), "db": signals(TODAY - dt.timedelta(days=20))},
        "acme/home",
    ),
    Case(
        "serving.db-signals-fresh",
        "signals dated in the future",
        Status.WARN,
        {**serving("db_only", DB_ONLY_ENV, gauges=0), "db": signals(TODAY + dt.timedelta(days=30))},
        "future",
    ),
    Case(
        "serving.db-signals-fresh",
        "undeclared, but the config runs DB-only",
        Status.FAIL,
        {**serving(None, DB_ONLY_ENV, gauges=0), "db": signals(None)},
    ),
    Case("serving.live-recommend", "items for every surface", Status.PASS, ARTIFACT),
    Case(
        "serving.live-recommend",
        "server error",
        Status.FAIL,
        serving("artifact", ARTIFACT_ENV, routes={"POST /v1/recommend": recommend(status=500)}),
        "acme/home → 500",
    ),
    Case(
        "serving.live-recommend",
        "empty answers",
        Status.WARN,
        serving("artifact", ARTIFACT_ENV, routes={"POST /v1/recommend": recommend(items=0)}),
        "SIGNAL_UNAVAILABLE",
    ),
    Case(
        "serving.live-recommend",
        "the audit's viewer token is refused",
        Status.ERROR,
        serving("artifact", ARTIFACT_ENV, token="expired-token"),
        "auth.credentials.viewer",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_check_on_fake_context(fake_audit, case: Case) -> None:
    check_case(fake_audit, case)


def test_every_source_of_the_serving_mode_is_shown(fake_audit) -> None:
    """Declared db_only while config and gauges say artifact: every source is shown, and artifact mode wins."""
    finding = check_case(
        fake_audit,
        Case("serving.mode-observed", "", Status.FAIL, serving("db_only", ARTIFACT_ENV, files=MANIFEST_FILE)),
    )
    modes = {row["source"].split(" ")[0]: row["mode"] for row in finding.evidence["observations"]}
    assert modes == {"config": "artifact", "metrics": "artifact", "data": "artifact"}


# --- the sandbox variants, through the runner ----------------------------------------------------------------------


@pytest.mark.slow
def test_hardened_serves_in_its_declared_mode(audit_findings) -> None:
    findings = audit_findings("hardened")
    for check_id in ("serving.mode-declared", "serving.mode-observed", "serving.artifact-config"):
        assert findings[check_id].status == Status.PASS, (check_id, findings[check_id].summary)
    live = findings["serving.live-recommend"]
    assert live.status == Status.PASS and all(row["items"] for row in live.evidence["requests"])
    assert findings["serving.db-signals-fresh"].status == Status.SKIP  # the service serves artifacts
    modes = {
        row["source"].split(" ")[0]: row["mode"] for row in findings["serving.mode-observed"].evidence["observations"]
    }
    assert modes == {"config": "artifact", "metrics": "artifact", "data": "artifact"}


@pytest.mark.slow
def test_as_shipped_db_only_mode_is_observed(audit_findings) -> None:
    findings = audit_findings("as-shipped")
    assert findings["serving.artifact-config"].status == Status.SKIP
    observed = findings["serving.mode-observed"]
    assert observed.status == Status.PASS and observed.evidence["declared"] == "db_only"
    undocumented = findings["serving.mode-declared"]
    assert undocumented.status == Status.FAIL and "no documentation link" in undocumented.summary
    fresh = findings["serving.db-signals-fresh"]
    assert fresh.status == Status.PASS, fresh.summary
    assert all(row["age_days"] is not None for row in fresh.evidence["signals"])


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


def test_db_only_signals_fresh_and_stale_in_postgres(fake_audit, signal_db: str, monkeypatch) -> None:
    monkeypatch.setenv("S0_TEST_DSN", signal_db)
    evidence = serving("db_only", DB_ONLY_ENV, gauges=0, database={"dsn": "env:S0_TEST_DSN"})
    evidence["params"]["tenants"][0]["surfaces"] = ["home", "pdp"]
    with psycopg.connect(signal_db, autocommit=True) as conn:
        tenant = uuid.uuid4()
        conn.execute("INSERT INTO tenants VALUES (%s, 'acme')", (tenant,))
        conn.execute("INSERT INTO item_popularity_daily VALUES (%s, 'home', 'i1', %s, 1)", (tenant, TODAY))
        conn.execute(
            "INSERT INTO item_popularity_daily VALUES (%s, 'pdp', 'i1', %s, 1)", (tenant, TODAY - dt.timedelta(days=20))
        )
    finding = fake_audit(**evidence).run("serving.db-signals-fresh")
    assert finding.status == Status.FAIL and "acme/pdp" in finding.summary and "acme/home" not in finding.summary
    assert {row["surface"]: row["age_days"] for row in finding.evidence["signals"]} == {"home": 0, "pdp": 20}
    assert json.dumps(finding.evidence["sql"]).count("max(day)") == 1
