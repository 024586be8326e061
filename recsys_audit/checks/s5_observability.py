"""Section 5 — Observability and runbooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recsys_audit.catalog import Section
from recsys_audit.checklist import EvidenceClass
from recsys_audit.checks.common import accepted, artifact_mode, awaiting_attestation, identity_for, tenant_surfaces
from recsys_audit.checks.config_rules import register_config_rules
from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, Severity, Status, failed, manual, passed, skipped, warned, worst
from recsys_audit.probes import ProbeError
from recsys_audit.probes.alerts import (
    UPSTREAM_COVERAGE,
    AlertRule,
    coverage,
    promtool_check,
    promtool_check_rules,
    rules_from_api,
    rules_from_file,
    semantic_problems,
)
from recsys_audit.probes.config import parse_duration
from recsys_audit.probes.metrics import scrape
from recsys_audit.probes.service import recommend_body

SECTION = Section(5, "Observability and runbooks", notebook="05_observability")
register_config_rules(SECTION)  # tracing, log level

HTTP_REF = "recsys-http-and-config"
OPS_REF = "recsys-data-and-ops"
REQUESTS = "recsys_recommendation_requests_total"
SERVER_OUTCOMES = "overload|artifact_incompatible|internal_error"
# The unauthenticated liveness routes; /readyz (readiness) is judged in section 1 (auth.readyz-reachable).
LIVENESS_ROUTES = ("/livez", "/healthz", "/health")
RUNBOOK_WARNINGS = {
    "CANDIDATES_INCLUDE_EMPTY": "the include allow-list matched nothing: check candidates.include_ids",
    "CONSTRAINTS_FILTERED": "constraints removed candidates: review required/forbidden tags",
    "SIGNAL_UNAVAILABLE": "no signal data: check DB signal rows or the manifest and its blob URIs",
    "SIGNAL_PARTIAL": "some signals missing: check DB signal rows or the manifest and its blob URIs",
}


def job_selector(ctx: AuditContext, extra: str = "") -> str:
    """A PromQL label selector for the service's series (``{job="..."}`` when params name the job)."""
    parts = [f'job="{ctx.params.prometheus.job}"'] if ctx.params.prometheus.job else []
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


# --- probes and health -----------------------------------------------------------------------------------------


@SECTION.check(
    "obs.health-endpoints",
    items=("5.healthz-liveness",),
    evidence=EvidenceClass.LIVE,
    title="The liveness routes /livez, /healthz and /health answer 200 healthy",
    severity=Severity.HIGH,
    remediation="Fix what the failing route reports (see the service-not-ready runbook); /livez is the basic check, "
    "/healthz and /health also ping the database. Readiness (/readyz) is judged by auth.readyz-reachable.",
    reference=f"{HTTP_REF} §1 (system routes), §2 (health)",
)
def health_endpoints(ctx: AuditContext) -> Outcome:
    rows = []
    for path in LIVENESS_ROUTES:
        response = ctx.service.get(path)
        body = response.json_or_none()
        rows.append({**response.evidence(), "health": body.get("status") if isinstance(body, dict) else None})
    bad = [f"{row['request']} -> {row['status']}" for row in rows if row["status"] != 200]
    if bad:
        return failed(f"not answering 200: {', '.join(bad)}", probes=rows)
    unwell = [f"{row['request']} says {row['health']}" for row in rows if row["health"] != "healthy"]
    if unwell:
        return warned(f"200 but not healthy: {', '.join(unwell)}", probes=rows)
    slowest = max(rows, key=lambda row: row["ms"])
    return passed(
        f"all {len(rows)} answer 200 healthy (slowest {slowest['request']} in {slowest['ms']} ms)", probes=rows
    )


def _exposure(ctx: AuditContext, path: str, what: str, exposed: bool, evidence: dict[str, Any]) -> Outcome | None:
    """The verdict on an unauthenticated route that must not face the public, by where the auditor stands."""
    vantage = ctx.params.target.vantage
    evidence["vantage"] = vantage or "not stated (target.vantage)"
    if not exposed:
        return None
    if vantage == "public":
        return failed(f"{path} answers without auth from the public side: {what}", **evidence)
    if vantage is None:
        return warned(
            f"{path} answers without auth from the auditor's network ({what}); set target.vantage to say whether "
            "that network is public",
            **evidence,
        )
    return None


