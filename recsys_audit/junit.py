"""JUnit XML from a run's ``findings.json``: one testsuite per section, one testcase per check.

fail -> <failure>, error -> <error>, skip and manual -> <skipped>, an applied waiver -> <skipped message="waived: …">;
pass and warn pass (a warning is noted in <system-out>). ``time`` is the check's duration.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def _testcase(finding: dict[str, Any], classname: str) -> ET.Element:
    case = ET.Element(
        "testcase",
        classname=classname,
        name=f"{finding['id']}: {finding['title']}",
        time=f"{float(finding.get('duration_s') or 0):.3f}",
    )
    status, summary = finding["status"], finding["summary"]
    waiver = finding.get("waiver") or {}
    if waiver.get("applied"):
        ET.SubElement(
            case, "skipped", message=f"waived: {waiver['justification']} (until {waiver['expires']}, {status})"
        )
    elif status == "fail":
        failure = ET.SubElement(case, "failure", message=summary, type=finding["severity"])
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


def junit_xml(document: dict[str, Any]) -> ET.ElementTree:
    titles = {str(s["number"]): (s["title"], s["notebook"]) for s in document.get("sections", [])}
    by_section: dict[str, list[dict[str, Any]]] = {}
    for finding in document["findings"]:
        by_section.setdefault(str(finding["section"]), []).append(finding)
    root = ET.Element("testsuites", name=f"recsys-audit {document['env']}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for number in sorted(by_section, key=int):
        findings = by_section[number]
        title, notebook = titles.get(number, (f"Section {number}", f"section{number}"))
        suite = ET.SubElement(root, "testsuite", name=f"{number} {title}", timestamp=document["started_at"])
        cases = [_testcase(f, notebook) for f in findings]
        counts = {
            "tests": len(cases),
            "failures": sum(c.find("failure") is not None for c in cases),
            "errors": sum(c.find("error") is not None for c in cases),
            "skipped": sum(c.find("skipped") is not None for c in cases),
        }
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", f"{sum(float(f.get('duration_s') or 0) for f in findings):.3f}")
        suite.extend(cases)
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(run_dir: Path) -> Path:
    """Write ``run_dir/junit.xml`` from ``run_dir/findings.json``."""
    document = json.loads((run_dir / "findings.json").read_text(encoding="utf-8"))
    path = run_dir / "junit.xml"
    junit_xml(document).write(path, encoding="utf-8", xml_declaration=True)
    return path
