"""Section 7 — Safe rollout and rollback."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from recsys_audit.catalog import Section
from recsys_audit.checklist import EvidenceClass
from recsys_audit.checks.common import accepted, artifact_mode, awaiting_attestation, identity_for, tenant_surfaces
from recsys_audit.checks.config_rules import register_config_rules
from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, Severity, Status, failed, passed, skipped, warned, worst
from recsys_audit.probes import ProbeError
from recsys_audit.probes.config import parse_duration
from recsys_audit.probes.service import ProbeResponse

SECTION = Section(7, "Safe rollout and rollback", notebook="07_rollout_rollback")
register_config_rules(SECTION)  # file audit log

HTTP_REF = "recsys-http-and-config"
OPS_REF = "recsys-data-and-ops"
VERSION_FIELDS = ("config_version", "rules_version", "algo_version")
PLACEHOLDER_ALGO_SUFFIXES = ("@stub", "@local")
EXPOSURE_TAIL_BYTES = 5_000_000  # how much of the newest exposure file is searched for a request id


def served(ctx: AuditContext, tenant: str, surface: str) -> ProbeResponse:
    """One recommendation per tenant/surface (as that tenant's identity), shared by the checks of this section."""

    def ask() -> ProbeResponse:
        role = identity_for(ctx, tenant)
        if role is None:
            raise ProbeError(f"no credential for tenant {tenant} in params (auth.credentials / auth.other_tenant)")
        return accepted(ctx.service.recommend(tenant, surface, role=role))

    return ctx.memo(f"s7:recommend:{tenant}:{surface}", ask)


def _meta(response: ProbeResponse) -> dict[str, Any]:
    body = response.json() if response.status == 200 else response.json_or_none()  # a 200 that is not JSON: error
    meta = body.get("meta") if isinstance(body, dict) else None
    return meta if isinstance(meta, dict) else {}


def _request_id(response: ProbeResponse) -> str | None:
    return _meta(response).get("request_id") or response.headers.get("x-request-id")


# --- live versions ---------------------------------------------------------------------------------------------


@SECTION.check(
    "rollout.response-versions",
    items=("7.meta-versions",),
    evidence=EvidenceClass.LIVE,
    title="Responses carry config, rules and algo versions and a request id; no placeholder versions",
    severity=Severity.HIGH,
    remediation="Store tenant config and rules through the admin API (versions come from their ETags) and set "
    "RECSYS_ALGO_VERSION to the released version (not recsys-algo@local / @stub).",
    reference=f"{HTTP_REF} §2 (response meta)",
)
def response_versions(ctx: AuditContext) -> Outcome:
    production = ctx.params.target.production
    rows, statuses = [], []
    for tenant, surface in tenant_surfaces(ctx):
        response = served(ctx, tenant, surface)
        meta = _meta(response)
        row: dict[str, Any] = {"tenant": tenant, "surface": surface, "status": response.status}
        row.update({name: meta.get(name) or "MISSING" for name in VERSION_FIELDS})
        row["request_id"] = _request_id(response) or "MISSING"
        algo = str(meta.get("algo_version") or "")
        placeholder = algo.endswith(PLACEHOLDER_ALGO_SUFFIXES)
        row["placeholder"] = placeholder
        if response.status != 200 or "MISSING" in row.values():
            statuses.append(Status.FAIL)
        elif placeholder:
            statuses.append(Status.FAIL if production else Status.WARN)
        else:
            statuses.append(Status.PASS)
        rows.append(row)
    status = worst(*statuses)
    if status == Status.FAIL:
        bad = [f"{r['tenant']}/{r['surface']}" for r, s in zip(rows, statuses, strict=True) if s == Status.FAIL]
        return failed(f"versions missing or placeholder in: {', '.join(bad)}", responses=rows)
    if status == Status.WARN:
        return warned("placeholder algo_version (acceptable outside production only)", responses=rows)
    return passed(f"{len(rows)} response(s) carry all versions and a request id", responses=rows)


# /version's values when the binary was built without release ldflags (reference: recsys-http-and-config §1).
UNRELEASED_BUILD = {"version": "dev", "commit": "none", "date": "unknown"}
RELEASE_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")  # v1.2.3; pre-release, dirty or branch builds are not releases


@SECTION.check(
    "rollout.version-endpoint",
    items=("7.algo-version-procedure", "7.version-served"),
    evidence=EvidenceClass.LIVE,
    title="GET /version names a release build, the one the deployment pins",
    severity=Severity.MEDIUM,
    remediation="Build the image with the release ldflags (version, commit, date: the defaults are dev / none / "
    "unknown) from a release tag, and deploy it by that tag (api.image.tag) so a rollback knows what it returns to.",
    reference=f"{HTTP_REF} §1 (/version from ldflags), {OPS_REF} §4 (api.image)",
)
def version_endpoint(ctx: AuditContext) -> Outcome:
    response = ctx.service.get("/version")
    body = response.json() if response.status == 200 else None  # a 200 that is not JSON: error
    evidence: dict[str, Any] = {"probe": [response.evidence()]}
    if not isinstance(body, dict):
        return failed(f"GET /version -> {response.status}: no build information", **evidence)
    build = {name: str(body.get(name) or "") for name in UNRELEASED_BUILD}
    evidence["build"] = [build]
    version = build["version"]
    tag = image_reference(ctx.config.deployment.get("image"))[1] if _helm_visible(ctx) else ""
    evidence["image_tag"] = tag or "not visible"
    unreleased = [
        f"{name}={value or '(empty)'}" for name, value in build.items() if value in {"", UNRELEASED_BUILD[name]}
    ]
    if unreleased:
        verdict = failed if ctx.params.target.production else warned
        return verdict(f"the running build carries no release information: {', '.join(unreleased)}", **evidence)
    if not RELEASE_VERSION.match(version):
        return warned(f"the running build is {version}, not a release version", **evidence)
    if RELEASE_VERSION.match(tag) and tag.removeprefix("v") != version.removeprefix("v"):
        return warned(
            f"the service runs {version} but the deployment pins {tag}: a rollout in progress, or values that are "
            "not what is deployed",
            **evidence,
        )
    pinned = f", as the deployment pins ({tag})" if RELEASE_VERSION.match(tag) else ""
    return passed(f"release {version} (commit {build['commit']}, built {build['date']}){pinned}", **evidence)


@SECTION.check(
    "rollout.config-etag-matches",
    items=("7.config-rules-procedure", "7.version-served"),
    evidence=EvidenceClass.LIVE,
    title="Admin config/rules ETags equal the versions the service serves",
    severity=Severity.MEDIUM,
    remediation="A mismatch means replicas serve a cached older document: invalidate config/rules on every replica "
    "(or wait RECSYS_CONFIG_CACHE_TTL / RECSYS_RULES_CACHE_TTL) and check the rollout procedure.",
    reference=f"{HTTP_REF} §2 (admin ETag; versions = DB etag)",
)
def config_etag_matches(ctx: AuditContext) -> Outcome:
    rows, statuses = [], []
    for tenant, surface in tenant_surfaces(ctx):
        meta = _meta(served(ctx, tenant, surface))
        for document, field in (("config", "config_version"), ("rules", "rules_version")):
            admin = accepted(
                ctx.service.get(
                    f"/v1/admin/tenants/{tenant}/{document}",
                    role=identity_for(ctx, tenant) or "viewer",
                    headers={ctx.params.auth.tenant_header: tenant},
                )
            )
            etag = (admin.headers.get("etag") or "").strip('"') or None
            version = meta.get(field)
            if admin.status == 404 and not version:
                verdict = Status.PASS  # no document stored and none served
            elif admin.status != 200 or not etag or not version:
                verdict = Status.FAIL
            else:
                verdict = Status.PASS if etag == version else Status.WARN
            statuses.append(verdict)
            rows.append(
                {
                    "tenant": tenant,
                    "surface": surface,
                    "document": document,
                    "admin_status": admin.status,
                    "etag": etag,
                    "served": version,
                    "verdict": str(verdict),
                }
            )
    status = worst(*statuses)
    if status == Status.FAIL:
        return failed("a served version is missing or the admin document cannot be read", comparisons=rows)
    if status == Status.WARN:
        return warned("served versions differ from the stored ETags (stale replica caches)", comparisons=rows)
    return passed(f"{len(rows)} ETag(s) equal the served versions", comparisons=rows)


# --- audit trail -----------------------------------------------------------------------------------------------

_TENANT_UUID = "SELECT id FROM tenants WHERE external_id = %s"
_RECENT_UPDATES = """
SELECT count(*) AS updates,
       count(*) FILTER (WHERE coalesce(actor_sub, '') = '') AS without_actor,
       max(occurred_at) AS latest
FROM (SELECT actor_sub, occurred_at FROM audit_log
      WHERE tenant_id = %s AND action = %s
      ORDER BY occurred_at DESC LIMIT 100) recent
"""


@SECTION.check(
    "rollout.audit-log-db",
    items=("7.config-rules-procedure",),
    evidence=EvidenceClass.DATA,
    title="audit_log records config and rules updates with their actors",
    severity=Severity.MEDIUM,
    remediation="Change config and rules only through the admin API with an authenticated subject (the service skips "
    "audit rows when the actor is empty); never write the *_current tables by hand.",
    reference=f"{OPS_REF} §1.3 (versioning, audit actions), {HTTP_REF} §8 (DB audit)",
)
def audit_log_db(ctx: AuditContext) -> Outcome:
    rows, statuses = [], []
    for tenant in ctx.params.tenants:
        tenant_uuid = ctx.db.scalar(_TENANT_UUID, (tenant.id,))
        if tenant_uuid is None:
            rows.append({"tenant": tenant.id, "action": "-", "updates": "tenant not in DB"})
            statuses.append(Status.FAIL)
            continue
        for action in ("config.update", "rules.update"):
            found = ctx.db.query(_RECENT_UPDATES, (tenant_uuid, action))[0]
            rows.append({"tenant": tenant.id, "action": action, **found})
            if found["updates"] == 0:
                statuses.append(Status.WARN)
            elif found["without_actor"]:
                statuses.append(Status.FAIL)
            else:
                statuses.append(Status.PASS)
    evidence = {"sql": " ".join(_RECENT_UPDATES.split()), "audit": rows}
    status = worst(*statuses)
    if status == Status.FAIL:
        return failed("audit rows without an actor, or a tenant missing from the DB", **evidence)
    if status == Status.WARN:
        return warned("no config/rules update recorded for some tenants (no trail to roll back by)", **evidence)
    return passed("config and rules updates are recorded with actors", **evidence)


@SECTION.check(
    "rollout.audit-route",
    items=("7.config-rules-procedure",),
    evidence=EvidenceClass.LIVE,
    title="The admin audit route answers for a viewer",
    severity=Severity.MEDIUM,
    remediation="Give the on-call identity the viewer role (AUTH_VIEWER_ROLE) so the rollback runbook's first step "
    "(GET /v1/admin/tenants/{id}/audit) works.",
    reference=f"{HTTP_REF} §2 (admin audit)",
)
def audit_route(ctx: AuditContext) -> Outcome:
    rows = []
    for tenant in ctx.params.tenants:
        response = accepted(
            ctx.service.get(
                f"/v1/admin/tenants/{tenant.id}/audit",
                role=identity_for(ctx, tenant.id) or "viewer",
                params={"limit": 5},
                headers={ctx.params.auth.tenant_header: tenant.id},
            )
        )
        body = response.json() if response.status == 200 else response.json_or_none()
        entries = body.get("entries") if isinstance(body, dict) else None
        actions = sorted({e.get("action") for e in entries or [] if isinstance(e, dict)})
        rows.append({**response.evidence(), "entries": len(entries or []), "actions": ", ".join(actions) or "-"})
    bad = [row["request"] for row in rows if row["status"] != 200]
    if bad:
        return failed(f"audit route not answering for a viewer: {', '.join(bad)}", probes=rows)
    return passed(f"audit route answers for {len(rows)} tenant(s)", probes=rows)


def _exposure_files(ctx: AuditContext) -> list[Path]:
    files: list[Path] = []
    for name in ctx.params.logs.exposure:
        path = ctx.params.path(name)
        if path.is_dir():
            files.extend(p for p in path.glob("*.jsonl") if p.is_file())
        elif path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


def find_exposure(files: list[Path], request_id: str) -> tuple[Path, dict[str, Any]] | None:
    """The exposure record of a request id, searched in the tail of the newest files."""
    needle = request_id.encode()
    for path in files[:2]:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - EXPOSURE_TAIL_BYTES))
            for line in reversed(handle.read().splitlines()):
                if needle not in line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("request_id") == request_id:
                    return path, record
    return None


