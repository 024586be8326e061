"""The files a run directory holds, each written from its ``findings.json`` — the run's record.

One registry for the runner (``--format``), sign-off (which rewrites them after judging the run again) and the S3
upload (which stores every file of the run directory): adding a format here is all it takes.

- ``json``: ``findings.json``, the record itself (always written: sign-off, verify, diff and the archive read it);
- ``html``: the report; ``junit``: JUnit XML for CI;
- ``sarif``: SARIF 2.1.0 for code-scanning dashboards; ``ocsf``: OCSF Detection Findings for security lakes;
- ``csv``: one row per finding for spreadsheets.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from recsys_audit.rundir import FINDINGS_FILE, JUNIT_FILE, REPORT_FILE

SARIF_FILE = "findings.sarif"
OCSF_FILE = "findings.ocsf.json"
CSV_FILE = "findings.csv"


def _html(run_dir: Path) -> None:
    from recsys_audit.render.report import render_report

    render_report(run_dir)


def _junit(run_dir: Path) -> None:
    from recsys_audit.junit import write_junit

    write_junit(run_dir)


def _sarif(run_dir: Path) -> None:
    from recsys_audit.outputs.sarif import write_sarif

    write_sarif(run_dir)


def _ocsf(run_dir: Path) -> None:
    from recsys_audit.outputs.ocsf import write_ocsf

    write_ocsf(run_dir)


def _csv(run_dir: Path) -> None:
    from recsys_audit.outputs.table import write_csv

    write_csv(run_dir)


@dataclass(frozen=True)
class Output:
    name: str  # the --format value
    file: str  # its file in the run directory
    media_type: str
    write: Callable[[Path], None] | None  # writes the file from findings.json; None: findings.json itself


OUTPUTS = {
    output.name: output
    for output in (
        Output("html", REPORT_FILE, "text/html; charset=utf-8", _html),
        Output("json", FINDINGS_FILE, "application/json", None),
        Output("junit", JUNIT_FILE, "application/xml", _junit),
        Output("sarif", SARIF_FILE, "application/sarif+json", _sarif),
        Output("ocsf", OCSF_FILE, "application/json", _ocsf),
        Output("csv", CSV_FILE, "text/csv; charset=utf-8", _csv),
    )
}
DEFAULT_FORMATS = ("html", "json", "junit")


class UnknownFormat(ValueError):
    """A ``--format`` value that is not one of :data:`OUTPUTS`."""


def parse_formats(text: str) -> list[str]:
    """``html,sarif`` -> the formats, in the registry's order; unknown names raise :class:`UnknownFormat`."""
    wanted = [part.strip().lower() for part in text.split(",") if part.strip()]
    for name in wanted:
        if name not in OUTPUTS:
            close = difflib.get_close_matches(name, list(OUTPUTS), n=1)
            hint = f" — did you mean {close[0]!r}?" if close else ""
            raise UnknownFormat(f"unknown format {name!r}{hint} (choose from {', '.join(OUTPUTS)})")
    return [name for name in OUTPUTS if name in wanted]


def write_outputs(run_dir: Path, formats: Iterable[str] = DEFAULT_FORMATS) -> list[Path]:
    """Write the chosen formats from ``run_dir/findings.json`` (which the runner has written); their paths."""
    chosen = set(formats)
    written = []
    for output in OUTPUTS.values():
        if output.name in chosen and output.write is not None:
            output.write(Path(run_dir))
            written.append(Path(run_dir) / output.file)
    return written


def rewrite_present(run_dir: Path, *, skip: Iterable[str] = ()) -> list[Path]:
    """Write again every output the run directory holds (after findings.json changed, e.g. at sign-off)."""
    present = [name for name, output in OUTPUTS.items() if (Path(run_dir) / output.file).is_file()]
    return write_outputs(run_dir, [name for name in present if name not in set(skip)])


def output_files() -> tuple[str, ...]:
    """The file names of every output, findings.json included."""
    return tuple(output.file for output in OUTPUTS.values())
