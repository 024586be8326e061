"""Audit run directories for sign-off, diff, archive and widget tests, written by the runner's own code paths.

``build_run`` prepares a run with ``run._prepare`` (merged params copy, folders), appends findings with
``findings.append_finding`` as a notebook does, writes one executed-notebook file per section, and ends it with
``run._finish`` (merge, judgement, findings.json, junit.xml, report) — everything but the kernels.
Keys are real OpenSSH Ed25519 keys made by ``ssh-keygen``; trust is a real ``allowed_signers`` file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from recsys_audit import run as runner
from recsys_audit.catalog import Section
from recsys_audit.findings import Finding, Severity, Status, append_finding, passed
from recsys_audit.params import load_params
from recsys_audit.signatures import PublicKey, generate_key

OWNER = "Olga Owner"
REVIEWER = "Rita Reviewer"
RITA = "rita@example.com"

# check id -> (section, severity); the catalog of the fake runs
CHECKS = {
    "auth.dev-auth-disabled": (1, Severity.CRITICAL),
    "auth.cross-tenant-admin": (1, Severity.CRITICAL),
    "db.rls-enabled": (4, Severity.HIGH),
    "db.restore-tested": (4, Severity.HIGH),
    "obs.runbooks-exercised": (5, Severity.MEDIUM),
    "perf.pprof-off": (6, Severity.MEDIUM),
}
TITLES = {1: "Tenancy and auth", 4: "Database", 5: "Observability", 6: "Performance"}


def catalog() -> list[Section]:
    sections = {n: Section(n, title, notebook=f"{n:02d}_section") for n, title in TITLES.items()}
    for check_id, (number, severity) in CHECKS.items():
        sections[number].check(
            check_id,
            items=("0.serving-mode-per-tenant",),
            evidence="live",
            title=f"title of {check_id}",
            severity=severity,
            remediation="Fix it.",
        )(lambda ctx: passed("ok"))
    return list(sections.values())


@dataclass
class Signer:
    key: Path  # private key file
    public: PublicKey
    principal: str


def make_signer(folder: Path, principal: str = RITA, passphrase: str = "") -> Signer:
    key = folder / principal.split("@")[0]
    return Signer(key, generate_key(key, principal, passphrase=passphrase), principal)


def write_allowed_signers(path: Path, *signers: Signer) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(s.public.allowed_signers_line(s.principal) + "\n" for s in signers), encoding="utf-8")
    return path


def write_params(
    folder: Path,
    env: str = "staging",
    *,
    owner: str | None = OWNER,
    allow: bool = False,
    allowed_signers: Path | None = None,
    **fields: Any,
) -> Path:
    environment: dict[str, Any] = {"name": env, "allow_owner_signoff": allow}
    if owner:
        environment["owner"] = owner
    if allowed_signers:
        environment["allowed_signers"] = str(allowed_signers)
    data = {
        "environment": environment,
        "target": {"base_url": "http://127.0.0.1:9"},
        "tenants": [{"id": "acme", "surfaces": ["home"]}],
        **fields,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{env}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def build_run(
    root: Path,
    params_path: Path,
    stamp: str,
    statuses: Mapping[str, str],
    *,
    sections: Sequence[int] | None = None,
    failed_notebooks: Mapping[str, str] | None = None,
    fail_on: Severity = Severity.HIGH,
) -> Path:
    """``root/<env>/<stamp>/`` as the runner leaves it after these statuses were recorded."""
    full = catalog()
    chosen = [s for s in full if sections is None or s.number in sections]
    params = load_params(params_path)
    audit = runner._prepare(params_path, params, chosen, full, root, root)
    target = audit.run_dir.parent / stamp
    audit.run_dir.rename(target)
    audit.run_dir = target
    audit.started_at = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    by_number = {s.number: s for s in chosen}
    for check_id, status in statuses.items():
        number, severity = CHECKS[check_id]
        notebook = by_number[number].notebook
        finding = Finding(
            id=check_id,
            section=number,
            title=f"title of {check_id}",
            severity=severity,
            status=Status(status),
            summary=f"{check_id} is {status}",
            evidence={"probe": "GET /v1/status", "rows": [{"name": "a", "value": 1}]},
            remediation="Fix it.",
            reference="checklist",
            duration_s=0.01,
            items=["0.serving-mode-per-tenant"],
            notebook=notebook,
        )
        append_finding(target / "findings" / f"{notebook}.jsonl", finding)
    notebook_file = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    failures = dict(failed_notebooks or {})
    for section in chosen:
        (target / "notebooks" / f"{section.notebook}.ipynb").write_text(json.dumps(notebook_file))
        error = failures.get(section.notebook)
        audit.runs.append(runner.NotebookRun(section.notebook, "failed" if error else "ok", 0.1, error, section.number))
    runner._finish(audit, fail_on)
    return target


def findings_json(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "findings.json").read_text(encoding="utf-8"))


def statuses_in_findings_json(run_dir: Path) -> dict[str, str]:
    return {f["id"]: f["status"] for f in findings_json(run_dir)["findings"]}
