"""System endpoints: health (``/livez``, ``/readyz``, ``/healthz``, ``/health``, ``/health/detailed``), ``/version``,
``/metrics``, the API docs (``DOCS_ENABLED``) and the profiler index (``PPROF_ENABLED``).

Health results are cached for ``HEALTH_CACHE_DURATION``; a check has 5 s. Without the ``healthz-db`` defect
``/healthz`` and ``/health`` are liveness-only (the real service runs the DB ping there); ``/health/detailed`` is
served only with the ``detailed-health-public`` defect, and then tells per-check internals to anyone.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import yaml
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from recsys_audit.sandbox.file_logs import utc_timestamp
from recsys_audit.sandbox.service_metrics import ServiceMetrics
from recsys_audit.sandbox.settings import ServiceSettings
from recsys_audit.sandbox.store import Store

CHECK_TIMEOUT_S = 5.0
CheckResult = tuple[str, str]  # (status, message)


class HealthChecks:
    def __init__(self, settings: ServiceSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._cache: dict[str, tuple[float, dict[str, CheckResult]]] = {}

    async def _database(self) -> CheckResult:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self.store.ping(), timeout=CHECK_TIMEOUT_S)
        except Exception as exc:
            return "unhealthy", f"database ping failed: {type(exc).__name__}"
        dsn = urlparse(self.settings.database_url)
        where = f"{dsn.hostname}:{dsn.port or 5432}{dsn.path} as {dsn.username}"
        return "healthy", f"postgres {where} answered in {(time.perf_counter() - started) * 1000:.1f} ms"

    async def _jwt(self) -> CheckResult:
        if not self.settings.jwt_enabled:
            return "healthy", "jwt auth disabled"
        return "healthy", f"jwks {self.settings.jwt_jwks_url} issuer {self.settings.jwt_issuer}"

    async def run(self, name: str, checks: tuple[str, ...]) -> dict[str, CheckResult]:
        cached = self._cache.get(name)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        runners: dict[str, Callable[[], Awaitable[CheckResult]]] = {"database": self._database, "jwt": self._jwt}
        results: dict[str, CheckResult] = {"basic": ("healthy", "service is running")}
        for check in checks:
            if check in runners:
                results[check] = await runners[check]()
        if self.settings.health_cache_s > 0:
            self._cache[name] = (time.monotonic() + self.settings.health_cache_s, results)
        return results


def _overall(results: dict[str, CheckResult]) -> str:
    statuses = {status for status, _ in results.values()}
    return "unhealthy" if "unhealthy" in statuses else "degraded" if "degraded" in statuses else "healthy"


def health_endpoint(health: HealthChecks, name: str, checks: tuple[str, ...], detailed: bool = False) -> Any:
    async def endpoint(request: Request) -> Response:
        results = await health.run(name, checks)
        status = _overall(results)
        body: dict[str, Any] = {"status": status, "timestamp": utc_timestamp()}
        body["message"] = "all checks passed" if status == "healthy" else "some checks failed"
        if detailed:
            body["checks"] = {check: {"status": s, "message": m} for check, (s, m) in results.items()}
            body["summary"] = {
                "total": len(results),
                "healthy": sum(s == "healthy" for s, _ in results.values()),
                "degraded": sum(s == "degraded" for s, _ in results.values()),
                "unhealthy": sum(s == "unhealthy" for s, _ in results.values()),
            }
        return JSONResponse(body, status_code=503 if status == "unhealthy" else 200)

    return endpoint


def system_routes(settings: ServiceSettings, store: Store, metrics: ServiceMetrics) -> list[Route]:
    health = HealthChecks(settings, store)
    healthz_checks = ("database",) if settings.has_defect("healthz-db") else ()
    routes = [
        Route("/livez", health_endpoint(health, "livez", ())),
        Route("/readyz", health_endpoint(health, "readyz", ("database",))),
        Route("/healthz", health_endpoint(health, "healthz", healthz_checks)),
        Route("/health", health_endpoint(health, "healthz", healthz_checks)),
        Route("/version", _version(settings)),
        Route("/metrics", _metrics(metrics)),
    ]
    if settings.has_defect("detailed-health-public"):
        routes.append(Route("/health/detailed", health_endpoint(health, "detailed", ("database", "jwt"), True)))
    if settings.docs_enabled:
        routes += docs_routes(settings)
    if settings.pprof_enabled:
        routes += pprof_routes()
    return routes


def _version(settings: ServiceSettings) -> Any:
    async def endpoint(request: Request) -> Response:
        version = {"version": settings.build_version, "commit": settings.build_commit}
        return JSONResponse(version | {"date": settings.build_date})

    return endpoint


def _metrics(metrics: ServiceMetrics) -> Any:
    async def endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return endpoint


# --- docs ------------------------------------------------------------------------------------------------------

DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'"
)
_DOCS_HTML = """<!doctype html><html><head><title>recsys-service API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div><script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/docs/openapi.json", dom_id: "#ui"});</script></body></html>"""


