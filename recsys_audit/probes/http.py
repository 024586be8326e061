"""Bounded HTTP: every HTTP read of the audit goes through :func:`fetch`.

The target is untrusted, so each request has

* a **byte cap** on the body that counts *decompressed* bytes: the body is read raw from the socket and inflated
  here, a bounded step at a time, so neither a huge body, an endless chunked body nor a gzip bomb makes the auditor
  take more than the cap plus ``HEAD_ALLOWANCE`` from the socket, or more than the cap plus one byte from the
  decompressor;
* an **overall deadline** — connect, TLS, headers and body together — enforced on every socket operation, so a
  server that drips one byte per second is cut off at the deadline, not at the notebook's;
* the audit's **own marks**: ``User-Agent: recsys-audit/<version>`` and an ``X-Request-Id`` starting with
  ``recsys-audit-``, so operators can tell the audit's requests (and the records they leave) from real traffic.

Exceeding a cap or the deadline raises :class:`~recsys_audit.probes.ProbeError` naming it ("body over 8 MiB after
decompression", "no complete answer within 5 s"). Errors are described in the kit's words: a library's message can
quote a header value, so it is never passed on.
"""

from __future__ import annotations

import contextvars
import re
import ssl
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import httpx

import recsys_audit
from recsys_audit.probes import ProbeError

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Cap:
    """The most a kind of answer may hold, after decompression."""

    what: str  # how the error names the answer: "body", "/metrics", …
    max_bytes: int

    def __str__(self) -> str:
        size = self.max_bytes
        if size % MiB == 0:
            return f"{size // MiB} MiB"
        if size % 1_000_000 == 0:
            return f"{size // 1_000_000} MB"
        return f"{size:,} bytes"


API_BODY = Cap("body", 8 * MiB)  # service API answers (recommend, admin, health, docs)
METRICS = Cap("/metrics", 4 * MiB)  # the service's exposition (a real one is a few hundred KiB)
METRICS_MAX_LINES = 50_000  # parsing is bounded too: ~0.7 CPU-s at this size
MANIFEST = Cap("manifest or artifact", 10_000_000)  # RECSYS_ARTIFACT_MAX_BYTES default: the service reads no more
PROMETHEUS = Cap("Prometheus answer", 16 * MiB)  # rules, targets and query results of a large server
JWKS = Cap("JWKS", 1 * MiB)  # a key set is a few KiB

USER_AGENT = f"recsys-audit/{recsys_audit.__version__}"
REQUEST_ID_PREFIX = "recsys-audit-"
ACCEPT_ENCODING = "gzip, deflate"  # the codings inflated here (brotli/zstd are never asked for)
HEAD_ALLOWANCE = 64 * KiB  # status line, headers and chunk framing read beyond a body cap at most
_MIN_READ = 1 * KiB


def request_id() -> str:
    return REQUEST_ID_PREFIX + uuid.uuid4().hex


def audit_headers() -> dict[str, str]:
    """The marks every request of the audit carries (a fresh request id each call)."""
    return {"User-Agent": USER_AGENT, "X-Request-Id": request_id()}


# --- the deadline, enforced on every socket operation -----------------------------------------------------------


@dataclass
class _Budget:
    deadline: float  # time.monotonic()
    socket_limit: int  # reads are sized so that no more than this is taken from the socket (then the cap trips)
    socket_bytes: int = 0  # bytes received from the socket for this request (headers and raw body)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("recsys_audit_http_budget", default=None)


