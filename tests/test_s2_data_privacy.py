"""Section 2 — data contracts, logging and privacy.

Every check on fake contexts (``CASES``): exposure log files on disk written as the service writes them, a loopback
service whose recommend route appends its own exposure record (hashing the subject with the salt it really uses),
crafted config and canned catalog rows. Then the sandbox variants through the runner, and a real PostgreSQL database
with event tables, grants and raw rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fakes import Answer, CannedDatabase, Case, Request, check_case
from psycopg import sql

from recsys_audit.findings import Status

SERVER = os.environ.get("RECSYS_AUDIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SALT = "k3y-8f1d6c2b9a7e4d3c5b1a0f9e8d7c6b5a"
TODAY = dt.datetime.now(dt.UTC).date()
HARDENED_ENV = {
    "ENV": "production",
    "EXPOSURE_LOG_PATH": "/var/log/recsys/exposure/",
    "EXPOSURE_LOG_RETENTION_DAYS": "30",
    "EXPOSURE_HASH_SALT": SALT,
    "EXPERIMENT_ASSIGNMENT_SALT": "e9c2-4b7a-91d3-6f0e-a8b5c1d2e3f4",
    "API_KEY_ENABLED": "true",
    "API_KEY_HASH_SECRET": "0d1c2b3a-4f5e-6d7c-8b9a-a1b2c3d4e5f6",
}


def hashed(value: str, salt: str = SALT) -> str:
    return hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()


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


def exposure_files(days: list[dt.date], **kwargs: Any) -> dict[str, str]:
    return {
        f"exposure/exposure-{day}.jsonl": "".join(
            json.dumps(exposure_record(day, n, **kwargs)) + "\n" for n in range(20)
        )
        for day in days
    }


def private(folder: Path) -> None:
    """The modes the service gives its logs: directories 0700, files 0600."""
    for path in (folder / "exposure").glob("*"):
        path.chmod(0o600)
    (folder / "exposure").chmod(0o700)


def logging_service(salt: str) -> Callable[[Request], Answer]:
    """POST /v1/recommend that logs its exposure as the service does: HMAC-SHA256(salt, user id), by request id."""

    def answer(request: Request) -> Answer:
        assert request.folder is not None
        request_id = str(uuid.uuid4())
        user = request.json()["user"]["user_id"]
        record = {
            "schema_version": "v1",
            "request_id": request_id,
            "tenant_id": "acme",
            "surface": "home",
            "subject": {"user_id_hash": hashed(user, salt)},
            "items": [{"item_id": "i1", "rank": 1}],
        }
        with (request.folder / "exposure" / f"exposure-{TODAY}.jsonl").open("a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        return Answer(200, {"items": [{"item_id": "i1", "rank": 1, "score": 1.0}], "meta": {"request_id": request_id}})

    return answer


def privacy(
    env: dict[str, str] | None = None,
    *,
    days: tuple[int, ...] = (0, 1),
    raw: bool = False,
    request_ids: bool = True,
    service_salt: str | None = SALT,
    allowed: tuple[str, ...] = ("user_id", "session_id"),
    production: bool = True,
    logs: bool = True,
    database: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Evidence for a privacy case: the service's env, its exposure log directory, its recommend route."""
    files = exposure_files([TODAY - dt.timedelta(days=d) for d in days], raw=raw, request_id=request_ids)
    params: dict[str, Any] = {
        "target": {"production": production},
        "privacy": {"allowed_identifiers": list(allowed), "sample_rows": 100},
        "auth": {"credentials": {"viewer": {"bearer": "file:viewer.token"}}},
        "logs": {"exposure": ["exposure"]} if logs else {},
        **({"database": database} if database else {}),
    }
    routes = {"POST /v1/recommend": logging_service(service_salt)} if service_salt is not None else {}
    return {
        "env": HARDENED_ENV if env is None else env,
        "files": {**files, "viewer.token": "viewer-token"},
        "setup": private,
        "routes": routes,
        "params": params,
        **extra,
    }


def changed(**env: str) -> dict[str, str]:
    return {**HARDENED_ENV, **env}


def without(*names: str) -> dict[str, str]:
    return {k: v for k, v in HARDENED_ENV.items() if k not in names}


