"""Profiles and defect switches of the sandbox: the one registry the harness, the CLI and the docs read.

A defect breaks one thing on top of a profile. Its ``layer`` says where: ``server`` (code-level behaviour, passed to
the server in ``SANDBOX_DEFECTS``), ``env`` (service env overrides), ``database``, or ``files`` (manifests, Helm
values, alert rules, load-test report).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from recsys_audit.sandbox.database import DatabaseSettings

Layer = Literal["server", "env", "database", "files"]
PROFILES = ("hardened", "as-shipped")


class UnknownDefectError(ValueError):
    pass


@dataclass(frozen=True)
class Defect:
    name: str
    layer: Layer
    description: str
    env: Mapping[str, str] = field(default_factory=dict)  # env overrides (layer env)


DEFECTS: dict[str, Defect] = {
    d.name: d
    for d in (
        Defect(
            "cross-tenant-admin",
            "server",
            "admin routes ignore the caller's tenant: tenant A's viewer reads /v1/admin/tenants/B/config (200)",
        ),
        Defect("healthz-db", "server", "/healthz and /health run the database check (liveness tied to the DB)"),
        Defect("detailed-health-public", "server", "/health/detailed answers without auth with per-check internals"),
        Defect(
            "pii-unhashed",
            "server",
            "exposure log subject ids written raw; event tables hold raw e-mail addresses as user_key",
        ),
        Defect(
            "missing-meta",
            "server",
            "responses omit meta.config_version, meta.rules_version; algo_version is recsys-algo@stub",
        ),
        Defect("stale-manifest", "files", "manifests' updated_at is days old"),
        Defect("no-retained-manifest", "files", "no previous manifests kept"),
        Defect("failed-migration", "database", "the newest applied schema_migrations row has success=false"),
        Defect("pending-migration", "database", "the newest migration is not applied"),
        Defect("default-partition-rows", "database", "no monthly partitions; event rows in the default partitions"),
        Defect("rls-off", "database", "row-level security off on tenant tables"),
        Defect("superuser-service-role", "database", "the service role is a superuser that owns the tables"),
        Defect("archive-off", "database", "WAL archiving off"),
        Defect("single-replica", "files", "values: 1 replica, image tag latest"),
        Defect("pprof-exposed", "env", "PPROF_ENABLED=true, /debug/pprof/ reachable", {"PPROF_ENABLED": "true"}),
        Defect(
            "backpressure-off",
            "env",
            "RECSYS_BACKPRESSURE_MAX_INFLIGHT=0",
            {"RECSYS_BACKPRESSURE_MAX_INFLIGHT": "0", "RECSYS_BACKPRESSURE_MAX_QUEUE": "0"},
        ),
        Defect("missing-alerts", "files", "alert rules lack the stale-manifest and p95-latency alerts"),
        Defect("small-load-report", "files", "the load-test report has 20 requests (p95 = p99 = max)"),
        Defect("stale-signals", "database", "DB-only signal rows are weeks old"),
    )
}


def validate(profile: str, defects: Iterable[str]) -> tuple[str, ...]:
    """The defects in registry order; unknown names raise with the list of known ones."""
    if profile not in PROFILES:
        raise UnknownDefectError(f"unknown profile '{profile}' — choose one of: {', '.join(PROFILES)}")
    wanted = set(defects)
    unknown = sorted(wanted - DEFECTS.keys())
    if unknown:
        raise UnknownDefectError(f"unknown defect '{unknown[0]}' — known defects: {', '.join(DEFECTS)}")
    return tuple(name for name in DEFECTS if name in wanted)


def server_switches(defects: Iterable[str]) -> list[str]:
    return [name for name in defects if DEFECTS[name].layer == "server"]


def env_overrides(defects: Iterable[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for name in defects:
        overrides.update(DEFECTS[name].env)
    return overrides


def database_settings(profile: str, defects: Iterable[str]) -> DatabaseSettings:
    active = set(defects)
    hardened = profile == "hardened"
    return DatabaseSettings(
        tls=hardened,
        archive=hardened and "archive-off" not in active,
        rls=hardened and "rls-off" not in active,
        monthly_partitions=hardened and "default-partition-rows" not in active,
        service_role_superuser=not hardened or "superuser-service-role" in active,
        failed_migration="failed-migration" in active,
        pending_migration="pending-migration" in active,
    )


@dataclass(frozen=True)
class FileSettings:
    """What the instance's files say: manifests, Helm values, alert rules, load-test report."""

    manifest_age_hours: float
    retained_manifests: int
    replicas: int
    image_tag: str
    alert_set: Literal["complete", "upstream", "missing"]
    load_report: Literal["full", "small", "upstream"]
    dashboard: Literal["complete", "upstream"]


def file_settings(profile: str, defects: Iterable[str]) -> FileSettings:
    active = set(defects)
    hardened = profile == "hardened"
    alert_set: Literal["complete", "upstream", "missing"] = "complete" if hardened else "upstream"
    if "missing-alerts" in active:
        alert_set = "missing"
    load_report: Literal["full", "small", "upstream"] = "full" if hardened else "upstream"
    if "small-load-report" in active:
        load_report = "small"
    single = not hardened or "single-replica" in active
    return FileSettings(
        manifest_age_hours=5 * 24 if "stale-manifest" in active else 2,
        retained_manifests=0 if not hardened or "no-retained-manifest" in active else 2,
        replicas=1 if single else 3,
        image_tag="latest" if single else "v0.1.0",
        alert_set=alert_set,
        load_report=load_report,
        dashboard="complete" if hardened else "upstream",
    )


def markdown_table() -> str:
    """The defect table of sandbox/README.md."""
    lines = ["| switch | layer | effect |", "|---|---|---|"]
    lines += [f"| `{d.name}` | {d.layer} | {d.description} |" for d in DEFECTS.values()]
    return "\n".join(lines)