def _bounded_timeout(timeout: float | None, exc: type[Exception]) -> float | None:
    budget = _budget.get()
    if budget is None:
        return timeout
    remaining = budget.remaining()
    if remaining <= 0:
        raise exc("request deadline reached")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        timeout = _bounded_timeout(timeout, httpcore.ReadTimeout)
        budget = _budget.get()
        if budget is not None:
            max_bytes = max(_MIN_READ, min(max_bytes, budget.socket_limit - budget.socket_bytes))
        data = self._stream.read(max_bytes, timeout)
        if budget is not None:
            budget.socket_bytes += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded_timeout(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        tls = self._stream.start_tls(ssl_context, server_hostname, _bounded_timeout(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, **kwargs: Any) -> _DeadlineStream:
        timeout = _bounded_timeout(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, **kwargs))

    def connect_unix_socket(self, path: str, timeout: float | None = None, **kwargs: Any) -> _DeadlineStream:
        timeout = _bounded_timeout(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, **kwargs))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _install_deadline(transport: Any) -> None:
    """Route a transport's connections through :class:`_DeadlineStream` (httpx's default transport and proxies)."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None and not isinstance(backend, _DeadlineBackend):
        pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]


def tls_context(verify_tls: bool = True, ca_bundle: Path | None = None) -> ssl.SSLContext:
    """The audit's one TLS rule for the target's endpoints: a CA bundle when given (the certificate is verified
    against it, whatever ``verify_tls`` says), else the CAs httpx trusts by default — or, with ``verify_tls`` false and
    no bundle, no verification at all. Use it through :meth:`recsys_audit.params.Params.tls`."""
    if ca_bundle is not None:
        return ssl.create_default_context(cafile=str(ca_bundle))
    context = httpx.create_ssl_context()
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def client(
    *,
    timeout_s: float,
    verify: ssl.SSLContext | bool = True,
    base_url: str = "",
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An httpx client for :func:`fetch`: no redirects followed, the audit's User-Agent, gzip/deflate only."""
    http = httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s),
        verify=verify,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING},
        transport=transport,
    )
    for mounted in [http._transport, *http._mounts.values()]:
        _install_deadline(mounted)
    return http


# --- reading a body within its cap --------------------------------------------------------------------------------


class CapExceeded(ProbeError):
    """An answer larger than its cap; carries what was read, for the record."""

    def __init__(self, message: str, socket_bytes: int, decoded_bytes: int) -> None:
        super().__init__(message)
        self.socket_bytes = socket_bytes
        self.decoded_bytes = decoded_bytes


