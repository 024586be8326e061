"""What changed between two audits of one environment: new, resolved and persisting findings, status changes.

A finding is identified across runs by a stable fingerprint of environment and check id. Only problem statuses
(fail, warn, error, manual) count as findings; pass and skip are "no finding". Statuses are those the runs were judged
with (:mod:`recsys_audit.judgement`: at the run, or at its sign-off, attestations recorded then included) — the same
as in each run's findings.json and report.

"Since the last audit" in a report (:mod:`recsys_audit.render.diff`) compares with the newest earlier run of the
environment whose sign-off verifies with the trusted signers; earlier runs are read with the run directory's rules
(nothing followed, nothing special opened) and at most ``MAX_EARLIER_RUNS`` of them are examined.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recsys_audit.findings import Finding, Status
from recsys_audit.judgement import read_judged_run
from recsys_audit.rundir import RunDirError, earlier_runs, load_recorded_params
from recsys_audit.signoff_record import Verification, trusted_signers, verify_run

MAX_EARLIER_RUNS = 20
PROBLEM_STATUSES = frozenset({Status.FAIL, Status.WARN, Status.ERROR, Status.MANUAL})


class DiffError(Exception):
    """Two runs that cannot be compared; one line saying why."""


def fingerprint(env: str, check_id: str) -> str:
    return hashlib.sha256(f"{env}\x00{check_id}".encode()).hexdigest()[:16]


@dataclass
class Change:
    fingerprint: str
    check: str
    title: str
    severity: str
    old_status: str | None  # None: the check was not in that run
    new_status: str | None
    summary: str  # the newer summary when there is one


@dataclass
class AuditDiff:
    env: str
    old_run: str
    new_run: str
    new: list[Change] = field(default_factory=list)
    resolved: list[Change] = field(default_factory=list)
    persisting: list[Change] = field(default_factory=list)
    status_changes: list[Change] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "new": len(self.new),
            "resolved": len(self.resolved),
            "persisting": len(self.persisting),
            "status_changes": len(self.status_changes),
        }

    def headline(self) -> str:
        c = self.counts()
        return (
            f"{c['new']} new, {c['resolved']} resolved, {c['persisting']} persisting, "
            f"{c['status_changes']} status changes"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "old_run": self.old_run,
            "new_run": self.new_run,
            "counts": self.counts(),
            **{name: [asdict(c) for c in getattr(self, name)] for name in self.counts()},
        }

    def text(self) -> str:
        lines = [f"{self.env}: {self.old_run} -> {self.new_run}: {self.headline()}"]
        for name, changes in (("new", self.new), ("resolved", self.resolved), ("persisting", self.persisting)):
            for c in changes:
                shown = c.new_status if name != "resolved" else f"{c.old_status} -> {c.new_status or 'absent'}"
                lines.append(f"  {name:<10} {c.fingerprint}  {c.check:<40} {shown:<16} {c.severity}")
        for c in self.status_changes:
            lines.append(
                f"  {'status':<10} {c.fingerprint}  {c.check:<40} {c.old_status or 'absent'} -> {c.new_status}"
            )
        return "\n".join(lines)


def _change(env: str, check: str, old: Finding | None, new: Finding | None) -> Change:
    latest = new or old
    assert latest is not None
    return Change(
        fingerprint=fingerprint(env, check),
        check=check,
        title=latest.title,
        severity=str(latest.severity),
        old_status=str(old.status) if old else None,
        new_status=str(new.status) if new else None,
        summary=latest.summary,
    )


def diff_findings(env: str, old_run: str, new_run: str, old: list[Finding], new: list[Finding]) -> AuditDiff:
    before = {f.id: f for f in old}
    after = {f.id: f for f in new}
    result = AuditDiff(env, old_run, new_run)
    for check in sorted(set(before) | set(after)):
        was, now = before.get(check), after.get(check)
        was_problem = was is not None and was.status in PROBLEM_STATUSES
        is_problem = now is not None and now.status in PROBLEM_STATUSES
        change = _change(env, check, was, now)
        if is_problem and not was_problem:
            result.new.append(change)
        elif was_problem and not is_problem:
            result.resolved.append(change)
        elif was_problem and is_problem:
            result.persisting.append(change)
        if was is not None and now is not None and was.status != now.status:
            result.status_changes.append(change)
    return result


def diff_runs(old_dir: Path, new_dir: Path) -> AuditDiff:
    """Compare two run directories of the same environment, as each was judged."""
    try:
        old_run, new_run = read_judged_run(Path(old_dir)), read_judged_run(Path(new_dir))
    except RunDirError as exc:
        raise DiffError(str(exc)) from None
    if old_run.env != new_run.env:
        raise DiffError(
            f"{old_dir} audits {old_run.env!r} but {new_dir} audits {new_run.env!r} — compare one environment"
        )
    return diff_findings(new_run.env, Path(old_dir).name, Path(new_dir).name, old_run.findings, new_run.findings)


@dataclass
class PreviousRun:
    run_dir: Path | None  # the newest earlier run whose sign-off verifies, if any
    verification: Verification | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (run id, why) of newer earlier runs passed over
    note: str = ""  # why nothing was compared


def previous_signed_run(run_dir: Path, allowed_signers: Path | None, limit: int = MAX_EARLIER_RUNS) -> PreviousRun:
    """The newest of the ``limit`` runs before ``run_dir`` (same environment folder) that verifies with the trusted
    signers. Without trusted signers nothing is compared: an unverified run is no baseline."""
    if allowed_signers is None:
        return PreviousRun(None, note="no trusted signers are configured (environment.allowed_signers)")
    skipped = []
    for candidate in earlier_runs(Path(run_dir), limit):
        check = verify_run(candidate, allowed_signers)
        if check.ok:
            return PreviousRun(candidate, check, skipped)
        if check.signed or "not signed" not in check.problem:
            skipped.append((candidate.name, check.problem))
    return PreviousRun(None, skipped=skipped, note=f"none of the {limit} newest earlier runs has a valid sign-off")


def run_trust(run_dir: Path) -> Path | None:
    """The trusted signers the run's own recorded params name (the audit's configuration)."""
    try:
        run = read_judged_run(run_dir)
        return trusted_signers(load_recorded_params(run_dir, run.document))
    except RunDirError:
        return None