SALT_FROM_SECRET = {"api": {"env": [{"name": "EXPOSURE_HASH_SALT", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}}
READERS = "FROM pg_class c CROSS JOIN pg_roles r"
PUBLIC = "FROM pg_class c, aclexplode(c.relacl) a"


def catalog(public: list[str], readers: list[str]) -> CannedDatabase:
    rows = [
        {"table_name": "exposure_events", "role": role, "superuser": False, "can_login": True, "owner": False}
        for role in readers
    ]
    return CannedDatabase(
        {READERS: rows, PUBLIC: [{"table_name": t} for t in public], "SELECT current_user": [{"u": "auditor"}]}
    )


CASES = [
    Case("privacy.exposure-logging-on", "on with a path", Status.PASS, privacy()),
    Case(
        "privacy.exposure-logging-on",
        "off in production",
        Status.FAIL,
        privacy(changed(EXPOSURE_LOG_ENABLED="false")),
        "switches exposure logging off",
    ),
    Case(
        "privacy.exposure-logging-on",
        "off outside production",
        Status.WARN,
        privacy(without("EXPOSURE_LOG_PATH", "ENV"), production=False),
        "(not production)",
    ),
    Case("privacy.identifiers-declared", "only allowed identifiers", Status.PASS, privacy()),
    Case(
        "privacy.identifiers-declared",
        "user ids not allowed",
        Status.FAIL,
        privacy(allowed=("session_id",)),
        "not allowed: user_id",
    ),
    Case("privacy.request-id-coverage", "every record", Status.PASS, privacy()),
    Case("privacy.request-id-coverage", "none", Status.FAIL, privacy(request_ids=False), "request_id missing"),
    Case("privacy.request-id-coverage", "logging on, no log named", Status.WARN, privacy(logs=False), "logs.exposure"),
    Case("privacy.salts", "set, and seen in the live exposure record", Status.PASS, privacy(), "observed"),
    Case("privacy.salts", "example value", Status.FAIL, privacy(changed(EXPOSURE_HASH_SALT="changeme")), "example"),
    Case(
        "privacy.salts",
        'Helm api.secrets entry ""',
        Status.FAIL,
        privacy(without("EXPOSURE_HASH_SALT"), helm={"api": {"secrets": {"EXPOSURE_HASH_SALT": ""}}}),
        "EXPOSURE_HASH_SALT empty",
    ),
    Case(
        "privacy.salts",
        "hidden, but the service hashes with an empty key",
        Status.FAIL,
        privacy(without("EXPOSURE_HASH_SALT"), helm=SALT_FROM_SECRET, service_salt=""),
        "empty where it runs",
    ),
    Case(
        "privacy.salts",
        "hidden, the service hashes with a real salt",
        Status.PASS,
        privacy(without("EXPOSURE_HASH_SALT"), helm=SALT_FROM_SECRET),
        "observed",
    ),
    Case(
        "privacy.salts",
        "hidden, nothing to observe",
        Status.WARN,
        privacy(without("EXPOSURE_HASH_SALT"), helm=SALT_FROM_SECRET, logs=False),
        "secret the kit cannot read",
    ),
    Case(
        "privacy.salts",
        "config and service disagree",
        Status.WARN,
        privacy(service_salt="another-salt-0123456789"),
        "not what runs",
    ),
    Case("privacy.salt-rotation-attested", "awaits its attestation", Status.MANUAL, privacy()),
    Case("privacy.subject-ids-hashed", "64-hex hashes", Status.PASS, privacy()),
    Case("privacy.subject-ids-hashed", "raw e-mail addresses", Status.FAIL, privacy(raw=True), "raw subject ids"),
    Case("privacy.pii-scan", "nothing", Status.PASS, privacy()),
    Case("privacy.pii-scan", "e-mail addresses", Status.FAIL, privacy(raw=True), "PII match"),
    Case("privacy.exposure-retention", "within policy", Status.PASS, privacy()),
    Case(
        "privacy.exposure-retention",
        "45-day-old file and 90-day config",
        Status.FAIL,
        privacy(changed(EXPOSURE_LOG_RETENTION_DAYS="90"), days=(0, 45)),
        "45 days old",
    ),
    Case("privacy.exposure-retention", "file dated in the future", Status.WARN, privacy(days=(0, -40)), "future"),
    Case(
        "privacy.event-table-access",
        "allowed readers only",
        Status.PASS,
        privacy(db=catalog([], ["recsys_app"]), database={"service_role": "recsys_app"}),
    ),
    Case(
        "privacy.event-table-access",
        "PUBLIC can read",
        Status.FAIL,
        privacy(db=catalog(["exposure_events"], ["recsys_app"]), database={"service_role": "recsys_app"}),
        "PUBLIC can read",
    ),
    Case("privacy.log-file-permissions", "0600 files in a 0700 directory", Status.PASS, privacy()),
    Case(
        "privacy.log-file-permissions",
        "world-readable",
        Status.FAIL,
        privacy(setup=lambda folder: None),
        "readable by group/others",
    ),
    Case("privacy.pii-stance-documented", "awaits its attestation", Status.MANUAL, privacy()),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_check_on_fake_context(fake_audit, case: Case) -> None:
    check_case(fake_audit, case)


def test_salt_evidence_never_shows_a_salt_or_a_raw_id(fake_audit) -> None:
    finding = fake_audit(**privacy(raw=True)).run("privacy.pii-scan")
    assert "user0@shop.example" not in json.dumps(finding.to_dict()) and "***" in json.dumps(finding.to_dict())
    salts = fake_audit(**privacy()).run("privacy.salts")
    assert salts.evidence["observed"]["stored_as"] == "with the configured salt"
    assert SALT not in json.dumps(salts.to_dict()) and hashed("recsys-audit-probe") not in json.dumps(salts.to_dict())


# --- the sandbox variants, through the runner ----------------------------------------------------------------------


@pytest.mark.slow
def test_hardened_passes(audit_findings) -> None:
    findings = audit_findings("hardened")
    section = [f for f in findings.values() if f.section == 2]
    wrong = {f.id: (f.status, f.summary) for f in section if f.status != Status.PASS}
    assert not wrong  # the rotation and the PII stance are attested in the hardened params
    assert findings["privacy.subject-ids-hashed"].evidence["samples"][0]["subject_ids"] > 0
    assert findings["privacy.salts"].evidence["observed"]["stored_as"] == "with the configured salt"


@pytest.mark.slow
def test_unhashed_pii_is_caught(audit_findings) -> None:
    findings = audit_findings("code-defects")
    hashed_finding = findings["privacy.subject-ids-hashed"]
    assert hashed_finding.status == Status.FAIL and "raw subject ids" in hashed_finding.summary
    assert hashed_finding.evidence["examples"] and all("***" in e for e in hashed_finding.evidence["examples"])
    files = next(row for row in hashed_finding.evidence["samples"] if row["source"] == "exposure log files")
    assert files["not_hashed"] == files["subject_ids"] > 0
    # raw ids say nothing about the salt: that stays the config's (and a hashed record's) verdict
    assert findings["privacy.salts"].status == Status.PASS
    assert findings["privacy.salts"].evidence["observed"]["stored_as"] == "raw"


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


@pytest.mark.slow
def test_as_shipped_privacy(audit_findings) -> None:
    findings = audit_findings("as-shipped")
    salts = findings["privacy.salts"]
    assert salts.status == Status.FAIL and "EXPERIMENT_ASSIGNMENT_SALT empty" in salts.summary
    logging = findings["privacy.exposure-logging-on"]
    assert logging.status == Status.WARN and "not production" in logging.summary  # off, on a development deployment


# --- real PostgreSQL -----------------------------------------------------------------------------------------------

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


def test_grants_and_raw_rows_in_postgres(fake_audit, event_db: dict[str, str], monkeypatch) -> None:
    monkeypatch.setenv("S2_TEST_DSN", event_db["dsn"])
    evidence = privacy()
    evidence["params"]["database"] = {"dsn": "env:S2_TEST_DSN", "allowed_event_readers": [event_db["reader"]]}
    access = fake_audit(**evidence).run("privacy.event-table-access")
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
    audit = fake_audit(**evidence)
    access = audit.run("privacy.event-table-access")
    assert access.status == Status.FAIL and event_db["intruder"] in access.summary
    hashed_finding = audit.run("privacy.subject-ids-hashed")
    assert hashed_finding.status == Status.FAIL
    assert {"source": "exposure_events", "subject_ids": 2, "not_hashed": 2} in hashed_finding.evidence["samples"]
    pii = audit.run("privacy.pii-scan")
    assert pii.status == Status.FAIL and "alice@shop.example" not in json.dumps(pii.to_dict())
