"""The report of a full audit: size of report.html and its render time in headless Chromium.

Audits a hardened sandbox (load test off) — or takes an existing run directory — then loads report.html in headless
Chromium several times and subtracts the time Chromium needs for an empty page, so the figure is the report's own
parse, style and layout time. Figures only; nothing is asserted (target: report.html <= 2 MB).

Usage: python benchmarks/bench_report.py [RUN_DIR] [--loads 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_audit import hardened_sandbox, timed_audits


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("bench_report: no chromium on PATH — install the Debian package chromium")


def load_seconds(chromium: str, url: str, profile: Path) -> float:
    """Wall time of a headless Chromium that loads ``url``, lays it out and prints its DOM."""
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, timeout=120, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0 or not completed.stdout:
        raise SystemExit(f"bench_report: chromium failed on {url}: {completed.stderr.decode(errors='replace')[-300:]}")
    return seconds


def measure(report: Path, loads: int) -> None:
    chromium = chromium_binary()
    size = report.stat().st_size
    with tempfile.TemporaryDirectory(prefix="bench-report-") as folder:
        blank = Path(folder) / "blank.html"
        blank.write_text("<!doctype html><title>blank</title>", encoding="utf-8")
        profile = Path(folder) / "profile"
        load_seconds(chromium, blank.as_uri(), profile)  # first start creates the profile
        baseline = statistics.median(load_seconds(chromium, blank.as_uri(), profile) for _ in range(loads))
        full = statistics.median(load_seconds(chromium, report.as_uri(), profile) for _ in range(loads))
    print(f"report.html: {size / 1024:.0f} KiB ({size / 1024 / 1024:.2f} MB, target <= 2 MB) — {report}")
    print(f"headless Chromium, median of {loads}: report {full:.2f} s, blank page {baseline:.2f} s")
    print(f"report's own render time: {max(0.0, full - baseline):.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", help="an existing audit run directory (default: audit a sandbox)")
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args(argv)
    if args.run_dir:
        measure(Path(args.run_dir) / "report.html", args.loads)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-report-out-"))
    try:
        with hardened_sandbox() as (_, params):
            ((_, document),) = timed_audits(params, work, runs=1)
        measure(Path(document["run_dir"]) / "report.html", args.loads)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
