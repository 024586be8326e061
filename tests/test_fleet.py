"""A fleet audited the way the chart runs it: each CronJob's exact container command — the image's entrypoint and
environment (Containerfile) with the chart's args and env (helm template) — run against a real target (sandbox) and
a real S3 API on loopback, as a pod would: env vars resolved as the kubelet does (downward API, secretKeyRef,
``$(VAR)`` in args), the ConfigMap and emptyDir mount points as folders of the test.

Two environments (two sandboxes) go into one bucket; a retried Job stores no second run; the archive shows a trend
per environment; a signed run in S3 verifies and stops verifying when one of its objects is replaced."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from run_fixtures import REVIEWER, make_signer, write_allowed_signers
from s3_fixtures import ACCESS_KEY, SECRET_KEY, keys, new_bucket, s3, s3_endpoint  # noqa: F401  (fixtures)
from test_chart import by_kind, render

from recsys_audit.cli import main
from recsys_audit.params import load_params, walk_secrets

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CONTAINER_PATHS = ("/etc/recsys-audit", "/work", "/tmp", "/opt/recsys-audit/notebooks")

pytestmark = pytest.mark.slow


# --- the image and the pod, as the container runtime and the kubelet would set them up --------------------------


def containerfile() -> tuple[list[str], dict[str, str]]:
    """ENTRYPOINT and ENV of the final stage of the Containerfile."""
    text = (ROOT / "Containerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    final = text[text.rindex("\nFROM ") :]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", final, re.M).group(1))
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", final, re.M):
        env.update(part.split("=", 1) for part in shlex.split(line))
    return entrypoint, env


def sandbox_params(params_path: Path, secret_name: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
    """A sandbox's params as an operator would put them in the chart's values: paths absolute (the target's files
    stand in for what a pod would mount), every ``file:`` secret turned into ``env:NAME`` taken from a Secret.
    Returns (params, secretEnv, the Secret's data)."""
    base = params_path.parent
    data = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    assert "include" not in data
    refs = {secret.ref: secret for _, secret in walk_secrets(load_params(params_path, resolve_secrets=False))}
    secret_env: list[dict[str, Any]] = []
    secret_data: dict[str, str] = {}

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if not isinstance(value, str):
            return value
        if value in refs:
            key = re.sub(r"[^a-z0-9]+", "-", refs[value].target.lower()).strip("-")
            name = "RECSYS_AUDIT_" + key.upper().replace("-", "_")
            if key not in secret_data:
                secret_data[key] = (base / refs[value].target).read_text(encoding="utf-8").strip()
                secret_env.append({"name": name, "secretKeyRef": {"name": secret_name, "key": key}})
            return f"env:{name}"
        if value.startswith("file://") and (base / value[7:].split("{")[0]).exists():
            return "file://" + str((base / value[7:]).resolve())
        if "://" not in value and not value.startswith("/") and (base / value).exists():
            return str((base / value).resolve())
        return value

    return convert(data), secret_env, secret_data


class Pod:
    """One Job's pod of a rendered CronJob, run as a process."""

    def __init__(self, objects: list[dict[str, Any]], cronjob: str, job_name: str, secrets: dict[str, dict[str, str]],
                 folder: Path) -> None:  # fmt: skip
        spec = by_kind(objects, "CronJob")[cronjob]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (self.container,) = spec["containers"]
        self.folder = folder
        mounts = {m["name"]: m["mountPath"] for m in self.container["volumeMounts"]}
        self.paths = {path: str(folder / path.strip("/").replace("/", "_")) for path in mounts.values()}
        self.paths["/opt/recsys-audit/notebooks"] = str(ROOT / "notebooks")
        assert set(self.paths) == set(CONTAINER_PATHS)
        for path in self.paths.values():
            Path(path).mkdir(parents=True, exist_ok=True)
        volumes = {v["name"]: v for v in spec["volumes"]}
        configmap = volumes[next(n for n, p in mounts.items() if p == "/etc/recsys-audit")]["configMap"]["name"]
        for name, content in by_kind(objects, "ConfigMap")[configmap]["data"].items():
            Path(self.paths["/etc/recsys-audit"], name).write_text(content, encoding="utf-8")
        entrypoint, image_env = containerfile()
        assert entrypoint == ["recsys-audit"]
        self.env = {name: self.rebase(value) for name, value in image_env.items()}
        for item in self.container["env"]:
            if "value" in item:
                self.env[item["name"]] = self.rebase(item["value"])
                continue
            source = item["valueFrom"]
            if "fieldRef" in source:
                assert source["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
                self.env[item["name"]] = job_name
            else:
                ref = source["secretKeyRef"]
                self.env[item["name"]] = secrets[ref["name"]][ref["key"]]
        args = [re.sub(r"\$\((\w+)\)", lambda m: self.env[m.group(1)], arg) for arg in self.container["args"]]
        self.command = [str(VENV_BIN / entrypoint[0]), *(self.rebase(arg) for arg in args)]

    def rebase(self, value: str) -> str:
        for path in sorted(self.paths, key=len, reverse=True):
            if value == path or value.startswith(path + "/"):
                return self.paths[path] + value[len(path) :]
        return value

    def run(self) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "PATH": os.environ["PATH"]}
        return subprocess.run(self.command, env=env, cwd=self.paths["/work"], capture_output=True, text=True,
                              timeout=600, check=False)  # fmt: skip


# --- the fleet -------------------------------------------------------------------------------------------------


@pytest.fixture
def fleet(
    sandbox: Callable[[str], Any],
    s3_endpoint: str,  # noqa: F811
    new_bucket: Callable[..., str],  # noqa: F811
    tmp_path: Path,
) -> dict[str, Any]:
    bucket = new_bucket(locked=True)
    secrets = {"archive-writer": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}}
    environments = []
    for env, variant in (("staging", "hardened"), ("production", "code-defects")):
        params, secret_env, data = sandbox_params(sandbox(variant).params_path, f"recsys-audit-{env}")
        secrets[f"recsys-audit-{env}"] = data
        environments.append({"name": env, "params": params, "secretEnv": secret_env})
    environments[0]["sections"] = [0]  # a few sections keep the test short: partial runs
    environments[1].update(sections=[1], deployedVersion="1.14.2")
    values = {
        "image": {"repository": "registry.example.com/recsys-audit"},
        "storage": {
            "url": f"s3://{bucket}/fleet",
            "endpoint": s3_endpoint,
            "region": "us-east-1",
            "credentialsSecret": "archive-writer",
        },
        "environments": environments,
    }
    return {"bucket": bucket, "objects": render(values), "secrets": secrets, "url": f"s3://{bucket}/fleet"}


