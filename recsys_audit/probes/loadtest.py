"""Load-test reports in the upstream loadtest JSON format, and the kit's own bounded live load test.

The report format (recsys ``api/cmd/loadtest``): ``generated_at``, ``url``, ``endpoint``, ``surface``, ``tenant``,
``requests``, ``concurrency``, ``user_cardinality``, ``success`` (2xx), ``errors`` (transport failures only),
``elapsed_ms``, ``rps``, ``latency_ms{p50,p95,p99}`` (over every response, non-2xx included) and
``status_codes{code: count}``, plus optional notes.

The live load test is the only place the kit generates load. It sends at most ``requests`` requests, with at most
``concurrency`` in flight, and starts none after ``max_seconds``; the sender it drives is a read-only POST
``/v1/recommend`` (see :func:`recommend_sender`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from recsys_audit.probes import ProbeError
from recsys_audit.probes.http import API_BODY, USER_AGENT, request_id

if TYPE_CHECKING:
    from recsys_audit.probes.service import Role, ServiceClient

REQUIRED_FIELDS = ("generated_at", "url", "requests", "concurrency", "success", "errors", "rps", "latency_ms")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The loadtest tool's percentile: the value at index ``floor(fraction * n)`` of the sorted samples.

    With few samples the high percentiles collapse onto the maximum (20 samples: p95 = p99 = max).
    """
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


