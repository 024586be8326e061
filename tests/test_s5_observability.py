"""Section 5 — observability and runbooks, against the sandbox variants (real service, real Prometheus)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import Answer, Case, Request, check_case
from test_alert_rules import UPSTREAM_STYLE, complete_set, without

from recsys_audit.checks.s5_observability import SECTION
from recsys_audit.context import AuditContext
from recsys_audit.findings import Status
from recsys_audit.params import load_params
from recsys_audit.probes.logscan import scan_logs
from recsys_audit.sandbox import deployment

# --- every check on a fake context: the exact status for a healthy and a broken input --------------------------------

HEALTHY = Answer(200, {"status": "healthy", "timestamp": "2026-11-26T10:00:00Z", "message": "all checks passed"})
UNHEALTHY = Answer(503, {"status": "unhealthy", "timestamp": "2026-11-26T10:00:00Z", "message": "some checks failed"})
HEALTH_ROUTES = {"GET /livez": HEALTHY, "GET /healthz": HEALTHY, "GET /health": HEALTHY}
DETAILED = Answer(200, {"status": "healthy", "checks": {"basic": {}, "database": {}, "jwt": {}}})
PROD_ENV = {"ENV": "production"}
VIEWER = {"auth": {"credentials": {"viewer": {"headers": {"X-Dev-User-Id": "auditor"}}}}}
REQ = "recsys_recommendation_requests_total"


def exposition(*, latency: bool = True, caches: bool = True) -> str:
    lines = [
        f"# TYPE {REQ} counter",
        f'{REQ}{{endpoint="recommend",outcome="success",empty="false"}} 40',
        f'{REQ}{{endpoint="recommend",outcome="success",empty="true"}} 1',
        "# TYPE recsys_backpressure_rejections_total counter",
        "recsys_backpressure_rejections_total 0",
    ]
    if latency:
        lines.append("# TYPE recsys_recommendation_latency_seconds histogram")
        for le in ("0.005", "0.01", "0.025", "+Inf"):
            lines.append(
                f'recsys_recommendation_latency_seconds_bucket{{endpoint="recommend",outcome="success",le="{le}"}} 41'
            )
        lines.append('recsys_recommendation_latency_seconds_sum{endpoint="recommend",outcome="success"} 0.2')
        lines.append('recsys_recommendation_latency_seconds_count{endpoint="recommend",outcome="success"} 41')
    if caches:
        lines.append("# TYPE recsys_cache_requests_total counter")
        lines.append('recsys_cache_requests_total{cache="tenant_config",result="hit"} 39')
    return "\n".join(lines) + "\n"


def vector(value: float | None) -> Answer:
    result = [] if value is None else [{"metric": {}, "value": [1764150000, str(value)]}]
    return Answer(200, {"status": "success", "data": {"resultType": "vector", "result": result}})


def signals(**values: float | None) -> dict[str, Any]:
    """Prometheus answering the golden-signal queries with ``values`` (by signal name)."""
    healthy = {"rate": 12.0, "errors": 0.0, "p50": 8.0, "p95": 40.0, "p99": 90.0, "empty": 0.005, "hits": 0.93}
    healthy.update(values)

    def query(request: Request) -> Answer:
        promql = request.query["query"][0]
        for marker, name in (
            ("histogram_quantile(0.5,", "p50"),
            ("histogram_quantile(0.95,", "p95"),
            ("histogram_quantile(0.99,", "p99"),
            ('empty="true"', "empty"),
            ('result="hit"', "hits"),
            ("overload", "errors"),
        ):
            if marker in promql:
                return vector(healthy[name])
        return vector(healthy["rate"])

    return {"params": {"prometheus": {"url": "{url}", "job": "recsys"}}, "routes": {"GET /api/v1/query": query}}


def targets(health: str) -> dict[str, Any]:
    target = {
        "labels": {"job": "recsys", "instance": "pod-0:8000"},
        "health": health,
        "lastScrape": "",
        "lastError": "",
    }
    answer = Answer(200, {"status": "success", "data": {"activeTargets": [target]}})
    return {"params": {"prometheus": {"url": "{url}", "job": "recsys"}}, "routes": {"GET /api/v1/targets": answer}}


def alert_rules(rule_set: dict[str, Any]) -> dict[str, Any]:
    return {
        "params": {"prometheus": {"rules_files": ["rules.yml"]}},
        "files": {"rules.yml": yaml.safe_dump(rule_set, sort_keys=False)},
    }


def with_rule(rule_set: dict[str, Any], name: str, expr: str) -> dict[str, Any]:
    changed = {"groups": [{"name": "recsys-service", "rules": [dict(r) for r in rule_set["groups"][0]["rules"]]}]}
    for rule in changed["groups"][0]["rules"]:
        if rule["alert"] == name:
            rule["expr"] = expr
    return changed


def dashboard(kind: str) -> dict[str, Any]:
    document = deployment.dashboard(kind != "upstream")
    if kind == "no-p99":
        for panel in document["panels"]:
            panel["targets"] = [t for t in panel["targets"] if "0.99" not in t["expr"]]
    return {
        "params": {"deployment": {"grafana_dashboard": "dashboard.json"}},
        "files": {"dashboard.json": json.dumps(document)},
    }


def diagnostics(validate: Answer, warnings: list[str] | None = None) -> dict[str, Any]:
    answer = {
        "items": [{"item_id": "item-0001", "rank": 1, "score": 0.9}],
        "meta": {"request_id": "req-1", "tenant_id": "acme", "surface": "home"},
    }
    if warnings:
        answer["warnings"] = [{"code": code, "detail": "..."} for code in warnings]
    return {
        "params": VIEWER,
        "routes": {"POST /v1/recommend/validate": validate, "POST /v1/recommend": Answer(200, answer)},
    }


NORMALIZED = Answer(200, {"normalized_request": {"surface": "home", "k": 5}, "warnings": [], "meta": {}})
COMPLETE_RULES = complete_set()
CASES = [
    Case(
        "obs.tracing-configured",
        "OTLP exporter on",
        Status.PASS,
        {"env": {**PROD_ENV, "OTEL_TRACING_ENABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel:4317"}},
    ),
    Case(
        "obs.tracing-configured",
        "tracing off in production",
        Status.FAIL,
        {"env": PROD_ENV},
        summary="OTEL_TRACING_ENABLED=false switches tracing off",
    ),
    Case("obs.tracing-configured", "tracing off elsewhere", Status.WARN, {"env": {}}, summary="(not production)"),
    Case("obs.log-level", "info", Status.PASS, {"env": {**PROD_ENV, "LOG_LEVEL": "info"}}),
    Case(
        "obs.log-level",
        "debug in production",
        Status.FAIL,
        {"env": {**PROD_ENV, "LOG_LEVEL": "debug"}},
        summary="LOG_LEVEL=debug",
    ),
    Case("obs.health-endpoints", "all healthy", Status.PASS, {"routes": HEALTH_ROUTES}),
    Case(
        "obs.health-endpoints",
        "/healthz unhealthy",
        Status.FAIL,
        {"routes": {**HEALTH_ROUTES, "GET /healthz": UNHEALTHY}},
        summary="GET /healthz -> 503",
    ),
    Case(
        "obs.health-endpoints",
        "/livez not mounted",
        Status.FAIL,
        {"routes": {"GET /healthz": HEALTHY, "GET /health": HEALTHY}},
        summary="GET /livez -> 404",
    ),
    Case("obs.detailed-health-private", "blocked", Status.PASS, {"params": {"target": {"vantage": "public"}}}),
    Case(
        "obs.detailed-health-private",
        "public",
        Status.FAIL,
        {"params": {"target": {"vantage": "public"}}, "routes": {"GET /health/detailed": DETAILED}},
        summary="answers without auth from the public side",
    ),
    Case(
        "obs.detailed-health-private",
        "open inside the network",
        Status.WARN,
        {"params": {"target": {"vantage": "internal"}}, "routes": {"GET /health/detailed": DETAILED}},
        summary="inside the network",
    ),
    Case(
        "obs.metrics-not-public",
        "blocked at the ingress",
        Status.PASS,
        {"params": {"target": {"vantage": "public"}}, "routes": {"GET /metrics": Answer(403, "forbidden")}},
    ),
    Case(
        "obs.metrics-not-public",
        "public",
        Status.FAIL,
        {"params": {"target": {"vantage": "public"}}, "metrics": exposition()},
        summary="/metrics answers without auth from the public side",
    ),
    Case(
        "obs.metrics-not-public",
        "open, vantage not stated",
        Status.WARN,
        {"metrics": exposition()},
        summary="set target.vantage",
    ),
    Case(
        "obs.metrics-not-public",
        "auditor inside",
        Status.SKIP,
        {"params": {"target": {"vantage": "internal"}}, "metrics": exposition()},
    ),
    Case(
        "obs.liveness-route",
        "chart deployment",
        Status.WARN,
        {"helm": {"api": {"replicaCount": 3}}},
        summary="hard-coded on /healthz",
    ),
    Case(
        "obs.liveness-route",
        "values key the chart ignores",
        Status.WARN,
        {"helm": {"api": {"livenessProbe": {"httpGet": {"path": "/livez"}}}}},
        summary="api.livenessProbe in the values is ignored by the chart",
    ),
    Case("obs.liveness-route", "no Helm values", Status.MANUAL, {"env": {}}, summary="attest its path"),
    Case("obs.metrics-series", "every series", Status.PASS, {"metrics": exposition()}),
    Case(
        "obs.metrics-series",
        "no latency histogram",
        Status.FAIL,
        {"metrics": exposition(latency=False)},
        summary="missing series: recsys_recommendation_latency_seconds",
    ),
    Case(
        "obs.metrics-series",
        "audit credential refused",
        Status.ERROR,
        {
            "params": VIEWER,
            "metrics": exposition(),
            "routes": {"POST /v1/recommend": Answer(401, {"code": "RECSYS_AUTH_REQUIRED", "status": 401})},
        },
        summary="the audit's viewer credential was refused",
    ),
    Case("obs.prometheus-target-up", "up", Status.PASS, targets("up")),
    Case("obs.prometheus-target-up", "down", Status.FAIL, targets("down"), summary="not up: recsys/pod-0:8000"),
    Case("obs.golden-signals", "within policy", Status.PASS, signals()),
    Case(
        "obs.golden-signals",
        "empty answers over policy",
        Status.FAIL,
        signals(empty=0.2),
        summary="empty answers 20.00% > 2.00%",
    ),
    Case("obs.golden-signals", "p95 over the SLO", Status.FAIL, signals(p95=900.0), summary="p95 900 ms > SLO 250 ms"),
    Case("obs.golden-signals", "cold caches", Status.WARN, signals(hits=0.1), summary="cache hit ratio 10% < 50%"),
    Case("obs.golden-signals", "no traffic series", Status.WARN, signals(rate=None), summary="no recommendation"),
    Case("obs.alert-coverage", "complete set", Status.PASS, alert_rules(COMPLETE_RULES)),
    Case(
        "obs.alert-coverage",
        "no latency alert",
        Status.FAIL,
        alert_rules(without(COMPLETE_RULES, "RecSysHighP95Latency")),
        summary="no alert for: p95_latency",
    ),
    Case("obs.alert-semantics", "server errors, plain ratios", Status.PASS, alert_rules(COMPLETE_RULES)),
    Case(
        "obs.alert-semantics",
        "error alert on an outcome the service never sets",
        Status.FAIL,
        alert_rules(with_rule(COMPLETE_RULES, "RecSysHighErrorRate", f'sum(rate({REQ}{{outcome="error"}}[5m])) > 1')),
        summary="cannot fire when they should: RecSysHighErrorRate",
    ),
    Case(
        "obs.alert-semantics",
        "latency alert looser than the SLO",
        Status.FAIL,
        alert_rules(
            with_rule(
                COMPLETE_RULES,
                "RecSysHighP95Latency",
                "histogram_quantile(0.95, sum by (le) (rate(recsys_recommendation_latency_seconds_bucket[5m]))) > 2",
            )
        ),
        summary="RecSysHighP95Latency",
    ),
    Case(
        "obs.alert-semantics",
        "the upstream error alert",
        Status.WARN,
        alert_rules(UPSTREAM_STYLE),
        summary="do not measure what they claim",
    ),
    Case("obs.alert-semantics", "no rules", Status.FAIL, alert_rules({"groups": []}), summary="no alerting rules"),
    Case("obs.alert-rules-valid", "promtool accepts", Status.PASS, alert_rules(COMPLETE_RULES)),
    Case(
        "obs.alert-rules-valid",
        "broken PromQL",
        Status.FAIL,
        alert_rules(with_rule(COMPLETE_RULES, "RecSysHighErrorRate", f"sum(rate({REQ}[5m]) >")),
        summary="promtool rejects",
    ),
    Case("obs.dashboard-panels", "complete", Status.PASS, dashboard("complete")),
    Case(
        "obs.dashboard-panels",
        "the upstream dashboard",
        Status.FAIL,
        dashboard("upstream"),
        summary="dashboard has no panel for: errors, cache",
    ),
    Case("obs.dashboard-panels", "no p99", Status.WARN, dashboard("no-p99"), summary="lacks panels for: p99"),
    Case("obs.dashboard-panels", "no dashboard named", Status.MANUAL, {}),
    Case(
        "obs.logs-no-secrets",
        "clean",
        Status.PASS,
        {"params": {"logs": {"service": ["service.log"]}}, "files": {"service.log": '{"msg":"ready"}\n'}},
    ),
    Case(
        "obs.logs-no-secrets",
        "a bearer token",
        Status.FAIL,
        {
            "params": {"logs": {"service": ["service.log"]}},
            "files": {
                "service.log": '{"headers":{"Authorization":"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}}\n'
            },
        },
        summary="1 secret(s) in logs",
    ),
    Case("runbook.service-not-ready", "awaits attestation", Status.MANUAL, {}),
    Case("runbook.empty-recs", "awaits attestation", Status.MANUAL, {}),
    Case("runbook.rollback-config-rules", "awaits attestation", Status.MANUAL, {}),
    Case(
        "runbook.stale-manifest",
        "artifact mode",
        Status.MANUAL,
        {"params": {"tenants": [{"id": "acme", "surfaces": ["home"], "serving_mode": "artifact"}]}},
    ),
    Case("runbook.diagnostics", "clean answers", Status.PASS, diagnostics(NORMALIZED)),
    Case(
        "runbook.diagnostics",
        "validate broken",
        Status.FAIL,
        diagnostics(Answer(500, {"code": "RECSYS_INTERNAL", "status": 500})),
        summary="/v1/recommend/validate gives no normalized request for acme/home -> 500",
    ),
    Case(
        "runbook.diagnostics",
        "signals missing",
        Status.WARN,
        diagnostics(NORMALIZED, ["SIGNAL_UNAVAILABLE"]),
        summary="follow the next step",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fake_context(fake_audit: Any, case: Case) -> None:
    check_case(fake_audit, case)


# --- the full audit against the sandbox variants: every check's exact status ---------------------------------------

# hardened: everything passes (attested runbooks included) except these
HARDENED_NOT_PASS = {
    "obs.liveness-route": Status.WARN,  # the chart hard-codes liveness on /healthz: capped at warn, waivable
    "obs.metrics-not-public": Status.SKIP,  # the sandbox params put the auditor inside the network
}
FAILING = {
    "as-shipped": {"obs.dashboard-panels"},
    "code-defects": set(),
    "ops-defects": {"obs.alert-coverage"},
}


def section_statuses(findings: dict[str, Any]) -> dict[str, Status]:
    return {cid: f.status for cid, f in findings.items() if f.section == 5}


def test_hardened_statuses_are_exact(audit_findings) -> None:
    findings = audit_findings("hardened")
    expected = {cid: HARDENED_NOT_PASS.get(cid, Status.PASS) for cid in SECTION.checks}
    assert section_statuses(findings) == expected, {cid: findings[cid].summary for cid in SECTION.checks}
    health = findings["obs.health-endpoints"].evidence["probes"]
    assert [(row["request"], row["status"], row["health"]) for row in health] == [
        ("GET /livez", 200, "healthy"),
        ("GET /healthz", 200, "healthy"),
        ("GET /health", 200, "healthy"),
    ]
    assert all(row["ms"] > 0 for row in health)
    # the golden signals are computed by Prometheus and land in the evidence for the summary
    signals = findings["obs.golden-signals"].evidence
    assert signals["request_rate_rps"] is not None and signals["request_rate_rps"] >= 0
    assert signals["error_ratio"] is not None and signals["error_ratio"] <= 0.01
    assert 0 < signals["latency_p50_ms"] <= signals["latency_p95_ms"] <= signals["latency_p99_ms"]
    assert signals["empty_recs_ratio"] is not None and signals["cache_hit_ratio"] is not None
    assert all("histogram_quantile" in q["promql"] for q in signals["queries"] if q["signal"].startswith("latency"))
    series = {row["series"]: row["found"] for row in findings["obs.metrics-series"].evidence["series"]}
    assert series["recsys_recommendation_requests_total"] == "ok"
    assert series["recsys_artifact_manifest_age_seconds"] == "ok"  # artifact mode
    assert findings["obs.liveness-route"].evidence.get("ignored_values") is None  # the values hold no probe keys
    diagnostics = findings["runbook.diagnostics"].evidence["diagnostics"]
    assert {(row["surface"], row["validate"], row["normalized"]) for row in diagnostics} == {
        ("home", 200, True),
        ("pdp", 200, True),
    }


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(FAILING))
def test_variants_fail_exactly_the_checks_they_break(audit_findings, variant: str) -> None:
    statuses = section_statuses(audit_findings(variant))
    assert {cid for cid, status in statuses.items() if status == Status.FAIL} == FAILING[variant]


@pytest.mark.slow
def test_detailed_health_open_inside_the_network_warns(audit_findings) -> None:
    finding = audit_findings("code-defects")["obs.detailed-health-private"]
    assert finding.status == Status.WARN
    assert finding.evidence["probe"][0]["status"] == 200 and finding.evidence["vantage"] == "internal"
    assert "database" in finding.evidence["revealed_checks"]


@pytest.mark.slow
def test_as_shipped_alerts_tracing_and_dashboard(audit_findings) -> None:
    findings = audit_findings("as-shipped")
    liveness = findings["obs.liveness-route"]
    assert liveness.status == Status.WARN and "/livez" in liveness.remediation
    # the upstream alert set: no target-down, readiness or backpressure alert; DB-only mode needs no manifest alerts
    coverage = findings["obs.alert-coverage"]
    assert coverage.status == Status.WARN
    missing = {row["measure"] for row in coverage.evidence["coverage"] if row["alerts"] == "MISSING"}
    assert missing == {"target_down", "readiness", "backpressure"}
    semantics = findings["obs.alert-semantics"]
    assert semantics.status == Status.WARN
    problems = {row["alert"]: row["problems"] for row in semantics.evidence["alerts"]}
    assert "client mistakes included" in problems["RecSysHighErrorRate"]
    assert findings["obs.tracing-configured"].status == Status.WARN  # off, but not a production target
    dashboard = findings["obs.dashboard-panels"]
    lacking = {row["needs"] for row in dashboard.evidence["coverage"] if row["panels"] == "MISSING"}
    assert lacking == {"errors", "p50", "p99", "cache"}
    assert dashboard.summary.startswith("dashboard has no panel for: errors, cache")


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
