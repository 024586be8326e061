"""Section 5 — observability and runbooks, against the sandbox variants (real service, real Prometheus)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recsys_audit.checks.s5_observability import SECTION
from recsys_audit.context import AuditContext
from recsys_audit.findings import Status
from recsys_audit.params import load_params
from recsys_audit.probes.logscan import scan_logs

HARDENED_PASS = [
    "obs.health-endpoints",
    "obs.detailed-health-private",
    "obs.liveness-route",
    "obs.metrics-series",
    "obs.prometheus-target-up",
    "obs.golden-signals",
    "obs.alert-coverage",
    "obs.alert-semantics",
    "obs.alert-rules-valid",
    "obs.dashboard-panels",
    "obs.logs-no-secrets",
    "runbook.diagnostics",
]
RUNBOOKS = [
    "runbook.service-not-ready",
    "runbook.empty-recs",
    "runbook.rollback-config-rules",
    "runbook.stale-manifest",
]


def test_hardened_passes(audit_findings) -> None:
    findings = audit_findings("hardened")
    wrong = {
        cid: (findings[cid].status, findings[cid].summary) for cid in HARDENED_PASS if findings[cid].status != "pass"
    }
    assert not wrong
    health = findings["obs.health-endpoints"].evidence["probes"]
    assert [(row["request"], row["status"]) for row in health] == [("GET /healthz", 200), ("GET /readyz", 200)]
    assert all(row["ms"] > 0 for row in health)
    # the golden signals are computed by Prometheus and land in the evidence for the summary
    signals = findings["obs.golden-signals"].evidence
    for name in ("request_rate_rps", "error_ratio", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
        assert name in signals
    assert signals["request_rate_rps"] is not None and signals["request_rate_rps"] >= 0
    assert signals["error_ratio"] is not None and signals["error_ratio"] <= 0.01
    assert 0 < signals["latency_p50_ms"] <= signals["latency_p95_ms"] <= signals["latency_p99_ms"]
    assert all("histogram_quantile" in q["promql"] for q in signals["queries"] if q["signal"].startswith("latency"))
    series = {row["series"]: row["found"] for row in findings["obs.metrics-series"].evidence["series"]}
    assert series["recsys_recommendation_requests_total"] == "ok"
    assert series["recsys_artifact_manifest_age_seconds"] == "ok"  # artifact mode
    coverage = {row["measure"]: row["alerts"] for row in findings["obs.alert-coverage"].evidence["coverage"]}
    assert "MISSING" not in coverage.values()
    for cid in RUNBOOKS:  # human items: manual unless attested
        assert findings[cid].status in {Status.MANUAL, Status.PASS}
        assert findings[cid].status == Status.PASS or "attest" in findings[cid].summary


@pytest.mark.slow
def test_public_detailed_health_warns(audit_findings) -> None:
    finding = audit_findings("code-defects")["obs.detailed-health-private"]
    assert finding.status == Status.WARN
    assert finding.evidence["probe"][0]["status"] == 200
    assert "database" in finding.evidence["revealed_checks"]


@pytest.mark.slow
def test_as_shipped_liveness_alerts_and_dashboard_warn(audit_findings) -> None:
    findings = audit_findings("as-shipped")
    liveness = findings["obs.liveness-route"]
    assert liveness.status == Status.WARN and liveness.evidence["liveness_path"] == "/healthz"
    assert "/livez" in liveness.remediation
    # the upstream alert set: no target-down, readiness or backpressure alert; DB-only mode needs no manifest alerts
    coverage = findings["obs.alert-coverage"]
    assert coverage.status == Status.WARN
    missing = {row["measure"] for row in coverage.evidence["coverage"] if row["alerts"] == "MISSING"}
    assert missing == {"target_down", "readiness", "backpressure"}
    semantics = {row["alert"]: row["problems"] for row in findings["obs.alert-semantics"].evidence["alerts"]}
    assert "client mistakes included" in semantics["RecSysHighErrorRate"]
    dashboard = findings["obs.dashboard-panels"]
    assert dashboard.status == Status.WARN
    lacking = {row["needs"] for row in dashboard.evidence["coverage"] if row["panels"] == "MISSING"}
    assert lacking == {"errors", "p50", "p99", "cache"}


@pytest.mark.slow
def test_missing_alerts_fail_coverage(audit_findings) -> None:
    finding = audit_findings("ops-defects")["obs.alert-coverage"]
    assert finding.status == Status.FAIL
    missing = {row["measure"] for row in finding.evidence["coverage"] if row["alerts"] == "MISSING"}
    assert missing == {"p95_latency", "stale_manifest"}


SECRETS = {
    "bearer": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhdWRpdG9yIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
    "dsn": "s3cr3t-db-passw0rd",
    "salt": "exposure-salt-0123456789abcdef",
    "key": "rk_live_9f8e7d6c5b4a",
}


def leaky_log(path: Path) -> Path:
    path.write_text(
        "\n".join(
            [
                '{"level":"info","msg":"request","path":"/v1/recommend","status":200}',
                f'{{"level":"debug","headers":{{"Authorization":"Bearer {SECRETS["bearer"]}"}}}}',
                f"config loaded DATABASE_URL=postgres://recsys:{SECRETS['dsn']}@db:5432/recsys",
                f"EXPOSURE_HASH_SALT={SECRETS['salt']} API_KEY_HEADER=X-API-Key",
                f'{{"msg":"auth","x-api-key":"{SECRETS["key"]}"}}',
                '{"level":"info","msg":"masked","authorization":"Bearer ***"}',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return path


def test_log_scan_counts_secrets_and_shows_only_redacted_positions(tmp_path: Path) -> None:
    scan = scan_logs([leaky_log(tmp_path / "service.log")])
    assert scan.lines == 6
    assert {(hit.kind, hit.line) for hit in scan.hits} == {
        ("bearer_token", 2),
        ("dsn_password", 3),
        ("salt_or_hash_secret", 4),
        ("api_key", 5),
    }
    shown = json.dumps([hit.row() for hit in scan.hits])
    assert not any(secret in shown for secret in SECRETS.values())
    assert "***" in shown


def test_log_check_fails_on_leaky_log_and_passes_on_clean_one(tmp_path: Path) -> None:
    leaky_log(tmp_path / "service.log")
    (tmp_path / "clean.log").write_text('{"level":"info","msg":"ready","path":"/readyz"}\n', encoding="utf-8")
    for log, expected in (("service.log", Status.FAIL), ("clean.log", Status.PASS)):
        params = {
            "environment": {"name": "logs"},
            "target": {"base_url": "http://127.0.0.1:9"},
            "tenants": [{"id": "demo", "surfaces": ["home"]}],
            "logs": {"service": [log]},
        }
        path = tmp_path / f"params-{log}.yaml"
        path.write_text(yaml.safe_dump(params), encoding="utf-8")
        outcome = SECTION.checks["obs.logs-no-secrets"].function(AuditContext(load_params(path), tmp_path / "run"))
        assert outcome.status == expected, outcome.summary
        if expected == Status.FAIL:
            assert outcome.evidence["counts"]["bearer_token"] == 1
            assert not any(secret in json.dumps(outcome.evidence) for secret in SECRETS.values())
