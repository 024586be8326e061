"""Section 6 — Performance and capacity."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any
from urllib.parse import urlsplit

from recsys_audit.catalog import Section
from recsys_audit.checklist import EvidenceClass
from recsys_audit.checks.common import credential_field
from recsys_audit.checks.config_rules import register_config_rules
from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, Severity, failed, passed, skipped, warned
from recsys_audit.probes import ProbeError
from recsys_audit.probes.config import parse_duration
from recsys_audit.probes.loadtest import LoadTestReport, LoadTestRun, read_report, recommend_sender, run_load_test

SECTION = Section(6, "Performance and capacity", notebook="06_performance")
register_config_rules(SECTION)  # backpressure limits, cache TTLs

HTTP_REF = "recsys-http-and-config"
OPS_REF = "recsys-data-and-ops"
MIN_REQUESTS_FOR_P99 = 1000  # below this the top percentiles are a handful of samples (20 requests: p95 = p99 = max)
MIN_CATALOG_SHARE = 0.5  # a load test on less than half the real catalog measures caches, not the service
CATALOG_COUNT = (10_000, 1_000_000)  # item_tags rows counted at least / at most (an index range, bounded)
FUTURE_SLACK_DAYS = 0.01  # clocks differ a little; a report dated further ahead is not evidence of a run
RECOMMEND_ENDPOINTS = ("/v1/recommend", "/v1/similar")
LIVE_REPORT = "load-test/live-report.json"


def go_duration_s(text: str) -> float:
    """A Go ``time.ParseDuration`` string (``5m``, ``200ms``, ``1h30m``, ``-1s``, ``0``) in seconds."""
    seconds = parse_duration(text)
    if seconds is None:
        raise ValueError(f"not a Go duration: {text!r}")
    return seconds


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# --- the recorded load test ------------------------------------------------------------------------------------


def load_report(ctx: AuditContext) -> LoadTestReport:
    """The load-test report the params name (read once per kernel)."""

    def read() -> LoadTestReport:
        name = ctx.params.load_test.report
        if not name:
            raise ProbeError("no load-test report in params (load_test.report)")
        return read_report(ctx.params.path(name))

    return ctx.memo("s6:load-report", read)


def _report_summary(report: LoadTestReport) -> dict[str, Any]:
    return {
        "generated_at": report.generated_at,
        "url": report.url,
        "requests": report.requests,
        "concurrency": report.concurrency,
        "rps": report.rps,
        "latency_ms": report.latency_ms,
        "status_codes": report.status_codes,
    }


@SECTION.check(
    "perf.load-report-present",
    items=("6.load-test",),
    evidence=EvidenceClass.DATA,
    title="A recent load-test report is recorded",
    severity=Severity.HIGH,
    remediation="Run the loadtest tool (scripts/loadtest.sh with REPORT_JSON) against production-like data and name "
    "the JSON report in params load_test.report; repeat within policies.load_test_max_age_days.",
    reference=f"{OPS_REF} §7 (load testing)",
)
def load_report_present(ctx: AuditContext) -> Outcome:
    if not ctx.params.load_test.report:
        return failed("no load-test report recorded (params load_test.report is empty)")
    report = load_report(ctx)
    age_days = (dt.datetime.now(dt.UTC) - report.generated).total_seconds() / 86400
    limit = ctx.params.policies.load_test_max_age_days
    evidence = {**_report_summary(report), "age_days": round(age_days, 1), "max_age_days": limit}
    if age_days < -FUTURE_SLACK_DAYS:
        return warned(
            f"the load-test report is dated {report.generated_at}, {-age_days:.1f} days in the future: "
            "not evidence of a run (clock skew or an edited report)",
            **evidence,
        )
    if age_days > limit:
        return warned(f"the load-test report is {age_days:.0f} days old (policy {limit} days)", **evidence)
    return passed(f"load-test report from {report.generated_at} ({max(age_days, 0):.1f} days old)", **evidence)


@SECTION.check(
    "perf.load-report-sample-size",
    items=("6.load-test",),
    evidence=EvidenceClass.DATA,
    title=f"The load test sent enough requests for p99 (at least {MIN_REQUESTS_FOR_P99})",
    severity=Severity.MEDIUM,
    remediation=f"Re-run the load test with REQUESTS>={MIN_REQUESTS_FOR_P99} (and a user cardinality that avoids "
    "the per-user tenant limiter).",
    reference=f"{OPS_REF} §7 (20 samples: p95 = p99 = max)",
)
def load_report_sample_size(ctx: AuditContext) -> Outcome:
    if not ctx.params.load_test.report:
        return skipped("no load-test report (see perf.load-report-present)")
    report = load_report(ctx)
    answered = sum(report.status_codes.values()) or report.requests
    evidence = {"requests": report.requests, "answered": answered, "latency_ms": report.latency_ms}
    if answered < MIN_REQUESTS_FOR_P99:
        top_k = max(1, int(answered * 0.01))
        return failed(
            f"only {answered} answered requests: p99 rests on {top_k} sample(s)"
            + (" and equals p95" if report.latency_ms.get("p95") == report.latency_ms.get("p99") else ""),
            **evidence,
        )
    return passed(f"{answered} answered requests", **evidence)


def _origin(url: str) -> str:
    """scheme://host:port of a URL (the text itself when it is not one)."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return url
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


