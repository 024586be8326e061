"""The ``/v1`` handlers: recommend, validate, similar, license and the tenant admin API.

Handlers run after the security stack; ``request.state.caller`` is the authorised :class:`Caller` (tenant
resolved) and ``request.state.request_id`` the request id. Errors are raised as ProblemError.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from recsys_audit.sandbox.auth import Caller
from recsys_audit.sandbox.engine import Engine, Overloaded, Ranking, retry_after_header
from recsys_audit.sandbox.file_logs import ExposureLog
from recsys_audit.sandbox.problems import ProblemError, bad_request, forbidden, not_found, unprocessable
from recsys_audit.sandbox.request_validation import (
    check_explain,
    decode_json_object,
    normalize_recommend,
    normalize_similar,
)
from recsys_audit.sandbox.service_metrics import ServiceMetrics
from recsys_audit.sandbox.settings import ServiceSettings
from recsys_audit.sandbox.store import Actor, DocumentKind, Store, Tenant, VersionMismatch

MAX_BODY_BYTES = 1 << 20
NO_STORE = {"Cache-Control": "no-store"}
INVALIDATION_TARGETS = ("config", "rules", "popularity")
STUB_ALGO_VERSION = "recsys-algo@stub"


async def read_body(request: Request) -> bytes:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ProblemError(413, "request body too large")
    return body


def _outcome(error: ProblemError) -> str:
    if error.code == "RECSYS_ARTIFACT_INCOMPATIBLE":
        return "artifact_incompatible"
    return {400: "invalid_request", 403: "forbidden", 422: "validation_failed", 503: "overload"}.get(
        error.status, "internal_error"
    )


class ApiHandlers:
    def __init__(
        self,
        settings: ServiceSettings,
        store: Store,
        engine: Engine,
        metrics: ServiceMetrics,
        exposure_log: ExposureLog | None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.metrics = metrics
        self.exposure_log = exposure_log

    def routes(self) -> list[Route]:
        admin = "/v1/admin/tenants/{tenant_id}"
        return [
            Route("/v1/recommend", self.recommend, methods=["POST"]),
            Route("/v1/recommend/validate", self.validate, methods=["POST"]),
            Route("/v1/similar", self.similar, methods=["POST"]),
            Route("/v1/license", self.license, methods=["GET"]),
            Route(f"{admin}/config", self.get_config, methods=["GET"]),
            Route(f"{admin}/config", self.put_config, methods=["PUT"]),
            Route(f"{admin}/rules", self.get_rules, methods=["GET"]),
            Route(f"{admin}/rules", self.put_rules, methods=["PUT"]),
            Route(f"{admin}/cache/invalidate", self.invalidate, methods=["POST"]),
            Route(f"{admin}/audit", self.audit, methods=["GET"]),
        ]

    # --- serving -----------------------------------------------------------------------------------------------

    async def recommend(self, request: Request) -> Response:
        return await self._serve(request, "recommend")

    async def similar(self, request: Request) -> Response:
        return await self._serve(request, "similar")

    async def _serve(self, request: Request, endpoint: str) -> Response:
        started = time.perf_counter()
        caller: Caller = request.state.caller
        try:
            body = decode_json_object(await read_body(request))
            normalize = normalize_recommend if endpoint == "recommend" else normalize_similar
            normalized, warnings = normalize(body)
            check_explain(
                normalized,
                max_items=self.settings.explain_max_items,
                admin_required=self.settings.explain_require_admin and bool(self.settings.admin_role),
                is_admin=caller.has_role(self.settings.admin_role),
            )
            tenant = await self.store.tenant(caller.tenant or "")
            try:
                ranking = await self.engine.rank(tenant, normalized, endpoint=endpoint)
            except Overloaded:
                headers = retry_after_header(self.settings.backpressure_retry_after_s)
                raise ProblemError(503, "service overloaded, retry later", "RECSYS_OVERLOADED", headers) from None
        except ProblemError as error:
            self.metrics.record_recommendation(endpoint, _outcome(error), time.perf_counter() - started)
            raise
        except Exception:
            self.metrics.record_recommendation(endpoint, "internal_error", time.perf_counter() - started)
            raise
        warnings += ranking.warnings
        meta = self._meta(request, caller, normalized, ranking)
        payload: dict[str, Any] = {"items": ranking.items, "meta": meta}
        if warnings:
            payload["warnings"] = warnings
        self.metrics.record_recommendation(
            endpoint, "success", time.perf_counter() - started, len(ranking.items), len(warnings)
        )
        if self.exposure_log is not None:
            self._log_exposure(endpoint, caller, normalized, meta, ranking)
        return JSONResponse(payload, headers=NO_STORE)

    def _algo_version(self, ranking: Ranking) -> str:
        if self.settings.has_defect("missing-meta"):
            return STUB_ALGO_VERSION
        config = ranking.config.document if ranking.config else None
        if isinstance(config, dict) and isinstance(config.get("algo"), str) and config["algo"]:
            return f"{self.settings.algo_version}:{config['algo']}"
        return self.settings.algo_version or STUB_ALGO_VERSION

    def _meta(self, request: Request, caller: Caller, normalized: dict[str, Any], ranking: Ranking) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "tenant_id": caller.tenant,
            "surface": normalized["surface"],
            "segment": normalized["segment"],
            "request_id": request.state.request_id,
            "algo_version": self._algo_version(ranking),
        }
        if not self.settings.has_defect("missing-meta"):
            if ranking.config:
                meta["config_version"] = ranking.config.etag
            if ranking.rules:
                meta["rules_version"] = ranking.rules.etag
        if ranking.items:
            meta["counts"] = {"returned": len(ranking.items)}
        return meta

    def _log_exposure(
        self, endpoint: str, caller: Caller, normalized: dict[str, Any], meta: dict[str, Any], ranking: Ranking
    ) -> None:
        assert self.exposure_log is not None
        user = normalized.get("user") or {}
        self.exposure_log.write(
            {
                "endpoint": endpoint,
                "request_id": meta["request_id"],
                "tenant_id": caller.tenant,
                "surface": meta["surface"],
                "segment": meta["segment"],
                "algo_version": meta["algo_version"],
                "config_version": meta.get("config_version"),
                "rules_version": meta.get("rules_version"),
                "experiment": self._experiment(normalized, user),
                "user": user,
                "context": normalized.get("context"),
                "items": ranking.items,
            }
        )

    def _experiment(self, normalized: dict[str, Any], user: dict[str, str]) -> dict[str, str]:
        """An experiment id without a variant gets one assigned (exposure log only, never in the response)."""
        experiment = normalized.get("experiment") or {}
        if not experiment.get("id"):
            return {}
        variant = experiment.get("variant", "")
        subject = next((value for value in user.values() if value), "")
        if not variant and self.settings.experiment_assignment_enabled and subject:
            configured = next((e for e in self.settings.experiments if e.get("id") == experiment["id"]), {})
            variants = configured.get("variants") or list(self.settings.experiment_default_variants)
            bucket = hmac.new(
                self.settings.experiment_salt.encode(), f"{experiment['id']}:{subject}".encode(), hashlib.sha256
            ).hexdigest()
            variant = str(variants[int(bucket[:8], 16) % len(variants)])
        return {"id": experiment["id"], "variant": variant}

    async def validate(self, request: Request) -> Response:
        caller: Caller = request.state.caller
        normalized, warnings = normalize_recommend(decode_json_object(await read_body(request)))
        meta = {
            "tenant_id": caller.tenant,
            "surface": normalized["surface"],
            "segment": normalized["segment"],
            "request_id": request.state.request_id,
            "algo_version": STUB_ALGO_VERSION,
        }
        payload: dict[str, Any] = {"normalized_request": normalized, "meta": meta}
        if warnings:
            payload["warnings"] = warnings
        return JSONResponse(payload, headers=NO_STORE)

    async def license(self, request: Request) -> Response:
        return JSONResponse({"status": "unknown", "commercial": False}, headers=NO_STORE)

    # --- admin -------------------------------------------------------------------------------------------------

    async def _target_tenant(self, request: Request) -> Tenant:
        """The URL tenant; unless the ``cross-tenant-admin`` defect is on it must be the caller's own tenant."""
        ref = str(request.path_params.get("tenant_id", "")).strip()
        if not ref:
            raise bad_request("tenant_id is required", "RECSYS_INVALID_TENANT")
        target = await self.store.tenant(ref)
        if not self.settings.has_defect("cross-tenant-admin"):
            caller: Caller = request.state.caller
            own = ref == caller.tenant or (target is not None and target.matches(caller.tenant or ""))
            if not own:
                raise forbidden("tenant scope mismatch", "RECSYS_TENANT_SCOPE_MISMATCH")
        if target is None:
            raise not_found(f"tenant {ref} not found", "RECSYS_TENANT_NOT_FOUND")
        return target

    def _actor(self, request: Request) -> Actor:
        caller: Caller = request.state.caller
        return Actor(
            subject=caller.subject,
            actor_type=caller.actor_type or "user",
            request_id=request.state.request_id,
            ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent", ""),
        )

    async def _get_document(self, request: Request, kind: DocumentKind) -> Response:
        tenant = await self._target_tenant(request)
        stored = await self.store.current_document(kind, tenant)
        if stored is None:
            raise not_found(f"{kind} not found", f"RECSYS_{kind.upper()}_NOT_FOUND")
        body = {"tenant_id": tenant.external_id, f"{kind}_version": stored.etag, kind: stored.document}
        return JSONResponse(body, headers={"ETag": stored.etag})

    async def _put_document(self, request: Request, kind: DocumentKind) -> Response:
        tenant = await self._target_tenant(request)
        code = f"RECSYS_INVALID_{kind.upper()}"
        raw = await read_body(request)
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise bad_request(f"{kind} body is not valid JSON", code) from None
        if_match = request.headers.get("if-match")
        if_match = if_match.strip().strip('"') if if_match is not None else None
        # The precondition is checked before the content, so a probe with an impossible If-Match never gets further.
        if if_match is not None:
            current = await self.store.current_document(kind, tenant)
            if current is None or current.etag != if_match:
                raise ProblemError(409, f"{kind} version mismatch", "RECSYS_VERSION_MISMATCH")
        _validate_document(kind, document)
        try:
            stored = await self.store.put_document(kind, tenant, document, if_match, self._actor(request))
        except VersionMismatch:
            raise ProblemError(409, f"{kind} version mismatch", "RECSYS_VERSION_MISMATCH") from None
        self.engine.invalidate(tenant, [kind])
        body = {"tenant_id": tenant.external_id, f"{kind}_version": stored.etag, kind: document}
        return JSONResponse(body, headers={"ETag": stored.etag})

    async def get_config(self, request: Request) -> Response:
        return await self._get_document(request, "config")

    async def put_config(self, request: Request) -> Response:
        return await self._put_document(request, "config")

    async def get_rules(self, request: Request) -> Response:
        return await self._get_document(request, "rules")

    async def put_rules(self, request: Request) -> Response:
        return await self._put_document(request, "rules")

    async def invalidate(self, request: Request) -> Response:
        tenant = await self._target_tenant(request)
        body = decode_json_object(await read_body(request))
        targets = body.get("targets")
        if not isinstance(targets, list) or not targets:
            raise bad_request("targets is required", "RECSYS_INVALID_TARGETS")
        unknown = [t for t in targets if t not in INVALIDATION_TARGETS]
        if unknown:
            raise unprocessable(f"unknown targets: {unknown}", "RECSYS_INVALID_TARGETS")
        surface = body.get("surface") if isinstance(body.get("surface"), str) else None
        invalidated = self.engine.invalidate(tenant, targets)
        await self.store.record_invalidation(tenant, targets, surface, self._actor(request))
        reply: dict[str, Any] = {"tenant_id": tenant.external_id, "targets": targets}
        if surface:
            reply["surface"] = surface
        return JSONResponse(reply | {"status": "applied", "invalidated": invalidated})

    async def audit(self, request: Request) -> Response:
        tenant = await self._target_tenant(request)
        query = request.query_params
        try:
            limit = min(int(query.get("limit", "100")), 200)
            before = datetime.fromisoformat(query["before"].replace("Z", "+00:00")) if "before" in query else None
            before_id = int(query["before_id"]) if "before_id" in query else None
        except ValueError:
            raise bad_request("limit, before (RFC3339) or before_id is malformed") from None
        if limit < 1 or (before_id is not None and before_id < 0):
            raise bad_request("limit must be >= 1 and before_id >= 0")
        rows = await self.store.audit_entries(tenant, limit, before, before_id)
        caller: Caller = request.state.caller
        s = self.settings
        show_raw = not s.rbac_enabled or caller.has_role(s.operator_role) or caller.has_role(s.admin_role)
        entries = []
        for row in rows:
            entry = {key: value for key, value in row.items() if key not in ("before_state", "after_state", "extra")}
            entry["occurred_at"] = row["occurred_at"].isoformat()
            entry["tenant_id"] = tenant.id
            if show_raw:
                entry |= {key: row[key] for key in ("before_state", "after_state", "extra") if row[key] is not None}
            entries.append(entry)
        last = rows[-1] if len(rows) == limit else None
        return JSONResponse(
            {
                "tenant_id": tenant.external_id,
                "entries": entries,
                "next_before": last["occurred_at"].isoformat() if last else None,
                "next_before_id": last["id"] if last else None,
            }
        )


def _validate_document(kind: DocumentKind, document: Any) -> None:
    if kind == "rules":
        if not isinstance(document, dict | list):
            raise unprocessable("rules must be a JSON object or array", "RECSYS_INVALID_RULES")
        return
    if not isinstance(document, dict):
        raise unprocessable("config must be a JSON object", "RECSYS_INVALID_CONFIG")
    weights = document.get("weights") or {}
    if not isinstance(weights, dict) or any(
        not isinstance(v, int | float) or isinstance(v, bool) or v < 0 for v in weights.values()
    ):
        raise unprocessable("config weights must be numbers >= 0", "RECSYS_INVALID_CONFIG")
    limits = document.get("limits") or {}
    for name in ("max_k", "max_exclude_ids"):
        value = limits.get(name) if isinstance(limits, dict) else None
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise unprocessable(f"config limits.{name} must be an integer >= 0", "RECSYS_INVALID_CONFIG")
