"""The sandbox service's configuration: recsys-service's own environment variables, parsed and validated like the
real service does at startup (a malformed bool, int or duration, or an invalid combination, refuses to start).

``load_settings(environ)`` returns a frozen :class:`ServiceSettings` or raises :class:`StartupError` with a one-line
message naming the variable and the fix.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

# Code-level defect switches this server acts on; other switch names (data, files, config) are ignored here.
SERVER_DEFECTS = frozenset(
    {"cross-tenant-admin", "healthz-db", "detailed-health-public", "pii-unhashed", "missing-meta"}
)
EXPOSURE_FORMATS = {"service": "service_v1", "service_v1": "service_v1", "eval": "eval_v1", "eval_v1": "eval_v1"}
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


class StartupError(Exception):
    """The configuration cannot start the service; the message is one line and says what to change."""


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go ``time.ParseDuration`` -> seconds (``"200ms"``, ``"1m30s"``, ``"0"``); ValueError when malformed."""
    value = text.strip()
    sign = -1.0 if value.startswith("-") else 1.0
    value = value.lstrip("+-")
    if value == "0":
        return 0.0
    if not value:
        raise ValueError("empty duration")
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(value):
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


class EnvReader:
    """Typed access to the environment; empty values count as unset, malformed ones raise StartupError."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value if value not in (None, "") else None

    def exact(self, name: str, default: str) -> str:
        """The value as set, an empty string included (for variables where empty means "none")."""
        value = self._environ.get(name)
        return default if value is None else value.strip()

    def text(self, name: str, default: str = "") -> str:
        value = self.raw(name)
        return value.strip() if value is not None else default

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.strip() in _TRUE:
            return True
        if value.strip() in _FALSE:
            return False
        raise StartupError(f"{name}={value!r} is not a boolean: use true or false")

    def integer(self, name: str, default: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return int(value.strip())
        except ValueError:
            raise StartupError(f"{name}={value!r} is not an integer: use a whole number such as {default}") from None

    def number(self, name: str, default: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return float(value.strip())
        except ValueError:
            raise StartupError(f"{name}={value!r} is not a number: use e.g. {default}") from None

    def duration(self, name: str, default: str) -> float:
        value = self.raw(name) or default
        try:
            return parse_duration(value)
        except ValueError:
            raise StartupError(f"{name}={value!r} is not a duration: use Go syntax such as 200ms, 5s or 1m") from None

    def items(self, name: str, default: str = "") -> tuple[str, ...]:
        return tuple(part.strip() for part in self.text(name, default).split(",") if part.strip())


@dataclass(frozen=True)
class ServiceSettings:
    # server
    env_name: str
    production: bool
    host: str
    port: int
    database_url: str
    docs_enabled: bool
    pprof_enabled: bool
    migrate_on_start: bool
    health_cache_s: float
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    # auth and tenancy
    auth_required: bool
    require_tenant_claim: bool
    tenant_header: str
    tenant_claims: tuple[str, ...]
    role_claims: tuple[str, ...]
    viewer_role: str
    operator_role: str
    admin_role: str
    jwt_enabled: bool
    jwt_jwks_url: str
    jwt_issuer: str
    jwt_audience: str
    jwt_algorithms: tuple[str, ...]
    jwt_clock_skew_s: float
    jwt_require_subject: bool
    jwt_require_expiration: bool
    jwt_public_key_pem: bytes | None
    api_key_enabled: bool
    api_key_header: str
    api_key_hash_secret: str
    dev_auth_enabled: bool
    dev_user_header: str
    dev_email_header: str
    dev_first_name_header: str
    dev_last_name_header: str
    dev_tenant_header: str
    # CORS
    cors_origins: tuple[str, ...]
    cors_methods: tuple[str, ...]
    cors_headers: tuple[str, ...]
    cors_allow_credentials: bool
    cors_max_age: int
    # limits and caches
    tenant_rate_limit_enabled: bool
    tenant_rate_limit_capacity: int
    tenant_rate_limit_refill_rate: float
    tenant_rate_limit_retry_after_s: float
    backpressure_max_inflight: int
    backpressure_max_queue: int
    backpressure_wait_timeout_s: float
    backpressure_retry_after_s: float
    config_cache_ttl_s: float
    rules_cache_ttl_s: float
    # logs
    audit_log_path: str | None
    audit_log_fsync: bool
    exposure_log_path: str | None
    exposure_log_format: str
    exposure_log_fsync: bool
    exposure_retention_days: int
    exposure_hash_salt: str
    experiment_assignment_enabled: bool
    experiment_default_variants: tuple[str, ...]
    experiment_salt: str
    experiments: tuple[dict, ...]
    # serving
    explain_max_items: int
    explain_require_admin: bool
    algo_version: str
    artifact_mode_enabled: bool
    artifact_manifest_template: str
    artifact_file_root: str
    artifact_manifest_ttl_s: float
    artifact_cache_ttl_s: float
    artifact_max_bytes: int
    require_rls: bool
    # sandbox-only knobs
    defects: frozenset[str] = field(default_factory=frozenset)
    service_time_ms: float = 3.0
    request_log_path: str | None = None
    jwt_kid: str | None = None
    jwks_addr: tuple[str, int] | None = None
    jwks_cert_file: str | None = None
    jwks_key_file: str | None = None
    build_version: str = "dev"
    build_commit: str = "none"
    build_date: str = "unknown"

    def has_defect(self, name: str) -> bool:
        return name in self.defects

    @property
    def rbac_enabled(self) -> bool:
        return any((self.viewer_role, self.operator_role, self.admin_role))


def load_settings(environ: Mapping[str, str]) -> ServiceSettings:
    """Parse and validate the service environment; raises StartupError with a one-line reason."""
    env = EnvReader(environ)
    env_name = env.text("ENV", "development")
    production = env_name.lower() in {"production", "prod"}
    host, port = _listen_address(env.text("API_ADDR", ":8000"), "API_ADDR")
    pprof_enabled = env.flag("PPROF_ENABLED", False)
    if pprof_enabled and host not in LOOPBACK_HOSTS:
        raise StartupError(f"PPROF_ENABLED=true needs a loopback API_ADDR (got {host or 'all interfaces'})")
    if host not in LOOPBACK_HOSTS:
        raise StartupError(f"API_ADDR must be 127.0.0.1:PORT: the sandbox never binds {host or 'all interfaces'}")

    database_url = env.text("DATABASE_URL")
    if not database_url and env.raw("DATABASE_URL_FILE"):
        database_url = _read_text(env.text("DATABASE_URL_FILE"), "DATABASE_URL_FILE").strip()
    if not database_url:
        raise StartupError("DATABASE_URL is empty: set it (or DATABASE_URL_FILE) to the service's PostgreSQL DSN")

    refresh_s = env.duration("HEALTH_REFRESH_INTERVAL", "30s")
    health_cache_s = env.duration("HEALTH_CACHE_DURATION", f"{2 * refresh_s}s")

    jwt_enabled = env.flag("JWT_AUTH_ENABLED", True)
    dev_auth_enabled = env.flag("DEV_AUTH_ENABLED", False)
    api_key_enabled = env.flag("API_KEY_ENABLED", False)
    if jwt_enabled and dev_auth_enabled:
        raise StartupError("JWT_AUTH_ENABLED and DEV_AUTH_ENABLED cannot both be true: turn dev headers off")
    auth_required = env.flag("AUTH_REQUIRED", True)
    if auth_required and not (jwt_enabled or dev_auth_enabled or api_key_enabled):
        raise StartupError("AUTH_REQUIRED=true but no auth provider is on: enable JWT_AUTH_ENABLED or API_KEY_ENABLED")

    jwks_url = env.text("JWT_JWKS_URL")
    allowed_hosts = tuple(h.lower() for h in env.items("AUTH_JWKS_ALLOWED_HOSTS"))
    allow_insecure = env.flag("AUTH_ALLOW_INSECURE_JWKS", False)
    public_key_pem: bytes | None = None
    if jwt_enabled:
        for name in ("JWT_JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE"):
            if not env.text(name):
                raise StartupError(f"{name} is empty but JWT_AUTH_ENABLED=true: set the JWKS URL, issuer and audience")
        _check_jwks_url(jwks_url, allowed_hosts, allow_insecure)
        key_file = env.text("SANDBOX_JWT_PUBLIC_KEY_FILE")
        if not key_file:
            raise StartupError("SANDBOX_JWT_PUBLIC_KEY_FILE is empty: point it at the PEM public key behind the JWKS")
        public_key_pem = _read_text(key_file, "SANDBOX_JWT_PUBLIC_KEY_FILE").encode()

    api_key_header = env.text("API_KEY_HEADER", "X-API-Key")
    api_key_hash_secret = env.text("API_KEY_HASH_SECRET")
    if api_key_enabled and not api_key_header:
        raise StartupError("API_KEY_ENABLED=true needs API_KEY_HEADER (default X-API-Key)")

    audit_path = env.text("AUDIT_LOG_PATH") or None
    if env.flag("AUDIT_LOG_ENABLED", audit_path is not None) and audit_path is None:
        raise StartupError("AUDIT_LOG_ENABLED=true but AUDIT_LOG_PATH is empty: set a file path")
    if not env.flag("AUDIT_LOG_ENABLED", audit_path is not None):
        audit_path = None
    exposure_path = env.text("EXPOSURE_LOG_PATH") or None
    if env.flag("EXPOSURE_LOG_ENABLED", exposure_path is not None) and exposure_path is None:
        raise StartupError("EXPOSURE_LOG_ENABLED=true but EXPOSURE_LOG_PATH is empty: set a file or directory path")
    if not env.flag("EXPOSURE_LOG_ENABLED", exposure_path is not None):
        exposure_path = None
    raw_format = env.text("EXPOSURE_LOG_FORMAT", "service_v1")
    if raw_format not in EXPOSURE_FORMATS:
        raise StartupError(f"EXPOSURE_LOG_FORMAT={raw_format!r} is unknown: use service_v1 or eval_v1")
    exposure_salt = env.text("EXPOSURE_HASH_SALT")

    experiments_on = env.flag("EXPERIMENT_ASSIGNMENT_ENABLED", True)
    experiment_salt = env.text("EXPERIMENT_ASSIGNMENT_SALT") or exposure_salt
    experiments = _experiments(env.text("EXPERIMENT_CONFIG_JSON"))

    artifact_mode = env.flag("RECSYS_ARTIFACT_MODE_ENABLED", False)
    template = env.text("RECSYS_ARTIFACT_MANIFEST_TEMPLATE")
    file_root = env.text("RECSYS_ARTIFACT_FILE_ROOT")
    s3_endpoint = env.text("RECSYS_ARTIFACT_S3_ENDPOINT")
    s3_use_ssl = env.flag("RECSYS_ARTIFACT_S3_USE_SSL", True)
    if artifact_mode and not template:
        raise StartupError("RECSYS_ARTIFACT_MODE_ENABLED=true but RECSYS_ARTIFACT_MANIFEST_TEMPLATE is empty")
    if artifact_mode and not template.startswith("s3://") and not file_root:
        raise StartupError("RECSYS_ARTIFACT_FILE_ROOT is empty: a non-s3:// manifest template needs a file root")

    if production:
        if exposure_path and not exposure_salt:
            raise StartupError("ENV=production with exposure logging needs EXPOSURE_HASH_SALT: set a long random salt")
        if experiments_on and not experiment_salt:
            raise StartupError(
                "ENV=production with experiment assignment on needs EXPERIMENT_ASSIGNMENT_SALT or EXPOSURE_HASH_SALT"
            )
        if api_key_enabled and not api_key_hash_secret:
            raise StartupError("ENV=production with API_KEY_ENABLED needs API_KEY_HASH_SECRET: set a long secret")
        if artifact_mode and s3_endpoint and not s3_use_ssl:
            raise StartupError("ENV=production refuses RECSYS_ARTIFACT_S3_USE_SSL=false: use TLS to the object store")

    jwks_addr_text = env.text("SANDBOX_JWKS_ADDR")
    jwks_addr = _listen_address(jwks_addr_text, "SANDBOX_JWKS_ADDR") if jwks_addr_text else None
    if jwks_addr and jwks_addr[0] not in LOOPBACK_HOSTS:
        raise StartupError("SANDBOX_JWKS_ADDR must be 127.0.0.1:PORT")
    if jwks_addr and not (env.text("SANDBOX_JWKS_CERT_FILE") and env.text("SANDBOX_JWKS_KEY_FILE")):
        raise StartupError("SANDBOX_JWKS_ADDR needs SANDBOX_JWKS_CERT_FILE and SANDBOX_JWKS_KEY_FILE (TLS)")
    if jwks_addr and public_key_pem is None:
        key_file = env.text("SANDBOX_JWT_PUBLIC_KEY_FILE")
        if not key_file:
            raise StartupError("SANDBOX_JWKS_ADDR needs SANDBOX_JWT_PUBLIC_KEY_FILE (the key the JWKS publishes)")
        public_key_pem = _read_text(key_file, "SANDBOX_JWT_PUBLIC_KEY_FILE").encode()

    return ServiceSettings(
        env_name=env_name,
        production=production,
        host=host,
        port=port,
        database_url=database_url,
        docs_enabled=env.flag("DOCS_ENABLED", not production),
        pprof_enabled=pprof_enabled,
        migrate_on_start=env.flag("MIGRATE_ON_START", False),
        health_cache_s=health_cache_s,
        trusted_proxies=_trusted_proxies(env.text("TRUSTED_PROXIES")),
        auth_required=auth_required,
        require_tenant_claim=env.flag("AUTH_REQUIRE_TENANT_CLAIM", production),
        tenant_header=env.text("TENANT_HEADER_NAME", "X-Org-Id"),
        tenant_claims=env.items("AUTH_TENANT_CLAIMS", "tenant_id,org_id,orgId,organization_id"),
        role_claims=env.items("AUTH_ROLE_CLAIMS", "roles,role,scope,scopes"),
        viewer_role=env.exact("AUTH_VIEWER_ROLE", "viewer"),
        operator_role=env.exact("AUTH_OPERATOR_ROLE", "operator"),
        admin_role=env.exact("AUTH_ADMIN_ROLE", "admin"),
        jwt_enabled=jwt_enabled,
        jwt_jwks_url=jwks_url,
        jwt_issuer=env.text("JWT_ISSUER"),
        jwt_audience=env.text("JWT_AUDIENCE"),
        jwt_algorithms=env.items("JWT_ALLOWED_ALGORITHMS", "RS256"),
        jwt_clock_skew_s=env.duration("JWT_ALLOWED_CLOCK_SKEW", "30s"),
        jwt_require_subject=env.flag("JWT_REQUIRE_SUBJECT", True),
        jwt_require_expiration=env.flag("JWT_REQUIRE_EXPIRATION", True),
        jwt_public_key_pem=public_key_pem,
        api_key_enabled=api_key_enabled,
        api_key_header=api_key_header,
        api_key_hash_secret=api_key_hash_secret,
        dev_auth_enabled=dev_auth_enabled,
        dev_user_header=env.text("DEV_AUTH_USER_ID_HEADER", "X-Dev-User-Id"),
        dev_email_header=env.text("DEV_AUTH_EMAIL_HEADER", "X-Dev-User-Email"),
        dev_first_name_header=env.text("DEV_AUTH_FIRST_NAME_HEADER", "X-Dev-User-First"),
        dev_last_name_header=env.text("DEV_AUTH_LAST_NAME_HEADER", "X-Dev-User-Last"),
        dev_tenant_header=env.text("DEV_AUTH_TENANT_HEADER", "X-Dev-Org-Id"),
        cors_origins=env.items("CORS_ALLOWED_ORIGINS", "*") or ("*",),
        cors_methods=env.items("CORS_ALLOWED_METHODS", "GET,POST,PUT,DELETE,OPTIONS"),
        cors_headers=env.items("CORS_ALLOWED_HEADERS", "Accept,Authorization,Content-Type"),
        cors_allow_credentials=env.flag("CORS_ALLOW_CREDENTIALS", False),
        cors_max_age=env.integer("CORS_MAX_AGE", 300),
        tenant_rate_limit_enabled=env.flag("TENANT_RATE_LIMIT_ENABLED", True),
        tenant_rate_limit_capacity=env.integer("TENANT_RATE_LIMIT_CAPACITY", 60),
        tenant_rate_limit_refill_rate=env.number("TENANT_RATE_LIMIT_REFILL_RATE", 30.0),
        tenant_rate_limit_retry_after_s=env.duration("TENANT_RATE_LIMIT_RETRY_AFTER", "1s"),
        backpressure_max_inflight=env.integer("RECSYS_BACKPRESSURE_MAX_INFLIGHT", 0),
        backpressure_max_queue=env.integer("RECSYS_BACKPRESSURE_MAX_QUEUE", 0),
        backpressure_wait_timeout_s=env.duration("RECSYS_BACKPRESSURE_WAIT_TIMEOUT", "200ms"),
        backpressure_retry_after_s=env.duration("RECSYS_BACKPRESSURE_RETRY_AFTER", "1s"),
        config_cache_ttl_s=env.duration("RECSYS_CONFIG_CACHE_TTL", "5m"),
        rules_cache_ttl_s=env.duration("RECSYS_RULES_CACHE_TTL", "5m"),
        audit_log_path=audit_path,
        audit_log_fsync=env.flag("AUDIT_LOG_FSYNC", False),
        exposure_log_path=exposure_path,
        exposure_log_format=EXPOSURE_FORMATS[raw_format],
        exposure_log_fsync=env.flag("EXPOSURE_LOG_FSYNC", False),
        exposure_retention_days=env.integer("EXPOSURE_LOG_RETENTION_DAYS", 30),
        exposure_hash_salt=exposure_salt,
        experiment_assignment_enabled=experiments_on,
        experiment_default_variants=env.items("EXPERIMENT_DEFAULT_VARIANTS", "A,B") or ("A", "B"),
        experiment_salt=experiment_salt,
        experiments=experiments,
        explain_max_items=env.integer("RECSYS_EXPLAIN_MAX_ITEMS", 50),
        explain_require_admin=env.flag("RECSYS_EXPLAIN_REQUIRE_ADMIN", True),
        algo_version=env.text("RECSYS_ALGO_VERSION", "recsys-algo@local"),
        artifact_mode_enabled=artifact_mode,
        artifact_manifest_template=template,
        artifact_file_root=file_root,
        artifact_manifest_ttl_s=env.duration("RECSYS_ARTIFACT_MANIFEST_TTL", "1m"),
        artifact_cache_ttl_s=env.duration("RECSYS_ARTIFACT_CACHE_TTL", "1m"),
        artifact_max_bytes=env.integer("RECSYS_ARTIFACT_MAX_BYTES", 10_000_000),
        require_rls=env.flag("RECSYS_DB_REQUIRE_RLS", False),
        defects=frozenset(name for name in env.items("SANDBOX_DEFECTS") if name in SERVER_DEFECTS),
        service_time_ms=env.number("SANDBOX_SERVICE_TIME_MS", 3.0),
        request_log_path=env.text("SANDBOX_REQUEST_LOG") or None,
        jwt_kid=env.text("SANDBOX_JWT_KID") or None,
        jwks_addr=jwks_addr,
        jwks_cert_file=env.text("SANDBOX_JWKS_CERT_FILE") or None,
        jwks_key_file=env.text("SANDBOX_JWKS_KEY_FILE") or None,
        build_version=env.text("SANDBOX_BUILD_VERSION", "dev"),
        build_commit=env.text("SANDBOX_BUILD_COMMIT", "none"),
        build_date=env.text("SANDBOX_BUILD_DATE", "unknown"),
    )


def _listen_address(text: str, name: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise StartupError(f"{name}={text!r} is not host:port: use 127.0.0.1:PORT")
    return host.strip("[]"), int(port_text)


def _read_text(path: str, name: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise StartupError(f"{name}={path}: cannot read ({exc.strerror}); fix the path or its permissions") from None


def _check_jwks_url(url: str, allowed_hosts: tuple[str, ...], allow_insecure: bool) -> None:
    parsed = urlparse(url)
    if parsed.scheme != "https" and not allow_insecure:
        raise StartupError(f"JWT_JWKS_URL={url} is not https: use https (AUTH_ALLOW_INSECURE_JWKS is for dev only)")
    if allowed_hosts and (parsed.hostname or "").lower() not in allowed_hosts:
        raise StartupError(f"JWT_JWKS_URL host {parsed.hostname!r} is not in AUTH_JWKS_ALLOWED_HOSTS")


def _trusted_proxies(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Like the real service: any parse error silently drops the whole list."""
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())
    except ValueError:
        return ()


def _experiments(text: str) -> tuple[dict, ...]:
    if not text:
        return ()
    try:
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError("expected a JSON list")
        for item in items:
            if not isinstance(item, dict) or not item.get("id"):
                raise ValueError("every experiment needs an id")
            percent = item.get("traffic_percent", 100)
            if not isinstance(percent, int | float) or not 0 <= percent <= 100:
                raise ValueError(f"experiment {item['id']}: traffic_percent must be 0..100")
            for bound in ("starts_at", "ends_at"):
                if item.get(bound):
                    datetime.fromisoformat(str(item[bound]).replace("Z", "+00:00"))
        return tuple(items)
    except (ValueError, TypeError) as exc:
        raise StartupError(f"EXPERIMENT_CONFIG_JSON is invalid ({exc}): fix the JSON list of experiments") from None
