"""Section 1 — Tenancy and authentication: the deployment's auth config, then live negative probes.

Live probes only read: GETs, recommend POSTs, CORS preflights, and write-denial PUTs whose ``If-Match`` can never
match (a broken RBAC answers 409 and still writes nothing). A request counts as refused when it gets 401 or 403.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any
from urllib.parse import urlparse

from recsys_audit.catalog import Section
from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, Severity, Status, failed, manual, passed, skipped, warned, worst
from recsys_audit.probes import ProbeError
from recsys_audit.probes import tokens as crafted
from recsys_audit.probes.service import IMPOSSIBLE_ETAG, ProbeResponse, recommend_body

SECTION = Section(1, "Tenancy and authentication", notebook="01_tenancy_auth")

HTTP_REF = "recsys-http-and-config §3 (auth and tenancy)"
ENV_REF = "recsys-http-and-config §4 (environment; not enforced in production)"
REFUSED = (401, 403)
UNLISTED_ORIGIN = "https://recsys-audit-unlisted-origin.invalid"
ITEM_MECHANISM = "Decide the production auth mechanism: JWT (recommended) or API keys (server-to-server)"
ITEM_JWT = (
    "If using JWT: JWT_JWKS_URL, JWT_ISSUER, JWT_AUDIENCE; AUTH_JWKS_ALLOWED_HOSTS; AUTH_ALLOW_INSECURE_JWKS=false"
)
ITEM_API_KEYS = "If using API keys: API_KEY_ENABLED=true, store API_KEY_HASH_SECRET securely, rotate keys"
ITEM_TENANCY = "Decide and document tenancy source: tenant claim(s) in JWT and/or header"
ITEM_RBAC = "Validate RBAC rules for admin endpoints: AUTH_VIEWER_ROLE, AUTH_OPERATOR_ROLE, AUTH_ADMIN_ROLE"


# --- helpers ---------------------------------------------------------------------------------------------------------


def audited_tenant(ctx: AuditContext) -> str:
    return ctx.params.tenants[0].id


def other_tenant(ctx: AuditContext) -> str | None:
    return ctx.params.auth.other_tenant.tenant if ctx.params.auth.other_tenant else None


def admin_config_path(tenant: str, document: str = "config") -> str:
    return f"/v1/admin/tenants/{tenant}/{document}"


def probe_row(probe: str, response: ProbeResponse, expected: str, ok: bool) -> dict[str, Any]:
    return {"probe": probe, **response.evidence(), "expected": expected, "verdict": "ok" if ok else "NOT REFUSED"}


def refusal_outcome(rows: list[dict[str, Any]], what: str, **evidence: Any) -> Outcome:
    """Pass when every probe row is ok; otherwise fail naming the probes that got through."""
    bad = [row for row in rows if row["verdict"] != "ok"]
    if bad:
        listed = "; ".join(f"{row['probe']} → {row['status']}" for row in bad)
        return failed(f"{what} not refused: {listed}", probes=rows, **evidence)
    return passed(f"{what}: all {len(rows)} probe(s) refused as expected", probes=rows, **evidence)


def flag_outcome(ctx: AuditContext, name: str, want: bool, why: str) -> Outcome:
    """A one-variable config check: pass when the flag has the wanted value."""
    setting = ctx.config.get(name)
    value = ctx.config.flag(name)
    evidence = {"config": ctx.config.rows([name])}
    if value is None:
        return warned(f"{name} is not visible in the config sources", **evidence)
    if value != want:
        return failed(f"{name}={setting.value} ({setting.source}): {why}", **evidence)
    return passed(f"{name}={setting.value} ({setting.source})", **evidence)


def jwt_in_use(ctx: AuditContext) -> bool:
    """JWT is on per config, or declared in params while the config cannot show it."""
    enabled = ctx.config.flag("JWT_AUTH_ENABLED")
    return bool(enabled) or (enabled is None and "jwt" in ctx.params.auth.mechanisms)


def api_keys_in_use(ctx: AuditContext) -> bool:
    enabled = ctx.config.flag("API_KEY_ENABLED")
    return bool(enabled) or (enabled is None and "api_key" in ctx.params.auth.mechanisms)


def claim_set(ctx: AuditContext, roles: tuple[str, ...] = ()) -> crafted.ClaimSet:
    jwt = ctx.params.auth.jwt
    return crafted.ClaimSet(
        tenant=audited_tenant(ctx),
        issuer=jwt.issuer or ctx.config.value("JWT_ISSUER"),
        audience=jwt.audience or ctx.config.value("JWT_AUDIENCE"),
        tenant_claim=jwt.tenant_claim,
        role_claim=jwt.role_claim,
        roles=roles,
    )


def admin_role_name(ctx: AuditContext) -> str:
    return ctx.config.value("AUTH_ADMIN_ROLE") or "admin"


def jwks(ctx: AuditContext) -> crafted.JwksDocument:
    def fetch() -> crafted.JwksDocument:
        url = ctx.params.auth.jwt.jwks_url or ctx.config.value("JWT_JWKS_URL")
        if not url:
            raise ProbeError("no JWKS URL (auth.jwt.jwks_url in params, or JWT_JWKS_URL in config)")
        bundle = ctx.params.auth.jwt.ca_bundle
        verify: bool | str = str(ctx.params.path(bundle)) if bundle else ctx.params.target.verify_tls
        return crafted.fetch_jwks(url, verify, ctx.params.target.timeout_s)

    return ctx.memo("s1:jwks", fetch)


def bearer_probe(ctx: AuditContext, probe: str, token: str, path: str | None = None) -> dict[str, Any]:
    """GET an admin document of the audited tenant with a crafted bearer token and no tenant header."""
    path = path or admin_config_path(audited_tenant(ctx))
    response = ctx.service.get(path, headers={"Authorization": f"Bearer {token}"})
    return probe_row(probe, response, "401", response.status in REFUSED)


# --- configuration ---------------------------------------------------------------------------------------------------


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


@SECTION.check(
    "auth.auth-required",
    item=ITEM_MECHANISM,
    title="AUTH_REQUIRED is on",
    severity=Severity.CRITICAL,
    remediation="Set AUTH_REQUIRED=true; with it off, protected routes answer anonymous callers.",
    reference=ENV_REF,
)
def auth_required(ctx: AuditContext) -> Outcome:
    return flag_outcome(ctx, "AUTH_REQUIRED", True, "protected routes accept requests without credentials")


@SECTION.check(
    "auth.production-mechanism",
    item=ITEM_MECHANISM,
    title="A production auth mechanism (JWT or API keys) is declared and enabled",
    severity=Severity.CRITICAL,
    remediation="Declare auth.mechanisms in params and enable it: JWT_AUTH_ENABLED=true with JWKS/issuer/audience, "
    "and/or API_KEY_ENABLED=true with API_KEY_HASH_SECRET.",
    reference=HTTP_REF,
)
def production_mechanism(ctx: AuditContext) -> Outcome:
    declared = ctx.params.auth.mechanisms
    switches = {"jwt": "JWT_AUTH_ENABLED", "api_key": "API_KEY_ENABLED"}
    enabled = {mechanism: ctx.config.flag(name) for mechanism, name in switches.items()}
    evidence = {"declared": declared, "config": ctx.config.rows([*switches.values(), "DEV_AUTH_ENABLED"])}
    if not declared:
        return failed("no auth mechanism declared in params (auth.mechanisms)", **evidence)
    off = [m for m in declared if enabled[m] is False]
    if off:
        return failed(f"declared {', '.join(off)} but {', '.join(switches[m] for m in off)} is off", **evidence)
    if not any(enabled.values()):
        return warned("no production auth mechanism is visibly enabled in the config sources", **evidence)
    return passed(f"{', '.join(declared)} declared and enabled", **evidence)


@SECTION.check(
    "auth.jwt-config",
    item=ITEM_JWT,
    title="JWT: https JWKS on the allow-list, insecure JWKS off, issuer and audience set, RS algorithms only",
    severity=Severity.HIGH,
    remediation="Set JWT_JWKS_URL to an https URL whose host is listed in AUTH_JWKS_ALLOWED_HOSTS, keep "
    "AUTH_ALLOW_INSECURE_JWKS=false, set JWT_ISSUER and JWT_AUDIENCE, and keep JWT_ALLOWED_ALGORITHMS asymmetric.",
    reference="recsys-http-and-config §3 (JWKS guard), §4",
)
def jwt_config(ctx: AuditContext) -> Outcome:
    if not jwt_in_use(ctx):
        return skipped("JWT authentication is off (JWT_AUTH_ENABLED)")
    config = ctx.config
    names = [
        "JWT_AUTH_ENABLED",
        "JWT_JWKS_URL",
        "AUTH_JWKS_ALLOWED_HOSTS",
        "AUTH_ALLOW_INSECURE_JWKS",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "JWT_ALLOWED_ALGORITHMS",
    ]
    problems: list[tuple[Status, str]] = []
    url = config.get("JWT_JWKS_URL")
    host = urlparse(url.value or "").hostname or ""
    if url.value is None:
        problems.append((Status.WARN, "JWT_JWKS_URL not visible"))
    elif not (url.value or "").lower().startswith("https://"):
        problems.append((Status.FAIL, "JWT_JWKS_URL is not https"))
    allowed = config.get("AUTH_JWKS_ALLOWED_HOSTS")
    allowed_hosts = [h.strip().lower() for h in (allowed.value or "").split(",") if h.strip()]
    if allowed.value is None and allowed.state == "unknown":
        problems.append((Status.WARN, "AUTH_JWKS_ALLOWED_HOSTS not visible"))
    elif not allowed_hosts:
        problems.append((Status.FAIL, "AUTH_JWKS_ALLOWED_HOSTS is empty: any JWKS host is trusted"))
    elif host and host.lower() not in allowed_hosts:
        problems.append((Status.FAIL, f"JWKS host {host} is not in AUTH_JWKS_ALLOWED_HOSTS (startup aborts)"))
    if config.flag("AUTH_ALLOW_INSECURE_JWKS"):
        problems.append((Status.FAIL, "AUTH_ALLOW_INSECURE_JWKS=true"))
    for name, declared in (("JWT_ISSUER", ctx.params.auth.jwt.issuer), ("JWT_AUDIENCE", ctx.params.auth.jwt.audience)):
        setting = config.get(name)
        if setting.state == "unknown" or setting.state == "hidden":
            continue
        if not setting.value:
            problems.append((Status.FAIL, f"{name} is empty"))
        elif declared and declared != setting.value:
            problems.append((Status.FAIL, f"{name} differs from the value declared in params (auth.jwt)"))
    algorithms = (config.value("JWT_ALLOWED_ALGORITHMS") or "RS256").upper()
    weak = [a for a in algorithms.replace(" ", "").split(",") if a in {"NONE", "HS256", "HS384", "HS512"}]
    if weak:
        problems.append((Status.FAIL, f"JWT_ALLOWED_ALGORITHMS allows {', '.join(weak)}"))
    evidence = {"config": config.rows(names), "problems": [{"status": str(s), "problem": p} for s, p in problems]}
    if not problems:
        return passed(f"JWKS https on allow-listed host {host}; issuer and audience set", config=evidence["config"])
    status = worst(*(s for s, _ in problems))
    summary = "; ".join(p for _, p in problems)
    return failed(summary, **evidence) if status == Status.FAIL else warned(summary, **evidence)


@SECTION.check(
    "auth.api-key-secret",
    item=ITEM_API_KEYS,
    title="API keys: API_KEY_HASH_SECRET is set (stored key hashes are HMACs, not plain SHA-256)",
    severity=Severity.HIGH,
    remediation="Set API_KEY_HASH_SECRET from a secret store (Helm api.existingSecret); re-hash stored keys with it.",
    reference="recsys-data-and-ops §1.6",
)
def api_key_secret(ctx: AuditContext) -> Outcome:
    if not api_keys_in_use(ctx):
        return skipped("API-key authentication is off (API_KEY_ENABLED)")
    setting = ctx.config.get("API_KEY_HASH_SECRET")
    evidence = {"config": ctx.config.rows(["API_KEY_ENABLED", "API_KEY_HASH_SECRET"])}
    if setting.state == "hidden":
        return passed(f"API_KEY_HASH_SECRET is set in a secret ({setting.source}); value not visible", **evidence)
    if setting.state == "unknown":
        return warned(f"API_KEY_HASH_SECRET not visible ({setting.source})", **evidence)
    if not setting.value:
        return failed("API_KEY_HASH_SECRET is empty: key hashes are unkeyed SHA-256", **evidence)
    return passed(f"API_KEY_HASH_SECRET is set ({setting.source})", **evidence)


@SECTION.check(
    "auth.tenant-claim-required",
    item=ITEM_TENANCY,
    title="AUTH_REQUIRE_TENANT_CLAIM is on (the tenant header alone cannot pick a tenant)",
    severity=Severity.CRITICAL,
    remediation="Set AUTH_REQUIRE_TENANT_CLAIM=true (it defaults on only when ENV=production).",
    reference=HTTP_REF,
)
def tenant_claim_required(ctx: AuditContext) -> Outcome:
    return flag_outcome(
        ctx, "AUTH_REQUIRE_TENANT_CLAIM", True, "any caller with an auth context picks its tenant by header"
    )


@SECTION.check(
    "auth.rbac-roles",
    item=ITEM_RBAC,
    title="RBAC role names are set (all empty switches admin RBAC off)",
    severity=Severity.HIGH,
    remediation="Set AUTH_VIEWER_ROLE, AUTH_OPERATOR_ROLE and AUTH_ADMIN_ROLE to the role names your IdP issues.",
    reference="recsys-http-and-config §1 (RBAC), §2 (admin-only explain)",
)
def rbac_roles(ctx: AuditContext) -> Outcome:
    names = ["AUTH_VIEWER_ROLE", "AUTH_OPERATOR_ROLE", "AUTH_ADMIN_ROLE", "AUTH_ROLE_CLAIMS"]
    evidence = {"config": ctx.config.rows(names)}
    values = {name: ctx.config.value(name) for name in names[:3]}
    if any(v is None for v in values.values()):
        return warned("some role names are not visible in the config sources", **evidence)
    empty = [name for name, value in values.items() if not (value or "").strip()]
    if len(empty) == 3:
        return failed("all three role names are empty: admin RBAC is off", **evidence)
    if "AUTH_ADMIN_ROLE" in empty:
        return failed("AUTH_ADMIN_ROLE is empty: explain=full and traces are open to every caller", **evidence)
    if empty:
        return warned(f"{', '.join(empty)} empty", **evidence)
    return passed("viewer, operator and admin role names are set", **evidence)


@SECTION.check(
    "auth.tenant-source-documented",
    item=ITEM_TENANCY,
    title="The tenant source (claims and/or header) is declared, documented and matches the config",
    severity=Severity.MEDIUM,
    remediation="Set auth.tenant_source and auth.tenant_source_documented_at in params; a claims-only source needs "
    "AUTH_REQUIRE_TENANT_CLAIM=true.",
    reference=HTTP_REF,
)
def tenant_source_documented(ctx: AuditContext) -> Outcome:
    auth = ctx.params.auth
    evidence = {
        "declared": auth.tenant_source,
        "documented_at": auth.tenant_source_documented_at,
        "config": ctx.config.rows(["AUTH_TENANT_CLAIMS", "TENANT_HEADER_NAME", "AUTH_REQUIRE_TENANT_CLAIM"]),
    }
    if not auth.tenant_source or not auth.tenant_source_documented_at:
        return failed("tenant source not declared or not documented (auth.tenant_source[_documented_at])", **evidence)
    if auth.tenant_source == "claims" and ctx.config.flag("AUTH_REQUIRE_TENANT_CLAIM") is False:
        return failed(
            "declared claims-only, but AUTH_REQUIRE_TENANT_CLAIM is off: the header picks the tenant", **evidence
        )
    header = ctx.config.value("TENANT_HEADER_NAME")
    if header and header.lower() != auth.tenant_header.lower():
        return failed(f"TENANT_HEADER_NAME is {header}, params say {auth.tenant_header}", **evidence)
    return passed(f"tenant source {auth.tenant_source}, documented at {auth.tenant_source_documented_at}", **evidence)


@SECTION.check(
    "auth.env-production",
    item="Ensure dev headers are disabled in production",
    title="ENV is really production (production-only startup guards are active)",
    severity=Severity.HIGH,
    remediation="Set ENV=production: only then does the service refuse missing salts/secrets and S3 without TLS, "
    "and default the tenant claim on and docs off.",
    reference=ENV_REF,
)
def env_production(ctx: AuditContext) -> Outcome:
    if not ctx.params.target.production:
        return skipped("params declare a non-production target (target.production: false)")
    setting = ctx.config.get("ENV")
    evidence = {"config": ctx.config.rows(["ENV"])}
    if setting.value is None:
        return warned("ENV is not visible in the config sources", **evidence)
    if setting.value.strip().lower() != "production":
        return failed(f"ENV={setting.value or '(empty)'} ({setting.source}): production guards are off", **evidence)
    return passed(f"ENV=production ({setting.source})", **evidence)


@SECTION.check(
    "auth.bypass-flags-off",
    item="Ensure dev headers are disabled in production",
    title="No dangerous bypass switch is on (JWT skip header, rate-limit skip, admin-only explain)",
    severity=Severity.HIGH,
    remediation="Set JWT_ALLOW_DANGEROUS_DEV_BYPASSES, JWT_SKIP_HEADER_ENABLED, RATE_LIMIT_SKIP_ENABLED and "
    "RATE_LIMIT_ALLOW_DANGEROUS_DEV_BYPASSES to false and keep RECSYS_EXPLAIN_REQUIRE_ADMIN=true.",
    reference=ENV_REF,
)
def bypass_flags_off(ctx: AuditContext) -> Outcome:
    must_be_off = [
        "JWT_ALLOW_DANGEROUS_DEV_BYPASSES",
        "JWT_SKIP_HEADER_ENABLED",
        "RATE_LIMIT_SKIP_ENABLED",
        "RATE_LIMIT_ALLOW_DANGEROUS_DEV_BYPASSES",
    ]
    must_be_on = ["RECSYS_EXPLAIN_REQUIRE_ADMIN"]
    evidence = {"config": ctx.config.rows(must_be_off + must_be_on)}
    wrong = [n for n in must_be_off if ctx.config.flag(n)] + [n for n in must_be_on if ctx.config.flag(n) is False]
    if wrong:
        return failed(f"bypass switches in the wrong position: {', '.join(wrong)}", **evidence)
    return passed("all bypass switches off, explain=full admin-only", **evidence)


@SECTION.check(
    "auth.key-rotation-documented",
    item=ITEM_API_KEYS,
    title="API-key rotation process is documented and exercised",
    severity=Severity.LOW,
    remediation="Document how keys are issued, rotated and revoked (SQL on tenant_api_keys), link it in params "
    "(auth.key_rotation_process_documented_at) and attest it (attestations: auth.key-rotation-documented).",
    reference="recsys-data-and-ops §1.6 (no endpoint creates keys)",
)
def key_rotation_documented(ctx: AuditContext) -> Outcome:
    if not api_keys_in_use(ctx):
        return skipped("API-key authentication is off")
    link = ctx.params.auth.key_rotation_process_documented_at
    return manual("a reviewer confirms the rotation process is followed", documented_at=link or "(not declared)")


# --- live: unauthenticated and dev-header callers ------------------------------------------------------------------


@SECTION.check(
    "auth.unauthenticated-refused",
    item=ITEM_MECHANISM,
    title="Without credentials, serving and admin routes answer 401",
    severity=Severity.CRITICAL,
    remediation="Keep AUTH_REQUIRED=true with a production auth mechanism; nothing under /v1 may answer anonymous "
    "callers.",
    reference=HTTP_REF,
)
def unauthenticated_refused(ctx: AuditContext) -> Outcome:
    tenant = audited_tenant(ctx)
    surface = ctx.params.tenants[0].surfaces[0]
    body = recommend_body(surface)
    rows = []
    for probe, response in (
        ("recommend, no credentials", ctx.service.post("/v1/recommend", body)),
        ("admin config, no credentials", ctx.service.get(admin_config_path(tenant))),
        ("admin audit, no credentials", ctx.service.get(admin_config_path(tenant, "audit"))),
    ):
        rows.append(probe_row(probe, response, "401", response.status == 401))
    return refusal_outcome(rows, "anonymous requests")


@SECTION.check(
    "auth.dev-headers-refused",
    item="Ensure dev headers are disabled in production (DEV_AUTH_ENABLED=false)",
    title="Dev headers alone are refused",
    severity=Severity.CRITICAL,
    remediation="Set DEV_AUTH_ENABLED=false: with it on, anyone who sends X-Dev-User-Id / X-Dev-Org-Id is a user "
    "of any tenant.",
    reference="recsys-http-and-config §3 (dev headers)",
)
def dev_headers_refused(ctx: AuditContext) -> Outcome:
    auth = ctx.params.auth
    tenant = audited_tenant(ctx)
    headers = {auth.dev_user_header: "recsys-audit-dev-probe", auth.dev_tenant_header: tenant}
    surface = ctx.params.tenants[0].surfaces[0]
    body = recommend_body(surface)
    rows = []
    for probe, response in (
        ("recommend with dev headers", ctx.service.post("/v1/recommend", body, headers=headers)),
        ("admin config with dev headers", ctx.service.get(admin_config_path(tenant), headers=headers)),
    ):
        rows.append(probe_row(probe, response, "401/403", response.status in REFUSED))
    return refusal_outcome(rows, "dev-header identities", headers_sent=sorted(headers))


@SECTION.check(
    "auth.tenant-header-alone-refused",
    item=ITEM_TENANCY,
    title="The tenant header alone is refused",
    severity=Severity.CRITICAL,
    remediation="Require a real credential: AUTH_REQUIRE_TENANT_CLAIM=true and DEV_AUTH_ENABLED=false; a bare "
    "X-Org-Id must never be an auth context.",
    reference="recsys-http-and-config §3 (a tenant header alone satisfies RequireAuth)",
)
def tenant_header_alone_refused(ctx: AuditContext) -> Outcome:
    tenant = audited_tenant(ctx)
    headers = {ctx.params.auth.tenant_header: tenant}
    surface = ctx.params.tenants[0].surfaces[0]
    body = recommend_body(surface)
    response = ctx.service.post("/v1/recommend", body, headers=headers)
    rows = [
        probe_row(
            f"recommend with only {ctx.params.auth.tenant_header}", response, "401/403", response.status in REFUSED
        )
    ]
    return refusal_outcome(rows, "tenant-header-only requests")


# --- live: forged JWTs ---------------------------------------------------------------------------------------------


def _jwt_skip(ctx: AuditContext) -> Outcome | None:
    return None if jwt_in_use(ctx) else skipped("JWT authentication is off (JWT_AUTH_ENABLED)")


@SECTION.check(
    "auth.jwt-alg-none-refused",
    item=ITEM_JWT,
    title="An unsigned JWT (alg: none) is refused",
    severity=Severity.CRITICAL,
    remediation="Pin JWT_ALLOWED_ALGORITHMS to RS256 (or another asymmetric algorithm); a verifier that honours "
    "alg: none lets anyone mint admin tokens.",
    reference="recsys-http-and-config §3 (algorithms default RS256; none refused)",
)
def jwt_alg_none_refused(ctx: AuditContext) -> Outcome:
    if skip := _jwt_skip(ctx):
        return skip
    claims = claim_set(ctx, roles=(admin_role_name(ctx),)).claims()
    rows = [bearer_probe(ctx, "alg none, admin role claimed", crafted.unsigned_token(claims))]
    return refusal_outcome(rows, "unsigned tokens")


@SECTION.check(
    "auth.jwt-unknown-key-refused",
    item=ITEM_JWT,
    title="A JWT signed by an unknown key (with a trusted kid) is refused",
    severity=Severity.CRITICAL,
    remediation="Verify signatures against the JWKS only; never fall back to unverified decoding or to a key from "
    "the token header.",
    reference=HTTP_REF,
)
def jwt_unknown_key_refused(ctx: AuditContext) -> Outcome:
    if skip := _jwt_skip(ctx):
        return skip
    kid = ctx.params.auth.jwt.signing_kid
    if kid is None:
        try:
            kids = jwks(ctx).kids
            kid = kids[0] if kids else None
        except ProbeError:
            kid = None
    claims = claim_set(ctx, roles=(admin_role_name(ctx),)).claims()
    rows = [bearer_probe(ctx, f"RS256 by an unknown key (kid {kid or 'none'})", crafted.unknown_key_token(claims, kid))]
    return refusal_outcome(rows, "tokens signed by an unknown key")


@SECTION.check(
    "auth.jwt-tampered-claim-refused",
    item=ITEM_TENANCY,
    title="A real token with an edited tenant claim is refused",
    severity=Severity.CRITICAL,
    remediation="Verify the signature over the whole token before reading any claim; the tenant claim must come "
    "from a verified token.",
    reference=HTTP_REF,
)
def jwt_tampered_claim_refused(ctx: AuditContext) -> Outcome:
    if skip := _jwt_skip(ctx):
        return skip
    credential = ctx.service.credential("viewer")
    if credential is None or credential.bearer is None:
        return skipped("no viewer bearer token in params (auth.credentials.viewer.bearer)")
    target = other_tenant(ctx) or "recsys-audit-forged-tenant"
    token = crafted.with_edited_claim(credential.bearer.reveal(), ctx.params.auth.jwt.tenant_claim, target)
    rows = [bearer_probe(ctx, f"viewer token, tenant claim edited to {target}", token, admin_config_path(target))]
    return refusal_outcome(rows, "tokens with an edited tenant claim")


@SECTION.check(
    "auth.jwt-trusted-key-negatives",
    item=ITEM_JWT,
    title="Tokens signed by the trusted key but expired, for another issuer/audience, or HS256-confused are refused",
    severity=Severity.HIGH,
    remediation="Set JWT_ISSUER and JWT_AUDIENCE, keep JWT_REQUIRE_EXPIRATION=true with a small clock skew, and pin "
    "JWT_ALLOWED_ALGORITHMS to RS256.",
    reference="recsys-http-and-config §3-4 (JWT_* variables)",
)
def jwt_trusted_key_negatives(ctx: AuditContext) -> Outcome:
    if skip := _jwt_skip(ctx):
        return skip
    jwt_params = ctx.params.auth.jwt
    if jwt_params.signing_key is None:
        return skipped("no trusted signing key in params (auth.jwt.signing_key)")
    if ctx.params.target.production and not jwt_params.allow_signing_in_production:
        return skipped("production target: trusted-key probes need auth.jwt.allow_signing_in_production: true")
    key = crafted.load_private_key(jwt_params.signing_key.reveal())
    kid = jwt_params.signing_kid or next(iter(jwks(ctx).kids), None)
    claims = claim_set(ctx, roles=(admin_role_name(ctx),))
    now = int(dt.datetime.now(dt.UTC).timestamp())

    control = bearer_probe(ctx, "control: valid token", crafted.signed_token(key, claims.claims(), kid))
    control["expected"] = "200"
    control["verdict"] = "ok" if control["status"] == 200 else "NOT ACCEPTED"
    negatives = {
        "expired an hour ago": claims.claims(exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "wrong issuer": claims.claims(iss="https://recsys-audit.invalid/issuer"),
        "wrong audience": claims.claims(aud="recsys-audit-wrong-audience"),
    }
    rows = [bearer_probe(ctx, probe, crafted.signed_token(key, c, kid)) for probe, c in negatives.items()]
    confused = crafted.hs256_confusion_token(crafted.public_key_pem(key), claims.claims(), kid)
    rows.append(bearer_probe(ctx, "HS256 keyed with the public key", confused))
    outcome = refusal_outcome(rows, "faulty tokens from the trusted key", control=[control])
    if outcome.status == Status.PASS and control["status"] != 200:
        return warned(
            f"the control token got {control['status']}: the signing key may not be trusted, so the "
            "refusals prove little",
            **outcome.evidence,
        )
    return outcome


@SECTION.check(
    "auth.jwks-reachable",
    item="Confirm readiness check passes from the cluster network (/readyz)",
    title="The JWKS endpoint answers over verified TLS with public keys only",
    severity=Severity.HIGH,
    remediation="Serve the JWKS over https with a certificate the service trusts; publish only public members "
    "(never d/p/q or symmetric k).",
    reference="recsys-http-and-config §2 (readiness has no JWKS check; /health/detailed jwt is at worst degraded)",
)
def jwks_reachable(ctx: AuditContext) -> Outcome:
    if skip := _jwt_skip(ctx):
        return skip
    document = jwks(ctx)
    evidence = {"url": document.url, "status": document.status, "keys": document.key_rows()}
    if document.status != 200:
        return failed(f"JWKS answered HTTP {document.status}", **evidence)
    if document.private_members():
        return failed(f"JWKS publishes private key members: {', '.join(document.private_members())}", **evidence)
    if not document.keys:
        return failed("JWKS holds no keys: every token is refused", **evidence)
    return passed(f"JWKS reachable over verified TLS with {len(document.keys)} public key(s)", **evidence)


# --- live: API keys ------------------------------------------------------------------------------------------------


@SECTION.check(
    "auth.api-key-unknown-refused",
    item=ITEM_API_KEYS,
    title="An unknown API key is refused with 401",
    severity=Severity.CRITICAL,
    remediation="Look keys up by exact HMAC hash and refuse unknown, revoked and expired keys with 401.",
    reference="recsys-http-and-config §3 (API key)",
)
def api_key_unknown_refused(ctx: AuditContext) -> Outcome:
    if not api_keys_in_use(ctx):
        return skipped("API-key authentication is off (API_KEY_ENABLED)")
    header = ctx.config.value("API_KEY_HEADER") or ctx.params.auth.api_key_header
    headers = {header: "recsys-audit-" + secrets.token_hex(16), ctx.params.auth.tenant_header: audited_tenant(ctx)}
    surface = ctx.params.tenants[0].surfaces[0]
    body = recommend_body(surface)
    response = ctx.service.post("/v1/recommend", body, headers=headers)
    rows = [probe_row(f"recommend with a random {header}", response, "401", response.status == 401)]
    return refusal_outcome(rows, "unknown API keys")


@SECTION.check(
    "auth.api-key-storage",
    item=ITEM_API_KEYS,
    title="Stored API keys are 64-hex hashes, expire, and are younger than the rotation policy",
    severity=Severity.HIGH,
    remediation="Store only HMAC-SHA256 hashes in tenant_api_keys.key_hash, give every key an expires_at, rotate "
    "keys older than policies.api_key_max_age_days and revoke unused ones.",
    reference="recsys-data-and-ops §1.2 (tenant_api_keys), §1.6",
)
def api_key_storage(ctx: AuditContext) -> Outcome:
    if not ctx.db.table_exists("tenant_api_keys"):
        return skipped("no tenant_api_keys table")
    sql = (
        "SELECT k.name, t.external_id AS tenant, k.roles, k.created_at, k.expires_at, k.revoked_at, "
        "k.key_hash ~ '^[0-9a-f]{64}$' AS hash_is_hex64 "
        "FROM tenant_api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id ORDER BY k.created_at DESC LIMIT 500"
    )
    rows = ctx.db.query(sql)
    if not rows:
        if api_keys_in_use(ctx):
            return warned("API keys are enabled but no key is stored", sql=sql)
        return skipped("no API keys stored")
    now = dt.datetime.now(dt.UTC)
    max_age = ctx.params.policies.api_key_max_age_days
    table = []
    statuses = []
    for row in rows:
        revoked = row["revoked_at"] is not None
        expired = row["expires_at"] is not None and row["expires_at"] <= now
        age_days = (now - row["created_at"]).days if row["created_at"] else None
        if not row["hash_is_hex64"]:
            verdict, status = "hash not 64-hex", Status.FAIL
        elif revoked or expired:
            verdict, status = "revoked" if revoked else "expired", Status.PASS
        elif row["expires_at"] is None:
            verdict, status = "active, never expires", Status.WARN
        elif age_days is not None and age_days > max_age:
            verdict, status = f"active, older than {max_age} d", Status.WARN
        else:
            verdict, status = "active", Status.PASS
        statuses.append(status)
        table.append(
            {
                "name": row["name"],
                "tenant": row["tenant"],
                "roles": row["roles"],
                "age_days": age_days,
                "expires_at": row["expires_at"],
                "revoked_at": row["revoked_at"],
                "verdict": verdict,
            }
        )
    evidence = {"sql": sql, "policy_max_age_days": max_age, "keys": table}
    counts = {v: sum(1 for r in table if r["verdict"] == v) for v in sorted({r["verdict"] for r in table})}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    status = worst(*statuses)
    if status == Status.FAIL:
        return failed(f"key material not stored as a hash: {summary}", **evidence)
    if status == Status.WARN:
        return warned(f"keys need rotation or expiry: {summary}", **evidence)
    return passed(f"{len(table)} key(s): {summary}", **evidence)


# --- live: tenancy and RBAC ----------------------------------------------------------------------------------------


@SECTION.check(
    "auth.cross-tenant-header-refused",
    item=ITEM_TENANCY,
    title="Tenant A's credential with X-Org-Id of tenant B is refused (403)",
    severity=Severity.CRITICAL,
    remediation="Keep the tenant-scope check: a header tenant that differs from the claim or key tenant must give "
    "403 RECSYS_TENANT_SCOPE_MISMATCH.",
    reference="recsys-http-and-config §3 (tenant header)",
)
def cross_tenant_header_refused(ctx: AuditContext) -> Outcome:
    tenant_b = other_tenant(ctx)
    if not tenant_b:
        return skipped("no second tenant in params (auth.other_tenant)")
    # validate runs the same security stack as recommend but no engine: a broken control leaves no exposure record
    body, headers = recommend_body(ctx.params.tenants[0].surfaces[0]), {ctx.params.auth.tenant_header: tenant_b}
    response = ctx.service.post("/v1/recommend/validate", body, role="viewer", headers=headers)
    rows = [
        probe_row(f"viewer of {audited_tenant(ctx)} with X-Org-Id {tenant_b}", response, "403", response.status == 403)
    ]
    return refusal_outcome(rows, "cross-tenant header requests")


@SECTION.check(
    "auth.cross-tenant-admin-refused",
    item=ITEM_RBAC,
    title="Tenant A's viewer cannot read tenant B's admin documents",
    severity=Severity.CRITICAL,
    remediation="Compare the URL {tenant_id} with the caller's tenant in the admin handlers (or a route-level "
    "middleware that runs after routing) and answer 403; until fixed, restrict admin routes at the gateway.",
    reference="recsys-http-and-config §1 (cross-tenant admin: URL tenant never compared with the caller's)",
)
def cross_tenant_admin_refused(ctx: AuditContext) -> Outcome:
    tenant_a, tenant_b = audited_tenant(ctx), other_tenant(ctx)
    if not tenant_b:
        return skipped("no second tenant in params (auth.other_tenant)")
    rows = []
    for document in ("config", "rules", "audit"):
        response = ctx.service.get(admin_config_path(tenant_b, document), role="viewer")
        rows.append(
            probe_row(
                f"viewer of {tenant_a} reads {tenant_b} {document}", response, "401/403", response.status in REFUSED
            )
        )
    if ctx.service.has_role("other_tenant"):
        response = ctx.service.get(admin_config_path(tenant_a), role="other_tenant")
        rows.append(
            probe_row(f"caller of {tenant_b} reads {tenant_a} config", response, "401/403", response.status in REFUSED)
        )
    return refusal_outcome(rows, "cross-tenant admin reads")


@SECTION.check(
    "auth.rbac-viewer-write-denied",
    item=ITEM_RBAC,
    title="A viewer's admin PUT is refused by RBAC (403), before any version check",
    severity=Severity.CRITICAL,
    remediation="Require AUTH_OPERATOR_ROLE/AUTH_ADMIN_ROLE for non-GET admin methods (non-empty role names).",
    reference="recsys-http-and-config §1 (RBAC), §2 (admin If-Match → 409)",
)
def rbac_viewer_write_denied(ctx: AuditContext) -> Outcome:
    tenant = audited_tenant(ctx)
    rows = []
    for document in ("config", "rules"):
        response = ctx.service.request(
            "PUT", admin_config_path(tenant, document), role="viewer", headers={"If-Match": IMPOSSIBLE_ETAG}
        )
        row = probe_row(f"viewer PUT {document} (If-Match never matches)", response, "403", response.status == 403)
        if response.status == 409:
            row["verdict"] = "NOT REFUSED (409: RBAC let it through; If-Match stopped the write)"
        rows.append(row)
    return refusal_outcome(rows, "viewer writes", if_match=IMPOSSIBLE_ETAG)


@SECTION.check(
    "auth.rbac-no-role-denied",
    item=ITEM_RBAC,
    title="An identity without roles is refused on admin GET (403)",
    severity=Severity.HIGH,
    remediation="Keep the three role names non-empty so admin routes require a role.",
    reference="recsys-http-and-config §1 (RBAC; all role names empty = RBAC off)",
)
def rbac_no_role_denied(ctx: AuditContext) -> Outcome:
    if not ctx.service.has_role("no_role"):
        return skipped("no role-less identity in params (auth.credentials.no_role)")
    response = ctx.service.get(admin_config_path(audited_tenant(ctx)), role="no_role")
    rows = [probe_row("no-role identity reads admin config", response, "403", response.status == 403)]
    return refusal_outcome(rows, "role-less admin reads")


@SECTION.check(
    "auth.explain-admin-only",
    item=ITEM_RBAC,
    title="explain=full and include_trace are refused to non-admin callers (403)",
    severity=Severity.MEDIUM,
    remediation="Keep RECSYS_EXPLAIN_REQUIRE_ADMIN=true and AUTH_ADMIN_ROLE non-empty: explanations expose signals "
    "and rules.",
    reference="recsys-http-and-config §2 (admin-only explain; operator is not enough)",
)
def explain_admin_only(ctx: AuditContext) -> Outcome:
    tenant = audited_tenant(ctx)
    surface = ctx.params.tenants[0].surfaces[0]
    rows = []
    for role in ("viewer", "operator"):
        if not ctx.service.has_role(role):
            continue
        for option in ({"explain": "full"}, {"include_trace": True}):
            response = ctx.service.recommend(tenant, surface, role=role, options=option)
            name = ", ".join(f"{k}={v}" for k, v in option.items())
            rows.append(probe_row(f"{role} recommend {name}", response, "403", response.status == 403))
    if not rows:
        return skipped("no viewer or operator credential in params")
    return refusal_outcome(rows, "non-admin explain requests")


# --- live: reachability, CORS, docs --------------------------------------------------------------------------------


@SECTION.check(
    "auth.readyz-reachable",
    item="Confirm readiness check passes from the cluster network (/readyz)",
    title="/readyz answers 200 from the auditor's network",
    severity=Severity.HIGH,
    remediation="Follow the service-not-ready runbook: DB reachability first, then auth-provider config.",
    reference="recsys-http-and-config §1-2 (health)",
)
def readyz_reachable(ctx: AuditContext) -> Outcome:
    response = ctx.service.get("/readyz")
    body = response.json_or_none()
    evidence = {
        "probes": [{**response.evidence(), "body_status": body.get("status") if isinstance(body, dict) else None}]
    }
    if response.status != 200:
        return failed(f"/readyz answered {response.status}", **evidence)
    return passed(f"/readyz answered 200 in {response.elapsed_ms:.0f} ms", **evidence)


@SECTION.check(
    "auth.cors-restricted",
    item="Decide the production auth mechanism",
    title="CORS allows only listed origins (no * in production)",
    severity=Severity.MEDIUM,
    remediation="Set CORS_ALLOWED_ORIGINS to the exact browser origins that call the API (the default is *).",
    reference="recsys-http-and-config §4 (CORS_ALLOWED_ORIGINS default *), §9",
)
def cors_restricted(ctx: AuditContext) -> Outcome:
    headers = {
        "Origin": UNLISTED_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    response = ctx.service.request("OPTIONS", "/v1/recommend", headers=headers)
    allowed_origin = response.headers.get("access-control-allow-origin")
    credentials = response.headers.get("access-control-allow-credentials", "").lower() == "true"
    row = {
        **response.evidence(),
        "origin": UNLISTED_ORIGIN,
        "allow_origin": allowed_origin,
        "allow_credentials": credentials,
    }
    evidence = {"preflight": [row], "config": ctx.config.rows(["CORS_ALLOWED_ORIGINS", "CORS_ALLOW_CREDENTIALS"])}
    production = ctx.params.target.production or ctx.config.production
    if allowed_origin in {UNLISTED_ORIGIN, "*"}:
        summary = f"preflight from an unlisted origin allowed (Access-Control-Allow-Origin: {allowed_origin})"
        if production or credentials:
            return failed(summary, **evidence)
        return warned(summary + " — not production", **evidence)
    if "*" in (ctx.config.value("CORS_ALLOWED_ORIGINS") or "").split(","):
        return failed("CORS_ALLOWED_ORIGINS contains * in the deployment config", **evidence)
    return passed("preflight from an unlisted origin gets no Access-Control-Allow-Origin", **evidence)


@SECTION.check(
    "auth.docs-disabled",
    item="Ensure dev headers are disabled in production",
    title="API docs and OpenAPI spec are not served in production",
    severity=Severity.LOW,
    remediation="Set DOCS_ENABLED=false (the default only when ENV=production).",
    reference="recsys-http-and-config §1 (docs routes), §4",
)
def docs_disabled(ctx: AuditContext) -> Outcome:
    rows = []
    for path in ("/docs", "/docs/openapi.json", "/openapi.yaml"):
        response = ctx.service.get(path)
        rows.append({**response.evidence(), "served": response.status == 200})
    evidence = {"probes": rows, "config": ctx.config.rows(["DOCS_ENABLED", "ENV"])}
    served = [row["request"] for row in rows if row["served"]]
    if not served:
        return passed("no docs route answers 200", **evidence)
    summary = "docs served: " + ", ".join(served)
    if ctx.params.target.production or ctx.config.production:
        return failed(summary, **evidence)
    return warned(summary + " — not production", **evidence)