@SECTION.check(
    "obs.detailed-health-private",
    items=("5.health-detailed",),
    evidence=EvidenceClass.LIVE,
    title="/health/detailed is not public",
    severity=Severity.MEDIUM,
    remediation="Block /health/detailed at the ingress or load balancer (the service mounts it without auth) and "
    "reach it from inside the cluster (port-forward) when debugging.",
    reference=f"{HTTP_REF} §1 (/health/detailed mounted, no auth), §2 (health)",
)
def detailed_health_private(ctx: AuditContext) -> Outcome:
    response = ctx.service.get("/health/detailed")
    body = response.json_or_none()
    checks = body.get("checks") if isinstance(body, dict) else None
    evidence: dict[str, Any] = {"probe": [response.evidence()]}
    if response.status == 200:
        evidence["revealed_checks"] = sorted(checks) if isinstance(checks, dict) else []
    what = "it lists every internal check (database, JWKS) with its message"
    verdict = _exposure(ctx, "/health/detailed", what, response.status == 200, evidence)
    if verdict:
        return verdict
    if response.status == 200:
        return warned(
            "/health/detailed answers without auth inside the network and tells per-check internals (database "
            "host and user, JWKS URL) to anyone there",
            **evidence,
        )
    return passed(f"/health/detailed is not served here (HTTP {response.status})", **evidence)


@SECTION.check(
    "obs.metrics-not-public",
    items=("5.metrics-dashboards",),
    evidence=EvidenceClass.LIVE,
    title="/metrics is not public",
    severity=Severity.MEDIUM,
    remediation="Block /metrics at the ingress or load balancer (the service serves it without auth on the API "
    "port) and let Prometheus scrape the pods from inside the cluster.",
    reference=f"{HTTP_REF} §1 (/metrics: no auth, same port as the API), §5 (metrics)",
)
def metrics_not_public(ctx: AuditContext) -> Outcome:
    response = ctx.service.get("/metrics")
    exposition = response.status == 200 and ("# TYPE" in response.text or "recsys_" in response.text)
    evidence: dict[str, Any] = {"probe": [{**response.evidence(), "exposition": exposition}]}
    what = "request volumes, outcomes, latencies and process details for anyone"
    verdict = _exposure(ctx, "/metrics", what, exposition, evidence)
    if verdict:
        return verdict
    if exposition:
        return skipped(
            "the auditor stands inside the network (target.vantage: internal), where /metrics must answer for "
            "Prometheus; whether the ingress exposes it is judged from a public vantage",
            **evidence,
        )
    return passed(
        f"GET {ctx.params.target.base_url.rstrip('/')}/metrics -> {response.status}: no exposition", **evidence
    )


# The recsys chart's deployment template (reference: recsys-data-and-ops §4): probe paths are hard-coded and no
# values key changes them.
CHART_PROBES = {
    "livenessProbe": "GET /healthz, initial delay 10 s, period 10 s, timeout 1 s, failureThreshold 3",
    "readinessProbe": "GET /readyz, initial delay 5 s, period 5 s, timeout 1 s, failureThreshold 3",
    "startupProbe": "none",
}
CHART_LIVENESS_PATH = "/healthz"


@SECTION.check(
    "obs.liveness-route",
    items=("5.healthz-liveness",),
    evidence=EvidenceClass.CONFIG,
    cannot_fail="capped at warn: the recsys chart hard-codes its liveness probe on /healthz, which runs the database "
    "check, so every chart deployment carries this risk until the operator patches the rendered Deployment "
    "(post-renderer) and waives it; without Helm values the probe needs an attestation",
    title="The liveness probe does not depend on the database",
    severity=Severity.MEDIUM,
    remediation="Patch the rendered Deployment (a Helm post-renderer or kustomize) so the livenessProbe uses /livez "
    "(basic check only) and keep /readyz for readiness; then waive this finding naming the patch. Values keys "
    "such as api.livenessProbe are ignored by the chart.",
    reference=f"{HTTP_REF} §1 (/healthz runs readiness checks), {OPS_REF} §4 (chart probes hard-coded)",
)
def liveness_route(ctx: AuditContext) -> Outcome:
    sources = [source.path for source in ctx.params.config_sources if source.kind == "helm_values"]
    if not sources:
        return awaiting_attestation(
            ctx,
            "obs.liveness-route",
            "no Helm values in config_sources: the liveness probe is not visible; attest its path (the upstream "
            "chart and the Docker HEALTHCHECK use /healthz, which checks the database)",
        )
    ignored = sorted(key for key in CHART_PROBES if key in ctx.config.deployment)
    evidence: dict[str, Any] = {
        "helm_values": sources,
        "chart_probes": [{"probe": name, "as rendered by the chart": text} for name, text in CHART_PROBES.items()],
    }
    summary = (
        f"the chart's livenessProbe is hard-coded on {CHART_LIVENESS_PATH}, which runs the readiness checks "
        "(database ping): a database outage fails liveness and restarts every replica"
    )
    if ignored:
        evidence["ignored_values"] = [f"api.{key}" for key in ignored]
        summary += f"; api.{'/api.'.join(ignored)} in the values is ignored by the chart"
    return warned(summary, **evidence)


