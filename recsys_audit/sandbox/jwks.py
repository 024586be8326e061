"""The JWKS document of the key the sandbox trusts, served over HTTPS on its own loopback port (a daemon thread).

Started by the server when ``SANDBOX_JWKS_ADDR`` is set (TLS files ``SANDBOX_JWKS_CERT_FILE`` /
``SANDBOX_JWKS_KEY_FILE``). ``GET /.well-known/jwks.json`` (and the path of ``JWT_JWKS_URL``) returns
``{"keys": [{kty, kid, use, alg, n, e}]}``; the ``kid`` is ``SANDBOX_JWT_KID`` or the key's RFC 7638 thumbprint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

WELL_KNOWN_PATH = "/.well-known/jwks.json"


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rsa_jwk(public_pem: bytes, kid: str | None = None) -> dict[str, Any]:
    key = load_pem_public_key(public_pem)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the JWT public key must be an RSA key (RS256)")
    numbers = key.public_numbers()
    e, n = _b64url_uint(numbers.e), _b64url_uint(numbers.n)
    if kid is None:  # RFC 7638: SHA-256 of the required members in lexicographic order
        canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"), sort_keys=True)
        kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": e}


class JwksServer:
    def __init__(
        self, host: str, port: int, document: dict[str, Any], cert_file: str, key_file: str, paths: set[str]
    ) -> None:
        body = json.dumps(document).encode()
        served = paths | {WELL_KNOWN_PATH}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path.split("?")[0] in served
                payload = body if found else b"404 page not found\n"
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json" if found else "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="jwks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
