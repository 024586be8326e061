"""Metrics probes: the service's ``/metrics`` exposition and the Prometheus HTTP API (PromQL, rules, targets)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from recsys_audit.probes import ProbeError


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class MetricsSnapshot:
    """One scrape of an exposition endpoint: metric families (name -> type) and their samples."""

    types: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def has(self, family: str) -> bool:
        return family in self.types

    def series(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def total(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.series(name, **labels))

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


def parse_exposition(text: str) -> MetricsSnapshot:
    snapshot = MetricsSnapshot()
    try:
        for family in text_string_to_metric_families(text):
            # the parser strips _total from counters; keep the exposed family name as well
            snapshot.types[family.name] = family.type
            if family.type == "counter":
                snapshot.types[family.name + "_total"] = family.type
            for sample in family.samples:
                snapshot.samples.append(Sample(sample.name, dict(sample.labels), float(sample.value)))
    except (ValueError, TypeError, IndexError) as exc:
        raise ProbeError(f"metrics exposition could not be parsed: {exc}") from None
    return snapshot


def scrape(url: str, timeout_s: float = 5.0, verify: bool | str = True) -> MetricsSnapshot:
    try:
        response = httpx.get(url, timeout=timeout_s, verify=verify, headers={"User-Agent": "recsys-audit"})
    except httpx.HTTPError as exc:
        raise ProbeError(f"GET {url}: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}") from None
    if response.status_code != 200:
        raise ProbeError(f"GET {url}: HTTP {response.status_code}")
    return parse_exposition(response.text)


class PrometheusClient:
    """A small client of the Prometheus HTTP API (read-only endpoints only)."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers={"User-Agent": "recsys-audit"})

    def close(self) -> None:
        self._client.close()

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            response = self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ProbeError(f"Prometheus {self.base_url}{path}: {type(exc).__name__}: {exc}"[:240]) from None
        try:
            body = response.json()
        except ValueError:
            raise ProbeError(f"Prometheus {path}: HTTP {response.status_code}, answer is not JSON") from None
        if body.get("status") != "success":
            raise ProbeError(f"Prometheus {path}: {body.get('errorType', 'error')}: {body.get('error', '')}"[:240])
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant vector query: [{'metric': {...}, 'value': float}] (NaN values dropped)."""
        data = self._get("/api/v1/query", {"query": promql})
        if data.get("resultType") == "scalar":
            value = float(data["result"][1])
            return [] if math.isnan(value) else [{"metric": {}, "value": value}]
        out = []
        for item in data.get("result", []):
            value = float(item["value"][1])
            if not math.isnan(value):
                out.append({"metric": item.get("metric", {}), "value": value})
        return out

    def query_value(self, promql: str) -> float | None:
        """The single value of a query, or None when it returns nothing."""
        result = self.query(promql)
        return result[0]["value"] if result else None

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query_range", {"query": promql, "start": start, "end": end, "step": step_s})
        return data.get("result", [])

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (alerting and recording), flattened with its group name."""
        data = self._get("/api/v1/rules")
        return [{**rule, "group": group["name"]} for group in data.get("groups", []) for rule in group.get("rules", [])]

    def targets(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/targets").get("activeTargets", [])
