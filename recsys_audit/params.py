"""Environment profiles: ``params/<env>.yaml`` -> a validated :class:`Params` model.

Secrets are never written in the file: they are references (``env:NAME`` or ``file:PATH``) that become
:class:`Secret` objects, resolved when the file loads (the variable is set; the file exists under the params file's
folder or ``secrets_root``; the value is one line) and registered with the redaction module; a ``Secret`` prints as
``***``. Relative paths are relative to the params file. Values that end up in a request line, a header or a path
(URLs, header names and values, tenant ids, the environment name, timeouts) are checked at load too.

Every problem of a file — YAML, fields, values, included fragments, secret references — is reported in one pass, one
line each, ``file:line:column: field: what is wrong — fix``: the places come from the YAML nodes (through ``include``
fragments), the wording is the kit's own (never the validation library's), with "did you mean" for misspelt fields
and values. Every field carries a description: :mod:`recsys_audit.params_docs` derives the JSON Schema and the
field reference (``params/README.md``) from this model.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from recsys_audit.redaction import MASK, register_secret


def expand_user(value: str) -> Path:
    """``~`` and ``~user`` expanded; left as written when there is no such home (the path then fails as not found)."""
    try:
        return Path(value).expanduser()
    except RuntimeError:  # "~nobody-here": pathlib cannot determine that home directory
        return Path(value)


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
        path = expand_user(self.target)
        return Path(os.path.normpath(path if path.is_absolute() or self._base is None else self._base / path))

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
            if secret.scheme == "file" and problem.endswith("does not exist"):  # the fix depends on where it is
                raise PydanticCustomError(
                    "missing_file", "{problem}", {"problem": problem, "path": str(secret._path())}
                )
            fix = f" — export {secret.target}" if secret.scheme == "env" and problem.endswith("is not set") else ""
            raise ValueError(problem + fix)
        secret.reveal()
    return secret


_SECRET_SCHEMA = {
    "type": ["string", "null"],
    "pattern": "^(env|file):.+",
    "description": "a secret reference: env:VARIABLE or file:PATH (never the value itself)",
}
SecretRef = Annotated[Any, BeforeValidator(_to_secret), WithJsonSchema(_SECRET_SCHEMA)]
# A PEM block: line breaks allowed (it signs tokens in memory and is never sent as a header).
PemSecretRef = Annotated[
    Any, BeforeValidator(lambda value, info: _to_secret(value, info, multiline=True)), WithJsonSchema(_SECRET_SCHEMA)
]


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


HttpUrl = Annotated[
    str,
    AfterValidator(_uri(("http", "https"), "https://recsys.example.com")),
    WithJsonSchema({"type": "string", "format": "uri"}),
]
ManifestUri = Annotated[
    str,
    AfterValidator(
        _uri(("file", "http", "https", "s3"), "s3://bucket/registry/current/{tenant}/{surface}/manifest.json")
    ),
]
HeaderName = Annotated[
    str, AfterValidator(_header_name), WithJsonSchema({"type": "string", "pattern": _HEADER_NAME.pattern})
]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
Text = Annotated[str, AfterValidator(_no_control)]


class Model(BaseModel):
    # Floats are finite: a timeout of .inf or .nan never reaches a probe.
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=False, allow_inf_nan=False)


# --- who the auditor is on the target --------------------------------------------------------------------------


class Credential(Model):
    """One identity: a bearer token, an API key, or plain (non-secret) headers such as the dev-auth headers."""

    bearer: SecretRef = Field(None, description="a JWT sent as 'Authorization: Bearer …' (a secret reference)")
    api_key: SecretRef = Field(None, description="an API key sent in auth.api_key_header (a secret reference)")
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict, description="non-secret headers sent with this identity, e.g. X-Dev-User-Id"
    )

    @model_validator(mode="after")
    def _one_needed(self) -> Credential:
        if self.bearer is None and self.api_key is None and not self.headers:
            raise ValueError("give 'bearer: env:VAR', 'api_key: env:VAR' or 'headers: {...}'")
        return self


class Credentials(Model):
    """The audit's identities on the audited tenant, one per role; a role without one is not probed."""

    viewer: Credential | None = Field(None, description="an identity holding the viewer role")
    operator: Credential | None = Field(None, description="an identity holding the operator role")
    admin: Credential | None = Field(None, description="an identity holding the admin role")
    no_role: Credential | None = Field(None, description="an identity of the audited tenant holding no role")


