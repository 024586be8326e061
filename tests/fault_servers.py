"""Misbehaving servers on loopback for the fault matrix: real sockets, each a context manager with a ``url``.

* :class:`HangingServer` accepts connections and never answers;
* :class:`FaultProxy` forwards to a real service and spoils the answers one way — ``slow`` (answers after a delay),
  ``malformed-json`` (JSON bodies cut in half), ``wrong-content-type`` (JSON replaced by an HTML page), or none —
  optionally over HTTPS with a freshly made self-signed certificate that no client trusts.

Also the helpers the hardening tests share: a changed copy of an instance's params file and a CLI run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx
import yaml

FaultMode = Literal["passthrough", "slow", "malformed-json", "wrong-content-type"]

HTML_PAGE = b"<!doctype html><html><head><title>Sign in</title></head><body><h1>Please sign in</h1></body></html>"
# Hop-by-hop and framing headers the proxy sets itself.
_NOT_FORWARDED = {"host", "connection", "content-length", "transfer-encoding", "accept-encoding", "keep-alive"}
_NOT_RETURNED = {
    "connection",
    "content-length",
    "transfer-encoding",
    "content-encoding",
    "keep-alive",
    "date",
    "server",
}


class _Background:
    """Start on ``__enter__``, stop on ``__exit__``."""

    url: str

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class HangingServer(_Background):
    """Completes the TCP handshake, reads nothing and never answers; connections stay open until ``stop``."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._connections: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self.url = ""

    def start(self) -> HangingServer:
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread.start()
        return self

    @property
    def accepted(self) -> int:
        return len(self._connections)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._connections.append(connection)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for connection in self._connections:
            connection.close()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 signed by its own key: (certificate PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "self-signed.pem", directory / "self-signed.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        return None  # a client that gave up (timeout) is expected here, not worth a traceback


class FaultProxy(_Background):
    """A reverse proxy to ``upstream`` that spoils every answer according to ``mode``; ``tls`` serves HTTPS."""

    def __init__(self, upstream: str, mode: FaultMode = "passthrough", *, delay_s: float = 0.0, tls: bool = False):
        self.upstream = upstream.rstrip("/")
        self.mode = mode
        self.delay_s = delay_s
        self.tls = tls
        self.requests: list[tuple[str, str]] = []  # (method, path) seen
        self._stopped = threading.Event()
        self._client = httpx.Client(base_url=self.upstream, timeout=10, follow_redirects=False)
        self._cert_dir: tempfile.TemporaryDirectory[str] | None = None
        self._server = _ProxyServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.url = ""

    def start(self) -> FaultProxy:
        if self.tls:
            self._cert_dir = tempfile.TemporaryDirectory(prefix="fault-tls-")
            cert, key = self_signed_certificate(Path(self._cert_dir.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()  # wakes handlers that are still delaying
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._client.close()
        if self._cert_dir is not None:
            self._cert_dir.cleanup()

    def _spoil(self, content_type: str, body: bytes) -> tuple[str, bytes]:
        if self.mode == "malformed-json" and _is_json(content_type) and body:
            return content_type, body[: len(body) // 2]
        if self.mode == "wrong-content-type" and _is_json(content_type):
            return "text/html; charset=utf-8", HTML_PAGE
        return content_type, body

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return None

            def _forward(self) -> None:
                proxy.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.mode == "slow" and proxy._stopped.wait(proxy.delay_s):
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
                try:
                    answer = proxy._client.request(self.command, self.path, headers=headers, content=body)
                except httpx.HTTPError:
                    self.send_error(502, "upstream unreachable")
                    return
                content_type, payload = proxy._spoil(answer.headers.get("content-type", ""), answer.content)
                self.send_response(answer.status_code)
                for name, value in answer.headers.multi_items():
                    if name.lower() not in _NOT_RETURNED and name.lower() != "content-type":
                        self.send_header(name, value)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    with contextlib.suppress(OSError):
                        self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_HEAD = do_OPTIONS = do_DELETE = do_PATCH = _forward

        return Handler


# --- params variants and CLI runs shared by the hardening tests ---------------------------------------------


def write_params_variant(instance_params: Path, name: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of an instance's params file beside it (so its relative references still resolve), changed by
    ``change``; the caller removes it."""
    document = yaml.safe_load(instance_params.read_text(encoding="utf-8"))
    change(document)
    path = instance_params.parent / f"{name}-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class CliRun:
    """One ``recsys-audit run`` in a subprocess: exit code, console output, wall time and what it wrote."""

    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    run_dir: Path | None
    document: dict[str, Any] = field(default_factory=dict)  # findings.json

    @property
    def findings(self) -> dict[str, dict[str, Any]]:
        return {finding["id"]: finding for finding in self.document.get("findings", [])}

    @property
    def notebooks(self) -> dict[str, dict[str, Any]]:
        return {run["name"]: run for run in self.document.get("notebooks", [])}


def run_cli_audit(
    params: Path,
    out_dir: Path,
    *,
    sections: list[int] | None = None,
    timeout_s: float = 60,
    env: dict[str, str] | None = None,
    quiet: bool = False,
) -> CliRun:
    """``recsys-audit run PARAMS --out OUT`` as a user would run it; the report path is the last stdout line."""
    command = [sys.executable, "-m", "recsys_audit.cli", "run", str(params), "--out", str(out_dir)]
    command += ["--timeout", f"{timeout_s:g}"] + (["--sections", ",".join(map(str, sections))] if sections else [])
    command += ["--quiet"] if quiet else []
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s * 4 + 60, env={**os.environ, **(env or {})}
    )
    seconds = time.monotonic() - started
    lines = result.stdout.strip().splitlines()
    run_dir = Path(lines[-1]).parent if lines and lines[-1].endswith("report.html") else None
    document: dict[str, Any] = {}
    if run_dir is not None and (run_dir / "findings.json").is_file():
        document = json.loads((run_dir / "findings.json").read_text(encoding="utf-8"))
    return CliRun(result.returncode, result.stdout, result.stderr, seconds, run_dir, document)
