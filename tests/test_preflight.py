"""The connectivity preflight on real sockets: an endpoint that answers anything is reachable; a closed port, a
server that never answers and a database that is not there are each named once, in the kit's words; and a sandbox
port left in TIME_WAIT by a stopped instance is free for the next one."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from fault_servers import HangingServer

from recsys_audit.params import Params, load_params
from recsys_audit.preflight import Reachability, check_all, root_cause
from recsys_audit.sandbox.harness import free_port, port_in_use


@contextlib.contextmanager
def unavailable_server() -> Iterator[str]:
    """Answers every request 503 and records the paths asked for."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.paths.append(self.path)  # type: ignore[attr-defined]
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.paths  # type: ignore[misc]
    finally:
        server.shutdown()
        server.server_close()


def params(folder: Path, base_url: str, prometheus: str | None = None, dsn: str | None = None) -> Params:
    document: dict[str, object] = {
        "environment": {"name": "preflight"},
        "target": {"base_url": base_url, "timeout_s": 1},
        "tenants": [{"id": "acme", "surfaces": ["home"]}],
    }
    if prometheus:
        document["prometheus"] = {"url": prometheus}
    if dsn:
        (folder / "db.dsn").write_text(dsn, encoding="utf-8")
        document["database"] = {"dsn": "file:db.dsn"}
    path = folder / f"preflight-{len(list(folder.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return load_params(path)


def test_an_answer_of_any_status_means_reachable(tmp_path: Path) -> None:
    with unavailable_server() as (url, paths):
        [found] = check_all([params(tmp_path, url, prometheus=url)])
    assert found == [Reachability("target", url), Reachability("prometheus", url)]
    assert sorted(paths) == ["/-/ready", "/livez"]  # one harmless read each


def test_each_unreachable_endpoint_is_named_once(tmp_path: Path) -> None:
    closed, db_port = free_port(), free_port()
    with HangingServer() as hanging:
        started = time.monotonic()
        first, second = check_all(
            [
                params(tmp_path, f"http://127.0.0.1:{closed}", dsn=f"postgresql://auditor@127.0.0.1:{db_port}/x"),
                params(tmp_path, hanging.url, prometheus=f"http://127.0.0.1:{closed}"),
            ]
        )
        seconds = time.monotonic() - started
    assert first == [
        Reachability("target", f"http://127.0.0.1:{closed}", f"connection refused at http://127.0.0.1:{closed}"),
        Reachability("database", "database", f"no server at 127.0.0.1 port {db_port} (connection refused or not "
                     "running)"),
    ]  # fmt: skip
    assert second == [
        Reachability("target", hanging.url, f"no complete answer within 1 s at {hanging.url}"),
        Reachability("prometheus", f"http://127.0.0.1:{closed}", f"connection refused at http://127.0.0.1:{closed}"),
    ]
    assert seconds < 5, "the endpoints are probed at once, each within the target's timeout"
    rows = [r.to_dict() for r in first]
    assert root_cause(rows, 12) == (
        f"target unreachable: connection refused at http://127.0.0.1:{closed}; database unreachable: no server at "
        f"127.0.0.1 port {db_port} (connection refused or not running); 12 checks not evaluated"
    )
    assert root_cause([Reachability("target", "http://x").to_dict()], 0) == ""


def _time_wait_on(port: int) -> bool:
    """Whether a TCP socket on 127.0.0.1:port is in TIME_WAIT (state 06 in /proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]
    return any(row.split()[1] == local and row.split()[3] == "06" for row in rows)


def test_a_port_in_time_wait_is_free_for_the_next_sandbox() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # as every server the sandbox starts binds (uvicorn, http.server, PostgreSQL, Prometheus); its connections
    # inherit the option, and Linux lets a port be bound again over TIME_WAIT only when both sides set it
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()  # the server side closes first, as a stopped service does: its end waits in TIME_WAIT
    client.close()
    listener.close()
    deadline = time.monotonic() + 5
    while not _time_wait_on(port):
        assert time.monotonic() < deadline, "the connection never reached TIME_WAIT"
        time.sleep(0.02)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what a check without SO_REUSEADDR sees: "in use"
    assert not port_in_use(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        assert port_in_use(port), "a listening socket still makes the port taken"
