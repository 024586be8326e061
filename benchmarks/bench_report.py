"""The report of a full audit: size, render time, and how it reads in headless Chromium.

Audits a hardened sandbox (load test off) — or takes an existing run directory — then measures: the time the kit takes
to render report.html from the run directory (median of several renders); the time headless Chromium needs to load it
(median, minus the time for an empty page, so the figure is the report's own parse, style and layout time); and, at a
1400×900 window, the page's height, where the table of findings that need attention starts and whether anything
scrolls sideways, then the pages of its print to PDF. Figures only; nothing is asserted (targets: report.html <= 2 MB,
the table within the first screen, no sideways scroll, <= 20 printed pages for the as-shipped sandbox).

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


def render_seconds(run_dir: Path, renders: int) -> float:
    """Median time of ``render_report`` on the run directory (in this process, after a first untimed render)."""
    from recsys_audit.render.report import render_report

    render_report(run_dir)
    times = []
    for _ in range(renders):
        started = time.perf_counter()
        render_report(run_dir)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def layout_and_print(chromium: str, report: Path, folder: Path) -> dict[str, float]:
    """Page height, top of the triage table and sideways overflow at 1400×900, and the pages of the print to PDF."""
    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(folder / "layout-profile"), executable_path=chromium, args=flags, headless=True,
            viewport={"width": 1400, "height": 900}, offline=True,
        )  # fmt: skip
        try:
            page = context.new_page()
            page.goto(report.as_uri())
            figures = page.evaluate(
                """() => ({height: document.documentElement.scrollHeight,
                           overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
                           triage: (document.querySelector('table.ra-triage') || {getBoundingClientRect: () =>
                                    ({top: -1})}).getBoundingClientRect().top})"""
            )
            pdf = folder / "report.pdf"
            page.pdf(path=str(pdf), prefer_css_page_size=True)
        finally:
            context.close()
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=False).stdout
    figures["pages"] = next((int(line.split()[1]) for line in info.splitlines() if line.startswith("Pages:")), -1)
    return figures


def measure(report: Path, loads: int) -> None:
    print(f"kit's render of report.html, median of {loads}: {render_seconds(report.parent, loads):.2f} s")
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
    with tempfile.TemporaryDirectory(prefix="bench-report-layout-") as folder:
        figures = layout_and_print(chromium, report, Path(folder))
    print(
        f"at 1400x900: page {figures['height']:.0f} px tall, findings table at y={figures['triage']:.0f} px, "
        f"sideways overflow {figures['overflow']:.0f} px; print to PDF (A4): {figures['pages']} pages"
    )


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