class OtherTenant(Model):
    """An identity of a second tenant, used to prove that tenants are isolated."""

    tenant: HeaderValue = Field(description="the second tenant's external id")
    credential: Credential | None = Field(None, description="an identity of that tenant")


class JwtParams(Model):
    """How the target validates JWTs; what is not given here is read from the config sources."""

    jwks_url: HttpUrl | None = Field(None, description="the JWKS endpoint the service trusts")
    issuer: str | None = Field(None, description="expected 'iss' claim (default: JWT_ISSUER of the config)")
    audience: str | None = Field(None, description="expected 'aud' claim (default: JWT_AUDIENCE of the config)")
    tenant_claim: str = Field("tenant_id", description="the claim naming the tenant")
    role_claim: str = Field("roles", description="the claim listing the roles")
    signing_key: PemSecretRef = Field(
        None,
        description="a private key the target trusts (PEM, a secret reference), for negative probes that sign "
        "crafted tokens; non-production targets only, unless allow_signing_in_production",
    )
    signing_kid: str | None = Field(None, description="the 'kid' of signing_key (default: the first key in the JWKS)")
    ca_bundle: str | None = Field(None, description="CA bundle to verify the JWKS endpoint's TLS certificate")
    allow_signing_in_production: bool = Field(
        False, description="let negative probes sign tokens with signing_key even when target.production is true"
    )


class AuthParams(Model):
    """Authentication and tenancy as the deployment declares them, and the audit's identities."""

    mechanisms: list[Literal["jwt", "api_key"]] = Field(
        default_factory=list, description="the authentication mechanisms the deployment offers"
    )
    tenant_source: Literal["claims", "header", "claims+header"] | None = Field(
        None, description="where the service takes the tenant from"
    )
    tenant_source_documented_at: str | None = Field(None, description="link to where the tenant source is documented")
    tenant_header: HeaderName = Field("X-Org-Id", description="the header naming the tenant")
    api_key_header: HeaderName = Field("X-API-Key", description="the header carrying an API key")
    dev_user_header: HeaderName = Field("X-Dev-User-Id", description="the dev-auth user header (must be refused)")
    dev_tenant_header: HeaderName = Field("X-Dev-Org-Id", description="the dev-auth tenant header (must be refused)")
    jwt: JwtParams = Field(default_factory=JwtParams, description="JWT validation settings")
    credentials: Credentials = Field(default_factory=Credentials, description="the audit's identities, per role")
    other_tenant: OtherTenant | None = Field(None, description="a second tenant, to prove isolation")
    key_rotation_process_documented_at: str | None = Field(
        None, description="link to the documented API-key rotation process"
    )


# --- what is audited -------------------------------------------------------------------------------------------


class TenantParams(Model):
    """A tenant of the deployment and the surfaces it serves."""

    id: HeaderValue = Field(description="external id, as in the JWT tenant claim and the X-Org-Id header")
    surfaces: list[Text] = Field(min_length=1, description="the recommendation surfaces of the tenant, e.g. home")
    serving_mode: Literal["db_only", "artifact"] | None = Field(
        None, description="how the tenant is served: from the database or from published artifacts"
    )
    mode_documented_at: str | None = Field(None, description="link to where the serving mode is documented")


class TargetParams(Model):
    """The audited service."""

    base_url: HttpUrl = Field(description="the service's base URL, e.g. https://recsys.internal.example.com")
    timeout_s: float = Field(
        5.0, gt=0, le=600, description="every request's deadline: connect, headers and body together (seconds)"
    )
    verify_tls: bool = Field(
        True, description="verify the service's TLS certificate (with ca_bundle set, always verified)"
    )
    ca_bundle: str | None = Field(None, description="CA bundle to verify the service's TLS certificate")
    behind_proxy: bool = Field(False, description="requests reach the service through a proxy or load balancer")
    production: bool = Field(False, description="judge the target by production rules")
    vantage: Literal["public", "internal"] | None = Field(
        None,
        description="where the auditor reaches base_url from: public (from outside, through the ingress, as any "
        "client) or internal (inside the service's network); decides whether an open /metrics or /health/detailed "
        "is a public exposure",
    )


