"""Section 2 — data contracts, logging and privacy.

The sandbox variants through the runner, plus focused runs against a real PostgreSQL database (a uniquely named
database and role, dropped afterwards) and real exposure log files on disk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from recsys_audit.findings import Finding, Status
from recsys_audit.notebook import open_section

SERVER = os.environ.get("RECSYS_AUDIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SALT = "k3y-8f1d6c2b9a7e4d3c5b1a0f9e8d7c6b5a"
HARDENED_ENV = f"""
ENV=production
EXPOSURE_LOG_PATH=/var/log/recsys/exposure
EXPOSURE_LOG_RETENTION_DAYS=30
EXPOSURE_HASH_SALT={SALT}
EXPERIMENT_ASSIGNMENT_SALT=e9c2-4b7a-91d3-6f0e-a8b5c1d2e3f4
API_KEY_ENABLED=true
API_KEY_HASH_SECRET=0d1c2b3a-4f5e-6d7c-8b9a-a1b2c3d4e5f6
"""

SECTION_CHECKS = [
    "privacy.identifiers-declared",
    "privacy.request-id-coverage",
    "privacy.salts",
    "privacy.subject-ids-hashed",
    "privacy.pii-scan",
    "privacy.exposure-retention",
    "privacy.event-table-access",
    "privacy.log-file-permissions",
]


# --- the sandbox variants, through the runner ----------------------------------------------------------------------


@pytest.mark.slow
def test_hardened_passes(audit_findings) -> None:
    findings = audit_findings("hardened")
    wrong = {c: (findings[c].status, findings[c].summary) for c in SECTION_CHECKS if findings[c].status != Status.PASS}
    assert not wrong
    assert findings["privacy.pii-stance-documented"].status in {Status.MANUAL, Status.PASS}
    assert findings["privacy.subject-ids-hashed"].evidence["samples"][0]["subject_ids"] > 0


@pytest.mark.slow
def test_unhashed_pii_is_caught(audit_findings) -> None:
    findings = audit_findings("code-defects")
    hashed = findings["privacy.subject-ids-hashed"]
    assert hashed.status == Status.FAIL and "raw subject ids" in hashed.summary
    assert hashed.evidence["examples"] and all("***" in e for e in hashed.evidence["examples"])
    files = next(row for row in hashed.evidence["samples"] if row["source"] == "exposure log files")
    assert files["not_hashed"] == files["subject_ids"] > 0
    assert audit_findings("hardened")["privacy.subject-ids-hashed"].status == Status.PASS


@pytest.mark.slow
def test_email_user_ids_logged_raw_are_caught_by_the_pii_scan(audit_findings) -> None:
    # the warm-up traffic names some users by e-mail address: pii-unhashed logs them raw, a correct service hashes
    finding = audit_findings("code-defects")["privacy.pii-scan"]
    assert finding.status == Status.FAIL, finding.summary
    files = next(row for row in finding.evidence["samples"] if row["source"] == "exposure log files")
    assert files["email"] > 0 and files["scanned"] > 0
    assert any(example.startswith("email in exposure log files: sh***om") for example in finding.evidence["examples"])
    assert "@mail.example.com" not in json.dumps(finding.to_dict())
    clean = audit_findings("hardened")["privacy.pii-scan"]
    assert clean.status == Status.PASS, clean.summary
    clean_files = next(row for row in clean.evidence["samples"] if row["source"] == "exposure log files")
    assert clean_files["scanned"] > 0 and clean_files["email"] == 0


@pytest.mark.slow
def test_as_shipped_salts_fail(audit_findings) -> None:
    finding = audit_findings("as-shipped")["privacy.salts"]
    assert finding.status == Status.FAIL
    assert all(row["length"] in (None, 0) or row["problem"] for row in finding.evidence["salts"])


# --- real PostgreSQL and real log files ----------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE tenants (id uuid PRIMARY KEY, external_id text UNIQUE NOT NULL);
CREATE TABLE exposure_events (id bigserial, tenant_id uuid NOT NULL, occurred_at timestamptz NOT NULL,
  request_id uuid NOT NULL, user_key bytea, session_id text, request jsonb NOT NULL, meta jsonb,
  PRIMARY KEY (occurred_at, id)) PARTITION BY RANGE (occurred_at);
CREATE TABLE exposure_events_default PARTITION OF exposure_events DEFAULT;
CREATE TABLE interaction_events (id bigserial, tenant_id uuid NOT NULL, occurred_at timestamptz NOT NULL,
  user_key bytea, session_id text, meta jsonb, PRIMARY KEY (occurred_at, id)) PARTITION BY RANGE (occurred_at);
CREATE TABLE interaction_events_default PARTITION OF interaction_events DEFAULT;
CREATE TABLE audit_log (id bigserial PRIMARY KEY, occurred_at timestamptz NOT NULL DEFAULT now());
"""


