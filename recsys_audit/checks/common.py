"""Helpers shared by several checklist sections: tenant/surface pairs, per-tenant identities, attested items."""

from __future__ import annotations

from typing import Any

from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, manual
from recsys_audit.params import attestation_for
from recsys_audit.probes import ProbeError
from recsys_audit.probes.service import Role


def tenant_surfaces(ctx: AuditContext) -> list[tuple[str, str]]:
    """Every declared (tenant, surface) pair, in params order."""
    return [(tenant.id, surface) for tenant in ctx.params.tenants for surface in tenant.surfaces]


def identity_for(ctx: AuditContext, tenant: str) -> Role | None:
    """The credential that speaks for a tenant: the other-tenant identity for its tenant, else the viewer."""
    other = ctx.params.auth.other_tenant
    if other and other.tenant == tenant:
        return "other_tenant" if other.credential else None
    return "viewer" if ctx.service.has_role("viewer") else None


def artifact_mode(ctx: AuditContext) -> bool:
    """Artifact mode from the deployment config, else from the params' declared serving modes."""
    try:
        enabled = ctx.config.flag("RECSYS_ARTIFACT_MODE_ENABLED")
    except ProbeError:
        enabled = None
    if enabled is not None:
        return enabled
    return any(tenant.serving_mode == "artifact" for tenant in ctx.params.tenants)


def awaiting_attestation(ctx: AuditContext, check_id: str, summary: str, **evidence: Any) -> Outcome:
    """A ``manual`` outcome that shows the attestation params hold for the check (the engine judges its age)."""
    attestation = attestation_for(ctx.params, check_id)
    evidence["max_age_days"] = ctx.params.policies.attestation_max_age_days
    if attestation:
        evidence["attestation"] = {"by": attestation.by, "date": str(attestation.date), "url": attestation.evidence_url}
    return manual(summary, **evidence)
