"""A hostile target on loopback: a real HTTP server that answers every request in one abusive way.

Modes (``HostileServer(mode)``):

* ``huge`` — a 512 MiB body announced with its Content-Length;
* ``endless`` — a chunked body that never ends;
* ``gzip-bomb`` — a 1 GiB body of zeros gzip-compressed to about 1 MiB;
* ``giant-metrics`` — a 2-million-line Prometheus exposition (about 60 MB), chunked;
* ``drip`` — status line, headers and body at one byte per second;
* ``echo`` — every credential the request carried, sent back in JSON fields, headers, problem bodies, error text
  and a malformed header line, raw and in derived forms (HTML-, JSON- and percent-encoded, base64);
* ``manifest`` — manifests whose artifacts are a local file and another host's URL.

The server records every request (method, path, headers) and how many bytes it managed to send; it is a context
manager with a ``url``. :class:`RecordingServer` answers 200 to everything and only records (the "foreign host").
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import socketserver
import threading
import time
import zlib
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal
from urllib.parse import quote

Mode = Literal["huge", "endless", "gzip-bomb", "giant-metrics", "drip", "echo", "manifest", "ok"]
MODES: tuple[Mode, ...] = ("huge", "endless", "gzip-bomb", "giant-metrics", "drip", "echo", "manifest")
MiB = 1024 * 1024
HUGE_BYTES = 512 * MiB
BOMB_BYTES = 1024 * MiB
METRICS_LINES = 2_000_000
_CHUNK = 64 * 1024


@cache
def gzip_bomb() -> bytes:
    """1 GiB of zeros as one gzip stream (made once per process, about 1 MiB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MiB)
    parts = [compressor.compress(zeros) for _ in range(BOMB_BYTES // MiB)]
    return b"".join(parts) + compressor.flush()


def derived(value: str) -> list[str]:
    """The forms of a value a careless service might echo."""
    return [
        value,
        html.escape(value),
        json.dumps(value)[1:-1],
        quote(value, safe=""),
        base64.b64encode(value.encode()).decode(),
        repr(value),
    ]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _State:
    mode: Mode
    manifest_artifacts: dict[str, str] = field(default_factory=dict)
    metrics_lines: int = METRICS_LINES
    requests: list[Seen] = field(default_factory=list)
    bytes_sent: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: _State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # the auditor hanging up on a hostile answer is the point


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def _send(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        with self.server.state.lock:
            self.server.state.bytes_sent += len(data)

    def _head(self, status: str, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1")

    def _whole(self, status: str, content_type: str, body: bytes, extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)), **(extra or {})}
        self._send(self._head(status, headers) + body)

    def _read_request(self) -> Seen | None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            line = self.rfile.readline(65537)
            if not line:
                return None
            head += line
        text = head.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        method, path, _ = [*request_line.split(" "), "", ""][:3]
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length:
            self.rfile.read(min(length, MiB))
        return Seen(method, path, headers)

    def handle(self) -> None:
        seen = self._read_request()
        if seen is None:
            return
        state = self.server.state
        with state.lock:
            state.requests.append(seen)
        with contextlib.suppress(OSError):
            getattr(self, "_" + state.mode.replace("-", "_"))(seen)

    # --- modes ---------------------------------------------------------------------------------------------------

    def _ok(self, seen: Seen) -> None:
        self._whole("200 OK", "application/json", b"{}")

    def _huge(self, seen: Seen) -> None:
        self._send(self._head("200 OK", {"Content-Type": "application/json", "Content-Length": str(HUGE_BYTES)}))
        block, sent = b"0," * (_CHUNK // 2), 0
        while sent < HUGE_BYTES and not self.server.state.stopped.is_set():
            self._send(block)
            sent += len(block)

    def _endless(self, seen: Seen) -> None:
        self._send(self._head("200 OK", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}))
        chunk = f"{_CHUNK:x}\r\n".encode() + b"1" * _CHUNK + b"\r\n"
        while not self.server.state.stopped.is_set():
            self._send(chunk)

    def _gzip_bomb(self, seen: Seen) -> None:
        bomb = gzip_bomb()
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "Content-Length": str(len(bomb))}
        self._send(self._head("200 OK", headers))
        for start in range(0, len(bomb), _CHUNK):
            self._send(bomb[start : start + _CHUNK])

    def _giant_metrics(self, seen: Seen) -> None:
        self._send(self._head("200 OK", {"Content-Type": "text/plain; version=0.0.4", "Transfer-Encoding": "chunked"}))
        self._send(b"15\r\n# TYPE giant counter\n\r\n")
        batch = 2000
        for start in range(0, self.server.state.metrics_lines, batch):
            if self.server.state.stopped.is_set():
                return
            lines = "".join(f'giant_total{{n="{i}"}} 1\n' for i in range(start, start + batch)).encode()
            self._send(f"{len(lines):x}\r\n".encode() + lines + b"\r\n")
        self._send(b"0\r\n\r\n")

    def _drip(self, seen: Seen) -> None:
        answer = self._head("200 OK", {"Content-Type": "application/json", "Content-Length": "64"}) + b"{" * 64
        for byte in answer:
            if self.server.state.stopped.wait(1.0):
                return
            self._send(bytes([byte]))

    def _echo(self, seen: Seen) -> None:
        secrets = [v for k, v in seen.headers.items() if k in {"authorization", "x-api-key"}]
        token = secrets[0].removeprefix("Bearer ") if secrets else "no-credential-sent"
        forms = [form for secret in secrets for form in derived(secret.removeprefix("Bearer "))]
        path = seen.path.split("?")[0]
        if path == "/readyz":  # a malformed header line quoting the credential: the client library's error text
            self._send(b"HTTP/1.1 200 OK\r\nX-Broken " + token.encode() + b"\r\nContent-Length: 0\r\n\r\n")
        elif path in {"/healthz", "/health"}:
            self._whole("500 Internal Server Error", "text/plain", f"error: rejected token {token}".encode())
        elif path == "/metrics":
            lines = "".join(f'echo_total{{token="{json.dumps(form)[1:-1]}"}} 1\n' for form in forms)
            self._whole("200 OK", "text/plain; version=0.0.4", f"# TYPE echo counter\n{lines}".encode())
        elif path.startswith("/v1/recommend"):
            body = {
                "items": [{"item_id": form, "rank": i + 1, "score": 1.0} for i, form in enumerate(forms)],
                "meta": {"request_id": token, "tenant_id": token, "algo_version": token, "config_version": token},
                "warnings": [{"code": "SIGNAL_PARTIAL", "detail": form} for form in forms],
            }
            safe = token.encode("latin-1", "replace").decode("latin-1").replace("\r", "").replace("\n", "")
            headers = {"X-Request-Id": safe, "X-Echo": safe}
            self._whole("200 OK", "application/json", json.dumps(body).encode(), headers)
        else:
            problem = {
                "type": "https://errors.recsys.example/problem/forbidden",
                "title": "Forbidden",
                "status": 403,
                "detail": " / ".join(forms) or token,
                "code": "RECSYS_FORBIDDEN",
                "request_id": token,
            }
            self._whole("403 Forbidden", "application/problem+json", json.dumps(problem).encode())

    def _manifest(self, seen: Seen) -> None:
        parts = seen.path.strip("/").split("/")
        if len(parts) == 5 and parts[0:2] == ["registry", "current"] and parts[4] == "manifest.json":
            manifest = {
                "v": 1,
                "tenant": parts[2],
                "surface": parts[3],
                "current": self.server.state.manifest_artifacts,
                "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            self._whole("200 OK", "application/json", json.dumps(manifest).encode())
        else:
            self._whole("404 Not Found", "application/json", b'{"error":"not found"}')


class HostileServer:
    """A hostile HTTP server on loopback (see the module docstring); ``requests`` lists what it was asked."""

    def __init__(
        self, mode: Mode, *, manifest_artifacts: dict[str, str] | None = None, metrics_lines: int = METRICS_LINES
    ) -> None:
        self.state = _State(mode, manifest_artifacts or {}, metrics_lines)
        self._server = _Server(self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[Seen]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def bytes_sent(self) -> int:
        return self.state.bytes_sent

    def __enter__(self) -> HostileServer:
        if self.state.mode == "gzip-bomb":
            gzip_bomb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.stopped.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class RecordingServer(HostileServer):
    """A well-behaved server that only records: the "foreign host" a hostile manifest points at."""

    def __init__(self) -> None:
        super().__init__("ok")


def wait_for_reader(fifo: str, stop: threading.Event, opened: list[float]) -> None:
    """Poll a FIFO for a reader until ``stop``: opening its write end succeeds only while someone has it open for
    reading (and a reader blocks until a writer comes), so any open of the file by the auditor is seen here."""
    import os

    while not stop.wait(0.02):
        try:
            descriptor = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            continue
        opened.append(time.time())
        os.close(descriptor)