CATALOG_SQL = (
    "SELECT count(*) AS items FROM (SELECT 1 FROM item_tags WHERE tenant_id = "
    "(SELECT id FROM tenants WHERE external_id = %s) AND namespace = %s LIMIT %s) catalog"
)


def target_catalog(ctx: AuditContext, tenant: str, surface: str, up_to: int) -> int:
    """Items of a tenant's surface in ``item_tags``, counted up to ``up_to`` (index range, never the whole table)."""
    return int(ctx.db.scalar(CATALOG_SQL, (tenant, surface, up_to)) or 0)


@SECTION.check(
    "perf.load-report-target",
    items=("6.load-test",),
    evidence=EvidenceClass.DATA,
    title="The load test measured the audited service, a declared tenant and surface, and a production-sized catalog",
    severity=Severity.MEDIUM,
    remediation="Run the load test against this deployment (or a copy with the same data), with TENANT_ID and "
    "SURFACE of an audited tenant and CATALOG_SIZE recorded; a catalog much smaller than the real one measures "
    "caches, not the service.",
    reference=f"{OPS_REF} §7 (loadtest env and report fields; upstream benchmark: catalog 8)",
)
def load_report_target(ctx: AuditContext) -> Outcome:
    if not ctx.params.load_test.report:
        return skipped("no load-test report (see perf.load-report-present)")
    report = load_report(ctx)
    base_url = ctx.params.target.base_url
    surfaces = {tenant.id: tenant.surfaces for tenant in ctx.params.tenants}
    tenant, surface, url = (str(value or "") for value in (report.tenant, report.surface, report.url))
    catalog = report.extra.get("catalog_size")
    compared = [
        {"what": "service", "load test": url, "audit": base_url},
        {"what": "endpoint", "load test": report.endpoint, "audit": " or ".join(RECOMMEND_ENDPOINTS)},
        {
            "what": "tenant/surface",
            "load test": f"{tenant or '?'}/{surface or '?'}",
            "audit": ", ".join(f"{t}/{s}" for t, names in surfaces.items() for s in names),
        },
    ]
    fails, warns = [], []
    if not tenant or not surface:
        warns.append("the report names no tenant or surface")
    elif surface not in surfaces.get(tenant, []):
        fails.append(f"it measured {tenant}/{surface}, which this audit does not cover")
    if _origin(url) != _origin(base_url):
        warns.append(f"it measured {url or 'no URL'}, not the audited {base_url}")
    if report.endpoint not in RECOMMEND_ENDPOINTS:
        warns.append(f"it measured {report.endpoint}, not a recommendation endpoint")
    target: int | str = "not compared"
    if not isinstance(catalog, int) or isinstance(catalog, bool) or catalog < 0:
        warns.append("the report records no catalog_size: production-likeness unknown")
    elif tenant and surface:
        least, most = CATALOG_COUNT
        up_to = min(max(int(catalog / MIN_CATALOG_SHARE) + 1, least), most)
        try:
            items = target_catalog(ctx, tenant, surface, up_to)
            target = items if items < up_to else f"at least {up_to}"
            if items == 0:
                warns.append(f"no item_tags rows for {tenant}/{surface}: the catalog is not visible")
            elif catalog < items * MIN_CATALOG_SHARE:  # items is exact, or a lower bound: the verdict holds
                fails.append(f"it ran on a catalog of {catalog} items; the target's has {target}")
            elif items == up_to == most:
                warns.append(f"the target's catalog has at least {most} items: not compared further")
        except ProbeError as exc:
            warns.append(f"the target's catalog is not visible ({exc})")
    compared.append({"what": "catalog items (item_tags)", "load test": catalog, "audit": target})
    evidence = {"compared": compared, "catalog_sql": CATALOG_SQL, "min_catalog_share": MIN_CATALOG_SHARE}
    if fails:
        return failed("the load test is not about this target: " + "; ".join(fails + warns), **evidence)
    if warns:
        return warned("; ".join(warns), **evidence)
    return passed(f"it measured {tenant}/{surface} on {url} with a catalog of {catalog} items", **evidence)


