"""Section 3 — Pipelines and manifests (artifact/manifest serving mode).

The section runs whenever any source says artifact mode — the params' declaration, the service's config switch,
its manifest gauges or published manifests (checks/common.py ``mode_evidence``) — and is skipped only when a
decisive source says DB-only and none says artifact. It audits the manifests the service itself reads: the params'
``manifests.template`` is compared with the service's ``RECSYS_ARTIFACT_MANIFEST_TEMPLATE`` first.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from recsys_audit.catalog import Section
from recsys_audit.checklist import EvidenceClass
from recsys_audit.checks.common import (
    MANIFEST_AGE,
    audited_manifest_template,
    awaiting_attestation,
    configured_manifest_template,
    mode_evidence,
    tenant_surfaces,
)
from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, Severity, Status, errored, failed, passed, skipped, warned, worst
from recsys_audit.probes import ProbeError
from recsys_audit.probes.manifest import Manifest, ManifestCheck, manifest_uri, validate_manifest, verify_artifact

SECTION = Section(3, "Pipelines and manifests", notebook="03_pipelines")

REF_MANIFEST = "recsys-data-and-ops §3.1–3.3 (manifest v1, artifact layout)"
REF_FRESHNESS = "recsys-data-and-ops §3.4 (no freshness SLO; 900 s alert vs daily publish)"
AGE_METRIC = MANIFEST_AGE
FAILURES_METRIC = "recsys_artifact_load_failures_total"
ALWAYS_EXPORTED = "recsys_backpressure_rejections_total"  # exported from start-up on, even at 0
FUTURE_TOLERANCE_S = 300  # clock skew accepted before a timestamp counts as future-dated
PLACEHOLDER_OWNERS = {"", "-", "?", "n/a", "na", "none", "tbd", "todo", "unknown", "nobody", "owner", "team"}

_OUTCOMES = {Status.PASS: passed, Status.FAIL: failed, Status.WARN: warned, Status.ERROR: errored}


def _verdict(status: Status, summary: str, **evidence: Any) -> Outcome:
    return _OUTCOMES.get(status, warned)(summary, **evidence)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- what is audited -----------------------------------------------------------------------------------------------


def not_applicable(ctx: AuditContext) -> Outcome | None:
    """None when the section applies (some source says artifact mode); else why not (skip, or warn when no source
    can tell and params name no manifests to look at)."""
    evidence = mode_evidence(ctx)
    if evidence.artifact is True or (evidence.artifact is None and ctx.params.manifests.template):
        return None
    if evidence.artifact is False:
        saying = ", ".join(evidence.saying("db_only"))
        return skipped(f"DB-only serving mode ({saying}); no source says artifact mode", modes=evidence.rows)
    unknown = "no source tells whether artifact mode is on, and params name no manifests (manifests.template)"
    return warned(unknown, modes=evidence.rows)


def manifest_template(ctx: AuditContext) -> str:
    template = audited_manifest_template(ctx)
    if template is None:
        raise ProbeError("no manifest location: set manifests.template in params (URI with {tenant} and {surface})")
    return template


# --- the manifest location ------------------------------------------------------------------------------------------


def _template_path(ctx: AuditContext, template: str, *, audited: bool) -> tuple[str, PurePosixPath]:
    """(store, path) of a template: the bucket of s3://, the host of http(s)://; file:// paths the auditor reads are
    resolved against the params folder."""
    parsed = urlparse(template)
    if parsed.scheme == "file":
        path = ctx.manifests.local_path(template) if audited else unquote(parsed.netloc + parsed.path)
        return "file", PurePosixPath(os.path.normpath(path))
    return f"{parsed.scheme}://{parsed.netloc}", PurePosixPath(unquote(parsed.path))


def _layout(path: PurePosixPath) -> tuple[str, ...]:
    """The part of a template from the folder above its first placeholder on: what the publisher lays out."""
    parts = path.parts
    first = next((i for i, part in enumerate(parts) if "{" in part), len(parts))
    return parts[max(first - 1, 0) :]


def manifest_location(ctx: AuditContext) -> tuple[Status, str, dict[str, Any]]:
    """Do the params make the kit read the manifests the service reads? (status, summary, evidence)."""

    def compare() -> tuple[Status, str, dict[str, Any]]:
        params_template = ctx.params.manifests.template
        service_template = configured_manifest_template(ctx)
        evidence = {"params_template": params_template, "service_template": service_template}
        if not params_template:
            if audited_manifest_template(ctx):
                return Status.PASS, "the kit reads the service's own manifest template", evidence
            return Status.ERROR, "no manifest location in params or in the visible config", evidence
        if not service_template:
            unseen = "the service's RECSYS_ARTIFACT_MANIFEST_TEMPLATE is not visible (or not set): the audited "
            return Status.WARN, unseen + "manifests may not be the ones it reads", evidence
        audited_store, audited_path = _template_path(ctx, params_template, audited=True)
        service_store, service_path = _template_path(ctx, service_template, audited=False)
        if (audited_store, audited_path) == (service_store, service_path):
            return Status.PASS, "params and service name the same manifests", evidence
        if _layout(audited_path) == _layout(service_path):
            return (
                Status.WARN,
                (
                    f"same layout ({'/'.join(_layout(service_path))}) in another place: the kit reads {audited_store} "
                    f"{audited_path.parent}, the service {service_store} {service_path.parent} — a mount or a copy "
                    "cannot be proven to be the same manifests"
                ),
                evidence,
            )
        return (
            Status.FAIL,
            (
                f"params manifests.template ({params_template}) is not where the service reads its manifests "
                f"({service_template})"
            ),
            evidence,
        )

    return ctx.memo("pipelines:location", compare)


@dataclass
class ManifestProbe:
    tenant: str
    surface: str
    uri: str
    check: ManifestCheck | None = None
    error: str | None = None
    bytes: int = 0
    elapsed_ms: float = 0.0

    @property
    def current(self) -> dict[str, str]:
        """kind -> artifact URI (empty when the manifest could not be read)."""
        return self.check.manifest.current if self.check and self.check.manifest else {}

    @property
    def published(self) -> dt.datetime:
        """updated_at of a readable manifest (the publish time)."""
        if not (self.check and self.check.manifest):
            raise ProbeError(f"{self.uri}: no readable manifest")
        return self.check.manifest.updated_at

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
    """One fetch per tenant/surface per kernel, from where the service reads them (else an error)."""

    def load() -> list[ManifestProbe]:
        status, summary, _ = manifest_location(ctx)
        if status in {Status.FAIL, Status.ERROR}:
            raise ProbeError(f"{summary} — fix manifests.template (see pipelines.manifest-location)")
        template = manifest_template(ctx)
        return [fetch_manifest(ctx, manifest_uri(template, t, s), t, s) for t, s in tenant_surfaces(ctx)]

    return ctx.memo("pipelines:manifests", load)


def is_earlier(probe: ManifestProbe, current: Manifest) -> bool:
    """A retained manifest a rollback could go back to: other artifacts, published no later than the current."""
    return probe.current != current.current and probe.published <= current.updated_at


def retained_manifests(ctx: AuditContext, tenant: str, surface: str) -> list[ManifestProbe]:
    """The valid manifests kept under manifests.previous_template (the newest ten), oldest first."""

    def load() -> list[ManifestProbe]:
        template = ctx.params.manifests.previous_template
        if not template:
            return []
        location = manifest_uri(template, tenant, surface)
        uris = ctx.manifests.list_json(location) if location.endswith("/") else [location]
        probes = [fetch_manifest(ctx, uri, tenant, surface) for uri in uris[-10:]]
        valid = [p for p in probes if p.check and p.check.valid and p.check.manifest]
        return sorted(valid, key=lambda p: p.published)

    return ctx.memo(f"pipelines:retained:{tenant}:{surface}", load)


# --- manifests -----------------------------------------------------------------------------------------------------


@SECTION.check(
    "pipelines.manifest-location",
    items=("0.artifact-mode",),
    evidence=EvidenceClass.CONFIG,
    title="The kit audits the manifests the service reads (params template = RECSYS_ARTIFACT_MANIFEST_TEMPLATE)",
    severity=Severity.HIGH,
    remediation="Point manifests.template in params at the location in the service's "
    "RECSYS_ARTIFACT_MANIFEST_TEMPLATE (same bucket and key, or the same files), and list the config source that "
    "shows it; otherwise the audit judges other manifests than the ones served.",
    reference="recsys-http-and-config §4 (RECSYS_ARTIFACT_MANIFEST_TEMPLATE); recsys-data-and-ops §3.2",
)
def manifest_location_check(ctx: AuditContext) -> Outcome:
    if (reason := not_applicable(ctx)) is not None:
        return reason
    status, summary, evidence = manifest_location(ctx)
    return _verdict(status, summary, **evidence)


@SECTION.check(
    "pipelines.manifest-valid",
    items=("0.artifact-mode",),
    evidence=EvidenceClass.DATA,
    title="Every tenant/surface has a fetchable manifest v1 naming that tenant and surface",
    severity=Severity.HIGH,
    remediation="Publish current/<tenant>/<surface>/manifest.json where RECSYS_ARTIFACT_MANIFEST_TEMPLATE points "
    "(upstream pipelines write it only to a local registry_dir: add the upload step) with v, tenant, surface, "
    "current and an RFC3339 updated_at.",
    reference=REF_MANIFEST,
)
def manifest_valid(ctx: AuditContext) -> Outcome:
    if (reason := not_applicable(ctx)) is not None:
        return reason
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
    items=("3.freshness-slo-alerting",),
    evidence=EvidenceClass.DATA,
    title="Manifests are younger than the freshness SLO (updated_at and the service's age gauge)",
    severity=Severity.HIGH,
    remediation="Find why publishing stopped (pipelines CronJob history, checkpoint, upload step) and republish; "
    "set policies.manifest_max_age_s to the agreed freshness SLO.",
    reference=REF_FRESHNESS,
)
def manifest_fresh(ctx: AuditContext) -> Outcome:
    if (reason := not_applicable(ctx)) is not None:
        return reason
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
        verdict = "stale" if age > slo else ("future" if age < -FUTURE_TOLERANCE_S else "fresh")
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
    items=("0.artifact-mode",),
    evidence=EvidenceClass.DATA,
    title="Every artifact a manifest points to exists and hashes to its version",
    severity=Severity.HIGH,
    remediation="Re-publish the missing or altered artifacts (blobs are immutable and content-addressed: a mismatch "
    "means the object was overwritten or corrupted) and point the manifest only at uploaded blobs.",
    reference="recsys-data-and-ops §3.3 (version = SHA-256 of the artifact with build blanked)",
)
def artifacts_verified(ctx: AuditContext) -> Outcome:
    if (reason := not_applicable(ctx)) is not None:
        return reason
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
    items=("3.manifest-rollback", "7.manifest-procedure"),
    evidence=EvidenceClass.DATA,
    title="An earlier known-good manifest is retained for every tenant/surface, with its artifacts",
    severity=Severity.HIGH,
    remediation="Before each publish, copy the current manifest to a retained location (e.g. registry/previous/"
    "<tenant>/<surface>/<updated_at>.json) and set manifests.previous_template; upstream keeps no previous "
    "manifest, so a bad publish cannot be rolled back.",
    reference="recsys-data-and-ops §3.4 (no rollback command; previous manifests are not kept)",
)
def rollback_manifest_retained(ctx: AuditContext) -> Outcome:
    if (reason := not_applicable(ctx)) is not None:
        return reason
    template = ctx.params.manifests.previous_template
    if not template:
        return failed(
            "no previous manifest is retained anywhere the params name (manifests.previous_template is not set)",
            upstream="recsys-pipelines replaces current/<tenant>/<surface>/manifest.json in place and keeps no copy",
        )
    current = {(p.tenant, p.surface): p for p in current_manifests(ctx)}
    rows, commands, statuses = [], [], []
    for tenant, surface in tenant_surfaces(ctx):
        now_probe = current.get((tenant, surface))
        now_manifest = now_probe.check.manifest if now_probe and now_probe.check else None
        retained = retained_manifests(ctx, tenant, surface)
        # a rollback target is an earlier publish: not the current manifest again, not one dated after it
        earlier = [p for p in retained if now_manifest is None or is_earlier(p, now_manifest)]
        location = manifest_uri(template, tenant, surface)
        row: dict[str, Any] = {"tenant": tenant, "surface": surface, "location": location, "valid": len(retained)}
        if not earlier:
            verdict = "only copies of the current manifest" if retained else "no valid previous manifest"
            rows.append({**row, "retained": None, "verdict": verdict})
            statuses.append(Status.FAIL)
            continue
        previous = earlier[-1]
        missing = [kind for kind, uri in previous.current.items() if not ctx.manifests.exists(uri)]
        verdict = f"artifacts missing: {', '.join(missing)}" if missing else "known-good"
        rows.append({**row, "retained": previous.uri, "updated_at": previous.published.isoformat(), "verdict": verdict})
        statuses.append(Status.FAIL if missing else Status.PASS)
        if now_probe:
            command = rollback_command(ctx, previous.uri, now_probe.uri, tenant, surface)
            commands.append({"tenant": tenant, "surface": surface, "command": command})
    evidence = {"previous_template": template, "retained": rows, "rollback_commands": commands}
    bad = sum(s == Status.FAIL for s in statuses)
    if bad:
        return failed(f"{bad} of {len(rows)} tenant/surfaces have no usable previous manifest", **evidence)
    return passed(f"an earlier known-good manifest is retained for all {len(rows)} tenant/surfaces", **evidence)


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


def _declared_interval(ctx: AuditContext) -> tuple[int | None, str]:
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
    return None, "not declared (policies.publish_interval_s, deployment.pipelines_schedule)"


def publish_history(ctx: AuditContext) -> list[dict[str, Any]]:
    """Per tenant/surface: when each retained and the current manifest was published (updated_at), oldest first,
    and the gaps between them."""
    current = {(p.tenant, p.surface): p for p in current_manifests(ctx)}
    rows = []
    for tenant, surface in tenant_surfaces(ctx):
        probe = current.get((tenant, surface))
        times = {p.published for p in retained_manifests(ctx, tenant, surface)}
        if probe and probe.check and probe.check.manifest:
            times.add(probe.check.manifest.updated_at)
        ordered = sorted(times)
        gaps = [round((b - a).total_seconds()) for a, b in itertools.pairwise(ordered)]
        row = {"tenant": tenant, "surface": surface, "publishes": [t.isoformat() for t in ordered]}
        rows.append({**row, "newest": ordered[-1] if ordered else None, "gaps_s": gaps})
    return rows


def publish_interval(ctx: AuditContext) -> tuple[int | None, str]:
    """The publish cadence: declared, else the median gap between the retained manifests' publishes."""
    interval, source = _declared_interval(ctx)
    if interval:
        return interval, source
    try:
        gaps = [gap for row in publish_history(ctx) for gap in row["gaps_s"]]
    except ProbeError:
        gaps = []
    if len(gaps) >= 2:
        return round(statistics.median(gaps)), "observed: the median gap between retained manifests"
    return None, source


