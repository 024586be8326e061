"""Section 3 — Pipelines and manifests (artifact/manifest serving mode; every check skips in DB-only mode)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from recsys_audit.catalog import Section
from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, Severity, Status, errored, failed, manual, passed, skipped, warned, worst
from recsys_audit.probes import ProbeError
from recsys_audit.probes.manifest import ManifestCheck, manifest_uri, validate_manifest, verify_artifact

SECTION = Section(3, "Pipelines and manifests", notebook="03_pipelines")

AUTOMATED_ITEM = "Confirm artifact publishing is automated (scheduler) and has an owner/on-call"
ROLLBACK_ITEM = "Confirm you can roll back the manifest safely"
FRESHNESS_ITEM = "Define freshness SLOs and alerting"
REF_MANIFEST = "recsys-data-and-ops §3.1–3.3 (manifest v1, artifact layout)"
REF_FRESHNESS = "recsys-data-and-ops §3.4 (no freshness SLO; 900 s alert vs daily publish)"
AGE_METRIC = "recsys_artifact_manifest_age_seconds"
FAILURES_METRIC = "recsys_artifact_load_failures_total"

_OUTCOMES = {Status.PASS: passed, Status.FAIL: failed, Status.WARN: warned, Status.ERROR: errored}


def _verdict(status: Status, summary: str, **evidence: Any) -> Outcome:
    return _OUTCOMES.get(status, warned)(summary, **evidence)


# --- what is audited -----------------------------------------------------------------------------------------------


def artifact_surfaces(ctx: AuditContext) -> tuple[list[tuple[str, str]], str]:
    """(tenant, surface) pairs served from artifacts, and where that was learned; empty in DB-only mode."""
    tenants = ctx.params.tenants
    declared = [(t.id, s) for t in tenants if t.serving_mode == "artifact" for s in t.surfaces]
    if declared:
        return declared, "tenants[].serving_mode"
    if any(t.serving_mode == "db_only" for t in tenants):
        return [], "tenants[].serving_mode is db_only"
    try:
        enabled = ctx.config.flag("RECSYS_ARTIFACT_MODE_ENABLED")
    except ProbeError:
        enabled = None
    if enabled:
        return [(t.id, s) for t in tenants for s in t.surfaces], "RECSYS_ARTIFACT_MODE_ENABLED in the deployment config"
    return [], "no tenant declares artifact mode and RECSYS_ARTIFACT_MODE_ENABLED is not on"


def _db_only_reason(source: str) -> str:
    return f"DB-only serving mode ({source}): no manifests are published or read"


def manifest_template(ctx: AuditContext) -> str:
    if ctx.params.manifests.template:
        return ctx.params.manifests.template
    try:
        template = ctx.config.value("RECSYS_ARTIFACT_MANIFEST_TEMPLATE")
    except ProbeError:
        template = None
    if template and urlparse(template).scheme in {"s3", "http", "https"}:
        return template
    raise ProbeError("no manifest location: set manifests.template in params (URI with {tenant} and {surface})")


@dataclass
class ManifestProbe:
    tenant: str
    surface: str
    uri: str
    check: ManifestCheck | None = None
    error: str | None = None
    bytes: int = 0
    elapsed_ms: float = 0.0

    def row(self) -> dict[str, Any]:
        manifest = self.check.manifest if self.check else None
        return {
            "tenant": self.tenant,
            "surface": self.surface,
            "uri": self.uri,
            "fetched": self.error is None,
            "bytes": self.bytes,
            "ms": self.elapsed_ms,
            "updated_at": manifest.updated_at.isoformat() if manifest else None,
            "kinds": ", ".join(sorted(manifest.current)) if manifest else None,
            "problems": self.error or "; ".join(self.check.problems if self.check else []) or None,
        }


def fetch_manifest(ctx: AuditContext, uri: str, tenant: str, surface: str) -> ManifestProbe:
    probe = ManifestProbe(tenant, surface, uri)
    try:
        fetched = ctx.manifests.fetch(uri)
    except ProbeError as exc:
        probe.error = str(exc)
        return probe
    probe.bytes, probe.elapsed_ms = len(fetched.body), fetched.elapsed_ms
    probe.check = validate_manifest(fetched.body, tenant, surface, ctx.manifests)
    return probe


def current_manifests(ctx: AuditContext) -> list[ManifestProbe]:
    """One fetch per declared tenant/surface per kernel."""

    def load() -> list[ManifestProbe]:
        surfaces, _ = artifact_surfaces(ctx)
        template = manifest_template(ctx)
        return [fetch_manifest(ctx, manifest_uri(template, t, s), t, s) for t, s in surfaces]

    return ctx.memo("pipelines:manifests", load)


# --- manifests -----------------------------------------------------------------------------------------------------


@SECTION.check(
    "pipelines.manifest-valid",
    item="Artifact/manifest mode: pipelines publish artifacts + manifest",
    title="Every declared tenant/surface has a fetchable manifest v1 naming that tenant and surface",
    severity=Severity.HIGH,
    remediation="Publish current/<tenant>/<surface>/manifest.json where RECSYS_ARTIFACT_MANIFEST_TEMPLATE points "
    "(upstream pipelines write it only to a local registry_dir: add the upload step) with v, tenant, surface, "
    "current and an RFC3339 updated_at.",
    reference=REF_MANIFEST,
)
def manifest_valid(ctx: AuditContext) -> Outcome:
    surfaces, source = artifact_surfaces(ctx)
    if not surfaces:
        return skipped(_db_only_reason(source))
    probes = current_manifests(ctx)
    evidence = {"template": manifest_template(ctx), "manifests": [p.row() for p in probes]}
    unreadable = [p for p in probes if p.error]
    invalid = [p for p in probes if p.check and not p.check.valid]
    if unreadable or invalid:
        parts = [f"{len(unreadable)} not fetchable"] if unreadable else []
        parts += [f"{len(invalid)} invalid"] if invalid else []
        return failed(f"{', '.join(parts)} of {len(probes)} manifests", **evidence)
    return passed(f"{len(probes)} manifests fetched and valid against manifest v1", **evidence)


def manifest_age_metric(ctx: AuditContext) -> tuple[float | None, str]:
    """The service's manifest age gauge: /metrics first, then Prometheus."""
    try:
        metrics = ctx.metrics
        if metrics.has(AGE_METRIC):
            return max(s.value for s in metrics.series(AGE_METRIC)), "/metrics"
    except ProbeError:
        pass
    if ctx.params.prometheus.url:
        try:
            return ctx.prometheus.query_value(f"max({AGE_METRIC})"), f"Prometheus max({AGE_METRIC})"
        except ProbeError as exc:
            return None, f"Prometheus: {exc}"
    return None, "not exported"