# --- metrics and Prometheus ------------------------------------------------------------------------------------


def _ttl_positive(ctx: AuditContext, name: str) -> bool | None:
    try:
        seconds = parse_duration(ctx.config.value(name))
    except ProbeError:
        return None
    return seconds > 0 if seconds is not None else None


@SECTION.check(
    "obs.metrics-series",
    items=("5.rate-errors-latency", "5.empty-recs-rate", "5.cache-hit-miss"),
    evidence=EvidenceClass.LIVE,
    title="/metrics exposes the series the dashboards and alerts need",
    severity=Severity.HIGH,
    remediation="Expose /metrics from the running build (recsys registers these series on the default registry); "
    "a missing series means an old or modified build.",
    reference=f"{HTTP_REF} §5 (metrics)",
)
def metrics_series(ctx: AuditContext) -> Outcome:
    # One recommendation first, so that labelled counters have children to show.
    tenant, surface = tenant_surfaces(ctx)[0]
    warmed = "no credential"
    if ctx.service.has_role("viewer"):
        warmed = f"POST /v1/recommend -> {accepted(ctx.service.recommend(tenant, surface)).status}"
    snapshot = scrape(ctx.params.resolved_metrics_url, ctx.params.target.timeout_s, ctx.params.tls())
    caches = any(_ttl_positive(ctx, name) for name in ("RECSYS_CONFIG_CACHE_TTL", "RECSYS_RULES_CACHE_TTL"))
    artifacts = artifact_mode(ctx)

    rows: list[dict[str, Any]] = []

    def expect(series: str, when: str, present: bool, detail: str, required: bool = True) -> None:
        verdict = "ok" if present else ("MISSING" if required else "not yet exported")
        rows.append({"series": series, "required": when, "found": verdict, "detail": detail})

    outcome_labels = sorted(snapshot.label_values(REQUESTS, "outcome"))
    has_empty = bool(snapshot.label_values(REQUESTS, "empty"))
    expect(
        REQUESTS, "always", bool(outcome_labels) and has_empty, f"outcomes {outcome_labels}, empty label {has_empty}"
    )
    buckets = snapshot.series("recsys_recommendation_latency_seconds_bucket")
    expect("recsys_recommendation_latency_seconds", "always", bool(buckets), f"{len(buckets)} bucket samples")
    expect(
        "recsys_backpressure_rejections_total",
        "always",
        snapshot.has("recsys_backpressure_rejections_total"),
        f"value {snapshot.total('recsys_backpressure_rejections_total'):g}",
    )
    if caches:
        hits = snapshot.label_values("recsys_cache_requests_total", "result")
        expect("recsys_cache_requests_total", "config/rules caches on", bool(hits), f"results {sorted(hits)}")
    if artifacts:
        expect(
            "recsys_artifact_manifest_age_seconds",
            "artifact mode",
            snapshot.has("recsys_artifact_manifest_age_seconds"),
            f"value {snapshot.total('recsys_artifact_manifest_age_seconds'):g}",
        )
        failures = snapshot.has("recsys_artifact_load_failures_total")
        expect(
            "recsys_artifact_load_failures_total",
            "artifact mode",
            failures,
            "labelled counter: exported from the first failure on" if not failures else "exported",
            required=False,
        )
    missing = [row["series"] for row in rows if row["found"] == "MISSING"]
    evidence = {"metrics_url": ctx.params.resolved_metrics_url, "warm_up": warmed, "series": rows}
    if missing:
        return failed(f"missing series: {', '.join(missing)}", **evidence)
    return passed(f"all {len(rows)} expected series families present", **evidence)