@pytest.fixture()
def event_db() -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:10]
    names = {"db": f"s2_privacy_{tag}", "reader": f"s2_reader_{tag}", "intruder": f"s2_intruder_{tag}"}
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names["db"])))
        for role in ("reader", "intruder"):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(names[role])))
    dsn = SERVER.rsplit("/", 1)[0] + "/" + names["db"]
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)
            conn.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC")
            conn.execute(
                sql.SQL("GRANT SELECT ON exposure_events, interaction_events, audit_log TO {}").format(
                    sql.Identifier(names["reader"])
                )
            )
        yield {**names, "dsn": dsn}
    finally:
        with psycopg.connect(SERVER, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(names["db"])))
            for role in ("reader", "intruder"):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(names[role])))


def hashed(value: str) -> str:
    return hmac.new(SALT.encode(), value.encode(), hashlib.sha256).hexdigest()


def exposure_record(day: dt.date, n: int, *, raw: bool = False, request_id: bool = True) -> dict[str, Any]:
    user = f"user{n}@shop.example" if raw else hashed(f"user{n}")
    record: dict[str, Any] = {
        "schema_version": "v1",
        "timestamp": f"{day}T10:00:00Z",
        "tenant_id": "acme",
        "surface": "home",
        "subject": {"user_id_hash": user, "session_id_hash": hashed(f"s{n}")},
        "items": [{"item_id": f"item-{n}", "rank": 1, "score": 0.8123456789}],
    }
    if request_id:
        record["request_id"] = str(uuid.uuid4())
    return record


def write_exposure_dir(folder: Path, days: list[dt.date], **kwargs: Any) -> None:
    folder.mkdir(mode=0o700, parents=True)
    for day in days:
        path = folder / f"exposure-{day}.jsonl"
        path.write_text("".join(json.dumps(exposure_record(day, n, **kwargs)) + "\n" for n in range(20)))
        path.chmod(0o600)


def write_params(folder: Path, dsn: str | None, **sections: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "service.env").write_text(textwrap.dedent(sections.pop("env", HARDENED_ENV)), encoding="utf-8")
    data: dict[str, Any] = {
        "environment": {"name": "unit"},
        "target": {"base_url": "http://127.0.0.1:9", "production": True},
        "tenants": [{"id": "acme", "surfaces": ["home"]}],
        "config_sources": [{"kind": "env_file", "path": "service.env"}],
        "logs": {"exposure": ["exposure"]},
        "privacy": {"allowed_identifiers": ["user_id", "session_id"], "sample_rows": 100},
        **sections,
    }
    if dsn:
        os.environ["S2_TEST_DSN"] = dsn
        data["database"] = {**data.get("database", {}), "dsn": "env:S2_TEST_DSN"}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def evaluate(params_path: Path, check_id: str) -> Finding:
    run = open_section(2, "unit", str(params_path), str(params_path.parent / "run"))
    try:
        return run.evaluate(run.section.checks[check_id])
    finally:
        run.ctx.close()


TODAY = dt.datetime.now(dt.UTC).date()


def test_exposure_files_hashed_and_clean_pass(tmp_path: Path) -> None:
    write_exposure_dir(tmp_path / "exposure", [TODAY, TODAY - dt.timedelta(days=1)])
    params = write_params(tmp_path, None)
    for check_id in (
        "privacy.subject-ids-hashed",
        "privacy.pii-scan",
        "privacy.identifiers-declared",
        "privacy.request-id-coverage",
        "privacy.log-file-permissions",
        "privacy.salts",
    ):
        finding = evaluate(params, check_id)
        assert finding.status == Status.PASS, (check_id, finding.summary)
    assert evaluate(params, "privacy.subject-ids-hashed").evidence["samples"][0]["subject_ids"] == 80


