"""The sandbox's PostgreSQL: a throwaway cluster per instance, the recsys schema, roles, grants and RLS.

Each instance gets its own cluster (``initdb`` + ``pg_ctl``, run as the ``postgres`` OS user when we are root) with
its data directory under the instance directory, a unix socket there for administration and TCP on 127.0.0.1 for the
service and the audit. When no cluster can be created (no server binaries, no ``postgres`` user), the instance falls
back to an existing server (``DATABASE_URL`` or ``postgresql://postgres@127.0.0.1:5432/postgres``) with a database
and roles of its own, suffixed with the instance tag, dropped again at stop.

The schema comes from ``migrations/<version>_<name>.up.sql`` (one source of truth): :func:`apply_migrations` runs
them in order as the owner role and records them in ``schema_migrations`` as the migration tool would;
``schema.sql`` is the same files concatenated (``python -m recsys_audit.sandbox.database --write-schema``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SCHEMA_FILE = Path(__file__).parent / "schema.sql"
DATABASE_NAME = "recsys"
SHARED_SERVER_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

# The tables carrying tenant_id that the service's RLS guard expects to be protected (item_tags stands in for the
# guard's misnamed item_tags_current).
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
PARTITIONED_TABLES = ("exposure_events", "interaction_events")

_MIGRATION_FILE = re.compile(r"^(\d{8,14})_([a-z0-9_]+)\.up\.sql$")


class SandboxDatabaseError(Exception):
    """The sandbox database could not be set up; the message is one line and says what to do."""


# --- migrations --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        """SHA-256 hex of the trimmed file, as the migration tool records it."""
        return hashlib.sha256(self.sql.strip().encode("utf-8")).hexdigest()


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.up.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    return sorted(found, key=lambda m: m.version)


SCHEMA_MIGRATIONS_DDL = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version    bigint PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    exec_ms    int NOT NULL DEFAULT 0,
    success    boolean NOT NULL DEFAULT true
);"""


def render_schema_sql() -> str:
    """schema.sql: every migration in order, then the bookkeeping table with one row per migration."""
    parts = [
        "-- recsys schema for the sandbox: generated from migrations/*.up.sql, do not edit by hand.\n"
        "-- Regenerate with: python -m recsys_audit.sandbox.database --write-schema\n"
    ]
    for migration in migrations():
        parts.append(f"-- {migration.path.name}\n{migration.sql.strip()}\n")
    parts.append(SCHEMA_MIGRATIONS_DDL + "\n")
    rows = ",\n".join(f"    ({m.version}, '{m.name}', '{m.checksum}', now(), 0, true)" for m in migrations())
    parts.append(
        f"INSERT INTO schema_migrations (version, name, checksum, applied_at, exec_ms, success) VALUES\n{rows};\n"
    )
    return "\n".join(parts)


def apply_migrations(conn: psycopg.Connection[Any], owner: str, *, failed: bool = False, pending: bool = False) -> None:
    """Run every migration as ``owner`` and record it in ``schema_migrations``.

    ``pending`` leaves the newest migration unrecorded (its objects exist, so the service still works, but the
    bookkeeping says it is not applied); ``failed`` records the newest recorded one with ``success=false``, as a
    migration that errored half-way leaves it.
    """
    to_apply = migrations()
    recorded = len(to_apply) - 1 if pending else len(to_apply)
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
        conn.execute(SCHEMA_MIGRATIONS_DDL)
        for index, migration in enumerate(to_apply):
            started = time.perf_counter()
            if _has_statement(migration.sql):
                conn.execute(migration.sql)  # type: ignore[arg-type]
            if index >= recorded:
                continue
            exec_ms = max(1, round((time.perf_counter() - started) * 1000))
            success = not (failed and index == recorded - 1)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at, exec_ms, success)"
                " VALUES (%s, %s, %s, now() - make_interval(mins => %s), %s, %s)",
                (migration.version, migration.name, migration.checksum, len(to_apply) - index, exec_ms, success),
            )


def _has_statement(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in text.splitlines())


# --- what a profile asks of the database --------------------------------------------------------------------------


SCRATCH_SUFFIX = "_restore_drill"


