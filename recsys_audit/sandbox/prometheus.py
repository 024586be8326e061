"""Prometheus for a sandbox instance: config and alert rules from ``prometheus/`` templates, and the process.

The rule sets: ``complete`` (hardened), ``upstream`` (as-shipped) and ``missing`` (complete minus the stale-manifest
and p95-latency alerts). The Debian ``prometheus`` binary runs with its storage under the instance directory and a
short retention; when it is not installed the sandbox says so and runs without it.
"""

from __future__ import annotations

import shutil
import string
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import yaml

TEMPLATES = Path(__file__).parent / "prometheus"
JOB = "recsys-service"
RULES_FILE = "recsys-alerts.yml"
DROPPED_BY_MISSING_ALERTS = ("RecSysStaleArtifactManifest", "RecSysHighP95Latency")
AlertSet = Literal["complete", "upstream", "missing"]


class PrometheusError(Exception):
    pass


def rules_text(alert_set: AlertSet) -> str:
    if alert_set == "upstream":
        return (TEMPLATES / "as-shipped.rules.yml").read_text(encoding="utf-8")
    text = (TEMPLATES / "hardened.rules.yml").read_text(encoding="utf-8")
    if alert_set == "complete":
        return text
    document = yaml.safe_load(text)
    for group in document["groups"]:
        group["rules"] = [r for r in group["rules"] if r.get("alert") not in DROPPED_BY_MISSING_ALERTS]
    header = "# Alert rules without the stale-manifest and p95-latency alerts.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=120)


@dataclass(frozen=True)
class PrometheusFiles:
    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "prometheus.yml"

    @property
    def rules(self) -> Path:
        return self.directory / "rules" / RULES_FILE

    @property
    def data(self) -> Path:
        return self.directory / "data"


def write_prometheus_files(
    directory: Path, service_target: str, alert_set: AlertSet, environment: str
) -> PrometheusFiles:
    files = PrometheusFiles(directory)
    files.rules.parent.mkdir(parents=True, exist_ok=True)
    files.rules.write_text(rules_text(alert_set), encoding="utf-8")
    template = string.Template((TEMPLATES / "prometheus.yml.tmpl").read_text(encoding="utf-8"))
    files.config.write_text(
        template.substitute(SERVICE_TARGET=service_target, RULES_DIR=files.rules.parent, ENVIRONMENT=environment),
        encoding="utf-8",
    )
    return files


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def start_prometheus(files: PrometheusFiles, port: int, log_file: Path) -> subprocess.Popen[bytes]:
    binary = prometheus_binary()
    if binary is None:
        raise PrometheusError("the 'prometheus' binary is not installed (Debian package prometheus)")
    files.data.mkdir(parents=True, exist_ok=True)
    command = [
        binary,
        f"--config.file={files.config}",
        f"--storage.tsdb.path={files.data}",
        "--storage.tsdb.retention.time=6h",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]
    with log_file.open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_ready(url: str, process: subprocess.Popen[bytes] | None, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise PrometheusError(f"prometheus exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise PrometheusError(f"prometheus at {url} not ready after {timeout_s:.0f}s")


def wait_scraped(url: str, scrapes: int = 2, timeout_s: float = 20) -> int:
    """Wait until Prometheus holds ``scrapes`` successful scrapes of the service; returns how many it has."""
    query = f'sum_over_time(up{{job="{JOB}"}}[5m])'
    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline:
        try:
            result = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=2).json()["data"]["result"]
            seen = int(float(result[0]["value"][1])) if result else 0
        except (httpx.HTTPError, KeyError, ValueError, IndexError):
            seen = 0
        if seen >= scrapes:
            return seen
        time.sleep(0.25)
    raise PrometheusError(f"prometheus at {url} scraped the service {seen} time(s) in {timeout_s:.0f}s")


def check_rules(path: Path) -> str:
    """``promtool check rules``: the output on success, :class:`PrometheusError` otherwise."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise PrometheusError("the 'promtool' binary is not installed (Debian package prometheus)")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PrometheusError(f"promtool check rules {path}: {' '.join((result.stderr or result.stdout).split())}")
    return result.stdout
