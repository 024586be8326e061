"""Serving: tenant config/rules caches, backpressure, artifact manifests and the (deliberately simple) ranking.

DB-only mode ranks by ``item_popularity_daily`` (or ``item_covisit_daily`` around anchors), filtered by
``item_tags``. Artifact mode reads manifest v1 (``{v, tenant, surface, current{kind: uri}, updated_at}``) from
``RECSYS_ARTIFACT_MANIFEST_TEMPLATE`` (``file://`` under ``RECSYS_ARTIFACT_FILE_ROOT``) and its blobs:
popularity ``{"items": [{"item_id", "score"}]}``, cooc ``{"neighbors": [{"item_id", "neighbors": [{"item_id",
"score"}]}]}``. A missing manifest means "no data"; an unreadable or mismatching one counts a load failure.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from recsys_audit.sandbox.problems import ProblemError
from recsys_audit.sandbox.service_metrics import ServiceMetrics
from recsys_audit.sandbox.settings import ServiceSettings
from recsys_audit.sandbox.store import DocumentKind, Store, StoredDocument, Tenant


class Overloaded(Exception):
    """Backpressure rejected the request."""


class Backpressure:
    """At most ``max_inflight`` concurrent engine calls; up to ``max_queue`` wait at most ``wait_timeout_s``."""

    def __init__(self, max_inflight: int, max_queue: int, wait_timeout_s: float, metrics: ServiceMetrics) -> None:
        self.enabled = max_inflight > 0
        self._slots = asyncio.Semaphore(max(max_inflight, 1))
        self._max_queue = max_queue
        self._waiting = 0
        self._timeout = wait_timeout_s
        self._metrics = metrics

    async def acquire(self) -> None:
        if not self.enabled:
            return
        if not self._slots.locked():
            await self._slots.acquire()
            return
        if self._waiting >= self._max_queue:
            self._reject()
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self._timeout)
        except TimeoutError:
            self._reject()
        finally:
            self._waiting -= 1

    def _reject(self) -> None:
        self._metrics.backpressure_rejections.inc()
        raise Overloaded

    def release(self) -> None:
        if self.enabled:
            self._slots.release()


class TtlCache:
    """Per-process TTL cache; ``name`` labels recsys_cache_requests_total. TTL <= 0 disables it (and its metrics)."""

    def __init__(self, name: str, ttl_s: float, metrics: ServiceMetrics) -> None:
        self.name = name
        self.ttl_s = ttl_s
        self._metrics = metrics
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> tuple[bool, Any]:
        if self.ttl_s <= 0:
            return False, None
        entry = self._entries.get(key)
        hit = entry is not None and entry[0] > time.monotonic()
        self._metrics.cache_requests.labels(self.name, "hit" if hit else "miss").inc()
        return (True, entry[1]) if hit and entry is not None else (False, None)

    def put(self, key: Any, value: Any) -> None:
        if self.ttl_s > 0:
            self._entries[key] = (time.monotonic() + self.ttl_s, value)

    def clear_tenant(self, tenant_id: str) -> None:
        for key in [key for key in self._entries if key[0] == tenant_id]:
            del self._entries[key]


class ArtifactLoadFailure(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class ArtifactSource:
    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._manifests: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}
        self._blobs: dict[str, tuple[float, Any]] = {}

    def clear(self) -> None:
        self._manifests.clear()
        self._blobs.clear()

    def _read(self, uri: str, kind: str) -> bytes | None:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ArtifactLoadFailure(kind, f"unsupported artifact scheme {parsed.scheme!r} in the sandbox")
        path = Path(unquote(parsed.path)).resolve()
        root = Path(self.settings.artifact_file_root).resolve()
        if not path.is_relative_to(root):
            raise ArtifactLoadFailure(kind, f"{path} is outside RECSYS_ARTIFACT_FILE_ROOT")
        if not path.exists():
            return None
        if path.stat().st_size > self.settings.artifact_max_bytes:
            raise ArtifactLoadFailure(kind, f"{path} exceeds RECSYS_ARTIFACT_MAX_BYTES")
        return path.read_bytes()

    def manifest(self, tenant: str, surface: str) -> dict[str, Any] | None:
        cached = self._manifests.get((tenant, surface))
        if cached and cached[0] > time.monotonic():
            return cached[1]
        uri = self.settings.artifact_manifest_template.replace("{tenant}", tenant).replace("{surface}", surface)
        try:
            raw = self._read(uri, "manifest")
            manifest = None if raw is None else _valid_manifest(json.loads(raw), tenant, surface)
        except (ValueError, OSError) as exc:
            self.metrics.artifact_load_failures.labels("manifest").inc()
            raise ArtifactLoadFailure("manifest", str(exc)) from None
        except ArtifactLoadFailure:
            self.metrics.artifact_load_failures.labels("manifest").inc()
            raise
        if manifest is not None:
            updated = datetime.fromisoformat(manifest["updated_at"].replace("Z", "+00:00"))
            self.metrics.manifest_age.set(max(0.0, (datetime.now(UTC) - updated).total_seconds()))
            self.metrics.manifest_artifacts.set(len(manifest["current"]))
        self._manifests[(tenant, surface)] = (time.monotonic() + self.settings.artifact_manifest_ttl_s, manifest)
        return manifest

    def blob(self, kind: str, uri: str) -> Any:
        cached = self._blobs.get(uri)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        try:
            raw = self._read(uri, kind)
            if raw is None:
                raise ArtifactLoadFailure(kind, f"{uri} not found")
            blob = json.loads(raw)
        except (ValueError, OSError) as exc:
            self.metrics.artifact_load_failures.labels(kind).inc()
            raise ArtifactLoadFailure(kind, str(exc)) from None
        except ArtifactLoadFailure:
            self.metrics.artifact_load_failures.labels(kind).inc()
            raise
        if not isinstance(blob, dict) or blob.get("v", 1) != 1:
            raise ProblemError(422, f"{kind} artifact has an unsupported version", "RECSYS_ARTIFACT_INCOMPATIBLE")
        self._blobs[uri] = (time.monotonic() + self.settings.artifact_cache_ttl_s, blob)
        return blob


def _valid_manifest(manifest: Any, tenant: str, surface: str) -> dict[str, Any]:
    if not isinstance(manifest, dict) or manifest.get("v") != 1:
        raise ValueError("manifest is not v1")
    if manifest.get("tenant") != tenant or manifest.get("surface") != surface:
        raise ValueError("manifest tenant/surface do not match the request")
    if not isinstance(manifest.get("current"), dict) or not isinstance(manifest.get("updated_at"), str):
        raise ValueError("manifest lacks current or updated_at")
    datetime.fromisoformat(manifest["updated_at"].replace("Z", "+00:00"))
    return manifest


@dataclass
class Ranking:
    items: list[dict[str, Any]]
    warnings: list[dict[str, str]]
    config: StoredDocument | None
    rules: StoredDocument | None


class Engine:
    def __init__(self, settings: ServiceSettings, store: Store, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.backpressure = Backpressure(
            settings.backpressure_max_inflight,
            settings.backpressure_max_queue,
            settings.backpressure_wait_timeout_s,
            metrics,
        )
        self.caches: dict[DocumentKind, TtlCache] = {
            "config": TtlCache("tenant_config", settings.config_cache_ttl_s, metrics),
            "rules": TtlCache("tenant_rules", settings.rules_cache_ttl_s, metrics),
        }
        self.artifacts = ArtifactSource(settings, metrics) if settings.artifact_mode_enabled else None

    async def document(self, kind: DocumentKind, tenant: Tenant, surface: str) -> StoredDocument | None:
        cache = self.caches[kind]
        hit, value = cache.get((tenant.id, surface))
        if hit:
            return value
        value = await self.store.current_document(kind, tenant)
        cache.put((tenant.id, surface), value)
        return value

    def invalidate(self, tenant: Tenant, targets: list[str]) -> dict[str, bool]:
        """Clears this process's caches only (other replicas wait for their TTL)."""
        done: dict[str, bool] = {}
        for target in targets:
            if target in ("config", "rules"):
                self.caches[target].clear_tenant(tenant.id)  # type: ignore[index]
            elif target == "popularity" and self.artifacts is not None:
                self.artifacts.clear()
            done[target] = True
        return done

    async def rank(self, tenant: Tenant | None, request: dict[str, Any], *, endpoint: str) -> Ranking:
        """Candidates -> filters -> top k. Runs inside the backpressure slot, with the configured service time."""
        await self.backpressure.acquire()
        try:
            if self.settings.service_time_ms > 0:
                await asyncio.sleep(self.settings.service_time_ms / 1000)
            return await self._rank(tenant, request, endpoint)
        finally:
            self.backpressure.release()

    async def _rank(self, tenant: Tenant | None, request: dict[str, Any], endpoint: str) -> Ranking:
        warnings: list[dict[str, str]] = []
        if tenant is None:
            warnings.append({"code": "SIGNAL_UNAVAILABLE", "detail": "no signals for this tenant"})
            return Ranking([], warnings, None, None)
        surface, k = request["surface"], request["k"]
        config = await self.document("config", tenant, surface)
        rules = await self.document("rules", tenant, surface)
        anchors = [request["item_id"]] if endpoint == "similar" else request["anchors"]["item_ids"]
        excluded = set(request.get("candidates", {}).get("exclude_ids", [])) | set(anchors)
        pool_size = 3 * k + len(excluded)
        scored = await self._candidates(tenant, surface, anchors, pool_size, warnings)
        if not scored:
            warnings.append({"code": "SIGNAL_UNAVAILABLE", "detail": f"no signals for surface {surface}"})
        candidates = [(item, score) for item, score in scored if item not in excluded]
        include = request.get("candidates", {}).get("include_ids") or []
        if include:
            allowed = set(include)
            before = len(candidates)
            candidates = [(item, score) for item, score in candidates if item in allowed]
            if before and not candidates:
                warnings.append({"code": "CANDIDATES_INCLUDE_FILTERED", "detail": "no candidate is in include_ids"})
        candidates = await self._apply_constraints(tenant, surface, request["constraints"], candidates, warnings)
        items = []
        for rank, (item_id, score) in enumerate(candidates[:k], start=1):
            item: dict[str, Any] = {"item_id": item_id, "rank": rank, "score": round(score, 6)}
            source = "cooc" if anchors else "pop"
            if request["options"]["include_reasons"]:
                item["reasons"] = ["co_visitation" if anchors else "popularity"]
            if request["options"]["explain"] != "none":
                item["explain"] = {"signals": {source: round(score, 6)}, "rules": []}
            items.append(item)
        return Ranking(items, warnings, config, rules)

    async def _candidates(
        self, tenant: Tenant, surface: str, anchors: list[str], limit: int, warnings: list[dict[str, str]]
    ) -> list[tuple[str, float]]:
        if self.artifacts is None:
            if anchors:
                return await self.store.covisited_items(tenant, surface, anchors, limit)
            return await self.store.popular_items(tenant, surface, limit)
        try:
            manifest = self.artifacts.manifest(tenant.external_id, surface)
            if manifest is None:
                return []
            if anchors and "cooc" in manifest["current"]:
                blob = self.artifacts.blob("cooc", manifest["current"]["cooc"])
                scores: dict[str, float] = {}
                for entry in blob.get("neighbors", []):
                    if entry.get("item_id") in anchors:
                        for neighbor in entry.get("neighbors", []):
                            neighbor_id = neighbor["item_id"]
                            scores[neighbor_id] = scores.get(neighbor_id, 0.0) + float(neighbor["score"])
                return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))[:limit]
            if "popularity" not in manifest["current"]:
                return []
            blob = self.artifacts.blob("popularity", manifest["current"]["popularity"])
            ranked = [(entry["item_id"], float(entry.get("score", 0))) for entry in blob.get("items", [])]
            return sorted(ranked, key=lambda pair: (-pair[1], pair[0]))[:limit]
        except ArtifactLoadFailure as failure:
            warnings.append({"code": "SIGNAL_PARTIAL", "detail": f"{failure.kind} artifact could not be loaded"})
            return []

    async def _apply_constraints(
        self,
        tenant: Tenant,
        surface: str,
        constraints: dict[str, Any],
        candidates: list[tuple[str, float]],
        warnings: list[dict[str, str]],
    ) -> list[tuple[str, float]]:
        required, forbidden = set(constraints["required_tags"]), set(constraints["forbidden_tags"])
        max_per_tag: dict[str, int] = constraints["max_per_tag"]
        if not (required or forbidden or max_per_tag) or not candidates:
            return candidates
        try:
            tags = await self.store.item_tags(tenant, surface, [item for item, _ in candidates])
        except Exception:
            warnings.append({"code": "TAG_LOOKUP_FAILED", "detail": "item tags could not be read"})
            return candidates
        kept: list[tuple[str, float]] = []
        per_tag: dict[str, int] = {}
        for item, score in candidates:
            item_tags = set(tags.get(item, []))
            if not required <= item_tags or forbidden & item_tags:
                continue
            if any(per_tag.get(tag, 0) >= max_per_tag[tag] for tag in item_tags if tag in max_per_tag):
                continue
            for tag in item_tags:
                per_tag[tag] = per_tag.get(tag, 0) + 1
            kept.append((item, score))
        if len(kept) < len(candidates):
            warnings.append({"code": "CONSTRAINTS_FILTERED", "detail": f"{len(candidates) - len(kept)} filtered"})
        return kept


def retry_after_header(seconds: float) -> dict[str, str]:
    """Whole seconds, at least 1; no header when the configured value is 0."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))} if seconds > 0 else {}