@dataclass(frozen=True)
class DatabaseSettings:
    tls: bool = True
    archive: bool = True
    rls: bool = True
    monthly_partitions: bool = True
    service_role_superuser: bool = False
    failed_migration: bool = False
    pending_migration: bool = False


@dataclass(frozen=True)
class RoleNames:
    owner: str = "recsys_owner"
    service: str = "recsys_app"
    auditor: str = "recsys_auditor"
    restore: str = "recsys_restore"  # owns the restore-drill scratch database (when there is one)

    @classmethod
    def suffixed(cls, tag: str) -> RoleNames:
        return cls(f"recsys_owner_{tag}", f"recsys_app_{tag}", f"recsys_auditor_{tag}", f"recsys_restore_{tag}")


# --- the cluster -------------------------------------------------------------------------------------------------


def find_server_bindir() -> Path | None:
    """The PostgreSQL server binaries: $PG_BINDIR, initdb on PATH, or the newest /usr/lib/postgresql/*/bin."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).parent) if on_path else "")
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _numeric(p.parent.name), reverse=True)
    candidates.extend(str(p) for p in versions)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    return None


def _numeric(text: str) -> int:
    return int(text) if text.isdigit() else -1


def _as_postgres_user() -> list[str]:
    """Command prefix running a server binary as the postgres OS user when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if not runuser:
        raise SandboxDatabaseError("running as root but 'runuser' is missing: cannot run initdb as user postgres")
    return [runuser, "-u", "postgres", "--"]


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _postgres_can_enter(path: Path) -> bool:
    if os.geteuid() != 0:
        return True
    return subprocess.run([*_as_postgres_user(), "test", "-x", str(path)], check=False).returncode == 0


def _run(command: list[str], what: str, timeout: float = 60) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxDatabaseError(f"{what} failed: {exc}") from None
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout).split())[-300:]
        raise SandboxDatabaseError(f"{what} failed (exit {result.returncode}): {detail}")


def stop_cluster(bindir: Path, data_dir: Path) -> bool:
    """Fast-stop the cluster of ``data_dir`` when it runs (its ``postmaster.pid`` exists); returns whether it did."""
    if not (data_dir / "postmaster.pid").exists():
        return False
    command = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "-t", "30", "stop"]
    subprocess.run([*_as_postgres_user(), *command], capture_output=True, timeout=45, check=False)
    return True


@dataclass
class LocalCluster:
    """A PostgreSQL cluster owned by one sandbox instance."""

    home: Path  # real directory holding data/, run/ (socket), wal-archive/, postgres.log
    port: int
    bindir: Path
    tls: bool
    archive: bool
    outside_home: bool = False  # home lives outside the instance dir (symlinked) and is removed at stop

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def archive_dir(self) -> Path:
        return self.home / "wal-archive"

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={dbname}"

    @property
    def pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def create(self) -> None:
        for directory in (self.home, self.socket_dir, self.archive_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
            _chown_to_postgres(directory)
        _run(
            [
                *_as_postgres_user(),
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ],
            "initdb",
        )
        self._configure()

    def _configure(self) -> None:
        settings: dict[str, str] = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "unix_socket_permissions": "0700",
            "max_connections": "60",
            "shared_buffers": "32MB",
            "password_encryption": "'scram-sha-256'",
            "log_connections": "on",
            "log_min_duration_statement": "1000",
            "timezone": "'UTC'",
        }
        if self.tls:
            cert, key = _write_server_certificate(self.data_dir)
            settings.update({"ssl": "on", "ssl_cert_file": f"'{cert}'", "ssl_key_file": f"'{key}'"})
        if self.archive:
            command = f"test ! -f {self.archive_dir}/%f && cp %p {self.archive_dir}/%f"
            settings.update({"wal_level": "replica", "archive_mode": "on", "archive_command": f"'{command}'"})
            settings["archive_timeout"] = "300"
        else:
            settings["archive_mode"] = "off"
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# recsys sandbox\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        host = "hostssl" if self.tls else "host"
        hba = [
            "# recsys sandbox: the socket lives in a private directory; TCP needs a password",
            "local all all trust",
            f"{host} all all 127.0.0.1/32 scram-sha-256",
        ]
        if self.tls:
            hba.append("hostnossl all all 127.0.0.1/32 reject")
        (self.data_dir / "pg_hba.conf").write_text("\n".join(hba) + "\n", encoding="utf-8")

    def start(self) -> None:
        self.log_file.touch()
        _chown_to_postgres(self.log_file)
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "30"]
        try:
            _run([*_as_postgres_user(), *command, "start"], "pg_ctl start", timeout=45)
        except SandboxDatabaseError as exc:
            tail = self.log_file.read_text(errors="replace").strip().splitlines()[-1:] if self.log_file.exists() else []
            raise SandboxDatabaseError(f"{exc} — {' '.join(tail)} (log: {self.log_file})") from None

    def stop(self) -> None:
        stop_cluster(self.bindir, self.data_dir)
        if self.outside_home:
            shutil.rmtree(self.home, ignore_errors=True)


