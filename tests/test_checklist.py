"""The checklist as data: every bullet of the production-readiness checklist has an id and at least one check.

The seed checklist is read from ``RECSYS_AUDIT_CHECKLIST`` or ``../shared/seed/production-readiness-checklist.txt``
beside the repository; its bullets are split the way the page lists them (nested bullets and inline ``- `` runs).
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

import pytest

from recsys_audit import checklist
from recsys_audit.catalog import Check, all_checks, section_by_number
from recsys_audit.checklist import EvidenceClass
from recsys_audit.checks.config_rules import load_rules
from recsys_audit.cli import main
from recsys_audit.findings import Status

ROOT = Path(__file__).resolve().parents[1]
SEED = Path(
    os.environ.get("RECSYS_AUDIT_CHECKLIST", ROOT.parent / "shared" / "seed" / "production-readiness-checklist.txt")
)
_HEADER = re.compile(r"^(\d)\) .*¶$")


def seed_bullets(text: str) -> list[tuple[int, str]]:
    """(section, bullet text) for every bullet of sections 0–7, whitespace collapsed."""
    bullets: list[list[object]] = []
    section: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        header = _HEADER.match(line)
        if header:
            section = int(header.group(1))
            continue
        if line.startswith("Read next"):
            section = None
        if section is None:
            continue
        if line.startswith("See:"):  # links after a section's bullets
            bullets.append([section, None])
        elif line.startswith("-"):
            bullets.append([section, line[1:]])
        elif bullets and bullets[-1][1] is not None:
            bullets[-1][1] = f"{bullets[-1][1]} {line}"
    found = []
    for number, body in bullets:
        if body is None:
            continue
        for part in re.split(r"\s-\s|\s-$", f" {body} "):
            if part.strip():
                found.append((int(number), " ".join(part.split())))
    return found


@pytest.fixture(scope="module")
def bullets() -> list[tuple[int, str]]:
    if not SEED.is_file():
        pytest.skip(f"the seed checklist is not at {SEED} (set RECSYS_AUDIT_CHECKLIST)")
    return seed_bullets(SEED.read_text(encoding="utf-8"))


def test_every_seed_bullet_has_exactly_one_id(bullets: list[tuple[int, str]]) -> None:
    items = checklist.checklist()
    assert len(bullets) == len(items) == 59
    matched: dict[str, str] = {}
    for section, text in bullets:
        hits = [item for item in items.values() if item.anchor in text]
        assert len(hits) == 1, (text, [h.id for h in hits])
        assert hits[0].section == section, (text, hits[0].id)
        assert hits[0].id not in matched, (hits[0].id, matched.get(hits[0].id), text)
        matched[hits[0].id] = text
    assert set(matched) == set(items)


def test_item_ids_are_stable_and_well_formed() -> None:
    for item in checklist.checklist().values():
        assert re.fullmatch(r"[0-7]\.[a-z0-9-]+", item.id), item.id
        assert item.id.startswith(f"{item.section}."), item.id
        assert item.parent is None or checklist.checklist()[item.parent].section == item.section


def test_every_check_names_known_items_and_an_evidence_class() -> None:
    checks = all_checks().values()
    assert checklist.unknown_items(checks) == {}
    for check in checks:
        assert check.items and isinstance(check.evidence, EvidenceClass), check.id
        if check.evidence == EvidenceClass.ATTESTED and check.cannot_fail:
            assert check.cannot_fail.startswith("manual by design"), check.id


def test_every_bullet_is_covered_by_a_check() -> None:
    assert checklist.uncovered(all_checks().values()) == []
    rows = {row["id"]: row for row in checklist.coverage(all_checks().values())}
    assert {c["id"] for c in rows["1.dev-auth-disabled"]["checks"]} >= {
        "auth.dev-auth-disabled",
        "auth.dev-headers-refused",
    }
    assert rows["1.if-jwt"]["checks"] == [] and "auth.jwt-config" in rows["1.if-jwt"]["covered_by_children"]


def test_one_check_per_fact() -> None:
    checks = all_checks()
    for merged_away in ("rollout.manifest-rollback", "privacy.default-partition-rows"):
        assert merged_away not in checks
    rollback = checks["pipelines.rollback-manifest-retained"]
    assert set(rollback.items) == {"3.manifest-rollback", "7.manifest-procedure"}
    assert "db.default-partition-empty" in checks and "2.retention-access" in checks["db.default-partition-empty"].items


def test_config_rules_are_catalog_checks() -> None:
    checks = all_checks()
    rules = load_rules()
    assert len(rules) >= 10
    for rule in rules:
        check = checks[rule.id]
        assert check.section == rule.section and check.items == rule.items
        assert check.evidence == EvidenceClass.CONFIG and check.severity == rule.severity


def test_readme_lists_the_bullets_only_an_attestation_can_close() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Bullets only an attestation can close", 1)[1].split("\n#", 1)[0]
    listed = re.findall(r"^\| `([0-9]\.[a-z0-9-]+)` \|", section, re.M)
    assert listed == checklist.attested_only(all_checks().values())
    assert listed, "some bullets (CI preflight, shipping gates) can only be attested"


def test_checks_json_carries_items_and_evidence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checks", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    listed = [check for section in document["sections"] for check in section["checks"]]
    assert len(listed) == len(all_checks())
    for check in listed:
        assert check["items"] and check["evidence"] in {str(e) for e in EvidenceClass}
    matrix = {row["id"]: row for row in document["checklist"]}
    assert set(matrix) == set(checklist.checklist())
    assert {"id": "auth.dev-auth-disabled", "evidence": "config"} in matrix["1.dev-auth-disabled"]["checks"]


def test_checks_text_prints_the_coverage_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checks", "--section", "1"]) == 0
    out = capsys.readouterr().out
    assert "Checklist coverage" in out and "1.dev-auth-disabled" in out and "NOT COVERED" not in out
    assert re.search(r"auth\.dev-headers-refused\s+live", out)


# --- every check proven on a fake context ----------------------------------------------------------------------------

SECTION_TESTS = {
    0: "test_s0_serving_mode",
    1: "test_s1_tenancy_auth",
    2: "test_s2_data_privacy",
    3: "test_s3_pipelines",
    4: "test_s4_database",
    5: "test_s5_observability",
    6: "test_s6_performance",
    7: "test_s7_rollout",
}
# Sections whose test module does not list CASES for every check yet. Strict: once a section is proven, its
# entry must go (the xfail turns into a failure).
NOT_YET_PROVEN: set[int] = set()


def healthy(check: Check) -> set[Status]:
    """What a healthy input gets: pass — or manual for a check only an attestation closes (merged in later)."""
    return {Status.PASS, Status.MANUAL} if check.evidence == EvidenceClass.ATTESTED else {Status.PASS}


@pytest.mark.parametrize("number", sorted(SECTION_TESTS))
def test_every_check_is_proven_on_a_fake_context(number: int, request: pytest.FixtureRequest) -> None:
    if number in NOT_YET_PROVEN:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"section {number} has no fake-context CASES"))
    cases = getattr(importlib.import_module(SECTION_TESTS[number]), "CASES", [])
    expected: dict[str, set[Status]] = {}
    for case in cases:
        expected.setdefault(case.check, set()).add(case.expected)
    problems = []
    for check in section_by_number(number).checks.values():
        statuses = expected.get(check.id, set())
        if check.cannot_fail:
            if not statuses or Status.FAIL in statuses:
                problems.append(f"{check.id}: cannot fail by design, needs a case showing its non-pass status")
        elif Status.FAIL not in statuses or not statuses & healthy(check):
            problems.append(f"{check.id}: needs a passing and a failing case (has {sorted(statuses)})")
    assert not problems, problems
