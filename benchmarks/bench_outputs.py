"""What part B of the CLI costs: each output format written from a full-size findings.json, the params loader on a
clean and on a broken file, and the connectivity preflight against a closed port and a server that never answers.

A run of 8 sections x 14 checks (evidence: a 30-row table each, a fifth of them failing) is written by the runner's
own code (``run._prepare`` / ``run._finish``). Figures only; nothing is asserted (targets: every format well under a
second, the preflight within one target timeout).

Usage: python benchmarks/bench_outputs.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from recsys_audit import run as runner
from recsys_audit.catalog import Section
from recsys_audit.findings import Finding, Severity, Status, append_finding, passed
from recsys_audit.outputs import OUTPUTS, write_outputs
from recsys_audit.params import ParamsError, load_params
from recsys_audit.preflight import check_all

ROOT = Path(__file__).resolve().parents[1]


def catalog() -> list[Section]:
    sections = []
    for number in range(8):
        section = Section(number, f"Section {number}", notebook=f"{number:02d}_section")
        for index in range(14):
            section.check(f"s{number}.check-{index}", items=("0.serving-mode-per-tenant",), evidence="live",
                          title=f"check {index}",
                          severity=list(Severity)[index % 5], remediation="Do this, then that.")(
                lambda ctx: passed("ok")
            )  # fmt: skip
        sections.append(section)
    return sections


def write_run(root: Path, params_path: Path) -> Path:
    sections = catalog()
    audit = runner._prepare(params_path, load_params(params_path), sections, sections, root, root)
    for section in sections:
        for index, check in enumerate(section.checks.values()):
            status = Status.FAIL if index % 5 == 0 else Status.PASS
            evidence = {"probe": "GET /v1/admin/config", "rows": [{"tenant": "demo", "row": i} for i in range(30)]}
            finding = Finding(check.id, section.number, check.title, check.severity, status, f"{check.id}: {status}",
                              evidence, check.remediation, "", 0.01, items=list(check.items),
                              notebook=section.notebook)  # fmt: skip
            append_finding(audit.run_dir / "findings" / f"{section.notebook}.jsonl", finding)
        audit.runs.append(runner.NotebookRun(section.notebook, "ok", 1.0, None, section.number))
    runner._finish(audit, Severity.HIGH, ["json"])
    return audit.run_dir


def median_s(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-outputs-") as name:
        folder = Path(name)
        params = folder / "bench.yaml"
        params.write_text(yaml.safe_dump({
            "environment": {"name": "bench"}, "target": {"base_url": "http://127.0.0.1:9", "timeout_s": 2},
            "tenants": [{"id": "a", "surfaces": ["h"]}],
        }))  # fmt: skip
        run_dir = write_run(folder / "audits", params)
        findings = (run_dir / "findings.json").stat().st_size
        print(f"findings.json: 112 findings, {findings / 1e3:.0f} kB")
        for output in OUTPUTS.values():
            if output.write is None:
                continue
            seconds = median_s(lambda output=output: write_outputs(run_dir, [output.name]), args.repeats)
            size = (run_dir / output.file).stat().st_size
            print(f"  {output.name:<6} {output.file:<20} {seconds * 1000:7.0f} ms  {size / 1e3:7.0f} kB")

        local = ROOT / "params" / "local.yaml"
        seconds = median_s(lambda: _problems(local), args.repeats)
        print(f"params/local.yaml without a sandbox (one grouped problem): {seconds * 1000:.0f} ms")
        broken = folder / "broken.yaml"
        broken.write_text(
            yaml.safe_dump({
                "environment": {"name": "bench", "ownr": "x"}, "target": {"base_url": "ftp://x", "timeout_s": "soon"},
                "tenants": [{"id": "a", "surfaces": []}], "policies": {k: "x" for k in ("manifest_max_age_s",
                "signal_max_age_days", "latency_p95_ms", "error_ratio_max", "backup_max_age_h")},
                "auth": {"mechanisms": ["saml"] * 10}, "waivers": [{"check": "x"}] * 5,
            })
        )  # fmt: skip
        count = _problems(broken)
        seconds = median_s(lambda: _problems(broken), args.repeats)
        print(f"a params file with {count} problems, all reported: {seconds * 1000:.0f} ms")

        closed = _free_port()
        with socket.socket() as hanging:
            hanging.bind(("127.0.0.1", 0))
            hanging.listen()
            targets = [f"http://127.0.0.1:{closed}", f"http://127.0.0.1:{hanging.getsockname()[1]}"]
            loaded = []
            for index, url in enumerate(targets):
                path = folder / f"preflight-{index}.yaml"
                path.write_text(yaml.safe_dump({"environment": {"name": f"p{index}"},
                                                "target": {"base_url": url, "timeout_s": 2},
                                                "tenants": [{"id": "a", "surfaces": ["h"]}]}))  # fmt: skip
                loaded.append(load_params(path))
            seconds = median_s(lambda: check_all(loaded[:1]), args.repeats)
            print(f"preflight, target port closed: {seconds * 1000:.0f} ms")
            seconds = median_s(lambda: check_all(loaded), 1)
            print(f"preflight, two environments, one never answering (timeout_s 2): {seconds:.2f} s")


def _problems(path: Path) -> int:
    try:
        load_params(path)
    except ParamsError as exc:
        return len(str(exc).splitlines())
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