class _Inflater:
    """gzip/deflate decoding that never produces more than ``room + 1`` bytes per step."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        wbits = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}[coding]
        self._zlib = zlib.decompressobj(wbits)
        self._first = True

    def feed(self, data: bytes, room: int) -> Iterator[bytes]:
        pending = data
        while pending and not self._zlib.eof:
            try:
                out = self._zlib.decompress(pending, max(room, 0) + 1)
            except zlib.error:
                if self._first and self.coding == "deflate":  # some servers send raw deflate (no zlib header)
                    self._zlib, self._first = zlib.decompressobj(-zlib.MAX_WBITS), False
                    continue
                raise
            self._first = False
            room -= len(out)
            yield out
            if room < 0:
                return
            pending = self._zlib.unconsumed_tail

    def flush(self) -> bytes:
        return self._zlib.flush()


def _inflater(content_encoding: str) -> _Inflater | None:
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip() and c.strip().lower() != "identity"]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in {"gzip", "x-gzip", "deflate"}:
        raise ProbeError(f"answer uses content-encoding {content_encoding[:40]!r} (only gzip or deflate is accepted)")
    return _Inflater(codings[0])


@dataclass
class BoundedResponse:
    """A complete answer, read within its cap and deadline."""

    url: str
    status: int
    headers: httpx.Headers
    body: bytes
    elapsed_ms: float
    socket_bytes: int
    decoded_bytes: int

    @property
    def text(self) -> str:
        match = re.search(r"charset=[\"']?([\w.:-]+)", self.headers.get("content-type", ""), re.IGNORECASE)
        try:
            return self.body.decode(match.group(1) if match else "utf-8", errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


def _read_body(response: httpx.Response, cap: Cap, budget: _Budget, where: str, deadline_s: float) -> bytes:
    declared = response.headers.get("content-length", "")
    inflater = _inflater(response.headers.get("content-encoding", ""))
    if inflater is None and declared.isdigit() and int(declared) > cap.max_bytes:
        raise CapExceeded(f"{where}: {cap.what} over {cap} (Content-Length {int(declared):,})", budget.socket_bytes, 0)
    parts: list[bytes] = []
    raw_bytes = decoded = 0

    def over(after: str) -> CapExceeded:
        return CapExceeded(f"{where}: {cap.what} over {cap}{after}", budget.socket_bytes, decoded)

    try:
        for raw in response.iter_raw():
            raw_bytes += len(raw)
            if inflater is None:
                decoded += len(raw)
                parts.append(raw)
            else:
                for out in inflater.feed(raw, cap.max_bytes - decoded):
                    decoded += len(out)
                    parts.append(out)
                    if decoded > cap.max_bytes:
                        raise over(" after decompression")
            if decoded > cap.max_bytes:
                raise over("")
            if raw_bytes > cap.max_bytes:  # compressed data that does not even shrink
                raise over(" (compressed)")
            if budget.remaining() <= 0:
                raise ProbeError(f"{where}: no complete answer within {deadline_s:g} s")
        if inflater is not None:
            tail = inflater.flush()
            decoded += len(tail)
            parts.append(tail)
            if decoded > cap.max_bytes:
                raise over(" after decompression")
    except zlib.error:
        raise ProbeError(f"{where}: the {inflater.coding if inflater else ''} body is corrupt") from None
    return b"".join(parts)


@contextmanager
def _deadline(deadline_s: float, socket_limit: int) -> Iterator[_Budget]:
    budget = _Budget(time.monotonic() + deadline_s, socket_limit)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def fetch(
    http: httpx.Client,
    method: str,
    url: str,
    *,
    cap: Cap,
    deadline_s: float,
    headers: dict[str, str] | None = None,
    shown_url: str | None = None,
    **request: Any,
) -> BoundedResponse:
    """One complete request within ``cap`` and ``deadline_s`` (connect + headers + body); ProbeError otherwise.

    ``shown_url`` is how errors name the URL (default: ``method url``)."""
    where = f"{method} {shown_url or url}"
    started = time.perf_counter()
    with _deadline(deadline_s, cap.max_bytes + HEAD_ALLOWANCE) as budget:
        try:
            built = http.build_request(method, url, headers={**audit_headers(), **(headers or {})}, **request)
            response = http.send(built, stream=True)
            try:
                body = _read_body(response, cap, budget, where, deadline_s) if method != "HEAD" else b""
            finally:
                response.close()
        except UnicodeError:  # a header value httpx cannot encode: say so without quoting it
            raise ProbeError(f"{where}: a header value is not ASCII text (credential or header in params)") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            if budget.remaining() <= 0:
                raise ProbeError(f"{where}: no complete answer within {deadline_s:g} s") from None
            raise ProbeError(f"{where}: {describe_http_error(exc)}") from None
    return BoundedResponse(
        str(response.url),
        response.status_code,
        response.headers,
        body,
        (time.perf_counter() - started) * 1000,
        budget.socket_bytes,
        len(body),
    )


def describe_http_error(exc: Exception) -> str:
    """What went wrong, in the kit's words (a library's message may quote a header, e.g. a credential)."""
    text = str(exc).lower()
    if isinstance(exc, httpx.TimeoutException):
        phase = {httpx.ConnectTimeout: "connect", httpx.ReadTimeout: "read", httpx.WriteTimeout: "write"}
        return f"no answer in time ({phase.get(type(exc), 'pool')} timeout)"
    if isinstance(exc, httpx.ConnectError):
        if "certificate" in text:
            return "TLS certificate not trusted (verify_tls / ca_bundle)"
        if "ssl" in text or "tls" in text or "handshake" in text:
            return "TLS handshake failed"
        if "refused" in text:
            return "connection failed (connection refused)"
        if "name or service" in text or "nodename" in text or "getaddrinfo" in text or "resolution" in text:
            return "connection failed (host name not resolved)"
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server broke the HTTP protocol (closed the connection or sent a malformed answer)"
    if isinstance(exc, httpx.LocalProtocolError):
        return "the request could not be sent (a header or the body is not valid HTTP)"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "connection lost during the exchange"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return "not an http(s) URL"
    return f"HTTP client error ({type(exc).__name__})"
