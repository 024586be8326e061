"""Helpers shared by several checklist sections: tenant/surface pairs, per-tenant identities, refused audit
credentials, the serving mode as every source sees it, secret strength and unkeyed hashes, attested items."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, manual
from recsys_audit.params import attestation_for
from recsys_audit.probes import ProbeError
from recsys_audit.probes.service import ProbeResponse, Role

SERVING_ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
MANIFEST_AGE = "recsys_artifact_manifest_age_seconds"
MANIFEST_ARTIFACTS = "recsys_artifact_manifest_artifacts"
# Values found in example files and docs: a salt or secret equal to (or containing) one of them is not a secret.
EXAMPLE_VALUES = {
    "changeme",
    "change-me",
    "change_me",
    "secret",
    "salt",
    "example",
    "test",
    "dev",
    "demo",
    "default",
    "password",
    "recsys",
    "replace-me",
    "replaceme",
    "your-salt",
    "your-secret",
    "xxx",
    "todo",
}


def tenant_surfaces(ctx: AuditContext) -> list[tuple[str, str]]:
    """Every declared (tenant, surface) pair, in params order."""
    return [(tenant.id, surface) for tenant in ctx.params.tenants for surface in tenant.surfaces]


def identity_for(ctx: AuditContext, tenant: str) -> Role | None:
    """The credential that speaks for a tenant: the other-tenant identity for its tenant, else the viewer."""
    other = ctx.params.auth.other_tenant
    if other and other.tenant == tenant:
        return "other_tenant" if other.credential else None
    return "viewer" if ctx.service.has_role("viewer") else None


def serving_role(ctx: AuditContext) -> Role:
    """The least-privileged identity the params give for serving calls."""
    for role in SERVING_ROLES:
        if ctx.service.has_role(role):
            return role
    raise ProbeError("no serving credential in params (auth.credentials.viewer/operator/admin)")


def credential_field(role: str) -> str:
    """Where params hold a role's credential."""
    return "auth.other_tenant.credential" if role == "other_tenant" else f"auth.credentials.{role}"


def accepted(response: ProbeResponse) -> ProbeResponse:
    """``response``, unless the audit's own credential was refused (401 to a request sent as a role).

    A refused audit credential says nothing about the target's controls: it raises :class:`ProbeError`, which the
    notebook records as an ``error`` finding naming the role and the fix — never a pass, never a false fail.
    """
    if response.status == 401 and response.role != "anonymous":
        code = response.problem_code or "no problem code"
        raise ProbeError(
            f"the audit's {response.role} credential was refused ({response.method} {response.path} -> 401, {code}): "
            f"renew or correct {credential_field(response.role)} in params (expired token, revoked key, wrong tenant?)"
        )
    return response


# --- the serving mode, from every source ----------------------------------------------------------------------


@dataclass
class ModeEvidence:
    """What each source says about artifact mode: the params' declaration, the config switch, the service's
    manifest gauges and published manifests. One row per source: ``mode`` is artifact, db_only or None (silent);
    ``decisive`` is False for a reading that is consistent with DB-only but does not prove it (gauges at 0)."""

    rows: list[dict[str, Any]]

    @property
    def artifact(self) -> bool | None:
        """True when any source says artifact mode; False when a decisive source says DB-only and none says
        artifact; None when no source can tell."""
        if any(row["mode"] == "artifact" for row in self.rows):
            return True
        if any(row["mode"] == "db_only" and row["decisive"] for row in self.rows):
            return False
        return None

    def saying(self, mode: str) -> list[str]:
        return [row["source"] for row in self.rows if row["mode"] == mode]


def configured_manifest_template(ctx: AuditContext) -> str | None:
    """The service's RECSYS_ARTIFACT_MANIFEST_TEMPLATE when the config shows it."""
    try:
        return ctx.config.value("RECSYS_ARTIFACT_MANIFEST_TEMPLATE") or None
    except ProbeError:
        return None


def audited_manifest_template(ctx: AuditContext) -> str | None:
    """Where the kit reads manifests (see :attr:`AuditContext.manifest_template`)."""
    return ctx.manifest_template


def _row(source: str, observation: str, mode: str | None, decisive: bool = True) -> dict[str, Any]:
    return {"source": source, "observation": observation, "mode": mode, "decisive": decisive}