def _write_server_certificate(data_dir: Path) -> tuple[Path, Path]:
    from recsys_audit.sandbox.identity import self_signed_server_certificate

    cert_pem, key_pem = self_signed_server_certificate("recsys-sandbox-postgres")
    cert, key = data_dir / "server.crt", data_dir / "server.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    key.chmod(0o600)
    for path in (cert, key):
        _chown_to_postgres(path)
    return cert, key


def plan_cluster_home(instance_dir: Path) -> tuple[Path, bool]:
    """Where the cluster lives: ``<instance>/pg`` when the postgres OS user can reach it, else a private directory
    under the system temp dir linked from ``<instance>/pg``. Also keeps the socket path short enough."""
    wanted = instance_dir / "pg"
    socket_path = wanted / "run" / ".s.PGSQL.65535"
    if _postgres_can_enter(instance_dir) and len(str(socket_path)) < 100:
        return wanted, False
    home = Path(tempfile.mkdtemp(prefix="recsys-pg-"))
    if wanted.is_symlink() or wanted.exists():
        wanted.unlink() if wanted.is_symlink() else shutil.rmtree(wanted)
    wanted.symlink_to(home, target_is_directory=True)
    return home, True


# --- one provisioned database ------------------------------------------------------------------------------------


@dataclass
class SandboxDatabase:
    """The recsys database of one instance, with its three roles and their passwords."""

    mode: Literal["cluster", "shared"]
    host: str
    port: int
    dbname: str
    roles: RoleNames
    admin_conninfo: str  # superuser connection to this database (socket in cluster mode)
    tls: bool
    passwords: dict[str, str] = field(default_factory=dict)
    cluster: LocalCluster | None = None
    server_admin_conninfo: str = ""  # shared mode: where to drop the database again

    def dsn(self, role: str) -> str:
        password = self.passwords[role]
        query = "?sslmode=require" if self.tls else ""
        return f"postgresql://{role}:{password}@{self.host}:{self.port}/{self.dbname}{query}"

    @property
    def service_dsn(self) -> str:
        return self.dsn(self.roles.service)

    @property
    def auditor_dsn(self) -> str:
        return self.dsn(self.roles.auditor)

    @property
    def scratch_dbname(self) -> str:
        return f"{self.dbname}{SCRATCH_SUFFIX}"

    @property
    def server_conninfo(self) -> str:
        """Superuser connection to the server's maintenance database (to create or drop databases and roles)."""
        return self.cluster.admin_conninfo() if self.cluster is not None else self.server_admin_conninfo

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_conninfo, autocommit=True, connect_timeout=10, **kwargs)

    def drop(self) -> None:
        """Shared mode: drop the instance's databases and roles (cluster mode: the cluster goes with the instance)."""
        if self.mode != "shared":
            return
        with psycopg.connect(self.server_admin_conninfo, autocommit=True, connect_timeout=10) as conn:
            for dbname in (self.dbname, self.scratch_dbname):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            for role in (self.roles.auditor, self.roles.service, self.roles.owner, self.roles.restore):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

    def create_restore_scratch(self) -> str:
        """An empty scratch database for the audit's restore drill; returns its DSN.

        Its owner ``roles.restore`` may create the restored objects (pgcrypto is a trusted extension) and has
        BYPASSRLS but no superuser: the restored tenant tables keep FORCE ROW LEVEL SECURITY, and the drill must
        count their rows to compare them with the audited database."""
        role, dbname = self.roles.restore, self.scratch_dbname
        self.passwords[role] = secrets.token_urlsafe(24)
        with psycopg.connect(self.server_conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE BYPASSRLS PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(self.passwords[role])
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    sql.Identifier(dbname), sql.Identifier(role)
                )
            )
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname), sql.Identifier(role))
            )
        query = "?sslmode=require" if self.tls else ""
        return f"postgresql://{role}:{self.passwords[role]}@{self.host}:{self.port}/{dbname}{query}"


