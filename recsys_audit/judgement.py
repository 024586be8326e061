"""The one judgement of an audit run: waivers, attestations, completeness, verdict and score.

Checks observe; this module judges. :func:`judge` is called twice in a run's life — when the run ends (``run.py``,
as of the day the run started) and when a reviewer signs it (``signoff.py``, as of the signing day, adding the
attestations the reviewer records) — and writes its result into ``findings.json``. Every other output (report, JUnit,
diff, archive, review widgets) reads that judgement with :func:`read_judged_run` and never decides a status itself.

Verdicts and exit codes, in order of precedence:

====  ==============  ===========================================================================================
code  verdict         when
====  ==============  ===========================================================================================
3     ``incomplete``  a notebook failed, or a check could not be evaluated (an unwaived ``error``). Wins over all:
                      the audit says nothing about what it missed.
1     ``fail``        an unwaived ``fail`` at or above ``--fail-on``. A defect found is a defect, even in a
                      partial run.
4     ``partial``     no such failure, but only some sections ran (``--sections``). Not a pass.
0     ``pass``        every section ran, every check was evaluated, no unwaived failure at or above ``--fail-on``.
====  ==============  ===========================================================================================

(2 is a usage error: nothing was judged.) The score is the share of ``pass`` among evaluated checks (pass, fail,
warn) and is given only for a complete run: an incomplete or partial run has no score.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from pathlib import Path
from typing import Any

from recsys_audit.findings import Finding, Severity, Status
from recsys_audit.params import Attestation, Params
from recsys_audit.rundir import RunDirError, read_document

SCHEMA_VERSION = 2  # of findings.json (recsys_audit/findings_schema.json)


class ExitCode(IntEnum):
    """What ``recsys-audit run`` returns; see the module docstring for the precedence."""

    PASSED = 0
    FAILED = 1
    USAGE = 2  # bad params or command line; nothing ran
    INCOMPLETE = 3
    PARTIAL = 4
    STORE_FAILED = 5  # the audit ran, but storing it (--out s3://…) failed; nothing was judged differently


VERDICTS = {
    ExitCode.PASSED: "pass",
    ExitCode.FAILED: "fail",
    ExitCode.USAGE: "usage error",
    ExitCode.INCOMPLETE: "incomplete",
    ExitCode.PARTIAL: "partial",
}
PRECEDENCE = (ExitCode.INCOMPLETE, ExitCode.FAILED, ExitCode.PARTIAL, ExitCode.PASSED)
EVALUATED = frozenset({Status.PASS, Status.FAIL, Status.WARN})
DECISIONS = ("approve", "approve-with-exceptions", "reject")


def overall_exit_code(codes: Iterable[int]) -> ExitCode:
    """The exit code of several audits: the one highest in precedence (incomplete > fail > partial > pass)."""
    present = set(codes)
    return next((code for code in PRECEDENCE if code in present), ExitCode.PASSED)


# --- what a run covered ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What the run covered, judged together with its findings."""

    fail_on: Severity
    sections: list[dict[str, Any]]  # sections that ran: number, title, notebook
    sections_not_run: list[dict[str, Any]] = field(default_factory=list)  # catalog sections left out (--sections)
    notebooks: list[dict[str, Any]] = field(default_factory=list)  # name, status, seconds, error, section

    @property
    def failed_notebooks(self) -> list[dict[str, Any]]:
        return [n for n in self.notebooks if n.get("status") != "ok"]

    def to_document(self) -> dict[str, Any]:
        return {
            "fail_on": str(self.fail_on),
            "sections": self.sections,
            "sections_not_run": self.sections_not_run,
            "notebooks": self.notebooks,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Scope:
        return cls(
            Severity(document.get("fail_on", "high")),
            list(document.get("sections", [])),
            list(document.get("sections_not_run", [])),
            list(document.get("notebooks", [])),
        )


# --- waivers and attestations ----------------------------------------------------------------------------------


def observed(finding: Finding) -> Finding:
    """The finding as its check recorded it: no waiver, no attestation (undoes :func:`judge`)."""
    plain = replace(finding, waiver=None, attestation=None)
    if finding.attestation is not None:
        plain.status = Status.MANUAL
        plain.summary = str(finding.attestation.get("check_summary", finding.summary))
    return plain


def _attestation_for(candidates: list[tuple[Attestation, str]], as_of: dt.date) -> tuple[Attestation, str] | None:
    """The newest attestation not dated after ``as_of`` (a sign-off one wins a tie), else the newest future one."""
    if not candidates:
        return None
    current = [c for c in candidates if c[0].date <= as_of]
    pool = current or candidates
    return max(pool, key=lambda c: (c[0].date, c[1] == "sign-off"))


def _attest(finding: Finding, attestation: Attestation, source: str, max_age: int, as_of: dt.date) -> None:
    age = (as_of - attestation.date).days
    expires = attestation.date + dt.timedelta(days=max_age)
    state = "future" if age < 0 else ("expired" if age > max_age else "applied")
    check_summary = finding.summary
    finding.attestation = {
        "applied": state == "applied",
        "state": state,
        "source": source,
        "by": attestation.by,
        "date": attestation.date.isoformat(),
        "evidence_url": attestation.evidence_url,
        "note": attestation.note,
        "age_days": age,
        "max_age_days": max_age,
        "expires": expires.isoformat(),
        "check_summary": check_summary,
    }
    who = f"{attestation.by} on {attestation.date}"
    if state == "applied":
        finding.status = Status.PASS
        finding.summary = f"attested by {who} ({attestation.evidence_url}), valid until {expires}"
    elif state == "expired":
        finding.summary = (
            f"{check_summary} — attestation by {who} expired on {expires} (policy: {max_age} days); attest again"
        )
    else:
        finding.summary = f"{check_summary} — attestation by {who} is dated in the future and does not count"


def _waive(finding: Finding, params: Params, as_of: dt.date) -> None:
    waivers = [w for w in params.waivers if w.check == finding.id]
    if not waivers or finding.status in {Status.PASS, Status.SKIP}:
        return
    waiver = max(waivers, key=lambda w: w.expires)
    applied = as_of <= waiver.expires
    finding.waiver = {
        "applied": applied,
        "justification": waiver.justification,
        "expires": waiver.expires.isoformat(),
        "approved_by": waiver.approved_by,
        "note": f"waived until {waiver.expires} by {waiver.approved_by}: {waiver.justification}"
        if applied
        else f"waiver expired on {waiver.expires} — the finding counts again",
    }


def _waiver_rows(findings: dict[str, Finding], params: Params, as_of: dt.date) -> list[dict[str, Any]]:
    rows = []
    for waiver in params.waivers:
        finding = findings.get(waiver.check)
        if waiver.expires < as_of:
            state = "expired"
        elif finding is not None and finding.waived:
            state = "applied"
        else:
            state = "unused"
        rows.append(
            {
                "check": waiver.check,
                "state": state,
                "justification": waiver.justification,
                "expires": waiver.expires.isoformat(),
                "approved_by": waiver.approved_by,
                "finding_status": str(finding.status) if finding else None,
            }
        )
    return rows


def _attestation_rows(
    findings: dict[str, Finding], candidates: list[tuple[Attestation, str]], max_age: int, as_of: dt.date
) -> list[dict[str, Any]]:
    rows = []
    for attestation, source in candidates:
        age = (as_of - attestation.date).days
        finding = findings.get(attestation.check)
        used = (finding.attestation if finding else None) or {}
        if age < 0:
            state = "future"
        elif age > max_age:
            state = "expired"
        elif used.get("applied") and used.get("source") == source and used.get("date") == attestation.date.isoformat():
            state = "applied"
        else:
            state = "unused"
        rows.append(
            {
                "check": attestation.check,
                "state": state,
                "source": source,
                "by": attestation.by,
                "date": attestation.date.isoformat(),
                "evidence_url": attestation.evidence_url,
                "note": attestation.note,
                "expires": (attestation.date + dt.timedelta(days=max_age)).isoformat(),
            }
        )
    return rows


# --- the judgement ---------------------------------------------------------------------------------------------


@dataclass
class Judgement:
    findings: list[Finding]
    as_of: dt.date
    exit_code: ExitCode
    blocking: list[str]  # ids of the findings that decided the verdict
    score: float | None
    completeness: dict[str, Any]
    waivers: list[dict[str, Any]]
    attestations: list[dict[str, Any]]

    @property
    def verdict(self) -> str:
        return VERDICTS[self.exit_code]

    def document_fields(self) -> dict[str, Any]:
        """The judged part of findings.json."""
        return {
            "judged_on": self.as_of.isoformat(),
            "verdict": self.verdict,
            "exit_code": int(self.exit_code),
            "blocking": self.blocking,
            "score": self.score,
            "completeness": self.completeness,
            "counts": {"by_status": counts_by_status(self.findings), "by_section": counts_by_section(self.findings)},
            "waivers": self.waivers,
            "attestations": self.attestations,
            "findings": [f.to_dict() for f in self.findings],
        }


def judge(
    findings: Iterable[Finding],
    params: Params,
    scope: Scope,
    as_of: dt.date,
    signoff_attestations: Sequence[Attestation] = (),
) -> Judgement:
    """Judge observed findings (see :func:`observed`) with the params' waivers, attestations (under
    ``policies.attestation_max_age_days``) and the attestations recorded at sign-off, as of a day."""
    judged = [observed(f) for f in findings]
    max_age = params.policies.attestation_max_age_days
    candidates = [(a, "params") for a in params.attestations] + [(a, "sign-off") for a in signoff_attestations]
    for finding in judged:
        if finding.status == Status.MANUAL:
            chosen = _attestation_for([c for c in candidates if c[0].check == finding.id], as_of)
            if chosen is not None:
                _attest(finding, *chosen, max_age, as_of)
        _waive(finding, params, as_of)

    errors = [f.id for f in judged if f.status == Status.ERROR and not f.waived]
    fails = [f.id for f in judged if f.status == Status.FAIL and not f.waived and f.severity.at_least(scope.fail_on)]
    evaluated = [f for f in judged if f.status in EVALUATED]
    complete = not errors and not scope.failed_notebooks and not scope.sections_not_run
    if errors or scope.failed_notebooks:
        exit_code, blocking = ExitCode.INCOMPLETE, errors
    elif fails:
        exit_code, blocking = ExitCode.FAILED, fails
    elif scope.sections_not_run:
        exit_code, blocking = ExitCode.PARTIAL, []
    else:
        exit_code, blocking = ExitCode.PASSED, []
    score = (
        round(sum(f.status == Status.PASS for f in evaluated) / len(evaluated), 4) if complete and evaluated else None
    )
    completeness = {
        "complete": complete,
        "checks": len(judged),
        "evaluated": len(evaluated),
        "passed": sum(f.status == Status.PASS for f in evaluated),
        "not_evaluated": [f.id for f in judged if f.status == Status.ERROR],
        "sections_not_run": [s["number"] for s in scope.sections_not_run],
        "notebooks_failed": [
            {"name": n["name"], "status": n["status"], "error": n.get("error")} for n in scope.failed_notebooks
        ],
    }
    by_id = {f.id: f for f in judged}
    return Judgement(
        judged,
        as_of,
        exit_code,
        blocking,
        score,
        completeness,
        _waiver_rows(by_id, params, as_of),
        _attestation_rows(by_id, candidates, max_age, as_of),
    )


def rejudge(
    document: dict[str, Any], params: Params, as_of: dt.date, signoff_attestations: Sequence[Attestation] = ()
) -> tuple[dict[str, Any], Judgement]:
    """findings.json judged again (sign-off): the same observations, today's waivers and attestations."""
    findings = [Finding.from_dict(f) for f in document["findings"]]
    judgement = judge(findings, params, Scope.from_document(document), as_of, signoff_attestations)
    return {**document, **judgement.document_fields()}, judgement


def counts_by_status(findings: Iterable[Finding]) -> dict[str, int]:
    counts = {str(status): 0 for status in Status}
    for finding in findings:
        counts[str(finding.status)] += 1
    return counts


def counts_by_section(findings: Iterable[Finding]) -> dict[str, dict[str, int]]:
    sections: dict[str, list[Finding]] = {}
    for finding in findings:
        sections.setdefault(str(finding.section), []).append(finding)
    return {number: counts_by_status(group) for number, group in sorted(sections.items(), key=lambda kv: int(kv[0]))}


# --- reading the judgement back --------------------------------------------------------------------------------


@dataclass
class JudgedRun:
    """A run directory's findings.json as judged (at the run, or at its sign-off)."""

    run_dir: Path
    document: dict[str, Any]
    findings: list[Finding]

    @property
    def env(self) -> str:
        return str(self.document["env"])

    @property
    def verdict(self) -> str:
        return str(self.document.get("verdict", ""))


def read_judged_run(run_dir: Path) -> JudgedRun:
    """findings.json of a run, read without following symlinks and bounded in size (RunDirError otherwise)."""
    document = read_document(Path(run_dir))
    if document.get("schema_version") != SCHEMA_VERSION:
        raise RunDirError(
            f"findings.json: schema version {document.get('schema_version')!r}, this kit reads {SCHEMA_VERSION} — "
            "re-run the audit with this kit"
        )
    try:
        findings = [Finding.from_dict(item) for item in document["findings"]]
    except (KeyError, ValueError, TypeError) as exc:
        raise RunDirError(f"findings.json: unreadable finding ({type(exc).__name__}: {exc})") from None
    return JudgedRun(Path(run_dir), document, findings)


# --- what the judgement says in words --------------------------------------------------------------------------


def _ids(ids: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", … ({len(ids) - limit} more)" if len(ids) > limit else "")


def not_evaluated_text(document: dict[str, Any]) -> str:
    """What the run did not evaluate, in one line ("" when it evaluated everything)."""
    completeness = document.get("completeness") or {}
    parts = []
    titles = {s["number"]: s.get("title", "") for s in document.get("sections_not_run", [])}
    if completeness.get("sections_not_run"):
        numbers = completeness["sections_not_run"]
        parts.append(
            "sections not run: " + ", ".join(f"{n} {titles.get(n, '')}".strip() for n in numbers) + " (--sections)"
        )
    if completeness.get("not_evaluated"):
        ids = completeness["not_evaluated"]
        parts.append(f"{len(ids)} check(s) not evaluated: {_ids(ids)}")
    for notebook in completeness.get("notebooks_failed", []):
        parts.append(
            f"notebook {notebook['name']} {notebook['status']}"
            + (f" ({notebook['error']})" if notebook.get("error") else "")
        )
    return "; ".join(parts)


def score_text(document: dict[str, Any]) -> str:
    """The score as shown everywhere: a percentage only for a complete run."""
    completeness = document.get("completeness") or {}
    evaluated, passed = completeness.get("evaluated", 0), completeness.get("passed", 0)
    score = document.get("score")
    if score is not None:
        return f"{score:.0%} ({passed} of {evaluated} evaluated checks pass)"
    if not evaluated:
        return "n/a (no check was evaluated)"
    verdict = document.get("verdict")
    reason = (
        verdict
        if verdict in {"incomplete", "partial"}
        else "partial"
        if completeness.get("sections_not_run")
        else "incomplete"
    )
    return f"n/a — {reason} run ({passed} of {evaluated} evaluated checks pass)"


# --- decisions -------------------------------------------------------------------------------------------------


def exceptions(findings: Iterable[Finding]) -> list[str]:
    """Ids of the findings a reviewer must accept to approve with exceptions: every unwaived fail and error."""
    return sorted(f.id for f in findings if f.status in {Status.FAIL, Status.ERROR} and not f.waived)


def decision_problem(decision: str, judgement: Judgement, accepted: Collection[str]) -> str | None:
    """Why a reviewer may not sign ``decision`` for this judgement (naming the fix), or None."""
    accepted = set(accepted)
    if decision not in DECISIONS:
        return f"--decision {decision!r}: choose one of {', '.join(DECISIONS)}"
    if decision == "reject":
        return "--accept goes with --decision approve-with-exceptions" if accepted else None
    if decision == "approve" and accepted:
        return "--accept goes with --decision approve-with-exceptions"
    not_run = judgement.completeness["sections_not_run"]
    if not_run:
        return (
            f"the audit is partial (sections {', '.join(map(str, not_run))} did not run) — an audit of some sections "
            "cannot be approved: run every section (no --sections) and sign that run, or --decision reject"
        )
    required = exceptions(judgement.findings)
    if decision == "approve":
        if judgement.exit_code == ExitCode.PASSED:
            return None
        if judgement.exit_code == ExitCode.FAILED:
            fix = "fix or waive them and re-run the audit"
        else:
            fix = "re-run the audit so that every check is evaluated"
        problem = f"the verdict is {judgement.verdict}"
        if required:
            problem += f" ({_ids(required)})"
            fix += f", or sign --decision approve-with-exceptions --accept {' '.join(required)}"
        return f"{problem} — approve needs a pass: {fix}"
    failed = [n["name"] for n in judgement.completeness["notebooks_failed"]]
    if not required:
        if failed:
            return f"notebook(s) {', '.join(failed)} failed — re-run the audit; there is no finding to accept"
        return "nothing to accept: no finding fails or errors — sign --decision approve"
    unknown = sorted(accepted - set(required))
    if unknown:
        return (
            f"--accept {' '.join(unknown)}: not a failing or erroring finding of this run "
            f"(the exceptions are: {' '.join(required)})"
        )
    missing = [i for i in required if i not in accepted]
    if missing:
        return f"every failing or erroring finding must be accepted by name — add --accept {' '.join(missing)}"
    return None


# --- params review (recsys-audit params check) -----------------------------------------------------------------


def _unknown_check(field_path: str, check: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(check, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "see 'recsys-audit checks' for the ids"
    return f"{field_path}: unknown check {check!r} — {hint}"


def review_params(params: Params, known_checks: Collection[str], today: dt.date) -> tuple[list[str], list[str]]:
    """(errors, warnings) about a params file's waivers and attestations: unknown check ids are errors; expired
    waivers and attestations too old (or dated in the future) to count are warnings."""
    errors, warnings = [], []
    max_age = params.policies.attestation_max_age_days
    for index, waiver in enumerate(params.waivers):
        where = f"waivers[{index}]"
        if waiver.check not in known_checks:
            errors.append(_unknown_check(f"{where}.check", waiver.check, known_checks))
        if waiver.expires < today:
            warnings.append(f"{where} ({waiver.check}): expired on {waiver.expires} — renew it or remove it")
    for index, attestation in enumerate(params.attestations):
        where = f"attestations[{index}]"
        if attestation.check not in known_checks:
            errors.append(_unknown_check(f"{where}.check", attestation.check, known_checks))
        age = (today - attestation.date).days
        if age > max_age:
            warnings.append(
                f"{where} ({attestation.check}): {age} days old, older than policies.attestation_max_age_days "
                f"({max_age}) — the check stays manual; attest again"
            )
        elif age < 0:
            warnings.append(
                f"{where} ({attestation.check}): dated {attestation.date}, in the future — it does not count"
            )
    return errors, warnings
