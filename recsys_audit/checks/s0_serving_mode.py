"""Section 0 — Serving mode: the declared mode per tenant, what config, metrics and data say, and live answers."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from recsys_audit.catalog import Section
from recsys_audit.checklist import EvidenceClass
from recsys_audit.checks.common import accepted, identity_for, mode_evidence, serving_role, tenant_surfaces
from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, Severity, Status, failed, passed, skipped, warned, worst
from recsys_audit.probes import ProbeError
from recsys_audit.probes.config import parse_duration

SECTION = Section(0, "Serving mode", notebook="00_serving_mode")

REFERENCE = "recsys-data-and-ops §3 (artifact/manifest mode), §1.7 (signal tables); recsys-http-and-config §4"
SIGNAL_TABLES = ("item_popularity_daily", "item_covisit_daily")
# A manifest cache longer than this delays a manifest rollback by as much.
MAX_ARTIFACT_TTL_S = 15 * 60


def recommend_sweep(ctx: AuditContext) -> list[dict[str, Any]]:
    """One live recommend per declared tenant/surface (shared by the checks of this section)."""

    def sweep() -> list[dict[str, Any]]:
        role = serving_role(ctx)
        rows = []
        for tenant, surface in tenant_surfaces(ctx):
            # each tenant is called with its own identity where params give one, else the serving credential
            response = accepted(ctx.service.recommend(tenant, surface, role=identity_for(ctx, tenant) or role))
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


def observed_modes(ctx: AuditContext) -> list[dict[str, Any]]:
    """What config, metrics and published manifests say, after this section's live recommends: the manifest gauges
    are set only once a request has loaded a manifest."""
    with contextlib.suppress(ProbeError):  # serving.live-recommend reports it; real traffic may have set them
        recommend_sweep(ctx)
    return mode_evidence(ctx).rows


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
    rows = [dict(row) for row in observed_modes(ctx) if not row["source"].startswith("declared")]
    declared = declared_modes(ctx)
    observed = {row["mode"] for row in rows if row["mode"]}
    evidence: dict[str, Any] = {"declared": ", ".join(sorted(declared)) or None, "observations": rows}
    decisive_db_only = any(row["mode"] == "db_only" and row["decisive"] for row in rows)
    if "artifact" in observed and decisive_db_only:
        disagree = [row["source"] for row in rows if row["mode"]]
        return failed(f"the sources disagree on the serving mode: {', '.join(disagree)}", **evidence)
    if len(declared) != 1:
        what = "no serving mode is declared" if not declared else "tenants declare different modes"
        seen = ", ".join(sorted(observed)) or "nothing"
        return warned(f"{what} (see serving.mode-declared); observed: {seen}", **evidence)
    expected = next(iter(declared))
    statuses = []
    for row in rows:
        if row["mode"] is None:
            status = Status.WARN
        elif row["mode"] == expected:
            status = Status.PASS
        else:  # a gauge at 0 or no published manifest does not prove DB-only mode: it only fails to confirm
            status = Status.FAIL if row["mode"] == "artifact" or row["decisive"] else Status.WARN
        row["verdict"] = str(status)
        statuses.append(status)
    status = worst(*statuses) if statuses else Status.WARN
    if status == Status.PASS:
        return passed(f"config, metrics and data agree: {expected}", **evidence)
    if status == Status.FAIL:
        contradicting = [row["source"] for row in rows if row["verdict"] == "fail"]
        return failed(f"declared {expected}, but {' and '.join(contradicting)} say otherwise", **evidence)
    silent = [row["source"] for row in rows if row["verdict"] == "warn"] or ["no source"]
    return warned(f"declared {expected}; not confirmed by {', '.join(silent)}", **evidence)


def artifact_mode_applies(ctx: AuditContext) -> Outcome | None:
    """None when some source says artifact mode; otherwise the skip (or, when nothing can tell, the warning)."""
    observed_modes(ctx)
    evidence = mode_evidence(ctx)
    if evidence.artifact is True:
        return None
    if evidence.artifact is False:
        return skipped(
            f"DB-only serving ({', '.join(evidence.saying('db_only'))}): no artifact mode", modes=evidence.rows
        )
    unknown = "no source tells whether artifact mode is on (no declaration, config, gauges or manifests)"
    return warned(unknown, modes=evidence.rows)


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
    if (not_applicable := artifact_mode_applies(ctx)) is not None:
        return not_applicable
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
        saying = ", ".join(mode_evidence(ctx).saying("artifact"))
        problems.append((Status.FAIL, f"RECSYS_ARTIFACT_MODE_ENABLED is off, but {saying} say artifact mode"))
    elif config.flag("RECSYS_ARTIFACT_MODE_ENABLED") is None:
        problems.append((Status.WARN, "RECSYS_ARTIFACT_MODE_ENABLED not visible"))
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
        observed = mode_evidence(ctx).artifact
        if observed is None:
            return warned("no source tells whether the service serves from DB signals: freshness not judged")
        if observed:
            return skipped("no tenant declares DB-only serving and the service serves artifacts")
        db_only = list(ctx.params.tenants)  # the service runs DB-only: every tenant is served from the signals
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
            if age is not None and age < 0:  # a day after today is not fresh, it is wrong
                status = Status.WARN
            else:
                status = Status.FAIL if age is None or age > max_age else Status.PASS
            row["status"] = str(status)
            statuses.append(status)
            rows.append(row)
    evidence = {"policy_max_age_days": max_age, "sql": sql.format(table="<signal table>"), "signals": rows}
    stale = [f"{r['tenant']}/{r['surface']}" for r in rows if r["status"] == "fail"]
    if stale:
        return failed(f"no signal rows newer than {max_age} day(s) for {', '.join(stale)}", **evidence)
    future = [f"{r['tenant']}/{r['surface']}" for r in rows if r["status"] == "warn"]
    if future:
        return warned(
            f"signal rows dated in the future for {', '.join(future)}: the pipeline clock is wrong", **evidence
        )
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