class PrometheusParams(Model):
    """The Prometheus server that scrapes the service."""

    url: HttpUrl | None = Field(None, description="the Prometheus server's URL")
    job: str | None = Field(None, description="scrape job of the service; default: any target with recsys metrics")
    rules_files: list[str] = Field(
        default_factory=list, description="alert rule files to read when the server's rules API is not reachable"
    )


class DatabaseParams(Model):
    """The service's PostgreSQL database, read through a read-only session."""

    dsn: SecretRef = Field(None, description="the auditor's connection string (a secret reference)")
    statement_timeout_ms: int = Field(3000, gt=0, description="each statement's time limit (milliseconds)")
    service_role: str | None = Field(None, description="the role recsys-service connects as")
    allowed_event_readers: list[str] = Field(default_factory=list, description="roles allowed to read the event tables")
    long_transaction_max_s: int = Field(300, gt=0, description="a transaction open longer than this is flagged")


class S3Params(Model):
    """Access to an S3 manifest store; default: the standard AWS chain."""

    endpoint: HttpUrl | None = Field(None, description="an S3-compatible endpoint (default: AWS)")
    region: str | None = Field(None, description="the bucket's region")
    access_key: SecretRef = Field(None, description="access key id (a secret reference)")
    secret_key: SecretRef = Field(None, description="secret access key (a secret reference)")


class ManifestParams(Model):
    """Where the published artifact manifests are."""

    template: ManifestUri | None = Field(
        None, description="URI with {tenant} and {surface}: file://, http(s)://, s3://"
    )
    previous_template: ManifestUri | None = Field(None, description="where known-good previous manifests are retained")
    artifact_root: ManifestUri | None = Field(
        None,
        description="URI prefix every artifact a manifest names must start with; default: the template's bucket "
        "(s3), origin (http/https) or registry folder (file: the parent of the template's fixed folder)",
    )
    s3: S3Params = Field(default_factory=S3Params, description="access to s3:// manifests")

    @model_validator(mode="after")
    def _file_artifacts_need_a_file_template(self) -> ManifestParams:
        root, template = (self.artifact_root or "").lower(), (self.template or "").lower()
        if root.startswith("file:") and template and not template.startswith("file:"):
            raise ValueError("artifact_root may be file:// only when the template is file:// — name the bucket or host")
        return self


class ConfigSource(Model):
    """A deployment config file the service's settings are read from."""

    kind: Literal["env_file", "helm_values", "compose"] = Field(description="the file's format")
    path: str = Field(description="the file, relative to the params file")
    service: str | None = Field(None, description="compose service name (compose only)")


class LogParams(Model):
    """Log files the kit reads."""

    exposure: list[str] = Field(default_factory=list, description="exposure JSONL files or directories")
    service: list[str] = Field(default_factory=list, description="service log files to scan for secrets")
    audit: list[str] = Field(default_factory=list, description="file audit log (JSONL with hash chain)")


class Policies(Model):
    """The limits the target is judged by."""

    manifest_max_age_s: int = Field(26 * 3600, gt=0, description="oldest acceptable current manifest (seconds)")
    signal_max_age_days: int = Field(2, gt=0, description="oldest acceptable newest signal (days)")
    exposure_retention_days: int = Field(30, gt=0, description="how long exposure records may be kept (days)")
    api_key_max_age_days: int = Field(90, gt=0, description="oldest acceptable active API key (days)")
    latency_p95_ms: float = Field(250, gt=0, description="the p95 latency objective (milliseconds)")
    error_ratio_max: float = Field(0.01, ge=0, le=1, description="the highest acceptable ratio of 5xx answers")
    attestation_max_age_days: int = Field(180, gt=0, description="oldest attestation that still counts (days)")
    backup_max_age_h: int = Field(26, gt=0, description="oldest acceptable last backup (hours)")
    load_test_max_age_days: int = Field(90, gt=0, description="oldest load-test report that still counts (days)")
    min_salt_length: int = Field(16, gt=0, description="shortest acceptable hashing salt or secret (characters)")
    publish_interval_s: int | None = Field(None, description="how often pipelines publish manifests (seconds)")
    empty_recs_ratio_max: float = Field(0.02, ge=0, le=1, description="share of successful answers that are empty")
    cache_hit_ratio_min: float = Field(0.5, ge=0, le=1, description="config/rules cache hits per lookup")
    rollback_staleness_max_s: int = Field(
        300, gt=0, description="how long replicas may serve the old config/rules/manifest after a rollback"
    )