def mode_evidence(ctx: AuditContext) -> ModeEvidence:
    """Every source's reading of the serving mode (shared by the checks of a kernel)."""

    def observe() -> ModeEvidence:
        declared = {tenant.serving_mode for tenant in ctx.params.tenants if tenant.serving_mode}
        declared_mode = "artifact" if "artifact" in declared else "db_only" if declared else None
        rows = [_row("declared (tenants[].serving_mode)", ", ".join(sorted(declared)) or "nothing", declared_mode)]
        try:
            setting = ctx.config.get("RECSYS_ARTIFACT_MODE_ENABLED")
            enabled = ctx.config.flag("RECSYS_ARTIFACT_MODE_ENABLED")
            observation = f"RECSYS_ARTIFACT_MODE_ENABLED={setting.value if setting.value is not None else '?'}"
            mode = None if enabled is None else "artifact" if enabled else "db_only"
            rows.append(_row(f"config ({setting.source})", observation, mode))
        except ProbeError as exc:
            rows.append(_row("config", str(exc), None))
        try:
            metrics = ctx.metrics
            artifacts, age = metrics.total(MANIFEST_ARTIFACTS), metrics.total(MANIFEST_AGE)
            observation = f"{MANIFEST_ARTIFACTS}={artifacts:g}, {MANIFEST_AGE}={age:g}"
            if not metrics.has(MANIFEST_ARTIFACTS):
                rows.append(_row("metrics (/metrics)", "manifest gauges not exported", None))
            elif artifacts > 0 or age > 0:
                rows.append(_row("metrics (/metrics)", observation, "artifact"))
            else:  # 0 when artifact mode is off — and also before any manifest was loaded
                rows.append(_row("metrics (/metrics)", observation + " (no manifest loaded)", "db_only", False))
        except ProbeError as exc:
            rows.append(_row("metrics (/metrics)", str(exc), None))
        template = audited_manifest_template(ctx)
        if template:
            from recsys_audit.probes.manifest import manifest_uri

            try:
                found = [
                    f"{tenant}/{surface}"
                    for tenant, surface in tenant_surfaces(ctx)
                    if ctx.manifests.exists(manifest_uri(template, tenant, surface))
                ]
                observation = f"manifests published for {', '.join(found)}" if found else "no manifest published"
                rows.append(_row(f"data ({template})", observation, "artifact" if found else None))
            except ProbeError as exc:
                rows.append(_row(f"data ({template})", str(exc), None))
        return ModeEvidence(rows)

    return ctx.memo("common:mode-evidence", observe)


def artifact_mode(ctx: AuditContext) -> bool:
    """Whether any source (declaration, config, metrics, published manifests) says the service serves artifacts."""
    return mode_evidence(ctx).artifact is True


# --- secrets -----------------------------------------------------------------------------------------------------


def secret_problem(value: str, min_length: int) -> str | None:
    """Why a salt or hash secret is not a secret (empty, an example value, short, low variety), or None."""
    lowered = value.strip().lower()
    if not lowered:
        return "empty"
    if lowered in EXAMPLE_VALUES or any(word in lowered for word in ("example", "changeme", "change-me", "replace")):
        return "an example value"
    if len(value) < min_length:
        return f"shorter than {min_length} characters"
    if len(set(value)) < 4:
        return "too few distinct characters"
    return None


def keyed_hash(key: str, value: str) -> str:
    """Lower-case hex HMAC-SHA256 of ``value`` keyed with ``key``, as recsys-service stores hashes."""
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


def unkeyed_hashes(value: str) -> dict[str, str]:
    """What the service stores for ``value`` when its salt or hash secret is empty, by how it was made."""
    return {
        "HMAC-SHA256 with an empty key": keyed_hash("", value),
        "plain SHA-256": hashlib.sha256(value.encode()).hexdigest(),
    }


def awaiting_attestation(ctx: AuditContext, check_id: str, summary: str, **evidence: Any) -> Outcome:
    """A ``manual`` outcome that shows the attestation params hold for the check (the engine judges its age)."""
    attestation = attestation_for(ctx.params, check_id)
    evidence["max_age_days"] = ctx.params.policies.attestation_max_age_days
    if attestation:
        evidence["attestation"] = {"by": attestation.by, "date": str(attestation.date), "url": attestation.evidence_url}
    return manual(summary, **evidence)