@SECTION.check(
    "perf.load-report-errors",
    items=("6.load-test",),
    evidence=EvidenceClass.DATA,
    title="Errors, 429s and 503s in the load test stay within the error budget",
    severity=Severity.HIGH,
    remediation="Find what rejected the load: 429 = IP/tenant rate limiter (TRUSTED_PROXIES, TENANT_RATE_LIMIT_*), "
    "503 = backpressure (RECSYS_BACKPRESSURE_*), transport errors = timeouts or capacity.",
    reference=f"{HTTP_REF} §6 (limits, backpressure)",
)
def load_report_errors(ctx: AuditContext) -> Outcome:
    if not ctx.params.load_test.report:
        return skipped("no load-test report (see perf.load-report-present)")
    report = load_report(ctx)
    return _judge_errors(report, ctx.params.policies.error_ratio_max)


def _judge_errors(report: LoadTestReport, budget: float) -> Outcome:
    total = report.requests or 1
    transport = report.errors / total
    limited = report.status_share(429)
    overloaded = report.status_share(503)
    server = report.status_share(500, 502, 504)
    refused = report.status_share(*(code for code in range(400, 500) if code != 429))
    shares = {
        "transport_errors": round(transport, 4),
        "http_429": round(limited, 4),
        "http_503": round(overloaded, 4),
        "http_5xx_other": round(server, 4),
        "http_4xx_other": round(refused, 4),
    }
    evidence = {"budget": budget, **shares, "status_codes": report.status_codes}
    over = [f"{name} {share:.2%}" for name, share in shares.items() if share > budget]
    if over:
        return failed(f"over the {budget:.2%} budget: {', '.join(over)}", **evidence)
    return passed(f"all error shares within the {budget:.2%} budget", **evidence)


@SECTION.check(
    "perf.load-report-latency",
    items=("6.load-test",),
    evidence=EvidenceClass.DATA,
    title="Load-test p95 latency is within the SLO",
    severity=Severity.HIGH,
    remediation="Profile the slow path (signals queries, artifact fetches), size caches and replicas, and re-run "
    "the load test until p95 <= policies.latency_p95_ms.",
    reference=f"{OPS_REF} §7 (report format)",
)
def load_report_latency(ctx: AuditContext) -> Outcome:
    if not ctx.params.load_test.report:
        return skipped("no load-test report (see perf.load-report-present)")
    report = load_report(ctx)
    slo = ctx.params.policies.latency_p95_ms
    p95 = report.latency_ms["p95"]
    evidence = {"latency_ms": report.latency_ms, "slo_p95_ms": slo}
    if p95 > slo:
        return failed(f"p95 {p95:g} ms exceeds the SLO of {slo:g} ms", **evidence)
    return passed(f"p95 {p95:g} ms within the SLO of {slo:g} ms", **evidence)


# --- the live load test ----------------------------------------------------------------------------------------


def accepted_run(run: LoadTestRun) -> LoadTestRun:
    """``run``, unless the audit's own credential was refused: 401s measure the audit, not the service."""
    refused = run.status_codes.get(401, 0)
    if refused:
        raise ProbeError(
            f"the audit's viewer credential was refused on {refused} of {run.sent} load-test requests (401): renew "
            f"or correct {credential_field('viewer')} in params"
        )
    return run


def live_load_test(ctx: AuditContext) -> LoadTestRun:
    """The bounded live load test, run at most once per kernel (only when params allow it)."""

    def run() -> LoadTestRun:
        settings = ctx.params.load_test
        tenant = ctx.params.tenants[0]
        sender = recommend_sender(ctx.service, tenant.id, tenant.surfaces[0])
        try:
            return run_load_test(sender, settings.requests, settings.concurrency, settings.max_seconds)
        finally:
            sender.close()

    return ctx.memo("s6:live-load-test", run)


