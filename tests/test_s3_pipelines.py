"""Section 3 — pipelines and manifests.

Every check on fake contexts (``CASES``): real registries written by the sandbox's registry module (current and
retained manifests, content-addressed blobs), real rule files, the service's ``/metrics`` and a Prometheus API on
loopback. Then the sandbox variants through the runner.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import Case, check_case, prometheus_api

from recsys_audit.checks.s3_pipelines import cron_interval_s
from recsys_audit.findings import Status
from recsys_audit.sandbox.manifests import write_registry

TENANTS = {"demo": ["home", "pdp"], "beta": ["home"]}
NOW = dt.datetime.now(dt.UTC)
UPSTREAM_ALERT = {"alert": "RecSysStaleArtifactManifest", "expr": "recsys_artifact_manifest_age_seconds > 900",
                  "for": "15m"}  # fmt: skip
FITTING_ALERT = {"alert": "RecSysStaleArtifactManifest", "expr": "max(recsys_artifact_manifest_age_seconds) > 90000",
                 "for": "30m"}  # fmt: skip
ARTIFACT_ENV = {
    "RECSYS_ARTIFACT_MODE_ENABLED": "true",
    "RECSYS_ARTIFACT_MANIFEST_TEMPLATE": "file://{folder}/registry/current/{tenant}/{surface}/manifest.json",
    "RECSYS_ARTIFACT_FILE_ROOT": "{folder}/registry",
}


def exposition(age_s: float = 7200, failures: dict[str, float] | None = None) -> str:
    lines = [
        "# TYPE recsys_artifact_manifest_age_seconds gauge",
        f"recsys_artifact_manifest_age_seconds {age_s}",
        "# TYPE recsys_backpressure_rejections_total counter",
        "recsys_backpressure_rejections_total 0",
        "# TYPE recsys_artifact_load_failures_total counter",
    ]
    lines += [f'recsys_artifact_load_failures_total{{kind="{kind}"}} {n}' for kind, n in (failures or {}).items()]
    return "\n".join(lines) + "\n"


def registry(
    manifest_age: dt.timedelta = dt.timedelta(hours=2),
    retained: int = 2,
    then: Callable[[Path], None] | None = None,
) -> Callable[[Path], None]:
    """A setup hook writing a daily-published registry (and changing it with ``then``)."""

    def setup(folder: Path) -> None:
        root = write_registry(folder / "registry", TENANTS, manifest_age=manifest_age, retained=retained).root
        (root / "previous").mkdir(exist_ok=True)
        if then:
            then(root)

    return setup


def pipelines(
    *,
    mode: str = "artifact",
    env: dict[str, str] | None = None,
    setup: Callable[[Path], None] | None = None,
    alert: dict[str, str] | None = FITTING_ALERT,
    metrics: str | None = None,
    template: str = "file://registry/current/{tenant}/{surface}/manifest.json",
    prometheus: dict[str, Any] | None = None,
    **deployment: Any,
) -> dict[str, Any]:
    """Evidence for a pipelines case: the registry on disk, the service's env and /metrics, rules, deployment facts."""
    rules = {"groups": [{"name": "recsys-service", "rules": [alert] if alert else []}]}
    params: dict[str, Any] = {
        "tenants": [{"id": t, "surfaces": s, "serving_mode": mode} for t, s in TENANTS.items()],
        "manifests": {"template": template, "previous_template": "file://registry/previous/{tenant}/{surface}/"},
        "prometheus": {"rules_files": ["rules.yml"]},
        "deployment": {
            "pipelines_schedule": "15 2 * * *",
            "pipelines_last_success": (NOW - dt.timedelta(hours=2)).isoformat(),
            "pipelines_owner": "data-platform on-call",
            **deployment,
        },
    }
    evidence: dict[str, Any] = {
        "env": ARTIFACT_ENV if env is None else env,
        "setup": setup or registry(),
        "files": {"rules.yml": yaml.safe_dump(rules)},
        "metrics": metrics if metrics is not None else exposition(),
        "params": params,
    }
    if prometheus is not None:
        evidence["routes"] = {"GET /api/v1/query": prometheus_api(prometheus)}
        params["prometheus"]["url"] = "{url}"
    return evidence


