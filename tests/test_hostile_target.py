"""A hostile target, end to end: for each hostile mode a real ``recsys-audit run`` (restricted to the sections the
mode hits) completes, renders its report, exits 3 (or 1 for a real failure), and the affected checks say what was
exceeded; echoed credentials reach no file, log or console; a manifest naming a local file or another host causes
no read of either.

The probe-level caps, deadlines and byte counts are in test_hostile_probes.py; this file keeps one CLI run per mode.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from fault_servers import CliRun, run_cli_audit, write_params_variant
from hostile_servers import HostileServer, Mode, RecordingServer, wait_for_reader

if TYPE_CHECKING:
    from recsys_audit.sandbox.harness import SandboxInstance

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Scenario:
    sections: tuple[int, ...]
    exit_code: int
    expect: dict[str, tuple[str, str]]  # check id -> (status, regex its summary must match)
    timeout_s: float = 3.0
    service: bool = True  # base_url and metrics_url point at the hostile server (else metrics_url only)


SERVICE_CHECKS = ("serving.live-recommend", "obs.health-endpoints")
SCENARIOS: dict[Mode, Scenario] = {
    "huge": Scenario(
        (0, 5),
        3,
        {
            **dict.fromkeys(SERVICE_CHECKS, ("error", r"body over 8 MiB \(Content-Length 536,870,912\)")),
            "obs.metrics-series": ("error", r"/v1/recommend: body over 8 MiB"),  # its warm-up recommend
        },
    ),
    "endless": Scenario(
        (0, 5),
        3,
        {
            **dict.fromkeys(SERVICE_CHECKS, ("error", r"body over 8 MiB$")),
            "obs.metrics-series": ("error", r"/v1/recommend: body over 8 MiB$"),
        },
    ),
    "gzip-bomb": Scenario(
        (0, 5),
        3,
        {
            **dict.fromkeys(SERVICE_CHECKS, ("error", r"body over 8 MiB after decompression")),
            "obs.metrics-series": ("error", r"/v1/recommend: body over 8 MiB after decompression"),
        },
    ),
    "giant-metrics": Scenario(
        (5,),
        3,
        {"obs.metrics-series": ("error", r"/metrics over 4 MiB$"), "obs.health-endpoints": ("pass", r"")},
        service=False,
    ),
    "drip": Scenario(
        (0, 5),
        3,
        {
            **dict.fromkeys(SERVICE_CHECKS, ("error", r"no complete answer within 1 s")),
            "obs.metrics-series": ("error", r"no complete answer within 1 s"),
        },
        timeout_s=1.0,
    ),
}


@dataclass
class HostileRun:
    run: CliRun
    server: HostileServer
    canaries: dict[str, str] = field(default_factory=dict)
    foreign: RecordingServer | None = None
    opened: list[float] = field(default_factory=list)


def _point_at(server: HostileServer, scenario: Scenario) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        if scenario.service:
            doc["target"]["base_url"] = server.url
        doc["target"]["timeout_s"] = scenario.timeout_s
        doc["metrics_url"] = server.url + "/metrics"

    return change


@pytest.fixture(scope="module")
def hostile_run(
    sandbox: Callable[[str], SandboxInstance], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[Mode], HostileRun]]:
    """Factory: one CLI audit per hostile mode (run once, on first use)."""
    instance = sandbox("hardened")
    runs: dict[Mode, HostileRun] = {}

    def get(mode: Mode) -> HostileRun:
        if mode not in runs:
            scenario = SCENARIOS[mode]
            with HostileServer(mode) as server:
                params = write_params_variant(instance.params_path, f"hostile-{mode}", _point_at(server, scenario))
                try:
                    out = tmp_path_factory.mktemp(f"hostile-{mode}")
                    run = run_cli_audit(params, out, sections=list(scenario.sections), timeout_s=120)
                finally:
                    params.unlink(missing_ok=True)
            runs[mode] = HostileRun(run, server)
        return runs[mode]

    yield get


@pytest.mark.parametrize("mode", list(SCENARIOS))
def test_a_hostile_mode_gives_a_complete_report_and_names_what_was_exceeded(
    hostile_run: Callable[[Mode], HostileRun], mode: Mode
) -> None:
    scenario = SCENARIOS[mode]
    result = hostile_run(mode).run
    assert result.exit_code == scenario.exit_code, result.stderr
    assert result.run_dir is not None and (result.run_dir / "report.html").is_file(), result.stderr
    assert {nb["status"] for nb in result.notebooks.values()} == {"ok"}, result.notebooks
    assert result.seconds < 90, "no probe waits for the notebook deadline"
    for check, (status, pattern) in scenario.expect.items():
        finding = result.findings[check]
        assert (finding["status"], bool(re.search(pattern, finding["summary"]))) == (status, True), (
            check,
            finding["summary"],
        )


# --- credentials echoed back -----------------------------------------------------------------------------------


def canary(label: str) -> str:
    return f"{label}'&<>\"%{secrets.token_hex(12)}"


@pytest.fixture(scope="module")
def echo_run(sandbox: Callable[[str], SandboxInstance], tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    instance = sandbox("hardened")
    canaries = {
        "viewer bearer": canary("viewer"),
        "admin bearer": canary("admin"),
        "operator api key": canary("apikey"),
        "DSN password": f"pw%zz{secrets.token_hex(12)}",  # a raw '%' that libpq quotes back
    }
    env = {
        "RA_ECHO_VIEWER": canaries["viewer bearer"],
        "RA_ECHO_ADMIN": canaries["admin bearer"],
        "RA_ECHO_OPERATOR": canaries["operator api key"],
        "RA_ECHO_DSN": f"postgresql://recsys_auditor:{canaries['DSN password']}@127.0.0.1:5432/recsys",
    }
    with HostileServer("echo") as server:

        def change(doc: dict[str, Any]) -> None:
            _point_at(server, Scenario((), 3, {}))(doc)
            credentials = doc["auth"]["credentials"]
            credentials["viewer"] = {"bearer": "env:RA_ECHO_VIEWER"}
            credentials["admin"] = {"bearer": "env:RA_ECHO_ADMIN"}
            credentials["operator"] = {"api_key": "env:RA_ECHO_OPERATOR"}
            doc["database"]["dsn"] = "env:RA_ECHO_DSN"

        params = write_params_variant(instance.params_path, "hostile-echo", change)
        try:
            out = tmp_path_factory.mktemp("hostile-echo")
            run = run_cli_audit(params, out, sections=[0, 1, 4, 5, 7], timeout_s=120, env=env)
        finally:
            params.unlink(missing_ok=True)
    return HostileRun(run, server, canaries)


def leaked_forms(value: str) -> list[str]:
    """What must not appear anywhere: the random part (it survives escaping, JSON, percent-encoding and repr
    unchanged) and the value's base64 in both alphabets."""
    core = re.findall(r"[0-9a-f]{24}", value)[0]
    raw = value.encode()
    return [core, base64.b64encode(raw).decode()[:16], base64.urlsafe_b64encode(raw).decode()[:16]]


