"""Commands that neither execute nor render notebooks load none of the notebook machinery: each runs in a new
interpreter and reports the heavy packages it imported."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from run_fixtures import build_run, make_signer, write_allowed_signers, write_params

from recsys_audit.signoff_cli import main as signoff_main

# Executing (papermill, nbclient, jupyter_client, zmq), rendering notebooks (nbconvert, nbformat) and drawing charts
# (matplotlib); pandas only for the review desk's tables.
NOTEBOOK_MACHINERY = {"papermill", "nbclient", "jupyter_client", "zmq", "nbconvert", "nbformat", "matplotlib", "pandas"}
PROBE = """
import contextlib, io, json, sys
from recsys_audit.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted({name.split(".")[0] for name in sys.modules})}))
"""


@dataclass
class Runs:
    params: Path
    trusted: Path
    key: Path
    signed: Path
    unsigned: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    folder = tmp_path_factory.mktemp("lean")
    rita = make_signer(folder / "keys")
    trusted = write_allowed_signers(folder / "allowed_signers", rita)
    params = write_params(folder / "params", allowed_signers=trusted)
    signed, unsigned = (
        build_run(folder / "audits", params, stamp, {"auth.dev-auth-disabled": "pass"})
        for stamp in ("20250301T100000Z", "20250302T100000Z")
    )
    assert signoff_main([*sign_command(signed), "--key", str(rita.key)]) == 0
    return Runs(params, trusted, rita.key, signed, unsigned)


def sign_command(run_dir: Path) -> list[str]:
    return ["sign", str(run_dir), "--reviewer", "Rita Reviewer", "--role", "SRE lead", "--decision", "reject"]


def imported(*argv: str) -> tuple[int, set[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    return report["code"], set(report["modules"])


@pytest.mark.parametrize(
    "command",
    [
        ["checks"],
        ["params", "check", "{params}"],
        ["verify", "{signed}", "--allowed-signers", "{trusted}"],
        ["diff", "{unsigned}", "{signed}"],
    ],
)
def test_commands_without_notebooks_load_no_notebook_machinery(runs: Runs, command: list[str]) -> None:
    code, modules = imported(*(part.format(**vars(runs)) for part in command))
    assert code == 0
    assert modules & NOTEBOOK_MACHINERY == set()


def test_the_probe_sees_what_rendering_loads(runs: Runs) -> None:
    """Signing re-renders the report from the run's notebooks: the same probe sees nbconvert and matplotlib."""
    code, modules = imported(*sign_command(runs.unsigned), "--key", str(runs.key))
    assert code == 0
    assert {"nbconvert", "nbformat", "matplotlib"} <= modules
