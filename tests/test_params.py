"""Params errors through the real CLI: exit 2, one message naming file, field path and fix, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [str(Path(sys.executable).parent / "recsys-audit")]
VALID = """\
environment:
  name: staging
target:
  base_url: https://recsys.staging.example
tenants:
  - id: acme
    surfaces: [home]
"""


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}, cwd=cwd
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "staging.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "field", "fix"),
    [
        (VALID + "tenant_mode: strict\n", "tenant_mode", "remove it, or check its spelling"),
        (VALID.replace("name: staging", "name: staging\n  owner: [a, b]"), "environment.owner", "valid string"),
        (VALID + "policies:\n  latency_p95_ms: fast\n", "policies.latency_p95_ms", "valid number"),
        (VALID + "database:\n  dsn: env:RA_TEST_UNSET_DSN\n", "database.dsn", "export RA_TEST_UNSET_DSN"),
        (VALID.replace("tenants:", "tenants: [oops"), "line", "not valid YAML"),
    ],
    ids=["unknown-key", "wrong-type", "wrong-number", "missing-env-var", "bad-yaml"],
)
@pytest.mark.parametrize("command", ["params-check", "run"])
def test_bad_params_exit_2_with_one_clear_message(
    tmp_path: Path, text: str, field: str, fix: str, command: str
) -> None:
    path = write(tmp_path, text)
    args = ["params", "check", str(path)] if command == "params-check" else ["run", str(path), "--out", str(tmp_path)]
    result = cli(*args, env={"RA_TEST_UNSET_DSN": ""})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert str(path) in message and field in message and fix in message, message
    assert not list(tmp_path.glob("staging/*")), "nothing may run on bad params"


def test_valid_params_check(tmp_path: Path) -> None:
    result = cli("params", "check", str(write(tmp_path, VALID)))
    assert result.returncode == 0, result.stderr
    assert "ok — environment staging" in result.stdout


def test_unknown_environment_and_bad_flags(tmp_path: Path) -> None:
    missing = cli("run", "no-such-env", cwd=tmp_path)
    assert missing.returncode == 2 and "params/no-such-env.yaml" in missing.stderr and "Traceback" not in missing.stderr
    bad_severity = cli("run", str(write(tmp_path, VALID)), "--fail-on", "urgent")
    assert bad_severity.returncode == 2 and "unknown severity 'urgent'" in bad_severity.stderr
    bad_section = cli("run", str(write(tmp_path, VALID)), "--sections", "0,99", "--out", str(tmp_path / "a"))
    assert bad_section.returncode == 2 and "unknown section(s) 99" in bad_section.stderr
