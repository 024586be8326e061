"""The fault matrix: each fault injected into one running hardened sandbox, audited by the real ``recsys-audit run``.

A fault is a copy of the instance's params with one part swapped for something broken (an unused port, a hanging or
spoiling server on loopback, a wrong DSN, a held lock, a missing or corrupt file). Faults that touch disjoint checks
share a run limited to the sections they affect. For every run: exit code 3, the report renders, no traceback, no
notebook crashes or times out, and the run ends within its budget; per fault: the affected checks are ``error`` with a
one-line reason naming the cause, and known unaffected checks keep the status of the clean audit.
"""

from __future__ import annotations

import contextlib
import html
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from fault_servers import CliRun, FaultProxy, HangingServer, run_cli_audit, write_params_variant

from recsys_audit.sandbox.harness import free_port

if TYPE_CHECKING:
    from recsys_audit.findings import Finding
    from recsys_audit.sandbox.harness import SandboxInstance

pytestmark = pytest.mark.slow

NOTEBOOK_TIMEOUT_S = 60
RUN_BUDGET_S = 90  # the whole CLI run, kernels and report included
TARGET_TIMEOUT_S = 1.0
Change = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Expect:
    check: str
    status: str
    reason: str  # a regular expression the summary must match


@dataclass(frozen=True)
class Fault:
    name: str
    expected: tuple[Expect, ...]


@dataclass(frozen=True)
class Group:
    sections: tuple[int, ...]
    faults: tuple[Fault, ...]
    unaffected: tuple[str, ...]  # checks that must keep the status of the clean audit


def error(check: str, reason: str) -> Expect:
    return Expect(check, "error", reason)


GROUPS: dict[str, Group] = {
    "unreachable": Group(
        sections=(1, 4, 5),
        faults=(
            Fault(
                "service down",
                tuple(
                    error(check, r"127\.0\.0\.1:{service_port}.*connection failed")
                    for check in ("auth.unauthenticated-refused", "auth.readyz-reachable", "obs.health-endpoints")
                ),
            ),
            Fault(
                "database down",
                tuple(
                    error(check, r"database connection failed.*port {db_port}.*(refused|not running)")
                    for check in ("db.migrations-succeeded", "db.server-version", "auth.api-key-storage")
                ),
            ),
            Fault(
                "Prometheus down",
                tuple(
                    error(check, r"Prometheus http://127\.0\.0\.1:{prometheus_port}.*(refused|ConnectError)")
                    for check in ("obs.prometheus-target-up", "obs.golden-signals")
                ),
            ),
        ),
        unaffected=("auth.dev-auth-disabled", "auth.jwt-config", "db.migrate-on-start-off", "obs.dashboard-panels"),
    ),
    "hanging": Group(
        sections=(3, 4, 5),
        faults=(
            Fault(
                "service accepts and never answers",
                tuple(
                    error(check, r"no complete answer within \d+ s")
                    for check in ("obs.health-endpoints", "obs.detailed-health-private", "obs.metrics-series")
                ),
            ),
            Fault(
                "database refuses the role",
                tuple(
                    error(check, r"database connection failed.*recsys_intruder")
                    for check in ("db.migrations-succeeded", "db.rls-tenant-tables")
                ),
            ),
            Fault(
                "manifests missing",
                (
                    Expect("pipelines.manifest-valid", "fail", r"not fetchable"),
                    error("pipelines.manifest-fresh", r"no readable manifest"),
                    error("pipelines.artifacts-verified", r"no manifest could be read"),
                ),
            ),
        ),
        unaffected=("pipelines.rollback-manifest-retained", "db.migrate-on-start-off", "obs.alert-coverage"),
    ),
    "slow": Group(
        sections=(3, 4, 7),
        faults=(
            Fault(
                "answers slower than the timeout",
                tuple(
                    error(check, r"no complete answer within \d+ s")
                    for check in ("rollout.audit-route", "rollout.response-versions", "rollout.request-traceable")
                ),
            ),
            Fault(
                "statement timeout hit",
                tuple(
                    error(check, r"statement_timeout \(300 ms\).*schema_migrations")
                    for check in ("db.migrations-succeeded", "db.migrations-current")
                ),
            ),
            Fault(
                "manifests corrupt",
                (
                    Expect("pipelines.manifest-valid", "fail", r"invalid"),
                    error("pipelines.manifest-fresh", r"no readable manifest"),
                ),
            ),
        ),
        unaffected=("db.rls-tenant-tables", "rollout.image-pinned", "rollout.versions-retained"),
    ),
    "malformed-json": Group(
        sections=(0, 7),
        faults=(
            Fault(
                "malformed JSON",
                (
                    error("serving.live-recommend", r"not JSON"),
                    error("rollout.response-versions", r"not JSON"),
                    error("rollout.config-etag-matches", r"not JSON"),
                ),
            ),
            Fault(
                "config file unparsable",
                tuple(
                    error(check, r"config source unreadable: .*fault-values-\w+\.yaml: not valid YAML")
                    for check in ("serving.artifact-config", "rollout.image-pinned", "rollout.replicas")
                ),
            ),
        ),
        unaffected=("serving.mode-declared", "rollout.versions-retained", "rollout.audit-log-db"),
    ),
    "wrong-content-type": Group(
        sections=(0, 7),
        faults=(
            Fault(
                "HTML instead of JSON",
                (error("serving.live-recommend", r"not JSON"), error("rollout.response-versions", r"not JSON")),
            ),
        ),
        unaffected=("serving.artifact-config", "rollout.image-pinned", "rollout.versions-retained"),
    ),
    "tls": Group(
        sections=(0, 3),
        faults=(
            Fault(
                "self-signed TLS certificate",
                (
                    error(
                        "serving.live-recommend", r"https://127\.0\.0\.1:\d+/v1/recommend: TLS certificate not trusted"
                    ),
                ),
            ),
            Fault(
                "config file missing",
                tuple(
                    error(check, r"config source unreadable: .*no-such-service\.env: cannot read")
                    for check in ("serving.artifact-config",)
                ),
            ),
        ),
        unaffected=("serving.mode-declared", "pipelines.manifest-valid", "pipelines.rollback-manifest-retained"),
    ),
}