class PrivacyParams(Model):
    """What the service may store about users."""

    allowed_identifiers: list[Literal["user_id", "anonymous_id", "session_id"]] = Field(
        default_factory=list, description="the user identifiers clients may send"
    )
    pii_patterns: dict[str, str] = Field(default_factory=dict, description="extra name -> regex to look for")
    sample_rows: int = Field(1000, gt=0, le=100_000, description="rows sampled per event table")


class LoadTestParams(Model):
    """The bounded load the audit may generate, and the recorded load-test report."""

    allowed: bool = Field(False, description="let the audit send a short, bounded load")
    report: str | None = Field(None, description="load-test JSON report (upstream loadtest format)")
    requests: int = Field(1000, gt=0, le=100_000, description="requests the audit's load sends at most")
    concurrency: int = Field(10, gt=0, le=256, description="requests in flight at once")
    max_seconds: float = Field(30, gt=0, le=600, description="the load's time limit (seconds)")
    provoke_backpressure: bool = Field(False, description="push past the concurrency limit to see it shed load")


class MigrationParams(Model):
    """Database migrations of the deployed release."""

    expected_latest: int | None = Field(None, description="the newest migration version the release ships")
    directory: str | None = Field(None, description="migrations directory (<version>_<name>.up.sql)")
    explicit_job: str | None = Field(None, description="how migrations run in production (job name / pipeline)")


class RestoreDrillParams(Model):
    """A restore drill: dump the database and restore it into a scratch database."""

    enabled: bool = Field(False, description="run the drill")
    scratch_dsn: SecretRef = Field(None, description="the scratch database to restore into (a secret reference)")
    allow_production: bool = Field(False, description="allow the drill when target.production is true")
    timeout_s: float = Field(600, gt=0, le=7200, description="limit for the dump and for the restore, each")


class DeploymentParams(Model):
    """Facts about the deployment the kit cannot observe itself."""

    grafana_dashboard: str | None = Field(None, description="the service's Grafana dashboard JSON")
    pipelines_schedule: str | None = Field(None, description="cron schedule of the publishing pipelines")
    pipelines_last_success: dt.datetime | None = Field(None, description="when the pipelines last succeeded")
    pipelines_owner: str | None = Field(None, description="who is paged when publishing stops")
    backup_tool: str | None = Field(None, description="how the database is backed up")
    last_backup_at: dt.datetime | None = Field(None, description="when the last backup finished")


class Waiver(Model):
    """An accepted failure of one check, until a date."""

    check: str = Field(description="the check id (see `recsys-audit checks`)")
    justification: str = Field(min_length=10, description="why the failure is accepted")
    expires: dt.date = Field(description="the last day the waiver applies")
    approved_by: str = Field(description="who accepted it")


class Attestation(Model):
    """A person's statement that a manual check holds."""

    check: str = Field(description="the check id (see `recsys-audit checks`)")
    by: str = Field(description="who attests")
    date: dt.date = Field(description="when it was checked")
    evidence_url: str = Field(description="where the evidence is")
    note: str = Field("", description="anything the reviewer should know")


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            "must be a short name of letters, digits, '.', '_' or '-' starting with a letter or digit (it names the "
            "run folder) — e.g. staging or prod-eu"
        )
    return value


class EnvironmentParams(Model):
    """The audited environment."""

    name: Annotated[str, AfterValidator(_slug)] = Field(description="the environment's name; it names the run folder")
    owner: str | None = Field(None, description="who owns the environment (may not sign its audit)")
    allow_owner_signoff: bool = Field(False, description="let the owner sign the environment's audits")
    allowed_signers: str | None = Field(
        None,
        description="allowed_signers file (the format git uses for SSH signatures) of the reviewers trusted to sign "
        "this environment's audits; relative to the params file",
    )


