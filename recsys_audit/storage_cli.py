"""``recsys-audit run … --out s3://…`` and ``recsys-audit upload``: audits stored in S3 (:mod:`recsys_audit.storage`).

Exit codes: those of ``run`` (0 pass, 1 fail, 2 usage, 3 incomplete, 4 partial) once every run is stored; 5 when an
audit ran but could not be stored — its run directory stays in the work folder, named in the message, and
``recsys-audit upload RUN_DIR s3://…`` stores it later.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recsys_audit.judgement import ExitCode, overall_exit_code
from recsys_audit.redaction import redact_text
from recsys_audit.storage import S3Store, StoreError, claim_run, is_remote, upload_run


def _say(message: str) -> None:
    print(f"recsys-audit: {redact_text(message)}", file=sys.stderr)


def _stored_exit_code(store: S3Store, env_folder: str, run: str) -> int:
    """The exit code a stored run was judged with (its findings.json), to answer a retried trigger the same way."""
    from recsys_audit.judgement import read_judged_run
    from recsys_audit.rundir import RunDirError

    try:
        with store.local_run(env_folder, run) as run_dir:
            return int(read_judged_run(run_dir).document.get("exit_code", ExitCode.INCOMPLETE))
    except (StoreError, RunDirError):
        return int(ExitCode.INCOMPLETE)


def run_into_store(
    params_paths: Sequence[Path],
    out: str,
    *,
    trigger: str | None,
    deployed_version: str | None,
    work_dir: str | None,
    run: Callable[..., list[Any]],
    summarise: Callable[[list[Any]], None],
) -> int:
    """Audit the environments into a local work folder, then store each finished run in S3 (files, manifest last).

    With a trigger, each environment's run id is claimed first (write-once), so a retried trigger reuses it, and an
    environment whose run is stored already is not audited again (its stored verdict decides the exit code).
    ``run(params_paths, out_dir=…, run_ids=…)`` runs the audits (the runner's ``run_many``)."""
    from recsys_audit.params import load_params
    from recsys_audit.rundir import env_folder

    store = S3Store.from_url(out)
    envs = [load_params(path, resolve_secrets=False).environment.name for path in params_paths]
    started = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_ids: dict[str, str] = {}
    codes: list[int] = []
    to_run = []
    for path, env in zip(params_paths, envs, strict=True):
        if trigger:
            try:
                claim = claim_run(store, env, trigger, deployed_version, started)
            except StoreError as exc:
                _say(f"{env}: not audited: the run id of trigger {trigger!r} cannot be claimed in {out}: {exc}")
                return int(ExitCode.STORE_FAILED)
            if claim.stored:
                location = store.url(env_folder(env), claim.run)
                _say(f"{env}: trigger {trigger!r} is stored already as {location} — not audited again")
                print(location)
                codes.append(_stored_exit_code(store, env_folder(env), claim.run))
                continue
            run_ids[env] = claim.run
        to_run.append(path)
    staging = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="recsys-audit-work-"))
    results = run(to_run, out_dir=staging, run_ids=run_ids) if to_run else []
    summarise(results)
    stored_all = True
    for result in results:
        codes.append(result.exit_code)
        try:
            location = upload_run(store, result.run_dir, trigger=trigger, deployed_version=deployed_version)
        except StoreError as exc:
            stored_all = False
            _say(
                f"{result.env}: the audit ran but was NOT stored: {exc} — the run stays in {result.run_dir}; "
                f"store it with: recsys-audit upload {result.run_dir} {out}"
            )
            continue
        print(location)
    return int(overall_exit_code(codes)) if stored_all else int(ExitCode.STORE_FAILED)


def upload_command(args: argparse.Namespace) -> int:
    if not is_remote(args.destination):
        _say(f"upload: {args.destination}: give an s3://BUCKET/PREFIX destination")
        return int(ExitCode.USAGE)
    try:
        store = S3Store.from_url(args.destination)
        location = upload_run(store, Path(args.run_dir), trigger=args.trigger, deployed_version=args.deployed_version)
    except StoreError as exc:
        _say(f"upload: {args.run_dir} NOT stored: {exc}")
        return int(ExitCode.STORE_FAILED)
    print(location)
    return 0


def add_run_options(run: argparse.ArgumentParser) -> None:
    """The options of ``recsys-audit run`` that concern where runs are stored."""
    run.add_argument(
        "--trigger",
        help="what started this run, e.g. the Kubernetes Job name (with --out s3://: the run's identity, "
        "with the environment and --deployed-version; a retry with the same trigger stores no second run)",
    )
    run.add_argument("--deployed-version", help="the version of recsys-service this audit follows (with --trigger)")
    run.add_argument(
        "--work-dir", help="with --out s3://: local folder for the run before upload (default: a new temporary one)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    upload = subparsers.add_parser(
        "upload", help="store a finished run directory in S3 (files, then a write-once manifest)"
    )
    upload.add_argument("run_dir", metavar="RUN_DIR", help="audits/ENV/RUN_ID, unsigned")
    upload.add_argument("destination", metavar="s3://BUCKET/PREFIX")
    upload.add_argument("--trigger", help="recorded in the manifest")
    upload.add_argument("--deployed-version", help="recorded in the manifest")
    upload.set_defaults(handler=upload_command)
