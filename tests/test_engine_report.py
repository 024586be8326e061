"""The CLI run and its report: canary secrets never leak, and the HTML renders offline in headless Chromium."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "engine"))

from engine_support import NOTEBOOKS, canary_values, kernel_environment, write_params

from recsys_audit.render.report import render_report

CLI = str(Path(sys.executable).parent / "recsys-audit")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``recsys-audit run`` of the healthy section (widget, chart) and the canary section, in a subprocess."""
    folder = tmp_path_factory.mktemp("engine-cli")
    params = write_params(folder)
    result = subprocess.run(
        [
            *(CLI, "run", str(params), "--sections", "0,4", "--catalog", "engine_fixture_checks"),
            *("--notebooks", str(NOTEBOOKS), "--out", str(folder / "audits"), "--timeout", "60"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **kernel_environment()},
    )
    return result, Path(result.stdout.strip().splitlines()[-1]).parent if result.stdout.strip() else folder


def test_cli_run_prints_the_report_path_and_exit_3(cli_run) -> None:
    result, run_dir = cli_run
    assert result.returncode == 3, result.stderr
    assert (run_dir / "report.html").is_file()
    assert result.stdout.strip() == str(run_dir / "report.html")
    assert "Traceback" not in result.stderr
    # one progress line each, as the notebook ends
    assert re.search(r"\[[12]/2\] 04_canary .* [\d.]+ s  \(failed: ValueError: rejected \*\*\*\)", result.stderr)
    assert re.search(r"\[[12]/2\] 00_healthy  2 fail 1 warn  [\d.]+ s\n", result.stderr), result.stderr
    summary = next(line for line in result.stderr.splitlines() if line.startswith("engine-fixture: incomplete"))
    assert summary.startswith("engine-fixture: incomplete (exit 3; ") and "score n/a — incomplete run" in summary
    assert "not evaluated: sections not run: 1 Raises half-way, 2 Kernel killed, 3 Exceeds the timeout" in summary
    assert "check(s) not evaluated: " in summary and "notebook 04_canary failed" in summary


def test_canary_secrets_appear_nowhere(cli_run) -> None:
    result, run_dir = cli_run
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".ipynb", ".html", ".json", ".xml", ".jsonl"}
    for canary in canary_values():
        assert canary not in result.stdout and canary not in result.stderr
        for path in files:
            assert canary not in path.read_text(encoding="utf-8", errors="replace"), (canary, path)
    findings = {f["id"]: f for f in json.loads((run_dir / "findings.json").read_text())["findings"]}
    # The failures really did quote the secrets (now masked), so the test can fail.
    assert findings["c.token-in-summary"]["summary"] == "server rejected token ***"
    assert findings["c.key-in-error"]["summary"] == "the key *** was refused"
    assert findings["c.never"]["summary"] == "not evaluated: ValueError: rejected ***"
    notebook = (run_dir / "notebooks" / "04_canary.ipynb").read_text()
    assert "token: ***" in notebook and "dsn: ***" in notebook


def test_report_is_static_and_self_contained(cli_run) -> None:
    _, run_dir = cli_run
    page = (run_dir / "report.html").read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert "Content-Security-Policy" in page
    assert 'src="data:image/png;base64,' in page  # the chart stays inline
    assert "IntSlider(value=3, description=&#39;replicas&#39;)" in page  # widget as its static fallback, escaped
    assert "widget-view+json" not in page
    assert page.count('<details class="ra-code">') >= 5  # code hidden but expandable
    for heading in ("Needs attention (", ">Run<", "Sign-off", "Evidence", "Failing", "Checklist items",
                    "Waivers and attestations"):  # fmt: skip
        assert heading in page
    assert "h.fail-high" in page and "Fix the fixture." in page  # failing finding with its remediation
    # One heading per section: the report's; the notebook's own title is left out, its headings one level down.
    assert page.count("0. Healthy section</h2>") == 1 and "a healthy section</h1>" not in page
    # A chart the notebook drew without alt text is described by the prose before it.
    assert "No description has been provided" not in page
    assert 'alt="A figure without a recorded description, shown after: The remaining checks, then a widget' in page


def test_render_report_needs_only_the_run_directory(cli_run, tmp_path: Path) -> None:
    _, run_dir = cli_run
    copy = tmp_path / "copied-run"
    shutil.copytree(run_dir, copy)
    (copy / "report.html").unlink()
    rendered = render_report(copy)
    assert rendered == copy / "report.html"
    assert "Production-readiness audit — engine-fixture" in rendered.read_text()


# The browser's own service calls (updates, sign-in, clock), made whatever the page; no page resource comes from them.
BROWSER_SERVICE_HOSTS = (
    "update.googleapis.com",
    "accounts.google.com",
    "clients2.google.com",
    "clientservices.googleapis.com",
    "safebrowsing.googleapis.com",
    "optimizationguide-pa.googleapis.com",
    "redirector.gvt1.com",
)


def page_requests(lines: list[str]) -> list[str]:
    """Recorded request lines, less the browser's own service calls."""
    return [line for line in lines if not any(host in line for host in BROWSER_SERVICE_HOSTS)]


class _RecordingProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), _RecordingHandler)


class _RecordingHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(4096).decode("latin-1").strip()
        if line:
            self.server.requests.append(line)  # type: ignore[attr-defined]
        self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.fixture
def recording_proxy() -> Iterator[_RecordingProxy]:
    proxy = _RecordingProxy()
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def _screenshot(page: Path, proxy: _RecordingProxy, tmp_path: Path) -> Path:
    shot = tmp_path / f"{page.stem}.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-component-extensions-with-background-pages",
        "--no-default-browser-check",
        "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate,MediaRouter,AutofillServerCommunication",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--proxy-server=127.0.0.1:{proxy.server_address[1]}",
        "--proxy-bypass-list=<-loopback>",
        "--window-size=1200,1600",
        "--virtual-time-budget=3000",
        f"--screenshot={shot}",
        page.as_uri(),
    ]
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    return shot


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_offline_in_chromium(cli_run, recording_proxy: _RecordingProxy, tmp_path: Path) -> None:
    from PIL import Image

    # Control: a page with a remote image goes through the recording proxy, so silence below means something.
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://audit-control.invalid/pixel.png">control</body></html>')
    _screenshot(control, recording_proxy, tmp_path)
    assert any("audit-control.invalid" in line for line in recording_proxy.requests), recording_proxy.requests
    recording_proxy.requests.clear()

    _, run_dir = cli_run
    shot = _screenshot(run_dir / "report.html", recording_proxy, tmp_path)
    page = (run_dir / "report.html").read_text()
    assert not any(host in page for host in BROWSER_SERVICE_HOSTS)
    assert page_requests(recording_proxy.requests) == [], "\n".join(recording_proxy.requests)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data)).convert("L")
    low, high = image.getextrema()
    assert high - low > 100, "the screenshot is blank"
    assert len(image.resize((120, 160)).getcolors(maxcolors=256 * 256) or []) > 10
