"""Runs in S3: upload, checked copy, sign and verify of a run the size of a full audit, and the archive of many runs,
against a real S3 API on loopback (moto's server; a real bucket adds network latency per request).

The run is the one of bench_signoff.py (8 sections x 14 checks, eight 250 KB notebooks). Figures only.

Usage: python benchmarks/bench_storage.py [--runs 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import boto3
import yaml
from bench_signoff import PRINCIPAL, catalog, timed, write_run
from moto.server import ThreadedMotoServer

from recsys_audit.archive import collect_entries
from recsys_audit.signatures import generate_key
from recsys_audit.signoff import verify_run
from recsys_audit.storage import S3Store, open_run, sign, upload_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs in the archive")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL_S3=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="AKIABENCH",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        boto3.client("s3").create_bucket(Bucket="bench-archive")
        store = S3Store("bench-archive", "fleet")
        key = folder / "bench"
        public = generate_key(key, PRINCIPAL, passphrase="")
        trusted = folder / "allowed_signers"
        trusted.write_text(public.allowed_signers_line(PRINCIPAL) + "\n")
        params = folder / "bench.yaml"
        params.write_text(yaml.safe_dump({
            "environment": {"name": "bench", "allowed_signers": str(trusted)},
            "target": {"base_url": "http://127.0.0.1:9"}, "tenants": [{"id": "a", "surfaces": ["h"]}],
        }))  # fmt: skip
        sections = catalog()
        runs = [
            write_run(folder / "audits", params, f"202601{day + 1:02d}T000000Z", sections) for day in range(args.runs)
        ]
        size = sum(p.stat().st_size for p in runs[0].rglob("*") if p.is_file())
        files = sum(1 for p in runs[0].rglob("*") if p.is_file())
        upload_times = []
        for run in runs:
            started = time.perf_counter()
            upload_run(store, run)
            upload_times.append(time.perf_counter() - started)
        print(f"run: {files} files, {size / 1e6:.2f} MB; {args.runs} runs uploaded")
        print(
            f"upload (hash, files, write-once manifest), median: {sorted(upload_times)[len(upload_times) // 2]:.2f} s"
        )
        url = store.url("bench", runs[-1].name)

        def copy() -> None:
            with open_run(url):
                pass

        print(f"checked copy of a run (list, download, manifest), median of {args.repeats}: "
              f"{timed(copy, args.repeats)[0]:.2f} s")  # fmt: skip
        started = time.perf_counter()
        sign(url, reviewer="Bench", role="SRE", decision="approve", key_path=key)
        print(f"sign in S3 (copy, judge, hash, ssh-keygen, two write-once puts): {time.perf_counter() - started:.2f} s")

        def verify() -> None:
            with open_run(url) as run_dir:
                assert verify_run(run_dir, trusted).ok

        print(f"verify s3://…, median of {args.repeats}: {timed(verify, args.repeats)[0]:.2f} s")
        seconds, entries = timed(lambda: collect_entries(store, lambda env: trusted), 1)
        print(f"archive of {len(entries)} runs in S3 (every run copied, checked, verified): {seconds:.2f} s "
              f"({seconds / len(entries) * 1000:.0f} ms per run)")  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        server.stop()


if __name__ == "__main__":
    main()
