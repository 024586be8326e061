"""The archive index: every audit per environment with verdict, counts, signer and verification, linked offline."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_signoff import REVIEWER, STATUSES, build_run, write_params

from recsys_audit.archive import collect_entries
from recsys_audit.signoff import generate_key_pair, sign_run
from recsys_audit.signoff_cli import main


class _Rows(HTMLParser):
    """Table rows of the index page as lists of cell texts, plus every link."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.links: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
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
    staging = write_params(tmp_path / "params", "staging")
    production = write_params(tmp_path / "params", "production")
    trusted, other = tmp_path / "rita.key", tmp_path / "sam.key"
    generate_key_pair(trusted)
    generate_key_pair(other)
    signed = build_run(root, staging, "20250301T100000Z", STATUSES)
    sign_run(signed, reviewer=REVIEWER, role="SRE lead", decision="approve", key_path=trusted)
    build_run(root, staging, "20250302T100000Z", STATUSES)  # not signed
    tampered = build_run(root, staging, "20250303T100000Z", STATUSES)
    sign_run(tampered, reviewer=REVIEWER, role="SRE lead", decision="reject", key_path=trusted)
    (tampered / "findings.json").write_text((tampered / "findings.json").read_text().replace('"fail"', '"pass"'))
    prod = build_run(root, production, "20250301T120000Z", {"db.rls-enabled": "pass"})
    sign_run(prod, reviewer="Sam", role="SecEng", decision="approve", key_path=other)
    return root, Path(str(trusted) + ".pub")


def test_index_lists_every_audit_with_state_and_relative_links(
    archive: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, trusted_pub = archive
    assert main(["archive", str(root), "--pubkey", str(trusted_pub)]) == 0
    assert "4 audits, 1 failing verification" in capsys.readouterr().out
    page = (root / "index.html").read_text()
    parser = _Rows()
    parser.feed(page)
    rows = {row[0]: row for row in parser.rows if row}
    assert list(rows) == ["20250301T120000Z", "20250303T100000Z", "20250302T100000Z", "20250301T100000Z"]
    assert rows["20250301T100000Z"][1] == "fail" and rows["20250301T100000Z"][3] == "Rita Reviewer (SRE lead)"
    assert rows["20250301T100000Z"][6] == "verified"
    assert rows["20250302T100000Z"][6] == "not signed" and rows["20250302T100000Z"][3] == "—"
    assert rows["20250303T100000Z"][6] == "VERIFY FAILED" and "findings.json" in rows["20250303T100000Z"][7]
    assert rows["20250301T120000Z"][6] == "intact (identity not checked)" and rows["20250301T120000Z"][4] == "approve"
    assert "FAIL 1" in rows["20250301T100000Z"][2] and "MANUAL 2" in rows["20250301T100000Z"][2]
    # Offline: relative links to reports that exist, nothing loaded from elsewhere.
    assert parser.links and all(not re.match(r"^[a-z]+:|^/", link) for link in parser.links)
    assert all((root / link).is_file() for link in parser.links)
    assert "<script" not in page and "http" not in page
    assert page.index("id='env-production'") < page.index("id='env-staging'")


def test_without_trusted_keys_signed_runs_are_intact_not_verified(archive: tuple[Path, Path]) -> None:
    root, _ = archive
    states = {(e.env, e.run): e.state for e in collect_entries(root)}
    assert states[("staging", "20250301T100000Z")] == "intact"
    assert states[("staging", "20250303T100000Z")] == "failed"
    assert states[("staging", "20250302T100000Z")] == "unsigned"


def test_missing_archive_directory_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["archive", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no such archive directory" in err and len(err.strip().splitlines()) == 1