def _service_targets(ctx: AuditContext) -> list[dict[str, Any]]:
    prometheus = ctx.prometheus
    targets = prometheus.targets()
    job = ctx.params.prometheus.job
    if job:
        return [t for t in targets if t.get("labels", {}).get("job") == job]
    with_metrics = {
        (row["metric"].get("job"), row["metric"].get("instance"))
        for row in prometheus.query("count by (job, instance) (recsys_backpressure_rejections_total)")
    }
    metrics_url = ctx.params.resolved_metrics_url.split("://", 1)[-1]
    return [
        t
        for t in targets
        if (t.get("labels", {}).get("job"), t.get("labels", {}).get("instance")) in with_metrics
        or t.get("scrapeUrl", "").split("://", 1)[-1] == metrics_url
    ]


@SECTION.check(
    "obs.prometheus-target-up",
    items=("5.metrics-dashboards",),
    evidence=EvidenceClass.LIVE,
    title="Prometheus scrapes the service and the target is up",
    severity=Severity.HIGH,
    remediation="Add a scrape job for <service>:8000/metrics (or a ServiceMonitor; the chart ships none) and fix the "
    "error Prometheus reports for the target.",
    reference=f"{OPS_REF} §4 (no ServiceMonitor), §6 (observability)",
)
def prometheus_target_up(ctx: AuditContext) -> Outcome:
    targets = _service_targets(ctx)
    rows = [
        {
            "job": t.get("labels", {}).get("job"),
            "instance": t.get("labels", {}).get("instance"),
            "health": t.get("health"),
            "last_scrape": t.get("lastScrape"),
            "last_error": t.get("lastError") or "",
        }
        for t in targets
    ]
    if not rows:
        return failed("Prometheus has no target for the service (no job with recsys metrics)")
    down = [f"{row['job']}/{row['instance']}" for row in rows if row["health"] != "up"]
    if down:
        return failed(f"target(s) not up: {', '.join(down)}", targets=rows)
    return passed(f"{len(rows)} target(s) up", targets=rows)


def golden_signal_queries(ctx: AuditContext, window: str | None = "5m") -> dict[str, str]:
    """The PromQL behind each golden signal (the notebook shows them beside the values).

    ``window=None`` gives the ratios and percentiles since the process started (cumulative counters), the fallback
    when the window saw no traffic; the request rate then has no meaning and is left out.
    """
    every = job_selector(ctx)

    def counted(metric: str, selector: str) -> str:
        return f"sum(rate({metric}{selector}[{window}]))" if window else f"sum({metric}{selector})"

    def quantile(q: float) -> str:
        buckets = (
            f"rate(recsys_recommendation_latency_seconds_bucket{every}[{window}])"
            if window
            else (f"recsys_recommendation_latency_seconds_bucket{every}")
        )
        return f"1000 * histogram_quantile({q}, sum by (le) ({buckets}))"

    server_errors = counted(REQUESTS, job_selector(ctx, f'outcome=~"{SERVER_OUTCOMES}"'))
    empty = counted(REQUESTS, job_selector(ctx, 'outcome="success",empty="true"'))
    successes = counted(REQUESTS, job_selector(ctx, 'outcome="success"'))
    cache_hits = counted("recsys_cache_requests_total", job_selector(ctx, 'result="hit"'))
    cache_lookups = counted("recsys_cache_requests_total", every)
    all_requests = counted(REQUESTS, every)
    queries = {
        "request_rate_rps": all_requests,
        # a numerator with no series yet (no error ever) is zero, not "no data"
        "error_ratio": f"({server_errors} or vector(0)) / {all_requests}",
        "latency_p50_ms": quantile(0.5),
        "latency_p95_ms": quantile(0.95),
        "latency_p99_ms": quantile(0.99),
        "empty_recs_ratio": f"({empty} or vector(0)) / {successes}",
        "cache_hit_ratio": f"({cache_hits} or vector(0)) / {cache_lookups}",
    }
    if not window:
        queries.pop("request_rate_rps")
    return queries