@SECTION.check(
    "pipelines.manifest-fresh",
    item=FRESHNESS_ITEM,
    title="Manifests are younger than the freshness SLO (updated_at and the service's age gauge)",
    severity=Severity.HIGH,
    remediation="Find why publishing stopped (pipelines CronJob history, checkpoint, upload step) and republish; "
    "set policies.manifest_max_age_s to the agreed freshness SLO.",
    reference=REF_FRESHNESS,
)
def manifest_fresh(ctx: AuditContext) -> Outcome:
    surfaces, source = artifact_surfaces(ctx)
    if not surfaces:
        return skipped(_db_only_reason(source))
    slo = ctx.params.policies.manifest_max_age_s
    now = dt.datetime.now(dt.UTC)
    rows, statuses = [], []
    for probe in current_manifests(ctx):
        manifest = probe.check.manifest if probe.check else None
        if manifest is None:
            rows.append({"tenant": probe.tenant, "surface": probe.surface, "age_s": None, "verdict": "unreadable"})
            statuses.append(Status.ERROR)
            continue
        age = round(manifest.age_s(now))
        verdict = "stale" if age > slo else ("future" if age < -300 else "fresh")
        rows.append({"tenant": probe.tenant, "surface": probe.surface, "updated_at": manifest.updated_at.isoformat(),
                     "age_s": age, "verdict": verdict})  # fmt: skip
        statuses.append({"stale": Status.FAIL, "future": Status.WARN}.get(verdict, Status.PASS))
    gauge, gauge_source = manifest_age_metric(ctx)
    evidence: dict[str, Any] = {"slo_s": slo, "manifests": rows, "age_gauge_s": gauge, "age_gauge_source": gauge_source}
    if gauge is not None and gauge > slo:
        statuses.append(Status.FAIL)
    status = worst(*statuses)
    ages = [r["age_s"] for r in rows if r["age_s"] is not None]
    oldest = f"oldest {max(ages)} s" if ages else "no readable manifest"
    gauge_text = f", gauge {gauge:g} s" if gauge is not None else ""
    summary = f"{oldest}{gauge_text} vs SLO {slo} s"
    if status == Status.FAIL:
        return failed(f"stale manifests: {summary}", **evidence)
    return _verdict(status, summary, **evidence)