@SECTION.check(
    "perf.live-load-test",
    items=("6.load-test",),
    evidence=EvidenceClass.LIVE,
    title="Bounded live load test: p95 within the SLO, errors within budget",
    severity=Severity.MEDIUM,
    remediation="See perf.load-report-errors and perf.load-report-latency; the live report is in the run directory.",
    reference=f"{OPS_REF} §7 (loadtest report format)",
)
def live_load_test_check(ctx: AuditContext) -> Outcome:
    settings = ctx.params.load_test
    if not settings.allowed:
        return skipped("live load testing is not allowed by params (load_test.allowed: false)")
    run = accepted_run(live_load_test(ctx))
    tenant = ctx.params.tenants[0]
    report = run.report(ctx.params.target.base_url, "/v1/recommend", tenant.id, tenant.surfaces[0], 1000)
    path = ctx.run_dir / LIVE_REPORT
    report.write(path)
    caps = {
        "max_requests": settings.requests,
        "sent": run.sent,
        "max_seconds": settings.max_seconds,
        "elapsed_s": round(run.elapsed_s, 3),
        "concurrency": settings.concurrency,
        "peak_in_flight": run.peak_in_flight,
        "stopped_by_time": run.stopped_by_time,
    }
    slo = ctx.params.policies.latency_p95_ms
    evidence = {**_report_summary(report), "slo_p95_ms": slo, "caps": caps, "report_file": LIVE_REPORT}
    errors = _judge_errors(report, ctx.params.policies.error_ratio_max)
    if errors.status.value == "fail":
        return failed(f"live run: {errors.summary}", **evidence)
    if report.latency_ms["p95"] > slo:
        return failed(f"live run: p95 {report.latency_ms['p95']:g} ms exceeds the SLO of {slo:g} ms", **evidence)
    return passed(
        f"live run: {run.sent} requests in {run.elapsed_s:.1f} s, p95 {report.latency_ms['p95']:g} ms, "
        f"{report.rps:g} rps",
        **evidence,
    )


@SECTION.check(
    "perf.backpressure-provoked",
    items=("6.backpressure-limits",),
    evidence=EvidenceClass.LIVE,
    title="Under overload the service sheds load with 503 RECSYS_OVERLOADED and Retry-After",
    severity=Severity.MEDIUM,
    remediation="Turn backpressure on (RECSYS_BACKPRESSURE_MAX_INFLIGHT/MAX_QUEUE > 0) with "
    "RECSYS_BACKPRESSURE_RETRY_AFTER > 0 so clients back off.",
    reference=f"{HTTP_REF} §6 (backpressure)",
)
def backpressure_provoked(ctx: AuditContext) -> Outcome:
    settings = ctx.params.load_test
    if not (settings.allowed and settings.provoke_backpressure):
        return skipped("not requested (load_test.allowed and load_test.provoke_backpressure)")
    if ctx.params.target.production:
        return skipped("never provoked on a production target")
    inflight = _int(ctx.config.value("RECSYS_BACKPRESSURE_MAX_INFLIGHT")) or 0
    queue = _int(ctx.config.value("RECSYS_BACKPRESSURE_MAX_QUEUE")) or 0
    concurrency = min(256, max(settings.concurrency, 4 * (inflight + queue) + 8))
    tenant = ctx.params.tenants[0]
    sender = recommend_sender(ctx.service, tenant.id, tenant.surfaces[0])
    try:
        run = accepted_run(run_load_test(sender, settings.requests, concurrency, settings.max_seconds))
    finally:
        sender.close()
    replies = [{"status": r.status, "code": r.code, "retry_after": r.retry_after} for r in run.overload_replies[:5]]
    evidence = {
        "max_inflight": inflight,
        "max_queue": queue,
        "concurrency": concurrency,
        "sent": run.sent,
        "status_codes": {str(k): v for k, v in sorted(run.status_codes.items())},
        "overload_replies": replies,
    }
    if not run.overload_replies:
        return warned(
            f"no 503 at concurrency {concurrency}: backpressure not provoked (off, or capacity too high)", **evidence
        )
    wrong = [r for r in run.overload_replies if r.code != "RECSYS_OVERLOADED" or not r.retry_after]
    if wrong:
        return failed(f"{len(wrong)} 503(s) without RECSYS_OVERLOADED or Retry-After", **evidence)
    return passed(f"{run.status_codes[503]} request(s) shed with 503 RECSYS_OVERLOADED and Retry-After", **evidence)


# --- configuration ---------------------------------------------------------------------------------------------


