"""The load-test report format and the bounded live load test, against a real sandbox server on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from recsys_audit.checks.s6_performance import LIVE_REPORT, SECTION
from recsys_audit.context import AuditContext
from recsys_audit.findings import Status
from recsys_audit.params import load_params
from recsys_audit.probes import ProbeError
from recsys_audit.probes.loadtest import percentile, read_report, recommend_sender, run_load_test


def test_percentile_collapses_onto_the_maximum_with_few_samples() -> None:
    samples = sorted(float(i) for i in range(1, 21))  # 20 requests
    assert percentile(samples, 0.95) == percentile(samples, 0.99) == 20.0
    many = sorted(float(i) for i in range(1, 1001))
    assert percentile(many, 0.5) == 501.0 and percentile(many, 0.99) == 991.0


def test_report_reader_names_the_missing_field(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"generated_at": "2026-01-01T00:00:00Z", "url": "http://x", "requests": 5}))
    with pytest.raises(ProbeError, match=r"missing field\(s\) concurrency, success, errors, rps, latency_ms"):
        read_report(path)
    path.write_text("{not json")
    with pytest.raises(ProbeError, match="not JSON"):
        read_report(path)


@pytest.fixture(scope="module")
def loadtest_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from recsys_audit.sandbox.harness import start_sandbox

    instance = start_sandbox(tmp_path_factory.mktemp("loadtest-sandbox"), profile="hardened")
    try:
        yield instance
    finally:
        instance.stop()


def live_context(sandbox: object, tmp_path: Path, **load_test: object) -> AuditContext:
    """The sandbox's own params with the live load test allowed and bounded as given."""
    params = yaml.safe_load(Path(sandbox.params_path).read_text(encoding="utf-8"))
    params["load_test"] = {**(params.get("load_test") or {}), "allowed": True, **load_test}
    path = Path(sandbox.params_path).with_name(f"params-{tmp_path.name}.yaml")
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return AuditContext(load_params(path), tmp_path / "run")


def recommend_lines(request_log: Path) -> int:
    if not request_log.exists():
        return 0
    lines = [json.loads(line) for line in request_log.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sum(1 for line in lines if line["method"] == "POST" and line["path"] == "/v1/recommend")


def request_log_of(sandbox: object) -> Path:
    return Path(sandbox.directory) / "logs" / "requests.jsonl"


def logged_recommends(sandbox: object, expected: int, within_s: float = 5.0) -> int:
    """The recommend lines of the request log, once ``expected`` are there (the service logs after it answers)
    or ``within_s`` has passed."""
    deadline = time.monotonic() + within_s
    while (count := recommend_lines(request_log_of(sandbox))) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def test_live_load_test_stays_within_request_and_concurrency_caps(loadtest_sandbox: object, tmp_path: Path) -> None:
    ctx = live_context(loadtest_sandbox, tmp_path)
    before = recommend_lines(request_log_of(loadtest_sandbox))
    tenant = ctx.params.tenants[0]
    run = run_load_test(recommend_sender(ctx.service, tenant.id, tenant.surfaces[0]), 150, 6, 60)
    assert run.sent == 150 and not run.stopped_by_time
    assert 1 <= run.peak_in_flight <= 6
    assert sum(run.status_codes.values()) + run.transport_errors == 150
    assert run.status_codes[200] == 150
    # the server saw exactly what the kit says it sent
    assert logged_recommends(loadtest_sandbox, before + 150) - before == 150


def test_live_load_test_stops_at_the_time_cap(loadtest_sandbox: object, tmp_path: Path) -> None:
    ctx = live_context(loadtest_sandbox, tmp_path)
    tenant = ctx.params.tenants[0]
    run = run_load_test(recommend_sender(ctx.service, tenant.id, tenant.surfaces[0]), 100_000, 4, 1.0)
    assert run.stopped_by_time
    assert run.sent < 100_000
    # no request starts after the cap; the ones in flight finish within the client timeout
    assert run.elapsed_s <= 1.0 + ctx.params.target.timeout_s


def test_live_check_writes_an_upstream_format_report(loadtest_sandbox: object, tmp_path: Path) -> None:
    ctx = live_context(loadtest_sandbox, tmp_path, requests=200, concurrency=5, max_seconds=30)
    outcome = SECTION.checks["perf.live-load-test"].function(ctx)
    assert outcome.status == Status.PASS, outcome.summary
    caps = outcome.evidence["caps"]
    assert caps["sent"] == 200 <= caps["max_requests"] and caps["peak_in_flight"] <= 5
    report = read_report(ctx.run_dir / LIVE_REPORT)
    assert report.requests == 200 and report.success == 200 and report.status_codes == {"200": 200}
    assert report.latency_ms["p50"] <= report.latency_ms["p95"] <= report.latency_ms["p99"]
    assert report.latency_ms["p95"] <= ctx.params.policies.latency_p95_ms


def test_live_check_is_skipped_unless_params_allow_it(loadtest_sandbox: object, tmp_path: Path) -> None:
    ctx = live_context(loadtest_sandbox, tmp_path, allowed=False)
    before = recommend_lines(request_log_of(loadtest_sandbox))
    outcome = SECTION.checks["perf.live-load-test"].function(ctx)
    assert outcome.status == Status.SKIP and "load_test.allowed" in outcome.summary
    assert recommend_lines(request_log_of(loadtest_sandbox)) == before
