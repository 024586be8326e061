"""Manual checklist items that only an attestation in params can close, against the sandbox variants."""

from __future__ import annotations

import pytest

from recsys_audit.findings import Status

ATTESTED_ITEMS = [
    "privacy.salt-rotation-attested",
    "db.schema-rollback-documented",
    "rollout.procedures-documented",
    "rollout.ship-gates-documented",
]


@pytest.mark.parametrize("check_id", ATTESTED_ITEMS)
def test_attestation_closes_manual_item(audit_findings, check_id: str) -> None:
    attested = audit_findings("hardened")[check_id]
    assert attested.status == Status.PASS, attested.summary
    assert attested.attestation is not None and attested.attestation["applied"] is True
    assert attested.attestation["by"] == "Dana Reviewer"
    assert attested.attestation["evidence_url"].endswith(f"/evidence/{check_id}")
    assert 0 <= attested.attestation["age_days"] <= 180
    assert attested.summary.startswith("attested by Dana Reviewer") and attested.attestation["evidence_url"] in (
        attested.summary
    )

    unattested = audit_findings("as-shipped")[check_id]
    assert unattested.status == Status.MANUAL, unattested.summary
    assert unattested.attestation is None
    assert "attest" in unattested.summary
