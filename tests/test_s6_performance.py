"""Section 6 — performance and capacity, against the sandbox variants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recsys_audit.checks.s6_performance import SECTION, go_duration_s
from recsys_audit.context import AuditContext
from recsys_audit.findings import Finding, Status
from recsys_audit.params import load_params

HARDENED_PASS = [
    "perf.load-report-present",
    "perf.load-report-sample-size",
    "perf.load-report-errors",
    "perf.load-report-latency",
    "perf.backpressure-config",
    "perf.cache-ttls",
    "perf.tenant-rate-limit",
    "perf.pprof-off",
]


def test_hardened_passes(audit_findings) -> None:
    findings = audit_findings("hardened")
    wrong = {
        cid: (findings[cid].status, findings[cid].summary) for cid in HARDENED_PASS if findings[cid].status != "pass"
    }
    assert not wrong
    assert findings["perf.load-report-sample-size"].evidence["answered"] >= 1000
    assert findings["perf.pprof-off"].evidence["probe"][0]["status"] != 200
    # the sandbox's params allow a small bounded live run; it stays within its caps and writes its report
    live = findings["perf.live-load-test"]
    assert live.status == Status.PASS, live.summary
    caps = live.evidence["caps"]
    assert caps["sent"] <= caps["max_requests"] and caps["peak_in_flight"] <= caps["concurrency"]
    assert caps["elapsed_s"] <= caps["max_seconds"] + 5
    assert live.evidence["report_file"] == "load-test/live-report.json"
    # provoking overload is never done on a production target, nor unless asked
    assert findings["perf.backpressure-provoked"].status == Status.SKIP


@pytest.mark.slow
@pytest.mark.parametrize(
    ("check_id", "expected", "in_summary"),
    [
        ("perf.load-report-sample-size", Status.WARN, "p99 rests on 1 sample(s) and equals p95"),
        ("perf.backpressure-config", Status.FAIL, "RECSYS_BACKPRESSURE_MAX_INFLIGHT=0"),
        ("perf.pprof-off", Status.FAIL, "/debug/pprof/"),
    ],
)
def test_ops_defects_are_caught(audit_findings, check_id: str, expected: Status, in_summary: str) -> None:
    finding = audit_findings("ops-defects")[check_id]
    assert finding.status == expected, finding.summary
    assert in_summary in finding.summary


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("200ms", 0.2), ("1h30m", 5400), ("0", 0), ("-1s", -1), ("1.5s", 1.5)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert go_duration_s(text) == pytest.approx(seconds)


def config_context(tmp_path: Path, env: str, **params_extra: object) -> AuditContext:
    (tmp_path / "service.env").write_text(env, encoding="utf-8")
    params = {
        "environment": {"name": "perf"},
        "target": {"base_url": "http://127.0.0.1:9"},
        "tenants": [{"id": "demo", "surfaces": ["home"]}],
        "config_sources": [{"kind": "env_file", "path": "service.env"}],
        **params_extra,
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return AuditContext(load_params(tmp_path / "params.yaml"), tmp_path / "run")


def test_malformed_trusted_proxy_list_fails_behind_a_proxy(tmp_path: Path) -> None:
    check = SECTION.checks["perf.trusted-proxies"].function
    ctx = config_context(
        tmp_path, "TRUSTED_PROXIES=10.0.0.0/8,lb.internal\n", target={"base_url": "http://x", "behind_proxy": True}
    )
    outcome = check(ctx)
    assert outcome.status == Status.FAIL and "'lb.internal' is not an IP or CIDR" in outcome.summary
    empty = check(config_context(tmp_path, "ENV=production\n", target={"base_url": "http://x", "behind_proxy": True}))
    assert empty.status == Status.FAIL and "empty" in empty.summary
    good = check(
        config_context(
            tmp_path,
            "TRUSTED_PROXIES=10.0.0.0/8, 192.168.1.10\n",
            target={"base_url": "http://x", "behind_proxy": True},
        )
    )
    assert good.status == Status.PASS


def test_load_report_with_rate_limited_requests_fails_the_budget(tmp_path: Path) -> None:
    report = {
        "generated_at": "2099-01-01T00:00:00Z",
        "url": "http://x",
        "requests": 1000,
        "concurrency": 10,
        "success": 900,
        "errors": 0,
        "rps": 500,
        "latency_ms": {"p50": 2, "p95": 9, "p99": 20},
        "status_codes": {"200": 900, "429": 100},
    }
    (tmp_path / "report.json").write_text(json.dumps(report), encoding="utf-8")
    ctx = config_context(tmp_path, "TENANT_RATE_LIMIT_ENABLED=true\n", load_test={"report": "report.json"})
    errors = SECTION.checks["perf.load-report-errors"].function(ctx)
    assert errors.status == Status.FAIL and errors.evidence["http_429"] == 0.1
    limiter = SECTION.checks["perf.tenant-rate-limit"].function(ctx)
    assert limiter.status == Status.WARN and "10.00% 429s" in limiter.summary
    off = SECTION.checks["perf.tenant-rate-limit"].function(
        config_context(tmp_path, "TENANT_RATE_LIMIT_ENABLED=false\n")
    )
    assert off.status == Status.FAIL


def test_disabled_cache_fails(tmp_path: Path) -> None:
    outcome = SECTION.checks["perf.cache-ttls"].function(config_context(tmp_path, "RECSYS_CONFIG_CACHE_TTL=0s\n"))
    assert outcome.status == Status.FAIL and "RECSYS_CONFIG_CACHE_TTL=0s disables the cache" in outcome.summary


# --- provoking backpressure on live, non-production sandbox instances ------------------------------------------

PROVOKE = {"load_test": {"allowed": True, "provoke_backpressure": True, "requests": 120, "max_seconds": 10}}
SMALL_BACKPRESSURE = {
    "RECSYS_BACKPRESSURE_MAX_INFLIGHT": "1",
    "RECSYS_BACKPRESSURE_MAX_QUEUE": "1",
    "RECSYS_BACKPRESSURE_WAIT_TIMEOUT": "5ms",
    "RECSYS_BACKPRESSURE_RETRY_AFTER": "2s",
    "SANDBOX_SERVICE_TIME_MS": "20",
    "TENANT_RATE_LIMIT_CAPACITY": "1000",  # the tenant limiter (checked first) must not answer for backpressure
}


def provoke(tmp_path: Path, name: str, env_overrides: dict[str, str]) -> Finding:
    from recsys_audit.notebook import open_section
    from recsys_audit.sandbox.harness import start_sandbox

    instance = start_sandbox(
        tmp_path / "instances",
        "as-shipped",  # a development instance: target.production is false
        name=name,
        prometheus=False,
        env_overrides=env_overrides,
        params_overrides=PROVOKE,
    )
    try:
        assert load_params(instance.params_path).target.production is False
        run = open_section(6, params_path=str(instance.params_path), run_dir=str(tmp_path / "run"))
        try:
            return run.evaluate(run.section.checks["perf.backpressure-provoked"])
        finally:
            run.ctx.close()
    finally:
        instance.stop()


@pytest.mark.slow
def test_small_backpressure_limits_shed_load_with_503_and_retry_after(tmp_path: Path) -> None:
    finding = provoke(tmp_path, "perf-backpressure", SMALL_BACKPRESSURE)
    assert finding.status == Status.PASS, finding.summary
    evidence = finding.evidence
    assert evidence["max_inflight"] == 1 and evidence["max_queue"] == 1 and evidence["concurrency"] == 16
    assert set(evidence["status_codes"]) == {"200", "503"}, evidence["status_codes"]
    assert evidence["status_codes"]["503"] > 0 and evidence["status_codes"]["200"] > 0
    assert evidence["sent"] <= PROVOKE["load_test"]["requests"]
    assert evidence["overload_replies"]
    assert all(
        r == {"status": 503, "code": "RECSYS_OVERLOADED", "retry_after": "2"} for r in evidence["overload_replies"]
    )
    assert f"{evidence['status_codes']['503']} request(s) shed" in finding.summary


@pytest.mark.slow
def test_backpressure_off_is_not_provoked(tmp_path: Path) -> None:
    finding = provoke(
        tmp_path, "perf-no-backpressure", {"SANDBOX_SERVICE_TIME_MS": "20", "TENANT_RATE_LIMIT_CAPACITY": "1000"}
    )
    assert finding.status == Status.WARN, finding.summary
    assert finding.evidence["max_inflight"] == 0 and finding.evidence["status_codes"] == {"200": 120}
    assert "backpressure not provoked" in finding.summary
