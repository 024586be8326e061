"""Environment profiles: ``params/<env>.yaml`` -> a validated :class:`Params` model.

Secrets are never written in the file: they are references (``env:NAME`` or ``file:PATH``) that become
:class:`Secret` objects, resolved when the file loads (the variable is set; the file exists under the params file's
folder or ``secrets_root``; the value is one line) and registered with the redaction module; a ``Secret`` prints as
``***``. Relative paths are relative to the params file. Values that end up in a request line, a header or a path
(URLs, header names and values, tenant ids, the environment name, timeouts) are checked at load too, and every
problem of a file is reported in one pass.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from recsys_audit.redaction import MASK, register_secret


class ParamsError(Exception):
    """A params file that cannot be used: the message names the file, the field path and the fix."""

    exit_code = 2


class Secret:
    """A secret reference. ``str()`` and ``repr()`` never show the value.

    Loading a params file resolves every reference once (the variable is set, the file exists under an allowed
    root, the value is one line) and registers the value with the redaction module, so that it is masked everywhere
    from then on. ``multiline`` allows line breaks (PEM keys, which are never sent in a header).
    """

    __slots__ = ("_base", "_value", "multiline", "ref")

    def __init__(self, ref: str, base: Path | None = None, *, multiline: bool = False) -> None:
        scheme, _, target = ref.partition(":")
        if scheme not in {"env", "file"} or not target:
            raise ValueError("a secret must be a reference, 'env:VARIABLE' or 'file:PATH' — never the value itself")
        self.ref = ref
        self._base = base
        self._value: str | None = None
        self.multiline = multiline

    @property
    def scheme(self) -> str:
        return self.ref.partition(":")[0]

    @property
    def target(self) -> str:
        return self.ref.partition(":")[2]

    def _path(self) -> Path:
        path = Path(self.target).expanduser()
        return path if path.is_absolute() or self._base is None else self._base / path

    def problem(self, roots: list[Path] | None = None) -> str | None:
        """Why this reference cannot be used, or None; ``roots``: the folders a ``file:`` secret must stay under."""
        if self.scheme == "env":
            if not os.environ.get(self.target):
                return f"environment variable {self.target} is not set"
        else:
            path = self._path()
            if roots is not None:
                real = Path(os.path.realpath(path))
                if not any(real.is_relative_to(os.path.realpath(root)) for root in roots):
                    shown = ", ".join(str(root) for root in roots)
                    return (
                        f"secret file {path} is outside the params file's folder ({shown}) — move it there, or "
                        "name its folder in a top-level 'secrets_root:'"
                    )
            if not path.is_file():
                return f"secret file {path} does not exist"
        try:
            value = self._read()
        except (OSError, UnicodeDecodeError):
            return f"secret file {self._path()} is not readable UTF-8 text — check its permissions and content"
        if _CONTROL.search(value.replace("\r\n", "").replace("\n", "") if self.multiline else value):
            kind = "a control character" if self.multiline else "a line break or control character"
            return f"the secret holds {kind} — store it as one line of printable text"
        return None

    def _read(self) -> str:
        raw = os.environ[self.target] if self.scheme == "env" else self._path().read_text(encoding="utf-8")
        return raw.strip()

    def reveal(self) -> str:
        if self._value is None:
            problem = self.problem()
            if problem:
                raise ParamsError(f"secret {self.ref}: {problem}")
            self._value = self._read()
            register_secret(self._value)
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(self.ref)


def _to_secret(value: Any, info: ValidationInfo, multiline: bool = False) -> Any:
    """A reference -> :class:`Secret`; when loading a file (``info.context``), it is resolved and checked here, so
    that its problems are listed with every other problem of the file."""
    if isinstance(value, Secret) or value is None:
        return value
    if not isinstance(value, str):
        raise ValueError("a secret must be a string reference 'env:VARIABLE' or 'file:PATH'")
    secret = Secret(value, multiline=multiline)
    context = info.context or {}
    if "base_dir" in context:
        secret._base = context["base_dir"]
    if context.get("resolve"):
        problem = secret.problem(context["secret_roots"])
        if problem:
            fix = ""
            if secret.scheme == "env" and problem.endswith("is not set"):
                fix = f"export {secret.target}"
            elif problem.endswith("does not exist"):
                fix = "create the file or correct the path"
            raise ValueError(problem + (f" — {fix}" if fix else ""))
        secret.reveal()
    return secret


SecretRef = Annotated[Any, BeforeValidator(_to_secret)]
# A PEM block: line breaks allowed (it signs tokens in memory and is never sent as a header).
PemSecretRef = Annotated[Any, BeforeValidator(lambda value, info: _to_secret(value, info, multiline=True))]


# --- values that reach a request line, a header or a path: checked when the file loads ---------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("holds a line break or control character — remove it")
    return value


def _header_value(value: str) -> str:
    _no_control(value)
    if not value.isascii():
        raise ValueError("an HTTP header value must be ASCII text — remove the other characters")
    return value


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError("not a valid HTTP header name — use letters, digits and '-' (e.g. X-Org-Id)")
    return value


def _uri(schemes: tuple[str, ...], example: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if _CONTROL.search(value) or any(char.isspace() for char in value):
            raise ValueError("a URL may not hold spaces, line breaks or control characters — remove them")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"not a URL — write it like {example}") from None
        if parts.scheme.lower() not in schemes:
            wanted = " or ".join(f"{scheme}://" for scheme in schemes)
            found = f"scheme {parts.scheme[:20]!r}" if parts.scheme else "no scheme"
            raise ValueError(f"expected a URL starting {wanted}, found {found} — write it like {example}")
        if parts.scheme.lower() != "file" and not parts.hostname:
            raise ValueError(f"the URL names no host — write it like {example}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("a URL with credentials holds a secret in the file — remove them and use a secret field")
        return value

    return check


HttpUrl = Annotated[str, AfterValidator(_uri(("http", "https"), "https://recsys.example.com"))]
ManifestUri = Annotated[
    str,
    AfterValidator(
        _uri(("file", "http", "https", "s3"), "s3://bucket/registry/current/{tenant}/{surface}/manifest.json")
    ),
]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
Text = Annotated[str, AfterValidator(_no_control)]


class Model(BaseModel):
    # Floats are finite: a timeout of .inf or .nan never reaches a probe.
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=False, allow_inf_nan=False)


# --- who the auditor is on the target --------------------------------------------------------------------------


class Credential(Model):
    """One identity: a bearer token, an API key, or plain (non-secret) headers such as the dev-auth headers."""

    bearer: SecretRef = None
    api_key: SecretRef = None
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict, description="non-secret headers, e.g. X-Dev-User-Id"
    )

    @model_validator(mode="after")
    def _one_needed(self) -> Credential:
        if self.bearer is None and self.api_key is None and not self.headers:
            raise ValueError("give 'bearer: env:VAR', 'api_key: env:VAR' or 'headers: {...}'")
        return self


class Credentials(Model):
    viewer: Credential | None = None
    operator: Credential | None = None
    admin: Credential | None = None
    no_role: Credential | None = Field(None, description="an identity of the audited tenant holding no role")


class OtherTenant(Model):
    """An identity of a second tenant, used to prove that tenants are isolated."""

    tenant: HeaderValue
    credential: Credential | None = None


class JwtParams(Model):
    jwks_url: HttpUrl | None = None
    issuer: str | None = None
    audience: str | None = None
    tenant_claim: str = "tenant_id"
    role_claim: str = "roles"
    # Private key trusted by the target, for negative probes on non-production targets only.
    signing_key: PemSecretRef = None
    signing_kid: str | None = None
    ca_bundle: str | None = Field(None, description="CA bundle to verify the JWKS endpoint's TLS certificate")
    allow_signing_in_production: bool = Field(
        False, description="let negative probes sign tokens with signing_key even when target.production is true"
    )


class AuthParams(Model):
    mechanisms: list[Literal["jwt", "api_key"]] = Field(default_factory=list)
    tenant_source: Literal["claims", "header", "claims+header"] | None = None
    tenant_source_documented_at: str | None = None
    tenant_header: HeaderName = "X-Org-Id"
    api_key_header: HeaderName = "X-API-Key"
    dev_user_header: HeaderName = "X-Dev-User-Id"
    dev_tenant_header: HeaderName = "X-Dev-Org-Id"
    jwt: JwtParams = Field(default_factory=JwtParams)
    credentials: Credentials = Field(default_factory=Credentials)
    other_tenant: OtherTenant | None = None
    key_rotation_process_documented_at: str | None = None


# --- what is audited -------------------------------------------------------------------------------------------


class TenantParams(Model):
    id: HeaderValue = Field(description="external id, as in the JWT tenant claim and the X-Org-Id header")
    surfaces: list[Text] = Field(min_length=1)
    serving_mode: Literal["db_only", "artifact"] | None = None
    mode_documented_at: str | None = None


class TargetParams(Model):
    base_url: HttpUrl
    timeout_s: float = Field(
        5.0, gt=0, le=600, description="every request's deadline: connect, headers and body together (seconds)"
    )
    verify_tls: bool = True
    ca_bundle: str | None = None
    behind_proxy: bool = False
    production: bool = Field(False, description="judge the target by production rules")
    vantage: Literal["public", "internal"] | None = Field(
        None,
        description="where the auditor reaches base_url from: public (from outside, through the ingress, as any "
        "client) or internal (inside the service's network); decides whether an open /metrics or /health/detailed "
        "is a public exposure",
    )


class PrometheusParams(Model):
    url: HttpUrl | None = None
    job: str | None = Field(None, description="scrape job of the service; default: any target with recsys metrics")
    rules_files: list[str] = Field(default_factory=list)


class DatabaseParams(Model):
    dsn: SecretRef = None
    statement_timeout_ms: int = Field(3000, gt=0)
    service_role: str | None = Field(None, description="the role recsys-service connects as")
    allowed_event_readers: list[str] = Field(default_factory=list)
    long_transaction_max_s: int = Field(300, gt=0, description="a transaction open longer than this is flagged")


class S3Params(Model):
    endpoint: HttpUrl | None = None
    region: str | None = None
    access_key: SecretRef = None
    secret_key: SecretRef = None


class ManifestParams(Model):
    template: ManifestUri | None = Field(
        None, description="URI with {tenant} and {surface}: file://, http(s)://, s3://"
    )
    previous_template: ManifestUri | None = Field(None, description="where known-good previous manifests are retained")
    artifact_root: ManifestUri | None = Field(
        None,
        description="URI prefix every artifact a manifest names must start with; default: the template's bucket "
        "(s3), origin (http/https) or registry folder (file: the parent of the template's fixed folder)",
    )
    s3: S3Params = Field(default_factory=S3Params)

    @model_validator(mode="after")
    def _file_artifacts_need_a_file_template(self) -> ManifestParams:
        root, template = (self.artifact_root or "").lower(), (self.template or "").lower()
        if root.startswith("file:") and template and not template.startswith("file:"):
            raise ValueError("artifact_root may be file:// only when the template is file:// — name the bucket or host")
        return self


class ConfigSource(Model):
    kind: Literal["env_file", "helm_values", "compose"]
    path: str
    service: str | None = Field(None, description="compose service name (compose only)")


class LogParams(Model):
    exposure: list[str] = Field(default_factory=list, description="exposure JSONL files or directories")
    service: list[str] = Field(default_factory=list, description="service log files to scan for secrets")
    audit: list[str] = Field(default_factory=list, description="file audit log (JSONL with hash chain)")


class Policies(Model):
    manifest_max_age_s: int = Field(26 * 3600, gt=0)
    signal_max_age_days: int = Field(2, gt=0)
    exposure_retention_days: int = Field(30, gt=0)
    api_key_max_age_days: int = Field(90, gt=0)
    latency_p95_ms: float = Field(250, gt=0)
    error_ratio_max: float = Field(0.01, ge=0, le=1)
    attestation_max_age_days: int = Field(180, gt=0)
    backup_max_age_h: int = Field(26, gt=0)
    load_test_max_age_days: int = Field(90, gt=0)
    min_salt_length: int = Field(16, gt=0)
    publish_interval_s: int | None = Field(None, description="how often pipelines publish manifests")
    empty_recs_ratio_max: float = Field(0.02, ge=0, le=1, description="share of successful answers that are empty")
    cache_hit_ratio_min: float = Field(0.5, ge=0, le=1, description="config/rules cache hits per lookup")
    rollback_staleness_max_s: int = Field(
        300, gt=0, description="how long replicas may serve the old config/rules/manifest after a rollback"
    )


class PrivacyParams(Model):
    allowed_identifiers: list[Literal["user_id", "anonymous_id", "session_id"]] = Field(default_factory=list)
    pii_patterns: dict[str, str] = Field(default_factory=dict, description="extra name -> regex to look for")
    sample_rows: int = Field(1000, gt=0, le=100_000)


class LoadTestParams(Model):
    allowed: bool = False
    report: str | None = Field(None, description="load-test JSON report (upstream loadtest format)")
    requests: int = Field(1000, gt=0, le=100_000)
    concurrency: int = Field(10, gt=0, le=256)
    max_seconds: float = Field(30, gt=0, le=600)
    provoke_backpressure: bool = False


class MigrationParams(Model):
    expected_latest: int | None = None
    directory: str | None = Field(None, description="migrations directory (<version>_<name>.up.sql)")
    explicit_job: str | None = Field(None, description="how migrations run in production (job name / pipeline)")


class RestoreDrillParams(Model):
    enabled: bool = False
    scratch_dsn: SecretRef = None
    allow_production: bool = False
    timeout_s: float = Field(600, gt=0, le=7200, description="limit for the dump and for the restore, each")


class DeploymentParams(Model):
    grafana_dashboard: str | None = None
    pipelines_schedule: str | None = None
    pipelines_last_success: dt.datetime | None = None
    pipelines_owner: str | None = None
    backup_tool: str | None = None
    last_backup_at: dt.datetime | None = None


class Waiver(Model):
    check: str
    justification: str = Field(min_length=10)
    expires: dt.date
    approved_by: str


class Attestation(Model):
    check: str
    by: str
    date: dt.date
    evidence_url: str
    note: str = ""


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            "must be a short name of letters, digits, '.', '_' or '-' starting with a letter or digit (it names the "
            "run folder) — e.g. staging or prod-eu"
        )
    return value


class EnvironmentParams(Model):
    name: Annotated[str, AfterValidator(_slug)]
    owner: str | None = Field(None, description="who owns the environment (may not sign its audit)")
    allow_owner_signoff: bool = False
    allowed_signers: str | None = Field(
        None,
        description="allowed_signers file (the format git uses for SSH signatures) of the reviewers trusted to sign "
        "this environment's audits; relative to the params file",
    )


class Params(Model):
    include: list[str] = Field(
        default_factory=list,
        description="params fragments (YAML) folded into this file before validation: mappings merge key by key "
        "(this file wins), lists are concatenated; relative paths in a fragment resolve against this file. Meant "
        "for facts that age, kept apart from a committed file (attestations, deployment timestamps).",
    )
    secrets_root: str | None = Field(
        None,
        description="a folder outside the params file's folder that file: secrets may also come from (relative to "
        "this file); file: secrets anywhere else are refused",
    )
    environment: EnvironmentParams
    target: TargetParams
    auth: AuthParams = Field(default_factory=AuthParams)
    tenants: list[TenantParams] = Field(min_length=1)
    metrics_url: HttpUrl | None = Field(None, description="default: <base_url>/metrics")
    prometheus: PrometheusParams = Field(default_factory=PrometheusParams)
    database: DatabaseParams = Field(default_factory=DatabaseParams)
    manifests: ManifestParams = Field(default_factory=ManifestParams)
    config_sources: list[ConfigSource] = Field(default_factory=list)
    logs: LogParams = Field(default_factory=LogParams)
    policies: Policies = Field(default_factory=Policies)
    privacy: PrivacyParams = Field(default_factory=PrivacyParams)
    load_test: LoadTestParams = Field(default_factory=LoadTestParams)
    migrations: MigrationParams = Field(default_factory=MigrationParams)
    restore_drill: RestoreDrillParams = Field(default_factory=RestoreDrillParams)
    deployment: DeploymentParams = Field(default_factory=DeploymentParams)
    waivers: list[Waiver] = Field(default_factory=list)
    attestations: list[Attestation] = Field(default_factory=list)

    # Set by load_params, not by the file.
    source: Path | None = Field(None, exclude=True)

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def path(self, value: str) -> Path:
        """A path from the file, resolved relative to the params file."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    @property
    def resolved_metrics_url(self) -> str:
        return self.metrics_url or self.target.base_url.rstrip("/") + "/metrics"


