"""Section 7 — safe rollout and rollback, against the sandbox variants."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes import Answer, CannedDatabase, Case, check_case

from recsys_audit.checks.s7_rollout import SECTION, image_reference
from recsys_audit.findings import Status

# --- every check on a fake context: the exact status for a healthy and a broken input --------------------------------

VIEWER = {"auth": {"credentials": {"viewer": {"headers": {"X-Dev-User-Id": "auditor"}}}}}
CONFIG_V, RULES_V = "a" * 64, "b" * 64
META = {
    "request_id": "req-7",
    "config_version": CONFIG_V,
    "rules_version": RULES_V,
    "algo_version": "recsys-algo@1.4.2",
}


def answer(**meta: Any) -> Answer:
    shown = {key: value for key, value in {**META, **meta}.items() if value is not None}
    return Answer(200, {"items": [{"item_id": "item-0001", "rank": 1, "score": 0.9}], "meta": shown})


def served(recommend: Answer, **routes: Answer) -> dict[str, Any]:
    return {"params": VIEWER, "routes": {"POST /v1/recommend": recommend, **routes}}


def admin(config_etag: str, rules_etag: str) -> dict[str, Answer]:
    return {
        "GET /v1/admin/tenants/acme/config": Answer(200, {"config": {}}, {"ETag": config_etag}),
        "GET /v1/admin/tenants/acme/rules": Answer(200, {"rules": {}}, {"ETag": rules_etag}),
    }


def version(body: dict[str, str], tag: str = "v0.1.0", production: bool = False) -> dict[str, Any]:
    return {
        "routes": {"GET /version": Answer(200, body)},
        "helm": {"api": {"image": {"repository": "ghcr.io/aatuh/recsys-svc", "tag": tag}}},
        "params": {"target": {"production": production}},
    }


RELEASE = {"version": "v0.1.0", "commit": "3f9c2a1", "date": "2026-05-24T12:00:00Z"}
TENANT_UUID = "6f1c2a9e-0000-4000-8000-000000000001"


def audit_db(without_actor: int = 0, kept: int = 2) -> CannedDatabase:
    return CannedDatabase(
        {
            "SELECT id FROM tenants WHERE external_id": [{"id": TENANT_UUID}],
            "FROM audit_log": [{"updates": 3, "without_actor": without_actor, "latest": "2026-11-20T10:00:00Z"}],
            "LIMIT 2) kept": [{"count": kept}],
        }
    )


def exposure(request_id: str, **versions: str) -> dict[str, Any]:
    record = {"request_id": request_id, "tenant_id": "acme", **{k: META[k] for k in ("config_version", "rules_version",
              "algo_version")}, **versions}  # fmt: skip
    return {
        "params": {**VIEWER, "logs": {"exposure": ["exposure/"]}},
        "files": {"exposure/exposure-2026-11-26.jsonl": json.dumps(record) + "\n"},
    }


def scope(replicas: int, ttl: str) -> dict[str, Any]:
    return {
        "helm": {"api": {"replicaCount": replicas}},
        "env": {"RECSYS_CONFIG_CACHE_TTL": ttl, "RECSYS_RULES_CACHE_TTL": ttl},
    }


CASES = [
    Case(
        "rollout.audit-log-file",
        "on with a path",
        Status.PASS,
        {"env": {"AUDIT_LOG_ENABLED": "true", "AUDIT_LOG_PATH": "/var/log/recsys/audit.jsonl"}},
    ),
    Case("rollout.audit-log-file", "off", Status.FAIL, {"env": {}}, summary="AUDIT_LOG_ENABLED=false"),
    Case("rollout.response-versions", "every version", Status.PASS, served(answer())),
    Case(
        "rollout.response-versions",
        "no config version",
        Status.FAIL,
        served(answer(config_version=None)),
        summary="versions missing or placeholder in: acme/home",
    ),
    Case(
        "rollout.response-versions",
        "placeholder algo version outside production",
        Status.WARN,
        served(answer(algo_version="recsys-algo@local")),
    ),
    Case(
        "rollout.response-versions",
        "audit credential refused",
        Status.ERROR,
        served(Answer(401, {"code": "RECSYS_AUTH_INVALID", "status": 401})),
        summary="the audit's viewer credential was refused",
    ),
    Case(
        "rollout.version-endpoint",
        "the pinned release",
        Status.PASS,
        version(RELEASE),
        summary="as the deployment pins",
    ),
    Case(
        "rollout.version-endpoint",
        "a dev build in production",
        Status.FAIL,
        version({"version": "dev", "commit": "none", "date": "unknown"}, production=True),
        summary="no release information: version=dev, commit=none, date=unknown",
    ),
    Case(
        "rollout.version-endpoint",
        "not the pinned tag",
        Status.WARN,
        version(RELEASE, tag="v0.2.0"),
        summary="the service runs v0.1.0 but the deployment pins v0.2.0",
    ),
    Case(
        "rollout.version-endpoint",
        "a branch build",
        Status.WARN,
        version({**RELEASE, "version": "v0.1.0-12-g3f9c2a1-dirty"}),
        summary="not a release version",
    ),
    Case("rollout.version-endpoint", "not served", Status.FAIL, {}, summary="GET /version -> 404"),
    Case("rollout.config-etag-matches", "equal", Status.PASS, served(answer(), **admin(CONFIG_V, RULES_V))),
    Case(
        "rollout.config-etag-matches",
        "admin document unreadable",
        Status.FAIL,
        served(
            answer(),
            **{
                **admin(CONFIG_V, RULES_V),
                "GET /v1/admin/tenants/acme/rules": Answer(403, {"code": "RECSYS_FORBIDDEN"}),
            },
        ),
        summary="admin document cannot be read",
    ),
    Case(
        "rollout.config-etag-matches",
        "a stale replica",
        Status.WARN,
        served(answer(), **admin(CONFIG_V, "c" * 64)),
        summary="stale replica caches",
    ),
    Case("rollout.audit-log-db", "updates with actors", Status.PASS, {"db": audit_db()}),
    Case(
        "rollout.audit-log-db",
        "updates without an actor",
        Status.FAIL,
        {"db": audit_db(without_actor=1)},
        summary="audit rows without an actor",
    ),
    Case(
        "rollout.audit-route",
        "answers",
        Status.PASS,
        served(
            answer(), **{"GET /v1/admin/tenants/acme/audit": Answer(200, {"entries": [{"action": "config.update"}]})}
        ),
    ),
    Case(
        "rollout.audit-route",
        "viewer refused",
        Status.FAIL,
        served(answer(), **{"GET /v1/admin/tenants/acme/audit": Answer(403, {"code": "RECSYS_FORBIDDEN"})}),
        summary="audit route not answering for a viewer",
    ),
    Case(
        "rollout.audit-route",
        "audit credential refused",
        Status.ERROR,
        served(answer(), **{"GET /v1/admin/tenants/acme/audit": Answer(401, {"code": "RECSYS_AUTH_INVALID"})}),
        summary="the audit's viewer credential was refused",
    ),
    Case(
        "rollout.request-traceable", "found in the exposure log", Status.PASS, {**served(answer()), **exposure("req-7")}
    ),
    Case(
        "rollout.request-traceable",
        "not logged",
        Status.FAIL,
        {**served(answer()), **exposure("req-other")},
        summary="request req-7 not found",
    ),
    Case(
        "rollout.request-traceable",
        "logged with other versions",
        Status.FAIL,
        {**served(answer()), **exposure("req-7", rules_version="d" * 64)},
        summary="differs on: rules_version",
    ),
    Case("rollout.versions-retained", "two of each", Status.PASS, {"db": audit_db()}),
    Case("rollout.versions-retained", "one of each", Status.FAIL, {"db": audit_db(kept=1)}, summary="fewer than two"),
    Case(
        "rollout.image-pinned",
        "a release tag",
        Status.PASS,
        {"helm": {"api": {"image": {"repository": "r", "tag": "v1.2.3"}}}},
    ),
    Case(
        "rollout.image-pinned",
        "latest",
        Status.FAIL,
        {"helm": {"api": {"image": "ghcr.io/aatuh/recsys-svc:latest"}}},
        summary="is not pinned (tag latest)",
    ),
    Case("rollout.replicas", "three", Status.PASS, {"helm": {"api": {"replicaCount": 3}}}),
    Case("rollout.replicas", "chart default", Status.FAIL, {"helm": {"api": {}}}, summary="1 replica"),
    Case("rollout.cache-invalidation-scope", "short TTLs", Status.PASS, scope(3, "1m"), summary="converge within 60 s"),
    Case(
        "rollout.cache-invalidation-scope",
        "TTLs longer than the policy",
        Status.FAIL,
        scope(3, "10m"),
        summary="the others serve the old version for up to 600 s",
    ),
    Case("rollout.cache-invalidation-scope", "one replica", Status.PASS, scope(1, "10m")),
    Case("rollout.procedures-documented", "awaits attestation", Status.MANUAL, {}),
    Case("rollout.ship-gates-documented", "awaits attestation", Status.MANUAL, {}),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fake_context(fake_audit: Any, case: Case) -> None:
    check_case(fake_audit, case)


# --- the full audit against the sandbox variants: every check's exact status ---------------------------------------

FAILING = {
    "as-shipped": {
        "rollout.audit-log-file",
        "rollout.audit-route",  # dev headers grant no role: the viewer is refused
        "rollout.config-etag-matches",
        "rollout.image-pinned",
        "rollout.replicas",
    },
    "code-defects": {"rollout.config-etag-matches", "rollout.request-traceable", "rollout.response-versions"},
    "ops-defects": {"rollout.image-pinned", "rollout.replicas"},
}


def section_statuses(findings: dict[str, Any]) -> dict[str, Status]:
    return {cid: f.status for cid, f in findings.items() if f.section == 7}


def test_hardened_statuses_are_exact(audit_findings) -> None:
    findings = audit_findings("hardened")
    assert section_statuses(findings) == dict.fromkeys(SECTION.checks, Status.PASS), {
        cid: findings[cid].summary for cid in SECTION.checks
    }
    responses = findings["rollout.response-versions"].evidence["responses"]
    assert all(len(row["config_version"]) == 64 and not row["placeholder"] for row in responses)
    traced = findings["rollout.request-traceable"].evidence
    assert traced["logged"] == traced["served"] and traced["request_id"]
    assert findings["rollout.version-endpoint"].evidence["build"][0]["version"] == "v0.1.0"
    # three replicas: an admin invalidation reaches one, the TTL (1m) bounds the staleness of the others
    scope = findings["rollout.cache-invalidation-scope"].evidence
    assert scope["replicas"] == 3 and scope["staleness_bound_s"] == 60


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(FAILING))
def test_variants_fail_exactly_the_checks_they_break(audit_findings, variant: str) -> None:
    statuses = section_statuses(audit_findings(variant))
    assert {cid for cid, status in statuses.items() if status == Status.FAIL} == FAILING[variant]


@pytest.mark.slow
def test_missing_meta_fails_versions_and_etag_comparison(audit_findings) -> None:
    versions = audit_findings("code-defects")["rollout.response-versions"]
    row = versions.evidence["responses"][0]
    assert row["config_version"] == "MISSING" and row["rules_version"] == "MISSING" and row["placeholder"]


@pytest.mark.slow
def test_single_replica_latest_and_no_retained_manifest(audit_findings) -> None:
    findings = audit_findings("ops-defects")
    assert findings["rollout.replicas"].evidence["replicaCount"] == 1
    assert findings["rollout.image-pinned"].evidence["tag"] == "latest"
    assert findings["pipelines.rollback-manifest-retained"].status == Status.FAIL  # one check for this fact
    assert findings["rollout.cache-invalidation-scope"].status == Status.PASS  # one replica: invalidation reaches it
    assert findings["rollout.version-endpoint"].status == Status.PASS  # "latest" is no version to compare


@pytest.mark.slow
def test_as_shipped_build_and_algo_carry_no_release(audit_findings) -> None:
    findings = audit_findings("as-shipped")
    build = findings["rollout.version-endpoint"]
    assert build.status == Status.WARN  # not a production target
    assert build.evidence["build"] == [{"version": "dev", "commit": "none", "date": "unknown"}]
    versions = findings["rollout.response-versions"]
    assert versions.status == Status.WARN and {row["algo_version"] for row in versions.evidence["responses"]} == {
        "recsys-algo@local"
    }


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({"repository": "ghcr.io/aatuh/recsys-svc", "tag": "v0.1.0"}, ("ghcr.io/aatuh/recsys-svc", "v0.1.0")),
        ("registry:5000/recsys-svc", ("registry:5000/recsys-svc", "")),
        ("ghcr.io/aatuh/recsys-svc:latest", ("ghcr.io/aatuh/recsys-svc", "latest")),
        ("recsys@sha256:abc", ("recsys", "sha256:abc")),
    ],
)
def test_image_reference(image: object, expected: tuple[str, str]) -> None:
    assert image_reference(image) == expected