class Params(Model):
    """A params file: one environment of recsys-service and how to audit it."""

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
    environment: EnvironmentParams = Field(description="the audited environment")
    target: TargetParams = Field(description="the audited service")
    auth: AuthParams = Field(default_factory=AuthParams, description="authentication, tenancy and identities")
    tenants: list[TenantParams] = Field(min_length=1, description="the tenants audited")
    metrics_url: HttpUrl | None = Field(None, description="the service's metrics; default: target.base_url + /metrics")
    prometheus: PrometheusParams = Field(default_factory=PrometheusParams, description="the Prometheus server")
    database: DatabaseParams = Field(default_factory=DatabaseParams, description="the service's database")
    manifests: ManifestParams = Field(default_factory=ManifestParams, description="the artifact manifests")
    config_sources: list[ConfigSource] = Field(default_factory=list, description="deployment config files")
    logs: LogParams = Field(default_factory=LogParams, description="log files")
    policies: Policies = Field(default_factory=Policies, description="the limits the target is judged by")
    privacy: PrivacyParams = Field(default_factory=PrivacyParams, description="what may be stored about users")
    load_test: LoadTestParams = Field(default_factory=LoadTestParams, description="load the audit may generate")
    migrations: MigrationParams = Field(default_factory=MigrationParams, description="database migrations")
    restore_drill: RestoreDrillParams = Field(default_factory=RestoreDrillParams, description="the restore drill")
    deployment: DeploymentParams = Field(default_factory=DeploymentParams, description="facts about the deployment")
    waivers: list[Waiver] = Field(default_factory=list, description="accepted failures, each until a date")
    attestations: list[Attestation] = Field(default_factory=list, description="statements that manual checks hold")

    _source: Path | None = PrivateAttr(None)  # set by load_params, never by the file

    @property
    def source(self) -> Path | None:
        """The params file this was loaded from."""
        return self._source

    @source.setter
    def source(self, path: Path | None) -> None:
        self._source = path

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def path(self, value: str) -> Path:
        """A path from the file, resolved relative to the params file."""
        path = expand_user(value)
        return path if path.is_absolute() else self.base_dir / path

    def tls(self, *, jwks: bool = False) -> ssl.SSLContext:
        """TLS for a connection to the target's endpoints (see :func:`recsys_audit.probes.http.tls_context`): its CA
        bundle — ``target.ca_bundle``, or for the JWKS endpoint (often another host) ``auth.jwt.ca_bundle`` only —
        when set, else ``target.verify_tls``."""
        from recsys_audit.probes.http import tls_context

        bundle = self.auth.jwt.ca_bundle if jwks else self.target.ca_bundle
        return tls_context(self.target.verify_tls, self.path(bundle) if bundle else None)

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


# --- loading: YAML with the place of every node, then one validation that lists every problem ---------------------

PARAMS_DOCS = "params/README.md"
SANDBOX_FOLDER = ".sandbox"  # where `recsys-audit sandbox up` writes an instance's files (<folder>/<name>/)
SANDBOX_DEFAULT_NAME = "local"


@dataclass(frozen=True)
class Place:
    """Where a YAML node starts, as editors count: ``file:line:column``, both from 1."""

    file: Path
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass
class _Located:
    """The place of a value in the params document, of its key (mapping entries) and of its children."""

    place: Place
    key_place: Place | None = None
    children: dict[Any, _Located] | list[_Located] | None = None


def _place(file: Path, node: yaml.Node) -> Place:
    return Place(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _locate(node: yaml.Node, file: Path, key_place: Place | None = None, depth: int = 0) -> _Located:
    located = _Located(_place(file, node), key_place)
    if depth > 64:  # deeper than any params field; also ends aliases that refer to themselves
        return located
    if isinstance(node, yaml.MappingNode):
        located.children = {
            key.value: _locate(value, file, _place(file, key), depth + 1)
            for key, value in node.value
            if isinstance(key, yaml.ScalarNode)
        }
    elif isinstance(node, yaml.SequenceNode):
        located.children = [_locate(item, file, None, depth + 1) for item in node.value]
    return located


class _Loader(yaml.SafeLoader):
    """The safe loader, saying where an impossible date is (the stock one raises a bare ValueError)."""

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a real date or time ({exc})", node.start_mark
            ) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _read_yaml(path: Path) -> tuple[Any, _Located]:
    """The document and the places of its nodes; ParamsError (with line:column) when it is not valid YAML."""
    try:
        loader = _Loader(path.read_text(encoding="utf-8"))
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
        located = _locate(node, path) if node is not None else _Located(Place(path, 1, 1))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or ("nested too deeply" if isinstance(exc, RecursionError) else exc)
        raise ParamsError(f"{where}: not valid YAML — {problem}") from None
    return data, located


