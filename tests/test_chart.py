"""The Helm chart ``charts/recsys-audit``: ``helm lint`` and ``helm template`` (Helm's own code, embedded), every
rendered manifest validated strictly against the Kubernetes OpenAPI schemas of several minor versions, the hardened
pod, secrets only as ``secretKeyRef`` references, and ``values.schema.json`` rejecting typos."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from recsys_audit.params import load_params, walk_secrets

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "recsys-audit"
FLEET_VALUES = yaml.safe_load((CHART / "ci" / "fleet-values.yaml").read_text(encoding="utf-8"))
KUBERNETES_VERSIONS = ("1.29.0", "1.31.0", "1.33.0", kubernetes_validate.utils.latest_version())
WORKLOADS = {"CronJob", "Job"}


def render(values: dict[str, Any] | None = None, **options: Any) -> list[dict[str, Any]]:
    """``helm template`` of the chart: every rendered object."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values or {}, name="audits", namespace="recsys-audit", **options)
    return [
        doc
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(workload, job spec, pod spec) of every CronJob and Job."""
    found = []
    for obj in objects:
        if obj["kind"] == "CronJob":
            job = obj["spec"]["jobTemplate"]["spec"]
        elif obj["kind"] == "Job":
            job = obj["spec"]
        else:
            continue
        found.append((obj, job, job["template"]["spec"]))
    return found


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def errors(report: dict[str, Any]) -> list[str]:
    """Lint messages at warning level or above (1 is info, e.g. 'icon is recommended')."""
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]


# --- lint and template -----------------------------------------------------------------------------------------


def test_helm_lint_passes_with_defaults_and_with_a_fleet() -> None:
    assert errors(helm.lint(CHART, strict=True)) == []
    for version in KUBERNETES_VERSIONS[:2]:
        report = helm.lint(CHART, FLEET_VALUES, strict=True, kube_version=f"v{version}")
        assert report["errors"] == [] and errors(report) == []


def test_defaults_render_no_workload_until_environments_are_listed() -> None:
    objects = render()
    assert [obj["kind"] for obj in objects] == ["ServiceAccount"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_manifest_validates_strictly(version: str) -> None:
    objects = render(FLEET_VALUES)
    assert sorted(obj["kind"] for obj in objects) == ["ConfigMap"] * 2 + ["CronJob"] * 2 + ["Job"] * 2 + [
        "ServiceAccount"
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_would_catch_a_misspelt_field() -> None:
    cronjob = next(obj for obj in render(FLEET_VALUES) if obj["kind"] == "CronJob")
    broken = copy.deepcopy(cronjob)
    broken["spec"]["concurrencyPolicyy"] = broken["spec"].pop("concurrencyPolicy")
    with pytest.raises(kubernetes_validate.ValidationError, match="concurrencyPolicyy"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


# --- the CronJobs and the hardened pod -------------------------------------------------------------------------


def test_one_cronjob_per_environment_with_its_schedule() -> None:
    cronjobs = by_kind(render(FLEET_VALUES), "CronJob")
    assert sorted(cronjobs) == ["audits-recsys-audit-production", "audits-recsys-audit-staging"]
    staging, production = cronjobs["audits-recsys-audit-staging"], cronjobs["audits-recsys-audit-production"]
    assert (staging["spec"]["schedule"], staging["spec"]["timeZone"]) == ("0 */6 * * *", "Etc/UTC")
    assert (production["spec"]["schedule"], production["spec"]["timeZone"]) == ("17 3 * * *", "Europe/Berlin")
    for cronjob in cronjobs.values():
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid" and cronjob["spec"]["suspend"] is False
        job = cronjob["spec"]["jobTemplate"]["spec"]
        assert (job["backoffLimit"], job["activeDeadlineSeconds"]) == (2, 3600)
        # A judged audit (1 fail, 3 incomplete, 4 partial) or bad params (2) is final; a failed upload (5) retries.
        rules = job["podFailurePolicy"]["rules"]
        assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [1, 2, 3, 4]
        assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


def test_the_pod_is_hardened() -> None:
    objects = render(FLEET_VALUES)
    assert by_kind(objects, "ServiceAccount")["audits-recsys-audit"]["automountServiceAccountToken"] is False
    specs = pod_specs(objects)
    assert len(specs) == 4
    for _, _, pod in specs:
        assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert isinstance(security["runAsUser"], int) and security["runAsUser"] == 10001
        (container,) = pod["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]} and context["privileged"] is False
        assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert set(mounts) == {"/etc/recsys-audit", "/work", "/tmp"}
        assert mounts["/etc/recsys-audit"]["readOnly"] is True
        assert "emptyDir" in volumes[mounts["/work"]["name"]] and "emptyDir" in volumes[mounts["/tmp"]["name"]]
        assert "configMap" in volumes[mounts["/etc/recsys-audit"]["name"]]


def test_post_deploy_hook_only_when_enabled() -> None:
    jobs = by_kind(render(FLEET_VALUES, revision=7), "Job")
    assert sorted(jobs) == ["audits-recsys-audit-production-deploy-7", "audits-recsys-audit-staging-deploy-7"]
    annotations = jobs["audits-recsys-audit-production-deploy-7"]["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert not by_kind(render({**FLEET_VALUES, "postDeployHook": {"enabled": False}}), "Job")


def test_the_trigger_and_the_deployed_version_reach_the_command() -> None:
    cronjobs = by_kind(render(FLEET_VALUES), "CronJob")
    production = cronjobs["audits-recsys-audit-production"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = production["containers"]
    assert container["args"] == [
        "run", "/etc/recsys-audit/params.yaml", "--out", "s3://audit-archive/recsys", "--work-dir", "/work/audits",
        "--trigger", "$(RECSYS_AUDIT_TRIGGER)", "--deployed-version", "$(RECSYS_AUDIT_DEPLOYED_VERSION)",
    ]  # fmt: skip
    env = {e["name"]: e for e in container["env"]}
    assert env["RECSYS_AUDIT_TRIGGER"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['batch.kubernetes.io/job-name']"
    )
    assert env["RECSYS_AUDIT_DEPLOYED_VERSION"]["value"] == "1.14.2" and env["AWS_REGION"]["value"] == "eu-west-1"


# --- secrets: references only ----------------------------------------------------------------------------------


def test_secret_references_become_secret_key_refs_and_no_value_is_rendered(tmp_path: Path) -> None:
    objects = render(FLEET_VALUES)
    configmaps = by_kind(objects, "ConfigMap")
    for workload, _, pod in pod_specs(objects):
        env_name = workload["metadata"]["labels"]["recsys-audit/environment"]
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        # The params the pod mounts load with the kit's own params loader; every env:NAME they reference is an
        # environment variable taken from a Secret by reference.
        data = configmaps[f"audits-recsys-audit-{env_name}"]["data"]
        folder = tmp_path / env_name
        folder.mkdir(exist_ok=True)
        for name, content in data.items():
            (folder / name).write_text(content, encoding="utf-8")
        params = load_params(folder / "params.yaml", resolve_secrets=False)
        assert params.environment.name == env_name
        references = {secret.target for _, secret in walk_secrets(params)}
        assert references, env_name
        for name in references:
            assert set(env[name]) == {"name", "valueFrom"} and set(env[name]["valueFrom"]) == {"secretKeyRef"}
        values = next(e for e in FLEET_VALUES["environments"] if e["name"] == env_name)
        assert {n for n, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})} == {
            s["name"] for s in values["secretEnv"]
        }
    # The Secrets themselves are created apart from the chart: their values never pass through it.
    canaries = ["canary-viewer-token-6f1c", "postgresql://auditor:canary-pw-91@db/recsys"]
    text = yaml.safe_dump_all(objects)
    assert not any(canary in text for canary in canaries)
    assert "kind: Secret" not in text


def test_a_secret_value_has_no_place_in_the_values(tmp_path: Path) -> None:
    inline = copy.deepcopy(FLEET_VALUES)
    inline["environments"][1]["secretEnv"][0]["value"] = "canary-viewer-token-6f1c"
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match="'value' not allowed"):
        chart.validate_schema(inline)
    # A secret written into the params themselves is refused by the kit when the pod starts (exit 2, no retry).
    literal = copy.deepcopy(FLEET_VALUES)
    literal["environments"][1]["params"]["auth"]["credentials"]["viewer"]["bearer"] = "canary-viewer-token-6f1c"
    data = by_kind(render(literal), "ConfigMap")["audits-recsys-audit-production"]["data"]["params.yaml"]
    (tmp_path / "params.yaml").write_text(data, encoding="utf-8")
    with pytest.raises(Exception, match="never the value itself"):
        load_params(tmp_path / "params.yaml", resolve_secrets=False)


# --- values.schema.json ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda v: v.__setitem__("schedul", v.pop("schedule", "0 3 * * *")), "'schedul' not allowed"),
        (lambda v: v["environments"][0].__setitem__("schedul", "0 3 * * *"), "'schedul' not allowed"),
        (lambda v: v["storage"].__setitem__("bucket", "x"), "'bucket' not allowed"),
        (lambda v: v["storage"].__setitem__("url", "https://audit-archive/recsys"), "/storage/url"),
        (lambda v: v.__setitem__("runAsUser", 0), "/runAsUser"),
        (lambda v: v.__setitem__("runAsUser", "10001"), "/runAsUser"),
        (lambda v: v["environments"][0].__setitem__("name", "Staging_EU"), "/environments/0/name"),
        (lambda v: v["environments"][0]["secretEnv"][0].__setitem__("name", "viewer-key"), "secretEnv/0/name"),
        (lambda v: v.__setitem__("resources", {"requests": {"memory": "lots"}}), "/resources/requests/memory"),
    ],
)
def test_values_schema_rejects_typos_and_unsafe_values(edit: Any, message: str) -> None:
    values = copy.deepcopy(FLEET_VALUES)
    edit(values)
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match=message):
        chart.render(values, name="audits")
    assert any(message.strip("'/") in m["error"] for m in helm.lint(CHART, values)["messages"] if m["severity"] == 3)


def test_a_fleet_needs_a_storage_url() -> None:
    values = copy.deepcopy(FLEET_VALUES)
    values["storage"]["url"] = ""
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match="/storage/url"):
        chart.render(values, name="audits")
