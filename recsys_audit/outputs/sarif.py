"""``findings.sarif``: a run's findings as SARIF 2.1.0 (OASIS), built with Microsoft's ``sarif-om`` object model.

One rule per check (id = the check's stable id; short description = its title; help = its remediation; the
checklist item ids, section and severity as properties, with ``security-severity`` as code-scanning dashboards read
it) and one result per finding:

=========  ==================  ===========================================================
status     result kind         level
=========  ==================  ===========================================================
fail       fail                from the severity: critical, high -> error; medium -> warning;
                               low, info -> note
warn       fail                at most warning
error      open (not judged)   none
manual     review              none
pass       pass                none
skip       notApplicable       none
=========  ==================  ===========================================================

An applied waiver is a suppression (external, accepted, with its justification). The location is the params file of
the environment (relative to ``PARAMSROOT``) and a logical location ``<env>/<section>/<check id>``; the partial
fingerprint ``<env>/<check id>`` lets a dashboard follow one finding across runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sarif_om as sarif
from jschema_to_python.to_json import to_json

import recsys_audit
from recsys_audit import judgement
from recsys_audit.findings import Severity

SARIF_VERSION = "2.1.0"
SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
PARAMS_ROOT = "PARAMSROOT"
LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
# The 0-10 scale code-scanning dashboards rank security results by (critical >= 9, high >= 7, medium >= 4, low > 0).
SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}
KINDS = {"fail": "fail", "warn": "fail", "error": "open", "manual": "review", "pass": "pass", "skip": "notApplicable"}


def _level(status: str, severity: Severity) -> str:
    if KINDS[status] != "fail":
        return "none"  # SARIF: a level other than none means kind fail
    level = LEVELS[severity]
    return "warning" if status == "warn" and level == "error" else level


def _text(text: str) -> sarif.MultiformatMessageString:
    return sarif.MultiformatMessageString(text=text or "—")


def _rule(finding: dict[str, Any], sections: dict[int, str]) -> sarif.ReportingDescriptor:
    severity = Severity(finding["severity"])
    section = int(finding["section"])
    return sarif.ReportingDescriptor(
        id=finding["id"],
        short_description=_text(finding["title"]),
        full_description=_text(f"{finding['title']} (section {section}: {sections.get(section, '')})"),
        help=_text(finding.get("remediation", "")),
        default_configuration=sarif.ReportingConfiguration(level=LEVELS[severity]),
        properties={
            "tags": ["recsys-audit", "security", f"section-{section}"],
            "security-severity": SECURITY_SEVERITY[severity],
            "severity": str(severity),
            "section": section,
            "checklist_items": list(finding.get("items", [])),
            "reference": finding.get("reference", ""),
        },
    )


def _result(finding: dict[str, Any], index: int, document: dict[str, Any], params_file: str) -> sarif.Result:
    severity, status = Severity(finding["severity"]), str(finding["status"])
    waiver = finding.get("waiver") or {}
    suppressions = None
    if waiver.get("applied"):
        suppression = sarif.Suppression(
            kind="external",
            justification=str(waiver.get("justification", "")),
            properties={"approved_by": waiver.get("approved_by"), "expires": str(waiver.get("expires", ""))},
        )
        # sarif-om 1.0.4 predates the 2.1.0 errata, which named this property 'status'; its serializer keeps it.
        suppression.status = "accepted"
        suppressions = [suppression]
    env = document["env"]
    return sarif.Result(
        rule_id=finding["id"],
        rule_index=index,
        kind=KINDS[status],
        level=_level(status, severity),
        message=sarif.Message(text=finding["summary"] or finding["title"]),
        locations=[
            sarif.Location(
                physical_location=sarif.PhysicalLocation(
                    artifact_location=sarif.ArtifactLocation(uri=params_file, uri_base_id=PARAMS_ROOT)
                ),
                logical_locations=[
                    sarif.LogicalLocation(
                        name=finding["id"],
                        fully_qualified_name=f"{env}/{finding['section']}/{finding['id']}",
                        kind="object",
                    )
                ],
            )
        ],
        partial_fingerprints={"recsysAuditFinding/v1": f"{env}/{finding['id']}"},
        suppressions=suppressions,
        properties={
            "status": status,
            "severity": str(severity),
            "checklist_items": list(finding.get("items", [])),
            "remediation": finding.get("remediation", ""),
            "evidence": finding.get("evidence", {}),
            **({"waiver": waiver} if waiver else {}),
            **({"attestation": finding["attestation"]} if finding.get("attestation") else {}),
        },
    )


def sarif_log(document: dict[str, Any]) -> sarif.SarifLog:
    """The SARIF log of a run's findings.json document."""
    findings = document["findings"]
    sections = {int(s["number"]): str(s["title"]) for s in document.get("sections", [])}
    params_path = Path(str(document.get("params_file") or "params.yaml"))
    rules, index = [], {}
    for finding in findings:
        if finding["id"] not in index:
            index[finding["id"]] = len(rules)
            rules.append(_rule(finding, sections))
    run = sarif.Run(
        tool=sarif.Tool(
            driver=sarif.ToolComponent(
                name="recsys-audit",
                version=str(document.get("kit_version") or recsys_audit.__version__),
                rules=rules,
            )
        ),
        automation_details=sarif.RunAutomationDetails(id=f"recsys-audit/{document['env']}/{document['run']}"),
        original_uri_base_ids={
            PARAMS_ROOT: sarif.ArtifactLocation(uri=params_path.parent.absolute().as_uri().rstrip("/") + "/")
        },
        invocations=[
            sarif.Invocation(
                execution_successful=document.get("verdict") != "incomplete",
                start_time_utc=_utc(document.get("started_at")),
                end_time_utc=_utc(document.get("finished_at")),
                exit_code=int(document.get("exit_code", 0)),
            )
        ],
        results=[_result(f, index[f["id"]], document, params_path.name) for f in findings],
        properties={
            "environment": document["env"],
            "run": document["run"],
            "target": document.get("target", ""),
            "verdict": document.get("verdict", ""),
            "score": judgement.score_text(document),
            "not_evaluated": judgement.not_evaluated_text(document) or "nothing",
        },
    )
    return sarif.SarifLog(version=SARIF_VERSION, schema_uri=SCHEMA_URI, runs=[run])


def _utc(stamp: object) -> str | None:
    """An ISO time of findings.json in SARIF's form (UTC, ``Z``)."""
    return str(stamp).replace("+00:00", "Z") if stamp else None


def sarif_json(document: dict[str, Any]) -> str:
    """The SARIF log as JSON text (sarif-om's serializer: schema property names, defaults left out)."""
    return json.dumps(json.loads(to_json(sarif_log(document))), indent=2, ensure_ascii=False) + "\n"


def write_sarif(run_dir: Path) -> Path:
    """Write ``run_dir/findings.sarif`` from ``run_dir/findings.json``."""
    from recsys_audit.outputs import SARIF_FILE

    path = Path(run_dir) / SARIF_FILE
    path.write_text(sarif_json(judgement.read_judged_run(run_dir).document), encoding="utf-8")
    return path