@SECTION.check(
    "obs.golden-signals",
    items=("5.rate-errors-latency", "5.empty-recs-rate", "5.cache-hit-miss"),
    evidence=EvidenceClass.LIVE,
    title="Live error ratio, p95 latency, empty-recs rate and cache hit ratio are within policy",
    severity=Severity.MEDIUM,
    remediation="Investigate the signal over its threshold before going live: error ratio vs "
    "policies.error_ratio_max, p95 vs policies.latency_p95_ms, empty answers vs policies.empty_recs_ratio_max "
    "(empty-recommendations runbook), cache hits vs policies.cache_hit_ratio_min (cache TTLs, tenant/surface "
    "spread).",
    reference=f"{HTTP_REF} §5 (metrics), §6 (caches)",
)
def golden_signals(ctx: AuditContext) -> Outcome:
    policies = ctx.params.policies
    values: dict[str, float | None] = {}
    rows = []
    lifetime = golden_signal_queries(ctx, window=None)
    for name, promql in golden_signal_queries(ctx).items():
        value, over = ctx.prometheus.query_value(promql), "last 5m"
        if value is None and name in lifetime:  # no traffic in the window: since the process started
            promql, over = lifetime[name], "since start"
            value = ctx.prometheus.query_value(promql)
        values[name] = None if value is None else round(value, 4)
        shown_value = "no data" if value is None else round(value, 4)
        rows.append({"signal": name, "value": shown_value, "over": over, "promql": promql})
    evidence = {**values, "slo_p95_ms": policies.latency_p95_ms, "queries": rows}
    if values["request_rate_rps"] is None:
        return warned("Prometheus has no recommendation request series for the service (5m window)", **evidence)
    over_policy, low_cache = [], []
    error_ratio, p95, empty = values["error_ratio"], values["latency_p95_ms"], values["empty_recs_ratio"]
    if error_ratio is not None and error_ratio > policies.error_ratio_max:
        over_policy.append(f"error ratio {error_ratio:.2%} > {policies.error_ratio_max:.2%}")
    if p95 is not None and p95 > policies.latency_p95_ms:
        over_policy.append(f"p95 {p95:.0f} ms > SLO {policies.latency_p95_ms:g} ms")
    if empty is not None and empty > policies.empty_recs_ratio_max:
        over_policy.append(f"empty answers {empty:.2%} > {policies.empty_recs_ratio_max:.2%}")
    hits = values["cache_hit_ratio"]
    if hits is not None and hits < policies.cache_hit_ratio_min:
        low_cache.append(f"cache hit ratio {hits:.0%} < {policies.cache_hit_ratio_min:.0%}")
    shown = ", ".join(
        f"{k}={'n/a' if v is None else v}" for k, v in values.items() if k in {"request_rate_rps", "latency_p95_ms"}
    )
    if over_policy:
        return failed("; ".join(over_policy + low_cache) + f" ({shown})", **evidence)
    if low_cache:
        return warned("; ".join(low_cache) + f" ({shown})", **evidence)
    return passed(f"signals within policy ({shown})", **evidence)


# --- alerts ----------------------------------------------------------------------------------------------------


def load_alert_rules(ctx: AuditContext) -> list[AlertRule]:
    """Alert rules as Prometheus has them loaded (rules API), else from the rule files the params name."""

    def load() -> list[AlertRule]:
        if ctx.params.prometheus.url:
            return rules_from_api(ctx.prometheus.rules())
        if ctx.params.prometheus.rules_files:
            return [r for path in ctx.params.prometheus.rules_files for r in rules_from_file(ctx.params.path(path))]
        raise ProbeError("no alert rules to read: set prometheus.url or prometheus.rules_files in params")

    return ctx.memo("s5:alert-rules", load)


@SECTION.check(
    "obs.alert-coverage",
    items=("5.metrics-dashboards", "3.freshness-slo-alerting"),
    evidence=EvidenceClass.CONFIG,
    title="Alerts cover errors, empty recs, p95 latency, manifests, target down, readiness and backpressure",
    severity=Severity.HIGH,
    remediation="Add the missing alerts: the upstream set (error rate, empty recs, p95, stale manifest, artifact "
    "failures) plus what it lacks — up==0/absent() of the target, replicas not ready, "
    "rate(recsys_backpressure_rejections_total[5m]) > 0.",
    reference=f"{OPS_REF} §6 (alert set and its gaps)",
)
def alert_coverage(ctx: AuditContext) -> Outcome:
    rules = load_alert_rules(ctx)
    rows = coverage(rules, artifact_mode(ctx))
    missing_upstream = [
        row["measure"] for row in rows if row["alerts"] == "MISSING" and row["measure"] in UPSTREAM_COVERAGE
    ]
    missing_extra = [
        row["measure"] for row in rows if row["alerts"] == "MISSING" and row["measure"] not in UPSTREAM_COVERAGE
    ]
    evidence = {"alert_rules": len(rules), "coverage": rows}
    if missing_upstream:
        return failed(f"no alert for: {', '.join(missing_upstream + missing_extra)}", **evidence)
    if missing_extra:
        return warned(f"no alert for: {', '.join(missing_extra)} (upstream ships none)", **evidence)
    return passed(f"all {len(rows)} required measurements have an alert", **evidence)