def test_two_environments_audited_by_the_chart_command_into_one_bucket(
    fleet: dict[str, Any],
    s3: Any,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    objects, secrets, url, bucket = fleet["objects"], fleet["secrets"], fleet["url"], fleet["bucket"]

    pods = Path(tempfile.mkdtemp(prefix="pods-"))  # short paths: kernels' sockets live under the pod's /tmp

    def job(cronjob: str, name: str) -> subprocess.CompletedProcess[str]:
        return Pod(objects, cronjob, name, secrets, pods / name[-12:]).run()

    staging = job("audits-recsys-audit-staging", "audits-recsys-audit-staging-29400000")
    production = job("audits-recsys-audit-production", "audits-recsys-audit-production-29400000")
    # staging: section 0 of a hardened target, partial (exit 4); production: section 1 of a target whose admin API
    # crosses tenants, fail (exit 1).
    assert (staging.returncode, production.returncode) == (4, 1), staging.stderr + production.stderr
    for result, env in ((staging, "staging"), (production, "production")):
        location = result.stdout.strip().splitlines()[-1]
        assert re.fullmatch(rf"{re.escape(url)}/{env}/\d{{8}}T\d{{6}}Z", location), result.stdout
        assert f"{location.removeprefix(f's3://{bucket}/')}/manifest.json" in keys(s3, bucket)
    manifest_key = staging.stdout.strip().removeprefix(f"s3://{bucket}/") + "/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    assert manifest["trigger"] == "audits-recsys-audit-staging-29400000" and "deployed_version" not in manifest
    production_run = production.stdout.strip().rsplit("/", 1)[-1]
    production_manifest = f"fleet/production/{production_run}/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=production_manifest)["Body"].read())
    assert manifest["deployed_version"] == "1.14.2"
    # No secret value is in anything stored.
    stored = b"".join(s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys(s3, bucket))
    for data in secrets.values():
        for value in data.values():
            assert value.encode() not in stored

    # The same Job retried (same name, so the same trigger): not audited again, no second run, same answer.
    retry = job("audits-recsys-audit-staging", "audits-recsys-audit-staging-29400000")
    assert retry.returncode == 4 and "is stored already as" in retry.stderr
    assert retry.stdout.strip() == staging.stdout.strip()
    # A post-deploy audit: `kubectl create job --from=cronjob/…` gives the Job (and so the trigger) a new name.
    later = job("audits-recsys-audit-staging", "audits-recsys-audit-staging-deploy-1")
    assert later.returncode == 4 and later.stdout.strip() != staging.stdout.strip()
    assert len({k.split("/")[2] for k in keys(s3, bucket, "fleet/staging/") if k.endswith("/manifest.json")}) == 2

    # The archive: an index in the bucket with a trend per environment.
    rita = make_signer(tmp_path / "keys")
    trusted = write_allowed_signers(tmp_path / "allowed_signers", rita)
    capsys.readouterr()
    assert main(["archive", url, "--allowed-signers", str(trusted)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {url}/index.html: 3 audits, 0 failing verification"
    page = s3.get_object(Bucket=bucket, Key="fleet/index.html")["Body"].read().decode()
    # staging has two runs: a trend chart; production one: a sentence saying a trend needs two
    assert page.count('<figure class="ra-trend"') == 1 and page.count("class='ra-trend-run'") == 3
    assert "a trend needs two" in page.split("id='env-production'", 1)[1].split("<section", 1)[0]

    # Sign the production run where it is; verify passes, and fails once one object is replaced.
    run_url = production.stdout.strip()
    assert main(["sign", run_url, "--reviewer", REVIEWER, "--role", "SRE lead", "--decision", "reject",
                 "--key", str(rita.key), "--allowed-signers", str(trusted)]) == 0  # fmt: skip
    assert main(["verify", run_url, "--allowed-signers", str(trusted)]) == 0
    report_key = production_manifest.replace("manifest.json", "report.html")
    report = s3.get_object(Bucket=bucket, Key=report_key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=report_key, Body=report.replace(b"fail", b"pass"), ChecksumAlgorithm="SHA256")
    capsys.readouterr()
    assert main(["verify", run_url, "--allowed-signers", str(trusted)]) == 1
    assert "report.html: differs from manifest.json (SHA-256)" in capsys.readouterr().out
    shutil.rmtree(pods, ignore_errors=True)