# --- injecting the faults ----------------------------------------------------------------------------------------


def _point_service_at(url: str) -> Change:
    def change(doc: dict[str, Any]) -> None:
        doc["target"].update(base_url=url, timeout_s=TARGET_TIMEOUT_S)
        doc["metrics_url"] = f"{url}/metrics"

    return change


def _replace_port(dsn: str, port: int) -> str:
    return re.sub(r"@127\.0\.0\.1:\d+/", f"@127.0.0.1:{port}/", dsn)


def _manifests_served_from(template: str, scratch: Path) -> Change:
    """Audit manifests at ``template`` as the ones the service reads: the params and (through one more env file
    that overrides the instance's) the service's RECSYS_ARTIFACT_MANIFEST_TEMPLATE name the same place."""
    override = scratch / f"manifests-{abs(hash(template))}.env"
    override.write_text(f"RECSYS_ARTIFACT_MANIFEST_TEMPLATE={template}\n", encoding="utf-8")

    def change(doc: dict[str, Any]) -> None:
        doc["manifests"].update(template=template)
        doc["config_sources"].append({"kind": "env_file", "path": str(override)})

    return change


def _write_manifests(folder: Path, instance: SandboxInstance, content: str | None) -> str:
    """A manifest template under ``folder``: no files at all (None) or every manifest holding ``content``."""
    if content is not None:
        for current in (instance.directory / "registry" / "current").glob("*/*/manifest.json"):
            target = folder / current.relative_to(instance.directory / "registry" / "current")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
    return f"file://{folder}/{{tenant}}/{{surface}}/manifest.json"


def _moved_manifests(template: str, instance: SandboxInstance) -> Change:
    """Point the params at moved manifests; the artifacts stay in the instance's registry (named explicitly)."""
    blobs = f"file://{instance.directory / 'registry' / 'blobs'}/"
    return lambda d: d["manifests"].update(template=template, artifact_root=blobs)


