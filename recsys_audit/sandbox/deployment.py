"""Deployment files of a sandbox instance: Helm-style values, a Grafana dashboard and a load-test report.

``values.yaml`` holds deployment facts only (replicas, image, resources, pipelines) in the recsys chart's keys —
no probe keys, since the chart's templates hard-code them; the service's environment lives in ``service.env``. The
load-test report follows the upstream loadtest JSON format.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml

from recsys_audit.sandbox.defects import FileSettings

IMAGE_REPOSITORY = "ghcr.io/aatuh/recsys-svc"
PIPELINES_SCHEDULE = "15 2 * * *"


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def helm_values(settings: FileSettings, hardened: bool) -> dict[str, Any]:
    api: dict[str, Any] = {
        "replicaCount": settings.replicas,
        "image": {"repository": IMAGE_REPOSITORY, "tag": settings.image_tag, "pullPolicy": "IfNotPresent"},
    }  # no probe keys: the recsys chart hard-codes its probes (liveness /healthz, readiness /readyz)
    if hardened:
        api["resources"] = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
        api["podDisruptionBudget"] = {"minAvailable": 2}
    pipelines = {"enabled": hardened, "schedule": PIPELINES_SCHEDULE if hardened else "0 2 * * *"}
    return {"api": api, "pipelines": pipelines}


def write_values(path: Path, settings: FileSettings, hardened: bool) -> None:
    header = "# Helm-style values of this sandbox deployment (deployment facts; env is in service.env)\n"
    path.write_text(header + yaml.safe_dump(helm_values(settings, hardened), sort_keys=False), encoding="utf-8")


def _panel(panel_id: int, title: str, *exprs: str) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * ((panel_id - 1) % 2), "y": 8 * ((panel_id - 1) // 2)},
        "targets": [{"expr": expr, "refId": chr(ord("A") + i)} for i, expr in enumerate(exprs)],
    }


REQUESTS = "recsys_recommendation_requests_total"
LATENCY = "recsys_recommendation_latency_seconds_bucket"


def _quantile(q: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({LATENCY}[5m])))"


def dashboard(complete: bool) -> dict[str, Any]:
    if complete:
        panels = [
            _panel(1, "Request rate", f"sum by (endpoint) (rate({REQUESTS}[5m]))"),
            _panel(
                2,
                "Error rate (server-side outcomes)",
                f'sum(rate({REQUESTS}{{outcome=~"internal_error|overload|artifact_incompatible"}}[5m]))'
                f" / sum(rate({REQUESTS}[5m]))",
            ),
            _panel(3, "Latency p50 / p95 / p99", _quantile("0.5"), _quantile("0.95"), _quantile("0.99")),
            _panel(
                4,
                "Empty recommendation rate",
                f'sum(rate({REQUESTS}{{outcome="success",empty="true"}}[5m]))'
                f' / sum(rate({REQUESTS}{{outcome="success"}}[5m]))',
            ),
            _panel(5, "Cache hit / miss", "sum by (cache, result) (rate(recsys_cache_requests_total[5m]))"),
            _panel(6, "Artifact manifest age", "recsys_artifact_manifest_age_seconds"),
            _panel(7, "Artifact load failures", "sum by (kind) (increase(recsys_artifact_load_failures_total[10m]))"),
            _panel(8, "Backpressure rejections", "rate(recsys_backpressure_rejections_total[5m])"),
        ]
        templating = {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]}
        return {
            "title": "RecSys Service",
            "uid": "recsys-service",
            "refresh": "30s",
            "panels": panels,
            "templating": templating,
            "schemaVersion": 39,
        }
    panels = [
        _panel(1, "Request Rate", f"sum(rate({REQUESTS}[5m]))"),
        _panel(2, "p95 Latency", _quantile("0.95")),
        _panel(
            3, "Empty Recommendation Rate", f'sum(rate({REQUESTS}{{empty="true"}}[5m])) / sum(rate({REQUESTS}[5m]))'
        ),
        _panel(4, "Artifact Manifest Age", "recsys_artifact_manifest_age_seconds"),
        _panel(5, "Artifact Load Failures", "sum(rate(recsys_artifact_load_failures_total[5m]))"),
        _panel(6, "Warning Count", "sum(rate(recsys_recommendation_warnings_sum[5m]))"),
    ]
    for panel in panels:
        panel.pop("datasource")
    return {"title": "RecSys Service", "refresh": "30s", "panels": panels, "schemaVersion": 39}


def write_dashboard(path: Path, complete: bool) -> None:
    path.write_text(json.dumps(dashboard(complete), indent=2), encoding="utf-8")


def load_report(kind: str, base_url: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """A report in the upstream loadtest JSON format: ``full`` (2000 requests, recent, p95 within SLO), ``small``
    (the same run with 20 requests, so p95 = p99 = max) or ``upstream`` (the upstream mini benchmark: 20 requests
    on a catalog of 8 items against localhost, months old)."""
    now = now or dt.datetime.now(dt.UTC)
    if kind == "full":
        return {
            "generated_at": _rfc3339(now - dt.timedelta(days=6)),
            "url": base_url,
            "endpoint": "/v1/recommend",
            "surface": "home",
            "tenant": "demo",
            "requests": 2000,
            "concurrency": 25,
            "user_cardinality": 1000,
            "success": 2000,
            "errors": 0,
            "elapsed_ms": 5123,
            "rps": 390.4,
            "latency_ms": {"p50": 21.7, "p95": 118.3, "p99": 171.9},
            "status_codes": {"200": 2000},
            "catalog_size": 5000,
            "artifact_size_bytes": 2_480_000,
            "cpu_notes": "3 replicas, 2 vCPU limit each; peak 61% CPU",
            "memory_notes": "peak RSS 410 MiB per replica",
            "degradation_behavior": "backpressure queue engaged above 180 in-flight; 503 with Retry-After",
        }
    small = {
        "generated_at": _rfc3339(now - dt.timedelta(days=6)),
        "url": base_url,
        "endpoint": "/v1/recommend",
        "surface": "home",
        "tenant": "demo",
        "requests": 20,
        "concurrency": 5,
        "user_cardinality": 20,
        "success": 20,
        "errors": 0,
        "elapsed_ms": 14,
        "rps": 1400.03,
        "latency_ms": {"p50": 1.05, "p95": 11.42, "p99": 11.42},
        "status_codes": {"200": 20},
        "catalog_size": 5000,
        "artifact_size_bytes": 2_480_000,
    }
    if kind == "upstream":
        small.update(
            generated_at="2026-05-24T08:34:46Z", url="http://localhost:8000", catalog_size=8, artifact_size_bytes=10276
        )
    return small


def write_load_report(path: Path, kind: str, base_url: str) -> None:
    path.write_text(json.dumps(load_report(kind, base_url), indent=2), encoding="utf-8")