def tamper(root: Path) -> None:
    manifest = json.loads((root / "current" / "demo" / "home" / "manifest.json").read_text())
    blob = Path(manifest["current"]["popularity"].removeprefix("file://"))
    blob.chmod(0o644)
    blob.write_text(blob.read_text().replace('"item-0001"', '"item-9999"'))


def drop_manifest(root: Path) -> None:
    (root / "current" / "demo" / "pdp" / "manifest.json").unlink()


SCRAPED = {"count(recsys_backpressure_rejections_total": [({}, 1.0)]}
STALE = registry(manifest_age=dt.timedelta(days=4))
CASES = [
    # --- the section applies whenever any source says artifact mode
    Case("pipelines.manifest-valid", "declared db_only, but the config says artifact mode", Status.PASS,
         pipelines(mode="db_only")),
    Case("pipelines.manifest-valid", "DB-only everywhere", Status.SKIP,
         pipelines(mode="db_only", env={"RECSYS_ARTIFACT_MODE_ENABLED": "false"}, metrics=exposition(0),
                   setup=lambda folder: None)),
    # --- where the manifests are
    Case("pipelines.manifest-location", "params and service name the same files", Status.PASS, pipelines()),
    Case("pipelines.manifest-location", "params point elsewhere", Status.FAIL,
         pipelines(template="file://registry/staging/{tenant}/{surface}/manifest.json"), "not where the service reads"),
    Case("pipelines.manifest-location", "same layout, another root", Status.WARN,
         pipelines(template="file://mirror/current/{tenant}/{surface}/manifest.json"), "same layout"),
    Case("pipelines.manifest-location", "service template not visible", Status.WARN,
         pipelines(env={"RECSYS_ARTIFACT_MODE_ENABLED": "true"}), "not visible"),
    Case("pipelines.manifest-valid", "three valid manifests", Status.PASS, pipelines()),
    Case("pipelines.manifest-valid", "one missing", Status.FAIL, pipelines(setup=registry(then=drop_manifest)),
         "1 not fetchable"),
    Case("pipelines.manifest-valid", "params point elsewhere: not evaluated", Status.ERROR,
         pipelines(template="file://registry/staging/{tenant}/{surface}/manifest.json"), "fix manifests.template"),
    Case("pipelines.manifest-fresh", "two hours old", Status.PASS, pipelines()),
    Case("pipelines.manifest-fresh", "four days old", Status.FAIL, pipelines(setup=STALE), "stale manifests"),
    Case("pipelines.artifacts-verified", "every blob hashes to its version", Status.PASS, pipelines()),
    Case("pipelines.artifacts-verified", "a blob was overwritten", Status.FAIL, pipelines(setup=registry(then=tamper)),
         "not matching"),
    # --- rollback
    Case("pipelines.rollback-manifest-retained", "earlier manifests kept", Status.PASS, pipelines()),
    Case("pipelines.rollback-manifest-retained", "nothing kept", Status.FAIL, pipelines(setup=registry(retained=0)),
         "no usable previous manifest"),
    # --- publishing
    Case("pipelines.publish-scheduled", "daily, on time", Status.PASS, pipelines()),
    Case("pipelines.publish-scheduled", "four days without a publish", Status.FAIL,
         pipelines(setup=STALE, pipelines_last_success=(NOW - dt.timedelta(days=4)).isoformat()), "last publish"),
    Case("pipelines.publish-scheduled", "last success declared in the future", Status.WARN,
         pipelines(pipelines_last_success="2099-01-01T00:00:00Z"), "in the future"),
    Case("pipelines.publish-scheduled", "no schedule declared", Status.WARN, pipelines(pipelines_schedule=None),
         "no schedule declared"),
    Case("pipelines.publish-owner", "named: awaits the on-call attestation", Status.MANUAL, pipelines()),
    Case("pipelines.publish-owner", "a placeholder owner", Status.FAIL, pipelines(pipelines_owner="TBD"),
         "placeholder"),
    # --- alerting
    Case("pipelines.stale-manifest-alert", "threshold above the daily cadence", Status.PASS, pipelines()),
    Case("pipelines.stale-manifest-alert", "the upstream 900 s alert", Status.FAIL, pipelines(alert=UPSTREAM_ALERT),
         "fires at 900 s"),
    Case("pipelines.artifact-load-failures", "none since start (/metrics)", Status.PASS, pipelines()),
    Case("pipelines.artifact-load-failures", "manifest loads failing (/metrics)", Status.FAIL,
         pipelines(metrics=exposition(failures={"manifest": 3})), "3 artifact load failures"),
    Case("pipelines.artifact-load-failures", "none in the last hour (Prometheus)", Status.PASS,
         pipelines(prometheus=SCRAPED)),
    Case("pipelines.artifact-load-failures", "failures in the last hour (Prometheus)", Status.FAIL,
         pipelines(prometheus={**SCRAPED, "increase(recsys_artifact_load_failures_total": [({"kind": "cooc"}, 2.0)]}),
         "(cooc)"),
    Case("pipelines.artifact-load-failures", "Prometheus holds nothing of the service", Status.WARN,
         pipelines(prometheus={}), "not scraped"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=str)
def test_check_on_fake_context(fake_audit, case: Case) -> None:
    check_case(fake_audit, case)


def test_rollback_commands_name_the_retained_manifest(fake_audit) -> None:
    audit = fake_audit(**pipelines())
    finding = audit.run("pipelines.rollback-manifest-retained")
    commands = finding.evidence["rollback_commands"]
    assert len(commands) == 3
    assert commands[0]["command"].startswith(f"cp '{audit.folder.resolve()}/registry/previous/demo/home/")
    assert "/v1/admin/tenants/demo/cache/invalidate" in commands[0]["command"]
    history = audit.run("pipelines.publish-scheduled").evidence["history"]
    assert [row["gaps_s"] for row in history] == [[86400, 86400]] * 3  # the retained manifests show a daily cadence


def test_only_copies_of_the_current_manifest_are_no_rollback(fake_audit) -> None:
    def copy_current(root: Path) -> None:
        for previous in (root / "previous").glob("*/*"):
            for kept in previous.glob("*.json"):
                kept.unlink()
            current = root / "current" / previous.relative_to(root / "previous") / "manifest.json"
            (previous / "copy.json").write_text(current.read_text())

    finding = fake_audit(**pipelines(setup=registry(then=copy_current))).run("pipelines.rollback-manifest-retained")
    assert finding.status == Status.FAIL
    assert {row["verdict"] for row in finding.evidence["retained"]} == {"only copies of the current manifest"}


# --- the sandbox variants, through the runner ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "check_id",
    ["pipelines.manifest-location", "pipelines.manifest-valid", "pipelines.manifest-fresh",
     "pipelines.artifacts-verified", "pipelines.rollback-manifest-retained", "pipelines.publish-scheduled",
     "pipelines.publish-owner", "pipelines.stale-manifest-alert", "pipelines.artifact-load-failures"],
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
        ("pipelines.publish-scheduled", "last publish"),
    ],
)
def test_ops_defects_are_caught(audit_findings: Any, check_id: str, phrase: str) -> None:
    finding = audit_findings("ops-defects")[check_id]
    assert finding.status == Status.FAIL and phrase in finding.summary, finding.summary


def test_db_only_sandbox_skips_the_section(audit_findings: Any) -> None:
    findings = audit_findings("as-shipped")
    section = [f for f in findings.values() if f.section == 3]
    assert section and all(f.status == Status.SKIP and "DB-only" in f.summary for f in section)


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