@SECTION.check(
    "rollout.request-traceable",
    items=("7.version-served",),
    evidence=EvidenceClass.DATA,
    title="A live request id can be traced to the config, rules and algo versions that served it",
    severity=Severity.MEDIUM,
    remediation="Turn on the exposure log (EXPOSURE_LOG_PATH, format service_v1) and keep it where the on-call can "
    "search it; name it in params logs.exposure.",
    reference=f"{HTTP_REF} §7 (exposure log), {OPS_REF} §3.5",
)
def request_traceable(ctx: AuditContext) -> Outcome:
    tenant, surface = tenant_surfaces(ctx)[0]
    response = served(ctx, tenant, surface)
    request_id = _request_id(response)
    meta = _meta(response)
    evidence: dict[str, Any] = {"request_id": request_id, "served": {k: meta.get(k) for k in VERSION_FIELDS}}
    if response.status != 200 or not request_id:
        return failed(f"no traceable live request (HTTP {response.status}, request id {request_id})", **evidence)
    files = _exposure_files(ctx)
    if not files:
        return warned("no exposure log in params (logs.exposure): the question cannot be answered later", **evidence)
    found = find_exposure(files, request_id)
    if found is None:
        return failed(f"request {request_id} not found in the newest exposure log files", **evidence)
    path, record = found
    logged = {k: record.get(k) for k in VERSION_FIELDS}
    evidence.update({"exposure_file": path.name, "logged": logged})
    differ = [k for k in VERSION_FIELDS if meta.get(k) and logged.get(k) != meta.get(k)]
    if differ or not all(logged.values()):
        return failed(f"exposure record incomplete or differs on: {', '.join(differ) or 'missing fields'}", **evidence)
    return passed(f"request {request_id}: versions found in {path.name}", **evidence)


