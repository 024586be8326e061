"""Review widgets: picker, findings explorer, sign-off form, and the review notebook executed headless by papermill."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest
from run_fixtures import OWNER, REVIEWER, build_run, make_signer, write_allowed_signers, write_params
from test_signoff import STATUSES

from recsys_audit.rundir import SIGNOFF_FILE
from recsys_audit.signoff import verify_run
from recsys_audit.widgets import EnvironmentPicker, FindingsExplorer, SignoffForm, list_environments, live_frontend

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
    notebook = nbformat.read(output, as_version=4)
    html_outputs, plain_outputs = [], []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            html_outputs.append(out.get("data", {}).get("text/html", ""))
            plain_outputs.append(out.get("data", {}).get("text/plain", ""))
    static = "\n".join(html_outputs)
    # Findings of the picked run as a static table, all of them, and the picker and form fallbacks.
    for check in STATUSES:
        assert check in static
    assert f"Selected run: <code>{older.resolve()}</code>" in static
    assert "recsys-audit sign" in static and "No earlier signed audit" in static
    assert "[findings explorer: interactive in JupyterLab]" in plain_outputs
