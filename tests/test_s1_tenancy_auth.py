"""Section 1 — tenancy and authentication.

Every check on fake contexts (``CASES``): a loopback service that verifies RS256 tokens and API keys like recsys
(``Recsys(permissive=False)``) or one whose controls are broken and accepts anything (``permissive=True``), crafted
env files and Helm values, canned ``tenant_api_keys`` rows. Then the sandbox variants through the runner.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fakes import Answer, CannedDatabase, Case, Request, check_case

from recsys_audit.findings import Finding, Status
from recsys_audit.probes import tokens as crafted

ISSUER, AUDIENCE = "https://idp.example/", "recsys"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC_JWK = {**json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key())), "kid": "k1", "alg": "RS256"}
API_KEY = "rk_live_operator_0123456789abcdef"
HASH_SECRET = "4f9d2a7c1e8b6d3f0a5c9e2b7d4f1a8c"


def token(tenant: str = "acme", *roles: str) -> str:
    claims = crafted.ClaimSet(tenant, ISSUER, AUDIENCE, roles=roles).claims(lifetime_s=86400)
    return crafted.signed_token(KEY, claims, "k1")


class Recsys:
    """A loopback stand-in for the service's auth stack: RS256 bearer tokens (issuer, audience, expiry), API keys,
    the tenant header, admin RBAC and admin-only explain. ``permissive`` breaks every control: anything goes."""

    def __init__(self, permissive: bool = False) -> None:
        self.permissive = permissive

    def caller(self, request: Request) -> tuple[str, tuple[str, ...]] | None:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if bearer:
            try:
                claims = pyjwt.decode(
                    bearer,
                    KEY.public_key(),
                    algorithms=["RS256"],
                    audience=AUDIENCE,
                    issuer=ISSUER,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
            except pyjwt.PyJWTError:
                return None
            return claims["tenant_id"], tuple(claims.get("roles", ()))
        if request.headers.get("x-api-key") == API_KEY:
            return "acme", ("operator",)
        return None

    def __call__(self, request: Request) -> Answer:
        if request.path == "/readyz":
            return Answer(503 if self.permissive else 200, {"status": "unhealthy" if self.permissive else "healthy"})
        if request.method == "OPTIONS":
            origin = {"Access-Control-Allow-Origin": request.headers.get("origin", "*")} if self.permissive else {}
            return Answer(204, "", origin)
        if request.path.startswith("/docs") or request.path == "/openapi.yaml":
            return Answer(200, "<html>docs</html>") if self.permissive else Answer(404, "404 page not found\n")
        if not request.path.startswith("/v1/"):
            return Answer(404, "404 page not found\n")
        if self.permissive:
            status = 409 if request.method == "PUT" else 200
            return Answer(status, {"items": [{"item_id": "i1", "rank": 1, "score": 1.0}], "tenant_id": "any"})
        caller = self.caller(request)
        if caller is None:
            code = "RECSYS_AUTH_INVALID" if request.headers.get("x-api-key") else "RECSYS_AUTH_REQUIRED"
            return Answer(401, {"code": code})
        tenant, roles = caller
        header = request.headers.get("x-org-id")
        if header and header != tenant:
            return Answer(403, {"code": "RECSYS_TENANT_SCOPE_MISMATCH"})
        if request.path.startswith("/v1/admin/tenants/"):
            if request.path.split("/")[4] != tenant:
                return Answer(403, {"code": "RECSYS_FORBIDDEN"})
            allowed = {"operator", "admin"} if request.method == "PUT" else {"viewer", "operator", "admin"}
            if not allowed & set(roles):
                return Answer(403, {"code": "RECSYS_FORBIDDEN"})
            return Answer(409, {"code": "RECSYS_VERSION_MISMATCH"}) if request.method == "PUT" else Answer(200, {})
        if request.path == "/v1/recommend":
            options = request.json().get("options") or {}
            if (options.get("explain") == "full" or options.get("include_trace")) and "admin" not in roles:
                return Answer(403, {"code": "RECSYS_FORBIDDEN"})
        return Answer(200, {"items": [{"item_id": "i1", "rank": 1, "score": 1.0}], "meta": {"tenant_id": tenant}})


HARDENED_ENV = {
    "ENV": "production",
    "AUTH_REQUIRED": "true",
    "DEV_AUTH_ENABLED": "false",
    "JWT_AUTH_ENABLED": "true",
    "JWT_JWKS_URL": "https://idp.example/.well-known/jwks.json",
    "AUTH_JWKS_ALLOWED_HOSTS": "idp.example",
    "AUTH_ALLOW_INSECURE_JWKS": "false",
    "JWT_ISSUER": ISSUER,
    "JWT_AUDIENCE": AUDIENCE,
    "API_KEY_ENABLED": "true",
    "API_KEY_HASH_SECRET": HASH_SECRET,
    "AUTH_REQUIRE_TENANT_CLAIM": "true",
    "AUTH_VIEWER_ROLE": "viewer",
    "AUTH_OPERATOR_ROLE": "operator",
    "AUTH_ADMIN_ROLE": "admin",
    "RECSYS_EXPLAIN_REQUIRE_ADMIN": "true",
}
TOKENS = {
    "viewer.jwt": token("acme", "viewer"),
    "operator.jwt": token("acme", "operator"),
    "no_role.jwt": token("acme"),
    "beta.jwt": token("beta", "viewer"),
    "operator.key": API_KEY,
    "signing.pem": KEY_PEM,
    "forged.jwt": crafted.unknown_key_token(crafted.ClaimSet("acme", ISSUER, AUDIENCE).claims(lifetime_s=86400), "k1"),
}
CREDENTIALS = {
    "viewer": {"bearer": "file:viewer.jwt"},
    "operator": {"api_key": "file:operator.key"},
    "no_role": {"bearer": "file:no_role.jwt"},
}


def auth(
    env: dict[str, str] | None = None,
    *,
    permissive: bool = False,
    credentials: dict[str, Any] | None = None,
    jwt: dict[str, Any] | None = None,
    production: bool = True,
    verify_tls: bool = True,
    other_tenant: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Evidence for an auth case: the service's env, a verifying (or permissive) service, the audit's identities."""
    params: dict[str, Any] = {
        "target": {"production": production, "verify_tls": verify_tls},
        "auth": {
            "mechanisms": ["jwt", "api_key"],
            "tenant_source": "claims",
            "tenant_source_documented_at": "https://wiki.example/recsys/tenancy",
            "jwt": {"issuer": ISSUER, "audience": AUDIENCE, "signing_kid": "k1", **(jwt or {})},
            "credentials": CREDENTIALS if credentials is None else credentials,
        },
    }
    if other_tenant:
        params["auth"]["other_tenant"] = {"tenant": "beta", "credential": {"bearer": "file:beta.jwt"}}
    routes = {"*": Recsys(permissive), "GET /jwks.json": Answer(200, {"keys": [PUBLIC_JWK]})}
    return {"env": HARDENED_ENV if env is None else env, "routes": routes, "files": TOKENS, "params": params, **extra}


