"""The archive index: every audit per environment with verdict, counts, signer and verification (the same trust rules
as verify), linked offline."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from run_fixtures import REVIEWER, build_run, make_signer, write_allowed_signers, write_params
from test_signoff import STATUSES

from recsys_audit.archive import collect_entries
from recsys_audit.signoff import sign_run
from recsys_audit.signoff_cli import main


class _Rows(HTMLParser):
    """Table rows of one class (``tr class='ra-run …'``) of the index page as lists of cell texts, plus every link."""

    def __init__(self, row_class: str = "ra-run") -> None:
        super().__init__()
        self.row_class = row_class
        self.rows: list[list[str]] = []
        self.links: list[str] = []
        self._cell: list[str] | None = None
        self._in_row = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._in_row = self.row_class in (dict(attrs).get("class") or "").split()
            if self._in_row:
                self.rows.append([])
        elif tag == "td" and self._in_row:
            self._cell = []
        elif tag == "a":
            self.links.append(dict(attrs)["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "audits"
    rita, sam = make_signer(tmp_path / "keys"), make_signer(tmp_path / "keys", "sam@example.com")
    trusted = write_allowed_signers(tmp_path / "trusted", rita)  # what the archive's reader trusts
    sams_own = write_allowed_signers(tmp_path / "sams_own", sam)
    staging = write_params(tmp_path / "params", "staging", allowed_signers=trusted)
    production = write_params(tmp_path / "params", "production", allowed_signers=sams_own)
    signed = build_run(root, staging, "20250301T100000Z", STATUSES)
    sign_run(signed, reviewer=REVIEWER, role="SRE lead", decision="reject", key_path=rita.key)
    build_run(root, staging, "20250302T100000Z", STATUSES)  # not signed
    tampered = build_run(root, staging, "20250303T100000Z", STATUSES)
    sign_run(tampered, reviewer=REVIEWER, role="SRE lead", decision="reject", key_path=rita.key)
    (tampered / "findings.json").write_text((tampered / "findings.json").read_text().replace('"fail"', '"pass"'))
    prod = build_run(root, production, "20250301T120000Z", {**STATUSES, "auth.cross-tenant-admin": "pass"})
    sign_run(prod, reviewer="Sam", role="SecEng", decision="approve", key_path=sam.key)
    (root / "staging" / "notes").mkdir()  # not a run
    (root / "elsewhere").symlink_to(tmp_path / "params")  # never followed
    return root, trusted


def test_index_lists_every_audit_with_state_and_relative_links(
    archive: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, trusted = archive
    assert main(["archive", str(root), "--allowed-signers", str(trusted)]) == 1  # one run fails verification
    assert "4 audits, 2 failing verification" in capsys.readouterr().out
    page = (root / "index.html").read_text()
    parser = _Rows()
    parser.feed(page)
    rows = {row[0]: row for row in parser.rows if row}
    assert list(rows) == ["20250301T120000Z", "20250303T100000Z", "20250302T100000Z", "20250301T100000Z"]
    assert (
        rows["20250301T100000Z"][1] == "fail"
        and rows["20250301T100000Z"][3] == "Rita Reviewer (SRE lead) as rita@example.com"
    )
    assert rows["20250301T100000Z"][6] == "verified"
    assert rows["20250302T100000Z"][6] == "not signed" and rows["20250302T100000Z"][3] == "—"
    assert rows["20250303T100000Z"][6] == "VERIFY FAILED" and "findings.json" in rows["20250303T100000Z"][7]
    # Sam's key is not in the trusted file given: his approval is no valid sign-off here.
    assert rows["20250301T120000Z"][6] == "VERIFY FAILED" and rows["20250301T120000Z"][4] == "approve"
    assert "is not a trusted signer" in rows["20250301T120000Z"][7]
    assert "FAIL 1" in rows["20250301T100000Z"][2] and "MANUAL 2" in rows["20250301T100000Z"][2]
    # Offline: relative links to reports that exist, nothing loaded from elsewhere.
    assert parser.links and all(not re.match(r"^[a-z]+:|^/", link) for link in parser.links)
    assert all((root / link).is_file() for link in parser.links if not link.startswith("#"))
    assert all(f"id='{link[1:]}'" in page for link in parser.links if link.startswith("#"))
    assert "<script" not in page and not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page)
    assert "Content-Security-Policy" in page and ".ra-verdict" in page  # the report's policy and style
    assert page.index("id='env-production'") < page.index("id='env-staging'")


def test_without_trusted_signers_no_run_verifies(archive: tuple[Path, Path]) -> None:
    root, _ = archive
    entries = {(e.env, e.run): e for e in collect_entries(root, lambda env: None)}
    assert entries[("staging", "20250301T100000Z")].state == "failed"
    assert "no trusted signers" in entries[("staging", "20250301T100000Z")].detail
    assert entries[("staging", "20250302T100000Z")].state == "unsigned"


def test_each_environment_trusts_its_own_params(archive: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = archive
    params = {"staging": tmp_path / "params" / "staging.yaml", "production": tmp_path / "params" / "production.yaml"}
    from recsys_audit.signoff_cli import environment_trust

    entries = {(e.env, e.run): e.state for e in collect_entries(root, lambda env: environment_trust(str(params[env])))}
    assert entries[("staging", "20250301T100000Z")] == "verified"
    assert entries[("production", "20250301T120000Z")] == "verified"  # production's params trust Sam
    assert entries[("staging", "20250303T100000Z")] == "failed"


def test_missing_archive_directory_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["archive", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no such archive directory" in err and len(err.strip().splitlines()) == 1
