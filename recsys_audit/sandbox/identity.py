"""Identities of a sandbox instance: the JWT signing key and JWKS, the TLS certificates, and minted tokens.

* ``secrets/jwt-signing.pem`` (RSA, 0600) signs RS256 tokens; its public half is ``secrets/jwt-signing.pub.pem`` and
  ``jwks/jwks.json`` (kid = RFC 7638 thumbprint).
* ``jwks/ca.pem`` is a self-signed CA; ``jwks/server.pem`` / ``server-key.pem`` a certificate it issued for
  127.0.0.1 and localhost, for the JWKS endpoint the server runs (``SANDBOX_JWKS_ADDR``).
* ``secrets/<role>.jwt``: tokens of tenant ``demo`` for viewer, operator, admin and no role, and a viewer of tenant
  ``beta`` (``other_tenant``), valid for 24 hours.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

TOKEN_LIFETIME = dt.timedelta(hours=24)
AUDITED_TENANT = "demo"
OTHER_TENANT = "beta"
# role name in params -> roles claim of the token
TOKEN_ROLES: dict[str, list[str]] = {"viewer": ["viewer"], "operator": ["operator"], "admin": ["admin"], "no_role": []}


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def jwk_for(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    jwk = {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}
    thumbprint = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest()
    kid = base64.urlsafe_b64encode(thumbprint).rstrip(b"=").decode("ascii")
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


# --- certificates ------------------------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "recsys sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _server_sans() -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    days: int = 30,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        builder = builder.add_extension(_server_sans(), critical=False).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def self_signed_server_certificate(common_name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for 127.0.0.1/localhost: (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(common_name, key, None, ca=False)
    return cert.public_bytes(serialization.Encoding.PEM), _private_pem(key)


# --- the identity set of an instance -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxIdentity:
    directory: Path  # instance directory
    kid: str

    @property
    def signing_key_file(self) -> Path:
        return self.directory / "secrets" / "jwt-signing.pem"

    @property
    def public_key_file(self) -> Path:
        return self.directory / "secrets" / "jwt-signing.pub.pem"

    @property
    def jwks_file(self) -> Path:
        return self.directory / "jwks" / "jwks.json"

    @property
    def ca_file(self) -> Path:
        return self.directory / "jwks" / "ca.pem"

    @property
    def server_cert_file(self) -> Path:
        return self.directory / "jwks" / "server.pem"

    @property
    def server_key_file(self) -> Path:
        return self.directory / "jwks" / "server-key.pem"

    def token_file(self, role: str) -> Path:
        return self.directory / "secrets" / f"{role}.jwt"

    def mint(self, *, issuer: str, audience: str, subject: str, tenant: str, roles: list[str]) -> str:
        now = dt.datetime.now(dt.UTC)
        claims = {
            "iss": issuer,
            "aud": audience,
            "sub": subject,
            "tenant_id": tenant,
            "roles": roles,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()) - 5,
            "exp": int((now + TOKEN_LIFETIME).timestamp()),
            "jti": str(uuid.uuid4()),
        }
        key = self.signing_key_file.read_bytes()
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})

    def mint_role_tokens(self, issuer: str, audience: str) -> dict[str, Path]:
        """Write one token per audited role plus ``other_tenant``; returns role -> token file."""
        written = {}
        for role, claim_roles in TOKEN_ROLES.items():
            token = self.mint(
                issuer=issuer, audience=audience, subject=f"sandbox-{role}", tenant=AUDITED_TENANT, roles=claim_roles
            )
            written[role] = self.token_file(role)
            _write_private(written[role], token.encode())
        other = self.mint(
            issuer=issuer, audience=audience, subject="sandbox-beta-viewer", tenant=OTHER_TENANT, roles=["viewer"]
        )
        written["other_tenant"] = self.token_file("other_tenant")
        _write_private(written["other_tenant"], other.encode())
        return written


def create_identity(directory: Path) -> SandboxIdentity:
    """Signing key, JWKS and the JWKS endpoint's CA + server certificate, under ``directory``."""
    (directory / "jwks").mkdir(parents=True, exist_ok=True)
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwk_for(signing.public_key())
    identity = SandboxIdentity(directory, jwk["kid"])
    _write_private(identity.signing_key_file, _private_pem(signing))
    identity.public_key_file.write_bytes(
        signing.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    identity.jwks_file.write_text(json.dumps({"keys": [jwk]}, indent=2), encoding="utf-8")

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("recsys sandbox CA", ca_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate("127.0.0.1", server_key, (ca_cert.subject, ca_key), ca=False)
    identity.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    identity.server_cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(identity.server_key_file, _private_pem(server_key))
    return identity


def load_identity(directory: Path) -> SandboxIdentity:
    keys = json.loads((directory / "jwks" / "jwks.json").read_text(encoding="utf-8"))["keys"]
    return SandboxIdentity(directory, keys[0]["kid"])
