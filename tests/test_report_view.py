"""The as-shipped sandbox's report as a reviewer sees it in headless Chromium (offline, fresh profile, 1400×900):
triage first, nothing sideways, real alt text, evidence one click away, and a print of at most 20 pages that keeps
its coloured badges."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser import browser_page, page_image, pdf_pages, pixels_near

FAIL_RED = (0xCF, 0x22, 0x2E)  # the fail badge's background (render.components.STATUS_COLOURS)
ATTENTION = {"fail", "error", "warn"}


@pytest.fixture(scope="module")
def as_shipped(audit_result: Callable[[str], Any]) -> tuple[Path, dict[str, Any]]:
    run_dir = audit_result("as-shipped").run_dir
    return run_dir, json.loads((run_dir / "findings.json").read_text())


def test_report_reads_triage_first_in_chromium(as_shipped: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    run_dir, document = as_shipped
    report = run_dir / "report.html"
    failing = {f["id"] for f in document["findings"] if f["status"] == "fail"}
    attention = {f["id"] for f in document["findings"] if f["status"] in ATTENTION}
    assert len(failing) >= 20  # the as-shipped defaults fail; an empty table would prove nothing

    with browser_page(tmp_path / "profile") as (page, requests):
        page.goto(report.as_uri())
        # The table of what needs attention starts within the first screen, its first rows too.
        table = page.locator("table.ra-triage").bounding_box()
        first_rows = page.locator("table.ra-triage tbody tr").nth(2).bounding_box()
        assert table is not None and first_rows is not None
        assert table["y"] < 900 and first_rows["y"] + first_rows["height"] < 900, (table, first_rows)
        # Every failing, erroring and warning finding is in it, once, linked to its evidence.
        links = page.eval_on_selector_all(
            "table.ra-triage tbody td:nth-child(3) a", "links => links.map(a => [a.textContent, a.hash])"
        )
        listed = [text for text, _ in links]
        assert sorted(listed) == sorted(attention) and failing <= set(listed)
        assert all(anchor == f"#finding-{text}" for text, anchor in links)
        # Nothing scrolls the page sideways at 1400 px: wide tables scroll in their own box.
        scroll_width, client_width = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert scroll_width <= client_width, (scroll_width, client_width)
        # Every image says what it shows.
        alts = page.eval_on_selector_all("img", "images => images.map(i => i.getAttribute('alt') || '')")
        assert len(alts) >= 4  # the summary's chart and the sections' charts
        assert all(len(alt) > 40 and "No description" not in alt for alt in alts), alts
        assert alts[0].startswith("Checks by section and status: 0 Serving mode: ")
        # Evidence cards are folded; a link of the table opens its card.
        check = links[0][0]
        card = page.locator(f'[id="finding-{check}"]')
        assert not card.is_visible()
        page.click(f'table.ra-triage a[href="#finding-{check}"]')
        assert card.is_visible() and "Remediation:" in card.inner_text()
        pdf = tmp_path / "report.pdf"
        page.pdf(path=str(pdf), prefer_css_page_size=True, print_background=False)
        # Control: with the print colour adjustment taken away, the badges lose their colour in the same print.
        page.add_style_tag(
            content="* { print-color-adjust: economy !important; -webkit-print-color-adjust: economy !important; }"
        )
        faded = tmp_path / "faded.pdf"
        page.pdf(path=str(faded), prefer_css_page_size=True, print_background=False)

    assert requests == [report.as_uri()], requests  # one self-contained file, no other request
    assert 2 <= pdf_pages(pdf) <= 20
    # Badges stay coloured without "background graphics": page 1 (the table) shows the fail badges' red.
    assert pixels_near(page_image(pdf, 1, tmp_path), FAIL_RED) > 300
    assert pixels_near(page_image(faded, 1, tmp_path), FAIL_RED) < 30