@contextlib.contextmanager
def injected(group: str, instance: SandboxInstance, scratch: Path) -> Iterator[tuple[list[Change], dict[str, Any]]]:
    """The params changes of a group's faults, with the servers, files and locks they need (undone on exit)."""
    changes: list[Change] = [lambda d: d.update(secrets_root=str(scratch))]  # the faulty secrets live there
    facts: dict[str, Any] = {}
    auditor_dsn = (instance.directory / "secrets" / "auditor.dsn").read_text(encoding="utf-8").strip()
    with contextlib.ExitStack() as stack:
        if group == "unreachable":
            facts.update(service_port=free_port(), db_port=free_port(), prometheus_port=free_port())
            (scratch / "down.dsn").write_text(_replace_port(auditor_dsn, facts["db_port"]))
            changes += [
                _point_service_at(f"http://127.0.0.1:{facts['service_port']}"),
                lambda d: d["database"].update(dsn=f"file:{scratch / 'down.dsn'}"),
                lambda d: d["prometheus"].update(url=f"http://127.0.0.1:{facts['prometheus_port']}"),
            ]
        elif group == "hanging":
            server = stack.enter_context(HangingServer())
            (scratch / "intruder.dsn").write_text(auditor_dsn.replace("recsys_auditor:", "recsys_intruder:", 1))
            template = _write_manifests(scratch / "no-manifests", instance, None)
            changes += [
                _point_service_at(server.url),
                lambda d: d["database"].update(dsn=f"file:{scratch / 'intruder.dsn'}"),
                _manifests_served_from(template, scratch),
                _moved_manifests(template, instance),
            ]
        elif group == "slow":
            proxy = stack.enter_context(FaultProxy(instance.base_url, "slow", delay_s=3 * TARGET_TIMEOUT_S))
            # Statements on schema_migrations wait for this lock until the audit's statement_timeout cancels them.
            locker = stack.enter_context(psycopg.connect(instance.admin_dsn))
            locker.execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
            stack.callback(locker.rollback)
            template = _write_manifests(scratch / "corrupt", instance, '{"manifest_version": 1, "tenant": ')
            changes += [
                _point_service_at(proxy.url),
                lambda d: d["database"].update(statement_timeout_ms=300),
                _manifests_served_from(template, scratch),
                _moved_manifests(template, instance),
            ]
        elif group in {"malformed-json", "wrong-content-type"}:
            proxy = stack.enter_context(FaultProxy(instance.base_url, group))  # type: ignore[arg-type]
            changes.append(_point_service_at(proxy.url))
            if group == "malformed-json":
                values = instance.directory / f"fault-values-{scratch.name[-8:]}.yaml"
                values.write_text("api:\n  replicaCount: 3\n  env: [unclosed\n", encoding="utf-8")
                stack.callback(values.unlink, missing_ok=True)
                changes.append(lambda d: d["config_sources"][1].update(path=values.name))
        elif group == "tls":
            proxy = stack.enter_context(FaultProxy(instance.base_url, tls=True))
            changes += [
                _point_service_at(proxy.url),
                lambda d: d["config_sources"][0].update(path="no-such-service.env"),
            ]
        yield changes, facts


# --- running each group once ---------------------------------------------------------------------------------------


@dataclass
class FaultRun:
    run: CliRun
    facts: dict[str, Any]


@pytest.fixture(scope="module")
def fault_run(
    sandbox: Callable[[str], SandboxInstance], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], FaultRun]]:
    instance = sandbox("hardened")
    cache: dict[str, FaultRun] = {}

    def get(group: str) -> FaultRun:
        if group not in cache:
            scratch = Path(tempfile.mkdtemp(prefix=f"fault-{group}-", dir=tmp_path_factory.getbasetemp()))
            with injected(group, instance, scratch) as (changes, facts):
                params = write_params_variant(
                    instance.params_path, f"fault-{group}", lambda doc: [change(doc) for change in changes]
                )
                try:
                    run = run_cli_audit(
                        params, scratch / "audits", sections=list(GROUPS[group].sections), timeout_s=NOTEBOOK_TIMEOUT_S
                    )
                finally:
                    params.unlink(missing_ok=True)
            cache[group] = FaultRun(run, facts)
        return cache[group]

    yield get


