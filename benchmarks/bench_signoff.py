"""Sign-off costs on a run directory the size of a full audit: sign, verify, tampered runs, "since last audit".

A run of 8 sections x 14 checks is written by the runner's own code (``run._prepare`` / ``run._finish``), with eight
executed-notebook files of about 250 KB each (a full audit's notebooks are of that order), then signed with a fresh
OpenSSH Ed25519 key through ``ssh-keygen``. Figures only; nothing is asserted (targets: verify well under a second,
every tampered case under 5 s, the next run's "since last audit" bounded by MAX_EARLIER_RUNS).

Usage: python benchmarks/bench_signoff.py [--earlier 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from recsys_audit import run as runner
from recsys_audit.catalog import Section
from recsys_audit.diff import MAX_EARLIER_RUNS, previous_signed_run
from recsys_audit.findings import Finding, Severity, Status, append_finding, passed
from recsys_audit.params import load_params
from recsys_audit.signatures import generate_key
from recsys_audit.signoff import sign_run, verify_run

PRINCIPAL = "bench@example.com"


def catalog() -> list[Section]:
    sections = []
    for number in range(8):
        section = Section(number, f"Section {number}", notebook=f"{number:02d}_section")
        for index in range(14):
            section.check(f"s{number}.check-{index}", item="i", title="t", severity=Severity.HIGH, remediation="r")(
                lambda ctx: passed("ok")
            )
        sections.append(section)
    return sections


def notebook_json(size: int) -> str:
    line = "probe GET /v1/recommendations -> 200 in 12 ms; evidence row with tenant, surface and version\n"
    cell = {"cell_type": "markdown", "metadata": {}, "source": [line] * (size // len(line))}
    return json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def write_run(root: Path, params_path: Path, stamp: str, sections: list[Section]) -> Path:
    audit = runner._prepare(params_path, load_params(params_path), sections, sections, root, root)
    target = audit.run_dir.parent / stamp
    audit.run_dir.rename(target)
    audit.run_dir = target
    for section in sections:
        for check in section.checks.values():
            evidence = {"rows": [{"k": i} for i in range(20)]}
            finding = Finding(check.id, section.number, check.title, check.severity, Status.PASS, "ok", evidence,
                              "r", "", 0.01, notebook=section.notebook)  # fmt: skip
            append_finding(target / "findings" / f"{section.notebook}.jsonl", finding)
        (target / "notebooks" / f"{section.notebook}.ipynb").write_text(notebook_json(250_000))
        audit.runs.append(runner.NotebookRun(section.notebook, "ok", 1.0, None, section.number))
    runner._finish(audit, Severity.HIGH)
    return target


def timed(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--earlier", type=int, default=MAX_EARLIER_RUNS, help="earlier signed runs, all tampered")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-signoff-"))
    try:
        key = folder / "bench"
        public = generate_key(key, PRINCIPAL, passphrase="")
        trusted = folder / "allowed_signers"
        trusted.write_text(public.allowed_signers_line(PRINCIPAL) + "\n")
        params = folder / "params" / "bench.yaml"
        params.parent.mkdir()
        params.write_text(yaml.safe_dump({
            "environment": {"name": "bench", "allowed_signers": str(trusted)},
            "target": {"base_url": "http://127.0.0.1:9"}, "tenants": [{"id": "a", "surfaces": ["h"]}],
        }))  # fmt: skip
        sections = catalog()
        audits = folder / "audits"
        run = write_run(audits, params, "20260101T000000Z", sections)
        started = time.perf_counter()
        record = sign_run(run, reviewer="Bench", role="SRE", decision="approve", key_path=key)
        sign_s = time.perf_counter() - started
        size = sum(entry["size"] for entry in record["files"].values())
        verify_s, result = timed(lambda: verify_run(run, trusted), args.repeats)
        assert result.ok, result.problem
        print(f"run directory: {len(record['files'])} files, {size / 1e6:.2f} MB")
        print(f"sign (judge again, re-render report, hash, ssh-keygen sign + verify): {sign_s:.2f} s")
        print(f"verify, median of {args.repeats}: {verify_s * 1000:.0f} ms")

        cases = {
            "symlink to /dev/zero": lambda r: (
                (r / "report.html").unlink(),
                (r / "report.html").symlink_to("/dev/zero"),
            ),
            "FIFO instead of findings.json": lambda r: ((r / "findings.json").unlink(), os.mkfifo(r / "findings.json")),
            "1 GB sparse file added": lambda r: os.truncate(_touch(r / "notebooks" / "big.ipynb"), 1 << 30),
            "last file edited (same size)": lambda r: _flip(r / "report.html"),
        }
        for name, tamper in cases.items():
            copy = folder / "tampered" / "bench" / run.name
            shutil.copytree(run, copy, symlinks=True)
            tamper(copy)
            seconds, result = timed(lambda copy=copy: verify_run(copy, trusted), 1)
            print(f"verify, {name}: {seconds * 1000:.0f} ms — {result.problem[:70]}")
            shutil.rmtree(copy)

        # Earlier signed runs, each tampered in its last file so verification hashes everything before failing.
        _flip(run / "report.html")
        for day in range(1, args.earlier + 1):
            earlier = write_run(audits, params, f"202512{day:02d}T000000Z", sections)
            sign_run(earlier, reviewer="Bench", role="SRE", decision="approve", key_path=key, render=lambda *_: None)
            _flip(earlier / "report.html")
        newest = write_run(audits, params, "20260102T000000Z", sections)
        seconds, previous = timed(lambda: previous_signed_run(newest, trusted), 1)
        print(
            f"since last audit with {args.earlier} tampered earlier signed runs: {seconds:.2f} s "
            f"({len(previous.skipped)} examined and passed over, limit {MAX_EARLIER_RUNS})"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _touch(path: Path) -> Path:
    path.touch()
    return path


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))


if __name__ == "__main__":
    main()