@SECTION.check(
    "pipelines.artifacts-verified",
    item="Artifact/manifest mode: pipelines publish artifacts + manifest",
    title="Every artifact a manifest points to exists and hashes to its version",
    severity=Severity.HIGH,
    remediation="Re-publish the missing or altered artifacts (blobs are immutable and content-addressed: a mismatch "
    "means the object was overwritten or corrupted) and point the manifest only at uploaded blobs.",
    reference="recsys-data-and-ops §3.3 (version = SHA-256 of the artifact with build blanked)",
)
def artifacts_verified(ctx: AuditContext) -> Outcome:
    surfaces, source = artifact_surfaces(ctx)
    if not surfaces:
        return skipped(_db_only_reason(source))
    readable = [p for p in current_manifests(ctx) if p.check and p.check.manifest]
    if not readable:
        raise ProbeError("no manifest could be read (see pipelines.manifest-valid)")
    rows, statuses = [], []
    for probe in readable:
        assert probe.check and probe.check.manifest
        for kind, uri in sorted(probe.check.manifest.current.items()):
            check = verify_artifact(ctx.manifests, kind, uri, probe.tenant, probe.surface)
            rows.append({"tenant": probe.tenant, "surface": probe.surface, **check.row()})
            if check.exists is None:
                statuses.append(Status.ERROR)
            elif not check.exists or check.hash_verified is False or check.problem:
                statuses.append(Status.FAIL)
            else:
                statuses.append(Status.PASS if check.hash_verified else Status.WARN)
    evidence = {"artifacts": rows}
    verified = sum(r["hash"] == "match" for r in rows)
    bad = sum(s == Status.FAIL for s in statuses)
    status = worst(*statuses)
    if status == Status.FAIL:
        return failed(f"{bad} of {len(rows)} artifacts missing or not matching their version", **evidence)
    if status == Status.PASS:
        return passed(f"all {len(rows)} artifacts exist and hash to their versions", **evidence)
    return _verdict(status, f"{len(rows)} artifacts exist, {verified} hash-verified", **evidence)


# --- rollback ------------------------------------------------------------------------------------------------------


def _newest_valid(ctx: AuditContext, uris: list[str], tenant: str, surface: str) -> ManifestProbe | None:
    probes = [fetch_manifest(ctx, uri, tenant, surface) for uri in uris[-10:]]
    valid = [p for p in probes if p.check and p.check.valid and p.check.manifest]
    return max(valid, key=lambda p: p.check.manifest.updated_at) if valid else None  # type: ignore[union-attr]


def rollback_command(ctx: AuditContext, previous: str, current: str, tenant: str, surface: str) -> str:
    scheme = urlparse(current).scheme
    if scheme == "file" and urlparse(previous).scheme == "file":
        copy = f"cp '{ctx.manifests.local_path(previous)}' '{ctx.manifests.local_path(current)}'"
    elif scheme == "s3":
        endpoint = ctx.params.manifests.s3.endpoint
        copy = f"aws s3 cp {previous} {current}" + (f" --endpoint-url {endpoint}" if endpoint else "")
    else:
        copy = f"copy {previous} over {current}"
    base = ctx.params.target.base_url.rstrip("/")
    body = f'{{"targets":["popularity"],"surface":"{surface}"}}'
    invalidate = (
        f"curl -X POST {base}/v1/admin/tenants/{tenant}/cache/invalidate -H 'Authorization: Bearer $OPERATOR_TOKEN' "
        f"-H 'Content-Type: application/json' -d '{body}'"
    )
    return f"{copy} && {invalidate}  # on every replica, or wait RECSYS_ARTIFACT_MANIFEST_TTL"


