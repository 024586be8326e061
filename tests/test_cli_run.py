"""The run command as a person sees it: a progress line per notebook as it ends, the preflight's unreachable
endpoints named once, and a closing list of failing and erroring check ids by severity (real papermill runs of the
engine fixture notebooks; the target of their params is never up)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "engine"))

from engine_support import NOTEBOOKS, days_from_today, kernel_environment, write_params

from recsys_audit.run import NotebookRun, Progress

UNREACHABLE_TARGET = "target unreachable: connection refused at http://127.0.0.1:9"
UNREACHABLE_DATABASE = "database unreachable: no server at 127.0.0.1 port 9 (connection refused or not running)"


def test_progress_preflight_and_closing_summary(tmp_path: Path) -> None:
    waiver = {"check": "h.fail-high", "justification": "compensating control in the gateway",
              "expires": days_from_today(30), "approved_by": "ciso"}  # fmt: skip
    params = write_params(tmp_path, waivers=[waiver])
    command = [sys.executable, "-m", "recsys_audit.cli", "run", str(params), "--sections", "0,1", "--catalog",
               "engine_fixture_checks", "--notebooks", str(NOTEBOOKS), "--out", str(tmp_path / "audits"),
               "--format", "html,sarif", "--format", "csv", "--timeout", "60"]  # fmt: skip
    env = {**os.environ, **kernel_environment()}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 3, done.stderr
    lines = done.stderr.splitlines()
    assert "\x1b" not in done.stderr, "no terminal codes when stderr is not a terminal"
    assert lines[:2] == [
        f"engine-fixture: {UNREACHABLE_TARGET} — the checks that need it will not be evaluated",
        f"engine-fixture: {UNREACHABLE_DATABASE} — the checks that need it will not be evaluated",
    ]
    progress = sorted(lines[2:4], key=lambda line: line.split()[1])
    assert re.fullmatch(r"\[[12]/2\] 00_healthy  2 fail 1 warn  \d+\.\d s", progress[0]), progress
    assert re.fullmatch(
        r"\[[12]/2\] 01_raises   2 not evaluated  \d+\.\d s  \(failed: RuntimeError: database exploded\)", progress[1]
    ), progress
    assert {line[:5] for line in progress} == {"[1/2]", "[2/2]"}
    assert lines[4].startswith("engine-fixture: incomplete (exit 3; 2 error, 2 fail, 1 manual, 2 pass, 1 skip, 1 warn;")
    assert lines[5:] == [
        f"  {UNREACHABLE_TARGET}; {UNREACHABLE_DATABASE}; 2 checks not evaluated",
        "  fail   low       h.fail-low",
        "  error  high      r.second",
        "  error  low       r.third",
        "  waived           h.fail-high",
    ]
    run_dir = Path(done.stdout.strip()).parent
    assert sorted(p.name for p in run_dir.iterdir() if p.is_file()) == [
        "findings.csv",
        "findings.json",
        "findings.sarif",
        "params.yaml",
        "report.html",
    ]  # fmt: skip  (no junit.xml: not chosen)
    document = json.loads((run_dir / "findings.json").read_text(encoding="utf-8"))
    assert document["connectivity"] == [
        {"endpoint": "target", "where": "http://127.0.0.1:9", "problem": "connection refused at http://127.0.0.1:9",
         "reachable": False},
        {"endpoint": "database", "where": "database",
         "problem": "no server at 127.0.0.1 port 9 (connection refused or not running)", "reachable": False},
    ]  # fmt: skip


def test_quiet_prints_only_the_report_path(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "recsys_audit.cli", "run", str(write_params(tmp_path)), "--sections", "0",
               "--catalog", "engine_fixture_checks", "--notebooks", str(NOTEBOOKS), "--out", str(tmp_path / "a"),
               "--quiet"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240,
                          env={**os.environ, **kernel_environment()})  # fmt: skip
    assert done.returncode == 1 and done.stderr == ""  # h.fail-high fails: fail wins over partial
    assert done.stdout.strip().endswith("report.html") and len(done.stdout.splitlines()) == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_draws_a_bar_below_the_finished_lines() -> None:
    terminal = Terminal()
    progress = Progress(["00_one", "01_two"], True, terminal)
    progress.started("00_one")
    progress.started("01_two")
    deadline = time.monotonic() + 10
    while not re.search(r"0/2 +\d\d:\d\d, running: 00_one \d+ s, 01_two \d+ s", terminal.getvalue()):
        assert time.monotonic() < deadline, terminal.getvalue()
        time.sleep(0.05)
    progress.finished("01_two", NotebookRun("01_two", "ok", 2.34), ["fail", "pass", "warn", "fail"], 0)
    progress.close()
    screen = terminal.getvalue()
    assert "\r[1/2] 01_two  2 fail 1 warn  2.3 s\n" in screen, screen  # the bar is cleared, the line written
    assert re.search(r"\r1/2 #+ +\d\d:\d\d, running: 00_one \d+ s\s*\r", screen), screen  # 01_two is done
    assert screen.endswith("\r"), "the bar is removed at the end"


def test_progress_off_the_terminal_is_plain_lines() -> None:
    stream = io.StringIO()
    progress = Progress(["00_one", "01_two"], True, stream)
    progress.note("env: target unreachable: connection refused at http://x")
    progress.finished("00_one", NotebookRun("00_one", "ok", 1.0), ["pass"], 0)
    progress.finished("01_two", NotebookRun("01_two", "timeout", 8.0, "timeout after 8 s"), ["pass"], 3)
    progress.close()
    assert stream.getvalue().splitlines() == [
        "env: target unreachable: connection refused at http://x",
        "[1/2] 00_one  no failures  1.0 s",
        "[2/2] 01_two  3 not evaluated  8.0 s  (timeout: timeout after 8 s)",
    ]
    silent = io.StringIO()
    quiet = Progress(["00_one"], False, silent)
    quiet.note("x")
    quiet.finished("00_one", NotebookRun("00_one", "ok", 1.0), ["fail"], 0)
    quiet.close()
    assert silent.getvalue() == ""
