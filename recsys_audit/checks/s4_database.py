"""Section 4 — Database and migrations.

Every query here runs through ``ctx.db`` (read-only transaction, statement timeout) and costs the same on a
10-million-row event table as on an empty one: catalog views, statistics and ``LIMIT 1`` existence probes only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from recsys_audit.catalog import Section
from recsys_audit.checklist import EvidenceClass
from recsys_audit.checks.common import awaiting_attestation
from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, Severity, Status, failed, manual, passed, skipped, warned, worst
from recsys_audit.probes import ProbeError

SECTION = Section(4, "Database and migrations", notebook="04_database")

REF_DB = "recsys-data-and-ops §1 (database)"
REF_MIGRATIONS = "recsys-data-and-ops §2 (migration tooling, schema_migrations)"

# Tenant tables that carry tenant_id (the RLS guard's list, with the real item_tags table).
TENANT_TABLES = (
    "tenant_config_versions",
    "tenant_configs_current",
    "tenant_rule_versions",
    "tenant_rules_current",
    "audit_log",
    "cache_invalidation_events",
    "exposure_events",
    "interaction_events",
    "item_popularity_daily",
    "item_covisit_daily",
    "item_tags",
)
EVENT_TABLES = ("exposure_events", "interaction_events")
# PostgreSQL community end-of-life dates (final minor release).
POSTGRES_EOL = {
    11: dt.date(2023, 11, 9),
    12: dt.date(2024, 11, 21),
    13: dt.date(2025, 11, 13),
    14: dt.date(2026, 11, 12),
    15: dt.date(2027, 11, 11),
    16: dt.date(2028, 11, 9),
    17: dt.date(2029, 11, 8),
    18: dt.date(2030, 11, 14),
}
_MIGRATION_FILE = re.compile(r"^(\d{8,14})_(.+)\.up\.sql$")
_RANGE_BOUND = re.compile(r"FROM \((.+?)\) TO \((.+?)\)$")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _age_h(moment: dt.datetime) -> float:
    """Hours since ``moment`` (negative: in the future); a naive time is taken as UTC."""
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return round((_now() - moment).total_seconds() / 3600, 1)


def _hours_since(moment: dt.datetime | None) -> float | None:
    return None if moment is None else _age_h(moment)


# --- migrations ----------------------------------------------------------------------------------------------------

HISTORY_SQL = (
    "SELECT version, name, success, applied_at, exec_ms, checksum "
    "FROM schema_migrations ORDER BY version DESC LIMIT 500"
)


def migration_history(ctx: AuditContext) -> list[dict[str, Any]]:
    def read() -> list[dict[str, Any]]:
        if not ctx.db.table_exists("schema_migrations"):
            raise ProbeError("no schema_migrations table: the migrate tool never ran against this database")
        return ctx.db.query(HISTORY_SQL)

    return ctx.memo("db:migration-history", read)


def _history_rows(history: list[dict[str, Any]], limit: int = 15) -> list[dict[str, Any]]:
    return [{**row, "checksum": (row.get("checksum") or "")[:12]} for row in history[:limit]]


def expected_migrations(directory: Path) -> dict[int, tuple[str, str]]:
    """version -> (name, SHA-256 hex of the trimmed file), as the migrate tool computes checksums."""
    if not directory.is_dir():
        raise ProbeError(f"migrations.directory {directory} is not a directory — correct the path in params")
    found = {}
    for path in sorted(directory.iterdir()):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            checksum = hashlib.sha256(path.read_text(encoding="utf-8").strip().encode()).hexdigest()
            found[int(match.group(1))] = (match.group(2), checksum)
    return found


@SECTION.check(
    "db.migrations-succeeded",
    items=("4.migrations-safe",),
    evidence=EvidenceClass.DATA,
    title="No failed migration is recorded in schema_migrations",
    severity=Severity.HIGH,
    remediation="Investigate the failed version, fix it forward (or run its down migration), then re-run the "
    "migration job; the preflight refuses to proceed while a success=false row exists.",
    reference=REF_MIGRATIONS,
)
def migrations_succeeded(ctx: AuditContext) -> Outcome:
    history = migration_history(ctx)
    failures = [row for row in history if not row["success"]]
    evidence = {"sql": HISTORY_SQL, "applied": len(history), "history": _history_rows(history)}
    if failures:
        versions = ", ".join(str(row["version"]) for row in failures)
        return failed(
            f"{len(failures)} failed migration row(s): {versions}", failed_rows=_history_rows(failures), **evidence
        )
    if not history:
        return failed("schema_migrations is empty: no migration was ever applied", **evidence)
    return passed(f"{len(history)} migrations applied, none failed", **evidence)


@SECTION.check(
    "db.migrations-current",
    items=("4.migrations-safe",),
    evidence=EvidenceClass.DATA,
    title="Applied migrations equal the expected set; nothing is pending or drifted",
    severity=Severity.HIGH,
    remediation="Run the migration job for the release (migrate up), or correct migrations.expected_latest / "
    "migrations.directory in params; a checksum drift means an applied file was edited: restore it.",
    reference=REF_MIGRATIONS,
)
def migrations_current(ctx: AuditContext) -> Outcome:
    history = migration_history(ctx)
    applied = {int(row["version"]): row for row in history if row["success"]}
    latest = max(applied, default=None)
    params = ctx.params.migrations
    evidence: dict[str, Any] = {"applied_latest": latest, "applied": len(applied)}
    if params.directory:
        expected = expected_migrations(ctx.params.path(params.directory))
        pending = sorted(set(expected) - set(applied))
        unknown = sorted(set(applied) - set(expected))
        drift = [
            {"version": v, "name": applied[v]["name"], "problem": "checksum differs from the file"}
            for v in sorted(set(expected) & set(applied))
            if applied[v].get("checksum") and applied[v]["checksum"] != expected[v][1]
        ] + [
            {"version": v, "name": applied[v]["name"], "problem": f"name differs from the file ({expected[v][0]})"}
            for v in sorted(set(expected) & set(applied))
            if applied[v]["name"] != expected[v][0]
        ]
        evidence.update(
            directory=params.directory,
            expected=len(expected),
            pending=[{"version": v, "name": expected[v][0]} for v in pending],
            unknown_applied=[{"version": v, "name": applied[v]["name"]} for v in unknown],
            drift=drift,
        )
        problems = [
            f"{len(pending)} pending" if pending else "",
            f"{len(unknown)} applied but not in the directory" if unknown else "",
            f"{len(drift)} drifted" if drift else "",
        ]
        summary = ", ".join(p for p in problems if p)
        if summary:
            return failed(f"migrations differ from {params.directory}: {summary}", **evidence)
        return passed(f"all {len(expected)} migrations in {params.directory} applied, checksums match", **evidence)
    if params.expected_latest is not None:
        evidence["expected_latest"] = params.expected_latest
        if latest is None or latest < params.expected_latest:
            return failed(f"pending migrations: latest applied {latest}, expected {params.expected_latest}", **evidence)
        if latest > params.expected_latest:
            return warned(f"database is ahead: latest applied {latest} > expected {params.expected_latest}", **evidence)
        return passed(f"latest applied migration is the expected {latest}", **evidence)
    return warned(
        "no expected migration set in params (migrations.expected_latest or migrations.directory): pending "
        "migrations cannot be detected",
        **evidence,
    )


@SECTION.check(
    "db.migrate-on-start-off",
    items=("4.migration-job",),
    evidence=EvidenceClass.CONFIG,
    title="MIGRATE_ON_START is off and an explicit migration job runs the migrations",
    severity=Severity.MEDIUM,
    remediation="Set MIGRATE_ON_START=false and run migrations from a dedicated job (CI/CD step or a Kubernetes Job "
    "before the rollout); name it in params migrations.explicit_job.",
    reference="recsys-data-and-ops §2 (MIGRATE_ON_START, no migration Job in the chart)",
)
def migrate_on_start_off(ctx: AuditContext) -> Outcome:
    job = ctx.params.migrations.explicit_job
    at_boot, evidence = boot_migration(ctx)
    evidence["explicit_job"] = job
    try:
        setting = ctx.config.get("MIGRATE_ON_START")
        enabled = ctx.config.flag("MIGRATE_ON_START")
        production = ctx.config.production or ctx.params.target.production
        evidence["config"] = [setting.row()]
    except ProbeError as exc:  # no config to read: the data may still show it
        enabled, production = None, ctx.params.target.production
        evidence["config"] = str(exc)
    if enabled:
        verdict = failed if production else warned
        return verdict(f"MIGRATE_ON_START is on ({setting.source}): every replica migrates at boot", **evidence)
    if at_boot and enabled is None:
        return failed(f"{at_boot}: a replica migrates at boot (MIGRATE_ON_START is not visible)", **evidence)
    if at_boot:
        return warned(
            f"MIGRATE_ON_START is off, but {at_boot}: something migrates at boot, or the migration job raced the "
            "rollout",
            **evidence,
        )
    if enabled is None:
        return warned("MIGRATE_ON_START is not visible (set in a secret the kit cannot read)", **evidence)
    if not job:
        return manual("MIGRATE_ON_START is off; name the explicit migration job (migrations.explicit_job)", **evidence)
    return passed(f"MIGRATE_ON_START is off; migrations run by {job}", **evidence)


# A migration applied this soon after a replica's process started was applied by that replica at boot.
BOOT_WINDOW_S = 300
CLOCK_SLACK_S = 5  # the database's and the service host's clocks may differ a little


def replica_starts(ctx: AuditContext) -> tuple[list[tuple[str, float]], str]:
    """(replica, start time) of every replica: ``process_start_time_seconds`` of each scraped instance that exports
    recsys series (Prometheus), else of the one ``/metrics`` the params name."""
    from recsys_audit.checks.s5_observability import job_selector

    if ctx.params.prometheus.url:
        promql = (
            f"process_start_time_seconds{job_selector(ctx)} and on (job, instance) recsys_backpressure_rejections_total"
        )
        with contextlib.suppress(ProbeError):
            found = ctx.prometheus.query(promql)
            if found:
                return [(row["metric"].get("instance", "?"), row["value"]) for row in found], f"Prometheus: {promql}"
    if ctx.metrics.has("process_start_time_seconds"):
        return [("metrics_url", ctx.metrics.total("process_start_time_seconds"))], "/metrics"
    return [], "no process_start_time_seconds in Prometheus or /metrics"


def boot_migration(ctx: AuditContext) -> tuple[str | None, dict[str, Any]]:
    """Whether the newest applied migration was applied right after a replica started — the data's answer to
    "does the service migrate at boot", whatever the config says. Returns (what shows it or None, evidence)."""
    try:
        history = [row for row in migration_history(ctx) if row["success"] and row.get("applied_at")]
        starts, source = replica_starts(ctx)
    except ProbeError as exc:
        return None, {"boot_evidence": f"not visible: {exc}"}
    if not history or not starts:
        return None, {"boot_evidence": "not visible: " + ("no applied migration" if not history else source)}
    newest = max(history, key=lambda row: row["applied_at"])
    applied = newest["applied_at"].timestamp()
    rows = [
        {
            "replica": replica,
            "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
            "newest_migration_after_start_s": round(applied - started, 1),
        }
        for replica, started in starts
    ]
    evidence: dict[str, Any] = {
        "boot_evidence": source,
        "newest_migration": newest["version"],
        "newest_applied_at": newest["applied_at"].isoformat(timespec="seconds"),
        "boot_window_s": BOOT_WINDOW_S,
        "replica_starts": rows,
    }
    for row in rows:
        if -CLOCK_SLACK_S <= row["newest_migration_after_start_s"] <= BOOT_WINDOW_S:
            after = row["newest_migration_after_start_s"]
            return f"migration {newest['version']} was applied {after:g} s after {row['replica']} started", evidence
    return None, evidence


@SECTION.check(
    "db.migration-preflight-ci",
    items=("4.migration-preflight-ci",),
    evidence=EvidenceClass.ATTESTED,
    cannot_fail="manual by design: a CI pipeline cannot be probed from the audited environment; only an attestation "
    "shows it",
    title="Migration preflight runs in CI",
    severity=Severity.MEDIUM,
    remediation="Run the migrate preflight (failed rows, checksum drift) in CI against a copy of production; note "
    "that the upstream preflight's filename pattern matches no file, so verify it reports real migrations.",
    reference="recsys-data-and-ops §2 (preflight)",
)
def migration_preflight_ci(ctx: AuditContext) -> Outcome:
    return manual("a CI preflight cannot be probed from the environment: attest it with the CI job's evidence URL")


# --- backups and restore -------------------------------------------------------------------------------------------

ARCHIVER_SQL = (
    "SELECT (SELECT setting FROM pg_settings WHERE name = 'archive_mode') AS archive_mode, "
    "(SELECT setting FROM pg_settings WHERE name = 'archive_command') AS archive_command, "
    "(SELECT setting FROM pg_settings WHERE name = 'archive_library') AS archive_library, "
    "archived_count, last_archived_time, failed_count, last_failed_time, stats_reset FROM pg_stat_archiver"
)


FUTURE_SLACK_H = 0.1  # clocks differ a little; a timestamp further ahead than this is not evidence of anything


def _external_backup(ctx: AuditContext, max_age_h: int) -> tuple[Status, str] | None:
    deployment = ctx.params.deployment
    if not deployment.backup_tool:
        return None
    if deployment.last_backup_at is None:
        return Status.MANUAL, f"backups by {deployment.backup_tool}; last backup time not in params (attest it)"
    age_h = _age_h(deployment.last_backup_at)
    if age_h < -FUTURE_SLACK_H:
        return Status.WARN, (
            f"the last {deployment.backup_tool} backup is dated {-age_h} h in the future "
            "(deployment.last_backup_at): not evidence of a backup"
        )
    if age_h > max_age_h:
        return Status.FAIL, f"last {deployment.backup_tool} backup is {age_h} h old (policy {max_age_h} h)"
    return Status.PASS, f"backups by {deployment.backup_tool}, last {age_h} h ago (policy {max_age_h} h)"


_VERDICTS = {Status.PASS: passed, Status.FAIL: failed, Status.WARN: warned, Status.MANUAL: manual}


@SECTION.check(
    "db.backups",
    items=("4.backups-restore",),
    evidence=EvidenceClass.DATA,
    title="Continuous backups: WAL archiving works (or an external backup tool is recent)",
    severity=Severity.CRITICAL,
    remediation="Enable WAL archiving (archive_mode=on with a tested archive_command/archive_library, e.g. "
    "pgBackRest or WAL-G) or a managed backup; name the tool and last backup in params deployment.backup_tool / "
    "last_backup_at. The upstream chart ships no backups at all.",
    reference="recsys-data-and-ops §4 (no backups anywhere)",
)
def backups(ctx: AuditContext) -> Outcome:
    max_age_h = ctx.params.policies.backup_max_age_h
    row = ctx.db.query(ARCHIVER_SQL)[0]
    command = row["archive_library"] or row["archive_command"] or ""
    archiver = {
        "archive_mode": row["archive_mode"],
        "archive_command": command[:80] + ("…" if len(command) > 80 else ""),
        "archived_count": row["archived_count"],
        "last_archived_h_ago": _hours_since(row["last_archived_time"]),
        "failed_count": row["failed_count"],
        "last_failed_h_ago": _hours_since(row["last_failed_time"]),
    }
    evidence: dict[str, Any] = {"sql": ARCHIVER_SQL, "archiver": [archiver], "policy_max_age_h": max_age_h}
    external = _external_backup(ctx, max_age_h)
    if external:
        evidence["external_backup"] = external[1]
    if row["archive_mode"] not in {"on", "always"} or command in {"", "(disabled)"}:
        if external:
            status, text = external
            return _VERDICTS[status](f"WAL archiving off; {text}", **evidence)
        return failed("no backups: WAL archiving is off and no external backup tool is named in params", **evidence)
    last_ok, last_failed = row["last_archived_time"], row["last_failed_time"]
    if last_failed is not None and (last_ok is None or last_failed > last_ok):
        return failed(f"WAL archiving is failing ({row['failed_count']} failures, none archived since)", **evidence)
    if last_ok is None:
        return warned("WAL archiving is on but no segment has been archived yet", **evidence)
    age_h = _age_h(last_ok)
    if age_h < -FUTURE_SLACK_H:
        return warned(f"the last archived WAL segment is dated {-age_h} h in the future: check the clocks", **evidence)
    if age_h > max_age_h:
        return failed(f"last WAL segment archived {age_h} h ago (policy {max_age_h} h)", **evidence)
    return passed(f"WAL archiving on: {row['archived_count']} segments, last {age_h} h ago", **evidence)


@SECTION.check(
    "db.restore-tested",
    items=("4.backups-restore",),
    evidence=EvidenceClass.DATA,
    title="A restore has been tested: drill restores a faithful copy, measuring the restore time",
    severity=Severity.HIGH,
    remediation="Enable restore_drill with a scratch database (non-production targets), or attest the last restore "
    "test (date, duration, evidence URL); fix whatever the drill found missing before relying on the backups.",
    reference="recsys-data-and-ops §4 (no backups or restore procedure upstream)",
)
def restore_tested(ctx: AuditContext) -> Outcome:
    drill = ctx.params.restore_drill
    if not drill.enabled:
        return manual("restore drill not enabled: attest the last restore test (date, duration, evidence URL)")
    if ctx.params.target.production and not drill.allow_production:
        return manual(
            "restore drill refused on a production target (restore_drill.allow_production is false): attest the "
            "last restore test instead"
        )
    if drill.scratch_dsn is None or ctx.params.database.dsn is None:
        raise ProbeError("restore_drill.enabled needs database.dsn and restore_drill.scratch_dsn — add them")
    from recsys_audit.probes.restore import RestoreDrill

    result = RestoreDrill(ctx.params.database.dsn, drill.scratch_dsn, drill.timeout_s).run()
    tables = result.tables
    evidence: dict[str, Any] = {
        "measured_restore_s": result.total_s,
        "dump_s": result.dump_s,
        "restore_s": result.restore_s,
        "dump_bytes": result.dump_bytes,
        "objects_audited": result.objects_source,
        "objects_restored": result.objects_scratch,
        "missing_after_restore": result.missing[:50],
        "extra_in_scratch": len(result.extra),
        "row_mismatches": result.row_mismatches,
        "tables": sorted(tables, key=lambda row: -int(row["audited_estimate"] or 0))[:20],
    }
    if not result.faithful:
        parts = [f"{len(result.missing)} schema object(s) missing"] if result.missing else []
        parts += [f"{len(result.row_mismatches)} table(s) with wrong row counts"] if result.row_mismatches else []
        return failed(f"restore drill is not faithful: {', '.join(parts)}", **evidence)
    return passed(
        f"restore drill: {result.objects_source} objects and {len(tables)} tables restored in {result.total_s} s",
        **evidence,
    )


@SECTION.check(
    "db.down-migrations",
    items=("4.schema-rollback",),
    evidence=EvidenceClass.DATA,
    title="Every up migration has its down migration",
    severity=Severity.MEDIUM,
    remediation="Keep a <version>_<name>.down.sql beside every up migration (a no-op one where nothing can be "
    "undone, saying so), and name the migrations directory in params migrations.directory.",
    reference=REF_MIGRATIONS,
)
def down_migrations(ctx: AuditContext) -> Outcome:
    directory = ctx.params.migrations.directory
    if not directory:
        return warned("no migrations.directory in params: down migrations cannot be inspected")
    folder = ctx.params.path(directory)
    ups = sorted(p.name for p in folder.glob("*.up.sql")) if folder.is_dir() else []
    if not ups:
        raise ProbeError(f"no *.up.sql migrations in {folder} — correct migrations.directory")
    missing = [name for name in ups if not (folder / name.replace(".up.sql", ".down.sql")).is_file()]
    evidence = {"directory": directory, "up_migrations": len(ups), "without_down": [{"file": n} for n in missing]}
    if missing:
        return failed(f"{len(missing)} of {len(ups)} migrations have no down migration", **evidence)
    return passed(f"all {len(ups)} migrations have a down migration", **evidence)


@SECTION.check(
    "db.schema-rollback-documented",
    items=("4.schema-rollback",),
    evidence=EvidenceClass.ATTESTED,
    cannot_fail="manual by design: a rollback strategy is a document only a reviewer can attest (the down "
    "migrations behind it are checked by db.down-migrations)",
    title="The rollback strategy for schema changes is documented",
    severity=Severity.MEDIUM,
    remediation="Document how a schema change is rolled back (down migration, forward fix, or restore) and attest "
    "the document in params (attestations: check db.schema-rollback-documented).",
    reference=REF_MIGRATIONS,
)
def schema_rollback_documented(ctx: AuditContext) -> Outcome:
    return awaiting_attestation(
        ctx,
        "db.schema-rollback-documented",
        "attest the documented rollback strategy for schema changes (down migration, forward fix or restore)",
    )


# --- isolation, privileges, TLS, capacity --------------------------------------------------------------------------

RLS_SQL = (
    "SELECT c.relname AS table, c.relrowsecurity AS rls, c.relforcerowsecurity AS forced, "
    "pg_get_userbyid(c.relowner) AS owner, (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s) ORDER BY c.relname"
)


def tenant_table_security(ctx: AuditContext) -> list[dict[str, Any]]:
    return ctx.memo("db:rls", lambda: ctx.db.query(RLS_SQL, (list(TENANT_TABLES),)))


@SECTION.check(
    "db.rls-tenant-tables",
    items=("2.retention-access",),
    evidence=EvidenceClass.DATA,
    title="Row-level security is enabled, forced and has policies on every tenant table",
    severity=Severity.HIGH,
    remediation="ALTER TABLE … ENABLE ROW LEVEL SECURITY and FORCE ROW LEVEL SECURITY on each tenant table with a "
    "tenant_id policy on a per-transaction GUC; upstream ships none (its optional migration is only a comment).",
    reference="recsys-data-and-ops §1.5 (row-level security off by default)",
)
def rls_tenant_tables(ctx: AuditContext) -> Outcome:
    rows = tenant_table_security(ctx)
    present = {row["table"] for row in rows}
    off = [row["table"] for row in rows if not row["rls"] or not row["policies"]]
    unforced = [row["table"] for row in rows if row["rls"] and row["policies"] and not row["forced"]]
    evidence = {"sql": RLS_SQL, "tables": rows, "absent": sorted(set(TENANT_TABLES) - present)}
    if not rows:
        raise ProbeError("none of the tenant tables exists in schema public — is database.dsn the recsys database?")
    if off:
        return failed(f"RLS off or without policies on {len(off)} of {len(rows)} tenant tables", **evidence)
    if unforced:
        return warned(f"RLS not forced on {len(unforced)} tables: their owner bypasses the policies", **evidence)
    return passed(f"RLS enabled, forced and with policies on all {len(rows)} tenant tables", **evidence)


def service_role(ctx: AuditContext) -> tuple[str | None, str]:
    """The role recsys-service connects as: params, else the user in a visible DATABASE_URL."""
    if ctx.params.database.service_role:
        return ctx.params.database.service_role, "params database.service_role"
    try:
        url = ctx.config.value("DATABASE_URL")
    except ProbeError:
        url = None
    if url:
        try:
            user = conninfo_to_dict(url).get("user")
        except Exception:  # an unparseable URL only means the role stays unknown
            user = None
        if user:
            return str(user), "DATABASE_URL in the deployment config"
    return None, "not known"


ROLE_SQL = (
    "SELECT rolname AS role, rolsuper AS superuser, rolbypassrls AS bypassrls, rolcreaterole AS createrole, "
    "rolcreatedb AS createdb, rolreplication AS replication FROM pg_roles WHERE rolname = %s"
)


@SECTION.check(
    "db.service-role-privileges",
    items=("2.retention-access",),
    evidence=EvidenceClass.DATA,
    title="The service role is not a superuser, cannot bypass RLS and does not own the tenant tables",
    severity=Severity.HIGH,
    remediation="Create a dedicated LOGIN role with only SELECT/INSERT/UPDATE/DELETE grants; let a separate owner "
    "role (used by the migration job) own the schema; never a superuser or BYPASSRLS role.",
    reference="recsys-data-and-ops §1.5 (service user usually owns the tables and bypasses RLS)",
)
def service_role_privileges(ctx: AuditContext) -> Outcome:
    role, source = service_role(ctx)
    if role is None:
        return warned("service role unknown: set database.service_role in params", source=source)
    found = ctx.db.query(ROLE_SQL, (role,))
    evidence: dict[str, Any] = {"role": role, "source": source, "sql": ROLE_SQL, "attributes": found}
    if not found:
        return failed(f"service role {role!r} does not exist in the database", **evidence)
    attributes = found[0]
    owned = [
        row
        for row in tenant_table_security(ctx)
        if ctx.db.scalar("SELECT pg_has_role(%s, %s, 'USAGE')", (role, row["owner"]))
    ]
    evidence["owns_tenant_tables"] = [{"table": r["table"], "owner": r["owner"], "forced": r["forced"]} for r in owned]
    statuses: list[tuple[Status, str]] = []
    if attributes["superuser"]:
        statuses.append((Status.FAIL, "is a superuser (bypasses RLS and every grant)"))
    if attributes["bypassrls"]:
        statuses.append((Status.FAIL, "has BYPASSRLS"))
    unforced = [r for r in owned if not r["forced"]]
    if unforced:
        statuses.append((Status.FAIL, f"owns {len(unforced)} tenant tables without FORCE RLS (bypasses policies)"))
    elif owned:
        statuses.append((Status.WARN, f"owns {len(owned)} tenant tables (could disable RLS)"))
    for flag in ("createrole", "createdb", "replication"):
        if attributes[flag]:
            statuses.append((Status.WARN, f"has {flag.upper()}"))
    if not statuses:
        return passed(f"{role}: no superuser, no BYPASSRLS, owns no tenant table", **evidence)
    status = worst(*(s for s, _ in statuses))
    summary = f"{role} " + "; ".join(text for _, text in statuses)
    return failed(summary, **evidence) if status == Status.FAIL else warned(summary, **evidence)


TLS_SQL = (
    "SELECT current_setting('ssl') AS server_ssl, "
    "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS auditor_ssl, "
    "(SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS auditor_tls_version"
)
SESSION_TLS_SQL = (
    "SELECT s.ssl, s.version, count(*) AS sessions FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid "
    "WHERE a.usename = %s GROUP BY s.ssl, s.version ORDER BY s.ssl"
)


# sslmode values that encrypt (libpq): anything else may fall back to, or insists on, clear text
TLS_SSLMODES = ("require", "verify-ca", "verify-full")


def database_url_sslmode(ctx: AuditContext) -> str | None:
    """The sslmode of the service's DATABASE_URL when the config shows it (libpq's default when unset)."""
    try:
        url = ctx.config.value("DATABASE_URL")
    except ProbeError:
        return None
    if not url:
        return None
    try:
        return str(conninfo_to_dict(url).get("sslmode") or "prefer (libpq default)")
    except Exception:  # an unparseable URL tells nothing about TLS
        return "unparseable"


@SECTION.check(
    "db.connection-tls",
    items=("4.backups-restore",),
    evidence=EvidenceClass.DATA,
    title="Database connections use TLS",
    severity=Severity.HIGH,
    remediation="Enable ssl on the server and put sslmode=verify-full (at least require) in DATABASE_URL; the "
    "upstream bundled DSN uses sslmode=disable. Name the service role in params database.service_role so its "
    "sessions can be examined.",
    reference="recsys-data-and-ops §4 (bundled Postgres DSN with sslmode=disable)",
)
def connection_tls(ctx: AuditContext) -> Outcome:
    server = ctx.db.query(TLS_SQL)[0]
    role, source = service_role(ctx)
    sessions = ctx.db.query(SESSION_TLS_SQL, (role,)) if role else []
    sslmode = database_url_sslmode(ctx)
    evidence: dict[str, Any] = {
        "sql": TLS_SQL,
        "server": [server],
        "service_role": role,
        "service_role_from": source,
        "service_sessions": sessions,
        "database_url_sslmode": sslmode or "not visible",
    }
    url_encrypts = bool(sslmode) and sslmode.startswith(TLS_SSLMODES)
    statuses: list[tuple[Status, str]] = []
    if sslmode and sslmode.startswith(("disable", "allow")):
        statuses.append((Status.FAIL, f"DATABASE_URL has sslmode={sslmode}"))
    elif sslmode and not url_encrypts:
        statuses.append((Status.WARN, f"DATABASE_URL sslmode={sslmode} may fall back to clear text"))
    if server["server_ssl"] != "on":
        statuses.append((Status.FAIL, "the server has ssl=off"))
    plain = sum(row["sessions"] for row in sessions if row["ssl"] is False)
    hidden = sum(row["sessions"] for row in sessions if row["ssl"] is None)
    encrypted = sum(row["sessions"] for row in sessions if row["ssl"])
    if role is None:
        statuses.append((Status.WARN, "service role unknown (database.service_role): its sessions were not examined"))
    if plain:
        statuses.append((Status.FAIL, f"{plain} service session(s) without TLS"))
    if hidden:
        statuses.append((Status.WARN, f"TLS of {hidden} service session(s) not visible (grant pg_read_all_stats)"))
    if role and not sessions and not url_encrypts:
        statuses.append((Status.WARN, f"no session of {role} to examine and no DATABASE_URL that requires TLS"))
    if not server["auditor_ssl"]:
        statuses.append((Status.WARN, "the audit's own connection is not encrypted"))
    if statuses:
        status = worst(*(s for s, _ in statuses))
        summary = "; ".join(text for _, text in statuses)
        return failed(summary, **evidence) if status == Status.FAIL else warned(summary, **evidence)
    shown = f"{encrypted} service session(s), all TLS" if sessions else f"DATABASE_URL sslmode={sslmode}"
    return passed(f"server ssl on; {shown}", **evidence)


@SECTION.check(
    "db.server-version",
    items=("4.backups-restore",),
    evidence=EvidenceClass.DATA,
    title="PostgreSQL major version is supported by the community",
    severity=Severity.MEDIUM,
    remediation="Plan a major-version upgrade before the end-of-life date (pg_upgrade or logical replication).",
    reference="https://www.postgresql.org/support/versioning/",
)
def server_version(ctx: AuditContext) -> Outcome:
    number = int(ctx.db.scalar("SELECT current_setting('server_version_num')"))
    major = number // 10000
    eol = POSTGRES_EOL.get(major)
    evidence = {"server_version_num": number, "major": major, "end_of_life": str(eol) if eol else "not listed"}
    today = _now().date()
    if eol is None:
        return (passed if major > max(POSTGRES_EOL) else failed)(f"PostgreSQL {major}", **evidence)
    if eol < today:
        return failed(f"PostgreSQL {major} reached end of life on {eol}", **evidence)
    if (eol - today).days < 180:
        return warned(f"PostgreSQL {major} reaches end of life on {eol}", **evidence)
    return passed(f"PostgreSQL {major}, supported until {eol}", **evidence)


HEADROOM_SQL = (
    "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS backends, "
    "current_setting('max_connections')::int AS max_connections, "
    "current_setting('superuser_reserved_connections')::int AS reserved"
)


@SECTION.check(
    "db.connection-headroom",
    items=("4.backups-restore",),
    evidence=EvidenceClass.DATA,
    title="Connection headroom: client backends well below max_connections",
    severity=Severity.MEDIUM,
    remediation="Put a pooler (PgBouncer) in front, size the service's pool per replica, or raise max_connections.",
    reference=REF_DB,
)
def connection_headroom(ctx: AuditContext) -> Outcome:
    row = ctx.db.query(HEADROOM_SQL)[0]
    usable = max(row["max_connections"] - row["reserved"], 1)
    used = round(row["backends"] / usable, 3)
    evidence = {"sql": HEADROOM_SQL, **row, "used_share": used}
    summary = f"{row['backends']} of {usable} usable connections in use ({used:.0%})"
    if used >= 0.95:
        return failed(summary, **evidence)
    if used >= 0.8:
        return warned(summary, **evidence)
    return passed(summary, **evidence)


LONG_XACT_SQL = (
    "SELECT pid, usename AS role, application_name, state, wait_event_type, "
    "extract(epoch FROM now() - xact_start)::int AS open_s FROM pg_stat_activity "
    "WHERE xact_start < now() - make_interval(secs => %s) AND pid <> pg_backend_pid() "
    "ORDER BY xact_start LIMIT 20"
)
HIDDEN_SQL = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND state IS NULL"


@SECTION.check(
    "db.long-transactions",
    items=("4.migrations-safe",),
    evidence=EvidenceClass.DATA,
    title="No long-running or abandoned transactions (they hold back vacuum and locks)",
    severity=Severity.LOW,
    remediation="Find the session (pid, application) and end it; set idle_in_transaction_session_timeout and a "
    "statement_timeout for the service role. A transaction left idle is a leaked connection in the application.",
    reference=REF_DB,
)
def long_transactions(ctx: AuditContext) -> Outcome:
    limit = ctx.params.database.long_transaction_max_s
    rows = ctx.db.query(LONG_XACT_SQL, (limit,))
    hidden = int(ctx.db.scalar(HIDDEN_SQL) or 0)
    evidence: dict[str, Any] = {"sql": LONG_XACT_SQL, "limit_s": limit, "transactions": rows}
    if hidden:
        evidence["sessions_not_visible"] = hidden
    abandoned = [row for row in rows if str(row["state"] or "").startswith("idle in transaction")]
    if abandoned:
        return failed(
            f"{len(abandoned)} transaction(s) idle for more than {limit} s (oldest {abandoned[0]['open_s']} s): "
            "abandoned by their client, they hold locks and stop vacuum",
            **evidence,
        )
    if rows:
        return warned(
            f"{len(rows)} transaction(s) open longer than {limit} s (oldest {rows[0]['open_s']} s)", **evidence
        )
    if hidden:
        return warned(f"{hidden} sessions are not visible to the auditor (grant pg_read_all_stats)", **evidence)
    return passed(f"no transaction open longer than {limit} s", **evidence)


# --- partitions ----------------------------------------------------------------------------------------------------

PARTITIONS_SQL = (
    "SELECT c.relname AS partition, pg_get_expr(c.relpartbound, c.oid) AS bound, c.reltuples::bigint AS reltuples, "
    "s.n_live_tup AS live_estimate FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname"
)


def event_partitions(ctx: AuditContext) -> dict[str, list[dict[str, Any]] | None]:
    """Partitions of each event table (None: not a partitioned table / absent)."""

    def read() -> dict[str, list[dict[str, Any]] | None]:
        found: dict[str, list[dict[str, Any]] | None] = {}
        for table in EVENT_TABLES:
            kind = ctx.db.scalar("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)", (f"public.{table}",))
            found[table] = ctx.db.query(PARTITIONS_SQL, (f"public.{table}",)) if kind == "p" else None
        return found

    return ctx.memo("db:partitions", read)


def _bound(text: str) -> dt.datetime | None:
    value = text.strip().strip("'")
    if value in {"MINVALUE", "MAXVALUE"}:
        return dt.datetime.min.replace(tzinfo=dt.UTC) if value == "MINVALUE" else dt.datetime.max.replace(tzinfo=dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _covers(partitions: list[dict[str, Any]], moment: dt.datetime) -> str | None:
    for row in partitions:
        match = _RANGE_BOUND.search(row["bound"] or "")
        if match:
            low, high = _bound(match.group(1)), _bound(match.group(2))
            if low is not None and high is not None and low <= moment < high:
                return row["partition"]
    return None


@SECTION.check(
    "db.event-partitions-ahead",
    items=("2.retention-access",),
    evidence=EvidenceClass.DATA,
    title="Event tables have partitions for the current and the next month",
    severity=Severity.MEDIUM,
    remediation="Schedule ensure_monthly_partitions('<table>', date_trunc('month', now()), 2) monthly (pg_cron or a "
    "CronJob); upstream never calls it, so every row lands in the default partition.",
    reference="recsys-data-and-ops §1.4 (partitioning)",
)
def event_partitions_ahead(ctx: AuditContext) -> Outcome:
    now = _now()
    next_month = (now.replace(day=1) + dt.timedelta(days=32)).replace(day=15, hour=12, minute=0, second=0)
    rows, statuses, sizes = [], [], []
    for table, partitions in event_partitions(ctx).items():
        if partitions is None:
            rows.append({"table": table, "current_month": None, "next_month": None, "note": "not partitioned"})
            statuses.append(Status.FAIL)
            continue
        current, upcoming = _covers(partitions, now), _covers(partitions, next_month)
        rows.append({"table": table, "current_month": current, "next_month": upcoming, "partitions": len(partitions)})
        statuses.append(Status.PASS if current and upcoming else Status.FAIL)
        sizes.extend(
            {"table": table, "partition": p["partition"], "bound": p["bound"],
             "rows": max(p["reltuples"] or 0, p["live_estimate"] or 0, 0)}
            for p in partitions
        )  # fmt: skip
    evidence = {
        "tables": rows,
        "partitions": sizes,  # estimated rows by statistics, for the chart
        "checked_at": [now.isoformat(), next_month.isoformat()],
        "sql": PARTITIONS_SQL,
    }
    missing = [f"{r['table']} ({'current' if not r['current_month'] else 'next'} month)" for r in rows if not (
        r["current_month"] and r["next_month"])]  # fmt: skip
    if worst(*statuses) == Status.FAIL:
        return failed(f"no monthly partition for: {', '.join(missing)}", **evidence)
    return passed("current and next month partitions exist for every event table", **evidence)


@SECTION.check(
    "db.default-partition-empty",
    items=("2.retention-access",),
    evidence=EvidenceClass.DATA,
    title="No event rows in the default partitions",
    severity=Severity.MEDIUM,
    remediation="Create the monthly partitions, then move the rows out of <table>_default (detach default, create "
    "partitions, re-insert) — Postgres refuses a partition for a month that already has rows in the default.",
    reference="recsys-data-and-ops §1.4 (rows land in *_default)",
)
def default_partition_empty(ctx: AuditContext) -> Outcome:
    rows = []
    for table, partitions in event_partitions(ctx).items():
        for row in partitions or []:
            if (row["bound"] or "").strip().upper() != "DEFAULT":
                continue
            try:
                has_rows: bool | None = ctx.db.has_rows(row["partition"])
            except ProbeError:  # no SELECT on the partition: statistics only
                has_rows = None
            rows.append({"table": table, **row, "has_rows": has_rows})
    evidence = {"sql": PARTITIONS_SQL, "probe": "SELECT 1 FROM <default partition> LIMIT 1", "defaults": rows}
    if not rows:
        return skipped("no default partitions on the event tables", **evidence)
    flagged = [
        r for r in rows if r["has_rows"] or (r["has_rows"] is None and max(r["reltuples"], r["live_estimate"] or 0) > 0)
    ]
    if flagged:
        names = ", ".join(r["partition"] for r in flagged)
        estimate = sum(max(r["reltuples"], r["live_estimate"] or 0) for r in flagged)
        return failed(f"rows in default partition(s) {names} (≈{estimate} by statistics)", **evidence)
    return passed(f"{len(rows)} default partition(s), all empty", **evidence)
