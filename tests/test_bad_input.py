"""Bad input: every broken params file or config source gives the kit's own one-line error, never a traceback.

The CLI cases run the real ``recsys-audit run`` (exit 2, message naming file, field path and fix, nothing started);
the property tests throw generated documents at the params loader and the config-source parsers and accept only
``ParamsError`` / ``ConfigSourceError`` (or a successful load).
"""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recsys_audit.params import ConfigSource, ParamsError, load_params
from recsys_audit.probes.config import ConfigSourceError, ConfigView, parse_env_file, read_source

CANARY_LITERAL_TOKEN = "literal-bearer-value-d41d8cd98f00b204e9800998ecf8427e"
TWO_LINE_TAIL = "second-line-of-a-secret-9b74c9897bac770ffc029102a200c5de"
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
    (tmp_path / "secrets" / "two-line.dsn").write_text(f"postgresql://auditor@127.0.0.1:1/recsys\n{TWO_LINE_TAIL}\n")
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
        env={**os.environ, **ENV, "RA_BAD_INPUT_UNSET": "", "RA_BAD_INPUT_TWO_LINES": f"Bearer-a\n{TWO_LINE_TAIL}"},
    )


# --- the CLI: exit 2, file + field path + fix, nothing runs -------------------------------------------------


CASES: list[tuple[str, dict[str, Any] | str, str, str]] = [
    ("missing-required", document(tenants=...), "tenants", "add it"),
    ("missing-nested", document(target__base_url=...), "target.base_url", "add it"),
    ("unknown-nested", document(target__timeout=3), "target.timeout", "did you mean 'timeout_s'?"),
    ("unknown-in-list", document(tenants__0__surface="home"), "tenants[0].surface", "did you mean 'surfaces'?"),
    ("empty-list", document(tenants__0__surfaces=[]), "tenants[0].surfaces", "at least 1 item"),
    ("wrong-literal", document(auth__mechanisms=["saml"]), "auth.mechanisms[0]", "expected one of 'jwt', 'api_key'"),
    ("not-positive", document(target__timeout_s=0), "target.timeout_s", "greater than 0"),
    ("impossible-date", yaml.safe_dump(VALID) + "waivers:\n- {check: x, justification: long enough, "
     "expires: 2026-02-30, approved_by: a}\n", "not valid YAML", "day is out of range for month"),
    ("wrong-date", document(deployment__last_backup_at="yesterday"), "deployment.last_backup_at",
     "expected a date and time"),
    ("literal-secret", document(auth__credentials__viewer__bearer=CANARY_LITERAL_TOKEN),
     "auth.credentials.viewer.bearer", "'env:VARIABLE' or 'file:PATH'"),
    ("two-line-env-secret", document(auth__credentials__viewer__bearer="env:RA_BAD_INPUT_TWO_LINES"),
     "auth.credentials.viewer.bearer", "line break or control character"),
    ("unset-env-secret", document(auth__credentials__viewer__bearer="env:RA_BAD_INPUT_UNSET"),
     "auth.credentials.viewer.bearer", "export RA_BAD_INPUT_UNSET"),
    ("missing-secret-file", document(database__dsn="file:secrets/nope.dsn"), "database.dsn",
     "create the file or correct the path"),
    ("credential-without-secret", document(auth__credentials__viewer={}), "auth.credentials.viewer",
     "give 'bearer: env:VAR'"),
    ("top-level-list", "- environment\n- target\n", "top level", "expected a mapping"),
    ("empty-file", "", "top level", "expected a mapping"),
    ("secret-outside-folder", document(database__dsn="file:/etc/passwd"), "database.dsn",
     "name its folder in a top-level 'secrets_root:'"),
    ("secret-dot-dot", document(database__dsn="file:../../../../etc/passwd"), "database.dsn", "outside"),
    ("missing-secrets-root", document(secrets_root="no-such-folder"), "secrets_root", "is not a folder"),
    ("two-line-secret", document(database__dsn="file:secrets/two-line.dsn"), "database.dsn",
     "store it as one line of printable text"),
    ("env-name-dot-dot", document(environment__name=".."), "environment.name", "e.g. staging"),
    ("env-name-slash", document(environment__name="a/b"), "environment.name", "e.g. staging"),
    ("base-url-javascript", document(target__base_url="javascript:alert(1)"), "target.base_url",
     "found scheme 'javascript'"),
    ("base-url-no-host", document(target__base_url="https:///x"), "target.base_url", "names no host"),
    ("url-with-credentials", document(prometheus__url="http://admin:hunter2@127.0.0.1:9090"), "prometheus.url",
     "holds a secret in the file"),
    ("manifest-ftp", document(manifests__template="ftp://x/{tenant}/{surface}.json"), "manifests.template",
     "file:// or http:// or https:// or s3://"),
    ("file-artifacts-for-s3", document(manifests={"template": "s3://b/{tenant}/{surface}.json",
     "artifact_root": "file:///srv/blobs/"}), "manifests", "file:// only when the template is file://"),
    ("timeout-inf", document(target__timeout_s=float("inf")), "target.timeout_s", "finite number"),
    ("timeout-nan", document(target__timeout_s=float("nan")), "target.timeout_s", "finite number"),
    ("timeout-negative", document(restore_drill__timeout_s=-1), "restore_drill.timeout_s", "greater than 0"),
    ("header-name-crlf", document(auth__credentials__viewer__headers={"X-A\r\nInjected": "v"}),
     "auth.credentials.viewer.headers.X-A\\r\\nInjected", "not a valid HTTP header name"),
    ("header-value-lf", document(auth__credentials__viewer__headers={"X-Dev-User-Id": "a\nInjected: 1"}),
     "auth.credentials.viewer.headers.X-Dev-User-Id", "line break or control character"),
    ("tenant-header-space", document(auth__tenant_header="X Org"), "auth.tenant_header", "header name"),
    ("tenant-id-newline", document(tenants__0__id="acme\nX: 1"), "tenants[0].id", "line break"),
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
    assert TWO_LINE_TAIL not in result.stderr and "root:x:0" not in result.stderr, "a secret file is never quoted"
    assert not (params_dir / "audits").exists(), "nothing may start on bad params"


def test_several_problems_are_all_reported_one_line_each(params_dir: Path) -> None:
    path = write_params(params_dir, document(target__timeout=3, tenants__0__surfaces=..., environment__nam="x"))
    result = run_cli("run", str(path), "--out", str(params_dir / "audits"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    fields = ["target.timeout", "tenants[0].surfaces", "environment.nam"]
    assert len(lines) == len(fields), lines
    for field in fields:
        pattern = rf"{re.escape(str(path))}:\d+:\d+: {re.escape(field)}: "
        assert any(re.match(pattern, line.removeprefix("recsys-audit: ")) for line in lines), (field, lines)


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


# Values that reach a request line, a header or a path: awkward on purpose (control characters, traversal, schemes).
nasty_text = st.text(max_size=40) | st.sampled_from(
    ["..", ".", "../x", "a/b", "a\r\nb", "X-A\nB", "\x00", "ok-name", "X-Org-Id", "a b", "\u2028", "ä"]
)
urls = st.builds(
    "{}{}{}".format,
    st.sampled_from(["http://", "https://", "s3://", "file://", "javascript:", "ftp://", "", "HTTP://", "http:"]),
    st.sampled_from(["127.0.0.1:9090", "user:pw@h", "[::1]:80", "h:99999", "", "h o", "h\r\n", "x.example"]),
    st.sampled_from(["", "/", "/{tenant}/{surface}.json", "/a b", "/\x7f"]),
) | st.text(max_size=30)
timeouts = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 10**9) | st.text(max_size=5)
header_maps = st.dictionaries(nasty_text, nasty_text | st.integers(), max_size=3)
TARGETED = {
    "environment__name": nasty_text,
    "target__base_url": urls,
    "metrics_url": urls,
    "prometheus__url": urls,
    "auth__jwt__jwks_url": urls,
    "manifests__template": urls,
    "manifests__artifact_root": urls,
    "manifests__s3__endpoint": urls,
    "target__timeout_s": timeouts,
    "restore_drill__timeout_s": timeouts,
    "load_test__max_seconds": timeouts,
    "auth__tenant_header": nasty_text,
    "auth__api_key_header": nasty_text,
    "auth__credentials__viewer__headers": header_maps,
    "tenants__0__id": nasty_text,
    "secrets_root": nasty_text,
    "database__dsn": st.sampled_from(["file:../x", "file:/etc/passwd", "file:secrets/two-line.dsn", "env:"]),
}


@PROPERTY_SETTINGS
@given(changes=st.fixed_dictionaries({}, optional=TARGETED))
@example(changes={"secrets_root": "~0"})  # a home directory that does not exist: pathlib raises RuntimeError
def test_params_loader_checks_names_urls_timeouts_and_headers(params_dir: Path, changes: dict[str, Any]) -> None:
    """Only the kit's error; and whatever loads is safe to use: a slug, http(s) URLs, finite positive timeouts,
    header names and values without line breaks."""
    path = write_params(params_dir, yaml.safe_dump(document(**changes), allow_unicode=True))
    old = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    try:
        params = load_params(path)
    except ParamsError as exc:
        assert str(path) in str(exc) and "Traceback" not in str(exc)
        assert all(re.match(rf"{re.escape(str(path))}:\d+:\d+: ", line) for line in str(exc).splitlines()), str(exc)
        return
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", params.environment.name)
    for url in (params.target.base_url, params.resolved_metrics_url, params.prometheus.url, params.auth.jwt.jwks_url):
        assert url is None or (urlsplit(url).scheme.lower() in {"http", "https"} and urlsplit(url).hostname), url
    for seconds in (params.target.timeout_s, params.restore_drill.timeout_s, params.load_test.max_seconds):
        assert math.isfinite(seconds) and seconds > 0
    viewer = params.auth.credentials.viewer
    sent = {params.auth.tenant_header: params.tenants[0].id, **(viewer.headers if viewer else {})}
    assert all(not re.search(r"[\x00-\x1f\x7f]", name + value) for name, value in sent.items()), sent


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
