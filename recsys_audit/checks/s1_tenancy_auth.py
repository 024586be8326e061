"""Section 1 — Tenancy and authentication."""

from __future__ import annotations

from recsys_audit.catalog import Section
from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, Severity, failed, passed, warned

SECTION = Section(1, "Tenancy and authentication", notebook="01_tenancy_auth")


@SECTION.check(
    "auth.dev-auth-disabled",
    item="Ensure dev headers are disabled in production (DEV_AUTH_ENABLED=false)",
    title="Dev-header authentication is off in the deployment config",
    severity=Severity.CRITICAL,
    remediation="Set DEV_AUTH_ENABLED=false (api.env in Helm values); the service does not block it in production.",
    reference="recsys-http-and-config §3 (dev headers grant an auth context, not blocked in production)",
)
def dev_auth_disabled(ctx: AuditContext) -> Outcome:
    setting = ctx.config.get("DEV_AUTH_ENABLED")
    evidence = {"config": [setting.row()]}
    enabled = ctx.config.flag("DEV_AUTH_ENABLED")
    if enabled is None:
        return warned("DEV_AUTH_ENABLED is not visible (set in a secret the kit cannot read)", **evidence)
    if enabled:
        return failed(f"DEV_AUTH_ENABLED is on ({setting.source})", **evidence)
    return passed(f"DEV_AUTH_ENABLED is off ({setting.source})", **evidence)
