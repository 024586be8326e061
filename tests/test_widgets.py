"""Review desk: picker, findings explorer (with DataFrames), since-last view, sign-off form, and the review notebook
executed headless (papermill with parameters, nbclient as shipped)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest
from nbclient import NotebookClient
from run_fixtures import OWNER, REVIEWER, build_run, make_signer, write_allowed_signers, write_params
from test_signoff import STATUSES

from recsys_audit.rundir import SIGNOFF_FILE
from recsys_audit.signoff import verify_run
from recsys_audit.widgets import (
    EnvironmentPicker,
    FindingsExplorer,
    SignoffForm,
    SinceLastAuditView,
    list_environments,
    live_frontend,
    newest_environment,
)

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "99_review.ipynb"


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    params_dir = tmp_path / "params"
    rita = make_signer(tmp_path / "keys")
    trusted = write_allowed_signers(tmp_path / "allowed_signers", rita)
    staging = write_params(params_dir, "staging", allowed_signers=trusted)
    write_params(params_dir, "production")
    (params_dir / "production.example.yaml").write_text("environment: {name: example}\n")
    audits = tmp_path / "audits"
    older = build_run(audits, staging, "20250301T100000Z", STATUSES)
    newer = build_run(audits, staging, "20250302T100000Z", {**STATUSES, "db.rls-enabled": "pass"})
    return params_dir, audits, older, newer


def test_picker_lists_environments_and_runs_newest_first(workspace: tuple[Path, Path, Path, Path]) -> None:
    params_dir, audits, older, newer = workspace
    assert list_environments(params_dir, audits) == ["production", "staging"]
    picked: list[Path] = []
    picker = EnvironmentPicker(params_dir, audits, env="staging")
    picker.on_pick(picked.append)
    assert picker.run_dir == newer.resolve()
    assert [label.split(" — ")[0] for label, _ in picker.run.options] == [newer.name, older.name]
    assert "fail, unsigned" in picker.run.options[0][0]
    (audits / "staging" / "20250303T100000Z").symlink_to(older)  # never listed
    assert len(EnvironmentPicker(params_dir, audits, env="staging").run.options) == 2
    picker.select(older)
    assert picker.run_dir == older.resolve() and picked == [older.resolve()]
    picker.env.value = "production"  # no audits yet
    assert picker.run.options == () and picker.run_dir is None
    assert newer.name in picker.static_html()


def test_picker_opens_the_newest_run_of_the_environment_with_the_newest_audit(
    workspace: tuple[Path, Path, Path, Path],
) -> None:
    params_dir, audits, _, newer = workspace
    # production sorts first but has no audit: the picker opens staging's newest run
    assert EnvironmentPicker(params_dir, audits).run_dir == newer.resolve()
    newest = build_run(audits, params_dir / "production.yaml", "20250305T080000Z", STATUSES)
    assert newest_environment(audits, ["production", "staging"]) == "production"
    picker = EnvironmentPicker(params_dir, audits)
    assert picker.env.value == "production" and picker.run_dir == newest.resolve()
    assert EnvironmentPicker(params_dir, audits, env="staging").run_dir == newer.resolve()  # asked for: kept
    assert newest_environment(audits, ["nowhere"]) is None


def test_every_view_follows_a_pick(workspace: tuple[Path, Path, Path, Path]) -> None:
    params_dir, audits, older, newer = workspace
    picker = EnvironmentPicker(params_dir, audits, env="staging")
    explorer, since_last = FindingsExplorer(picker.run_dir), SinceLastAuditView(picker.run_dir)
    form = SignoffForm(picker.run_dir)
    for view in (explorer, since_last, form):
        picker.on_pick(view.load)
    explorer.status.value = "fail"
    assert newer.name in explorer.heading.value and [f.id for f in explorer.filtered()] == ["auth.cross-tenant-admin"]
    picker.select(older)
    assert older.name in explorer.heading.value and newer.name not in explorer.heading.value
    assert explorer.status.value == "fail"  # the filters stay as the reviewer set them
    assert form.run_dir == older.resolve()
    assert "No earlier signed audit" in since_last.html.value


def test_explorer_shows_evidence_and_remediation_of_the_picked_finding(
    workspace: tuple[Path, Path, Path, Path],
) -> None:
    _, _, older, _ = workspace
    explorer = FindingsExplorer(older)
    assert explorer.choice.value == "auth.cross-tenant-admin"  # attention first: the failure is picked
    assert (
        "Remediation:</strong> Fix it." in explorer.detail.value
        and '<details class="ra-card ra-card-fail" open>' in (explorer.detail.value)
    )
    explorer.choose("db.rls-enabled")  # as a click in the list does
    assert "db.rls-enabled is warn" in explorer.detail.value and "GET /v1/status" in explorer.detail.value
    assert [label.split()[0] for label, _ in explorer.choice.options] == ["FAIL", "WARN", "MANUAL", "MANUAL", "PASS",
                                                                          "SKIP"]  # fmt: skip
    explorer.status.value = "pass"
    assert explorer.choice.value == "auth.dev-auth-disabled" and "auth.dev-auth-disabled" in explorer.detail.value


def test_findings_and_evidence_as_dataframes(workspace: tuple[Path, Path, Path, Path]) -> None:
    _, _, older, _ = workspace
    explorer = FindingsExplorer(older)
    frame = explorer.frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 6
    assert list(frame.columns) == [
        "status",
        "severity",
        "section",
        "items",
        "title",
        "summary",
        "waived",
        "remediation",
    ]
    # status and severity sort in their own order, not alphabetically
    assert list(frame.sort_values("severity").index[:2]) == ["auth.cross-tenant-admin", "auth.dev-auth-disabled"]
    assert list(frame.sort_values("status").index[:2]) == ["auth.cross-tenant-admin", "db.rls-enabled"]
    assert list(frame[frame.section == 4].index) == ["db.rls-enabled", "db.restore-tested"]
    explorer.section.value = "4"
    assert list(explorer.frame().index) == ["db.rls-enabled", "db.restore-tested"]  # the filters apply
    frames = explorer.evidence_frames("db.rls-enabled")
    assert list(frames) == ["facts", "rows"]
    assert frames["facts"].to_dict("records") == [{"key": "probe", "value": "GET /v1/status"}]
    assert frames["rows"].to_dict("records") == [{"name": "a", "value": 1}]


def test_explorer_filters_by_section_status_and_severity(workspace: tuple[Path, Path, Path, Path]) -> None:
    _, _, older, _ = workspace
    explorer = FindingsExplorer(older)
    assert explorer.count.value == "6 of 6 findings"
    assert [label for label, _ in explorer.section.options] == ["all", "1", "4", "5", "6"]
    explorer.status.value = "fail"
    assert [f.id for f in explorer.filtered()] == ["auth.cross-tenant-admin"]
    assert "auth.cross-tenant-admin" in explorer.table.value and "db.rls-enabled" not in explorer.table.value
    explorer.status.value = "all"
    explorer.section.value = "4"
    assert {f.id for f in explorer.filtered()} == {"db.rls-enabled", "db.restore-tested"}
    explorer.severity.value = "high"
    explorer.status.value = "manual"
    assert [f.id for f in explorer.filtered()] == ["db.restore-tested"]
    assert explorer.count.value == "1 of 6 findings"
    assert "perf.pprof-off" in explorer.static_html()  # the static table shows every finding


def test_signoff_form_signs_like_the_cli_and_refuses_the_owner(
    workspace: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    _, _, older, _ = workspace
    form = SignoffForm(older)
    form.reviewer.value, form.role.value, form.key.value = OWNER, "owner", str(tmp_path / "keys" / "rita")
    assert form.submit() is None
    assert "Not signed" in form.result.value and "owns environment staging" in form.result.value
    assert not (older / SIGNOFF_FILE).exists()
    form.reviewer.value = REVIEWER
    assert form.submit() is None and "approve needs a pass" in form.result.value  # the run fails
    form.decision.value = "approve-with-exceptions"
    form.attest.value = "obs.runbooks-exercised=https://wiki.example/runbooks@2099-01-01\n"
    assert form.submit() is None and "in the future" in form.result.value
    form.attest.value = ""
    form.accept.value = "auth.cross-tenant-admin"
    form.passphrase.value = "not needed"
    form.button.click()  # the button runs submit()
    assert "Signed: approve-with-exceptions by Rita Reviewer as rita@example.com" in form.result.value
    assert "verified" in form.result.value and form.passphrase.value == ""
    result = verify_run(older, tmp_path / "allowed_signers")
    assert result.ok and result.record["accepted"] == ["auth.cross-tenant-admin"]


def test_not_a_live_frontend_outside_jupyterlab() -> None:
    assert live_frontend() is False


def _outputs(notebook: nbformat.NotebookNode) -> tuple[str, list[str]]:
    """All text/html of an executed notebook's outputs, and their text/plain; no output may be an error."""
    html_outputs, plain_outputs = [], []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            html_outputs.append(out.get("data", {}).get("text/html", ""))
            plain_outputs.append(out.get("data", {}).get("text/plain", "") or out.get("text", ""))
    return "\n".join(html_outputs), plain_outputs


