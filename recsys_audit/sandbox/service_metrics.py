"""The service's Prometheus metrics: recsys-service's names, types, labels and buckets, in a registry per app.

recsys metrics carry no tenant, user or request-id labels. ``http_*`` are the HTTP toolkit's request metrics
(``route`` is the route pattern, e.g. ``/v1/admin/tenants/{tenant_id}/config``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RETURNED_ITEMS_BUCKETS = (0, 1, 5, 10, 20, 50, 100, 200)
WARNINGS_BUCKETS = (0, 1, 2, 5, 10, 20)
HTTP_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
ARTIFACT_KINDS = ("manifest", "popularity", "cooc", "implicit", "content_sim", "session_seq", "request")


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.recommendation_requests = Counter(
            "recsys_recommendation_requests_total",
            "Recommendation requests by endpoint, outcome and emptiness.",
            ["endpoint", "outcome", "empty"],
            registry=r,
        )
        self.recommendation_latency = Histogram(
            "recsys_recommendation_latency_seconds",
            "Recommendation handler latency.",
            ["endpoint", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.returned_items = Histogram(
            "recsys_recommendation_returned_items",
            "Items returned per successful request.",
            ["endpoint"],
            buckets=RETURNED_ITEMS_BUCKETS,
            registry=r,
        )
        self.warnings = Histogram(
            "recsys_recommendation_warnings",
            "Warnings per successful request.",
            ["endpoint"],
            buckets=WARNINGS_BUCKETS,
            registry=r,
        )
        self.cache_requests = Counter(
            "recsys_cache_requests_total", "Tenant config/rules cache lookups.", ["cache", "result"], registry=r
        )
        self.backpressure_rejections = Counter(
            "recsys_backpressure_rejections_total", "Requests rejected by backpressure.", registry=r
        )
        self.artifact_load_failures = Counter(
            "recsys_artifact_load_failures_total", "Artifact or manifest load failures.", ["kind"], registry=r
        )
        self.manifest_age = Gauge(
            "recsys_artifact_manifest_age_seconds", "Age of the last loaded manifest (now - updated_at).", registry=r
        )
        self.manifest_artifacts = Gauge(
            "recsys_artifact_manifest_artifacts", "Artifact pointers in the last loaded manifest.", registry=r
        )
        self.http_requests = Counter("http_requests_total", "HTTP requests.", ["method", "route", "status"], registry=r)
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration.",
            ["method", "route", "status"],
            buckets=HTTP_DURATION_BUCKETS,
            registry=r,
        )

    def record_recommendation(
        self, endpoint: str, outcome: str, seconds: float, items: int = 0, warnings: int = 0
    ) -> None:
        empty = "true" if outcome == "success" and items == 0 else "false"
        self.recommendation_requests.labels(endpoint, outcome, empty).inc()
        self.recommendation_latency.labels(endpoint, outcome).observe(seconds)
        if outcome == "success":
            self.returned_items.labels(endpoint).observe(items)
            self.warnings.labels(endpoint).observe(warnings)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