@pytest.mark.parametrize("group", list(GROUPS))
def test_fault_run_completes_with_exit_3_and_a_report(fault_run: Callable[[str], FaultRun], group: str) -> None:
    run = fault_run(group).run
    assert run.exit_code == 3, run.stderr
    assert "Traceback" not in run.stdout and "Traceback" not in run.stderr
    assert run.seconds < RUN_BUDGET_S, f"{group}: {run.seconds:.1f} s"
    assert run.run_dir is not None, f"no report path on stdout: {run.stdout!r} / {run.stderr!r}"
    report = (run.run_dir / "report.html").read_text(encoding="utf-8")
    assert (run.run_dir / "junit.xml").is_file()
    assert run.document["exit_code"] == 3 and run.document["verdict"] == "incomplete"
    for fault in GROUPS[group].faults:
        for expect in fault.expected:
            assert expect.check in report, f"{expect.check} missing from the report"
    crashed = {name: (nb["status"], nb["error"]) for name, nb in run.notebooks.items() if nb["status"] != "ok"}
    assert not crashed, f"a fault must become findings, not a crashed notebook: {crashed}"
    assert sorted(nb["section"] for nb in run.notebooks.values()) == list(GROUPS[group].sections)


EXPECTATIONS = [
    pytest.param(
        group,
        fault.name,
        expect,
        id=f"{group}:{fault.name}:{expect.check}",
    )
    for group, spec in GROUPS.items()
    for fault in spec.faults
    for expect in fault.expected
]


@pytest.mark.parametrize(("group", "fault", "expect"), EXPECTATIONS)
def test_affected_check_reports_the_cause_in_one_line(
    fault_run: Callable[[str], FaultRun], group: str, fault: str, expect: Expect
) -> None:
    result = fault_run(group)
    finding = result.run.findings[expect.check]
    summary = finding["summary"]
    assert (finding["status"], "\n" in summary) == (expect.status, False), f"{fault}: {expect.check}: {summary}"
    pattern = expect.reason.format(**result.facts)
    assert re.search(pattern, summary), f"{fault}: {expect.check}: {summary!r} does not match {pattern!r}"
    assert not summary.startswith("not evaluated"), "the check itself must record the cause"


@pytest.mark.parametrize(
    ("group", "check"), [(group, check) for group, spec in GROUPS.items() for check in spec.unaffected]
)
def test_unaffected_check_keeps_its_real_status(
    fault_run: Callable[[str], FaultRun], audit_findings: Callable[[str], dict[str, Finding]], group: str, check: str
) -> None:
    clean = audit_findings("hardened")[check]
    faulty = fault_run(group).run.findings[check]
    assert faulty["status"] == str(clean.status), f"{check}: {faulty['summary']} vs clean {clean.summary}"


def test_unreachable_endpoints_are_named_once_as_the_root_cause(fault_run: Callable[[str], FaultRun]) -> None:
    """Dozens of checks error when the service, Prometheus and the database are down: the console names the cause
    once, before the notebooks (one line per endpoint) and in the closing summary (one line), and findings.json
    records it."""
    result = fault_run("unreachable")
    run, facts = result.run, result.facts
    service, prometheus = f"http://127.0.0.1:{facts['service_port']}", f"http://127.0.0.1:{facts['prometheus_port']}"
    causes = [
        f"target unreachable: connection refused at {service}",
        f"prometheus unreachable: connection refused at {prometheus}",
        f"database unreachable: no server at 127.0.0.1 port {facts['db_port']} (connection refused or not running)",
    ]
    errors = sum(finding["status"] == "error" for finding in run.document["findings"])
    assert errors >= 20
    lines = run.stderr.splitlines()
    env = run.document["env"]
    assert lines[:3] == [f"{env}: {cause} — the checks that need it will not be evaluated" for cause in causes]
    summary = f"  {'; '.join(causes)}; {errors} checks not evaluated"
    assert lines.count(summary) == 1, run.stderr
    failing = [f["id"] for f in run.document["findings"] if f["status"] == "error"]
    assert all(f" {check}," in run.stderr or run.stderr.count(f" {check}\n") for check in failing), "ids kept whole"
    assert sum("connection refused" in line for line in lines) == 4, run.stderr  # once before, once after
    report = (run.run_dir / "report.html").read_text(encoding="utf-8")
    assert html.escape(f"Root cause: {'; '.join(causes)}; {errors} checks not evaluated.") in report
    assert [(c["endpoint"], c["reachable"]) for c in run.document["connectivity"]] == [
        ("target", False), ("prometheus", False), ("database", False)
    ]  # fmt: skip