@SECTION.check(
    "obs.alert-semantics",
    items=("5.metrics-dashboards",),
    evidence=EvidenceClass.CONFIG,
    title="Each alert measures what its name promises and fires within the policies",
    severity=Severity.MEDIUM,
    remediation="Read only series and label values the service exports, count only server outcomes as errors "
    '(outcome=~"overload|artifact_incompatible|internal_error"), do not clamp ratio denominators, and set '
    "thresholds no looser than the environment's policies.",
    reference=f"{OPS_REF} §6 (RecSysHighErrorRate counts client outcomes; clamp hides low traffic), {HTTP_REF} §5",
)
def alert_semantics(ctx: AuditContext) -> Outcome:
    policies = ctx.params.policies
    rules = load_alert_rules(ctx)
    rows, blind, noisy = [], [], []
    for rule in rules:
        problems = semantic_problems(
            rule,
            latency_p95_ms=policies.latency_p95_ms,
            manifest_max_age_s=policies.manifest_max_age_s,
            publish_interval_s=policies.publish_interval_s,
        )
        rows.append({**rule.row(), "problems": "; ".join(p.text for p in problems) or "none"})
        if any(p.blind for p in problems):
            blind.append(rule.name)
        elif problems:
            noisy.append(rule.name)
    if not rules:
        return failed("no alerting rules loaded", alerts=rows)
    if blind:
        return failed(f"{len(blind)} alert(s) cannot fire when they should: {', '.join(blind)}", alerts=rows)
    if noisy:
        return warned(f"{len(noisy)} alert(s) do not measure what they claim: {', '.join(noisy)}", alerts=rows)
    return passed(f"{len(rows)} alerts measure what they claim", alerts=rows)


@SECTION.check(
    "obs.alert-rules-valid",
    items=("5.metrics-dashboards",),
    evidence=EvidenceClass.CONFIG,
    title="Alert rules pass promtool check rules",
    severity=Severity.MEDIUM,
    remediation="Fix the errors promtool reports (run `promtool check rules <file>` in CI before deploying rules).",
    reference="Prometheus promtool documentation",
)
def alert_rules_valid(ctx: AuditContext) -> Outcome:
    results = [promtool_check(ctx.params.path(path)) for path in ctx.params.prometheus.rules_files]
    if ctx.params.prometheus.url:
        loaded = load_alert_rules(ctx)
        if loaded:
            results.append(promtool_check_rules(loaded))
    if not results:
        return skipped("no rule files and no loaded rules to validate")
    rows = [result.row() for result in results]
    invalid = [row["rules"] for row in rows if not row["valid"]]
    if invalid:
        return failed(f"promtool rejects: {', '.join(invalid)}", results=rows)
    return passed(f"promtool accepts {len(rows)} rule set(s)", results=rows)


# --- dashboards and logs ---------------------------------------------------------------------------------------

