"""Headless Chromium for page tests: the system browser driven by Playwright, offline, with a fresh profile.

``browser_page(profile)`` yields a page at a 1400×900 viewport and the list of every URL the page requested; the
network is emulated offline, so a page that tried to load anything from elsewhere shows it in that list.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 900}


@contextmanager
def browser_page(profile: Path) -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page (fresh ``--user-data-dir`` at ``profile``) and the URLs it requested."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (make system-deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=FLAGS, headless=True, viewport=VIEWPORT, offline=True
        )
        requests: list[str] = []
        try:
            page = context.new_page()
            page.on("request", lambda request: requests.append(request.url))
            yield page, requests
        finally:
            context.close()


def pdf_pages(pdf: Path) -> int:
    """Pages of a PDF, as poppler's pdfinfo counts them."""
    if shutil.which("pdfinfo") is None:
        pytest.fail("pdfinfo is not installed (poppler-utils: make system-deps)")
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    match = re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE)
    assert match, info
    return int(match.group(1))


def page_image(pdf: Path, page: int, folder: Path) -> Path:
    """One page of a PDF as a PNG (poppler's pdftoppm, 60 dpi)."""
    if shutil.which("pdftoppm") is None:
        pytest.fail("pdftoppm is not installed (poppler-utils: make system-deps)")
    stem = folder / f"{pdf.stem}-{page}"
    subprocess.run(["pdftoppm", "-r", "60", "-png", "-singlefile", "-f", str(page), "-l", str(page), str(pdf),
                    str(stem)], check=True)  # fmt: skip
    return stem.with_suffix(".png")


def pixels_near(image: Path, colour: tuple[int, int, int], tolerance: int = 40) -> int:
    """How many pixels of ``image`` are within ``tolerance`` of ``colour`` on every channel."""
    import numpy
    from PIL import Image

    pixels = numpy.asarray(Image.open(image).convert("RGB"), dtype=int)
    return int((numpy.abs(pixels - numpy.array(colour)) <= tolerance).all(axis=-1).sum())