def create_database(
    instance_dir: Path, port: int, settings: DatabaseSettings, tag: str, log: Any = print
) -> SandboxDatabase:
    """A running, empty recsys database with roles: an own cluster when possible, else the shared server."""
    bindir = find_server_bindir()
    reason = "no PostgreSQL server binaries (initdb, pg_ctl) found; set PG_BINDIR"
    if bindir is not None:
        home, outside = plan_cluster_home(instance_dir)
        cluster = LocalCluster(home, port, bindir, tls=settings.tls, archive=settings.archive, outside_home=outside)
        try:
            cluster.create()
            cluster.start()
        except SandboxDatabaseError as exc:
            cluster.stop()
            reason = str(exc)
        else:
            database = SandboxDatabase(
                "cluster",
                "127.0.0.1",
                port,
                DATABASE_NAME,
                RoleNames(),
                cluster.admin_conninfo(DATABASE_NAME),
                tls=settings.tls,
                cluster=cluster,
            )
            _create_roles_and_database(cluster.admin_conninfo(), database, settings)
            return database
    log(f"note: no own PostgreSQL cluster ({reason}); using the shared server with a per-instance database")
    return _create_on_shared_server(settings, tag)


def _create_on_shared_server(settings: DatabaseSettings, tag: str) -> SandboxDatabase:
    server = os.environ.get("DATABASE_URL") or SHARED_SERVER_DSN
    try:
        info = psycopg.conninfo.conninfo_to_dict(server)
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise SandboxDatabaseError(
            f"no PostgreSQL for the sandbox: cannot create a cluster and {_mask(server)} is unreachable"
            f" ({' '.join(str(exc).split())[:160]}) — install PostgreSQL server binaries or set DATABASE_URL"
        ) from None
    tag = re.sub(r"[^a-z0-9_]", "_", tag.lower())[:30]
    dbname = f"recsys_sandbox_{tag}"
    admin = psycopg.conninfo.make_conninfo(server, dbname=dbname)
    database = SandboxDatabase(
        "shared",
        str(info.get("host") or "127.0.0.1"),
        int(info.get("port") or 5432),
        dbname,
        RoleNames.suffixed(tag),
        admin,
        tls=False,  # the shared server's TLS is not ours to configure
        server_admin_conninfo=server,
    )
    database.drop()  # leftovers of an earlier run with the same tag
    _create_roles_and_database(server, database, settings)
    return database


def _mask(dsn: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", dsn)


def _create_roles_and_database(server_conninfo: str, database: SandboxDatabase, settings: DatabaseSettings) -> None:
    roles = database.roles
    database.passwords = {name: secrets.token_urlsafe(24) for name in (roles.owner, roles.service, roles.auditor)}
    owner = roles.service if settings.service_role_superuser else roles.owner
    with psycopg.connect(server_conninfo, autocommit=True, connect_timeout=10) as conn:
        for role in (roles.owner, roles.service, roles.auditor):
            superuser = role == roles.service and settings.service_role_superuser
            attributes = sql.SQL("LOGIN SUPERUSER" if superuser else "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
            conn.execute(
                sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(
                    sql.Identifier(role), attributes, sql.Literal(database.passwords[role])
                )
            )
        # pg_read_all_data: SELECT on every table and sequence, also those created later (monthly partitions), which
        # is what pg_dump needs for the restore drill; row-level security still applies (policy audit_read).
        conn.execute(
            sql.SQL("GRANT pg_monitor, pg_read_all_stats, pg_read_all_data TO {}").format(sql.Identifier(roles.auditor))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(database.dbname), sql.Identifier(owner)
            )
        )
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database.dbname)))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}, {}").format(
                sql.Identifier(database.dbname),
                sql.Identifier(roles.owner),
                sql.Identifier(roles.service),
                sql.Identifier(roles.auditor),
            )
        )


