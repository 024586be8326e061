"""Session fixtures shared by every test: sandbox instances per variant and the full audit run against each.

* ``sandbox(variant)`` starts (once per session) an instance of a variant and returns its ``SandboxInstance``.
* ``audit_result(variant)`` runs every notebook once per variant (``recsys_audit.run.run_audit``) and caches it;
  ``audit_findings(variant)`` gives its findings by check id.
* ``fake_audit(**evidence)`` builds a fake audit context (tests/fakes.py) to run one check directly on chosen
  evidence; everything it started is closed after the test.

Instances live under one temporary directory on free ports and are stopped at the end of the session.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from recsys_audit.findings import Finding
    from recsys_audit.sandbox.harness import SandboxInstance

CODE_DEFECTS = ("cross-tenant-admin", "healthz-db", "detailed-health-public", "pii-unhashed", "missing-meta")
OPS_DEFECTS = (
    "stale-manifest",
    "no-retained-manifest",
    "failed-migration",
    "pending-migration",
    "default-partition-rows",
    "rls-off",
    "superuser-service-role",
    "archive-off",
    "single-replica",
    "pprof-exposed",
    "backpressure-off",
    "missing-alerts",
    "small-load-report",
)
# variant -> (profile, defects)
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "hardened": ("hardened", ()),
    "as-shipped": ("as-shipped", ()),
    "code-defects": ("hardened", CODE_DEFECTS),
    "ops-defects": ("hardened", OPS_DEFECTS),
}


@pytest.fixture
def fake_audit(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory: ``fake_audit(env={...}, routes={...}, ...)`` -> a :class:`fakes.FakeAudit` (see tests/fakes.py)."""
    from fakes import make_audit_factory

    make, close_all = make_audit_factory(tmp_path)
    yield make
    close_all()


@pytest.fixture(autouse=True)
def _own_redaction_registry() -> Iterator[None]:
    """Secrets registered during a test (property tests register thousands of random ones) are forgotten after it,
    so that no test masks or slows another's output."""
    from recsys_audit import redaction

    saved = set(redaction._known_forms)
    yield
    if redaction._known_forms != saved:
        redaction._known_forms.clear()
        redaction._known_forms.update(saved)
        redaction._pattern = None


@pytest.fixture(scope="session")
def sandbox_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="recsys-sandboxes-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox(sandbox_root: Path) -> Iterator[Callable[[str], SandboxInstance]]:
    """Factory: ``sandbox("hardened")`` -> a running instance of that variant (started once per session)."""
    from recsys_audit.sandbox.harness import start_sandbox

    instances: dict[str, SandboxInstance] = {}

    def get(variant: str) -> SandboxInstance:
        if variant not in VARIANTS:
            raise KeyError(f"unknown sandbox variant {variant!r}; known: {', '.join(VARIANTS)}")
        if variant not in instances:
            profile, defects = VARIANTS[variant]
            instances[variant] = start_sandbox(sandbox_root, profile, defects, name=variant)
        return instances[variant]

    yield get
    for instance in instances.values():
        instance.stop()


@pytest.fixture(scope="session")
def audit_result(
    sandbox: Callable[[str], SandboxInstance], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Any]:
    """Factory: ``audit_result("hardened")`` -> the AuditResult of a full audit of that variant (run once)."""
    results: dict[str, Any] = {}

    def get(variant: str) -> Any:
        if variant not in results:
            from recsys_audit.run import run_audit

            instance = sandbox(variant)
            results[variant] = run_audit(instance.params_path, out_dir=tmp_path_factory.mktemp(f"audit-{variant}"))
        return results[variant]

    return get


@pytest.fixture(scope="session")
def audit_findings(audit_result: Callable[[str], Any]) -> Callable[[str], dict[str, Finding]]:
    """Factory: ``audit_findings("hardened")`` -> {check id: Finding} of that variant's audit."""

    def get(variant: str) -> dict[str, Finding]:
        return {finding.id: finding for finding in audit_result(variant).findings}

    return get
