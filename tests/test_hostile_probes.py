"""A hostile target cannot hurt the auditor, probe by probe: every HTTP read stops at its cap (counted in bytes from
the socket and from the decompressor, not RSS) and at its deadline, carries the audit's marks, and a manifest never
steers a read outside the locations the params name.

Real servers on loopback (tests/hostile_servers.py); no audit runs here (those are in test_hostile_target.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile_servers import HostileServer, Mode, RecordingServer, wait_for_reader

from recsys_audit import __version__
from recsys_audit.params import Params
from recsys_audit.probes import ProbeError, http
from recsys_audit.probes.manifest import ObjectStore, artifact_scope, uri_scope, validate_manifest, verify_artifact
from recsys_audit.probes.metrics import PrometheusClient, scrape
from recsys_audit.probes.service import ServiceClient
from recsys_audit.probes.tokens import fetch_jwks

TIMEOUT_S = 2.0


def service_params(base_url: str, timeout_s: float = TIMEOUT_S) -> Params:
    return Params.model_validate(
        {
            "environment": {"name": "hostile"},
            "target": {"base_url": base_url, "timeout_s": timeout_s},
            "tenants": [{"id": "demo", "surfaces": ["home"]}],
        }
    )


def _service(url: str, timeout_s: float) -> Any:
    client = ServiceClient(service_params(url, timeout_s))
    try:
        return client.get("/v1/license")
    finally:
        client.close()


def _prometheus(url: str, timeout_s: float) -> Any:
    client = PrometheusClient(url, timeout_s)
    try:
        return client.query("up")
    finally:
        client.close()


def _manifest(url: str, timeout_s: float) -> Any:
    store = ObjectStore(timeout_s=timeout_s)
    try:
        return store.fetch(url + "/registry/current/demo/home/manifest.json")
    finally:
        store.close()


# probe -> (how it reads from a server URL, its cap)
PROBES: dict[str, tuple[Callable[[str, float], Any], http.Cap]] = {
    "service API": (_service, http.API_BODY),
    "/metrics": (lambda url, timeout_s: scrape(url + "/metrics", timeout_s), http.METRICS),
    "Prometheus API": (_prometheus, http.PROMETHEUS),
    "manifest over http": (_manifest, http.MANIFEST),
    "JWKS": (lambda url, timeout_s: fetch_jwks(url + "/.well-known/jwks.json", True, timeout_s), http.JWKS),
}
OVERSIZED: tuple[Mode, ...] = ("huge", "endless", "gzip-bomb")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, HostileServer]]:
    started = {mode: HostileServer(mode).__enter__() for mode in (*OVERSIZED, "drip")}
    yield started
    for server in started.values():
        server.__exit__(None, None, None)


@pytest.mark.parametrize("mode", OVERSIZED)
@pytest.mark.parametrize("probe", list(PROBES))
def test_every_probe_stops_at_its_cap_counting_socket_and_decompressed_bytes(
    servers: dict[str, HostileServer], probe: str, mode: Mode
) -> None:
    read, cap = PROBES[probe]
    started = time.monotonic()
    with pytest.raises(http.CapExceeded) as raised:
        read(servers[mode].url, TIMEOUT_S)
    message = str(raised.value)
    assert f"{cap.what} over {cap}" in message, message
    assert ("after decompression" in message) == (mode == "gzip-bomb"), message
    exceeded = raised.value
    slack = http.HEAD_ALLOWANCE + 2 * 1024  # headers and chunk framing; one last short read
    assert exceeded.socket_bytes <= cap.max_bytes + slack, (exceeded.socket_bytes, cap.max_bytes)
    if mode == "gzip-bomb":  # the decompressor is never asked for more than the cap plus one byte
        assert exceeded.decoded_bytes == cap.max_bytes + 1, exceeded.decoded_bytes
        assert exceeded.socket_bytes < 2 * 1024 * 1024, "a 1 MiB bomb is never read further than its cap needs"
    elif mode == "huge":  # announced too large: refused from the Content-Length, before the body
        assert exceeded.decoded_bytes == 0 and "Content-Length 536,870,912" in message, message
    else:
        assert cap.max_bytes < exceeded.decoded_bytes <= cap.max_bytes + slack
    assert time.monotonic() - started < TIMEOUT_S, "a cap trips long before the deadline"


@pytest.mark.parametrize("probe", list(PROBES))
def test_a_drip_is_cut_at_the_overall_deadline(servers: dict[str, HostileServer], probe: str) -> None:
    read, _ = PROBES[probe]
    started = time.monotonic()
    with pytest.raises(ProbeError, match=r"no complete answer within 1 s"):
        read(servers["drip"].url, 1.0)
    assert time.monotonic() - started < 1.6, "status line and headers dripping at 1 byte/s: cut at 1 s, not per read"


def test_metrics_parsing_is_bounded_by_lines_before_parsing() -> None:
    with HostileServer("giant-metrics", metrics_lines=60_000) as server:
        started = time.process_time()
        with pytest.raises(ProbeError, match=r"/metrics over 50,000 lines \(60,001\): not parsed"):
            scrape(server.url + "/metrics", TIMEOUT_S)
    assert time.process_time() - started < 1.0


def test_every_request_carries_the_audit_user_agent_and_a_marked_request_id() -> None:
    with RecordingServer() as server:
        for read, _ in PROBES.values():
            with contextlib.suppress(ProbeError):  # "{}" is no exposition and no key set: only the request matters
                read(server.url, TIMEOUT_S)
        seen = server.requests
    assert len(seen) == len(PROBES)
    ids = [request.headers.get("x-request-id", "") for request in seen]
    assert all(request.headers.get("user-agent") == f"recsys-audit/{__version__}" for request in seen), seen
    assert all(value.startswith(http.REQUEST_ID_PREFIX) and len(value) == 45 for value in ids), ids
    assert len(set(ids)) == len(ids), "a fresh id per request"
    assert all(request.headers.get("accept-encoding") == "gzip, deflate" for request in seen)


# --- manifests do not steer reads -------------------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, list[float]]]:
    """A local file the auditor must never open: a FIFO whose reader would be seen by a poller (and would block)."""
    path = tmp_path / "outside" / "secret.json"
    path.parent.mkdir()
    os.mkfifo(path)
    opened: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=wait_for_reader, args=(str(path), stop, opened), daemon=True)
    poller.start()
    yield path, opened
    stop.set()
    poller.join(timeout=5)


def test_http_manifest_naming_a_local_file_or_another_host_is_a_problem_and_nothing_is_read(
    fifo: tuple[Path, list[float]],
) -> None:
    local, opened = fifo
    with RecordingServer() as foreign:
        artifacts = {
            "popularity": local.as_uri(),
            "cooc": f"{foreign.url}/demo/home/cooc/{'a' * 64}.json",
            "implicit": "s3://another-bucket/demo/home/implicit/x.json",
        }
        with HostileServer("manifest", manifest_artifacts=artifacts) as target:
            template = target.url + "/registry/current/{tenant}/{surface}/manifest.json"
            scope = artifact_scope(template, None, Path.cwd())
            store = ObjectStore(scopes=[uri_scope(template, Path.cwd()), scope], artifact_scope=scope)
            body = store.fetch(template.format(tenant="demo", surface="home")).body
            check = validate_manifest(body, "demo", "home", store)
            rows = [verify_artifact(store, kind, uri, "demo", "home") for kind, uri in artifacts.items()]
            with pytest.raises(ProbeError, match="outside the manifest and artifact locations"):
                store.fetch(artifacts["cooc"])
            store.close()
            time.sleep(0.1)  # let the poller take one more look
        assert foreign.requests == [], "no request to the host the manifest named"
    assert opened == [], "the local file the manifest named was opened"
    assert sorted(p.split(":")[0] for p in check.problems) == ["current.cooc", "current.implicit", "current.popularity"]
    assert all(f"outside the artifact location the params allow ({target.url}/)" in p for p in check.problems)
    assert [(r.exists, r.hash_verified) for r in rows] == [(False, None)] * 3
    assert all(r.problem and r.problem.startswith("not read: outside") for r in rows)


def test_file_manifest_artifacts_stay_under_the_registry_folder(tmp_path: Path, fifo: tuple[Path, list[float]]) -> None:
    local, opened = fifo
    registry = tmp_path / "registry"
    (registry / "current" / "demo" / "home").mkdir(parents=True)
    (registry / "blobs").mkdir()
    (registry / "blobs" / "escape.json").symlink_to(local)  # a link out of the registry is outside too
    template = f"file://{registry}/current/{{tenant}}/{{surface}}/manifest.json"
    scope = artifact_scope(template, None, tmp_path)
    store = ObjectStore(file_root=tmp_path, scopes=[uri_scope(template, tmp_path), scope], artifact_scope=scope)
    inside = (registry / "blobs" / "popularity.json").as_uri()
    outside = {
        "direct": local.as_uri(),
        "dot-dot": f"file://{registry}/blobs/../../outside/secret.json",
        "symlink": (registry / "blobs" / "escape.json").as_uri(),
        "http": "http://127.0.0.1:9/x.json",
    }
    assert scope.contains(inside, tmp_path)
    assert {name: scope.contains(uri, tmp_path) for name, uri in outside.items()} == dict.fromkeys(outside, False)
    for uri in outside.values():
        assert verify_artifact(store, "popularity", uri, "demo", "home").exists is False
    time.sleep(0.1)
    assert opened == []


def test_a_non_file_template_never_allows_file_artifacts(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="file:// artifacts are allowed only with a file:// template"):
        artifact_scope("s3://bucket/registry/current/{tenant}/{surface}/manifest.json", "file:///srv/blobs", tmp_path)
    template = "s3://bucket/registry/current/{tenant}/{surface}/manifest.json"
    manifests = uri_scope(template, tmp_path)
    assert manifests.contains("s3://bucket/registry/current/demo/home/manifest.json", tmp_path)
    assert not manifests.contains("s3://bucket/registry/other/demo/home/manifest.json", tmp_path)
    scope = artifact_scope(template, None, tmp_path)
    assert scope.contains("s3://bucket/demo/home/popularity/x.json", tmp_path)
    assert not scope.contains("s3://other/demo/home/popularity/x.json", tmp_path)
    assert not scope.contains("file:///etc/passwd", tmp_path)
    web = artifact_scope("https://cdn.example/registry/current/{tenant}/{surface}/manifest.json", None, tmp_path)
    assert web.contains("https://cdn.example/blobs/x.json", tmp_path)
    assert not web.contains("https://cdn.example.evil/blobs/x.json", tmp_path)
    assert not web.contains("http://cdn.example/blobs/x.json", tmp_path)
    rooted = artifact_scope("https://cdn.example/m/{tenant}.json", "https://cdn.example/blobs/", tmp_path)
    assert rooted.contains("https://cdn.example/blobs/a/b.json", tmp_path)
    assert not rooted.contains("https://cdn.example/blobs/../admin/x.json", tmp_path)
    assert json.dumps(str(rooted)) == '"https://cdn.example/blobs/"'


LOAD_TEST_CUTS = [
    # cut by the watchdog (how the cut surfaces depends on timing) or by the socket timeout itself
    ("drip", r"RemoteDisconnected|IncompleteRead|BadStatusLine|ConnectionResetError|BrokenPipeError|TimeoutError"),
    ("huge", r"body over 8 MiB"),
    ("endless", r"body over 8 MiB"),
]


@pytest.mark.parametrize(("mode", "reason"), LOAD_TEST_CUTS)
def test_the_load_test_sender_is_bounded_in_bytes_and_time(
    servers: dict[str, HostileServer], mode: Mode, reason: str
) -> None:
    from recsys_audit.probes.loadtest import recommend_sender

    client = ServiceClient(service_params(servers[mode].url, 1.0))
    sender = recommend_sender(client, "demo", "home", role="anonymous")
    started = time.monotonic()
    with pytest.raises(ProbeError, match=reason):
        sender(0)
    assert time.monotonic() - started < 2.5, "the drip would take about 100 s"
    sender.close()
    client.close()