def test_echoed_credentials_reach_no_file_log_or_console(echo_run: HostileRun) -> None:
    run = echo_run.run
    assert run.exit_code in {1, 3}, run.stderr
    assert run.run_dir is not None and (run.run_dir / "report.html").is_file(), run.stderr
    echoed = [r for r in echo_run.server.requests if "authorization" in r.headers or "x-api-key" in r.headers]
    assert len(echoed) >= 10, "the target must have had credentials to echo"
    files = [path for path in run.run_dir.rglob("*") if path.is_file()]
    leaks = [
        f"{label} ({form}) in {where}"
        for label, value in echo_run.canaries.items()
        for form in leaked_forms(value)
        for where, content in [
            *((str(path.relative_to(run.run_dir)), path.read_bytes().decode("utf-8", "replace")) for path in files),
            ("stdout", run.stdout),
            ("stderr", run.stderr),
        ]
        if form in content
    ]
    assert not leaks, leaks


def test_library_errors_that_quote_credentials_are_summarized(echo_run: HostileRun) -> None:
    findings = echo_run.run.findings
    database = [f for f in findings.values() if f["section"] == 4 and f["status"] == "error"]
    assert database, "the DSN with a raw '%' must fail"
    assert all("the DSN could not be parsed" in f["summary"] for f in database[:3]), [f["summary"] for f in database]
    ready = findings["auth.readyz-reachable"]  # /readyz answers a header line quoting the credential
    assert ready["status"] == "error", ready["summary"]
    assert ready["summary"].endswith("/readyz: the server broke the HTTP protocol (closed the connection or sent a "
                                     "malformed answer)"), ready["summary"]  # fmt: skip


# --- a manifest names a local file and another host ---------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest_run(
    sandbox: Callable[[str], SandboxInstance], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileRun]:
    import os

    instance = sandbox("hardened")
    local = tmp_path_factory.mktemp("auditor-files") / "private.json"
    os.mkfifo(local)
    opened: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=wait_for_reader, args=(str(local), stop, opened), daemon=True)
    poller.start()
    with RecordingServer() as foreign:
        artifacts = {"popularity": local.as_uri(), "cooc": f"{foreign.url}/demo/home/cooc/{'b' * 64}.json"}
        with HostileServer("manifest", manifest_artifacts=artifacts) as server:

            def change(doc: dict[str, Any]) -> None:
                doc["manifests"]["template"] = server.url + "/registry/current/{tenant}/{surface}/manifest.json"

            params = write_params_variant(instance.params_path, "hostile-manifest", change)
            try:
                run = run_cli_audit(params, tmp_path_factory.mktemp("hostile-manifest"), sections=[3], timeout_s=120)
            finally:
                params.unlink(missing_ok=True)
    stop.set()
    poller.join(timeout=5)
    yield HostileRun(run, server, foreign=foreign, opened=opened)


def test_a_manifest_naming_a_local_file_or_another_host_fails_and_reads_neither(manifest_run: HostileRun) -> None:
    run = manifest_run.run
    assert run.exit_code == 1, run.stderr
    assert run.run_dir is not None and (run.run_dir / "report.html").is_file()
    valid = run.findings["pipelines.manifest-valid"]
    assert valid["status"] == "fail" and "2 invalid of 2 manifests" in valid["summary"], valid["summary"]
    problems = " ".join(row["problems"] for row in valid["evidence"]["manifests"])
    assert problems.count("is outside the artifact location the params allow") == 4, problems
    verified = run.findings["pipelines.artifacts-verified"]
    assert verified["status"] == "fail", verified["summary"]
    assert {row["problem"].split(":")[0] for row in verified["evidence"]["artifacts"]} == {"not read"}
    assert manifest_run.foreign is not None and manifest_run.foreign.requests == [], "no request to the other host"
    assert manifest_run.opened == [], "the local file the manifest named was opened"
    asked = {request.path for request in manifest_run.server.requests}
    assert asked == {"/registry/current/demo/home/manifest.json", "/registry/current/demo/pdp/manifest.json"}, asked