@SECTION.check(
    "pipelines.rollback-manifest-retained",
    item=ROLLBACK_ITEM,
    title="A previous known-good manifest is retained for every tenant/surface, with its artifacts",
    severity=Severity.HIGH,
    remediation="Before each publish, copy the current manifest to a retained location (e.g. registry/previous/"
    "<tenant>/<surface>/<updated_at>.json) and set manifests.previous_template; upstream keeps no previous "
    "manifest, so a bad publish cannot be rolled back.",
    reference="recsys-data-and-ops §3.4 (no rollback command; previous manifests are not kept)",
)
def rollback_manifest_retained(ctx: AuditContext) -> Outcome:
    surfaces, source = artifact_surfaces(ctx)
    if not surfaces:
        return skipped(_db_only_reason(source))
    template = ctx.params.manifests.previous_template
    if not template:
        return failed(
            "no previous manifest is retained anywhere the params name (manifests.previous_template is not set)",
            upstream="recsys-pipelines replaces current/<tenant>/<surface>/manifest.json in place and keeps no copy",
        )
    current = {(p.tenant, p.surface): p for p in current_manifests(ctx)}
    rows, commands, statuses = [], [], []
    for tenant, surface in surfaces:
        location = manifest_uri(template, tenant, surface)
        uris = ctx.manifests.list_json(location) if location.endswith("/") else [location]
        previous = _newest_valid(ctx, uris, tenant, surface) if uris else None
        row: dict[str, Any] = {"tenant": tenant, "surface": surface, "location": location, "candidates": len(uris)}
        if previous is None or previous.check is None or previous.check.manifest is None:
            rows.append({**row, "retained": None, "verdict": "no valid previous manifest"})
            statuses.append(Status.FAIL)
            continue
        manifest = previous.check.manifest
        missing = [kind for kind, uri in manifest.current.items() if not ctx.manifests.exists(uri)]
        now_probe = current.get((tenant, surface))
        now_manifest = now_probe.check.manifest if now_probe and now_probe.check else None
        same = now_manifest is not None and now_manifest.current == manifest.current
        verdict = f"artifacts missing: {', '.join(missing)}" if missing else "known-good"
        rows.append({**row, "retained": previous.uri, "updated_at": manifest.updated_at.isoformat(),
                     "same_artifacts_as_current": same, "verdict": verdict})  # fmt: skip
        statuses.append(Status.FAIL if missing else Status.PASS)
        if now_probe:
            command = rollback_command(ctx, previous.uri, now_probe.uri, tenant, surface)
            commands.append({"tenant": tenant, "surface": surface, "command": command})
    evidence = {"previous_template": template, "retained": rows, "rollback_commands": commands}
    bad = sum(s == Status.FAIL for s in statuses)
    if bad:
        return failed(f"{bad} of {len(rows)} tenant/surfaces have no usable previous manifest", **evidence)
    return passed(f"a known-good previous manifest is retained for all {len(rows)} tenant/surfaces", **evidence)


# --- publishing ----------------------------------------------------------------------------------------------------

_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
_CRON_MACROS = {"@hourly": 3600, "@daily": 86400, "@midnight": 86400, "@weekly": 604800}


def cron_interval_s(expression: str) -> int | None:
    """The longest gap between runs of a simple cron schedule; ValueError when it is not a cron expression."""
    expression = expression.strip()
    if expression in _CRON_MACROS:
        return _CRON_MACROS[expression]
    fields = expression.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ValueError(f"not a 5-field cron expression: {expression!r}")
    minute, hour, day, month, weekday = fields
    if (day, month) != ("*", "*"):
        return None
    if weekday != "*":
        return 7 * 86400 if weekday.isdigit() and minute.isdigit() and hour.isdigit() else None
    if minute.isdigit() and hour.isdigit():
        return 86400
    if minute.isdigit() and "," in hour and all(h.isdigit() for h in hour.split(",")):
        hours = sorted(int(h) for h in hour.split(","))
        return 3600 * max(b - a for a, b in zip(hours, [*hours[1:], hours[0] + 24], strict=True))
    step = re.fullmatch(r"\*/(\d+)", hour)
    if minute.isdigit() and (hour == "*" or step):
        return 3600 * (int(step.group(1)) if step else 1)
    step = re.fullmatch(r"\*/(\d+)", minute)
    if hour == "*" and (minute == "*" or step):
        return 60 * (int(step.group(1)) if step else 1)
    return None


def publish_interval(ctx: AuditContext) -> tuple[int | None, str]:
    if ctx.params.policies.publish_interval_s:
        return ctx.params.policies.publish_interval_s, "policies.publish_interval_s"
    schedule = ctx.params.deployment.pipelines_schedule
    if schedule:
        try:
            interval = cron_interval_s(schedule)
        except ValueError:
            return None, f"unreadable schedule {schedule!r}"
        if interval:
            return interval, f"deployment.pipelines_schedule {schedule!r}"
    return None, "unknown (set policies.publish_interval_s or deployment.pipelines_schedule)"