def test_review_notebook_runs_headless_with_static_tables(
    workspace: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    params_dir, audits, older, _ = workspace
    output = tmp_path / "review.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(output),
        parameters={"run_dir": str(older), "audits_dir": str(audits), "params_dir": str(params_dir)},
        progress_bar=False,
        cwd=str(tmp_path),
        kernel_name="python3",
    )
    static, plain_outputs = _outputs(nbformat.read(output, as_version=4))
    # Findings of the picked run as a static table, all of them, and the picker and form fallbacks.
    for check in STATUSES:
        assert check in static
    assert f"Selected run: <code>{older.resolve()}</code>" in static
    assert "recsys-audit sign" in static and "No earlier signed audit" in static
    assert "[findings explorer: interactive in JupyterLab]" in plain_outputs


def test_review_notebook_as_shipped_opens_the_newest_run(
    workspace: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    """Executed with nbclient as it ships (no parameters), from a folder with params/ and audits/."""
    _, _, older, newer = workspace
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    static, plain = _outputs(notebook)
    assert f"Selected run: <code>{newer.resolve()}</code>" in static
    assert f"run <code>{newer.name}</code>: <strong>fail</strong>" in static  # the explorer's heading
    for check in STATUSES:  # the newest run's findings
        assert check in static
    # the picked finding (the failure) with its evidence and remediation; the DataFrames of the findings
    assert "Picked: <code>auth.cross-tenant-admin</code>" in static and "Remediation:</strong> Fix it." in static
    assert 'class="dataframe' in static and "auth.cross-tenant-admin" in static.split('class="dataframe', 1)[1]
    assert "auth.cross-tenant-admin — rows\n" in plain
    assert older.name not in static.split("Selected run:", 1)[1].split("</p>", 1)[0]
