"""Section 1 — Tenancy and authentication: the deployment's auth config, then live negative probes.

Live probes only read: GETs, recommend POSTs, CORS preflights, and write-denial PUTs whose ``If-Match`` can never
match (a broken RBAC answers 409 and still writes nothing). A request counts as refused when it gets 401 or 403.
"""

from __future__ import annotations

import datetime as dt
import secrets
import ssl
from typing import Any
from urllib.parse import urlparse

from recsys_audit.catalog import Section
from recsys_audit.checklist import EvidenceClass
from recsys_audit.checks.common import (
    accepted,
    awaiting_attestation,
    credential_field,
    keyed_hash,
    secret_problem,
    unkeyed_hashes,
)
from recsys_audit.checks.config_rules import register_config_rules
from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, Severity, Status, errored, failed, passed, skipped, warned, worst
from recsys_audit.probes import ProbeError
from recsys_audit.probes import tokens as crafted
from recsys_audit.probes.service import IMPOSSIBLE_ETAG, ProbeResponse, Role, recommend_body

SECTION = Section(1, "Tenancy and authentication", notebook="01_tenancy_auth")
register_config_rules(SECTION)  # dev auth, AUTH_REQUIRED, tenant claim, ENV, bypass switches, role names

HTTP_REF = "recsys-http-and-config §3 (auth and tenancy)"
ENV_REF = "recsys-http-and-config §4 (environment; not enforced in production)"
REFUSED = (401, 403)
UNLISTED_ORIGIN = "https://recsys-audit-unlisted-origin.invalid"
AUDIT_ROLES: tuple[Role, ...] = ("viewer", "operator", "admin", "no_role", "other_tenant")


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
        return crafted.fetch_jwks(url, ctx.params.tls(jwks=True), ctx.params.target.timeout_s)

    return ctx.memo("s1:jwks", fetch)


def credential_checks(ctx: AuditContext) -> list[dict[str, Any]]:
    """One harmless validate request per audit credential (no engine, no metrics): was the credential accepted?"""

    def check() -> list[dict[str, Any]]:
        rows = []
        surface = ctx.params.tenants[0].surfaces[0]
        for role in AUDIT_ROLES:
            if not ctx.service.has_role(role):
                continue
            tenant = (other_tenant(ctx) or audited_tenant(ctx)) if role == "other_tenant" else audited_tenant(ctx)
            headers = {ctx.params.auth.tenant_header: tenant}
            response = ctx.service.post("/v1/recommend/validate", recommend_body(surface), role=role, headers=headers)
            row = {"role": role, "params": credential_field(role), **response.evidence()}
            rows.append({**row, "accepted": response.status != 401})
        return rows

    return ctx.memo("s1:credentials", check)


def audit_api_keys(ctx: AuditContext) -> list[tuple[str, str]]:
    """(role, key) for every audit credential that is an API key."""
    keys = []
    for role in AUDIT_ROLES:
        credential = ctx.service.credential(role)
        if credential is not None and credential.api_key is not None:
            keys.append((role, credential.api_key.reveal()))
    return keys


def bearer_probe(ctx: AuditContext, probe: str, token: str, path: str | None = None) -> dict[str, Any]:
    """GET an admin document of the audited tenant with a crafted bearer token and no tenant header."""
    path = path or admin_config_path(audited_tenant(ctx))
    response = ctx.service.get(path, headers={"Authorization": f"Bearer {token}"})
    return probe_row(probe, response, "401", response.status in REFUSED)


# --- configuration ---------------------------------------------------------------------------------------------------


