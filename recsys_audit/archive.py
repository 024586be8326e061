"""The audit archive: every audit run under ``audits/<env>/<run id>/`` or ``s3://bucket/prefix/<env>/<run id>/``
(:mod:`recsys_audit.storage`) with its verdict, counts and sign-off state; its index page is drawn by
:mod:`recsys_audit.render.archive`.

Each signed run is verified with the same rules as ``recsys-audit verify``: a signature by a trusted signer (the
``allowed_signers`` given, else the one the environment's params name), the run where its record says, exactly the
recorded entries. Folders and runs are listed without following symlinks, and at most ``MAX_LISTED`` of each;
runs in S3 whose upload has not finished (no manifest) are not listed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recsys_audit.judgement import read_judged_run
from recsys_audit.rundir import REPORT_FILE, RunDirError
from recsys_audit.signoff_record import verify_run
from recsys_audit.storage import IncompleteRun, RunStore, StoreError, open_store

TrustFor = Callable[[str], Path | None]  # environment name -> its allowed_signers file, if any


@dataclass
class ArchiveEntry:
    env: str
    run: str
    link: str  # relative to the archive root
    verdict: str
    counts: dict[str, int] = field(default_factory=dict)
    signer: str = ""
    decision: str = ""
    signed_at: str = ""
    state: str = "unsigned"  # unsigned | verified | failed | unreadable
    detail: str = ""


def archive_entry(root: Path, run_dir: Path, trust_for: TrustFor) -> ArchiveEntry:
    rel = run_dir.relative_to(root).as_posix()
    try:
        run = read_judged_run(run_dir)
    except RunDirError as exc:
        return ArchiveEntry(run_dir.parent.name, run_dir.name, rel, "", state="unreadable", detail=str(exc))
    entry = ArchiveEntry(
        env=run.env,
        run=run_dir.name,
        link=f"{rel}/{REPORT_FILE}",
        verdict=run.verdict,
        counts=dict(Counter(str(f.status) for f in run.findings)),
    )
    check = verify_run(run_dir, trust_for(run.env))
    record = check.record
    if record is None:
        unsigned = "not signed" in check.problem
        entry.state, entry.detail = ("unsigned", "") if unsigned else ("failed", check.problem)
        return entry
    entry.signer = f"{record.get('reviewer', '')} ({record.get('role', '')}) as {record.get('signer', '')}"
    entry.decision = str(record.get("decision", ""))
    entry.signed_at = str(record.get("signed_at", ""))
    if check.ok:
        entry.state, entry.detail = "verified", f"signed by trusted signer {record.get('signer')}"
    else:
        entry.state, entry.detail = "failed", check.problem
    return entry


def collect_entries(archive: Path | str | RunStore, trust_for: TrustFor) -> list[ArchiveEntry]:
    """Every run under ``<archive>/<env>/<run id>/`` (a folder, ``s3://…`` or a run store), newest first within each
    environment."""
    store = archive if not isinstance(archive, Path | str) else open_store(archive)
    entries = []
    for env in store.environments():
        for run in store.runs(env):
            try:
                with store.local_run(env, run) as run_dir:
                    entries.append(archive_entry(run_dir.parent.parent, run_dir, trust_for))
            except IncompleteRun:
                continue
            except StoreError as exc:
                entries.append(ArchiveEntry(env, run, f"{env}/{run}", "", state="unreadable", detail=str(exc)))
    newest_first = sorted(entries, key=lambda e: e.run, reverse=True)
    return sorted(newest_first, key=lambda e: e.env)


def trend(entries: list[ArchiveEntry]) -> dict[str, list[ArchiveEntry]]:
    """The runs of each environment, oldest first (their ``counts`` are the findings by status)."""
    return {env: sorted((e for e in entries if e.env == env), key=lambda e: e.run) for env in {e.env for e in entries}}
