"""The check catalog: every check's metadata, declared beside its logic and listable without running anything.

Each ``recsys_audit/checks/sNN_*.py`` module declares its :class:`Section` and decorates its check functions with
``@SECTION.check(...)``; simple config rules are rows of ``checks/config_rules.yaml``, registered into their section
by :mod:`recsys_audit.checks.config_rules`. Importing the modules builds the catalog; nothing talks to the target.

Every check names the checklist bullets it gives evidence for (``items``, ids from ``checklist.yaml``) and the class
of that evidence (:class:`~recsys_audit.checklist.EvidenceClass`). A check that cannot return ``fail`` by design —
it needs a human attestation, or the risk it shows is capped at ``warn`` — says why in ``cannot_fail``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recsys_audit.checklist import EvidenceClass
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
    items: tuple[str, ...]  # checklist item ids it gives evidence for (checklist.yaml)
    evidence: EvidenceClass
    title: str
    severity: Severity
    remediation: str
    reference: str
    function: CheckFunction = field(repr=False, compare=False)
    cannot_fail: str = ""  # why the check never returns fail (manual-only or capped), empty when it can

    def metadata(self) -> dict[str, object]:
        return {
            "id": self.id,
            "section": self.section,
            "items": list(self.items),
            "evidence": str(self.evidence),
            "title": self.title,
            "severity": str(self.severity),
            "remediation": self.remediation,
            "reference": self.reference,
            "cannot_fail": self.cannot_fail or None,
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
        items: tuple[str, ...] | list[str],
        evidence: EvidenceClass | str,
        title: str,
        severity: Severity,
        remediation: str,
        reference: str = "",
        cannot_fail: str = "",
    ) -> Callable[[CheckFunction], CheckFunction]:
        """Register a check function under ``id`` with its metadata."""
        if not items or isinstance(items, str):
            raise ValueError(f"{id}: items must list the checklist item ids the check covers")

        def register(function: CheckFunction) -> CheckFunction:
            if id in self.checks:
                raise ValueError(f"duplicate check id {id}")
            self.checks[id] = Check(
                id,
                self.number,
                tuple(items),
                EvidenceClass(evidence),
                title,
                severity,
                remediation,
                reference,
                function,
                cannot_fail,
            )
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
    """One section; only its own check module is imported when the catalog's order names it (section N, N-th)."""
    if 0 <= number < len(CHECK_MODULES):
        section: Section = importlib.import_module(CHECK_MODULES[number]).SECTION
        if section.number == number:
            return section
    for section in sections():
        if section.number == number:
            return section
    raise KeyError(f"no section {number}")