@dataclass
class LoadTestReport:
    generated_at: str
    url: str
    requests: int
    concurrency: int
    success: int
    errors: int
    rps: float
    latency_ms: dict[str, float]
    status_codes: dict[str, int] = field(default_factory=dict)
    endpoint: str = "/v1/recommend"
    surface: str = ""
    tenant: str = ""
    user_cardinality: int = 0
    elapsed_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # optional notes (catalog_size, cpu_notes, ...)

    @property
    def generated(self) -> dt.datetime:
        return _parse_time(self.generated_at)

    def status_share(self, *codes: int) -> float:
        total = sum(self.status_codes.values()) or self.requests
        hits = sum(count for code, count in self.status_codes.items() if int(code) in codes)
        return hits / total if total else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("extra"))
        return data

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _parse_time(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def read_report(path: Path) -> LoadTestReport:
    """Read and validate a loadtest JSON report; problems raise a one-line :class:`ProbeError` naming the field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProbeError(f"load-test report {path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ProbeError(f"load-test report {path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise ProbeError(f"load-test report {path}: expected a JSON object")
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise ProbeError(f"load-test report {path}: missing field(s) {', '.join(missing)} — regenerate it")
    latency = data["latency_ms"]
    if not isinstance(latency, dict) or not all(k in latency for k in ("p50", "p95", "p99")):
        raise ProbeError(f"load-test report {path}: latency_ms must hold p50, p95 and p99")
    known = set(LoadTestReport.__dataclass_fields__) - {"extra"}
    try:
        report = LoadTestReport(
            **{k: v for k, v in data.items() if k in known},
            extra={k: v for k, v in data.items() if k not in known},
        )
        report.latency_ms = {k: float(v) for k, v in latency.items()}
        report.status_codes = {str(k): int(v) for k, v in (data.get("status_codes") or {}).items()}
        report.requests, report.success, report.errors = int(report.requests), int(report.success), int(report.errors)
        report.generated  # noqa: B018 - validates the timestamp
    except (TypeError, ValueError) as exc:
        raise ProbeError(f"load-test report {path}: malformed value ({exc})") from None
    return report


# --- the live load test ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    retry_after: str | None = None
    code: str | None = None  # problem code, read for 503s only


Sender = Callable[[int], Reply]


@dataclass
class LoadTestRun:
    """What a live run measured; ``latencies_ms`` are for every answered request (non-2xx included)."""

    requested: int
    concurrency: int
    max_seconds: float
    sent: int = 0
    transport_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    status_codes: Counter[int] = field(default_factory=Counter)
    overload_replies: list[Reply] = field(default_factory=list)  # the first few 503s, as answered
    elapsed_s: float = 0.0
    stopped_by_time: bool = False
    peak_in_flight: int = 0

    def percentiles(self) -> dict[str, float]:
        ordered = sorted(self.latencies_ms)
        return {name: round(percentile(ordered, q), 3) for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}

    def report(self, url: str, endpoint: str, tenant: str, surface: str, user_cardinality: int) -> LoadTestReport:
        answered = sum(self.status_codes.values())
        return LoadTestReport(
            generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            url=url,
            endpoint=endpoint,
            surface=surface,
            tenant=tenant,
            requests=self.sent,
            concurrency=self.concurrency,
            user_cardinality=user_cardinality,
            success=sum(n for code, n in self.status_codes.items() if 200 <= code < 300),
            errors=self.transport_errors,
            elapsed_ms=round(self.elapsed_s * 1000, 3),
            rps=round(answered / self.elapsed_s, 2) if self.elapsed_s else 0.0,
            latency_ms=self.percentiles(),
            status_codes={str(code): n for code, n in sorted(self.status_codes.items())},
            extra={"degradation_behavior": "stopped by the time cap" if self.stopped_by_time else ""},
        )


def run_load_test(send: Sender, requests: int, concurrency: int, max_seconds: float) -> LoadTestRun:
    """Send ``requests`` requests with ``concurrency`` workers; no request starts after ``max_seconds``."""
    if requests <= 0 or concurrency <= 0 or max_seconds <= 0:
        raise ValueError("requests, concurrency and max_seconds must be positive")
    run = LoadTestRun(requests, concurrency, max_seconds)
    lock = threading.Lock()
    next_index = 0
    in_flight = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    def worker() -> None:
        nonlocal next_index, in_flight
        while True:
            with lock:
                if next_index >= requests:
                    return
                if time.perf_counter() >= deadline:
                    run.stopped_by_time = True
                    return
                index = next_index
                next_index += 1
                run.sent += 1
                in_flight += 1
                run.peak_in_flight = max(run.peak_in_flight, in_flight)
            began = time.perf_counter()
            try:
                reply: Reply | None = send(index)
            except ProbeError:
                reply = None
            elapsed_ms = (time.perf_counter() - began) * 1000
            with lock:
                in_flight -= 1
                if reply is None:
                    run.transport_errors += 1
                    continue
                run.latencies_ms.append(elapsed_ms)
                run.status_codes[reply.status] += 1
                if reply.status == 503 and len(run.overload_replies) < 20:
                    run.overload_replies.append(reply)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.elapsed_s = time.perf_counter() - started
    return run


class RecommendSender:
    """Read-only ``POST /v1/recommend`` requests for the load test, cycling through ``user_cardinality`` users.

    It uses one keep-alive ``http.client`` connection per worker thread: a lighter client than the probes' httpx, so
    that under load the measured latency is the service's, not the client's. The method and path are fixed, so it
    can send nothing else. Credentials come from the probes' client (revealed here, at the point of use).
    """

    def __init__(
        self,
        service: ServiceClient,
        tenant: str,
        surface: str,
        *,
        role: Role = "viewer",
        user_cardinality: int = 1000,
    ) -> None:
        params = service.params
        url = urlsplit(service.base_url)
        self._https = url.scheme == "https"
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (443 if self._https else 80)
        self.path = url.path.rstrip("/") + "/v1/recommend"
        self._timeout = params.target.timeout_s
        self._headers = {
            **service.auth_headers(role),
            params.auth.tenant_header: tenant,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT + " (load test)",
        }
        self._context: ssl.SSLContext | None = params.tls() if self._https else None
        self._surface = surface
        self._users = user_cardinality
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if self._https:
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._context
                )
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        self._local.connection = None

    def __call__(self, index: int) -> Reply:
        user = f"recsys-audit-load-{index % self._users}"
        body = json.dumps({"surface": self._surface, "k": 20, "user": {"user_id": user}}).encode()
        for attempt in (1, 2):
            connection = self._connection()
            reused = connection.sock is not None
            # the whole exchange within timeout_s: a server that drips its answer is cut off, not waited for
            watchdog = threading.Timer(self._timeout, _cut, (connection,))
            watchdog.start()
            try:
                headers = {**self._headers, "X-Request-Id": request_id()}
                connection.request("POST", self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read(API_BODY.max_bytes + 1)  # no Accept-Encoding: raw bytes are the body
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop(connection)
                if reused and attempt == 1:
                    continue  # the server closed an idle keep-alive connection: resend once on a fresh one
                raise ProbeError(f"POST {self.path}: {type(exc).__name__}") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(connection)
                raise ProbeError(f"POST {self.path}: {type(exc).__name__}") from None
            finally:
                watchdog.cancel()
            if len(data) > API_BODY.max_bytes:
                self._drop(connection)
                raise ProbeError(f"POST {self.path}: {API_BODY.what} over {API_BODY}")
            if (response.getheader("connection") or "").lower() == "close":
                self._drop(connection)
            code = None
            if response.status == 503:
                try:
                    code = json.loads(data).get("code")
                except (ValueError, AttributeError):
                    code = None
            return Reply(response.status, response.getheader("retry-after"), code)
        raise ProbeError(f"POST {self.path}: connection lost")  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()


def _cut(connection: http.client.HTTPConnection) -> None:
    """Shut a connection down under a blocked read (which then ends at once)."""
    with contextlib.suppress(OSError, AttributeError):
        connection.sock.shutdown(socket.SHUT_RDWR)


def recommend_sender(
    service: ServiceClient, tenant: str, surface: str, *, role: Role = "viewer", user_cardinality: int = 1000
) -> RecommendSender:
    """A sender of read-only ``POST /v1/recommend`` requests (see :class:`RecommendSender`)."""
    return RecommendSender(service, tenant, surface, role=role, user_cardinality=user_cardinality)