def test_raw_ids_emails_and_open_permissions_are_caught(tmp_path: Path) -> None:
    write_exposure_dir(tmp_path / "exposure", [TODAY], raw=True, request_id=False)
    (tmp_path / "exposure" / f"exposure-{TODAY}.jsonl").chmod(0o644)
    params = write_params(tmp_path, None, privacy={"allowed_identifiers": ["session_id"], "sample_rows": 100})
    hashed_finding = evaluate(params, "privacy.subject-ids-hashed")
    assert hashed_finding.status == Status.FAIL
    assert hashed_finding.evidence["samples"] == [{"source": "exposure log files", "subject_ids": 40, "not_hashed": 20}]
    pii = evaluate(params, "privacy.pii-scan")
    assert pii.status == Status.FAIL and pii.evidence["samples"][0]["email"] == 20
    assert pii.evidence["samples"][0]["phone"] == 0 and pii.evidence["samples"][0]["ipv4"] == 0
    everything = json.dumps([hashed_finding.to_dict(), pii.to_dict()])
    assert "user0@shop.example" not in everything and "***" in everything
    assert evaluate(params, "privacy.identifiers-declared").status == Status.FAIL
    coverage = evaluate(params, "privacy.request-id-coverage")
    assert coverage.status == Status.FAIL and coverage.evidence["samples"][0]["with_request_id"] == 0
    perms = evaluate(params, "privacy.log-file-permissions")
    assert perms.status == Status.FAIL and "0o644" in perms.summary


def test_weak_and_example_salts_fail_without_showing_them(tmp_path: Path) -> None:
    env = (
        "ENV=production\nEXPOSURE_LOG_PATH=/x\nEXPOSURE_HASH_SALT=changeme\n"
        "API_KEY_ENABLED=true\nAPI_KEY_HASH_SECRET=short1\n"
    )
    finding = evaluate(write_params(tmp_path, None, env=env), "privacy.salts")
    assert finding.status == Status.FAIL
    problems = {row["variable"]: row["problem"] for row in finding.evidence["salts"]}
    assert problems["EXPOSURE_HASH_SALT"] == "an example value"
    assert problems["EXPERIMENT_ASSIGNMENT_SALT"] == "an example value"  # falls back to the exposure salt
    assert problems["API_KEY_HASH_SECRET"].startswith("shorter than")
    assert "changeme" not in json.dumps(finding.to_dict()) and "short1" not in json.dumps(finding.to_dict())


def test_retention_old_files_and_long_config_fail(tmp_path: Path) -> None:
    write_exposure_dir(tmp_path / "exposure", [TODAY, TODAY - dt.timedelta(days=45)])
    env = HARDENED_ENV.replace("EXPOSURE_LOG_RETENTION_DAYS=30", "EXPOSURE_LOG_RETENTION_DAYS=90")
    finding = evaluate(write_params(tmp_path, None, env=env), "privacy.exposure-retention")
    assert finding.status == Status.FAIL
    assert "exceeds the 30-day policy" in finding.summary and "45 days old" in finding.summary


def test_database_partitions_grants_and_hashes(tmp_path: Path, event_db: dict[str, str]) -> None:
    write_exposure_dir(tmp_path / "exposure", [TODAY])
    params = write_params(tmp_path, event_db["dsn"], database={"allowed_event_readers": [event_db["reader"]]})
    access = evaluate(params, "privacy.event-table-access")
    assert access.status == Status.PASS, access.summary
    with psycopg.connect(event_db["dsn"], autocommit=True) as conn:
        tenant = uuid.uuid4()
        conn.execute("INSERT INTO tenants VALUES (%s, 'acme')", (tenant,))
        conn.execute(
            "INSERT INTO exposure_events (tenant_id, occurred_at, request_id, user_key, session_id, request) "
            "VALUES (%s, now(), %s, %s, 'sess-plain-1', %s)",
            (tenant, uuid.uuid4(), b"alice@shop.example", json.dumps({"user": {"user_id": "alice@shop.example"}})),
        )
        conn.execute(sql.SQL("GRANT SELECT ON exposure_events TO {}").format(sql.Identifier(event_db["intruder"])))
    access = evaluate(params, "privacy.event-table-access")
    assert access.status == Status.FAIL and event_db["intruder"] in access.summary
    hashed_finding = evaluate(params, "privacy.subject-ids-hashed")
    assert hashed_finding.status == Status.FAIL
    assert {"source": "exposure_events", "subject_ids": 2, "not_hashed": 2} in hashed_finding.evidence["samples"]
    pii = evaluate(params, "privacy.pii-scan")
    assert pii.status == Status.FAIL
    assert "alice@shop.example" not in json.dumps(pii.to_dict())
