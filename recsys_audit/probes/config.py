"""Deployment config sources -> one normalized view of recsys-service's environment, with the source of each value.

Sources, in the order the params list them (later ones override earlier ones, as ``helm -f a -f b`` does; every
value each source gives is kept, so sources of different kinds that disagree can be shown as contradictory):

* ``env_file``: ``KEY=VALUE`` lines (``export``, quotes and comments allowed), as in ``api/.env``;
* ``helm_values``: the chart's ``api.env`` (mapping or list of ``{name, value}``), ``api.secrets`` (the chart's
  Secret, written in the values file: judged, never shown; ``""`` is an empty value), ``api.existingSecret`` (a
  Secret the kit cannot read), ``api.replicaCount``, ``api.image``;
* ``compose``: ``services.<name>.environment`` (mapping or list) and its ``env_file`` entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from recsys_audit.params import ConfigSource, Params
from recsys_audit.redaction import register_secret


class ConfigSourceError(Exception):
    """A config source that cannot be read or parsed (names the file and the problem)."""


# Upstream defaults for the variables the checks reason about (reference: config.go + toolkit base config).
DEFAULTS: dict[str, str] = {
    "ENV": "development",
    "API_ADDR": ":8000",
    "AUTH_REQUIRED": "true",
    "JWT_AUTH_ENABLED": "true",
    "API_KEY_ENABLED": "false",
    "API_KEY_HEADER": "X-API-Key",
    "DEV_AUTH_ENABLED": "false",
    "AUTH_ALLOW_INSECURE_JWKS": "false",
    "AUTH_JWKS_ALLOWED_HOSTS": "",
    "JWT_ALLOWED_ALGORITHMS": "RS256",
    "JWT_ALLOW_DANGEROUS_DEV_BYPASSES": "false",
    "JWT_SKIP_HEADER_ENABLED": "false",
    "RATE_LIMIT_SKIP_ENABLED": "false",
    "RATE_LIMIT_ALLOW_DANGEROUS_DEV_BYPASSES": "false",
    "LOG_LEVEL": "info",
    "OTEL_TRACING_ENABLED": "false",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "",
    "TENANT_HEADER_NAME": "X-Org-Id",
    "AUTH_TENANT_CLAIMS": "tenant_id,org_id,orgId,organization_id",
    "AUTH_ROLE_CLAIMS": "roles,role,scope,scopes",
    "AUTH_VIEWER_ROLE": "viewer",
    "AUTH_OPERATOR_ROLE": "operator",
    "AUTH_ADMIN_ROLE": "admin",
    "CORS_ALLOWED_ORIGINS": "*",
    "CORS_ALLOW_CREDENTIALS": "false",
    "MIGRATE_ON_START": "false",
    "PPROF_ENABLED": "false",
    "TENANT_RATE_LIMIT_ENABLED": "true",
    "TENANT_RATE_LIMIT_CAPACITY": "60",
    "TENANT_RATE_LIMIT_REFILL_RATE": "30",
    "EXPOSURE_LOG_FORMAT": "service_v1",
    "EXPOSURE_LOG_RETENTION_DAYS": "30",
    "EXPERIMENT_ASSIGNMENT_ENABLED": "true",
    "RECSYS_EXPLAIN_REQUIRE_ADMIN": "true",
    "RECSYS_BACKPRESSURE_MAX_INFLIGHT": "0",
    "RECSYS_BACKPRESSURE_MAX_QUEUE": "0",
    "RECSYS_BACKPRESSURE_WAIT_TIMEOUT": "200ms",
    "RECSYS_BACKPRESSURE_RETRY_AFTER": "1s",
    "RECSYS_CONFIG_CACHE_TTL": "5m",
    "RECSYS_RULES_CACHE_TTL": "5m",
    "RECSYS_ARTIFACT_MODE_ENABLED": "false",
    "RECSYS_ARTIFACT_MANIFEST_TTL": "1m",
    "RECSYS_ARTIFACT_CACHE_TTL": "1m",
    "RECSYS_ARTIFACT_S3_USE_SSL": "true",
    "RECSYS_DB_REQUIRE_RLS": "false",
    "RECSYS_ALGO_VERSION": "recsys-algo@local",
    "TRUSTED_PROXIES": "",
    "AUDIT_LOG_PATH": "",
    "EXPOSURE_LOG_PATH": "",
    "EXPOSURE_HASH_SALT": "",
    "API_KEY_HASH_SECRET": "",
}

# Defaults that depend on ENV: docs are on unless production, the tenant claim is required only in production.
PRODUCTION_DEPENDENT_DEFAULTS: dict[str, tuple[str, str]] = {  # name -> (in production, elsewhere)
    "DOCS_ENABLED": ("false", "true"),
    "AUTH_REQUIRE_TENANT_CLAIM": ("true", "false"),
}
# Switches whose default is "on when a path is set": name -> the path variable.
PATH_DEPENDENT_DEFAULTS: dict[str, str] = {
    "AUDIT_LOG_ENABLED": "AUDIT_LOG_PATH",
    "EXPOSURE_LOG_ENABLED": "EXPOSURE_LOG_PATH",
}

# Variables whose values are secrets: read from config files, they are registered with the redaction module at
# once, so they are masked wherever they might surface; checks show only their state and length.
_SECRET_NAME = re.compile(r"(SALT|SECRET|PASSWORD|TOKEN|PRIVATE|_KEY$|ACCESS_KEY|DATABASE_URL|DSN)", re.IGNORECASE)
_NOT_SECRET = {"API_KEY_ENABLED", "API_KEY_HEADER", "RECSYS_LICENSE_PUBLIC_KEY", "RECSYS_LICENSE_PUBLIC_KEY_FILE"}


def is_secret_name(name: str) -> bool:
    return name not in _NOT_SECRET and not name.endswith("_FILE") and bool(_SECRET_NAME.search(name))


State = Literal["set", "hidden", "default", "unknown"]


@dataclass(frozen=True)
class ConfigValue:
    name: str
    value: str | None  # None when not visible or unknown
    state: State  # set (value visible) | hidden (set in a secret) | default (upstream default) | unknown
    source: str

    @property
    def is_set(self) -> bool:
        return self.state in {"set", "hidden"}

    @property
    def source_kind(self) -> str:
        """The kind of config source that gave the value (``env_file``, ``helm_values``, ``compose``)."""
        return self.source.split(":", 1)[0]

    def row(self) -> dict[str, Any]:
        """A table row for evidence; the caller decides whether the value itself may be shown."""
        return {"variable": self.name, "value": self.value, "state": self.state, "source": self.source}


@dataclass
class ConfigView:
    values: dict[str, ConfigValue] = field(default_factory=dict)
    observed: dict[str, list[ConfigValue]] = field(default_factory=dict)  # every value each source gave
    hidden_sources: list[str] = field(default_factory=list)  # existingSecret etc.: any variable may live there
    deployment: dict[str, Any] = field(default_factory=dict)  # replicas, image, probes… from Helm values
    sources: list[str] = field(default_factory=list)

    def get(self, name: str) -> ConfigValue:
        if name in self.values:
            return self.values[name]
        if self.hidden_sources:
            return ConfigValue(name, None, "unknown", "not set; may be in " + ", ".join(self.hidden_sources))
        if name in PRODUCTION_DEPENDENT_DEFAULTS:
            in_production, elsewhere = PRODUCTION_DEPENDENT_DEFAULTS[name]
            production = self.production
            value = in_production if production else elsewhere
            return ConfigValue(name, value, "default", f"upstream default ({'' if production else 'not '}production)")
        if name in PATH_DEPENDENT_DEFAULTS:
            path = self.get(PATH_DEPENDENT_DEFAULTS[name])
            if path.value is None:
                return ConfigValue(name, None, "unknown", f"follows {path.name}, which is not visible")
            on = "true" if path.value.strip() else "false"
            return ConfigValue(name, on, "default", f"upstream default (on when {path.name} is set)")
        if name in DEFAULTS:
            return ConfigValue(name, DEFAULTS[name], "default", "upstream default")
        return ConfigValue(name, None, "default", "not set")

    def value(self, name: str) -> str | None:
        """The effective value (explicit or upstream default); None when not visible."""
        return self.get(name).value

    def flag(self, name: str) -> bool | None:
        """A boolean variable, as recsys parses it; None when not visible."""
        value = self.value(name)
        if value is None or value == "":
            return None if value is None else False
        return value.strip().lower() in {"1", "t", "true", "yes", "on"}

    @property
    def production(self) -> bool:
        return (self.value("ENV") or "").strip().lower() == "production"

    def rows(self, names: list[str]) -> list[dict[str, Any]]:
        """Evidence rows; secret variables show their state and length, never their value."""
        rows = []
        for name in names:
            setting = self.get(name)
            row = setting.row()
            if is_secret_name(name):
                row["value"] = None if setting.value is None else f"<{len(setting.value)} characters>"
            rows.append(row)
        return rows

    def contradictions(self, name: str) -> list[ConfigValue]:
        """The values sources of different kinds give for ``name`` when they disagree (else empty).

        Sources of one kind layer (``helm -f a -f b``: the later wins); an env file and Helm values that both
        describe the deployment but say different things leave the effective value unknown.
        """
        last_by_kind: dict[str, ConfigValue] = {}
        for value in self.observed.get(name, []):
            last_by_kind[value.source_kind] = value
        distinct = {(v.state, v.value) for v in last_by_kind.values()}
        return list(last_by_kind.values()) if len(distinct) > 1 else []

    def put(self, name: str, value: str | None, state: State, source: str) -> None:
        if value and is_secret_name(name):
            register_secret(value)
        self.values[name] = ConfigValue(name, value, state, source)
        self.observed.setdefault(name, []).append(self.values[name])


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def parse_env_file(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if not match:
            continue
        name, raw = match.groups()
        raw = raw.strip()
        closing = raw.find(raw[0], 1) if raw[:1] in {"'", '"'} else -1
        # a quoted value may be followed by a comment; an unquoted one ends at " #"
        raw = raw[1:closing] if closing > 0 else raw.split(" #", 1)[0].strip()
        values[name] = raw
    return values


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


# Marks a variable whose value comes from a Secret/ConfigMap reference (``valueFrom``) or bare ``NAME`` in compose.
_FROM_SECRET = "\x00from-secret"
_INTERPOLATED = re.compile(r"\$\{?[A-Za-z_]")


def _env_entries(env: Any, where: str, *, compose: bool = False) -> dict[str, str]:
    if env is None:
        return {}
    if isinstance(env, dict):  # compose: a null value is taken from the deploying shell
        return {str(k): _FROM_SECRET if v is None and compose else _stringify(v) for k, v in env.items()}
    if isinstance(env, list):
        out: dict[str, str] = {}
        for entry in env:
            if isinstance(entry, dict) and "name" in entry:
                out[str(entry["name"])] = _FROM_SECRET if "valueFrom" in entry else _stringify(entry.get("value"))
            elif isinstance(entry, str) and "=" in entry:
                name, _, value = entry.partition("=")
                out[name] = value
            elif isinstance(entry, str):
                out[entry] = _FROM_SECRET  # compose: value taken from the deploying shell
            else:
                raise ConfigSourceError(f"{where}: unreadable environment entry {entry!r}")
        return out
    raise ConfigSourceError(f"{where}: expected a mapping or a list, found {type(env).__name__}")


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigSourceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # bad dates, deep nesting
        raise ConfigSourceError(f"{path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigSourceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigSourceError(f"{path}: not a text file") from None
    except ValueError as exc:  # e.g. an embedded NUL in the path
        raise ConfigSourceError(f"{path!r}: cannot read ({exc})") from None


def read_source(source: ConfigSource, path: Path, view: ConfigView) -> None:
    """Merge one source into ``view`` (later sources override earlier ones)."""
    label = f"{source.kind}:{path.name}"
    view.sources.append(str(path))
    if source.kind == "env_file":
        for name, value in parse_env_file(_read_text(path)).items():
            view.put(name, value, "set", label)
        return
    data = _load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigSourceError(f"{path}: expected a YAML mapping at the top level")
    if source.kind == "helm_values":
        api = data.get("api") or {}
        if not isinstance(api, dict):
            raise ConfigSourceError(f"{path}: api: expected a mapping")
        for name, value in _env_entries(api.get("env"), f"{path}: api.env").items():
            if value == _FROM_SECRET:
                view.put(name, None, "hidden", f"{label} api.env valueFrom")
            else:
                view.put(name, value, "set", f"{label} api.env")
        secrets = api.get("secrets") or {}
        if isinstance(secrets, dict):  # the chart renders them into its Secret: the values file holds the value
            for name, value in secrets.items():
                if isinstance(value, str) and value:
                    register_secret(value)  # a secret: judged by its length and shape, never shown
                view.put(str(name), _stringify(value), "set", f"{label} api.secrets")
        if api.get("existingSecret"):
            view.hidden_sources.append(f"Secret {api['existingSecret']} ({label}, not readable)")
        for key in (
            "replicaCount",
            "image",
            "livenessProbe",
            "readinessProbe",
            "resources",
            "securityContext",
            "podSecurityContext",
        ):
            if key in api:
                view.deployment[key] = api[key]
        return
    services = data.get("services") or {}
    if not isinstance(services, dict):
        raise ConfigSourceError(f"{path}: services: expected a mapping of compose services")
    name = source.service or next(iter(services), None)
    service = services.get(name) if isinstance(services, dict) else None
    if not isinstance(service, dict):
        raise ConfigSourceError(f"{path}: services.{name}: no such compose service")
    env_files = service.get("env_file") or []
    if not isinstance(env_files, str | list):
        raise ConfigSourceError(f"{path}: services.{name}.env_file: expected a path or a list of paths")
    for env_file in [env_files] if isinstance(env_files, str) else env_files:
        entry = env_file if isinstance(env_file, dict) else {"path": env_file}
        env_path = path.parent / str(entry.get("path", ""))
        try:
            missing = not env_path.is_file()
        except (OSError, ValueError):  # a name too long for the file system, a NUL: _read_text says so
            missing = True
        if missing and entry.get("required") is False:
            continue
        for var, value in parse_env_file(_read_text(env_path)).items():
            view.put(var, value, "set", f"{label} {env_path.name}")
    where = f"{label} services.{name}.environment"
    entries = _env_entries(service.get("environment"), f"{path}: services.{name}.environment", compose=True)
    for var, value in entries.items():
        if value == _FROM_SECRET or _INTERPOLATED.search(value):
            view.put(var, None, "unknown", f"{where} (interpolated from the shell at deploy time)")
        else:
            view.put(var, value, "set", where)


def load_config_view(params: Params) -> ConfigView:
    view = ConfigView()
    for source in params.config_sources:
        read_source(source, params.path(source.path), view)
    return view


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | None) -> float | None:
    """A Go duration (``1m30s``, ``200ms``, ``0``) in seconds; None when it is not one (recsys would abort)."""
    if text is None:
        return None
    text = text.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    parts = _DURATION_PART.findall(body)
    if not parts or "".join(number + unit for number, unit in parts) != body:
        return None
    return sign * sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
