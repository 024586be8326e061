"""Section 0 — Serving mode: the declared mode per tenant, what config, metrics and data say, and live answers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from recsys_audit.catalog import Section
from recsys_audit.checklist import EvidenceClass
from recsys_audit.checks.common import identity_for, tenant_surfaces
from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, Severity, Status, failed, passed, skipped, warned, worst
from recsys_audit.probes import ProbeError
from recsys_audit.probes.config import parse_duration
from recsys_audit.probes.service import Role

SECTION = Section(0, "Serving mode", notebook="00_serving_mode")

MODE_ITEM = "Pick a serving mode per tenant/environment (DB-only or artifact/manifest) and document the choice"
REFERENCE = "recsys-data-and-ops §3 (artifact/manifest mode), §1.7 (signal tables); recsys-http-and-config §4"
SIGNAL_TABLES = ("item_popularity_daily", "item_covisit_daily")
# A manifest cache longer than this delays a manifest rollback by as much.
MAX_ARTIFACT_TTL_S = 15 * 60
CALLER_ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")


def caller_role(ctx: AuditContext) -> Role:
    """The least-privileged identity the params give for serving calls."""
    for role in CALLER_ROLES:
        if ctx.service.has_role(role):
            return role
    raise ProbeError("no serving credential in params (auth.credentials.viewer/operator/admin)")


def recommend_sweep(ctx: AuditContext) -> list[dict[str, Any]]:
    """One live recommend per declared tenant/surface (shared by the checks of this section)."""

    def sweep() -> list[dict[str, Any]]:
        role = caller_role(ctx)
        rows = []
        for tenant, surface in tenant_surfaces(ctx):
            # each tenant is called with its own identity where params give one, else the serving credential
            response = ctx.service.recommend(tenant, surface, role=identity_for(ctx, tenant) or role)
            body = response.json() if response.status == 200 else None  # a 200 that is not JSON: error
            items = body.get("items") if isinstance(body, dict) else None
            warnings = body.get("warnings") if isinstance(body, dict) else None
            meta = body.get("meta") if isinstance(body, dict) else None
            rows.append(
                {
                    "tenant": tenant,
                    "surface": surface,
                    **response.evidence(),
                    "items": len(items) if isinstance(items, list) else None,
                    "warnings": sorted({w.get("code") for w in warnings or [] if isinstance(w, dict)}),
                    "algo_version": meta.get("algo_version") if isinstance(meta, dict) else None,
                }
            )
        return rows

    return ctx.memo("s0:recommend-sweep", sweep)


def declared_modes(ctx: AuditContext) -> set[str]:
    return {tenant.serving_mode for tenant in ctx.params.tenants if tenant.serving_mode}


@SECTION.check(
    "serving.mode-declared",
    items=("0.serving-mode-per-tenant", "0.read-data-modes", "0.mode-documented"),
    evidence=EvidenceClass.DECLARED,
    title="Every tenant has a declared serving mode and a link to where it is documented",
    severity=Severity.MEDIUM,
    remediation="In params, set tenants[].serving_mode (db_only or artifact) and tenants[].mode_documented_at (the "
    "runbook or values file that records the choice).",
    reference="production-readiness checklist §0",
)
def mode_declared(ctx: AuditContext) -> Outcome:
    rows = [
        {"tenant": t.id, "serving_mode": t.serving_mode, "documented_at": t.mode_documented_at}
        for t in ctx.params.tenants
    ]
    undeclared = [row["tenant"] for row in rows if not row["serving_mode"]]
    undocumented = [row["tenant"] for row in rows if not row["documented_at"]]
    if undeclared or undocumented:
        parts = []
        if undeclared:
            parts.append("no serving mode for " + ", ".join(undeclared))
        if undocumented:
            parts.append("no documentation link for " + ", ".join(undocumented))
        return failed("; ".join(parts), tenants=rows)
    if len(declared_modes(ctx)) > 1:
        return failed(
            "tenants declare different modes, but RECSYS_ARTIFACT_MODE_ENABLED switches the whole service",
            tenants=rows,
        )
    return passed(f"{len(rows)} tenant(s) declare {', '.join(sorted(declared_modes(ctx)))}", tenants=rows)


@SECTION.check(
    "serving.mode-observed",
    items=("0.serving-mode-per-tenant",),
    evidence=EvidenceClass.LIVE,
    title="Config, metrics and data agree with the declared serving mode",
    severity=Severity.HIGH,
    remediation="Make the deployment match the declaration: RECSYS_ARTIFACT_MODE_ENABLED=true with a manifest "
    "template for artifact mode, false for DB-only — or correct the declaration in params.",
    reference=REFERENCE,
)
def mode_observed(ctx: AuditContext) -> Outcome:
    declared = declared_modes(ctx)
    if len(declared) != 1:
        return skipped("no single declared serving mode to compare with (see serving.mode-declared)")
    expected = declared.pop()
    rows: list[dict[str, Any]] = []
    statuses: list[Status] = []

    enabled = ctx.config.flag("RECSYS_ARTIFACT_MODE_ENABLED")
    setting = ctx.config.get("RECSYS_ARTIFACT_MODE_ENABLED")
    config_mode = None if enabled is None else ("artifact" if enabled else "db_only")
    rows.append(
        {
            "source": f"config ({setting.source})",
            "observation": f"RECSYS_ARTIFACT_MODE_ENABLED={setting.value}",
            "mode": config_mode,
        }
    )
    statuses.append(Status.WARN if config_mode is None else Status.PASS if config_mode == expected else Status.FAIL)

    try:
        recommend_sweep(ctx)  # a manifest gauge is set only once a request has loaded a manifest
        metrics = ctx.metrics
        artifacts = metrics.total("recsys_artifact_manifest_artifacts")
        age = metrics.total("recsys_artifact_manifest_age_seconds")
        present = metrics.has("recsys_artifact_manifest_artifacts")
        metric_mode = None if not present else ("artifact" if artifacts > 0 or age > 0 else "db_only")
        rows.append(
            {
                "source": "metrics (/metrics)",
                "observation": f"recsys_artifact_manifest_artifacts={artifacts:g}, age_seconds={age:g}",
                "mode": metric_mode,
            }
        )
        if metric_mode is None:
            statuses.append(Status.WARN)
        elif metric_mode != expected:
            statuses.append(Status.FAIL if expected == "db_only" else Status.WARN)
        else:
            statuses.append(Status.PASS)
    except ProbeError as exc:
        rows.append({"source": "metrics (/metrics)", "observation": str(exc), "mode": None})
        statuses.append(Status.WARN)

    status = worst(*statuses)
    evidence = {"declared": expected, "observations": rows}
    if status == Status.PASS:
        return passed(f"config and metrics agree: {expected}", **evidence)
    contradicting = [row["source"] for row, s in zip(rows, statuses, strict=True) if s == Status.FAIL]
    if status == Status.FAIL:
        return failed(f"declared {expected}, but {' and '.join(contradicting)} say otherwise", **evidence)
    return warned(f"declared {expected}; not every source could confirm it", **evidence)


@SECTION.check(
    "serving.artifact-config",
    items=("0.artifact-mode",),
    evidence=EvidenceClass.CONFIG,
    title="Artifact mode: manifest template set, S3 over TLS, cache TTLs sane",
    severity=Severity.HIGH,
    remediation="Set RECSYS_ARTIFACT_MANIFEST_TEMPLATE with {tenant} and {surface} (and RECSYS_ARTIFACT_FILE_ROOT for "
    "file templates), keep RECSYS_ARTIFACT_S3_USE_SSL=true with an https endpoint, and keep "
    "RECSYS_ARTIFACT_MANIFEST_TTL / _CACHE_TTL between 1s and 15m.",
    reference="recsys-data-and-ops §3.2; recsys-http-and-config §4",
)
def artifact_config(ctx: AuditContext) -> Outcome:
    if "artifact" not in declared_modes(ctx) and ctx.config.flag("RECSYS_ARTIFACT_MODE_ENABLED") is not True:
        return skipped("artifact mode is neither declared nor enabled")
    config = ctx.config
    names = [
        "RECSYS_ARTIFACT_MODE_ENABLED",
        "RECSYS_ARTIFACT_MANIFEST_TEMPLATE",
        "RECSYS_ARTIFACT_FILE_ROOT",
        "RECSYS_ARTIFACT_S3_ENDPOINT",
        "RECSYS_ARTIFACT_S3_USE_SSL",
        "RECSYS_ARTIFACT_MANIFEST_TTL",
        "RECSYS_ARTIFACT_CACHE_TTL",
    ]
    problems: list[tuple[Status, str]] = []
    if config.flag("RECSYS_ARTIFACT_MODE_ENABLED") is False:
        problems.append((Status.FAIL, "artifact mode is declared but RECSYS_ARTIFACT_MODE_ENABLED is off"))
    template = config.get("RECSYS_ARTIFACT_MANIFEST_TEMPLATE")
    if template.state == "set":
        text = template.value or ""
        if not text:
            problems.append((Status.FAIL, "manifest template is empty (startup aborts)"))
        elif "{tenant}" not in text or "{surface}" not in text:
            problems.append((Status.FAIL, "manifest template lacks {tenant} or {surface}: tenants share one manifest"))
        elif not text.startswith("s3://") and not config.value("RECSYS_ARTIFACT_FILE_ROOT"):
            problems.append((Status.FAIL, "file manifest template without RECSYS_ARTIFACT_FILE_ROOT (startup aborts)"))
    elif template.state == "default":
        problems.append((Status.FAIL, "RECSYS_ARTIFACT_MANIFEST_TEMPLATE is not set"))
    else:
        problems.append((Status.WARN, "manifest template not visible in the config sources"))

    endpoint = config.value("RECSYS_ARTIFACT_S3_ENDPOINT") or ""
    if endpoint or (template.value or "").startswith("s3://"):
        if config.flag("RECSYS_ARTIFACT_S3_USE_SSL") is False:
            problems.append((Status.FAIL, "RECSYS_ARTIFACT_S3_USE_SSL=false: artifacts travel in clear text"))
        if endpoint.lower().startswith("http://"):
            problems.append((Status.FAIL, "S3 endpoint is plain http://"))

    for name in ("RECSYS_ARTIFACT_MANIFEST_TTL", "RECSYS_ARTIFACT_CACHE_TTL"):
        raw = config.value(name)
        seconds = parse_duration(raw)
        if raw is None:
            problems.append((Status.WARN, f"{name} not visible"))
        elif seconds is None:
            problems.append((Status.FAIL, f"{name}={raw!r} is not a duration (startup aborts)"))
        elif seconds <= 0:
            problems.append((Status.FAIL, f"{name}={raw} disables the cache: every request refetches"))
        elif seconds > MAX_ARTIFACT_TTL_S:
            problems.append((Status.WARN, f"{name}={raw} delays a manifest rollback by as much"))

    evidence = {"config": config.rows(names), "problems": [{"status": str(s), "problem": p} for s, p in problems]}
    if not problems:
        return passed("template set, S3 TLS on, TTLs within 1s–15m", config=evidence["config"])
    status = worst(*(s for s, _ in problems))
    summary = "; ".join(p for _, p in problems)
    return failed(summary, **evidence) if status == Status.FAIL else warned(summary, **evidence)


@SECTION.check(
    "serving.db-signals-fresh",
    items=("0.db-only-mode",),
    evidence=EvidenceClass.DATA,
    title="DB-only mode: signal tables hold recent rows for every declared tenant/surface",
    severity=Severity.HIGH,
    remediation="Run the pipelines with db.dsn set (or the loader you use) so item_popularity_daily / "
    "item_covisit_daily get rows for every tenant and surface at least every policies.signal_max_age_days.",
    reference="recsys-data-and-ops §1.2 (signal tables; namespace = surface), §1.7",
)
def db_signals_fresh(ctx: AuditContext) -> Outcome:
    db_only = [t for t in ctx.params.tenants if t.serving_mode == "db_only"]
    if not db_only:
        return skipped("no tenant declares DB-only serving")
    max_age = ctx.params.policies.signal_max_age_days
    today = dt.datetime.now(dt.UTC).date()
    # max(day) per (tenant, namespace) is answered by the (tenant_id, namespace, day) index: no table scan.
    sql = (
        "SELECT max(day) AS last_day FROM {table} "
        "WHERE tenant_id = (SELECT id FROM tenants WHERE external_id = %s) AND namespace = %s"
    )
    rows = []
    statuses = []
    for tenant in db_only:
        for surface in tenant.surfaces:
            row: dict[str, Any] = {"tenant": tenant.id, "surface": surface}
            ages = []
            for table in SIGNAL_TABLES:
                last_day = (
                    ctx.db.scalar(sql.format(table=table), (tenant.id, surface)) if ctx.db.table_exists(table) else None
                )
                row[table] = str(last_day) if last_day else None
                if last_day:
                    ages.append((today - last_day).days)
            age = min(ages) if ages else None
            row["age_days"] = age
            status = Status.FAIL if age is None or age > max_age else Status.PASS
            row["status"] = str(status)
            statuses.append(status)
            rows.append(row)
    evidence = {"policy_max_age_days": max_age, "sql": sql.format(table="<signal table>"), "signals": rows}
    stale = [f"{r['tenant']}/{r['surface']}" for r in rows if r["status"] != "pass"]
    if stale:
        return failed(f"no signal rows newer than {max_age} day(s) for {', '.join(stale)}", **evidence)
    return passed(f"fresh signal rows (≤ {max_age} d) for {len(rows)} tenant/surface pair(s)", **evidence)


@SECTION.check(
    "serving.live-recommend",
    items=("0.serving-mode-per-tenant",),
    evidence=EvidenceClass.LIVE,
    title="A live recommend for every declared tenant/surface returns items",
    severity=Severity.HIGH,
    remediation="Follow the empty-recommendations runbook: SIGNAL_UNAVAILABLE / SIGNAL_PARTIAL → load signals or "
    "publish the manifest; CONSTRAINTS_FILTERED / CANDIDATES_INCLUDE_EMPTY → fix tenant config or rules.",
    reference="recsys-http-and-config §2 (response, warning codes); runbook empty-recommendations",
)
def live_recommend(ctx: AuditContext) -> Outcome:
    rows = recommend_sweep(ctx)
    failing = [r for r in rows if r["status"] != 200]
    empty = [r for r in rows if r["status"] == 200 and not r["items"]]
    evidence = {"requests": rows}
    if failing:
        names = ", ".join(f"{r['tenant']}/{r['surface']} → {r['status']}" for r in failing)
        return failed(f"recommend failed for {names}", **evidence)
    if empty:
        names = ", ".join(f"{r['tenant']}/{r['surface']} ({', '.join(r['warnings']) or 'no warnings'})" for r in empty)
        return warned(f"empty answers for {names}", **evidence)
    return passed(f"{len(rows)} tenant/surface pair(s) answered with items", **evidence)
