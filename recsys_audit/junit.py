"""JUnit XML from a run's ``findings.json``: the audit's verdict, then one testsuite per section, one testcase per
check.

The first testsuite, ``audit``, carries the judgement as properties (verdict, exit code, score, what was not
evaluated) and one testcase, ``verdict``, that passes only when the verdict is ``pass``: fail and partial ->
<failure>, incomplete -> <error>. A section left out by ``--sections`` is a testsuite whose one testcase is
<skipped message="not evaluated: …">, so a partial run never looks complete.

Per check: fail -> <failure>, error -> <error>, skip and manual -> <skipped>, an applied waiver -> <skipped
message="waived: …">; pass and warn pass (a warning is noted in <system-out>). ``time`` is the check's duration.

Within a section the testcases are grouped by checklist item (``checklist.yaml`` order): a testcase's ``classname`` is
the first checklist item id its check covers (``1.dev-auth-disabled`` — CI tools that group by class show one group
per item, under its section), and its ``checklist_items`` property lists every item it covers.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from recsys_audit import judgement
from recsys_audit.checklist import checklist
from recsys_audit.rundir import JUNIT_FILE


def _testcase(finding: dict[str, Any], notebook: str) -> ET.Element:
    items = [str(item) for item in finding.get("items") or []]
    case = ET.Element(
        "testcase",
        classname=items[0] if items else notebook,
        name=f"{finding['id']}: {finding['title']}",
        time=f"{float(finding.get('duration_s') or 0):.3f}",
    )
    if items:
        properties = ET.SubElement(case, "properties")
        ET.SubElement(properties, "property", name="checklist_items", value=" ".join(items))
    status, summary = finding["status"], finding["summary"]
    waiver = finding.get("waiver") or {}
    if waiver.get("applied"):
        ET.SubElement(
            case, "skipped", message=f"waived: {waiver['justification']} (until {waiver['expires']}, {status})"
        )
    elif status == "fail":
        message = f"{summary} ({waiver['note']})" if waiver.get("note") else summary
        failure = ET.SubElement(case, "failure", message=message, type=finding["severity"])
        failure.text = json.dumps(
            {"evidence": finding.get("evidence", {}), "remediation": finding.get("remediation", "")},
            indent=2,
            default=str,
        )
    elif status == "error":
        ET.SubElement(case, "error", message=summary, type="not-evaluated")
    elif status in {"skip", "manual"}:
        ET.SubElement(case, "skipped", message=f"{status}: {summary}")
    elif status == "warn":
        ET.SubElement(case, "system-out").text = f"warn: {summary}"
    return case


def _audit_suite(document: dict[str, Any]) -> tuple[ET.Element, list[ET.Element]]:
    suite = ET.Element("testsuite", name="audit", timestamp=document["started_at"])
    properties = ET.SubElement(suite, "properties")
    not_evaluated = judgement.not_evaluated_text(document)
    for name, value in (
        ("verdict", document["verdict"]),
        ("exit_code", document["exit_code"]),
        ("score", judgement.score_text(document)),
        ("judged_on", document.get("judged_on", "")),
        ("not_evaluated", not_evaluated or "nothing"),
    ):
        ET.SubElement(properties, "property", name=name, value=str(value))
    verdict = str(document["verdict"])
    case = ET.Element("testcase", classname="recsys-audit", name=f"verdict: {verdict}", time="0.000")
    blocking = ", ".join(document.get("blocking", []))
    if verdict == "incomplete":
        ET.SubElement(case, "error", message=f"incomplete — not evaluated: {not_evaluated}", type="incomplete")
    elif verdict == "fail":
        ET.SubElement(case, "failure", message=f"fail — {blocking}", type="fail")
    elif verdict == "partial":
        ET.SubElement(case, "failure", message=f"partial — not evaluated: {not_evaluated}", type="partial")
    cases = [case]
    for section in document.get("sections_not_run", []):
        skipped = ET.Element("testcase", classname=section["notebook"], name=f"section {section['number']}", time="0")
        ET.SubElement(skipped, "skipped", message="not evaluated: section not run (--sections)")
        cases.append(skipped)
    return suite, cases


def _by_item(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings grouped by their first checklist item, in checklist order (unknown items last), then by id."""
    order = {item: index for index, item in enumerate(checklist())}

    def key(finding: dict[str, Any]) -> tuple[int, str, str]:
        first = str((finding.get("items") or [""])[0])
        return (order.get(first, len(order)), first, str(finding["id"]))

    return sorted(findings, key=key)


def _fill(suite: ET.Element, cases: list[ET.Element], totals: dict[str, int], seconds: float) -> None:
    counts = {
        "tests": len(cases),
        "failures": sum(c.find("failure") is not None for c in cases),
        "errors": sum(c.find("error") is not None for c in cases),
        "skipped": sum(c.find("skipped") is not None for c in cases),
    }
    for key, value in counts.items():
        suite.set(key, str(value))
        totals[key] += value
    suite.set("time", f"{seconds:.3f}")
    suite.extend(cases)


def junit_xml(document: dict[str, Any]) -> ET.ElementTree:
    titles = {str(s["number"]): (s["title"], s["notebook"]) for s in document.get("sections", [])}
    by_section: dict[str, list[dict[str, Any]]] = {}
    for finding in document["findings"]:
        by_section.setdefault(str(finding["section"]), []).append(finding)
    root = ET.Element("testsuites", name=f"recsys-audit {document['env']}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    audit_suite, audit_cases = _audit_suite(document)
    root.append(audit_suite)
    _fill(audit_suite, audit_cases, totals, 0.0)
    for number in sorted(by_section, key=int):
        findings = by_section[number]
        title, notebook = titles.get(number, (f"Section {number}", f"section{number}"))
        suite = ET.SubElement(root, "testsuite", name=f"{number} {title}", timestamp=document["started_at"])
        cases = [_testcase(f, notebook) for f in _by_item(findings)]
        _fill(suite, cases, totals, sum(float(f.get("duration_s") or 0) for f in findings))
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(run_dir: Path) -> Path:
    """Write ``run_dir/junit.xml`` from ``run_dir/findings.json``."""
    document = judgement.read_judged_run(run_dir).document
    path = Path(run_dir) / JUNIT_FILE
    junit_xml(document).write(path, encoding="utf-8", xml_declaration=True)
    return path