def _merged(base: Any, top: Any) -> Any:
    if isinstance(base, dict) and isinstance(top, dict):
        return {**base, **{key: _merged(base[key], value) if key in base else value for key, value in top.items()}}
    if isinstance(base, list) and isinstance(top, list):
        return [*base, *top]
    return top


def _merged_places(base: _Located | None, top: _Located) -> _Located:
    """The places of :func:`_merged`'s result: merged exactly as the values are."""
    if base is None:
        return top
    if isinstance(base.children, dict) and isinstance(top.children, dict):
        children = dict(base.children)
        for key, value in top.children.items():
            children[key] = _merged_places(children.get(key), value)
        return _Located(top.place, top.key_place, children)
    if isinstance(base.children, list) and isinstance(top.children, list):
        return _Located(top.place, top.key_place, [*base.children, *top.children])
    return top


def _find(located: _Located, loc: tuple[Any, ...]) -> _Located:
    """The node at ``loc`` (a pydantic error location), or its nearest ancestor in the document."""
    node = located
    for part in loc:
        children = node.children
        found = None
        if isinstance(children, dict):
            found = children.get(part) if part in children else children.get(str(part))
        elif isinstance(children, list) and isinstance(part, int) and 0 <= part < len(children):
            found = children[part]
        if found is None:
            return node
        node = found
    return node


@dataclass
class _Problem:
    """One problem of a params file: where, which field, what is wrong and the fix."""

    place: Place | None
    field: str
    message: str
    sandbox: Path | None = None  # the sandbox instance folder a missing file belongs in

    def text(self, path: Path) -> str:
        where = str(self.place or path)
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


def _sandbox_instance(path: Path) -> Path | None:
    """The sandbox instance folder (``…/.sandbox/<name>``) a path lies in, if any."""
    parts = Path(os.path.normpath(Path(path).absolute())).parts
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == SANDBOX_FOLDER:
            return Path(*parts[: index + 2])
    return None


def _sandbox_up(instance: Path) -> str:
    name = instance.name
    return "recsys-audit sandbox up" + ("" if name == SANDBOX_DEFAULT_NAME else f" --name {name}")


def _missing_file_fix(path: Path) -> tuple[str, Path | None]:
    """How to get a missing file: the sandbox writes the files of its instance folders; others are the user's."""
    instance = _sandbox_instance(path)
    if instance is not None:
        return f"the sandbox writes it: run `{_sandbox_up(instance)}`", instance
    return "create the file or correct the path", None


def _with_includes(
    path: Path, raw: dict[str, Any], located: _Located
) -> tuple[dict[str, Any], _Located, list[_Problem]]:
    """``raw`` with its ``include`` fragments folded in (see :attr:`Params.include`); fragments include nothing.
    A fragment that cannot be read is a problem of the file, and the others are still folded in."""
    includes = raw.get("include") or []
    where = _find(located, ("include",)).place
    if not isinstance(includes, list) or not all(isinstance(entry, str) for entry in includes):
        return raw, located, [_Problem(where, "include", "expected a list of file paths — e.g. include: [facts.yaml]")]
    merged: dict[str, Any] = {}
    merged_places: _Located | None = None
    problems: list[_Problem] = []
    for index, entry in enumerate(includes):
        entry_place = _find(located, ("include", index)).place
        fragment_path = Path(os.path.normpath(path.parent / expand_user(entry)))
        if not fragment_path.is_file():
            fix, instance = _missing_file_fix(fragment_path)
            problems.append(_Problem(entry_place, "include", f"{fragment_path} does not exist — {fix}", instance))
            continue
        try:
            fragment, fragment_places = _read_yaml(fragment_path)
        except ParamsError as exc:
            problems.append(_Problem(None, "", f"{exc} (included by {path})"))
            continue
        if fragment is None:
            continue
        if not isinstance(fragment, dict) or "include" in fragment:
            message = "expected a mapping of params fields without its own include — list every fragment in " + str(
                path
            )
            problems.append(_Problem(fragment_places.place, "", message))
            continue
        merged = _merged(merged, fragment)
        merged_places = _merged_places(merged_places, fragment_places)
    return _merged(merged, raw), _merged_places(merged_places, located), problems


