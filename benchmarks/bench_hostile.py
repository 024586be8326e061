"""Peak memory of a full audit against a hostile target, all processes together (the CLI and every kernel).

Starts a hardened sandbox, then for the normal target and for each hostile mode of tests/hostile_servers.py runs a
full ``recsys-audit run`` (all sections) whose target URLs point at the hostile server, and samples the memory of
the CLI process and all its descendants every 0.1 s: summed RSS (pages shared between kernels counted once per
process: pessimistic) and summed PSS (shared pages divided among the processes sharing them: what the machine
really holds). Figures only; nothing is asserted (the target is 400 MB for the whole run).

Usage: python benchmarks/bench_hostile.py [--modes huge,drip,…] [--jobs N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from bench_audit import MB, REPO, audit_command, hardened_sandbox, measured

sys.path.insert(0, str(REPO / "tests"))
from hostile_servers import MODES, HostileServer


def audit(params: Path, out: Path, jobs: int | None) -> tuple[float, int, dict[str, float]]:
    run = measured(audit_command([params], out, *(["--jobs", str(jobs)] if jobs else [])))
    return run.seconds, run.code, {"rss": run.peak_rss, "pss": run.peak_pss}


def pointing_at(server: HostileServer, mode: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["load_test"]["allowed"] = False
        if mode == "manifest":
            doc["manifests"]["template"] = server.url + "/registry/current/{tenant}/{surface}/manifest.json"
            return
        if mode != "giant-metrics":
            doc["target"]["base_url"] = server.url
        doc["metrics_url"] = server.url + "/metrics"
        doc["target"]["timeout_s"] = 1.0 if mode == "drip" else 3.0

    return change


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--jobs", type=int, default=None, help="kernels at once (default: the runner's)")
    args = parser.parse_args()
    modes = ["normal", *[m for m in args.modes.split(",") if m]]
    rows = []
    with hardened_sandbox() as (_instance, params), tempfile.TemporaryDirectory(prefix="bench-hostile-") as work:
        base = yaml.safe_load(params.read_text(encoding="utf-8"))
        for mode in modes:
            variant = params.with_name(f"bench-hostile-{mode}.yaml")
            server = HostileServer("ok" if mode == "normal" else mode)  # type: ignore[arg-type]
            with server:
                document = yaml.safe_load(yaml.safe_dump(base))
                if mode != "normal":
                    pointing_at(server, mode)(document)
                variant.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
                seconds, code, peaks = audit(variant, Path(work) / mode, args.jobs)
            rows.append((mode, seconds, code, peaks))
            print(
                f"  {mode:<14} {seconds:6.1f} s  exit {code}  peak RSS {peaks['rss'] / MB:7.0f} MB  "
                f"peak PSS {peaks['pss'] / MB:7.0f} MB",
                flush=True,
            )
    print("\nfull audit (all sections, load test off), all processes together:")
    print(f"{'target':<14} {'seconds':>8} {'exit':>5} {'peak RSS MB':>12} {'peak PSS MB':>12}")
    for mode, seconds, code, peaks in rows:
        print(f"{mode:<14} {seconds:8.1f} {code:5d} {peaks['rss'] / MB:12.0f} {peaks['pss'] / MB:12.0f}")


if __name__ == "__main__":
    main()
