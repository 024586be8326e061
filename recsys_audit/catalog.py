"""The check catalog: every check's metadata, declared beside its logic and listable without running anything.

Each ``recsys_audit/checks/sNN_*.py`` module declares its :class:`Section` and decorates its check functions with
``@SECTION.check(...)``. Importing the modules builds the catalog; nothing talks to the target.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recsys_audit.findings import Outcome, Severity

if TYPE_CHECKING:
    from recsys_audit.context import AuditContext

CheckFunction = Callable[["AuditContext"], Outcome]

CHECK_MODULES = (
    "recsys_audit.checks.s0_serving_mode",
    "recsys_audit.checks.s1_tenancy_auth",
    "recsys_audit.checks.s2_data_privacy",
    "recsys_audit.checks.s3_pipelines",
    "recsys_audit.checks.s4_database",
    "recsys_audit.checks.s5_observability",
    "recsys_audit.checks.s6_performance",
    "recsys_audit.checks.s7_rollout",
)


@dataclass(frozen=True)
class Check:
    id: str
    section: int
    item: str  # the checklist item it gives evidence for
    title: str
    severity: Severity
    remediation: str
    reference: str
    function: CheckFunction = field(repr=False, compare=False)

    def metadata(self) -> dict[str, object]:
        return {
            "id": self.id,
            "section": self.section,
            "item": self.item,
            "title": self.title,
            "severity": str(self.severity),
            "remediation": self.remediation,
            "reference": self.reference,
        }


@dataclass
class Section:
    number: int
    title: str
    notebook: str  # stem of notebooks/<notebook>.ipynb
    checks: dict[str, Check] = field(default_factory=dict)

    def check(
        self,
        id: str,
        *,
        item: str,
        title: str,
        severity: Severity,
        remediation: str,
        reference: str = "",
    ) -> Callable[[CheckFunction], CheckFunction]:
        """Register a check function under ``id`` with its metadata."""

        def register(function: CheckFunction) -> CheckFunction:
            if id in self.checks:
                raise ValueError(f"duplicate check id {id}")
            self.checks[id] = Check(id, self.number, item, title, severity, remediation, reference, function)
            function.check_id = id  # type: ignore[attr-defined]
            return function

        return register


def sections() -> list[Section]:
    """All sections, in checklist order (imports the check modules once)."""
    found = [importlib.import_module(name).SECTION for name in CHECK_MODULES]
    return sorted(found, key=lambda s: s.number)


def all_checks() -> dict[str, Check]:
    return {check.id: check for section in sections() for check in section.checks.values()}


def section_by_number(number: int) -> Section:
    for section in sections():
        if section.number == number:
            return section
    raise KeyError(f"no section {number}")
