"""Params that explain themselves, through the real CLI: every problem of a file at once, each as
``file:line:column: field: what is wrong — fix`` in the kit's words; the JSON Schema and the field reference derived
from the model; ``run NAME`` finding a sandbox instance's params."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from recsys_audit.params import ParamsError, load_params
from recsys_audit.params_docs import json_schema, json_schema_text, markdown

ROOT = Path(__file__).resolve().parents[1]
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
PYDANTIC_WORDING = re.compile(r"Input should|Value error|Field required|Extra inputs|input_value|pydantic", re.I)


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}, cwd=cwd
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "staging.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ParamsError) as raised:
        load_params(path)
    lines = str(raised.value).splitlines()
    assert not any(PYDANTIC_WORDING.search(line.replace(str(path.parent), "")) for line in lines), lines
    return lines


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID + "tenant_mode: strict\n", "{path}:8:1: tenant_mode: unknown field — did you mean 'tenants'?"),
        (VALID + "polices:\n  latency_p95_ms: 200\n", "{path}:8:1: polices: unknown field — did you mean 'policies'?"),
        (VALID + "zzz: 1\n", "{path}:8:1: zzz: unknown field — remove it, or check its spelling (params/README.md"),
        (VALID.replace("name: staging", "name: staging\n  owner: [a, b]"),
         "{path}:3:10: environment.owner: expected text, found a list"),
        (VALID + "policies:\n  latency_p95_ms: fast\n",
         "{path}:9:19: policies.latency_p95_ms: expected a number, found 'fast'"),
        (VALID.replace("base_url", "verify_tls: yes please\n  base_url"),
         "{path}:4:15: target.verify_tls: expected true or false, found 'yes please'"),
        (VALID + "auth:\n  mechanisms: [jwt, apikey]\n",
         "{path}:9:21: auth.mechanisms[1]: expected one of 'jwt', 'api_key', found 'apikey' — did you mean 'api_key'?"),
        (VALID + "auth:\n  tenant_source: claim\n",
         "{path}:9:18: auth.tenant_source: expected one of 'claims', 'header', 'claims+header', found 'claim' — did "
         "you mean 'claims'?"),
        (VALID + "database:\n  dsn: env:RA_TEST_UNSET_DSN\n",
         "{path}:9:8: database.dsn: environment variable RA_TEST_UNSET_DSN is not set — export RA_TEST_UNSET_DSN"),
        (VALID.replace("tenants:", "tenants: [oops"), "{path}:6:7: not valid YAML — expected ',' or ']'"),
        (VALID + "waivers:\n- {check: x, justification: long enough, expires: 2026-02-30, approved_by: a}\n",
         "{path}:9:51: not valid YAML — '2026-02-30' is not a real date or time (day is out of range for month)"),
        (VALID.replace("[home]", "[]"), "{path}:7:15: tenants[0].surfaces: needs at least 1 item(s)"),
        (VALID.replace("  name: staging\n", "  owner: sre\n"),
         "{path}:2:3: environment.name: required field missing — add it"),
    ],
    ids=["typo-top", "typo-nested", "unknown-key", "wrong-type", "wrong-number", "bad-bool", "bad-enum-in-list",
         "bad-enum", "missing-env-var", "bad-yaml", "impossible-date", "empty-list", "missing-field"],
)  # fmt: skip
@pytest.mark.parametrize("command", ["params-check", "run"])
def test_one_problem_one_line_with_place_and_fix(tmp_path: Path, text: str, expected: str, command: str) -> None:
    path = write(tmp_path, text)
    args = ["params", "check", str(path)] if command == "params-check" else ["run", str(path), "--out", str(tmp_path)]
    result = cli(*args, env={"RA_TEST_UNSET_DSN": ""})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith("recsys-audit: " + expected.format(path=path)), message
    assert not PYDANTIC_WORDING.search(message.replace(str(tmp_path), "")), message
    assert not list(tmp_path.glob("staging/*")), "nothing may run on bad params"


def test_schema_problems_and_missing_references_in_one_pass(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        VALID.replace("base_url", "verifi_tls: false\n  base_url")
        + "auth:\n  credentials:\n    viewer: {bearer: env:RA_TEST_UNSET_TOKEN}\n"
        + "database:\n  dsn: file:secrets/auditor.dsn\n  statement_timeout_ms: soon\n",
    )
    lines = problems(path)
    assert lines == [
        f"{path}:4:3: target.verifi_tls: unknown field — did you mean 'verify_tls'?",
        f"{path}:11:22: auth.credentials.viewer.bearer: environment variable RA_TEST_UNSET_TOKEN is not set — export "
        "RA_TEST_UNSET_TOKEN",
        f"{path}:13:8: database.dsn: secret file {tmp_path}/secrets/auditor.dsn does not exist — create the file or "
        "correct the path",
        f"{path}:14:25: database.statement_timeout_ms: expected a whole number, found 'soon'",
    ]


def test_a_problem_in_an_included_fragment_names_the_fragment(tmp_path: Path) -> None:
    (tmp_path / "facts.yaml").write_text("deployment:\n  last_backup_at: last tuesday\n", encoding="utf-8")
    path = write(tmp_path, "include: [facts.yaml, gone.yaml]\n" + VALID)
    assert problems(path) == [
        f"{path}:1:23: include: {tmp_path}/gone.yaml does not exist — create the file or correct the path",
        f"{tmp_path}/facts.yaml:2:19: deployment.last_backup_at: expected a date and time (e.g. "
        "2026-05-01T02:15:00Z), found 'last tuesday'",
    ]


def test_files_the_sandbox_writes_say_run_sandbox_up(tmp_path: Path) -> None:
    """The committed params/local.yaml before `sandbox up`: one line, the fix is to set the sandbox up; with the
    instance folder there but a file missing, that file's line says so too."""
    (tmp_path / "params").mkdir()
    local = tmp_path / "params" / "local.yaml"
    local.write_text((ROOT / "params" / "local.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    assert problems(local) == [
        f"{local}:8:3: sandbox instance 'local' is not set up ({tmp_path}/.sandbox/local does not exist; include, "
        "secrets_root, auth.jwt.signing_key and 7 more point into it) — run `recsys-audit sandbox up`"
    ]
    (tmp_path / ".sandbox" / "local" / "secrets").mkdir(parents=True)
    lines = problems(local)
    assert lines[0] == (
        f"{local}:8:3: include: {tmp_path}/.sandbox/local/dated-facts.yaml does not exist — the sandbox writes it: "
        "run `recsys-audit sandbox up`"
    )
    assert len(lines) == 9 and all(line.endswith("run `recsys-audit sandbox up`") for line in lines), lines


def test_no_library_wording_for_any_error_a_field_can_have(tmp_path: Path) -> None:
    """Every kind of value in every field of the model: whatever is refused is refused in the kit's words."""
    schema = json_schema()
    fields = [(name, field) for name, field in schema["properties"].items() if name not in {"target", "policies"}]
    fields += [(f"target.{name}", f) for name, f in schema["$defs"]["TargetParams"]["properties"].items()]
    fields += [(f"policies.{name}", f) for name, f in schema["$defs"]["Policies"]["properties"].items()]
    for index, value in enumerate(["text", 12, -1, 2.5, True, None, [1, "x"], {"a": 1}, "2026-13-01", ".inf"]):
        document = yaml.safe_load(VALID)
        for name, _ in fields:
            *parents, last = name.split(".")
            node = document
            for parent in parents:
                node = node.setdefault(parent, {})
            node[last] = value
        path = tmp_path / f"every-{index}.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        for line in problems(path):
            assert re.match(rf"{re.escape(str(path))}:\d+:\d+: ", line), line


def test_params_schema_command_prints_the_committed_schema_and_the_examples_follow_it() -> None:
    result = cli("params", "schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert result.stdout == json_schema_text() == (ROOT / "params" / "schema.json").read_text(encoding="utf-8"), (
        "params/schema.json is stale: recsys-audit params schema > params/schema.json"
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for name in ("local.yaml", "production.example.yaml"):
        text = (ROOT / "params" / name).read_text(encoding="utf-8")
        assert text.startswith("# yaml-language-server: $schema=schema.json\n"), name
        assert not list(validator.iter_errors(json.loads(json.dumps(yaml.safe_load(text), default=str)))), name
    wrong = {**yaml.safe_load(VALID), "tenant_mode": "strict", "target": {"base_url": "https://x", "timeout_s": 0}}
    messages = " / ".join(error.message for error in validator.iter_errors(wrong))
    assert messages.count(" / ") == 1 and "'tenant_mode' was unexpected" in messages, messages
    assert "is less than or equal to the minimum of 0" in messages, messages


def test_every_field_is_documented_and_the_readme_matches_the_model() -> None:
    schema = json_schema()
    for model in [schema, *schema["$defs"].values()]:
        for name, field in model.get("properties", {}).items():
            assert field.get("description"), f"{model.get('title')}.{name} has no description"
    readme = (ROOT / "params" / "README.md").read_text(encoding="utf-8")
    assert readme == markdown(), "params/README.md is stale: recsys-audit params docs > params/README.md"
    assert cli("params", "docs").stdout == readme
    for path in ("`environment`", "`auth.jwt`", "`auth.credentials.viewer`", "`tenants[]`", "`waivers[]`"):
        assert f"## {path}" in readme or f", {path}" in readme, path
    assert "| `timeout_s` | number (> 0, ≤ 600) | `5.0` |" in readme
    assert "| `bearer` | secret reference (`env:VAR` or `file:PATH`) | — |" in readme


def test_valid_params_check(tmp_path: Path) -> None:
    result = cli("params", "check", str(write(tmp_path, VALID)))
    assert result.returncode == 0, result.stderr
    assert "ok — environment staging" in result.stdout


def test_run_name_finds_params_then_sandbox_instances(tmp_path: Path) -> None:
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "staging.yaml").write_text(VALID.replace("staging", "from-params"), encoding="utf-8")
    instance = tmp_path / ".sandbox" / "ux"
    instance.mkdir(parents=True)
    (instance / "params.yaml").write_text(VALID.replace("staging", "from-sandbox"), encoding="utf-8")
    for env, expected in (("staging", "from-params"), ("ux", "from-sandbox")):
        result = cli("params", "check", env, cwd=tmp_path)
        assert result.returncode == 0 and f"environment {expected}" in result.stdout, result.stderr
    missing = cli("run", "uxx", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "params/uxx.yaml and .sandbox/uxx/params.yaml" in missing.stderr
    assert "did you mean 'ux'?" in missing.stderr


def test_unknown_environment_and_bad_flags(tmp_path: Path) -> None:
    missing = cli("run", "no-such-env", cwd=tmp_path)
    assert missing.returncode == 2 and "params/no-such-env.yaml" in missing.stderr and "Traceback" not in missing.stderr
    bad_severity = cli("run", str(write(tmp_path, VALID)), "--fail-on", "urgent")
    assert bad_severity.returncode == 2 and "unknown severity 'urgent'" in bad_severity.stderr
    bad_section = cli("run", str(write(tmp_path, VALID)), "--sections", "0,99", "--out", str(tmp_path / "a"))
    assert bad_section.returncode == 2 and "unknown section(s) 99" in bad_section.stderr
    bad_format = cli("run", str(write(tmp_path, VALID)), "--format", "html,sarf", "--out", str(tmp_path / "a"))
    assert bad_format.returncode == 2 and "unknown format 'sarf' — did you mean 'sarif'?" in bad_format.stderr
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("verify_tls", "target_bundle", "jwks_bundle", "verified"),
    [
        (True, False, False, (True, True)),
        (False, False, False, (False, False)),
        (True, True, True, (True, True)),
        (False, True, True, (True, True)),
        (False, True, False, (True, False)),  # the JWKS (often another host) does not borrow the target's bundle
        (False, False, True, (False, True)),
    ],
)
def test_one_tls_rule_for_every_connection_to_the_target(
    tmp_path: Path, verify_tls: bool, target_bundle: bool, jwks_bundle: bool, verified: tuple[bool, bool]
) -> None:
    """A CA bundle, when set, is always verified against; without one, ``verify_tls`` decides."""
    import ssl

    import certifi

    (tmp_path / "ca.pem").write_bytes(Path(certifi.where()).read_bytes())
    target = {"base_url": "https://127.0.0.1:9", "verify_tls": verify_tls}
    target |= {"ca_bundle": "ca.pem"} if target_bundle else {}
    document = {"environment": {"name": "tls"}, "target": target, "tenants": [{"id": "acme", "surfaces": ["home"]}]}
    document |= {"auth": {"jwt": {"ca_bundle": "ca.pem"}}} if jwks_bundle else {}
    path = tmp_path / "tls.yaml"
    path.write_text(yaml.safe_dump(document))
    params = load_params(path)
    contexts = (params.tls(), params.tls(jwks=True))
    assert tuple(c.verify_mode == ssl.CERT_REQUIRED for c in contexts) == verified
    assert tuple(c.check_hostname for c in contexts) == verified