# --- pydantic's errors in the kit's words ------------------------------------------------------------------------


def _field_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        name = str(part)[:80]
        text += f"[{name}]" if isinstance(part, int) else (f".{name}" if text else name)
    return text or "(top level)"


def _unwrapped(annotation: Any) -> Any:
    """The type behind ``Annotated[...]`` and ``X | None``."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
            continue
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
            annotation = args[0]
            continue
        return annotation


def _type_at(loc: tuple[Any, ...]) -> Any:
    """The declared type at an error location of :class:`Params`, or None where the model does not say."""
    current: Any = Params
    for part in loc:
        current = _unwrapped(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is list and isinstance(part, int):
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    return _unwrapped(current)


def _shown(value: Any) -> str:
    """A value from the file as the messages quote it: short, one line."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "…"


def _suggestion(word: Any, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" — did you mean {close[0]!r}?" if close else ""


_KINDS = {
    ("bool_type", "bool_parsing"): "true or false",
    ("int_type", "int_parsing", "int_from_float", "int_parsing_size"): "a whole number",
    ("float_type", "float_parsing"): "a number",
    ("finite_number",): "a finite number",
    ("string_type", "string_unicode"): "text",
    ("list_type", "tuple_type", "set_type"): "a list",
    ("dict_type", "model_type", "model_attributes_type", "dataclass_type"): "a mapping of fields",
    ("date_type", "date_parsing", "date_from_datetime_parsing", "date_from_datetime_inexact"): "a date (YYYY-MM-DD)",
    ("datetime_type", "datetime_parsing", "datetime_from_date_parsing", "datetime_object_invalid"): (
        "a date and time (e.g. 2026-05-01T02:15:00Z)"
    ),
    ("timezone_naive", "timezone_aware"): "a date and time with its time zone (e.g. 2026-05-01T02:15:00Z)",
}
_EXPECTED = {kind: expected for kinds, expected in _KINDS.items() for kind in kinds}
_BOUNDS = {"greater_than": "greater than", "greater_than_equal": "at least", "less_than": "less than",
           "less_than_equal": "at most"}  # fmt: skip


def _message(error: ErrorDetails) -> tuple[str, Path | None]:
    """What is wrong and the fix, in the kit's words (never pydantic's), and the sandbox folder a missing file
    belongs in."""
    kind, loc, found, ctx = error["type"], error["loc"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        return f"required field missing — add it (see {PARAMS_DOCS})", None
    if kind == "extra_forbidden":
        parent = _type_at(loc[:-1])
        fields = list(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        hint = _suggestion(loc[-1], fields)
        return "unknown field" + (hint or f" — remove it, or check its spelling ({PARAMS_DOCS} lists the fields)"), None
    if kind in {"literal_error", "enum"}:
        declared = _type_at(loc)
        choices = [str(c) for c in get_args(declared)] if get_origin(declared) is Literal else []
        listed = ", ".join(repr(c) for c in choices) or str(ctx.get("expected", ""))
        return f"expected one of {listed}, found {_shown(found)}{_suggestion(found, choices)}", None
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()), "")
        return f"must be {_BOUNDS[kind]} {bound}, found {_shown(found)}", None
    if kind in {"too_short", "string_too_short", "too_long", "string_too_long"}:
        limit = ctx.get("min_length", ctx.get("max_length"))
        fewest = kind.endswith("too_short")
        unit = "characters" if kind.startswith("string") else "item(s)"
        return f"needs {'at least' if fewest else 'at most'} {limit} {unit}", None
    if kind == "missing_file":
        fix, instance = _missing_file_fix(Path(ctx["path"]))
        return f"{ctx['problem']} — {fix}", instance
    if kind in {"value_error", "assertion_error"}:
        return str(ctx.get("error", "")) or "not an accepted value", None  # the kit's own validators' words
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, found {_shown(found)}", None
    return f"not an accepted value here, found {_shown(found)} — see {PARAMS_DOCS}", None


def _problems(exc: ValidationError, located: _Located) -> list[_Problem]:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        message, instance = _message(error)
        if loc and loc[-1] == "[key]":  # a mapping key that is not accepted: point at the key
            node, loc = _find(located, loc[:-1]), loc[:-1]
            place = node.key_place or node.place
        else:
            node = _find(located, loc)
            place = node.key_place if error["type"] == "extra_forbidden" and node.key_place else node.place
        problems.append(_Problem(place, _field_path(loc), message, instance))
    return problems


def _grouped_by_sandbox(problems: list[_Problem]) -> list[_Problem]:
    """Problems pointing into a sandbox instance that does not exist at all, as one: set the instance up."""
    absent: dict[Path, list[_Problem]] = {}
    for problem in problems:
        if problem.sandbox is not None and not problem.sandbox.is_dir():
            absent.setdefault(problem.sandbox, []).append(problem)
    result = []
    for problem in problems:
        group = absent.get(problem.sandbox) if problem.sandbox is not None else None
        if not group:
            result.append(problem)
        elif problem is group[0]:
            fields = list(dict.fromkeys(p.field for p in group))
            named = ", ".join(fields[:3]) + (f" and {len(fields) - 3} more" if len(fields) > 3 else "")
            message = (
                f"sandbox instance {problem.sandbox.name!r} is not set up ({problem.sandbox} does not exist; "
                f"{named} point into it) — run `{_sandbox_up(problem.sandbox)}`"
            )
            result.append(_Problem(problem.place, "", message))
    return result


def load_params(path: str | Path, *, resolve_secrets: bool = True) -> Params:
    """Load and validate a params file; every problem of the file — YAML, fields, values, included fragments and
    secret references — raises one :class:`ParamsError`, one line per problem: ``file:line:column: field: what is
    wrong — fix``.

    ``resolve_secrets=False`` loads a run's recorded params (``RUN_DIR/params.yaml``): secret references stay
    references and are not checked, since judging a finished run never reads a secret.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file — create it from params/production.example.yaml")
    raw, located = _read_yaml(path)
    if not isinstance(raw, dict):
        found = "nothing" if raw is None else _shown(raw) if not isinstance(raw, list) else "a list"
        raise ParamsError(f"{located.place}: expected a mapping of fields at the top level, found {found}")
    raw, located, problems = _with_includes(path, raw, located)
    base_dir = path.resolve().parent
    roots = [base_dir]
    secrets_root = raw.get("secrets_root")
    if resolve_secrets and isinstance(secrets_root, str) and secrets_root:
        root = Path(os.path.normpath(base_dir / expand_user(secrets_root)))
        roots.append(root)  # even when missing: the secrets under it are then missing files, not misplaced ones
        if not root.is_dir():
            fix, instance = _missing_file_fix(root)
            fix = fix if instance else "create it or correct the path"
            where = _find(located, ("secrets_root",)).place
            problems.append(_Problem(where, "secrets_root", f"{root} is not a folder — {fix}", instance))
    try:
        params = Params.model_validate(
            raw, context={"base_dir": base_dir, "secret_roots": roots, "resolve": resolve_secrets}
        )
    except ValidationError as exc:
        problems += _problems(exc, located)
    if problems:  # one problem per line, in the order of the file; a control character from the file is escaped

        def order(problem: _Problem) -> tuple[bool, bool, int, int]:
            place = problem.place or Place(path, 0, 0)
            return problem.place is None, place.file != path, place.line, place.column

        ordered = sorted(problems, key=order)
        lines = [problem.text(path) for problem in _grouped_by_sandbox(ordered)]
        raise ParamsError("\n".join(_CONTROL.sub(lambda m: repr(m.group())[1:-1], line) for line in lines))
    params.source = path.resolve()
    return params


def attestation_for(params: Params, check_id: str) -> Attestation | None:
    """The newest attestation for a check, if any (expiry is judged by the caller)."""
    matches = [a for a in params.attestations if a.check == check_id]
    return max(matches, key=lambda a: a.date) if matches else None
