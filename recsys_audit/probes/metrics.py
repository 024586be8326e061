"""Metrics probes: the service's ``/metrics`` exposition and the Prometheus HTTP API (PromQL, rules, targets)."""

from __future__ import annotations

import json
import math
import ssl
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from recsys_audit.probes import ProbeError, http


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
        raise ProbeError(f"metrics exposition could not be parsed: {' '.join(str(exc).split())[:160]}") from None
    return snapshot


def scrape(url: str, timeout_s: float = 5.0, verify: ssl.SSLContext | bool = True) -> MetricsSnapshot:
    """One bounded read of an exposition endpoint (at most ``http.METRICS`` bytes and ``METRICS_MAX_LINES`` lines,
    both checked before parsing)."""
    with http.client(timeout_s=timeout_s, verify=verify) as client:
        answer = http.fetch(client, "GET", url, cap=http.METRICS, deadline_s=timeout_s)
    if answer.status != 200:
        raise ProbeError(f"GET {url}: HTTP {answer.status}")
    text = answer.text
    lines = text.count("\n")
    if lines > http.METRICS_MAX_LINES:
        raise ProbeError(f"GET {url}: /metrics over {http.METRICS_MAX_LINES:,} lines ({lines:,}): not parsed")
    return parse_exposition(text)


class PrometheusClient:
    """A small client of the Prometheus HTTP API (read-only endpoints only; answers bounded by ``http.PROMETHEUS``)."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._client = http.client(timeout_s=timeout_s, base_url=self.base_url)

    def close(self) -> None:
        self._client.close()

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        answer = http.fetch(
            self._client,
            "GET",
            path,
            cap=http.PROMETHEUS,
            deadline_s=self.timeout_s,
            params=params,
            shown_url=f"Prometheus {self.base_url}{path}",
        )
        try:
            body = json.loads(answer.body)
        except (ValueError, UnicodeDecodeError):
            raise ProbeError(f"Prometheus {path}: HTTP {answer.status}, answer is not JSON") from None
        if not isinstance(body, dict):
            raise ProbeError(f"Prometheus {path}: HTTP {answer.status}, answer is not a JSON object")
        if body.get("status") != "success":
            error = f"{body.get('errorType', 'error')}: {body.get('error', '')}"
            raise ProbeError(f"Prometheus {path}: {' '.join(error.split())[:200]}")
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