def openapi_document(settings: ServiceSettings) -> dict[str, Any]:
    def op(summary: str) -> dict[str, Any]:
        return {"summary": summary, "responses": {"200": {"description": "OK"}}}

    admin = "/v1/admin/tenants/{tenant_id}"
    paths = {
        "/v1/recommend": {"post": op("Recommend items")},
        "/v1/recommend/validate": {"post": op("Validate and normalise a recommend request")},
        "/v1/similar": {"post": op("Items similar to an item")},
        "/v1/license": {"get": op("License status")},
        f"{admin}/config": {"get": op("Current tenant config"), "put": op("Replace tenant config")},
        f"{admin}/rules": {"get": op("Current tenant rules"), "put": op("Replace tenant rules")},
        f"{admin}/cache/invalidate": {"post": op("Invalidate this replica's caches")},
        f"{admin}/audit": {"get": op("Admin audit entries")},
    }
    return {"openapi": "3.0.3", "info": {"title": "recsys-service", "version": settings.build_version}, "paths": paths}


def docs_routes(settings: ServiceSettings) -> list[Route]:
    document = openapi_document(settings)

    async def docs(request: Request) -> Response:
        return HTMLResponse(_DOCS_HTML)

    async def docs_version(request: Request) -> Response:
        return JSONResponse({"version": settings.build_version})

    async def docs_info(request: Request) -> Response:
        return JSONResponse({"title": "recsys-service", "version": settings.build_version, "openapi": "3.0.3"})

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    async def openapi_yaml(request: Request) -> Response:
        return PlainTextResponse(yaml.safe_dump(document, sort_keys=False), media_type="application/yaml")

    return [
        Route("/docs", docs),
        Route("/docs/version", docs_version),
        Route("/docs/info", docs_info),
        Route("/docs/openapi.json", openapi_json),
        Route("/openapi.yaml", openapi_yaml),
    ]


# --- profiler --------------------------------------------------------------------------------------------------


def pprof_routes() -> list[Route]:
    async def index(request: Request) -> Response:
        profiles = "cmdline\nprofile\nsymbol\ntrace\n"
        return PlainTextResponse(f"/debug/pprof/\n\nTypes of profiles available:\n{profiles}")

    async def cmdline(request: Request) -> Response:
        return PlainTextResponse("\x00".join(sys.argv))

    async def profile(request: Request) -> Response:
        return Response(f"sandbox cpu profile pid={os.getpid()}\n".encode(), media_type="application/octet-stream")

    async def symbol(request: Request) -> Response:
        return PlainTextResponse("num_symbols: 1\n")

    async def trace(request: Request) -> Response:
        return Response(b"sandbox execution trace\n", media_type="application/octet-stream")

    return [
        Route("/debug/pprof/", index),
        Route("/debug/pprof/cmdline", cmdline),
        Route("/debug/pprof/profile", profile),
        Route("/debug/pprof/symbol", symbol),
        Route("/debug/pprof/trace", trace),
    ]
