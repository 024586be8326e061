"""Alert-rule analysis against a real Prometheus (Debian package) and real promtool.

Two rule sets are written here from the facts in the ops reference: the upstream-style set (five alerts, the error
alert counting every non-success outcome, ratios with clamped denominators) and a complete set. Prometheus loads
them; the kit reads them back through the rules API and judges coverage and semantics.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from recsys_audit.checks.s5_observability import SECTION
from recsys_audit.context import AuditContext
from recsys_audit.findings import Status
from recsys_audit.params import load_params
from recsys_audit.probes.alerts import (
    classify,
    coverage,
    promtool_check,
    promtool_check_rules,
    rules_from_api,
    rules_from_file,
    semantic_problems,
)
from recsys_audit.probes.metrics import PrometheusClient
from recsys_audit.sandbox.harness import free_port

pytestmark = pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus (Debian package) not installed")

REQ = "recsys_recommendation_requests_total"
UPSTREAM_STYLE = {
    "groups": [
        {
            "name": "recsys-service",
            "rules": [
                {
                    "alert": "RecSysHighErrorRate",
                    "expr": f'sum(rate({REQ}{{outcome!="success"}}[5m])) / clamp_min(sum(rate({REQ}[5m])), 1) > 0.01',
                    "for": "10m",
                    "labels": {"severity": "warning"},
                },
                {
                    "alert": "RecSysHighEmptyRecommendationRate",
                    "expr": f'sum(rate({REQ}{{outcome="success",empty="true"}}[10m])) / '
                    f'clamp_min(sum(rate({REQ}{{outcome="success"}}[10m])), 1) > 0.02',
                    "for": "15m",
                },
                {
                    "alert": "RecSysHighP95Latency",
                    "expr": "histogram_quantile(0.95, sum by (le, endpoint) "
                    "(rate(recsys_recommendation_latency_seconds_bucket[5m]))) > 0.25",
                    "for": "10m",
                },
                {
                    "alert": "RecSysStaleArtifactManifest",
                    "expr": "recsys_artifact_manifest_age_seconds > 900",
                    "for": "15m",
                },
                {
                    "alert": "RecSysArtifactLoadFailures",
                    "expr": "sum(rate(recsys_artifact_load_failures_total[5m])) > 0",
                    "for": "5m",
                },
            ],
        }
    ]
}
COMPLETE_EXTRA = [
    {"alert": "RecSysTargetDown", "expr": 'up{job="recsys"} == 0 or absent(up{job="recsys"})', "for": "2m"},
    {"alert": "RecSysReplicasNotReady", "expr": 'kube_deployment_status_replicas_unavailable{deployment="recsys"} > 0'},
    {"alert": "RecSysBackpressureRejecting", "expr": "sum(rate(recsys_backpressure_rejections_total[5m])) > 0"},
]
SERVER_ERRORS = (
    f'sum(rate({REQ}{{outcome=~"overload|artifact_incompatible|internal_error"}}[5m])) / sum(rate({REQ}[5m])) > 0.01'
)


def complete_set() -> dict:
    rules = [dict(rule) for rule in UPSTREAM_STYLE["groups"][0]["rules"]]
    rules[0]["expr"] = SERVER_ERRORS
    rules[1]["expr"] = (
        f'sum(rate({REQ}{{outcome="success",empty="true"}}[10m])) / sum(rate({REQ}{{outcome="success"}}[10m])) > 0.02'
    )
    return {"groups": [{"name": "recsys-service", "rules": rules + COMPLETE_EXTRA}]}


def without(rule_set: dict, *names: str) -> dict:
    rules = [r for r in rule_set["groups"][0]["rules"] if r["alert"] not in names]
    return {"groups": [{"name": "recsys-service", "rules": rules}]}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prometheus_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus on a free loopback port that loaded the upstream-style rules."""
    folder = tmp_path_factory.mktemp("prometheus")
    rules = write_yaml(folder / "upstream.yml", UPSTREAM_STYLE)
    config = write_yaml(
        folder / "prometheus.yml", {"global": {"evaluation_interval": "1s"}, "rule_files": [str(rules)]}
    )
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stderr.read().decode()[-500:]
            time.sleep(0.2)
        else:
            pytest.fail("prometheus did not become ready in 30 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def make_context(tmp_path: Path, prometheus: dict, env: str = "RECSYS_ARTIFACT_MODE_ENABLED=true\n") -> AuditContext:
    (tmp_path / "service.env").write_text(env, encoding="utf-8")
    params = {
        "environment": {"name": "alert-test"},
        "target": {"base_url": "http://127.0.0.1:9"},
        "tenants": [{"id": "demo", "surfaces": ["home"]}],
        "prometheus": prometheus,
        "config_sources": [{"kind": "env_file", "path": "service.env"}],
        "policies": {"publish_interval_s": 86400},
    }
    return AuditContext(load_params(write_yaml(tmp_path / "params.yaml", params)), tmp_path / "run")


def test_upstream_set_loaded_in_prometheus_yields_coverage_warnings(prometheus_upstream: str, tmp_path: Path) -> None:
    client = PrometheusClient(prometheus_upstream)
    loaded = rules_from_api(client.rules())
    client.close()
    assert {r.name for r in loaded} == {r["alert"] for r in UPSTREAM_STYLE["groups"][0]["rules"]}
    rows = {row["measure"]: row["alerts"] for row in coverage(loaded, artifact_mode=True)}
    assert rows["error_rate"] == "RecSysHighErrorRate"
    assert rows["p95_latency"] == "RecSysHighP95Latency"
    assert [m for m, alerts in rows.items() if alerts == "MISSING"] == ["target_down", "readiness", "backpressure"]

    ctx = make_context(tmp_path, {"url": prometheus_upstream})
    finding = SECTION.checks["obs.alert-coverage"].function(ctx)
    assert finding.status == Status.WARN
    assert "target_down" in finding.summary and "backpressure" in finding.summary
    assert finding.evidence["alert_rules"] == 5


def test_upstream_error_alert_is_flagged_for_counting_client_outcomes(prometheus_upstream: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, {"url": prometheus_upstream})
    outcome = SECTION.checks["obs.alert-semantics"].function(ctx)
    assert outcome.status == Status.WARN
    problems = {row["alert"]: row["problems"] for row in outcome.evidence["alerts"]}
    assert "client mistakes included" in problems["RecSysHighErrorRate"]
    assert "clamps the ratio's denominator" in problems["RecSysHighEmptyRecommendationRate"]
    # 900 s threshold against a daily publish: fires most of the day
    assert "fires by design" in problems["RecSysStaleArtifactManifest"]
    assert problems["RecSysArtifactLoadFailures"] == "none"


def test_loaded_rules_revalidate_with_promtool(prometheus_upstream: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, {"url": prometheus_upstream})
    outcome = SECTION.checks["obs.alert-rules-valid"].function(ctx)
    assert outcome.status == Status.PASS
    assert outcome.evidence["results"][0]["rules"] == "rules loaded in Prometheus"


def test_complete_rule_file_passes_coverage_and_semantics(tmp_path: Path) -> None:
    rules = write_yaml(tmp_path / "complete.yml", complete_set())
    ctx = make_context(tmp_path, {"rules_files": [str(rules)]})
    coverage_outcome = SECTION.checks["obs.alert-coverage"].function(ctx)
    assert coverage_outcome.status == Status.PASS, coverage_outcome.summary
    semantics = SECTION.checks["obs.alert-semantics"].function(ctx)
    flagged = {r["alert"]: r["problems"] for r in semantics.evidence["alerts"] if r["problems"] != "none"}
    # only the upstream stale threshold (900 s vs daily publishing) remains
    assert list(flagged) == ["RecSysStaleArtifactManifest"]
    assert SECTION.checks["obs.alert-rules-valid"].function(ctx).status == Status.PASS


def test_missing_stale_and_latency_alerts_fail_coverage(tmp_path: Path) -> None:
    rules = write_yaml(
        tmp_path / "gaps.yml", without(complete_set(), "RecSysStaleArtifactManifest", "RecSysHighP95Latency")
    )
    outcome = SECTION.checks["obs.alert-coverage"].function(make_context(tmp_path, {"rules_files": [str(rules)]}))
    assert outcome.status == Status.FAIL
    missing = {row["measure"] for row in outcome.evidence["coverage"] if row["alerts"] == "MISSING"}
    assert missing == {"p95_latency", "stale_manifest"}


def test_db_only_mode_does_not_require_manifest_alerts(tmp_path: Path) -> None:
    rules = write_yaml(
        tmp_path / "db-only.yml",
        without(complete_set(), "RecSysStaleArtifactManifest", "RecSysArtifactLoadFailures"),
    )
    ctx = make_context(tmp_path, {"rules_files": [str(rules)]}, env="RECSYS_ARTIFACT_MODE_ENABLED=false\n")
    assert SECTION.checks["obs.alert-coverage"].function(ctx).status == Status.PASS


def test_promtool_rejects_broken_promql(tmp_path: Path) -> None:
    broken = without(complete_set())
    broken["groups"][0]["rules"][0]["expr"] = "sum(rate(recsys_recommendation_requests_total[5m]) >"
    path = write_yaml(tmp_path / "broken.yml", broken)
    result = promtool_check(path)
    assert not result.ok and "parse error" in result.output.lower()
    outcome = SECTION.checks["obs.alert-rules-valid"].function(make_context(tmp_path, {"rules_files": [str(path)]}))
    assert outcome.status == Status.FAIL
    # what the rules API reports can be re-checked the same way
    assert promtool_check_rules(rules_from_file(write_yaml(tmp_path / "ok.yml", complete_set()))).ok


@pytest.mark.parametrize(
    ("expr", "name", "expected"),
    [
        ('up{job="recsys"} == 0', "Down", {"target_down"}),
        ("absent(recsys_backpressure_rejections_total)", "Absent", {"target_down", "backpressure"}),
        ('probe_success{instance=~".*/readyz"} == 0', "ReadyzFailing", {"readiness"}),
        ('sum(rate(http_requests_total{status=~"5.."}[5m])) > 1', "Http5xx", {"error_rate"}),
        ("recsys_artifact_manifest_age_seconds > 3600", "Stale", {"stale_manifest"}),
        ("sum(rate(recsys_recommendation_requests_total[5m])) > 1000", "TooMuchTraffic", set()),
    ],
)
def test_classification_reads_the_expression(expr: str, name: str, expected: set[str]) -> None:
    from recsys_audit.probes.alerts import AlertRule

    assert classify(AlertRule(name=name, expr=expr)) == expected


def test_latency_threshold_looser_than_slo_is_flagged() -> None:
    from recsys_audit.probes.alerts import AlertRule

    rule = AlertRule(
        "SlowP95",
        "histogram_quantile(0.95, sum by (le) (rate(recsys_recommendation_latency_seconds_bucket[5m]))) > 0.5",
    )
    problems = semantic_problems(rule, latency_p95_ms=250, manifest_max_age_s=93600, publish_interval_s=None)
    assert [(p.text, p.blind) for p in problems] == [("fires above 500 ms, looser than the p95 SLO of 250 ms", True)]


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        (f'sum(rate({REQ}{{outcome="error"}}[5m])) > 0', 'matches outcome="error", a value recsys-service never sets'),
        (f'sum(rate({REQ}{{outcome=~"internal|timeout"}}[5m])) > 0', 'matches outcome=~"internal|timeout"'),
        ("recsys_recommendation_errors_total > 0", "reads recsys_recommendation_errors_total, which recsys-service"),
        (f'sum(rate({REQ}{{tenant="demo"}}[5m])) > 0', 'matches tenant="demo", a label'),
    ],
)
def test_an_alert_on_series_the_service_never_exports_is_blind(expr: str, problem: str) -> None:
    from recsys_audit.probes.alerts import AlertRule

    problems = semantic_problems(
        AlertRule("Never", expr), latency_p95_ms=250, manifest_max_age_s=93600, publish_interval_s=None
    )
    assert len(problems) == 1 and problems[0].blind and problem in problems[0].text, problems


@pytest.mark.parametrize(
    "expr",
    [
        SERVER_ERRORS,
        f'sum(rate({REQ}{{outcome=~"over.*"}}[5m])) > 0',  # a real regular expression is not judged
        'histogram_quantile(0.95, sum by (le) (rate(recsys_recommendation_latency_seconds_bucket{job="recsys",'
        'outcome="success",endpoint="similar"}[5m]))) > 0.2',
        'sum(rate(recsys_cache_requests_total{cache="tenant_rules",result="miss"}[5m])) > 5',
    ],
)
def test_alerts_on_exported_series_are_not_flagged(expr: str) -> None:
    from recsys_audit.probes.alerts import AlertRule

    rule = AlertRule("Fine", expr)
    assert semantic_problems(rule, latency_p95_ms=250, manifest_max_age_s=93600, publish_interval_s=None) == []