def changed(**env: str) -> dict[str, str]:
    return {**HARDENED_ENV, **env}


def stored_keys(*hashes: str) -> CannedDatabase:
    """tenant_api_keys holding these key hashes (answers the exact-hash lookup)."""
    return CannedDatabase(
        {
            "FROM tenant_api_keys WHERE key_hash = ANY": lambda params: [
                {"key_hash": h} for h in params[0] if h in hashes
            ]
        }
    )


def key_rows(**row: Any) -> CannedDatabase:
    now = dt.datetime.now(dt.UTC)
    base = {
        "name": "operator",
        "tenant": "acme",
        "roles": ["operator"],
        "created_at": now - dt.timedelta(days=3),
        "expires_at": now + dt.timedelta(days=60),
        "revoked_at": None,
        "hash_is_hex64": True,
    }
    return CannedDatabase({"FROM tenant_api_keys k LEFT JOIN tenants": [{**base, **row}]}, tables={"tenant_api_keys"})


KEYED = hmac.new(HASH_SECRET.encode(), API_KEY.encode(), hashlib.sha256).hexdigest()
UNKEYED = hashlib.sha256(API_KEY.encode()).hexdigest()
HIDDEN_SECRET = {k: v for k, v in HARDENED_ENV.items() if k != "API_KEY_HASH_SECRET"}
HELM_VALUE_FROM = {"api": {"env": [{"name": "API_KEY_HASH_SECRET", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}}


CASES = [
    # --- config rules
    Case("auth.dev-auth-disabled", "off", Status.PASS, auth()),
    Case("auth.dev-auth-disabled", "on", Status.FAIL, auth(changed(DEV_AUTH_ENABLED="true")), "DEV_AUTH_ENABLED=true"),
    Case("auth.auth-required", "on", Status.PASS, auth()),
    Case("auth.auth-required", "off", Status.FAIL, auth(changed(AUTH_REQUIRED="false")), "AUTH_REQUIRED=false"),
    Case("auth.tenant-claim-required", "on", Status.PASS, auth()),
    Case("auth.tenant-claim-required", "off", Status.FAIL, auth(changed(AUTH_REQUIRE_TENANT_CLAIM="0")), "by header"),
    Case("auth.env-production", "production", Status.PASS, auth()),
    Case("auth.env-production", "staging", Status.FAIL, auth(changed(ENV="staging")), "ENV=staging"),
    Case("auth.env-production", "not a production target", Status.SKIP, auth(changed(ENV="dev"), production=False)),
    Case("auth.bypass-flags-off", "all off", Status.PASS, auth()),
    Case(
        "auth.bypass-flags-off",
        "skip header on",
        Status.FAIL,
        auth(changed(JWT_SKIP_HEADER_ENABLED="true")),
        "JWT_SKIP_HEADER_ENABLED=true",
    ),
    Case(
        "auth.bypass-flags-off",
        "values hidden in a Secret",
        Status.WARN,
        auth({}, helm={"api": {"existingSecret": "recsys-api"}}),
        "not visible: JWT_ALLOW_DANGEROUS_DEV_BYPASSES",
    ),
    Case(
        "auth.bypass-flags-off",
        "not a boolean",
        Status.FAIL,
        auth(changed(RATE_LIMIT_SKIP_ENABLED="yes")),
        "not a boolean",
    ),
    Case("auth.rbac-roles", "names set", Status.PASS, auth()),
    Case("auth.rbac-roles", "admin role empty", Status.FAIL, auth(changed(AUTH_ADMIN_ROLE="")), "explain=full"),
    # --- declared and configured mechanisms
    Case("auth.production-mechanism", "declared and on", Status.PASS, auth()),
    Case(
        "auth.production-mechanism",
        "JWT declared but off",
        Status.FAIL,
        auth(changed(JWT_AUTH_ENABLED="false")),
        "JWT_AUTH_ENABLED",
    ),
    Case(
        "auth.production-mechanism",
        "switch hidden",
        Status.WARN,
        auth(
            {k: v for k, v in HARDENED_ENV.items() if k != "API_KEY_ENABLED"},
            helm={"api": {"env": [{"name": "API_KEY_ENABLED", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}},
        ),
        "not visible",
    ),
    Case("auth.jwt-config", "https JWKS on the allow-list", Status.PASS, auth()),
    Case(
        "auth.jwt-config", "http JWKS", Status.FAIL, auth(changed(JWT_JWKS_URL="http://idp.example/jwks")), "not https"
    ),
    Case(
        "auth.jwt-config",
        "issuer kept in a secret",
        Status.WARN,
        auth(
            {k: v for k, v in HARDENED_ENV.items() if k != "JWT_ISSUER"},
            helm={"api": {"env": [{"name": "JWT_ISSUER", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}},
        ),
        "JWT_ISSUER not visible",
    ),
    Case("auth.tenant-source-documented", "claims, documented", Status.PASS, auth()),
    Case(
        "auth.tenant-source-documented",
        "claims but header allowed",
        Status.FAIL,
        auth(changed(AUTH_REQUIRE_TENANT_CLAIM="false")),
        "claims-only",
    ),
    # --- API-key hash secret: config, Helm secrets and the stored hash of the audit's own key
    Case("auth.api-key-secret", "set, and the stored hash is keyed with it", Status.PASS, auth(db=stored_keys(KEYED))),
    Case("auth.api-key-secret", "empty", Status.FAIL, auth(changed(API_KEY_HASH_SECRET="")), "plain SHA-256"),
    Case(
        "auth.api-key-secret",
        'Helm api.secrets entry ""',
        Status.FAIL,
        auth(HIDDEN_SECRET, helm={"api": {"secrets": {"API_KEY_HASH_SECRET": ""}}}),
        "is empty",
    ),
    Case(
        "auth.api-key-secret",
        "example value",
        Status.FAIL,
        auth(changed(API_KEY_HASH_SECRET="changeme-please-123")),
        "example value",
    ),
    Case(
        "auth.api-key-secret",
        "hidden, the running service stores plain SHA-256",
        Status.FAIL,
        auth(HIDDEN_SECRET, helm=HELM_VALUE_FROM, db=stored_keys(UNKEYED)),
        "plain SHA-256",
    ),
    Case(
        "auth.api-key-secret",
        "hidden, the stored hash of a working key is keyed",
        Status.PASS,
        auth(HIDDEN_SECRET, helm=HELM_VALUE_FROM, db=stored_keys(KEYED)),
        "observed",
    ),
    Case(
        "auth.api-key-secret",
        "hidden and nothing to observe",
        Status.WARN,
        auth(HIDDEN_SECRET, helm=HELM_VALUE_FROM),
        "not visible",
    ),
    Case(
        "auth.api-key-secret",
        "config says one secret, the service uses another",
        Status.WARN,
        auth(db=stored_keys(hmac.new(b"another-secret", API_KEY.encode(), hashlib.sha256).hexdigest())),
        "may not be what runs",
    ),
    Case("auth.key-rotation-documented", "awaits its attestation", Status.MANUAL, auth()),
    # --- the audit's own credentials
    Case("auth.credentials-accepted", "all accepted", Status.PASS, auth()),
    Case(
        "auth.credentials-accepted",
        "viewer token refused",
        Status.ERROR,
        auth(credentials={"viewer": {"bearer": "file:forged.jwt"}}),
        "auth.credentials.viewer",
    ),
    Case("auth.credentials-accepted", "no credential at all", Status.WARN, auth(credentials={}, other_tenant=False)),
    # --- live: callers without real credentials
    Case("auth.unauthenticated-refused", "401 everywhere", Status.PASS, auth()),
    Case("auth.unauthenticated-refused", "anonymous served", Status.FAIL, auth(permissive=True), "→ 200"),
    Case("auth.dev-headers-refused", "refused", Status.PASS, auth()),
    Case("auth.dev-headers-refused", "dev headers accepted", Status.FAIL, auth(permissive=True)),
    Case("auth.tenant-header-alone-refused", "refused", Status.PASS, auth()),
    Case("auth.tenant-header-alone-refused", "header picks the tenant", Status.FAIL, auth(permissive=True)),
    # --- live: forged tokens
    Case("auth.jwt-alg-none-refused", "refused", Status.PASS, auth()),
    Case("auth.jwt-alg-none-refused", "accepted", Status.FAIL, auth(permissive=True), "unsigned tokens not refused"),
    Case("auth.jwt-unknown-key-refused", "refused", Status.PASS, auth()),
    Case("auth.jwt-unknown-key-refused", "accepted", Status.FAIL, auth(permissive=True)),
    Case("auth.jwt-tampered-claim-refused", "refused", Status.PASS, auth()),
    Case("auth.jwt-tampered-claim-refused", "accepted", Status.FAIL, auth(permissive=True)),
    Case(
        "auth.jwt-trusted-key-negatives",
        "refused",
        Status.PASS,
        auth(production=False, jwt={"signing_key": "file:signing.pem"}),
    ),
    Case(
        "auth.jwt-trusted-key-negatives",
        "accepted",
        Status.FAIL,
        auth(permissive=True, production=False, jwt={"signing_key": "file:signing.pem"}),
    ),
    Case(
        "auth.jwt-trusted-key-negatives",
        "production without opt-in",
        Status.SKIP,
        auth(jwt={"signing_key": "file:signing.pem"}),
        "allow_signing_in_production",
    ),
    # --- live: JWKS over verified TLS
    Case(
        "auth.jwks-reachable",
        "https, verified",
        Status.PASS,
        auth(tls=True, jwt={"jwks_url": "{url}/jwks.json", "ca_bundle": "self-signed.pem"}),
    ),
    Case("auth.jwks-reachable", "plain http", Status.FAIL, auth(jwt={"jwks_url": "{url}/jwks.json"}), "plain http"),
    Case(
        "auth.jwks-reachable",
        "https, not verified",
        Status.WARN,
        auth(tls=True, jwt={"jwks_url": "{url}/jwks.json"}, verify_tls=False),
        "not verified",
    ),
    # --- live and stored API keys
    Case("auth.api-key-unknown-refused", "401", Status.PASS, auth()),
    Case("auth.api-key-unknown-refused", "accepted", Status.FAIL, auth(permissive=True)),
    Case("auth.api-key-storage", "hashed, expiring, young", Status.PASS, auth(db=key_rows())),
    Case(
        "auth.api-key-storage",
        "key material not hashed",
        Status.FAIL,
        auth(db=key_rows(hash_is_hex64=False)),
        "not stored as a hash",
    ),
    Case("auth.api-key-storage", "never expires", Status.WARN, auth(db=key_rows(expires_at=None)), "never expires"),
    # --- live: tenancy and RBAC
    Case("auth.cross-tenant-header-refused", "403", Status.PASS, auth()),
    Case("auth.cross-tenant-header-refused", "served", Status.FAIL, auth(permissive=True)),
    Case(
        "auth.cross-tenant-header-refused",
        "the audit's viewer token is refused",
        Status.ERROR,
        auth(credentials={"viewer": {"bearer": "file:forged.jwt"}}),
        "auth.credentials.viewer",
    ),
    Case("auth.cross-tenant-admin-refused", "403", Status.PASS, auth()),
    Case("auth.cross-tenant-admin-refused", "tenant B's documents served", Status.FAIL, auth(permissive=True)),
    Case("auth.rbac-viewer-write-denied", "403 before the version check", Status.PASS, auth()),
    Case("auth.rbac-viewer-write-denied", "409: RBAC let it through", Status.FAIL, auth(permissive=True), "409"),
    Case("auth.rbac-no-role-denied", "403", Status.PASS, auth()),
    Case("auth.rbac-no-role-denied", "served", Status.FAIL, auth(permissive=True)),
    Case("auth.explain-admin-only", "403 for viewer and operator", Status.PASS, auth()),
    Case("auth.explain-admin-only", "explain served", Status.FAIL, auth(permissive=True)),
    Case(
        "auth.explain-admin-only",
        "the audit's operator key is refused",
        Status.ERROR,
        auth(files=TOKENS | {"operator.key": "rk_live_wrong"}),
        "auth.credentials.operator",
    ),
    # --- live: reachability, CORS, docs
    Case("auth.readyz-reachable", "200", Status.PASS, auth()),
    Case("auth.readyz-reachable", "503", Status.FAIL, auth(permissive=True), "503"),
    Case(
        "auth.cors-restricted",
        "unlisted origin not allowed",
        Status.PASS,
        auth(changed(CORS_ALLOWED_ORIGINS="https://shop.example.com")),
    ),
    Case("auth.cors-restricted", "origin reflected", Status.FAIL, auth(permissive=True)),
    Case("auth.docs-disabled", "not served", Status.PASS, auth()),
    Case("auth.docs-disabled", "served in production", Status.FAIL, auth(permissive=True)),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_check_on_fake_context(fake_audit, case: Case) -> None:
    check_case(fake_audit, case)


# --- what the live probes send --------------------------------------------------------------------------------------


def test_alg_none_probe_sends_an_unsigned_admin_token(fake_audit) -> None:
    audit = fake_audit(**auth(permissive=True))
    assert audit.run("auth.jwt-alg-none-refused").status == Status.FAIL
    [sent] = [r for r in audit.server.seen if r.headers.get("authorization", "").startswith("Bearer ")]
    header = json.loads(crafted._b64url_decode(sent.headers["authorization"].split()[1].split(".")[0]))
    assert header["alg"] == "none" and sent.path == "/v1/admin/tenants/acme/config"
    assert crafted.token_claims(sent.headers["authorization"].split()[1])["roles"] == ["admin"]


def test_write_denial_probe_never_sends_a_matchable_etag(fake_audit) -> None:
    audit = fake_audit(**auth(permissive=True))
    finding = audit.run("auth.rbac-viewer-write-denied")
    assert finding.evidence["if_match"] == "recsys-audit-write-denial-probe-never-matches"
    puts = [r for r in audit.server.seen if r.method == "PUT"]
    assert len(puts) == 2 and {r.headers["if-match"] for r in puts} == {finding.evidence["if_match"]}


def test_trusted_key_probes_show_the_control_and_leak_no_token(fake_audit) -> None:
    finding = fake_audit(**auth(production=False, jwt={"signing_key": "file:signing.pem"})).run(
        "auth.jwt-trusted-key-negatives"
    )
    assert finding.evidence["control"][0]["status"] == 200
    assert {row["probe"]: row["status"] for row in finding.evidence["probes"]} == {
        "expired an hour ago": 401,
        "wrong issuer": 401,
        "wrong audience": 401,
        "HS256 keyed with the public key": 401,
    }
    assert "eyJ" not in json.dumps(finding.to_dict()).replace("eyJ***", "")


def test_api_key_secret_never_shows_the_secret_or_the_hash(fake_audit) -> None:
    finding = fake_audit(**auth(db=stored_keys(KEYED))).run("auth.api-key-secret")
    text = json.dumps(finding.to_dict())
    assert HASH_SECRET not in text and KEYED not in text and API_KEY not in text


# --- the sandbox variants, through the runner ----------------------------------------------------------------------


def probe_rows(finding: Finding) -> list[dict[str, Any]]:
    return finding.evidence.get("probes", [])


@pytest.mark.slow
def test_hardened_passes_every_check(audit_findings) -> None:
    findings = audit_findings("hardened")
    section = [f for f in findings.values() if f.section == 1]
    wrong = {f.id: (f.status, f.summary) for f in section if f.status != Status.PASS}
    assert not wrong  # the rotation process is attested in the hardened params
    assert findings["auth.api-key-secret"].evidence["stored_keys"][0]["verdict"].endswith("configured secret")
    credentials = findings["auth.credentials-accepted"].evidence["credentials"]
    assert {row["role"] for row in credentials} == {"viewer", "operator", "admin", "no_role", "other_tenant"}
    trusted = findings["auth.jwt-trusted-key-negatives"]
    assert trusted.evidence["control"][0]["status"] == 200
    assert {row["status"] for row in probe_rows(trusted)} == {401}
    for cid in ("auth.jwt-alg-none-refused", "auth.jwt-unknown-key-refused", "auth.jwt-tampered-claim-refused"):
        assert [row["status"] for row in probe_rows(findings[cid])] == [401]
    assert {row["status"] for row in probe_rows(findings["auth.rbac-viewer-write-denied"])} == {403}
    # the operator authenticates with an API key: its explain requests pass authentication and meet RBAC (403)
    explain = probe_rows(findings["auth.explain-admin-only"])
    assert [row["status"] for row in explain if row["probe"].startswith("operator")] == [403, 403]


@pytest.mark.slow
def test_cross_tenant_admin_hole_is_caught(audit_findings) -> None:
    finding = audit_findings("code-defects")["auth.cross-tenant-admin-refused"]
    assert finding.status == Status.FAIL
    leaked = [row for row in probe_rows(finding) if row["verdict"] != "ok"]
    assert leaked and any(row["status"] == 200 for row in leaked)
    assert any("/v1/admin/tenants/" in row["request"] and row["as"] == "viewer" for row in leaked)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("check_id", "expected"),
    [
        ("auth.dev-auth-disabled", Status.FAIL),
        ("auth.dev-headers-refused", Status.FAIL),
        ("auth.tenant-header-alone-refused", Status.FAIL),
        ("auth.tenant-claim-required", Status.FAIL),
        ("auth.api-key-storage", Status.WARN),
        ("auth.production-mechanism", Status.FAIL),
        ("auth.cors-restricted", Status.WARN),  # CORS * on a development (not production) deployment
        ("auth.docs-disabled", Status.WARN),
        ("auth.credentials-accepted", Status.PASS),  # the dev-header identities are accepted
        ("auth.api-key-secret", Status.SKIP),
    ],
)
def test_as_shipped_defaults_are_caught(audit_findings, check_id: str, expected: Status) -> None:
    finding = audit_findings("as-shipped")[check_id]
    assert finding.status == expected, finding.summary
    if check_id == "auth.dev-headers-refused":
        accepted = [row for row in probe_rows(finding) if row["verdict"] != "ok"]
        assert any(row["status"] == 200 and "recommend" in row["probe"] for row in accepted)
    if check_id == "auth.tenant-header-alone-refused":  # a bare X-Org-Id was served as tenant demo
        [row] = probe_rows(finding)
        assert row["status"] == 200 and row["verdict"] != "ok" and "X-Org-Id" in row["probe"]
    if check_id == "auth.api-key-storage":
        assert any(row["verdict"] == "active, never expires" for row in finding.evidence["keys"])
        assert "key_hash" not in json.dumps(finding.evidence["keys"], default=str)
