"""Helpers shared by several checklist sections: tenant/surface pairs, per-tenant identities, refused audit
credentials, attested items."""

from __future__ import annotations

from typing import Any

from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, manual
from recsys_audit.params import attestation_for
from recsys_audit.probes import ProbeError
from recsys_audit.probes.service import ProbeResponse, Role


def tenant_surfaces(ctx: AuditContext) -> list[tuple[str, str]]:
    """Every declared (tenant, surface) pair, in params order."""
    return [(tenant.id, surface) for tenant in ctx.params.tenants for surface in tenant.surfaces]


def identity_for(ctx: AuditContext, tenant: str) -> Role | None:
    """The credential that speaks for a tenant: the other-tenant identity for its tenant, else the viewer."""
    other = ctx.params.auth.other_tenant
    if other and other.tenant == tenant:
        return "other_tenant" if other.credential else None
    return "viewer" if ctx.service.has_role("viewer") else None


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
