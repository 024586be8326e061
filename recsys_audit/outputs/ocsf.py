"""``findings.ocsf.json``: a run's findings as OCSF Detection Findings (class 2004), built and validated with the
``py-ocsf-models`` models — a JSON array of events, as security lakes and Prowler's OCSF output take them.

Each event: ``finding_info.uid`` is ``<env>/<run>/<check id>``; the analytic (a rule) and ``metadata.event_code``
carry the check's stable id; ``metadata.labels`` and ``unmapped.checklist_items`` the checklist item ids; the
severity maps to ``severity_id`` (critical 5, high 4, medium 3, low 2, info 1); ``status_code`` is the finding's
status and ``status_detail`` its summary; an applied waiver makes the finding Suppressed (otherwise New); the
remediation text is ``remediation.desc``; the evidence is an evidence artifact. The audited environment is the
resource (name: environment, uid: the target's base URL).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from py_ocsf_models.events.findings.activity_id import ActivityID
from py_ocsf_models.events.findings.detection_finding import DetectionFinding
from py_ocsf_models.events.findings.detection_finding_type_id import DetectionFindingTypeID
from py_ocsf_models.events.findings.severity_id import SeverityID
from py_ocsf_models.events.findings.status_id import StatusID
from py_ocsf_models.objects.analytic import Analytic
from py_ocsf_models.objects.evidence_artifacts import EvidenceArtifacts
from py_ocsf_models.objects.finding_info import FindingInformation
from py_ocsf_models.objects.metadata import Metadata
from py_ocsf_models.objects.product import Product
from py_ocsf_models.objects.remediation import Remediation
from py_ocsf_models.objects.resource_details import ResourceDetails

import recsys_audit
from recsys_audit import judgement
from recsys_audit.findings import Severity

SEVERITY_IDS = {
    Severity.CRITICAL: SeverityID.Critical,
    Severity.HIGH: SeverityID.High,
    Severity.MEDIUM: SeverityID.Medium,
    Severity.LOW: SeverityID.Low,
    Severity.INFO: SeverityID.Informational,
}
ANALYTIC_RULE = 1  # OCSF analytic type_id: Rule


def _epoch_ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def detection_finding(finding: dict[str, Any], document: dict[str, Any]) -> DetectionFinding:
    """One finding of a run's findings.json as an OCSF Detection Finding."""
    severity = Severity(finding["severity"])
    started = dt.datetime.fromisoformat(str(document["started_at"]))
    waived = bool((finding.get("waiver") or {}).get("applied"))
    status_id = StatusID.Suppressed if waived else StatusID.New
    sections = {int(s["number"]): str(s["title"]) for s in document.get("sections", [])}
    section = int(finding["section"])
    items = list(finding.get("items", []))
    return DetectionFinding(
        activity_id=ActivityID.Create,
        activity_name=ActivityID.Create.name,
        type_uid=DetectionFindingTypeID.Create,
        type_name="Detection Finding: Create",
        time=_epoch_ms(started),
        time_dt=started,
        severity_id=SEVERITY_IDS[severity],
        severity=SEVERITY_IDS[severity].name,
        status_id=status_id,
        status=status_id.name,
        status_code=str(finding["status"]),
        status_detail=finding["summary"],
        message=finding["summary"] or finding["title"],
        finding_info=FindingInformation(
            uid=f"{document['env']}/{document['run']}/{finding['id']}",
            title=finding["title"],
            desc=finding["summary"] or finding["title"],
            created_time=_epoch_ms(started),
            created_time_dt=started,
            types=[f"section {section}: {sections.get(section, '')}".rstrip(": ")],
            analytic=Analytic(
                uid=finding["id"],
                name=finding["title"],
                type_id=ANALYTIC_RULE,
                type="Rule",
                category=f"section {section}",
            ),
        ),
        metadata=Metadata(
            product=Product(
                name="recsys-audit",
                vendor_name="recsys-audit",
                version=str(document.get("kit_version") or recsys_audit.__version__),
            ),
            event_code=finding["id"],
            labels=items,
            log_name=f"recsys-audit/{document['env']}/{document['run']}",
        ),
        resources=[ResourceDetails(name=document["env"], uid=str(document.get("target", "")), type="recsys-service")],
        remediation=Remediation(
            desc=finding.get("remediation") or "—",
            references=[finding["reference"]] if finding.get("reference") else None,
        ),
        evidences=[EvidenceArtifacts(name="evidence", data=finding.get("evidence") or {})],
        unmapped={
            "check_id": finding["id"],
            "checklist_items": items,
            "section": section,
            "severity": str(severity),
            **{key: finding[key] for key in ("waiver", "attestation") if finding.get(key)},
        },
    )


def ocsf_events(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every finding of a run as an OCSF event (JSON-ready; empty fields left out)."""
    return [
        detection_finding(finding, document).model_dump(mode="json", exclude_none=True)
        for finding in document["findings"]
    ]


def write_ocsf(run_dir: Path) -> Path:
    """Write ``run_dir/findings.ocsf.json`` from ``run_dir/findings.json``."""
    from recsys_audit.outputs import OCSF_FILE

    path = Path(run_dir) / OCSF_FILE
    events = ocsf_events(judgement.read_judged_run(run_dir).document)
    path.write_text(json.dumps(events, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
