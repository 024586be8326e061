"""Deployment config sources -> one normalized view of recsys-service's environment, with the source of each value.

Sources, in the order the params list them (later ones override earlier ones, as ``helm -f a -f b`` does):

* ``env_file``: ``KEY=VALUE`` lines (``export``, quotes and comments allowed), as in ``api/.env``;
* ``helm_values``: the chart's ``api.env`` (mapping or list of ``{name, value}``), ``api.secrets`` (names known,
  values treated as not visible), ``api.existingSecret`` (a Secret the kit cannot read), ``api.replicaCount``,
  ``api.image``;
* ``compose``: ``services.<name>.environment`` (mapping or list) and its ``env_file`` entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from recsys_audit.params import ConfigSource, Params


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

# DOCS_ENABLED and AUTH_REQUIRE_TENANT_CLAIM default to "on unless production" / "on only in production".
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

    def row(self) -> dict[str, Any]:
        """A table row for evidence; the caller decides whether the value itself may be shown."""
        return {"variable": self.name, "value": self.value, "state": self.state, "source": self.source}


@dataclass
class ConfigView:
    values: dict[str, ConfigValue] = field(default_factory=dict)
    hidden_sources: list[str] = field(default_factory=list)  # existingSecret etc.: any variable may live there
    deployment: dict[str, Any] = field(default_factory=dict)  # replicas, image, probes… from Helm values
    sources: list[str] = field(default_factory=list)

    def get(self, name: str) -> ConfigValue:
        if name in self.values:
            return self.values[name]
        if self.hidden_sources:
            return ConfigValue(name, None, "unknown", "not set; may be in " + ", ".join(self.hidden_sources))
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
        return [self.get(name).row() for name in names]


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
        if raw[:1] in {"'", '"'} and raw.endswith(raw[0]) and len(raw) >= 2:
            raw = raw[1:-1]
        else:
            raw = raw.split(" #", 1)[0].strip()
        values[name] = raw
    return values


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _env_entries(env: Any, where: str) -> dict[str, str]:
    if env is None:
        return {}
    if isinstance(env, dict):
        return {str(k): _stringify(v) for k, v in env.items()}
    if isinstance(env, list):
        out: dict[str, str] = {}
        for entry in env:
            if isinstance(entry, dict) and "name" in entry:
                out[str(entry["name"])] = _stringify(entry.get("value"))
            elif isinstance(entry, str) and "=" in entry:
                name, _, value = entry.partition("=")
                out[name] = value
            elif isinstance(entry, str):
                out[entry] = ""
            else:
                raise ConfigSourceError(f"{where}: unreadable environment entry {entry!r}")
        return out
    raise ConfigSourceError(f"{where}: expected a mapping or a list, found {type(env).__name__}")


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigSourceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigSourceError(f"{path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigSourceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigSourceError(f"{path}: not a text file") from None


def read_source(source: ConfigSource, path: Path, view: ConfigView) -> None:
    """Merge one source into ``view`` (later sources override earlier ones)."""
    label = f"{source.kind}:{path.name}"
    view.sources.append(str(path))
    if source.kind == "env_file":
        for name, value in parse_env_file(_read_text(path)).items():
            view.values[name] = ConfigValue(name, value, "set", label)
        return
    data = _load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigSourceError(f"{path}: expected a YAML mapping at the top level")
    if source.kind == "helm_values":
        api = data.get("api") or {}
        if not isinstance(api, dict):
            raise ConfigSourceError(f"{path}: api: expected a mapping")
        for name, value in _env_entries(api.get("env"), f"{path}: api.env").items():
            view.values[name] = ConfigValue(name, value, "set", f"{label} api.env")
        secrets = api.get("secrets") or {}
        if isinstance(secrets, dict):
            for name in secrets:
                view.values[str(name)] = ConfigValue(str(name), None, "hidden", f"{label} api.secrets")
        if api.get("existingSecret"):
            view.hidden_sources.append(f"Secret {api['existingSecret']} ({label}, not readable)")
        for key in ("replicaCount", "image", "livenessProbe", "readinessProbe", "resources"):
            if key in api:
                view.deployment[key] = api[key]
        return
    services = data.get("services") or {}
    name = source.service or next(iter(services), None)
    service = services.get(name) if isinstance(services, dict) else None
    if not isinstance(service, dict):
        raise ConfigSourceError(f"{path}: services.{name}: no such compose service")
    env_files = service.get("env_file") or []
    for env_file in [env_files] if isinstance(env_files, str) else env_files:
        env_path = path.parent / (env_file["path"] if isinstance(env_file, dict) else env_file)
        for var, value in parse_env_file(_read_text(env_path)).items():
            view.values[var] = ConfigValue(var, value, "set", f"{label} {env_path.name}")
    for var, value in _env_entries(service.get("environment"), f"{path}: services.{name}.environment").items():
        view.values[var] = ConfigValue(var, value, "set", f"{label} services.{name}.environment")


def load_config_view(params: Params) -> ConfigView:
    view = ConfigView()
    for source in params.config_sources:
        read_source(source, params.path(source.path), view)
    return view
