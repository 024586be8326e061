"""The sandbox recsys-service: a real HTTP server on loopback that behaves like recsys-service from the outside.

Interface
---------
* ``create_app(environ) -> Starlette``: the ASGI app for one configuration (recsys-service's environment variables
  plus the ``SANDBOX_*`` knobs below). Raises :class:`StartupError` (one line) for a configuration the real service
  would refuse. Each app has its own Prometheus registry.
* ``python -m recsys_audit.sandbox.server``: reads ``os.environ``, checks the database (3 s) and the RLS guard, then
  serves on ``API_ADDR`` (``127.0.0.1:PORT`` only). A refused configuration prints ``recsys-sandbox: <reason>`` on
  stderr and exits with status 2.

Sandbox-only variables: ``SANDBOX_DEFECTS`` (comma list; this server acts on ``cross-tenant-admin``, ``healthz-db``,
``detailed-health-public``, ``pii-unhashed``, ``missing-meta`` and ignores the others),
``SANDBOX_JWT_PUBLIC_KEY_FILE`` (PEM key JWTs are verified with; required with ``JWT_AUTH_ENABLED``),
``SANDBOX_JWT_KID`` (optional: tokens with another ``kid`` are refused), ``SANDBOX_JWKS_ADDR`` +
``SANDBOX_JWKS_CERT_FILE`` / ``SANDBOX_JWKS_KEY_FILE`` (serve the JWKS over HTTPS from a thread),
``SANDBOX_SERVICE_TIME_MS`` (extra engine time per recommend/similar, default 3), ``SANDBOX_REQUEST_LOG`` (JSONL, one
line per request: ts, method, path, query, status, ms, request_id), ``SANDBOX_BUILD_VERSION`` / ``_COMMIT`` /
``_DATE`` (``/version``).

Request pipeline (outermost first): request id -> timing, metrics and request log -> security headers and CORS
(preflight answered here) -> strict profile (body size 413, JSON content type 415) -> on protected paths the security
stack (``auth.py``) -> routes -> file audit of admin writes that passed RBAC.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import socket
import string
import sys
import time
import traceback
from collections.abc import AsyncIterator, Mapping
from itertools import count
from typing import Any
from urllib.parse import urlparse

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys_audit.sandbox.api_routes import MAX_BODY_BYTES, ApiHandlers
from recsys_audit.sandbox.auth import SecurityStack, is_admin, is_protected
from recsys_audit.sandbox.engine import Engine
from recsys_audit.sandbox.file_logs import AuditFileLog, ExposureLog, RequestLog
from recsys_audit.sandbox.jwks import JwksServer, rsa_jwk
from recsys_audit.sandbox.problems import ProblemError, problem_response
from recsys_audit.sandbox.service_metrics import ServiceMetrics
from recsys_audit.sandbox.settings import ServiceSettings, StartupError, load_settings
from recsys_audit.sandbox.store import Store, check_startup
from recsys_audit.sandbox.system_routes import DOCS_CSP, system_routes

__all__ = ["StartupError", "create_app", "main"]

STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
_ALPHABET = string.ascii_letters + string.digits


class RequestIds:
    """chi-style ids ``<host>/<random>-<counter>`` for requests without an inbound ``X-Request-Id``."""

    def __init__(self) -> None:
        self._prefix = f"{socket.gethostname()}/{''.join(secrets.choice(_ALPHABET) for _ in range(10))}"
        self._counter = count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter):06d}"


class ServiceMiddleware:
    """Everything around the routes: ids, metrics, logs, headers, CORS, strict profile, security stack, audit."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service = self.service
        started = time.perf_counter()
        request = Request(scope, receive)
        request_id = request.headers.get("x-request-id") or service.request_ids.next()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        outcome: dict[str, Any] = {"status": 500, "started": False, "counted": True, "rbac_passed": False}
        extra_headers = service.response_headers(request)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = request_id
                for name, value in extra_headers.items():
                    if name not in headers:
                        headers[name] = value
                outcome["status"] = message["status"]
                outcome["started"] = True
            await send(message)

        try:
            early = await self._guard(request, outcome)
            if early is not None:
                await early(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            if outcome["started"]:
                raise
            error = ProblemError(500, "internal error", "RECSYS_INTERNAL")
            await problem_response(error, request.url.path, request_id)(scope, receive, send_with_headers)
        finally:
            service.after_request(request, outcome, time.perf_counter() - started)

    async def _guard(self, request: Request, outcome: dict[str, Any]) -> Response | None:
        """A response that ends the request before routing, or None to route it."""
        service = self.service
        headers = request.headers
        if request.method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers:
            return Response(status_code=200, headers=service.preflight_headers(request))
        try:
            if request.method in {"POST", "PUT", "PATCH"}:
                length = request.headers.get("content-length")
                if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
                    outcome["counted"] = False
                    raise ProblemError(413, "request body too large")
                has_body = (length and length != "0") or "transfer-encoding" in request.headers
                media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
                if has_body and not (media_type == "application/json" or media_type.endswith("+json")):
                    outcome["counted"] = False
                    raise ProblemError(415, "Content-Type must be application/json")
            if is_protected(request.url.path):
                caller = await service.security.authorize(request)
                request.state.caller = caller
                outcome["rbac_passed"] = is_admin(request.url.path)
        except ProblemError as error:
            return problem_response(error, request.url.path, request.state.request_id)
        return None


class Service:
    """The long-lived parts of one server: settings, database, metrics, engine, logs."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.store = Store(settings.database_url)
        self.metrics = ServiceMetrics()
        self.engine = Engine(settings, self.store, self.metrics)
        self.security = SecurityStack(settings, self.store)
        self.request_ids = RequestIds()
        self.exposure_log = (
            ExposureLog(
                settings.exposure_log_path,
                settings.exposure_log_format,
                settings.exposure_hash_salt,
                settings.exposure_retention_days,
                settings.exposure_log_fsync,
                hash_subjects=not settings.has_defect("pii-unhashed"),
            )
            if settings.exposure_log_path
            else None
        )
        self.audit_log = (
            AuditFileLog(settings.audit_log_path, settings.audit_log_fsync) if settings.audit_log_path else None
        )
        self.request_log = RequestLog(settings.request_log_path) if settings.request_log_path else None
        self.app: Starlette | None = None
        self.jwks_server: JwksServer | None = None

    # --- headers -----------------------------------------------------------------------------------------------

    def _allowed_origin(self, origin: str) -> str | None:
        origins = self.settings.cors_origins
        if "*" in origins:
            return origin if self.settings.cors_allow_credentials else "*"
        return origin if origin in origins else None

    def response_headers(self, request: Request) -> dict[str, str]:
        path = request.url.path
        headers = {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": DOCS_CSP if path == "/docs" or path.startswith("/docs/") else STRICT_CSP,
        }
        if self._is_https(request):
            headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        origin = request.headers.get("origin")
        allowed = self._allowed_origin(origin) if origin else None
        if allowed:
            headers["Access-Control-Allow-Origin"] = allowed
            headers["Vary"] = "Origin"
            if self.settings.cors_allow_credentials:
                headers["Access-Control-Allow-Credentials"] = "true"
        return headers

    def preflight_headers(self, request: Request) -> dict[str, str]:
        origin = request.headers.get("origin", "")
        allowed = self._allowed_origin(origin)
        if not allowed:
            return {}
        s = self.settings
        always = [s.tenant_header, s.api_key_header, s.dev_user_header, s.dev_tenant_header, "X-Request-Id"]
        return {
            "Access-Control-Allow-Methods": ", ".join(s.cors_methods),
            "Access-Control-Allow-Headers": ", ".join(dict.fromkeys([*s.cors_headers, *always])),
            "Access-Control-Max-Age": str(s.cors_max_age),
        }

    def _is_https(self, request: Request) -> bool:
        if request.url.scheme == "https":
            return True
        peer = request.client.host if request.client else None
        forwarded = request.headers.get("x-forwarded-proto", "").lower() == "https"
        return forwarded and peer is not None and _in_networks(peer, self.settings.trusted_proxies)

    # --- after each request ------------------------------------------------------------------------------------

    def after_request(self, request: Request, outcome: dict[str, Any], seconds: float) -> None:
        status = outcome["status"]
        if outcome["counted"]:
            route = self._route_pattern(request.scope)
            self.metrics.http_requests.labels(request.method, route, str(status)).inc()
            self.metrics.http_duration.labels(request.method, route, str(status)).observe(seconds)
        request_id = request.state.request_id
        if self.request_log is not None:
            url = request.url
            self.request_log.write(request.method, url.path, url.query, status, seconds * 1000, request_id)
        if self.audit_log is not None and outcome["rbac_passed"] and request.method in WRITE_METHODS:
            caller = getattr(request.state, "caller", None)
            self.audit_log.write(
                request_id=request_id,
                actor_id=caller.subject if caller else "",
                tenant_id=(caller.tenant or "") if caller else "",
                method=request.method,
                path=request.url.path,
                status=status,
            )

    def _route_pattern(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None and self.app is not None:
            route = next((r for r in self.app.routes if r.matches(scope)[0] != Match.NONE), None)
        return getattr(route, "path", None) or "unmatched"

    # --- lifecycle ---------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        s = self.settings
        if s.jwks_addr and s.jwt_public_key_pem and s.jwks_cert_file and s.jwks_key_file:
            jwks_path = {_url_path(s.jwt_jwks_url)} if s.jwt_jwks_url else set()
            document = {"keys": [rsa_jwk(s.jwt_public_key_pem, s.jwt_kid)]}
            self.jwks_server = JwksServer(*s.jwks_addr, document, s.jwks_cert_file, s.jwks_key_file, jwks_path)
            self.jwks_server.start()
        try:
            yield
        finally:
            if self.jwks_server is not None:
                self.jwks_server.stop()
            await self.store.close()


def _url_path(url: str) -> str:
    return urlparse(url).path or "/"


def _in_networks(address: str, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


async def _problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(exc, request.url.path, request.state.request_id)


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    """Unknown routes and methods answer like chi's defaults: plain text, no problem body."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return PlainTextResponse("404 page not found\n", status_code=404)
    return Response(status_code=exc.status_code, headers=exc.headers)


def build_app(settings: ServiceSettings) -> Starlette:
    service = Service(settings)
    handlers = ApiHandlers(settings, service.store, service.engine, service.metrics, service.exposure_log)
    app = Starlette(
        routes=[*handlers.routes(), *system_routes(settings, service.store, service.metrics)],
        exception_handlers={
            ProblemError: _problem_handler,
            HTTPException: _http_error_handler,
        },
        lifespan=service.lifespan,
    )
    app.router.redirect_slashes = False
    app.add_middleware(ServiceMiddleware, service=service)
    app.state.service = service
    service.app = app
    return app


def create_app(environ: Mapping[str, str]) -> Starlette:
    """The app for this environment; raises StartupError for a configuration the real service refuses."""
    return build_app(load_settings(environ))


def main() -> int:
    import uvicorn

    try:
        settings = load_settings(os.environ)
        reason = check_startup(settings.database_url, settings.require_rls)
        if reason:
            raise StartupError(reason)
        app = build_app(settings)
    except StartupError as error:
        print(f"recsys-sandbox: {error}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=60,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