@SECTION.check(
    "pipelines.publish-scheduled",
    item=AUTOMATED_ITEM,
    title="Publishing runs on a schedule and its last successful run is recent",
    severity=Severity.MEDIUM,
    remediation="Run recsys-pipelines from a scheduler (CronJob with concurrencyPolicy Forbid, backoffLimit, a "
    "persistent checkpoint) and record its schedule and last success in params deployment.pipelines_schedule / "
    "pipelines_last_success.",
    reference="recsys-data-and-ops §3.4, §4 (CronJob 02:15 daily; incremental run without checkpoint exits 2)",
)
def publish_scheduled(ctx: AuditContext) -> Outcome:
    surfaces, source = artifact_surfaces(ctx)
    if not surfaces:
        return skipped(_db_only_reason(source))
    deployment = ctx.params.deployment
    slo = ctx.params.policies.manifest_max_age_s
    schedule, last = deployment.pipelines_schedule, deployment.pipelines_last_success
    evidence: dict[str, Any] = {"schedule": schedule, "last_success": last.isoformat() if last else None, "slo_s": slo}
    if not schedule and not last:
        return manual("no scheduler evidence in params (deployment.pipelines_schedule / pipelines_last_success)")
    if schedule:
        try:
            evidence["interval_s"] = cron_interval_s(schedule)
        except ValueError as exc:
            return failed(str(exc), **evidence)
    if last is None:
        return warned(f"scheduled ({schedule}) but no last successful run in params", **evidence)
    age = round((dt.datetime.now(dt.UTC) - (last if last.tzinfo else last.replace(tzinfo=dt.UTC))).total_seconds())
    evidence["last_success_age_s"] = age
    if age > slo:
        return failed(f"last successful publish {age} s ago exceeds the freshness SLO ({slo} s)", **evidence)
    if not schedule:
        return warned(f"last success {age} s ago, but no schedule in params", **evidence)
    return passed(f"scheduled {schedule!r}; last success {age} s ago", **evidence)


@SECTION.check(
    "pipelines.publish-owner",
    item=AUTOMATED_ITEM,
    title="Publishing has a named owner and on-call",
    severity=Severity.MEDIUM,
    remediation="Name the team that owns the pipelines and is paged by the stale-manifest alert "
    "(deployment.pipelines_owner) and attest the on-call rota.",
    reference=REF_FRESHNESS,
)
def publish_owner(ctx: AuditContext) -> Outcome:
    surfaces, source = artifact_surfaces(ctx)
    if not surfaces:
        return skipped(_db_only_reason(source))
    owner = ctx.params.deployment.pipelines_owner
    if not owner:
        return manual("no pipelines owner named (deployment.pipelines_owner): attest the owner and on-call")
    return passed(f"pipelines owned by {owner}", owner=owner)


# --- alerting ------------------------------------------------------------------------------------------------------

_THRESHOLD = re.compile(AGE_METRIC + r"[^<>]*?\s*>=?\s*([0-9.]+(?:e[+-]?\d+)?)")


def manifest_age_alerts(ctx: AuditContext) -> tuple[list[dict[str, Any]], list[str]]:
    """Alerting rules on the manifest age gauge, from the Prometheus rules API and the rules files in params."""
    from recsys_audit.probes.alerts import AlertRule, rules_from_api, rules_from_file

    rules: list[AlertRule] = []
    sources = []
    if ctx.params.prometheus.url:
        rules += rules_from_api(ctx.prometheus.rules())
        sources.append(f"{ctx.params.prometheus.url.rstrip('/')}/api/v1/rules")
    for name in ctx.params.prometheus.rules_files:
        rules += rules_from_file(ctx.params.path(name))
        sources.append(name)
    if not sources:
        raise ProbeError("no alert rules to read: set prometheus.url or prometheus.rules_files in params")
    found = [
        {"alert": rule.name, "expr": " ".join(rule.expr.split()), "for_s": rule.for_s, "source": rule.source}
        for rule in rules
        if AGE_METRIC in rule.expr
    ]
    return found, sources


