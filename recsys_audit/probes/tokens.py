"""Crafted JWTs for negative authentication probes, and the JWKS fetch they start from.

Every token here is one the service must refuse: unsigned (``alg: none``), signed by a key it has never seen, a real
token whose tenant claim was edited after signing, or — with a signing key the target trusts, on non-production
targets — tokens that are expired, from the wrong issuer, for the wrong audience, or HS256 tokens keyed with the
public key (algorithm confusion). Tokens are built only in memory and never printed (the redaction module masks any
compact JWS that would reach a finding).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from recsys_audit.probes import ProbeError, http

PROBE_SUBJECT = "recsys-audit-negative-probe"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_segment(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8"))


@dataclass(frozen=True)
class ClaimSet:
    """What a legitimate token for the audited tenant would say."""

    tenant: str
    issuer: str | None
    audience: str | None
    tenant_claim: str = "tenant_id"
    role_claim: str = "roles"
    roles: tuple[str, ...] = ()

    def claims(self, *, lifetime_s: int = 300, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": PROBE_SUBJECT, "iat": now, "nbf": now - 5, "exp": now + lifetime_s}
        if self.issuer:
            claims["iss"] = self.issuer
        if self.audience:
            claims["aud"] = self.audience
        claims[self.tenant_claim] = self.tenant
        if self.roles:
            claims[self.role_claim] = list(self.roles)
        claims.update(overrides)
        return claims


def unsigned_token(claims: dict[str, Any]) -> str:
    """``alg: none``: header and payload, empty signature."""
    return f"{_json_segment({'alg': 'none', 'typ': 'JWT'})}.{_json_segment(claims)}."


def unknown_key_token(claims: dict[str, Any], kid: str | None) -> str:
    """RS256 signed by a freshly generated key, announcing a kid the target trusts (so the signature is tested)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def with_edited_claim(token: str, claim: str, value: Any) -> str:
    """The same token with one payload claim changed and the original signature kept."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ProbeError("the credential is not a compact JWT (header.payload.signature)")
    try:
        payload = json.loads(_b64url_decode(parts[1]))
    except (ValueError, json.JSONDecodeError):
        raise ProbeError("the credential's JWT payload is not JSON") from None
    if not isinstance(payload, dict):
        raise ProbeError("the credential's JWT payload is not a JSON object")
    payload[claim] = value
    return f"{parts[0]}.{_json_segment(payload)}.{parts[2]}"


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a compact JWT, unverified (used only to read a credential's own tenant claim)."""
    try:
        payload = json.loads(_b64url_decode(token.split(".")[1]))
    except (IndexError, ValueError, json.JSONDecodeError):
        raise ProbeError("the credential is not a readable compact JWT") from None
    return payload if isinstance(payload, dict) else {}


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError):
        raise ProbeError("auth.jwt.signing_key is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ProbeError("auth.jwt.signing_key is not an RSA key (the service verifies RS256)")
    return key


def signed_token(private_key: rsa.RSAPrivateKey, claims: dict[str, Any], kid: str | None) -> str:
    """RS256 with a key the target trusts: used for tokens that are valid except for one deliberate fault."""
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": kid} if kid else None)


def public_key_pem(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs256_confusion_token(public_pem: bytes, claims: dict[str, Any], kid: str | None) -> str:
    """HS256 keyed with the public key's PEM bytes: accepted only by a verifier that lets the token pick the
    algorithm (classic RS256/HS256 confusion). Built by hand because JWT libraries refuse PEM keys for HMAC."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing_input = f"{_json_segment(header)}.{_json_segment(claims)}"
    signature = hmac.new(public_pem, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


# --- JWKS ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JwksDocument:
    url: str
    status: int
    keys: list[dict[str, Any]]

    @property
    def kids(self) -> list[str]:
        return [str(key["kid"]) for key in self.keys if key.get("kid")]

    def private_members(self) -> list[str]:
        """Private-key members that a JWKS must never publish (RSA d/p/q…, EC/OKP d, symmetric k)."""
        private = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
        return sorted({member for key in self.keys for member in key if member in private})

    def key_rows(self) -> list[dict[str, Any]]:
        return [
            {"kid": key.get("kid"), "kty": key.get("kty"), "alg": key.get("alg"), "use": key.get("use")}
            for key in self.keys
        ]


def fetch_jwks(url: str, verify: ssl.SSLContext | bool, timeout_s: float) -> JwksDocument:
    """GET the JWKS document (TLS as ``verify`` says: :meth:`Params.tls`; at most
    ``http.JWKS`` bytes within ``timeout_s``)."""
    with http.client(timeout_s=timeout_s, verify=verify) as client:
        answer = http.fetch(client, "GET", url, cap=http.JWKS, deadline_s=timeout_s)
    if answer.status != 200:
        return JwksDocument(url, answer.status, [])
    try:
        body = json.loads(answer.body)
    except (ValueError, UnicodeDecodeError):
        raise ProbeError(f"GET {url}: answer is not JSON") from None
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list):
        raise ProbeError(f"GET {url}: JSON has no 'keys' array")
    return JwksDocument(url, answer.status, [key for key in keys if isinstance(key, dict)])