# --- rollback ability ------------------------------------------------------------------------------------------

_VERSIONS_KEPT = "SELECT count(*) FROM (SELECT 1 FROM {table} WHERE tenant_id = %s LIMIT 2) kept"


@SECTION.check(
    "rollout.versions-retained",
    items=("7.config-rules-procedure",),
    evidence=EvidenceClass.DATA,
    title="At least two config and rules versions are retained per tenant",
    severity=Severity.MEDIUM,
    remediation="Keep version history (the *_versions tables are append-only; do not truncate them) and ship "
    "config/rules changes as new versions through the admin API.",
    reference=f"{OPS_REF} §1.3 (config/rules versioning)",
)
def versions_retained(ctx: AuditContext) -> Outcome:
    rows = []
    for tenant in ctx.params.tenants:
        tenant_uuid = ctx.db.scalar(_TENANT_UUID, (tenant.id,))
        row: dict[str, Any] = {"tenant": tenant.id}
        for table in ("tenant_config_versions", "tenant_rule_versions"):
            row[table] = 0 if tenant_uuid is None else ctx.db.scalar(_VERSIONS_KEPT.format(table=table), (tenant_uuid,))
        rows.append(row)
    short = [r["tenant"] for r in rows if min(r["tenant_config_versions"], r["tenant_rule_versions"]) < 2]
    evidence = {"sql": _VERSIONS_KEPT, "versions": rows}
    if short:
        return failed(f"fewer than two config or rules versions for: {', '.join(short)}", **evidence)
    return passed("every tenant has a previous config and rules version to roll back to", **evidence)