def install_schema(database: SandboxDatabase, settings: DatabaseSettings) -> None:
    """Migrations as the owner, then grants, partitions and row-level security as the profile asks."""
    roles = database.roles
    owner = roles.service if settings.service_role_superuser else roles.owner
    with database.connect() as conn:
        apply_migrations(conn, owner, failed=settings.failed_migration, pending=settings.pending_migration)
        grant_privileges(conn, roles)
        if settings.monthly_partitions:
            create_monthly_partitions(conn, owner)


def grant_privileges(conn: psycopg.Connection[Any], roles: RoleNames) -> None:
    service, auditor = sql.Identifier(roles.service), sql.Identifier(roles.auditor)
    statements = [
        sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}, {}").format(service, auditor),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(service),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(service),
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(auditor),
    ]
    for statement in statements:
        conn.execute(statement)


def create_monthly_partitions(conn: psycopg.Connection[Any], owner: str) -> None:
    """Partitions for the current and the next month (as the owner, so they belong to it)."""
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
        for table in PARTITIONED_TABLES:
            conn.execute("SELECT ensure_monthly_partitions(%s::regclass, current_date, 2)", (table,))


def enable_row_level_security(conn: psycopg.Connection[Any], roles: RoleNames) -> None:
    """ENABLE + FORCE RLS with a tenant policy on every tenant table, and a SELECT-only policy for the auditor."""
    for table in TENANT_TABLES:
        name = sql.Identifier(table)
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(name))
        conn.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(name))
        conn.execute(
            sql.SQL(
                "CREATE POLICY tenant_isolation ON {} USING (tenant_id::text = current_setting('app.tenant_id', true))"
                " WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true))"
            ).format(name)
        )
        conn.execute(
            sql.SQL("CREATE POLICY audit_read ON {} FOR SELECT TO {} USING (true)").format(
                name, sql.Identifier(roles.auditor)
            )
        )


def archive_recent_wal(conn: psycopg.Connection[Any], timeout_s: float = 10) -> bool:
    """Force a WAL segment switch and wait until the archiver reports it; False when it did not in time."""
    before = conn.execute("SELECT archived_count FROM pg_stat_archiver").fetchone()[0]
    conn.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if conn.execute("SELECT archived_count FROM pg_stat_archiver").fetchone()[0] > before:
            return True
        time.sleep(0.1)
    return False


def setup_database(
    instance_dir: Path, port: int, settings: DatabaseSettings, tag: str, log: Any = print
) -> SandboxDatabase:
    """Cluster (or shared-server database), roles and schema; seeding and :func:`finish_database` come after."""
    database = create_database(instance_dir, port, settings, tag, log)
    try:
        install_schema(database, settings)
    except (psycopg.Error, OSError) as exc:
        stop_database(database)
        raise SandboxDatabaseError(f"schema setup failed: {' '.join(str(exc).split())[:300]}") from None
    return database


def finish_database(database: SandboxDatabase, settings: DatabaseSettings) -> None:
    """After seeding: row-level security, fresh statistics, and one archived WAL segment."""
    with database.connect() as conn:
        if settings.rls:
            enable_row_level_security(conn, database.roles)
        conn.execute("ANALYZE")
        if settings.archive and database.cluster is not None:
            archive_recent_wal(conn)


def stop_database(database: SandboxDatabase) -> None:
    if database.cluster is not None:
        database.cluster.stop()
    else:
        database.drop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_audit.sandbox.database")
    parser.add_argument("--write-schema", action="store_true", help="regenerate schema.sql from migrations/")
    args = parser.parse_args(argv)
    if args.write_schema:
        SCHEMA_FILE.write_text(render_schema_sql(), encoding="utf-8")
        print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
