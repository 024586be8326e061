"""Bad input: every broken params file or config source gives the kit's own one-line error, never a traceback.

The CLI cases run the real ``recsys-audit run`` (exit 2, message naming file, field path and fix, nothing started);
the property tests throw generated documents at the params loader and the config-source parsers and accept only
``ParamsError`` / ``ConfigSourceError`` (or a successful load).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recsys_audit.params import ConfigSource, ParamsError, load_params
from recsys_audit.probes.config import ConfigSourceError, ConfigView, parse_env_file, read_source

CANARY_LITERAL_TOKEN = "literal-bearer-value-d41d8cd98f00b204e9800998ecf8427e"
VALID: dict[str, Any] = {
    "environment": {"name": "staging"},
    "target": {"base_url": "https://recsys.staging.example", "timeout_s": 5},
    "auth": {"credentials": {"viewer": {"bearer": "env:RA_BAD_INPUT_VIEWER_TOKEN"}}},
    "tenants": [{"id": "acme", "surfaces": ["home"]}],
    "database": {"dsn": "file:secrets/auditor.dsn"},
}
ENV = {"RA_BAD_INPUT_VIEWER_TOKEN": "token-for-bad-input-tests"}


def document(**changes: Any) -> dict[str, Any]:
    """VALID with dotted paths replaced (value ``...`` deletes the key)."""
    doc = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node: Any = doc
        for part in parents:
            if isinstance(node, list) and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:  # an earlier change replaced a parent with a scalar or a shorter list: that change stands
                node = None
                break
        if isinstance(node, dict):
            if value is ...:
                node.pop(last, None)
            else:
                node[last] = value
        elif isinstance(node, list) and int(last) < len(node):
            if value is ...:
                del node[int(last)]
            else:
                node[int(last)] = value
    return doc


@pytest.fixture
def params_dir(tmp_path: Path) -> Path:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "auditor.dsn").write_text("postgresql://auditor@127.0.0.1:1/recsys\n")
    return tmp_path


def write_params(folder: Path, content: dict[str, Any] | str, name: str = "staging.yaml") -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recsys_audit.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV, "RA_BAD_INPUT_UNSET": ""},
    )


# --- the CLI: exit 2, file + field path + fix, nothing runs -------------------------------------------------


CASES: list[tuple[str, dict[str, Any] | str, str, str]] = [
    ("missing-required", document(tenants=...), "tenants", "add it"),
    ("missing-nested", document(target__base_url=...), "target.base_url", "add it"),
    ("unknown-nested", document(target__timeout=3), "target.timeout", "check its spelling"),
    ("unknown-in-list", document(tenants__0__surface="home"), "tenants[0].surface", "check its spelling"),
    ("empty-list", document(tenants__0__surfaces=[]), "tenants[0].surfaces", "at least 1 item"),
    ("wrong-literal", document(auth__mechanisms=["saml"]), "auth.mechanisms[0]", "'jwt' or 'api_key'"),
    ("not-positive", document(target__timeout_s=0), "target.timeout_s", "greater than 0"),
    ("impossible-date", yaml.safe_dump(VALID) + "waivers:\n- {check: x, justification: long enough, "
     "expires: 2026-02-30, approved_by: a}\n", "not valid YAML", "day is out of range for month"),
    ("wrong-date", document(deployment__last_backup_at="yesterday"), "deployment.last_backup_at", "valid datetime"),
    ("literal-secret", document(auth__credentials__viewer__bearer=CANARY_LITERAL_TOKEN),
     "auth.credentials.viewer.bearer", "'env:VARIABLE' or 'file:PATH'"),
    ("unset-env-secret", document(auth__credentials__viewer__bearer="env:RA_BAD_INPUT_UNSET"),
     "auth.credentials.viewer.bearer", "export RA_BAD_INPUT_UNSET"),
    ("missing-secret-file", document(database__dsn="file:secrets/nope.dsn"), "database.dsn",
     "create the file or correct the path"),
    ("credential-without-secret", document(auth__credentials__viewer={}), "auth.credentials.viewer",
     "give 'bearer: env:VAR'"),
    ("top-level-list", "- environment\n- target\n", "top level", "expected a mapping"),
    ("empty-file", "", "top level", "expected a mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "field", "fix"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_params_file_exit_2_names_file_field_and_fix(
    params_dir: Path, content: dict[str, Any] | str, field: str, fix: str
) -> None:
    path = write_params(params_dir, content)
    result = run_cli("run", str(path), "--out", str(params_dir / "audits"), "--quiet")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("recsys-audit: ") and str(path) in lines[0], lines[0]
    assert field in lines[0] and fix in lines[0], lines[0]
    assert CANARY_LITERAL_TOKEN not in result.stderr, "a literal secret must never be echoed back"
    assert not (params_dir / "audits").exists(), "nothing may start on bad params"


def test_several_problems_are_all_reported_one_line_each(params_dir: Path) -> None:
    path = write_params(params_dir, document(target__timeout=3, tenants__0__surfaces=..., environment__nam="x"))
    result = run_cli("run", str(path), "--out", str(params_dir / "audits"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    fields = ["target.timeout", "tenants[0].surfaces", "environment.nam"]
    assert len(lines) == len(fields), lines
    for field in fields:
        assert any(f"{path}: {field}:" in line for line in lines), (field, lines)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "{missing}"], "no such params file"),
        (["run", "{params}", "--sections", "9"], "unknown section(s) 9"),
        (["run", "{params}", "--sections", "one"], "expected section numbers like 0,3"),
        (["run", "{params}", "--timeout", "0"], "--timeout must be positive"),
        (["run", "{params}", "--fail-on", "urgent"], "unknown severity 'urgent'"),
        (["run", "no-such-environment-name"], "no params for environment 'no-such-environment-name'"),
    ],
    ids=["missing-file", "unknown-section", "bad-section-list", "bad-timeout", "bad-severity", "unknown-env"],
)
def test_bad_command_line_exit_2_with_a_clear_message(params_dir: Path, args: list[str], expected: str) -> None:
    params = write_params(params_dir, VALID)
    filled = [a.format(missing=params_dir / "missing.yaml", params=params) for a in args]
    result = run_cli(*filled, "--out", str(params_dir / "audits"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert expected in result.stderr, result.stderr
    assert not (params_dir / "audits").exists()


# --- property tests -------------------------------------------------------------------------------------------

# Scalars YAML itself produces, with the awkward ones on purpose: impossible dates, NULs, huge numbers.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["env:", "file:", "env:RA_BAD_INPUT_VIEWER_TOKEN", "file:/dev/null", "file:\x00x", "2026-02-30"]),
)
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIELD_PATHS = [
    "environment",
    "environment__name",
    "target",
    "target__base_url",
    "target__timeout_s",
    "auth",
    "auth__credentials",
    "auth__credentials__viewer",
    "auth__credentials__viewer__bearer",
    "tenants",
    "tenants__0",
    "tenants__0__surfaces",
    "database",
    "database__dsn",
    "waivers",
    "attestations",
    "policies",
    "manifests",
    "config_sources",
    "restore_drill",
]
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def load_or_kit_error(path: Path) -> None:
    try:
        load_params(path)
    except ParamsError as exc:
        assert str(exc).strip(), "a ParamsError must say what is wrong"
        assert str(path) in str(exc), str(exc)


@PROPERTY_SETTINGS
@given(changes=st.dictionaries(st.sampled_from(FIELD_PATHS), json_like | st.just(...), max_size=3))
@example(changes={"auth": None, "auth__credentials__viewer": ...})  # a parent replaced before its child
def test_params_loader_raises_only_params_error_on_mutated_documents(changes: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            content = document(**changes)
        except (KeyError, IndexError, TypeError, ValueError):
            return  # the mutation path does not exist in this shape of document
        path = write_params(Path(folder), yaml.safe_dump(content, allow_unicode=True))
        old = {k: os.environ.get(k) for k in ENV}
        os.environ.update(ENV)
        try:
            load_or_kit_error(path)
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@PROPERTY_SETTINGS
@given(text=st.text(max_size=300) | st.sampled_from(["a: 2026-13-45\n", "[" * 3000, "a: !!binary ===", "? [a\n"]))
def test_params_loader_raises_only_params_error_on_arbitrary_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        load_or_kit_error(write_params(Path(folder), text))


@PROPERTY_SETTINGS
@given(raw=st.binary(max_size=200))
def test_params_loader_raises_only_params_error_on_arbitrary_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "staging.yaml"
        path.write_bytes(raw)
        load_or_kit_error(path)


@PROPERTY_SETTINGS
@given(text=st.text(max_size=400))
def test_env_file_parser_never_raises(text: str) -> None:
    values = parse_env_file(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


def read_or_config_error(kind: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "source.yaml"
        path.write_text(text, encoding="utf-8")
        view = ConfigView()
        try:
            read_source(ConfigSource(kind=kind, path=str(path)), path, view)
        except ConfigSourceError as exc:
            assert str(exc).strip()
            return
        for value in view.values.values():  # whatever was read is a normalized string or not visible
            assert value.value is None or isinstance(value.value, str)


helm_documents = st.fixed_dictionaries(
    {},
    optional={
        "api": st.one_of(
            json_like,
            st.fixed_dictionaries(
                {},
                optional={
                    "env": json_like | st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}, optional={
                        "value": json_like, "valueFrom": json_like}), max_size=3),
                    "secrets": json_like,
                    "existingSecret": json_like,
                    "replicaCount": json_like,
                    "image": json_like,
                },
            ),
        )
    },
)  # fmt: skip
compose_documents = st.fixed_dictionaries(
    {},
    optional={
        "services": st.one_of(
            json_like,
            st.dictionaries(
                st.text(min_size=1, max_size=6),
                st.fixed_dictionaries(
                    {}, optional={"environment": json_like, "env_file": json_like | st.just("missing.env")}
                )
                | json_like,
                max_size=2,
            ),
        )
    },
)


@PROPERTY_SETTINGS
@given(content=helm_documents | json_like)
def test_helm_values_parser_raises_only_config_source_error(content: Any) -> None:
    read_or_config_error("helm_values", yaml.safe_dump(content, allow_unicode=True))


@PROPERTY_SETTINGS
@given(content=compose_documents | json_like)
def test_compose_parser_raises_only_config_source_error(content: Any) -> None:
    read_or_config_error("compose", yaml.safe_dump(content, allow_unicode=True))


@PROPERTY_SETTINGS
@given(text=st.text(max_size=300) | st.sampled_from(["api: 2026-13-45\n", "[" * 3000, "services: 5\n"]))
def test_yaml_config_parsers_raise_only_config_source_error_on_arbitrary_text(text: str) -> None:
    for kind in ("helm_values", "compose"):
        read_or_config_error(kind, text)
