"""The audit context a check receives: the params and lazily opened, shared probes.

A probe is opened the first time a check needs it. If opening fails, the failure is remembered and re-raised as the
same :class:`ProbeError` for every later check that needs it, so a dead database costs one timeout, not twenty.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from recsys_audit.params import Params
from recsys_audit.probes import ProbeError

if TYPE_CHECKING:
    from recsys_audit.probes.config import ConfigView
    from recsys_audit.probes.database import ReadOnlyDatabase
    from recsys_audit.probes.manifest import ObjectStore
    from recsys_audit.probes.metrics import MetricsSnapshot, PrometheusClient
    from recsys_audit.probes.service import ServiceClient

T = TypeVar("T")


class AuditContext:
    def __init__(self, params: Params, run_dir: Path) -> None:
        self.params = params
        self.run_dir = run_dir
        self._memo: dict[str, Any] = {}

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """Compute a probe result once per kernel and share it between checks (failures are shared too)."""
        if key not in self._memo:
            try:
                self._memo[key] = compute()
            except (ProbeError, OSError, ValueError) as exc:
                self._memo[key] = exc
        value = self._memo[key]
        if isinstance(value, Exception):
            raise value
        return value

    # --- probes ------------------------------------------------------------------------------------------------

    @property
    def service(self) -> ServiceClient:
        from recsys_audit.probes.service import ServiceClient

        return self.memo("probe:service", lambda: ServiceClient(self.params))

    @property
    def db(self) -> ReadOnlyDatabase:
        from recsys_audit.probes.database import ReadOnlyDatabase

        def open_db() -> ReadOnlyDatabase:
            database = self.params.database
            if database.dsn is None:
                raise ProbeError("no database in params (database.dsn) — add a read-only DSN reference")
            return ReadOnlyDatabase(database.dsn, database.statement_timeout_ms)

        return self.memo("probe:db", open_db)

    @property
    def config(self) -> ConfigView:
        from recsys_audit.probes.config import ConfigSourceError, load_config_view

        def load() -> ConfigView:
            if not self.params.config_sources:
                raise ProbeError("no deployment config in params (config_sources) — list the env/Helm files")
            try:
                return load_config_view(self.params)
            except ConfigSourceError as exc:
                raise ProbeError(f"config source unreadable: {exc}") from None

        return self.memo("probe:config", load)

    @property
    def metrics(self) -> MetricsSnapshot:
        """One scrape of the service's /metrics per kernel."""
        from recsys_audit.probes.metrics import scrape

        params = self.params
        return self.memo(
            "probe:metrics", lambda: scrape(params.resolved_metrics_url, params.target.timeout_s, params.tls())
        )

    @property
    def prometheus(self) -> PrometheusClient:
        from recsys_audit.probes.metrics import PrometheusClient

        def open_prometheus() -> PrometheusClient:
            if not self.params.prometheus.url:
                raise ProbeError("no Prometheus in params (prometheus.url) — add the server's base URL")
            return PrometheusClient(self.params.prometheus.url, self.params.target.timeout_s)

        return self.memo("probe:prometheus", open_prometheus)

    @property
    def manifests(self) -> ObjectStore:
        """Read-only access to manifests and artifacts (file://, http(s)://, s3://), confined to the locations the
        params (or, without a template there, the deployment config) name."""
        from recsys_audit.probes.manifest import ObjectStore, artifact_scope, uri_scope

        def open_store() -> ObjectStore:
            params = self.params
            template = self.manifest_template
            scopes, artifacts = [], None
            if template:
                artifacts = artifact_scope(template, params.manifests.artifact_root, params.base_dir)
                scopes = [uri_scope(template, params.base_dir), artifacts]
            if params.manifests.previous_template:
                scopes.append(uri_scope(params.manifests.previous_template, params.base_dir))
            return ObjectStore(
                params.manifests.s3,
                file_root=params.base_dir,
                timeout_s=params.target.timeout_s,
                verify=params.tls(),
                scopes=scopes,
                artifact_scope=artifacts,
            )

        return self.memo("probe:manifests", open_store)

    @property
    def manifest_template(self) -> str | None:
        """Where the kit reads manifests: params ``manifests.template``, else the service's
        RECSYS_ARTIFACT_MANIFEST_TEMPLATE from the deployment config when it is s3:// or http(s):// (a file path there
        names the service's file system, not the auditor's: name it in params to read it)."""
        from urllib.parse import urlparse

        if self.params.manifests.template:
            return self.params.manifests.template
        try:
            template = self.config.value("RECSYS_ARTIFACT_MANIFEST_TEMPLATE")
        except ProbeError:
            return None
        return template if template and urlparse(template).scheme in {"s3", "http", "https"} else None

    def close(self) -> None:
        for value in self._memo.values():
            close = getattr(value, "close", None)
            if callable(close):
                close()