@SECTION.check(
    "perf.tenant-rate-limit",
    items=("6.caching-backpressure",),
    evidence=EvidenceClass.CONFIG,
    title="The tenant rate limit is on and sized for the tested load",
    severity=Severity.MEDIUM,
    remediation="Keep TENANT_RATE_LIMIT_ENABLED=true and size TENANT_RATE_LIMIT_CAPACITY/REFILL_RATE (per tenant and "
    "user, per replica) so the tested load passes without 429s.",
    reference=f"{HTTP_REF} §6 (tenant limiter)",
)
def tenant_rate_limit(ctx: AuditContext) -> Outcome:
    names = ["TENANT_RATE_LIMIT_ENABLED", "TENANT_RATE_LIMIT_CAPACITY", "TENANT_RATE_LIMIT_REFILL_RATE"]
    evidence: dict[str, Any] = {"config": ctx.config.rows(names)}
    enabled = ctx.config.flag("TENANT_RATE_LIMIT_ENABLED")
    if enabled is None:
        return warned("TENANT_RATE_LIMIT_ENABLED is not visible", **evidence)
    if not enabled:
        return failed("the tenant rate limiter is off: one tenant can starve the others", **evidence)
    if not ctx.params.load_test.report:
        return passed("tenant limiter on (no load-test report to size it against)", **evidence)
    report = load_report(ctx)
    limited = report.status_share(429)
    evidence.update({"load_test_rps": report.rps, "load_test_429_share": round(limited, 4)})
    if limited > ctx.params.policies.error_ratio_max:
        return warned(f"the tested load got {limited:.2%} 429s: limits too small for it (or one shared IP)", **evidence)
    return passed(f"tenant limiter on; tested load at {report.rps:g} rps passed ({limited:.2%} 429)", **evidence)


def _proxy_entry_problem(entry: str) -> str | None:
    try:
        if "/" in entry:
            ipaddress.ip_network(entry, strict=False)
        else:
            ipaddress.ip_address(entry)
    except ValueError:
        return f"'{entry}' is not an IP or CIDR"
    return None


@SECTION.check(
    "perf.trusted-proxies",
    items=("6.caching-backpressure",),
    evidence=EvidenceClass.CONFIG,
    title="TRUSTED_PROXIES is set and valid when the service sits behind a proxy",
    severity=Severity.MEDIUM,
    remediation="Set TRUSTED_PROXIES to the load balancer's IPs/CIDRs: without it every client shares the LB's "
    "rate-limit bucket; a single malformed entry silently drops the whole list.",
    reference=f"{HTTP_REF} §4 (TRUSTED_PROXIES), §6 (global IP limiter)",
)
def trusted_proxies(ctx: AuditContext) -> Outcome:
    setting = ctx.config.get("TRUSTED_PROXIES")
    evidence = {"config": [setting.row()], "behind_proxy": ctx.params.target.behind_proxy}
    value = setting.value
    if value is None:
        return warned("TRUSTED_PROXIES is not visible", **evidence)
    entries = [e.strip() for e in value.split(",") if e.strip()]
    problems = [p for p in (_proxy_entry_problem(e) for e in entries) if p]
    if problems:
        return failed("the whole list is dropped at startup: " + "; ".join(problems), **evidence)
    if not ctx.params.target.behind_proxy:
        return skipped("params say the service is not behind a proxy", **evidence)
    if not entries:
        return failed(
            "behind a proxy but TRUSTED_PROXIES is empty: all clients share one rate-limit bucket", **evidence
        )
    return passed(f"{len(entries)} trusted proxy entr{'y' if len(entries) == 1 else 'ies'}", **evidence)


@SECTION.check(
    "perf.pprof-off",
    items=("6.profiling-endpoints",),
    evidence=EvidenceClass.LIVE,
    title="pprof is off and /debug/pprof/ is not reachable",
    severity=Severity.HIGH,
    remediation="Set PPROF_ENABLED=false; profile through a port-forward to a dedicated replica when needed.",
    reference=f"{HTTP_REF} §1 (/debug/pprof/), §4 (PPROF_ENABLED)",
)
def pprof_off(ctx: AuditContext) -> Outcome:
    response = ctx.service.get("/debug/pprof/")
    evidence: dict[str, Any] = {"probe": [response.evidence()]}
    try:
        evidence["config"] = ctx.config.rows(["PPROF_ENABLED"])
        enabled = ctx.config.flag("PPROF_ENABLED")
    except ProbeError as exc:
        evidence["config"] = str(exc)
        enabled = None
    if response.status == 200:
        return failed("/debug/pprof/ answers 200 from the auditor's network", **evidence)
    if enabled:
        return failed(f"PPROF_ENABLED is on (endpoint answered {response.status} from here)", **evidence)
    if enabled is None:
        return warned(f"/debug/pprof/ not reachable (HTTP {response.status}); PPROF_ENABLED not visible", **evidence)
    return passed(f"PPROF_ENABLED off; /debug/pprof/ answers {response.status}", **evidence)