@SECTION.check(
    "pipelines.stale-manifest-alert",
    item=FRESHNESS_ITEM,
    title="A stale-manifest alert exists and its threshold fits the publish cadence and the SLO",
    severity=Severity.MEDIUM,
    remediation="Alert on recsys_artifact_manifest_age_seconds above the publish interval plus the pipeline's run "
    "time, and no later than the freshness SLO (the upstream 900 s alert fires most of the day with a daily publish).",
    reference=REF_FRESHNESS,
)
def stale_manifest_alert(ctx: AuditContext) -> Outcome:
    surfaces, source = artifact_surfaces(ctx)
    if not surfaces:
        return skipped(_db_only_reason(source))
    alerts, sources = manifest_age_alerts(ctx)
    interval, interval_source = publish_interval(ctx)
    slo = ctx.params.policies.manifest_max_age_s
    for alert in alerts:
        match = _THRESHOLD.search(alert["expr"])
        alert["threshold_s"] = float(match.group(1)) if match else None
    evidence: dict[str, Any] = {"sources": sources, "alerts": alerts, "publish_interval_s": interval,
                                "publish_interval_source": interval_source, "slo_s": slo}  # fmt: skip
    if not alerts:
        return failed(f"no alert on {AGE_METRIC}: a stalled pipeline goes unnoticed", **evidence)
    judged = [a for a in alerts if a["threshold_s"] is not None]
    if not judged:
        return warned("stale-manifest alert found, but its threshold could not be read", **evidence)
    if interval is None:
        return warned(f"stale-manifest alert found; publish cadence {interval_source}", **evidence)
    best = max(judged, key=lambda a: a["threshold_s"])
    threshold, effective = best["threshold_s"], best["threshold_s"] + best["for_s"]
    if threshold < interval:
        return failed(
            f"{best['alert']} fires at {threshold:g} s but manifests are published every {interval} s: it fires "
            "between healthy publishes",
            **evidence,
        )
    evidence["fires_after_s"] = effective  # threshold plus the rule's `for`
    if threshold > slo:
        return warned(f"{best['alert']} fires at {threshold:g} s, later than the SLO ({slo} s)", **evidence)
    return passed(f"{best['alert']} at {threshold:g} s fits cadence {interval} s and SLO {slo} s", **evidence)


@SECTION.check(
    "pipelines.artifact-load-failures",
    item=FRESHNESS_ITEM,
    title="The service reports no artifact load failures",
    severity=Severity.MEDIUM,
    remediation="Read the service log for the failing kind (manifest, popularity, cooc…): object-store credentials, "
    "TLS, a missing blob or an incompatible artifact; RecSysArtifactLoadFailures should page on any rate above 0.",
    reference="recsys-http-and-config §5 (recsys_artifact_load_failures_total{kind})",
)
def artifact_load_failures(ctx: AuditContext) -> Outcome:
    surfaces, source = artifact_surfaces(ctx)
    if not surfaces:
        return skipped(_db_only_reason(source))
    promql = f"sum by (kind) (increase({FAILURES_METRIC}[1h]))"
    if ctx.params.prometheus.url:
        rows = [{"kind": r["metric"].get("kind", ""), "increase_1h": round(r["value"], 3)}
                for r in ctx.prometheus.query(promql)]  # fmt: skip
        failing = [r for r in rows if r["increase_1h"] > 0]
        evidence = {"promql": promql, "by_kind": rows}
        if failing:
            kinds = ", ".join(r["kind"] for r in failing)
            return failed(f"artifact load failures in the last hour ({kinds})", **evidence)
        return passed("no artifact load failure in the last hour", **evidence)
    metrics = ctx.metrics
    rows = [{"kind": s.labels.get("kind", ""), "total": s.value} for s in metrics.series(FAILURES_METRIC)]
    evidence = {"source": "/metrics (counter since process start)", "by_kind": rows}
    total = sum(r["total"] for r in rows)
    if total:
        return warned(
            f"{total:g} artifact load failures since the service started (no Prometheus for a rate)", **evidence
        )
    return passed("no artifact load failure since the service started", **evidence)


def plot_manifest_ages(finding: Any) -> None:
    """Age of each manifest against the freshness SLO (static bar chart from the manifest-fresh finding)."""
    rows = [r for r in finding.evidence.get("manifests", []) if r.get("age_s") is not None]
    if not rows:
        print("no plot: no readable manifest")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recsys_audit.checks.s5_observability import show_figure

    slo_h = finding.evidence["slo_s"] / 3600
    figure, axis = plt.subplots(figsize=(8, 0.5 + 0.4 * len(rows)))
    try:
        ages_h = [r["age_s"] / 3600 for r in rows]
        colours = ["#cf222e" if age > slo_h else "#1a7f37" for age in ages_h]
        axis.barh([f"{r['tenant']}/{r['surface']}" for r in rows], ages_h, color=colours)
        axis.axvline(slo_h, color="black", linestyle=":", linewidth=1, label=f"SLO {slo_h:g} h")
        axis.set_xlabel("manifest age (hours)")
        axis.legend(loc="lower right", fontsize="small")
        figure.tight_layout()
        show_figure(figure)
    finally:
        plt.close(figure)
