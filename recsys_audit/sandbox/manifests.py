"""The artifact registry of a sandbox instance, laid out as recsys-pipelines' filesystem registry plus retention.

```
registry/current/<tenant>/<surface>/manifest.json          manifest v1 (v, tenant, surface, current, updated_at)
registry/blobs/<tenant>/<surface>/<kind>/<version>.json    immutable artifacts, referenced by file:// URI
registry/previous/<tenant>/<surface>/<updated_at>.json     earlier manifests kept for rollback
```

An artifact's ``version`` is the SHA-256 hex of its compact JSON (keys in the order written, ``<``, ``>``, ``&``
escaped as ``\\u003c`` … like Go's encoder) with ``build`` replaced by ``{"built_at": "", "version": ""}``;
it is repeated in ``build.version`` and ``build.source_hash``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARTIFACT_KINDS = ("popularity", "cooc")
MANIFEST_NAME = "manifest.json"


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def compact_json(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def artifact_version(artifact: Mapping[str, Any]) -> str:
    blanked = {**artifact, "build": {"built_at": "", "version": ""}}
    return hashlib.sha256(compact_json(blanked).encode("utf-8")).hexdigest()


def build_artifact(kind: str, tenant: str, surface: str, built_at: dt.datetime, generation: int) -> dict[str, Any]:
    """A small artifact; ``generation`` varies the content so successive builds get distinct versions."""
    window_end = built_at.date()
    window = {"start": (window_end - dt.timedelta(days=7)).isoformat(), "end": window_end.isoformat()}
    artifact: dict[str, Any] = {"v": 1, "artifact_type": kind, "tenant": tenant, "surface": surface, "window": window}
    if kind == "popularity":
        artifact["items"] = [
            {"item_id": f"item-{i:04d}", "score": round(100.0 / (i + generation), 6)} for i in range(1, 21)
        ]
    else:
        artifact["neighbors"] = [
            {
                "item_id": f"item-{i:04d}",
                "neighbors": [
                    {"item_id": f"item-{(i + j) % 40 + 1:04d}", "score": round(1.0 / j, 6)} for j in (1, 2, 3)
                ],
            }
            for i in range(1, 11 + generation)
        ]
    version = artifact_version({**artifact, "build": {}})
    artifact["build"] = {"built_at": _rfc3339(built_at), "version": version, "source_hash": version}
    return artifact


@dataclass(frozen=True)
class Registry:
    root: Path

    def current_manifest(self, tenant: str, surface: str) -> Path:
        return self.root / "current" / tenant / surface / MANIFEST_NAME

    def previous_dir(self, tenant: str, surface: str) -> Path:
        return self.root / "previous" / tenant / surface

    def blob(self, tenant: str, surface: str, kind: str, version: str) -> Path:
        return self.root / "blobs" / tenant / surface / kind / f"{version}.json"

    @property
    def manifest_template(self) -> str:
        return f"file://{self.root / 'current'}/{{tenant}}/{{surface}}/{MANIFEST_NAME}"

    @property
    def previous_template(self) -> str:
        return f"file://{self.root / 'previous'}/{{tenant}}/{{surface}}/"

    def publish(self, tenant: str, surface: str, published_at: dt.datetime, generation: int) -> dict[str, Any]:
        """Write one build's blobs and return its manifest (not yet made current)."""
        current = {}
        for kind in ARTIFACT_KINDS:
            artifact = build_artifact(kind, tenant, surface, published_at - dt.timedelta(minutes=10), generation)
            path = self.blob(tenant, surface, kind, artifact["build"]["version"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(artifact, indent=2), encoding="utf-8")
            path.chmod(0o444)  # immutable
            current[kind] = path.resolve().as_uri()
        return {"v": 1, "tenant": tenant, "surface": surface, "current": current, "updated_at": _rfc3339(published_at)}


def write_registry(
    root: Path,
    tenants: Mapping[str, list[str]],
    *,
    manifest_age: dt.timedelta = dt.timedelta(hours=2),
    publish_interval: dt.timedelta = dt.timedelta(days=1),
    retained: int = 2,
    now: dt.datetime | None = None,
) -> Registry:
    """Publish ``retained + 1`` daily builds per tenant/surface; the newest is current (``manifest_age`` old), the
    earlier ones are kept under previous/ (none when ``retained`` is 0)."""
    registry = Registry(root.resolve())
    now = now or dt.datetime.now(dt.UTC)
    for tenant, surfaces in tenants.items():
        for surface in surfaces:
            for generation in range(retained, -1, -1):
                published_at = now - manifest_age - generation * publish_interval
                manifest = registry.publish(tenant, surface, published_at, generation)
                if generation:
                    target = registry.previous_dir(tenant, surface) / f"{manifest['updated_at']}.json"
                else:
                    target = registry.current_manifest(tenant, surface)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return registry
