"""Section 3 — pipelines and manifests.

Two kinds of evidence: the full notebook run against the sandbox variants (``audit_findings``), and the checks run
directly against real registries written by the sandbox's registry module, real rule files and a real ``/metrics``
endpoint on loopback.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from recsys_audit.checks.s3_pipelines import cron_interval_s
from recsys_audit.findings import Finding, Status
from recsys_audit.notebook import open_section
from recsys_audit.sandbox.manifests import write_registry

TENANTS = {"demo": ["home", "pdp"], "beta": ["home"]}
UPSTREAM_ALERT = {
    "alert": "RecSysStaleArtifactManifest",
    "expr": "recsys_artifact_manifest_age_seconds > 900",
    "for": "15m",
}
FITTING_ALERT = {"alert": "RecSysStaleArtifactManifest", "expr": "max(recsys_artifact_manifest_age_seconds) > 90000",
                 "for": "30m"}  # fmt: skip


# --- the full audit against the sandbox variants ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "check_id",
    ["pipelines.manifest-valid", "pipelines.manifest-fresh", "pipelines.artifacts-verified",
     "pipelines.rollback-manifest-retained", "pipelines.stale-manifest-alert"],
)  # fmt: skip
def test_hardened_sandbox_passes(audit_findings: Any, check_id: str) -> None:
    finding = audit_findings("hardened")[check_id]
    assert finding.status == Status.PASS, finding.summary


@pytest.mark.parametrize(
    ("check_id", "phrase"),
    [
        ("pipelines.manifest-fresh", "stale manifests"),
        ("pipelines.rollback-manifest-retained", "no usable previous manifest"),
        ("pipelines.stale-manifest-alert", "no alert on recsys_artifact_manifest_age_seconds"),
    ],
)
def test_ops_defects_are_caught(audit_findings: Any, check_id: str, phrase: str) -> None:
    finding = audit_findings("ops-defects")[check_id]
    assert finding.status == Status.FAIL and phrase in finding.summary, finding.summary


def test_db_only_sandbox_skips_the_section(audit_findings: Any) -> None:
    findings = audit_findings("as-shipped")
    section = [f for f in findings.values() if f.section == 3]
    assert section and all(f.status == Status.SKIP and "DB-only" in f.summary for f in section)


# --- direct runs against real registries -----------------------------------------------------------------------------


class _Metrics(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body if self.path == "/metrics" else b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, type[_Metrics]]]:
    handler = type("Metrics", (_Metrics,), {"body": b""})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def exposition(age_s: float, failures: dict[str, float]) -> bytes:
    lines = ["# TYPE recsys_artifact_manifest_age_seconds gauge", f"recsys_artifact_manifest_age_seconds {age_s}",
             "# TYPE recsys_artifact_load_failures_total counter"]  # fmt: skip
    lines += [f'recsys_artifact_load_failures_total{{kind="{kind}"}} {n}' for kind, n in failures.items()]
    return ("\n".join(lines) + "\n").encode()


def make_params(folder: Path, base_url: str, *, registry: Path, alert: dict[str, str] | None, mode: str = "artifact",
                retained: bool = True, **deployment: Any) -> Path:  # fmt: skip
    rules = {"groups": [{"name": "recsys-service", "rules": [alert] if alert else []}]}
    (folder / "rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    last = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    manifests = {"template": f"file://{registry}/current/{{tenant}}/{{surface}}/manifest.json"}
    if retained:
        manifests["previous_template"] = f"file://{registry}/previous/{{tenant}}/{{surface}}/"
    document = {
        "environment": {"name": folder.name},
        "target": {"base_url": base_url},
        "tenants": [{"id": t, "surfaces": s, "serving_mode": mode} for t, s in TENANTS.items()],
        "manifests": manifests,
        "prometheus": {"rules_files": ["rules.yml"]},
        "deployment": {
            "pipelines_schedule": "15 2 * * *",
            "pipelines_last_success": last.isoformat(),
            "pipelines_owner": "data-platform",
            **deployment,
        },
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def run_section(params: Path, run_dir: Path) -> dict[str, Finding]:
    audit = open_section(3, params_path=str(params), run_dir=str(run_dir))
    findings = {check.id: audit.evaluate(check) for check in audit.section.checks.values()}
    audit.ctx.close()
    return findings


def test_healthy_registry_passes(tmp_path: Path, metrics_server: tuple[str, type[_Metrics]]) -> None:
    base_url, handler = metrics_server
    handler.body = exposition(7200, {})
    registry = write_registry(tmp_path / "registry", TENANTS).root
    findings = run_section(make_params(tmp_path, base_url, registry=registry, alert=FITTING_ALERT), tmp_path / "run")
    for check_id, finding in findings.items():
        assert finding.status == Status.PASS, (check_id, finding.summary)
    assert len(findings["pipelines.manifest-valid"].evidence["manifests"]) == 3
    artifacts = findings["pipelines.artifacts-verified"].evidence["artifacts"]
    assert len(artifacts) == 6 and {row["hash"] for row in artifacts} == {"match"}
    assert findings["pipelines.manifest-fresh"].evidence["age_gauge_s"] == 7200
    commands = findings["pipelines.rollback-manifest-retained"].evidence["rollback_commands"]
    assert len(commands) == 3
    assert commands[0]["command"].startswith(f"cp '{registry}/previous/demo/home/")
    assert "/v1/admin/tenants/demo/cache/invalidate" in commands[0]["command"]
    # the findings file of the section holds one line per check
    lines = (tmp_path / "run" / "findings" / "03_pipelines.jsonl").read_text().splitlines()
    assert {json.loads(line)["id"] for line in lines} == set(findings)


def test_stale_unretained_registry_with_upstream_alert_fails(
    tmp_path: Path, metrics_server: tuple[str, type[_Metrics]]
) -> None:
    base_url, handler = metrics_server
    handler.body = exposition(4 * 86400, {"manifest": 3})
    registry = write_registry(tmp_path / "registry", TENANTS, manifest_age=dt.timedelta(days=4), retained=0).root
    params = make_params(tmp_path, base_url, registry=registry, alert=UPSTREAM_ALERT)
    findings = run_section(params, tmp_path / "run")
    fresh = findings["pipelines.manifest-fresh"]
    assert fresh.status == Status.FAIL and {r["verdict"] for r in fresh.evidence["manifests"]} == {"stale"}
    assert fresh.evidence["age_gauge_s"] == 4 * 86400
    retained = findings["pipelines.rollback-manifest-retained"]
    assert retained.status == Status.FAIL and retained.evidence["rollback_commands"] == []
    alert = findings["pipelines.stale-manifest-alert"]
    assert alert.status == Status.FAIL and "fires at 900 s" in alert.summary
    assert alert.evidence["publish_interval_s"] == 86400
    failures = findings["pipelines.artifact-load-failures"]
    assert failures.status == Status.WARN and failures.evidence["by_kind"] == [{"kind": "manifest", "total": 3.0}]
    assert findings["pipelines.manifest-valid"].status == Status.PASS  # stale, but well-formed


def test_no_previous_template_missing_alert_and_tampered_artifact(
    tmp_path: Path, metrics_server: tuple[str, type[_Metrics]]
) -> None:
    base_url, handler = metrics_server
    handler.body = exposition(60, {})
    registry = write_registry(tmp_path / "registry", TENANTS).root
    manifest = json.loads((registry / "current" / "demo" / "home" / "manifest.json").read_text())
    blob = Path(manifest["current"]["popularity"].removeprefix("file://"))
    blob.chmod(0o644)
    blob.write_text(blob.read_text().replace('"item-0001"', '"item-9999"'))
    (registry / "current" / "beta" / "home" / "manifest.json").write_text(json.dumps({**manifest, "v": 2}))
    params = make_params(tmp_path, base_url, registry=registry, alert=None, retained=False)
    findings = run_section(params, tmp_path / "run")
    assert "manifests.previous_template is not set" in findings["pipelines.rollback-manifest-retained"].summary
    assert findings["pipelines.stale-manifest-alert"].status == Status.FAIL
    valid = findings["pipelines.manifest-valid"]
    assert valid.status == Status.FAIL and "1 invalid" in valid.summary
    problems = {(r["tenant"], r["surface"]): r["problems"] for r in valid.evidence["manifests"]}
    assert "names tenant 'demo', expected 'beta'" in problems[("beta", "home")]
    verified = findings["pipelines.artifacts-verified"]
    assert verified.status == Status.FAIL
    bad = [r for r in verified.evidence["artifacts"] if r["hash"] == "MISMATCH"]
    assert {r["uri"] for r in bad} == {blob.as_uri()}  # the tampered blob, wherever a manifest points to it
    beta = [r for r in verified.evidence["artifacts"] if r["tenant"] == "beta"]
    assert all("tenant 'demo' != 'beta'" in r["problem"] for r in beta)


def test_missing_manifest_and_unowned_pipeline(tmp_path: Path, metrics_server: tuple[str, type[_Metrics]]) -> None:
    base_url, handler = metrics_server
    handler.body = exposition(60, {})
    registry = write_registry(tmp_path / "registry", TENANTS).root
    (registry / "current" / "demo" / "pdp" / "manifest.json").unlink()
    three_days_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=3)).isoformat()
    params = make_params(tmp_path, base_url, registry=registry, alert=FITTING_ALERT, pipelines_owner=None,
                         pipelines_last_success=three_days_ago)  # fmt: skip
    findings = run_section(params, tmp_path / "run")
    valid = findings["pipelines.manifest-valid"]
    assert valid.status == Status.FAIL and "1 not fetchable" in valid.summary
    assert findings["pipelines.publish-owner"].status == Status.MANUAL
    scheduled = findings["pipelines.publish-scheduled"]
    assert scheduled.status == Status.FAIL and "exceeds the freshness SLO" in scheduled.summary


def test_db_only_mode_skips_every_check(tmp_path: Path) -> None:
    params = make_params(tmp_path, "http://127.0.0.1:9", registry=tmp_path / "none", alert=None, mode="db_only")
    findings = run_section(params, tmp_path / "run")
    assert {f.status for f in findings.values()} == {Status.SKIP}
    assert all("DB-only serving mode" in f.summary for f in findings.values())


@pytest.mark.parametrize(
    ("schedule", "interval"),
    [("15 2 * * *", 86400), ("0 * * * *", 3600), ("*/15 * * * *", 900), ("0 */6 * * *", 21600),
     ("0 2,14 * * *", 43200), ("0 3 * * 1", 604800), ("@daily", 86400), ("0 2 1 * *", None)],
)  # fmt: skip
def test_cron_interval(schedule: str, interval: int | None) -> None:
    assert cron_interval_s(schedule) == interval


def test_cron_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a 5-field cron expression"):
        cron_interval_s("every day at two")
