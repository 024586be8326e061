"""Cross-check the kit's live load test against wrk on the same endpoint.

Starts a hardened sandbox, runs the kit's bounded live load test (POST /v1/recommend, N requests at concurrency C),
then wrk with the same concurrency, body shape, credentials and roughly the same duration, alternating for a few
rounds (the machine's background load varies), and prints the median percentiles of both. Exit status 1 when
a percentile differs by more than the tolerance (default 25%).

The default concurrency is low on purpose: at a concurrency that saturates the server, a closed-loop client's
latency is concurrency / throughput, and on a small shared machine the Python client's own CPU use lowers that
throughput; wrk (C) does not. Below saturation both measure the service.

    .venv/bin/python benchmarks/bench_loadtest.py [--requests 600] [--concurrency 2] [--rounds 3] [--tolerance 0.25]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recsys_audit.context import AuditContext
from recsys_audit.params import load_params
from recsys_audit.probes.loadtest import Reply, recommend_sender, run_load_test

WRK_SCRIPT = """
wrk.method = "POST"
local identities = {{ {identities} }}
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{{"surface":"{surface}","k":20,"user":{{"user_id":"wrk-load-%d"}}}}', counter % 1000)
  return wrk.format(nil, nil, identities[counter % #identities + 1], body)
end
done = function(summary, latency, requests)
  io.write(string.format("WRK_RESULT {{\\"p50\\":%f,\\"p95\\":%f,\\"p99\\":%f,\\"requests\\":%d,\\"non2xx\\":%d}}\\n",
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    summary.requests, summary.errors.status))
end
"""


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_table(headers: dict[str, str]) -> str:
    entries = [
        f"[{lua_string(k)}] = {lua_string(v)}" for k, v in {**headers, "Content-Type": "application/json"}.items()
    ]
    return "{" + ", ".join(entries) + "}"


def run_wrk(
    url: str, identities: list[dict[str, str]], surface: str, concurrency: int, seconds: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as folder:
        script = Path(folder) / "recommend.lua"
        script.touch(mode=0o600)  # holds the credential for the duration of the run only
        script.write_text(
            WRK_SCRIPT.format(identities=", ".join(lua_table(h) for h in identities), surface=surface),
            encoding="utf-8",
        )
        done = subprocess.run(
            ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), url],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    for line in done.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            return json.loads(line.removeprefix("WRK_RESULT "))
    raise SystemExit(f"wrk gave no result (exit {done.returncode}): {done.stderr.strip()[:200]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating kit/wrk rounds; medians are compared")
    parser.add_argument("--tolerance", type=float, default=0.25)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not installed (Debian package 'wrk')", file=sys.stderr)
        return 1
    from recsys_audit.sandbox.harness import start_sandbox

    kit_rounds: list[dict[str, float]] = []
    wrk_rounds: list[dict[str, float]] = []
    clean = True
    with tempfile.TemporaryDirectory(prefix="bench-loadtest-") as folder:
        sandbox = start_sandbox(Path(folder), profile="hardened")
        try:
            ctx = AuditContext(load_params(sandbox.params_path), Path(folder) / "run")
            tenant = ctx.params.tenants[0]
            surface = tenant.surfaces[0]
            url = ctx.service.base_url + "/v1/recommend"
            # Requests rotate over every identity in params, in both tools: the tenant rate limiter keys on the
            # caller, and one caller's bucket would turn a closed-loop run into a 429 measurement.
            roles = [r for r in ("viewer", "operator", "admin", "no_role") if ctx.service.has_role(r)]
            senders = [recommend_sender(ctx.service, tenant.id, surface, role=r) for r in roles]
            identities = [{**ctx.service.auth_headers(r), ctx.params.auth.tenant_header: tenant.id} for r in roles]

            def sender(index: int) -> Reply:
                return senders[index % len(senders)](index)

            run_load_test(sender, 300, args.concurrency, 20)  # warm-up: caches and connections
            for number in range(1, args.rounds + 1):
                time.sleep(2)  # let the rate-limit buckets refill
                run = run_load_test(sender, args.requests, args.concurrency, 120)
                assert run.sent <= args.requests and run.peak_in_flight <= args.concurrency, "caps exceeded"
                seconds = max(3, round(run.elapsed_s))
                time.sleep(2)
                theirs = run_wrk(url, identities, surface, args.concurrency, seconds)
                kit_rounds.append(run.percentiles())
                wrk_rounds.append(theirs)
                rejected = sum(n for code, n in run.status_codes.items() if code != 200) + run.transport_errors
                clean = clean and not rejected and not theirs["non2xx"]
                print(
                    f"round {number}: kit {run.sent} req in {run.elapsed_s:.1f} s ({run.sent / run.elapsed_s:.0f} rps,"
                    f" non-200 {rejected}) {kit_rounds[-1]}; wrk {int(theirs['requests'])} req in {seconds} s "
                    f"({theirs['requests'] / seconds:.0f} rps, non-2xx {int(theirs['non2xx'])}) "
                    + str({k: round(theirs[k], 2) for k in ("p50", "p95", "p99")})
                )
            for each in senders:
                each.close()
            ctx.close()
        finally:
            sandbox.stop()

    print(f"{'median of':<11}{'kit ms':>10}{'wrk ms':>10}{'diff':>9}")
    worst = 0.0
    for name in ("p50", "p95", "p99"):
        ours = statistics.median(r[name] for r in kit_rounds)
        theirs_ms = statistics.median(r[name] for r in wrk_rounds)
        diff = abs(ours - theirs_ms) / theirs_ms if theirs_ms else float("inf")
        worst = max(worst, diff)
        print(f"{name:<11}{ours:>10.2f}{theirs_ms:>10.2f}{diff:>9.1%}")
    if not clean:
        print("not comparable: a run got non-2xx answers or transport errors (rate limit or overload)")
        return 1
    verdict = "agree" if worst <= args.tolerance else "DISAGREE"
    print(f"percentiles {verdict} within {args.tolerance:.0%} (largest difference {worst:.1%})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