def walk_secrets(value: Any, path: str = "") -> list[tuple[str, Secret]]:
    """Every :class:`Secret` inside a params model, with its field path (e.g. ``database.dsn``)."""
    if isinstance(value, Secret):
        return [(path, value)]
    if isinstance(value, BaseModel):
        return [
            found
            for name in type(value).model_fields
            for found in walk_secrets(getattr(value, name), f"{path}.{name}" if path else name)
        ]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in walk_secrets(item, f"{path}[{i}]")]
    return []


def _field_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        name = str(part)[:80]
        text += f"[{name}]" if isinstance(part, int) else (f".{name}" if text else name)
    return text or "(top level)"


_FIXES = {
    "extra_forbidden": "remove it, or check its spelling against params/README.md",
    "missing": "add it",
}


def load_params(path: str | Path, *, resolve_secrets: bool = True) -> Params:
    """Load and validate a params file; every problem raises :class:`ParamsError` naming file, field and fix.

    ``resolve_secrets=False`` loads a run's recorded params (``RUN_DIR/params.yaml``): secret references stay
    references and are not checked, since judging a finished run never reads a secret.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file — create it from params/production.example.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # bad dates, deep nesting
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ParamsError(f"{path}{where}: not valid YAML — {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of fields at the top level, found {type(raw).__name__}")
    raw = _with_includes(path, raw)
    base_dir = path.resolve().parent
    roots, lines = [base_dir], []
    secrets_root = raw.get("secrets_root")
    if resolve_secrets and isinstance(secrets_root, str) and secrets_root:
        root = base_dir / Path(secrets_root).expanduser()
        if root.is_dir():
            roots.append(root.resolve())
        else:
            lines.append(f"{path}: secrets_root: {root} is not a folder — create it or correct the path")
    try:
        params = Params.model_validate(
            raw, context={"base_dir": base_dir, "secret_roots": roots, "resolve": resolve_secrets}
        )
    except ValidationError as exc:
        for error in exc.errors():
            fix = _FIXES.get(error["type"], "")
            lines.append(f"{path}: {_field_path(error['loc'])}: {error['msg']}" + (f" — {fix}" if fix else ""))
    if lines:  # one problem per line: a control character from the file is shown escaped
        raise ParamsError("\n".join(_CONTROL.sub(lambda m: repr(m.group())[1:-1], line) for line in lines))
    params.source = path.resolve()
    return params


def _merged(base: Any, top: Any) -> Any:
    if isinstance(base, dict) and isinstance(top, dict):
        return {**base, **{key: _merged(base[key], value) if key in base else value for key, value in top.items()}}
    if isinstance(base, list) and isinstance(top, list):
        return [*base, *top]
    return top


def _with_includes(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with its ``include`` fragments folded in (see :attr:`Params.include`); fragments include nothing."""
    includes = raw.get("include") or []
    if not isinstance(includes, list) or not all(isinstance(entry, str) for entry in includes):
        raise ParamsError(f"{path}: include: expected a list of file paths — e.g. include: [attestations.yaml]")
    merged: dict[str, Any] = {}
    for entry in includes:
        fragment_path = Path(entry).expanduser()
        fragment_path = fragment_path if fragment_path.is_absolute() else path.parent / fragment_path
        if not fragment_path.is_file():
            raise ParamsError(f"{path}: include: {fragment_path} does not exist — create it or drop it from include")
        try:
            fragment = yaml.safe_load(fragment_path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            problem = getattr(exc, "problem", exc)
            raise ParamsError(f"{fragment_path} (included by {path}): not valid YAML — {problem}") from None
        if not isinstance(fragment, dict) or "include" in fragment:
            raise ParamsError(
                f"{fragment_path} (included by {path}): expected a mapping of params fields without its own include"
                " — list every fragment in the including file"
            )
        merged = _merged(merged, fragment)
    return _merged(merged, raw)


def attestation_for(params: Params, check_id: str) -> Attestation | None:
    """The newest attestation for a check, if any (expiry is judged by the caller)."""
    matches = [a for a in params.attestations if a.check == check_id]
    return max(matches, key=lambda a: a.date) if matches else None
