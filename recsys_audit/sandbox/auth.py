"""The security stack of protected paths, in recsys-service's order:

JWT *or* dev headers -> claims (tenant, roles) -> API key -> RequireAuth -> RequireTenantClaim -> tenant scope ->
tenant rate limit -> admin RBAC.  (The file audit runs after the handler, in the server middleware.)

``SecurityStack.authorize(request)`` returns the :class:`Caller` or raises a ProblemError.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import jwt
from starlette.requests import Request

from recsys_audit.sandbox.problems import ProblemError
from recsys_audit.sandbox.settings import ServiceSettings
from recsys_audit.sandbox.store import Store, Tenant

READ_METHODS = {"GET", "HEAD", "OPTIONS"}
PROTECTED_PREFIXES = ("/v1", "/api/v1")
UNPROTECTED_PATHS = {"/v1/license", "/api/v1/license"}
ADMIN_PREFIXES = ("/v1/admin", "/api/v1/admin")


def is_protected(path: str) -> bool:
    if path in UNPROTECTED_PATHS:
        return False
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PROTECTED_PREFIXES)


def is_admin(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in ADMIN_PREFIXES)


@dataclass(frozen=True)
class Caller:
    """Who is asking. ``tenant`` is the resolved scope (external id) once the tenant middleware has run."""

    subject: str = ""
    actor_type: str = ""
    roles: frozenset[str] = frozenset()
    claim_tenant: str | None = None
    key_tenant: Tenant | None = None
    header_tenant: str | None = None  # dev auth only: a bare tenant header counts as an auth context
    tenant: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return bool(self.subject or self.claim_tenant or self.key_tenant or self.header_tenant)

    def has_role(self, name: str) -> bool:
        return bool(name) and name.lower() in self.roles


def api_key_hash(raw_key: str, secret: str) -> str:
    """Lower-case hex HMAC-SHA256(key, secret) of the trimmed key, or plain SHA-256 when the secret is empty."""
    message = raw_key.strip().encode()
    if secret:
        return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


class TenantRateLimiter:
    """Token buckets per ``tenant:<t>:user:<u>`` (in memory, per process)."""

    def __init__(self, capacity: int, refill_per_s: float) -> None:
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self._buckets: dict[str, tuple[float, float]] = {}

    MAX_KEYS = 10_000

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        if len(self._buckets) > self.MAX_KEYS:  # forget buckets that have refilled completely
            full_after = self.capacity / self.refill_per_s if self.refill_per_s > 0 else float("inf")
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
        tokens, stamp = self._buckets.get(key, (float(self.capacity), now))
        tokens = min(float(self.capacity), tokens + (now - stamp) * self.refill_per_s)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        return allowed


class SecurityStack:
    def __init__(self, settings: ServiceSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.rate_limiter = TenantRateLimiter(
            settings.tenant_rate_limit_capacity, settings.tenant_rate_limit_refill_rate
        )
        self._jwt_key = _load_public_key(settings.jwt_public_key_pem) if settings.jwt_enabled else None

    async def authorize(self, request: Request) -> Caller:
        s = self.settings
        caller = Caller()
        if s.jwt_enabled:
            caller = self._jwt_caller(request)
        elif s.dev_auth_enabled:
            caller = self._dev_caller(request)
        if s.api_key_enabled:
            caller = await self._with_api_key(request, caller)
        if s.auth_required and not caller.authenticated:
            raise ProblemError(401, "authentication required", "RECSYS_AUTH_REQUIRED")
        caller = self._scope_tenant(request, caller)
        if s.tenant_rate_limit_enabled:
            key = f"tenant:{caller.tenant}:user:{caller.subject}" if caller.subject else f"tenant:{caller.tenant}"
            if not self.rate_limiter.allow(key):
                retry = str(max(1, math.ceil(s.tenant_rate_limit_retry_after_s)))
                raise ProblemError(429, "rate limit exceeded", headers={"Retry-After": retry})
        if is_admin(request.url.path) and s.rbac_enabled:
            allowed = (s.viewer_role, s.operator_role, s.admin_role)
            if request.method not in READ_METHODS:
                allowed = (s.operator_role, s.admin_role)
            if not any(caller.has_role(role) for role in allowed):
                raise ProblemError(403, "insufficient scope", "RECSYS_FORBIDDEN")
        return caller

    # --- providers ---------------------------------------------------------------------------------------------

    def _jwt_caller(self, request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        if not header:
            return Caller()
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProblemError(401, "invalid authentication token")
        claims = self._verify_jwt(token.strip())
        return Caller(
            subject=str(claims.get("sub") or ""),
            actor_type="user",
            roles=frozenset(role.lower() for role in _claim_roles(claims, self.settings.role_claims)),
            claim_tenant=_first_claim(claims, self.settings.tenant_claims),
        )

    def _verify_jwt(self, token: str) -> dict[str, Any]:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in s.jwt_algorithms or header.get("alg", "").lower() == "none":
                raise jwt.InvalidAlgorithmError("algorithm not allowed")
            if s.jwt_kid and header.get("kid") not in (None, s.jwt_kid):
                raise jwt.InvalidKeyError("unknown kid")
            required = ["iss", "aud"]
            required += ["exp"] if s.jwt_require_expiration else []
            required += ["sub"] if s.jwt_require_subject else []
            return jwt.decode(
                token,
                self._jwt_key,
                algorithms=[alg for alg in s.jwt_algorithms if alg.upper().startswith(("RS", "PS", "ES"))],
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_clock_skew_s,
                options={"require": required},
            )
        except jwt.PyJWTError:
            raise ProblemError(401, "invalid authentication token") from None

    def _dev_caller(self, request: Request) -> Caller:
        s = self.settings
        user = request.headers.get(s.dev_user_header, "").strip()
        tenant = request.headers.get(s.dev_tenant_header, "").strip()
        if not user and not tenant:
            # recsys-service: with dev auth on, any tenant id is an auth context, even one from the tenant header
            header_tenant = request.headers.get(s.tenant_header, "").strip()
            return Caller(header_tenant=header_tenant) if header_tenant else Caller()
        return Caller(subject=user, actor_type="dev", claim_tenant=tenant or None)

    async def _with_api_key(self, request: Request, caller: Caller) -> Caller:
        raw_key = request.headers.get(self.settings.api_key_header, "")
        if not raw_key.strip():
            return caller
        row = await self.store.api_key(api_key_hash(raw_key, self.settings.api_key_hash_secret))
        now = datetime.now(UTC)
        if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            raise ProblemError(401, "invalid api key", "RECSYS_AUTH_INVALID")
        if caller.claim_tenant and not row.tenant.matches(caller.claim_tenant):
            raise ProblemError(403, "api key tenant does not match token tenant", "RECSYS_TENANT_SCOPE_MISMATCH")
        return replace(
            caller,
            subject=caller.subject or f"apikey:{row.id}",
            actor_type=caller.actor_type or "api_key",
            roles=caller.roles | {role.lower() for role in row.roles},
            key_tenant=row.tenant,
        )

    # --- tenancy -----------------------------------------------------------------------------------------------

    def _scope_tenant(self, request: Request, caller: Caller) -> Caller:
        s = self.settings
        values = request.headers.getlist(s.tenant_header)
        if len(values) > 1 or any(re.search(r"[,\s]", value.strip()) for value in values):
            raise ProblemError(403, "tenant header must hold one tenant id", "RECSYS_TENANT_SCOPE_INVALID")
        header_tenant = values[0].strip() if values and values[0].strip() else None
        context_tenant = caller.claim_tenant or (caller.key_tenant.external_id if caller.key_tenant else None)
        if s.require_tenant_claim and context_tenant is None:
            raise ProblemError(403, "tenant claim required", "RECSYS_TENANT_SCOPE_REQUIRED")
        if header_tenant and context_tenant:
            # a key's tenant may be named by uuid or external id; a claim already matched the key (above)
            matches = caller.key_tenant.matches(header_tenant) if caller.key_tenant else header_tenant == context_tenant
            if not matches:
                raise ProblemError(403, "tenant scope mismatch", "RECSYS_TENANT_SCOPE_MISMATCH")
        tenant = context_tenant or header_tenant
        if tenant is None:
            raise ProblemError(403, "tenant scope required", "RECSYS_TENANT_SCOPE_REQUIRED")
        return replace(caller, tenant=tenant)


def _load_public_key(pem: bytes | None) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if pem is None:
        raise ValueError("JWT public key missing")
    return load_pem_public_key(pem)


def _lookup(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _first_claim(claims: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = _lookup(claims, name)
        if isinstance(value, str | int) and str(value).strip():
            return str(value).strip()
    return None


def _claim_roles(claims: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    for name in names:
        value = _lookup(claims, name)
        if isinstance(value, str) and value.strip():
            return [part for part in re.split(r"[\s,]+", value) if part]
        if isinstance(value, list) and value:
            return [str(part) for part in value if str(part).strip()]
    return []
