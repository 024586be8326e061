"""``findings.csv``: one row per finding, for spreadsheets — and read back to the very same findings.

Lists (checklist item ids) are space-separated; evidence, waiver and attestation are JSON text. The target is
untrusted, so a cell a spreadsheet would run as a formula (starting ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return) is written with a leading ``'``, as is a cell that starts with ``'`` itself; :func:`read_csv` removes exactly
that one character, so the round trip is exact.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from recsys_audit import judgement
from recsys_audit.findings import Finding

COLUMNS = (
    "env",
    "run",
    "id",
    "section",
    "title",
    "severity",
    "status",
    "waived",
    "summary",
    "remediation",
    "reference",
    "items",
    "duration_s",
    "notebook",
    "evidence",
    "waiver",
    "attestation",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _value(cell: str) -> str:
    return cell[1:] if cell.startswith("'") else cell


def _json(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def csv_text(document: dict[str, Any]) -> str:
    """The findings of a run's findings.json document as CSV (a header row, then one row per finding)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for item in document["findings"]:
        finding = Finding.from_dict(item)
        row = {
            "env": document["env"],
            "run": document["run"],
            "id": finding.id,
            "section": str(finding.section),
            "title": finding.title,
            "severity": str(finding.severity),
            "status": str(finding.status),
            "waived": "yes" if finding.waived else "no",
            "summary": finding.summary,
            "remediation": finding.remediation,
            "reference": finding.reference,
            "items": " ".join(finding.items),
            "duration_s": repr(float(finding.duration_s)),
            "notebook": finding.notebook,
            "evidence": _json(finding.evidence),
            "waiver": _json(finding.waiver),
            "attestation": _json(finding.attestation),
        }
        writer.writerow([_cell(row[column]) for column in COLUMNS])
    return buffer.getvalue()


def read_csv(path: Path) -> list[Finding]:
    """The findings of a ``findings.csv`` (what :func:`csv_text` wrote)."""
    with Path(path).open(encoding="utf-8", newline="") as handle:
        rows = [{key: _value(cell) for key, cell in row.items()} for row in csv.DictReader(handle)]
    return [
        Finding.from_dict(
            {
                "id": row["id"],
                "section": int(row["section"]),
                "title": row["title"],
                "severity": row["severity"],
                "status": row["status"],
                "summary": row["summary"],
                "evidence": json.loads(row["evidence"]) if row["evidence"] else {},
                "remediation": row["remediation"],
                "reference": row["reference"],
                "duration_s": float(row["duration_s"]),
                "items": row["items"].split(),
                "notebook": row["notebook"],
                "waiver": json.loads(row["waiver"]) if row["waiver"] else None,
                "attestation": json.loads(row["attestation"]) if row["attestation"] else None,
            }
        )
        for row in rows
    ]


def write_csv(run_dir: Path) -> Path:
    """Write ``run_dir/findings.csv`` from ``run_dir/findings.json``."""
    from recsys_audit.outputs import CSV_FILE

    path = Path(run_dir) / CSV_FILE
    path.write_text(csv_text(judgement.read_judged_run(run_dir).document), encoding="utf-8", newline="")
    return path