def age_series_max(ctx: AuditContext, window_s: int) -> tuple[float | None, str]:
    """The highest manifest age the service reported over a window (Prometheus), when it can be read."""
    if not ctx.params.prometheus.url:
        return None, "no Prometheus in params"
    from recsys_audit.checks.s5_observability import job_selector

    window = min(window_s, 14 * 86400)
    promql = f"max(max_over_time({AGE_METRIC}{job_selector(ctx)}[{window}s]))"
    try:
        return ctx.prometheus.query_value(promql), promql
    except ProbeError as exc:
        return None, f"{promql}: {exc}"


@SECTION.check(
    "pipelines.publish-scheduled",
    items=("3.publishing-automated-owned",),
    evidence=EvidenceClass.DATA,
    title="Publishing runs on a declared schedule, and the manifests' history and age series show it on time",
    severity=Severity.MEDIUM,
    remediation="Run recsys-pipelines from a scheduler (CronJob with concurrencyPolicy Forbid, backoffLimit, a "
    "persistent checkpoint), record the schedule in params deployment.pipelines_schedule, keep previous manifests "
    "(their updated_at is the publish history) and find why a run was missed.",
    reference="recsys-data-and-ops §3.4, §4 (CronJob 02:15 daily; incremental run without checkpoint exits 2)",
)
def publish_scheduled(ctx: AuditContext) -> Outcome:
    if (reason := not_applicable(ctx)) is not None:
        return reason
    deployment = ctx.params.deployment
    schedule, last = deployment.pipelines_schedule, deployment.pipelines_last_success
    now = _now()
    evidence: dict[str, Any] = {"schedule": schedule, "declared_last_success": last.isoformat() if last else None}
    if schedule:
        try:
            cron_interval_s(schedule)
        except ValueError as exc:
            return failed(str(exc), **evidence)
    interval, interval_source = publish_interval(ctx)
    history = publish_history(ctx)
    evidence.update(interval_s=interval, interval_source=interval_source, history=history)
    problems: list[tuple[Status, str]] = []
    if not schedule:
        problems.append((Status.WARN, "no schedule declared (deployment.pipelines_schedule)"))
    if interval is None:
        problems.append((Status.WARN, "no publish interval declared or observable: on-time publishing not judged"))
    grace = max(interval // 2, 3600) if interval else 0
    for row in history:
        newest = row.pop("newest")
        where = f"{row['tenant']}/{row['surface']}"
        if newest is None:
            problems.append((Status.WARN, f"{where}: no readable manifest to date the last publish"))
            continue
        age = round((now - newest).total_seconds())
        row["last_publish_age_s"] = age
        if age < -FUTURE_TOLERANCE_S:
            problems.append((Status.WARN, f"{where}: manifest dated {-age} s in the future: its clock is wrong"))
        elif interval and age > interval + grace:
            problems.append((Status.FAIL, f"{where}: last publish {age} s ago, the schedule runs every {interval} s"))
        late = [gap for gap in row["gaps_s"] if interval and gap > interval + grace]
        if late:
            problems.append((Status.WARN, f"{where}: a publish was missed ({max(late)} s between two publishes)"))
    if last is not None:
        last_utc = last if last.tzinfo else last.replace(tzinfo=dt.UTC)
        last_age = round((now - last_utc).total_seconds())
        evidence["declared_last_success_age_s"] = last_age
        newest_all = max((row["publishes"][-1] for row in history if row["publishes"]), default=None)
        if last_age < -FUTURE_TOLERANCE_S:
            problems.append((Status.WARN, f"the declared last success is {-last_age} s in the future"))
        elif interval and last_age > interval + grace:
            problems.append((Status.FAIL, f"the declared last successful run was {last_age} s ago"))
        elif newest_all and interval and (last_utc - dt.datetime.fromisoformat(newest_all)).total_seconds() > grace:
            problems.append((Status.WARN, "the declared last successful run published no manifest after it"))
    if interval:
        gauge_max, promql = age_series_max(ctx, 2 * interval)
        evidence.update(age_series_max_s=gauge_max, age_series_query=promql)
        if gauge_max is not None and gauge_max > interval + grace:
            late = (
                f"the service's manifest age reached {gauge_max:g} s in the last {2 * interval} s: a publish was late"
            )
            problems.append((Status.WARN, late))
    evidence["problems"] = [{"status": str(s), "problem": p} for s, p in problems]
    if problems:
        status = worst(*(s for s, _ in problems))
        return _verdict(status, "; ".join(p for _, p in problems), **evidence)
    return passed(f"scheduled {schedule!r}; every tenant/surface published on time (every {interval} s)", **evidence)


@SECTION.check(
    "pipelines.publish-owner",
    items=("3.publishing-automated-owned",),
    evidence=EvidenceClass.ATTESTED,
    title="Publishing has a named owner, and a reviewer attests the on-call that the stale-manifest alert pages",
    severity=Severity.MEDIUM,
    remediation="Name the team that owns the pipelines and is paged by the stale-manifest alert "
    "(deployment.pipelines_owner) and attest its on-call rota (attestations: pipelines.publish-owner).",
    reference=REF_FRESHNESS,
)
def publish_owner(ctx: AuditContext) -> Outcome:
    if (reason := not_applicable(ctx)) is not None:
        return reason
    owner = (ctx.params.deployment.pipelines_owner or "").strip()
    if owner.lower() in PLACEHOLDER_OWNERS or len(owner) < 3:
        shown = f"{owner!r} is a placeholder" if owner else "no pipelines owner is named"
        return failed(f"{shown} (deployment.pipelines_owner): nobody is paged when publishing stops", owner=owner)
    summary = f"pipelines owned by {owner}: a reviewer attests the on-call rota"
    return awaiting_attestation(ctx, "pipelines.publish-owner", summary, owner=owner)


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
    items=("3.freshness-slo-alerting",),
    evidence=EvidenceClass.CONFIG,
    title="A stale-manifest alert exists and its threshold fits the publish cadence and the SLO",
    severity=Severity.MEDIUM,
    remediation="Alert on recsys_artifact_manifest_age_seconds above the publish interval plus the pipeline's run "
    "time, and no later than the freshness SLO (the upstream 900 s alert fires most of the day with a daily publish).",
    reference=REF_FRESHNESS,
)
def stale_manifest_alert(ctx: AuditContext) -> Outcome:
    if (reason := not_applicable(ctx)) is not None:
        return reason
    alerts, sources = manifest_age_alerts(ctx)
    try:
        interval, interval_source = publish_interval(ctx)
    except ProbeError as exc:
        interval, interval_source = None, str(exc)
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
    items=("3.freshness-slo-alerting",),
    evidence=EvidenceClass.LIVE,
    title="The service reports no artifact load failures (and is seen reporting at all)",
    severity=Severity.MEDIUM,
    remediation="Read the service log for the failing kind (manifest, popularity, cooc…): object-store credentials, "
    "TLS, a missing blob or an incompatible artifact; RecSysArtifactLoadFailures should page on any rate above 0. "
    "If Prometheus holds no series of the service, fix the scrape first.",
    reference="recsys-http-and-config §5 (recsys_artifact_load_failures_total{kind}; backpressure counter always "
    "exported)",
)
def artifact_load_failures(ctx: AuditContext) -> Outcome:
    if (reason := not_applicable(ctx)) is not None:
        return reason
    if ctx.params.prometheus.url:
        from recsys_audit.checks.s5_observability import job_selector

        selector = job_selector(ctx)
        promql = f"sum by (kind) (increase({FAILURES_METRIC}{selector}[1h]))"
        presence = f"count({ALWAYS_EXPORTED}{selector})"
        rows = [{"kind": r["metric"].get("kind", ""), "increase_1h": round(r["value"], 3)}
                for r in ctx.prometheus.query(promql)]  # fmt: skip
        evidence = {"promql": promql, "by_kind": rows, "presence_promql": presence}
        failing = [r for r in rows if r["increase_1h"] > 0]
        if failing:
            kinds = ", ".join(r["kind"] for r in failing)
            return failed(f"artifact load failures in the last hour ({kinds})", **evidence)
        # the failure counter is labelled: it has no series until the first failure — silence proves nothing
        # unless Prometheus sees the service at all
        if not ctx.prometheus.query_value(presence):
            return warned(
                f"Prometheus holds no series of the service ({presence} is empty): not scraped, so a failure would "
                "not show either",
                **evidence,
            )
        return passed("no artifact load failure in the last hour (the service is scraped)", **evidence)
    metrics = ctx.metrics
    rows = [{"kind": s.labels.get("kind", ""), "total": s.value} for s in metrics.series(FAILURES_METRIC)]
    evidence = {"source": "/metrics (counter since process start)", "by_kind": rows}
    total = sum(r["total"] for r in rows)
    if total:
        return failed(
            f"{total:g} artifact load failures since the service started (no Prometheus for a rate)", **evidence
        )
    if not metrics.has(ALWAYS_EXPORTED):
        return warned(f"/metrics lacks {ALWAYS_EXPORTED}: not recsys-service's exposition", **evidence)
    return passed("no artifact load failure since the service started", **evidence)