def _helm_visible(ctx: AuditContext) -> bool:
    return any(source.kind == "helm_values" for source in ctx.params.config_sources)


def image_reference(image: Any) -> tuple[str, str]:
    """(repository, tag or digest) from a Helm ``image`` value (mapping or ``repo:tag`` string)."""
    if isinstance(image, dict):
        repository = str(image.get("repository", ""))
        if image.get("digest"):
            return repository, str(image["digest"])
        return repository, str(image.get("tag") or "")
    text = str(image or "")
    if "@" in text:
        repository, _, digest = text.partition("@")
        return repository, digest
    head, _, tag = text.rpartition(":")
    if not head or "/" in tag:
        return text, ""
    return head, tag


@SECTION.check(
    "rollout.image-pinned",
    items=("7.algo-version-procedure",),
    evidence=EvidenceClass.CONFIG,
    title="The service image is pinned to a version (not latest)",
    severity=Severity.HIGH,
    remediation="Set api.image.tag to a release tag or digest (e.g. v0.1.0); 'latest' makes a rollback redeploy "
    "whatever was pushed last.",
    reference=f"{OPS_REF} §4 (values.yaml uses :latest)",
)
def image_pinned(ctx: AuditContext) -> Outcome:
    if not _helm_visible(ctx):
        return skipped("no Helm values in config_sources: the image is not visible")
    image = ctx.config.deployment.get("image")
    repository, tag = image_reference(image)
    evidence = {"repository": repository or None, "tag": tag or None}
    if image is None:
        return failed("no api.image in the values: the chart default is ...:latest", **evidence)
    if not tag or tag == "latest":
        return failed(f"image {repository} is not pinned (tag {tag or 'missing'})", **evidence)
    return passed(f"image pinned to {tag}", **evidence)


