"""Fake audit contexts: run any check directly — no papermill, no sandbox — on evidence a test chooses.

A :class:`FakeAudit` is a real :class:`~recsys_audit.context.AuditContext` whose probes meet small real things:

* **params**: a real params file written from a dict (minimal defaults, deep-merged with ``params=``) and loaded by
  ``load_params`` — the same validation as a user's file;
* **config**: a real env file (``env={"NAME": "value"}``) and/or Helm values (``helm={...}``, a values document)
  listed as config sources, read by the real config loader;
* **HTTP**: a real server on loopback (:class:`CannedServer`) answering ``routes={"GET /readyz": Answer(...)}``
  (a key without a method answers any method, ``"*"`` any path not listed; a callable gets the :class:`Request` and
  returns an ``Answer``), with
  ``metrics=`` served as ``GET /metrics``. ``target.base_url`` points to it; so can a JWKS or Prometheus URL
  (``audit.url + "/jwks.json"``). Unknown routes answer 404 like chi;
* **database**: canned rows (:class:`CannedDatabase`, ``db={"sql fragment": rows}``) — or a real DSN in ``params``;
* **files**: ``files={"relative/path": "text"}`` written beside the params file before it loads (secret files for
  ``file:`` references, manifests, logs); ``audit.folder`` is that directory. ``setup=callable(folder)`` runs
  after the files are written (file modes, a manifest registry); a route callable sees the folder as
  ``request.folder`` (to write what the service would, e.g. an exposure record);
* **TLS**: ``tls=True`` serves HTTPS with a fresh self-signed certificate, trusted through ``target.ca_bundle``.

``{url}`` in any string of ``params``, ``env``, ``helm`` or ``files`` becomes the loopback server's base URL (a JWKS
URL, a Prometheus URL), and ``{folder}`` the audit's folder (absolute ``file://`` URIs).

``audit.run(check_id)`` evaluates one check exactly as a notebook does (exceptions become ``error`` findings) and
returns its :class:`~recsys_audit.findings.Finding`. In tests use the ``fake_audit`` fixture (tests/conftest.py),
which closes servers and contexts at the end::

    def test_dev_auth_on_fails(fake_audit):
        audit = fake_audit(env={"DEV_AUTH_ENABLED": "true"})
        assert audit.run("auth.dev-auth-disabled").status == Status.FAIL

Every check is proven by :class:`Case` rows: each section's test module lists ``CASES`` (a healthy input that
passes and a broken one that fails, with the exact status; a check with ``cannot_fail`` shows its non-pass status
instead) and runs them with :func:`check_case`; tests/test_checklist.py fails when a check of a section has none.
"""

from __future__ import annotations

import copy
import json
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from recsys_audit.catalog import all_checks, section_by_number
from recsys_audit.context import AuditContext
from recsys_audit.findings import Finding, Status
from recsys_audit.notebook import SectionRun
from recsys_audit.params import load_params
from recsys_audit.probes import ProbeError

# --- HTTP ----------------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """A canned HTTP answer: a dict or list body is sent as JSON, a str as text."""

    status: int = 200
    body: Any = ""
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, dict | list):
            problem = self.status >= 400 and isinstance(self.body, dict) and "code" in self.body
            return json.dumps(self.body).encode(), "application/problem+json" if problem else "application/json"
        return str(self.body).encode(), "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    folder: Path | None = None  # the fake audit's folder, for routes that write what a service would (log files)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


Route = Answer | Callable[[Request], Answer]
NOT_FOUND = Answer(404, "404 page not found\n")