DASHBOARD_NEEDS = {
    "request_rate": lambda e: REQUESTS in e or "http_requests_total" in e,
    "errors": lambda e: REQUESTS in e and ("outcome!=" in e or "outcome=~" in e or "internal_error" in e),
    "p50": lambda e: "histogram_quantile(0.5" in e.replace(" ", "") or "histogram_quantile(0.50" in e.replace(" ", ""),
    "p95": lambda e: "histogram_quantile(0.95" in e.replace(" ", ""),
    "p99": lambda e: "histogram_quantile(0.99" in e.replace(" ", ""),
    "empty_recs": lambda e: 'empty="true"' in e.replace(" ", ""),
    "cache": lambda e: "recsys_cache_requests_total" in e,
}


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel (nested rows included) with its title and PromQL expressions."""
    found = []
    stack = list(dashboard.get("panels") or [])
    for row in dashboard.get("rows") or []:  # pre-5.0 layout
        stack.extend(row.get("panels") or [])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels") or [])
        exprs = [t.get("expr", "") for t in panel.get("targets") or [] if isinstance(t, dict)]
        if exprs:
            found.append({"title": panel.get("title", ""), "exprs": exprs})
    return found


def caches_on(ctx: AuditContext) -> bool:
    """Whether the config/rules caches are on (upstream default: 5m, on); True when the config is not visible."""
    found = [_ttl_positive(ctx, name) for name in ("RECSYS_CONFIG_CACHE_TTL", "RECSYS_RULES_CACHE_TTL")]
    return any(found) or None in found


@SECTION.check(
    "obs.dashboard-panels",
    items=("5.rate-errors-latency", "5.empty-recs-rate", "5.cache-hit-miss"),
    evidence=EvidenceClass.CONFIG,
    title="The Grafana dashboard has panels for rate, errors, p50/p95/p99, empty recs and cache",
    severity=Severity.MEDIUM,
    remediation="Add the missing panels to the dashboard (the upstream one has no error, p50/p99 or cache panels) and "
    "name its JSON in params deployment.grafana_dashboard.",
    reference=f"{OPS_REF} §6 (grafana-dashboard.json)",
)
def dashboard_coverage(ctx: AuditContext) -> Outcome:
    name = ctx.params.deployment.grafana_dashboard
    if not name:
        return manual("no dashboard JSON in params (deployment.grafana_dashboard): attest that dashboards exist")
    path = ctx.params.path(name)
    try:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProbeError(f"dashboard {path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ProbeError(f"dashboard {path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    dashboard = dashboard.get("dashboard", dashboard)  # API export wraps it
    panels = dashboard_panels(dashboard)
    needs = dict(DASHBOARD_NEEDS)
    if not caches_on(ctx):
        needs.pop("cache")
    rows = []
    for need, matches in needs.items():
        titles = [p["title"] for p in panels if any(matches(expr) for expr in p["exprs"])]
        rows.append({"needs": need, "panels": ", ".join(titles) or "MISSING"})
    missing = [row["needs"] for row in rows if row["panels"] == "MISSING"]
    evidence = {"dashboard": str(path.name), "title": dashboard.get("title"), "panels": len(panels), "coverage": rows}
    # A signal the checklist names with no panel at all fails; a missing percentile beside another one warns.
    percentiles = [need for need in missing if need in {"p50", "p95", "p99"}]
    absent = [need for need in missing if need not in percentiles]
    if len(percentiles) == 3:
        absent, percentiles = [*absent, "latency"], []
    if absent:
        also = f"; none for {', '.join(percentiles)} either" if percentiles else ""
        return failed(f"dashboard has no panel for: {', '.join(absent)}{also}", **evidence)
    if missing:
        return warned(f"dashboard lacks panels for: {', '.join(missing)}", **evidence)
    return passed(f"dashboard covers all {len(rows)} signals", **evidence)


@SECTION.check(
    "obs.logs-no-secrets",
    items=("5.tracing-logging",),
    evidence=EvidenceClass.DATA,
    title="Service logs hold no bearer tokens, API keys, salts or DSN passwords",
    severity=Severity.HIGH,
    remediation="Stop logging the offending fields (Authorization / X-API-Key headers, env dumps, DSNs), rotate every "
    "secret found, and purge the affected log files.",
    reference=f"{HTTP_REF} §4 (secrets in env), §8 (audit log fields)",
)
def logs_no_secrets(ctx: AuditContext) -> Outcome:
    from recsys_audit.probes.logscan import scan_logs

    logs = ctx.params.logs
    service_logs = [ctx.params.path(p) for p in logs.service]
    if not service_logs:
        return manual("no service log files in params (logs.service): attest how logs are kept free of secrets")
    # the file audit log appears with the first admin write: absent is normal there, not for service logs
    scan = scan_logs(service_logs + [ctx.params.path(p) for p in logs.audit])
    missing_service = [path.name for path in service_logs if str(path) in scan.missing]
    evidence: dict[str, Any] = {
        "files": [Path(f).name for f in scan.files],
        "lines_scanned": scan.lines,
        "counts": scan.counts,
        "positions": [hit.row() for hit in scan.hits[:50]],
    }
    if scan.truncated:
        evidence["read_partially"] = [Path(f).name for f in scan.truncated]
    if scan.missing:
        evidence["not_present"] = [Path(f).name for f in scan.missing]
    if scan.total:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(scan.counts.items()))
        return failed(f"{scan.total} secret(s) in logs: {kinds}", **evidence)
    if missing_service:
        return warned(f"service log(s) named in params do not exist: {', '.join(missing_service)}", **evidence)
    return passed(f"no secrets in {scan.lines} lines of {len(scan.files)} file(s)", **evidence)


# --- runbooks --------------------------------------------------------------------------------------------------


def _runbook(ctx: AuditContext, check_id: str, name: str) -> Outcome:
    summary = f"attest that the '{name}' runbook exists and was exercised (last drill date and evidence)"
    return awaiting_attestation(ctx, check_id, summary, runbook=name)


def _runbook_check(check_id: str, name: str, doc: str, items: tuple[str, ...], artifact_only: bool = False) -> None:
    @SECTION.check(
        check_id,
        items=items,
        evidence=EvidenceClass.ATTESTED,
        cannot_fail="manual by design: that a runbook exists and was drilled is shown only by an attestation (its "
        "read-only steps run in runbook.diagnostics)",
        title=f"Runbook '{name}' exists and was exercised recently",
        severity=Severity.MEDIUM,
        remediation=f"Write or update the runbook ({doc}), run a drill, and add an attestation for {check_id} "
        "to params (by, date, evidence_url).",
        reference=f"{OPS_REF} §8 (runbooks)",
    )
    def check(ctx: AuditContext) -> Outcome:
        if artifact_only and not artifact_mode(ctx):
            return skipped("artifact mode is off: no manifest to go stale")
        return _runbook(ctx, check_id, name)


_runbook_check(
    "runbook.service-not-ready", "Service not ready", "service-not-ready.md", ("5.runbook-service-not-ready",)
)
_runbook_check("runbook.empty-recs", "Empty recs", "empty-recommendations.md", ("5.runbook-empty-recs",))
_runbook_check(
    "runbook.rollback-config-rules",
    "Roll back config/rules",
    "rollback-config-rules.md",
    ("5.runbook-rollback-config-rules", "7.config-rules-procedure"),
)
_runbook_check(
    "runbook.stale-manifest",
    "Stale manifest",
    "stale-artifact-manifest.md",
    ("5.runbooks", "3.freshness-slo-alerting"),
    artifact_only=True,
)


@SECTION.check(
    "runbook.diagnostics",
    items=("5.runbook-empty-recs",),
    evidence=EvidenceClass.LIVE,
    title="The empty-recommendations runbook's read-only steps work: validate answers, live answers carry no data "
    "warnings",
    severity=Severity.MEDIUM,
    remediation="Follow the empty-recommendations runbook for the warning each answer carries (next steps in the "
    "evidence); a failing /v1/recommend/validate breaks the runbook's first step.",
    reference=f"{OPS_REF} §8 (runbooks as automatable checks), {HTTP_REF} §2 (validate, warning codes)",
)
def runbook_diagnostics(ctx: AuditContext) -> Outcome:
    statuses: list[Status] = []
    requests = []
    for tenant, surface in tenant_surfaces(ctx):
        role = identity_for(ctx, tenant)
        if role is None:
            requests.append({"tenant": tenant, "surface": surface, "validate": "no credential"})
            statuses.append(Status.WARN)
            continue
        headers = {ctx.params.auth.tenant_header: tenant}
        body = recommend_body(surface)
        validate = accepted(ctx.service.post("/v1/recommend/validate", body, role=role, headers=headers))
        normalized = (validate.json_or_none() or {}).get("normalized_request") if validate.status == 200 else None
        recommend = accepted(ctx.service.recommend(tenant, surface, role=role))
        answer = recommend.json_or_none() if recommend.status == 200 else None
        answer = answer if isinstance(answer, dict) else {}
        codes = sorted({w.get("code", "") for w in answer.get("warnings") or [] if isinstance(w, dict)})
        next_steps = [RUNBOOK_WARNINGS[c] for c in codes if c in RUNBOOK_WARNINGS]
        if not isinstance(normalized, dict):
            statuses.append(Status.FAIL)
        elif recommend.status != 200 or next_steps:
            statuses.append(Status.WARN)  # recommend's own status is judged by serving.live-recommend
        else:
            statuses.append(Status.PASS)
        meta = answer.get("meta") or {}
        requests.append(
            {
                "tenant": tenant,
                "surface": surface,
                "validate": validate.status,
                "normalized": isinstance(normalized, dict),
                "recommend": recommend.status,
                "items": len(answer.get("items") or []),
                "warnings": ", ".join(codes) or "-",
                "request_id": meta.get("request_id") or recommend.headers.get("x-request-id"),
                "next_step": "; ".join(next_steps) or "-",
            }
        )
    status = worst(*statuses)
    evidence = {"diagnostics": requests}
    if status == Status.FAIL:
        bad = [f"{r['tenant']}/{r['surface']} -> {r['validate']}" for r in requests if r.get("normalized") is False]
        return failed(f"/v1/recommend/validate gives no normalized request for {', '.join(bad)}", **evidence)
    if status == Status.WARN:
        return warned("data warnings or no live answer to diagnose: follow the next step in the evidence", **evidence)
    return passed(f"validate and recommend diagnose {len(requests)} tenant/surface pair(s) cleanly", **evidence)