def replica_count(ctx: AuditContext) -> int:
    value = ctx.config.deployment.get("replicaCount", 1)  # the chart's default is 1
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ProbeError(f"api.replicaCount is not a number: {value!r}") from None


@SECTION.check(
    "rollout.replicas",
    items=("7.algo-version-procedure",),
    evidence=EvidenceClass.CONFIG,
    title="The service runs at least two replicas",
    severity=Severity.HIGH,
    remediation="Set api.replicaCount >= 2 (the production example uses 3) so a rollout or a pod loss keeps serving.",
    reference=f"{OPS_REF} §4 (replicaCount)",
)
def replicas(ctx: AuditContext) -> Outcome:
    if not _helm_visible(ctx):
        return skipped("no Helm values in config_sources: replicas are not visible")
    count = replica_count(ctx)
    evidence = {
        "replicaCount": count,
        "source": "api.replicaCount" if "replicaCount" in ctx.config.deployment else "chart default",
    }
    if count < 2:
        return failed(f"{count} replica: a rollout or pod loss is an outage", **evidence)
    return passed(f"{count} replicas", **evidence)


@SECTION.check(
    "rollout.cache-invalidation-scope",
    items=("7.config-rules-procedure", "7.manifest-procedure"),
    evidence=EvidenceClass.CONFIG,
    title="After a rollback, every replica serves the restored version within the policy",
    severity=Severity.MEDIUM,
    remediation="Admin cache invalidation clears only the replica that serves it; the others keep the old config, "
    "rules or manifest for up to their cache TTL. Lower RECSYS_CONFIG_CACHE_TTL / RECSYS_RULES_CACHE_TTL / "
    "RECSYS_ARTIFACT_MANIFEST_TTL to policies.rollback_staleness_max_s, or make the procedure invalidate every pod "
    "(or restart the rollout).",
    reference=f"{OPS_REF} §1.8 (invalidation clears only the serving replica)",
)
def cache_invalidation_scope(ctx: AuditContext) -> Outcome:
    if not _helm_visible(ctx):
        return skipped("no Helm values in config_sources: replicas are not visible")
    count = replica_count(ctx)
    limit = ctx.params.policies.rollback_staleness_max_s
    names = ["RECSYS_CONFIG_CACHE_TTL", "RECSYS_RULES_CACHE_TTL"]
    if artifact_mode(ctx):
        names.append("RECSYS_ARTIFACT_MANIFEST_TTL")  # artifacts are keyed by version: only the manifest goes stale
    ttls = {name: parse_duration(ctx.config.value(name)) for name in names}
    rows = [{"variable": name, "ttl_s": ttl if ttl is not None else "not visible"} for name, ttl in ttls.items()]
    evidence = {"replicas": count, "ttls": rows, "policy_max_s": limit}
    if count <= 1:
        return passed("one replica: the admin invalidation reaches it", **evidence)
    unknown = [name for name, ttl in ttls.items() if ttl is None]
    bound = max((ttl for ttl in ttls.values() if ttl is not None), default=0.0)
    evidence["staleness_bound_s"] = bound
    too_long = [f"{name}={ctx.config.value(name)}" for name, ttl in ttls.items() if ttl is not None and ttl > limit]
    if too_long:
        return failed(
            f"invalidation clears 1 of {count} replicas; the others serve the old version for up to {bound:g} s "
            f"({', '.join(too_long)}; policy {limit} s)",
            **evidence,
        )
    if unknown:
        return warned(f"invalidation clears 1 of {count} replicas; not visible: {', '.join(unknown)}", **evidence)
    return passed(
        f"invalidation clears 1 of {count} replicas; the others converge within {bound:g} s (policy {limit} s)",
        **evidence,
    )