@SECTION.check(
    "auth.production-mechanism",
    items=("1.auth-mechanism", "1.jwt", "1.api-keys"),
    evidence=EvidenceClass.CONFIG,
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
    unseen = [switches[m] for m in declared if enabled[m] is None]
    if unseen:
        return warned(f"declared {', '.join(declared)}, but {', '.join(unseen)} is not visible", **evidence)
    undeclared = [m for m, on in enabled.items() if on and m not in declared]
    if undeclared:
        return warned(f"{', '.join(undeclared)} is enabled but not declared in params (auth.mechanisms)", **evidence)
    return passed(f"{', '.join(declared)} declared and enabled", **evidence)


@SECTION.check(
    "auth.jwt-config",
    items=("1.jwt-jwks-issuer-audience", "1.jwks-allowed-hosts"),
    evidence=EvidenceClass.CONFIG,
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
        if setting.value is None:
            problems.append((Status.WARN, f"{name} not visible"))
        elif not setting.value:
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


STORED_HASH_SQL = "SELECT key_hash FROM tenant_api_keys WHERE key_hash = ANY(%s)"  # the UNIQUE index answers


def stored_key_hashes(ctx: AuditContext, secret: str | None) -> tuple[list[dict[str, Any]], Status, str]:
    """How the service stored the audit's own API keys: unkeyed (empty secret), keyed with the configured secret,
    or keyed with something else — looked up by exact hash, never reading the key table."""
    accepted_roles = {row["role"] for row in credential_checks(ctx) if row["accepted"]}
    rows, statuses, notes = [], [], []
    for role, key in audit_api_keys(ctx):
        forms = unkeyed_hashes(key)
        if secret:
            forms["HMAC-SHA256 with the configured secret"] = keyed_hash(secret, key)
        found = {row["key_hash"] for row in ctx.db.query(STORED_HASH_SQL, (list(forms.values()),))}
        stored_as = [form for form, digest in forms.items() if digest in found]
        unkeyed = [form for form in stored_as if "configured" not in form]
        if unkeyed:
            status, note = Status.FAIL, f"the {role} key is stored as {unkeyed[0]}: the running service has no secret"
        elif stored_as:
            status, note = Status.PASS, f"the {role} key is stored keyed with the configured secret"
        elif secret:
            status, note = (
                Status.WARN,
                (
                    f"the {role} key's stored hash matches neither the configured secret nor an unkeyed hash: the "
                    "config sources may not be what runs"
                ),
            )
        elif role in accepted_roles:
            status, note = Status.PASS, f"the {role} key authenticates and is not stored unkeyed: the secret is set"
        else:
            status, note = Status.WARN, f"the {role} key was not confirmed live, so its hash proves nothing"
        rows.append({"role": role, "stored_as": ", ".join(stored_as) or "not an unkeyed hash", "verdict": note})
        statuses.append(status)
        notes.append(note)
    return rows, worst(*statuses), "; ".join(notes)


@SECTION.check(
    "auth.api-key-secret",
    items=("1.api-key-hash-secret",),
    evidence=EvidenceClass.DATA,
    title="API keys: API_KEY_HASH_SECRET is set and real (stored key hashes are HMACs, not plain SHA-256)",
    severity=Severity.HIGH,
    remediation="Set API_KEY_HASH_SECRET (32+ random bytes) from a secret store (Helm api.existingSecret) and "
    "re-issue the stored keys with it; an empty secret stores keys as plain SHA-256.",
    reference="recsys-data-and-ops §1.6 (key_hash = HMAC-SHA256 with the secret, plain SHA-256 when it is empty)",
)
def api_key_secret(ctx: AuditContext) -> Outcome:
    if not api_keys_in_use(ctx):
        return skipped("API-key authentication is off (API_KEY_ENABLED)")
    setting = ctx.config.get("API_KEY_HASH_SECRET")
    evidence: dict[str, Any] = {"config": ctx.config.rows(["API_KEY_ENABLED", "API_KEY_HASH_SECRET"])}
    statuses, problems = [], []
    if setting.value is None:
        statuses.append(Status.WARN)
        problems.append(f"API_KEY_HASH_SECRET not visible ({setting.source})")
    elif problem := secret_problem(setting.value, ctx.params.policies.min_salt_length):
        statuses.append(Status.FAIL)
        unkeyed = ": stored key hashes are plain SHA-256" if problem == "empty" else ""
        problems.append(f"API_KEY_HASH_SECRET is {problem}{unkeyed}")
    else:
        statuses.append(Status.PASS)
    data_status = None
    if not audit_api_keys(ctx):
        evidence["stored_keys"] = "not checked: needs an API-key credential in params (and database.dsn)"
    else:
        try:
            rows, data_status, note = stored_key_hashes(ctx, setting.value)
            evidence.update(sql=STORED_HASH_SQL, stored_keys=rows)
            statuses.append(data_status)
            if data_status != Status.PASS:
                problems.append(note)
        except ProbeError as exc:
            evidence["stored_keys"] = f"not checked: {exc}"
    if setting.value is None and data_status == Status.PASS:
        statuses.remove(Status.WARN)  # the stored hash shows what the invisible value is: set, non-empty
    status = worst(*statuses)
    if status == Status.FAIL:
        return failed("; ".join(problems), **evidence)
    if status != Status.PASS:
        return warned("; ".join(problems), **evidence)
    shown = "observed in the stored hash of the audit's key" if data_status == Status.PASS else setting.source
    return passed(f"API_KEY_HASH_SECRET is set and not an example ({shown})", **evidence)


@SECTION.check(
    "auth.tenant-source-documented",
    items=("1.tenancy-source", "1.tenant-claims-or-header"),
    evidence=EvidenceClass.DECLARED,
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
    "auth.key-rotation-documented",
    items=("1.api-key-rotation",),
    evidence=EvidenceClass.ATTESTED,
    cannot_fail="manual by design: the rotation process is a document and a habit that only a reviewer can attest "
    "(key ages are judged by auth.api-key-storage)",
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
    summary = "a reviewer attests that the key rotation process is documented and followed"
    return awaiting_attestation(ctx, "auth.key-rotation-documented", summary, documented_at=link or "(not declared)")


# --- live: the audit's own credentials -----------------------------------------------------------------------------


@SECTION.check(
    "auth.credentials-accepted",
    items=("1.auth-mechanism",),
    evidence=EvidenceClass.LIVE,
    cannot_fail="it judges the audit's own credentials: a refused one is an audit error (error, naming the role and "
    "the params field), never a finding against the target",
    title="Preflight: every audit credential in params is accepted (so refusals below mean what they say)",
    severity=Severity.HIGH,
    remediation="Renew or correct the refused credential in params (auth.credentials.<role>, "
    "auth.other_tenant.credential): an expired token, a revoked key or another tenant's identity.",
    reference="recsys-http-and-config §1 (POST /v1/recommend/validate: any role, no engine), §3",
)
def credentials_accepted(ctx: AuditContext) -> Outcome:
    rows = credential_checks(ctx)
    if not rows:
        return warned("no audit credential in params (auth.credentials): the probes that need one cannot run")
    refused = [row for row in rows if not row["accepted"]]
    if refused:
        listed = "; ".join(f"{row['role']} ({row.get('code', 'no code')}): fix {row['params']}" for row in refused)
        return errored(f"the target refused the audit's own credential(s) with 401 — {listed}", credentials=rows)
    return passed(f"{len(rows)} audit credential(s) accepted: {', '.join(r['role'] for r in rows)}", credentials=rows)


# --- live: unauthenticated and dev-header callers ------------------------------------------------------------------


@SECTION.check(
    "auth.unauthenticated-refused",
    items=("1.auth-mechanism",),
    evidence=EvidenceClass.LIVE,
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
    items=("1.dev-auth-disabled",),
    evidence=EvidenceClass.LIVE,
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
    items=("1.tenant-claims-or-header",),
    evidence=EvidenceClass.LIVE,
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
    items=("1.jwt",),
    evidence=EvidenceClass.LIVE,
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
    items=("1.jwt",),
    evidence=EvidenceClass.LIVE,
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
    items=("1.jwt", "1.tenant-claims-or-header"),
    evidence=EvidenceClass.LIVE,
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
    items=("1.jwt-jwks-issuer-audience",),
    evidence=EvidenceClass.LIVE,
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
    items=("1.jwks-allowed-hosts", "1.readyz-from-cluster"),
    evidence=EvidenceClass.LIVE,
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
    verified = ctx.params.tls(jwks=True).verify_mode == ssl.CERT_REQUIRED  # what the fetch above used
    evidence = {"url": document.url, "status": document.status, "tls_verified": verified, "keys": document.key_rows()}
    if document.status != 200:
        return failed(f"JWKS answered HTTP {document.status}", **evidence)
    if document.private_members():
        return failed(f"JWKS publishes private key members: {', '.join(document.private_members())}", **evidence)
    if not document.keys:
        return failed("JWKS holds no keys: every token is refused", **evidence)
    if urlparse(document.url).scheme != "https":
        return failed(
            "JWKS served over plain http: anyone on the path can swap the signing keys (the service refuses it "
            "unless AUTH_ALLOW_INSECURE_JWKS=true)",
            **evidence,
        )
    if not verified:
        return warned(
            f"JWKS answered with {len(document.keys)} public key(s), but TLS was not verified "
            "(target.verify_tls: false and no auth.jwt.ca_bundle)",
            **evidence,
        )
    return passed(f"JWKS reachable over verified TLS with {len(document.keys)} public key(s)", **evidence)


# --- live: API keys ------------------------------------------------------------------------------------------------


@SECTION.check(
    "auth.api-key-unknown-refused",
    items=("1.api-keys",),
    evidence=EvidenceClass.LIVE,
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
    items=("1.api-key-hash-secret", "1.api-key-rotation"),
    evidence=EvidenceClass.DATA,
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
        elif age_days is not None and age_days < 0:
            verdict, status = "active, created in the future", Status.WARN
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
    items=("1.tenant-claims-or-header",),
    evidence=EvidenceClass.LIVE,
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
    response = accepted(ctx.service.post("/v1/recommend/validate", body, role="viewer", headers=headers))
    rows = [
        probe_row(f"viewer of {audited_tenant(ctx)} with X-Org-Id {tenant_b}", response, "403", response.status == 403)
    ]
    return refusal_outcome(rows, "cross-tenant header requests")


@SECTION.check(
    "auth.cross-tenant-admin-refused",
    items=("1.rbac-admin",),
    evidence=EvidenceClass.LIVE,
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
        response = accepted(ctx.service.get(admin_config_path(tenant_b, document), role="viewer"))
        rows.append(
            probe_row(
                f"viewer of {tenant_a} reads {tenant_b} {document}", response, "401/403", response.status in REFUSED
            )
        )
    if ctx.service.has_role("other_tenant"):
        response = accepted(ctx.service.get(admin_config_path(tenant_a), role="other_tenant"))
        rows.append(
            probe_row(f"caller of {tenant_b} reads {tenant_a} config", response, "401/403", response.status in REFUSED)
        )
    return refusal_outcome(rows, "cross-tenant admin reads")


@SECTION.check(
    "auth.rbac-viewer-write-denied",
    items=("1.rbac-admin", "1.rbac-role-names"),
    evidence=EvidenceClass.LIVE,
    title="A viewer's admin PUT is refused by RBAC (403), before any version check",
    severity=Severity.CRITICAL,
    remediation="Require AUTH_OPERATOR_ROLE/AUTH_ADMIN_ROLE for non-GET admin methods (non-empty role names).",
    reference="recsys-http-and-config §1 (RBAC), §2 (admin If-Match → 409)",
)
def rbac_viewer_write_denied(ctx: AuditContext) -> Outcome:
    tenant = audited_tenant(ctx)
    rows = []
    for document in ("config", "rules"):
        response = accepted(
            ctx.service.request(
                "PUT", admin_config_path(tenant, document), role="viewer", headers={"If-Match": IMPOSSIBLE_ETAG}
            )
        )
        row = probe_row(f"viewer PUT {document} (If-Match never matches)", response, "403", response.status == 403)
        if response.status == 409:
            row["verdict"] = "NOT REFUSED (409: RBAC let it through; If-Match stopped the write)"
        rows.append(row)
    return refusal_outcome(rows, "viewer writes", if_match=IMPOSSIBLE_ETAG)


@SECTION.check(
    "auth.rbac-no-role-denied",
    items=("1.rbac-admin",),
    evidence=EvidenceClass.LIVE,
    title="An identity without roles is refused on admin GET (403)",
    severity=Severity.HIGH,
    remediation="Keep the three role names non-empty so admin routes require a role.",
    reference="recsys-http-and-config §1 (RBAC; all role names empty = RBAC off)",
)
def rbac_no_role_denied(ctx: AuditContext) -> Outcome:
    if not ctx.service.has_role("no_role"):
        return skipped("no role-less identity in params (auth.credentials.no_role)")
    response = accepted(ctx.service.get(admin_config_path(audited_tenant(ctx)), role="no_role"))
    rows = [probe_row("no-role identity reads admin config", response, "403", response.status == 403)]
    return refusal_outcome(rows, "role-less admin reads")


@SECTION.check(
    "auth.explain-admin-only",
    items=("1.rbac-role-names",),
    evidence=EvidenceClass.LIVE,
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
            response = accepted(ctx.service.recommend(tenant, surface, role=role, options=option))
            name = ", ".join(f"{k}={v}" for k, v in option.items())
            rows.append(probe_row(f"{role} recommend {name}", response, "403", response.status == 403))
    if not rows:
        return skipped("no viewer or operator credential in params")
    return refusal_outcome(rows, "non-admin explain requests")


# --- live: reachability, CORS, docs --------------------------------------------------------------------------------


@SECTION.check(
    "auth.readyz-reachable",
    items=("1.readyz-from-cluster", "5.readyz-readiness"),
    evidence=EvidenceClass.LIVE,
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
    items=("1.auth-mechanism",),
    evidence=EvidenceClass.LIVE,
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
    items=("1.dev-auth-disabled",),
    evidence=EvidenceClass.LIVE,
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