class CannedServer:
    """A real HTTP server on 127.0.0.1 answering from a route table; ``seen`` lists every request it got."""

    def __init__(
        self, routes: Mapping[str, Route] | None = None, *, tls_folder: Path | None = None, folder: Path | None = None
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.seen: list[Request] = []
        self.folder = folder
        self.ca_file: Path | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Request(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                    server.folder,
                )
                server.seen.append(request)
                answer = server.answer(request)
                body, content_type = answer.encoded()
                self.send_response(answer.status)
                headers = {"Content-Type": content_type, **answer.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = do_OPTIONS = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls_folder is not None:  # HTTPS with a fresh self-signed certificate, which is also the CA to trust
            from fault_servers import self_signed_certificate

            self.ca_file, key_file = self_signed_certificate(tls_folder)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.ca_file, key_file)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        # a short poll interval: shutdown() waits for one (the default 0.5 s, paid by every fake audit)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, request: Request) -> Answer:
        route = self.routes.get(f"{request.method} {request.path}") or self.routes.get(request.path)
        route = route or self.routes.get("*", NOT_FOUND)
        return route(request) if callable(route) else route

    def requests_to(self, path: str, method: str | None = None) -> list[Request]:
        return [r for r in self.seen if r.path == path and (method is None or r.method == method)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def prometheus_api(answers: Mapping[str, list[tuple[dict[str, str], float]]]) -> Route:
    """``GET /api/v1/query``: the first key found in the PromQL picks the vector answered (labels, value) — an
    empty vector for any other query."""

    def answer(request: Request) -> Answer:
        promql = (request.query.get("query") or [""])[0]
        series = next((rows for fragment, rows in answers.items() if fragment in promql), [])
        result = [{"metric": labels, "value": [0, str(value)]} for labels, value in series]
        return Answer(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

    return answer


# --- database ------------------------------------------------------------------------------------------------------

Rows = list[dict[str, Any]]


class CannedDatabase:
    """Answers the queries checks send with canned rows, matched by a fragment of the SQL (first match wins).

    A value may be a callable ``(params) -> rows``. ``tables`` are the tables that exist (``table_exists``);
    ``has_rows`` answers from ``filled``. A query nothing matches raises ``ProbeError`` — the check then records an
    ``error`` finding naming it, so a missing answer cannot pass unnoticed. ``executed`` lists what was asked.
    """

    def __init__(
        self,
        answers: Mapping[str, Rows | Callable[[Any], Rows]] | None = None,
        *,
        tables: set[str] | frozenset[str] = frozenset(),
        filled: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        self.answers = dict(answers or {})
        self.tables = set(tables)
        self.filled = set(filled)
        self.executed: list[tuple[str, Any]] = []

    def query(self, sql: str, params: Any = None) -> Rows:
        flat = " ".join(sql.split())
        self.executed.append((flat, params))
        for fragment, rows in self.answers.items():
            if " ".join(fragment.split()) in flat:
                return copy.deepcopy(rows(params) if callable(rows) else rows)
        raise ProbeError(f"the fake database has no answer for: {flat[:120]}")

    def scalar(self, sql: str, params: Any = None) -> Any:
        rows = self.query(sql, params)
        return next(iter(rows[0].values())) if rows else None

    def table_exists(self, name: str, schema: str = "public") -> bool:
        return name in self.tables

    def has_rows(self, table: str, schema: str = "public") -> bool:
        return table in self.filled

    def close(self) -> None:
        return None


# --- the audit -----------------------------------------------------------------------------------------------------


def merged(base: Any, top: Any) -> Any:
    """``top`` deep-merged over ``base``: mappings merge key by key; anything else (lists too) is replaced."""
    if isinstance(base, dict) and isinstance(top, dict):
        return {**base, **{key: merged(base.get(key), value) for key, value in top.items()}}
    return copy.deepcopy(top)


def filled(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` with ``{url}``/``{folder}`` placeholders filled in every string it holds."""
    if isinstance(value, str):
        for name, text in names.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, dict):
        return {key: filled(item, names) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [filled(item, names) for item in value]
    return value


def env_text(env: Mapping[str, str]) -> str:
    return "".join(f"{name}={value}\n" for name, value in env.items())


class FakeAudit:
    def __init__(
        self,
        folder: Path,
        *,
        params: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        helm: Mapping[str, Any] | None = None,
        routes: Mapping[str, Route] | None = None,
        metrics: str | None = None,
        db: CannedDatabase | None = None,
        files: Mapping[str, str | bytes] | None = None,
        setup: Callable[[Path], None] | None = None,
        tls: bool = False,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.server = CannedServer(routes, tls_folder=folder if tls else None, folder=folder)
        names = {"url": self.server.url, "folder": str(folder.resolve())}
        params, env, helm, files = (filled(value, names) for value in (params, env, helm, files))
        if metrics is not None:
            self.server.routes.setdefault("GET /metrics", Answer(200, metrics))
        for name, content in (files or {}).items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content, encoding="utf-8")
        if setup is not None:
            setup(folder)
        target: dict[str, Any] = {"base_url": self.server.url, "timeout_s": 3}
        if self.server.ca_file is not None:
            target["ca_bundle"] = self.server.ca_file.name
        document: dict[str, Any] = {
            "environment": {"name": "fake"},
            "target": target,
            "tenants": [{"id": "acme", "surfaces": ["home"]}],
        }
        sources = []
        if env is not None:
            (folder / "service.env").write_text(env_text(env), encoding="utf-8")
            sources.append({"kind": "env_file", "path": "service.env"})
        if helm is not None:
            (folder / "values.yaml").write_text(yaml.safe_dump(dict(helm)), encoding="utf-8")
            sources.append({"kind": "helm_values", "path": "values.yaml"})
        if sources:
            document["config_sources"] = sources
        if db is not None:  # canned rows stand in for a database the params name
            (folder / "fake.dsn").write_text("postgresql://fake@127.0.0.1:1/fake\n", encoding="utf-8")
            document["database"] = {"dsn": "file:fake.dsn"}
        document = merged(document, dict(params or {}))
        params_path = folder / "params.yaml"
        params_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        self.ctx = AuditContext(load_params(params_path), folder / "run")
        if db is not None:
            self.ctx.memo("probe:db", lambda: db)
        self.db = db

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def params(self) -> Any:
        return self.ctx.params

    def run(self, check_id: str) -> Finding:
        """Evaluate one check as its notebook would and return the finding (also appended to run/findings/)."""
        check = all_checks()[check_id]
        return SectionRun(section_by_number(check.section), self.ctx, "fake").evaluate(check)

    def close(self) -> None:
        self.ctx.close()
        self.server.close()


def make_audit_factory(tmp_path: Path) -> tuple[Callable[..., FakeAudit], Callable[[], None]]:
    """A ``fake_audit(**kwargs)`` factory (each audit in its own folder) and the function that closes them all."""
    made: list[FakeAudit] = []

    def make(**kwargs: Any) -> FakeAudit:
        audit = FakeAudit(tmp_path / f"audit-{len(made)}", **kwargs)
        made.append(audit)
        return audit

    def close_all() -> None:
        for audit in made:
            audit.close()

    return make, close_all


# --- cases ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One input for one check and the exact status it must get (``fake_audit(**evidence).run(check)``)."""

    check: str
    name: str  # what the input is: "healthy", "empty Helm secret", …
    expected: Status
    evidence: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""  # a phrase the finding's summary must contain

    def __str__(self) -> str:
        return f"{self.check}: {self.name}"


def check_case(make: Callable[..., FakeAudit], case: Case) -> Finding:
    """Run a case on a fresh fake audit and assert its exact status (and summary phrase)."""
    finding = make(**case.evidence).run(case.check)
    assert finding.status == case.expected, f"{case} -> {finding.status}: {finding.summary}"
    assert case.summary in finding.summary, f"{case}: {case.summary!r} not in {finding.summary!r}"
    return finding