# --- documented procedures -------------------------------------------------------------------------------------


def _attested(ctx: AuditContext, check_id: str, what: str) -> Outcome:
    return awaiting_attestation(ctx, check_id, f"attest that {what}")


@SECTION.check(
    "rollout.procedures-documented",
    items=("7.ship-rollback-procedures",),
    evidence=EvidenceClass.ATTESTED,
    cannot_fail="manual by design: procedures are documents a reviewer attests; the abilities behind them are probed "
    "by the other rollout checks",
    title="Ship and rollback procedures are documented for config/rules, manifests and algorithm versions",
    severity=Severity.MEDIUM,
    remediation="Write the procedures (admin API + audit log; manifest copy-back + invalidate; image rollback) and "
    "attest them in params (attestations: check rollout.procedures-documented).",
    reference=f"{OPS_REF} §8 (rollback runbook), §3.4 (manifest rollback)",
)
def procedures_documented(ctx: AuditContext) -> Outcome:
    return _attested(ctx, "rollout.procedures-documented", "ship and rollback procedures exist for all three changes")


@SECTION.check(
    "rollout.ship-gates-documented",
    items=("7.ship-gates",),
    evidence=EvidenceClass.ATTESTED,
    cannot_fail="manual by design: shipping gates are a team decision only a reviewer can attest",
    title="Gates and criteria for shipping are documented",
    severity=Severity.MEDIUM,
    remediation="Document the go/no-go gates (this audit passing, load-test SLOs, error/empty-rate budgets after "
    "canary) and attest them in params.",
    reference="production-readiness checklist §7",
)
def ship_gates_documented(ctx: AuditContext) -> Outcome:
    return _attested(ctx, "rollout.ship-gates-documented", "shipping gates and their criteria are documented")
