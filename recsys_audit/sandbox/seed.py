"""Sandbox data: tenants, config/rules history, API keys, signals and events.

``python -m recsys_audit.sandbox.seed DSN [--rows N] [--interactions M]`` seeds a database that already has the
schema. Events are generated inside PostgreSQL (``INSERT … SELECT generate_series``); from
:data:`BULK_THRESHOLD` rows on, the target partition is detached and stripped of its indexes for the load and
attached again afterwards, so its indexes are built once in bulk instead of row by row (10 million exposure rows
load in a few minutes, see ``benchmarks/bench_seed.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

# external id -> (display name, surfaces)
TENANTS: dict[str, tuple[str, list[str]]] = {"demo": ("Demo Shop", ["home", "pdp"]), "beta": ("Beta Store", ["home"])}
ITEMS_PER_TENANT = 40
SIGNAL_DAYS = 7
STALE_SIGNAL_AGE_DAYS = 21
BULK_THRESHOLD = 200_000
DEFAULT_EXPOSURE_ROWS = 200
DEFAULT_INTERACTION_ROWS = 400


@dataclass(frozen=True)
class SeedOptions:
    api_key_hash_secret: str = ""  # the service's API_KEY_HASH_SECRET ("" = plain SHA-256, as the service does)
    subject_hash_salt: str = "sandbox-subject-salt"  # keys user_key hashing in the event tables
    pii_unhashed: bool = False  # user_key holds the raw e-mail address
    stale_signals: bool = False  # signal rows are weeks old
    long_lived_key: bool = False  # an active API key with no expiry, older than 90 days
    operator_key: bool = False  # an active, expiring operator key (the audit's operator credential, hardened)
    exposure_rows: int = DEFAULT_EXPOSURE_ROWS
    interaction_rows: int = DEFAULT_INTERACTION_ROWS


@dataclass
class SeedResult:
    tenant_ids: dict[str, str] = field(default_factory=dict)  # external id -> uuid
    api_keys: dict[str, str] = field(default_factory=dict)  # key name -> raw key (only the hash is stored)
    config_etags: dict[str, str] = field(default_factory=dict)
    rules_etags: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


def api_key_hash(raw_key: str, secret: str) -> str:
    """What the service stores and looks up: hex HMAC-SHA256 keyed by the secret, or SHA-256 without one."""
    message = raw_key.strip().encode("utf-8")
    if secret:
        return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def seed(conn: psycopg.Connection[Any], options: SeedOptions = SeedOptions()) -> SeedResult:
    """Seed everything; ``conn`` must bypass row-level security (superuser or table owner before RLS is on)."""
    result = SeedResult()
    started = time.perf_counter()
    with conn.transaction():
        for external_id, (name, _) in TENANTS.items():
            row = conn.execute(
                "INSERT INTO tenants (external_id, name, created_at) VALUES (%s, %s, now() - interval '120 days')"
                " RETURNING id",
                (external_id, name),
            ).fetchone()
            result.tenant_ids[external_id] = str(row[0])
        for external_id, tenant_id in result.tenant_ids.items():
            _seed_config_history(conn, external_id, tenant_id, result)
            _seed_signals(conn, tenant_id, TENANTS[external_id][1], options)
        _seed_api_keys(conn, result.tenant_ids["demo"], options, result)
        _seed_cache_invalidation(conn, result.tenant_ids["demo"])
    result.timings_s["reference_data"] = time.perf_counter() - started
    started = time.perf_counter()
    seed_exposures(conn, options.exposure_rows, options)
    result.timings_s["exposure_events"] = time.perf_counter() - started
    started = time.perf_counter()
    seed_interactions(conn, options.interaction_rows, options)
    result.timings_s["interaction_events"] = time.perf_counter() - started
    return result


# --- reference data ----------------------------------------------------------------------------------------------


def _config_documents(external_id: str) -> list[tuple[dict[str, Any], dict[str, Any], int]]:
    """(config, rules, age in days) per version, oldest first."""
    return [
        (
            {"weights": {"pop": 1.0, "cooc": 0.0, "emb": 0.0}, "limits": {"max_k": 50}},
            {"pins": [], "blocks": []},
            30,
        ),
        (
            {
                "weights": {"pop": 0.6, "cooc": 0.4, "emb": 0.0},
                "limits": {"max_k": 100, "max_exclude_ids": 1000},
                "fallback": {"surface": "home"},
            },
            {
                "pins": [{"surface": "home", "item_id": "item-0001", "position": 1}],
                "blocks": [f"{external_id}-recalled"],
            },
            3,
        ),
    ]


def _seed_config_history(conn: psycopg.Connection[Any], external_id: str, tenant_id: str, result: SeedResult) -> None:
    previous: dict[str, tuple[str, Any] | None] = {"config": None, "rules": None}
    for version, (config, rules, age_days) in enumerate(_config_documents(external_id), start=1):
        actor = "ops-alice" if version == 1 else "ops-bob"
        at = f"{age_days} days"
        for kind, document in (("config", config), ("rules", rules)):
            table = "tenant_config_versions" if kind == "config" else "tenant_rule_versions"
            current = "tenant_configs_current" if kind == "config" else "tenant_rules_current"
            pointer = "config_version_id" if kind == "config" else "rules_version_id"
            version_id, etag = conn.execute(
                sql.SQL(
                    "INSERT INTO {} (tenant_id, {}, created_at, created_by_sub, comment)"
                    " VALUES (%s, %s, now() - %s::interval, %s, %s) RETURNING id, etag"
                ).format(sql.Identifier(table), sql.Identifier(kind)),
                (tenant_id, json.dumps(document), at, actor, f"{kind} v{version}"),
            ).fetchone()
            conn.execute(
                sql.SQL(
                    "INSERT INTO {table} (tenant_id, {pointer}, updated_at, updated_by_sub)"
                    " VALUES (%s, %s, now() - %s::interval, %s)"
                    " ON CONFLICT (tenant_id) DO UPDATE SET {pointer} = EXCLUDED.{pointer},"
                    " updated_by_sub = EXCLUDED.updated_by_sub"
                ).format(table=sql.Identifier(current), pointer=sql.Identifier(pointer)),
                (tenant_id, version_id, at, actor),
            )
            before = previous[kind]
            conn.execute(
                "INSERT INTO audit_log (occurred_at, tenant_id, actor_sub, actor_type, action, entity_type, entity_id,"
                " request_id, ip, user_agent, before_state, after_state)"
                " VALUES (now() - %s::interval, %s, %s, 'user', %s, %s, %s, gen_random_uuid(), '10.0.4.17',"
                " 'recsys-admin-cli/1.4', %s, %s)",
                (
                    at,
                    tenant_id,
                    actor,
                    f"{kind}.update",
                    f"tenant_{kind}",
                    str(version_id),
                    json.dumps({"version": before[0], kind: before[1]}) if before else None,
                    json.dumps({"version": etag, kind: document}),
                ),
            )
            previous[kind] = (etag, document)
            (result.config_etags if kind == "config" else result.rules_etags)[external_id] = etag


def _seed_signals(conn: psycopg.Connection[Any], tenant_id: str, surfaces: list[str], options: SeedOptions) -> None:
    newest_age = STALE_SIGNAL_AGE_DAYS if options.stale_signals else 0
    for surface in surfaces:
        conn.execute(
            "INSERT INTO item_tags (tenant_id, namespace, item_id, tags, price, created_at, updated_at)"
            " SELECT %(t)s, %(s)s, format('item-%%s', lpad(i::text, 4, '0')),"
            " ARRAY[format('category-%%s', i %% 5), CASE WHEN i %% 7 = 0 THEN 'sale' ELSE 'regular' END],"
            " round((5 + i * 1.25)::numeric, 2), now() - make_interval(days => %(age)s + 60),"
            " now() - make_interval(days => %(age)s)"
            " FROM generate_series(1, %(n)s) i",
            {"t": tenant_id, "s": surface, "n": ITEMS_PER_TENANT, "age": newest_age},
        )
        conn.execute(
            "INSERT INTO item_popularity_daily (tenant_id, namespace, item_id, day, score, updated_at)"
            " SELECT %(t)s, %(s)s, format('item-%%s', lpad(i::text, 4, '0')), current_date - (%(age)s + d),"
            " round((1000.0 / i + d)::numeric, 6), now() - make_interval(days => %(age)s + d)"
            " FROM generate_series(1, %(n)s) i, generate_series(0, %(days)s - 1) d",
            {"t": tenant_id, "s": surface, "n": ITEMS_PER_TENANT, "age": newest_age, "days": SIGNAL_DAYS},
        )
        conn.execute(
            "INSERT INTO item_covisit_daily (tenant_id, namespace, item_id, neighbor_id, day, score, updated_at)"
            " SELECT %(t)s, %(s)s, format('item-%%s', lpad(i::text, 4, '0')),"
            " format('item-%%s', lpad((((i + j - 1) %% %(n)s) + 1)::text, 4, '0')), current_date - (%(age)s + d),"
            " round((10.0 / j)::numeric, 6), now() - make_interval(days => %(age)s + d)"
            " FROM generate_series(1, %(n)s) i, generate_series(1, 5) j, generate_series(0, %(days)s - 1) d",
            {"t": tenant_id, "s": surface, "n": ITEMS_PER_TENANT, "age": newest_age, "days": SIGNAL_DAYS},
        )


def _seed_api_keys(conn: psycopg.Connection[Any], tenant_id: str, options: SeedOptions, result: SeedResult) -> None:
    # name -> (roles, created days ago, expires in days (negative: expired; None: never), revoked days ago)
    keys: dict[str, tuple[list[str], int, int | None, int | None]] = {
        "active-viewer": (["viewer"], 10, 50, None),
        "revoked-viewer": (["viewer"], 40, 30, 20),
        "expired-viewer": (["viewer"], 80, -5, None),
    }
    if options.long_lived_key:
        keys["legacy-integration"] = (["operator"], 200, None, None)
    if options.operator_key:
        keys["active-operator"] = (["operator"], 5, 60, None)
    for name, (roles, created_days, expires_days, revoked_days) in keys.items():
        raw = "rsk_" + secrets.token_urlsafe(24)
        result.api_keys[name] = raw
        conn.execute(
            "INSERT INTO tenant_api_keys (tenant_id, name, key_hash, roles, created_at, expires_at, revoked_at)"
            " VALUES (%s, %s, %s, %s, now() - make_interval(days => %s),"
            " now() + make_interval(days => %s), now() - make_interval(days => %s))",
            (
                tenant_id,
                name,
                api_key_hash(raw, options.api_key_hash_secret),
                roles,
                created_days,
                expires_days,
                revoked_days,
            ),
        )


def _seed_cache_invalidation(conn: psycopg.Connection[Any], tenant_id: str) -> None:
    conn.execute(
        "INSERT INTO cache_invalidation_events (tenant_id, request_id, requested_at, requested_by_sub, targets,"
        " surface, status, applied_at, applied_by)"
        " VALUES (%s, gen_random_uuid(), now() - interval '3 days', 'ops-bob', ARRAY['config', 'rules'], 'home',"
        " 'applied', now() - interval '3 days', 'ops-bob')",
        (tenant_id,),
    )


# --- events ------------------------------------------------------------------------------------------------------

_TARGETS_CTE = """targets AS (
    SELECT (row_number() OVER (ORDER BY t.external_id, s.surface) - 1)::int AS slot, t.id AS tenant_id,
           s.surface, cfg.etag AS config_etag, rul.etag AS rules_etag
    FROM tenants t
    CROSS JOIN LATERAL unnest(CASE t.external_id WHEN 'demo' THEN ARRAY['home', 'pdp'] ELSE ARRAY['home'] END)
        AS s(surface)
    LEFT JOIN tenant_configs_current cc ON cc.tenant_id = t.id
    LEFT JOIN tenant_config_versions cfg ON cfg.id = cc.config_version_id
    LEFT JOIN tenant_rules_current rc ON rc.tenant_id = t.id
    LEFT JOIN tenant_rule_versions rul ON rul.id = rc.rules_version_id
), window_ AS (
    SELECT greatest(date_trunc('month', now()), now() - interval '14 days') AS since, now() AS until
), subjects AS (
    -- 5000 users and 20000 sessions, keyed once (hashing per row would dominate a bulk load)
    SELECT n,
           CASE WHEN %(pii)s THEN convert_to(format('shopper%%s@example.com', n %% 5000), 'UTF8')
                ELSE hmac(format('user-%%s', n %% 5000), %(salt)s, 'sha256') END AS user_key,
           CASE WHEN %(pii)s THEN format('session-%%s', n)
                ELSE encode(hmac(format('session-%%s', n), %(salt)s, 'sha256'), 'hex') END AS session_id
    FROM generate_series(0, 19999) n
)"""


EXPOSURE_INSERT = (
    "WITH "
    + _TARGETS_CTE
    + """
INSERT INTO {table} (id, tenant_id, occurred_at, request_id, surface, segment, user_key, session_id, experiment_id,
                     experiment_variant, algo_version, config_etag, rules_etag, request, response, meta)
SELECT nextval('exposure_events_id_seq'), tg.tenant_id,
       w.since + random() * (w.until - w.since),
       gen_random_uuid(), tg.surface, 'default', sj.user_key,
       sj.session_id,
       CASE WHEN g %% 2 = 0 THEN 'exp-home-ranking' END,
       CASE WHEN g %% 2 = 0 THEN (ARRAY['A', 'B'])[1 + g %% 4 / 2] END,
       'recsys-algo@local', tg.config_etag, tg.rules_etag,
       jsonb_build_object('surface', tg.surface, 'k', 3),
       jsonb_build_object('items', jsonb_build_array(
           jsonb_build_object('item_id', format('item-%%s', lpad((1 + g %% 40)::text, 4, '0')), 'rank', 1),
           jsonb_build_object('item_id', format('item-%%s', lpad((1 + (g + 7) %% 40)::text, 4, '0')), 'rank', 2),
           jsonb_build_object('item_id', format('item-%%s', lpad((1 + (g + 13) %% 40)::text, 4, '0')), 'rank', 3))),
       NULL
FROM generate_series(1, %(n)s) g
JOIN targets tg ON tg.slot = g %% (SELECT count(*) FROM targets)
JOIN subjects sj ON sj.n = g %% 20000
CROSS JOIN window_ w"""
)

INTERACTION_INSERT = (
    "WITH "
    + _TARGETS_CTE
    + """
INSERT INTO {table} (id, tenant_id, occurred_at, request_id, user_key, session_id, surface, segment, event_type,
                     item_id, position, value, meta)
SELECT nextval('interaction_events_id_seq'), tg.tenant_id,
       w.since + random() * (w.until - w.since),
       CASE WHEN g %% 3 = 0 THEN NULL ELSE gen_random_uuid() END, sj.user_key,
       sj.session_id,
       tg.surface, 'default',
       (ARRAY['impression', 'click', 'view', 'add_to_cart', 'purchase'])[1 + (g %% 10) / 2]::interaction_type,
       format('item-%%s', lpad((1 + g %% 40)::text, 4, '0')), 1 + g %% 3,
       CASE WHEN g %% 10 >= 8 THEN round((5 + g %% 40 * 1.25)::numeric, 2) END,
       jsonb_build_object('source', 'sandbox')
FROM generate_series(1, %(n)s) g
JOIN targets tg ON tg.slot = g %% (SELECT count(*) FROM targets)
JOIN subjects sj ON sj.n = g %% 20000
CROSS JOIN window_ w"""
)


def seed_exposures(conn: psycopg.Connection[Any], rows: int, options: SeedOptions) -> None:
    _insert_events(conn, "exposure_events", EXPOSURE_INSERT, rows, options)


def seed_interactions(conn: psycopg.Connection[Any], rows: int, options: SeedOptions) -> None:
    _insert_events(conn, "interaction_events", INTERACTION_INSERT, rows, options)


def _insert_events(conn: psycopg.Connection[Any], parent: str, template: str, rows: int, options: SeedOptions) -> None:
    if rows <= 0:
        return
    params = {"n": rows, "pii": options.pii_unhashed, "salt": options.subject_hash_salt}
    if rows < BULK_THRESHOLD:
        with conn.transaction():
            conn.execute(sql.SQL(template).format(table=sql.Identifier(parent)), params)
        return
    partition = _landing_partition(conn, parent)
    with conn.transaction():
        conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        conn.execute("SET LOCAL max_parallel_maintenance_workers = 2")
        bound = conn.execute(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = %s::regclass", (partition,)
        ).fetchone()[0]
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.Identifier(parent), sql.Identifier(partition))
        )
        _strip_indexes_and_keys(conn, partition)
        conn.execute(sql.SQL(template).format(table=sql.Identifier(partition)), params)
        # Attaching builds every index of the parent on the partition in bulk and re-validates keys and bounds.
        conn.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} {}").format(
                sql.Identifier(parent), sql.Identifier(partition), sql.SQL(bound)
            )
        )


def _landing_partition(conn: psycopg.Connection[Any], parent: str) -> str:
    """The partition that holds 'now': this month's partition if it exists, else the default partition."""
    row = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'"
        " AND c.relname = %s || '_' || to_char(now(), 'YYYY_MM')",
        (parent, parent),
    ).fetchone()
    return row[0] if row else f"{parent}_default"


def _strip_indexes_and_keys(conn: psycopg.Connection[Any], table: str) -> None:
    constraints = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('p', 'f', 'u')", (table,)
    ).fetchall()
    for (name,) in constraints:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(name)))
    indexes = conn.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass", (table,)
    ).fetchall()
    for (name,) in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))


def summary(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Estimated row counts of the seeded tables (catalog statistics after ANALYZE, exact for small tables)."""
    rows = conn.execute(
        "SELECT c.relname, greatest(c.reltuples, 0)::bigint FROM pg_class c"
        " WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p')",
        (["tenants", "tenant_api_keys", "item_popularity_daily", "exposure_events", "interaction_events"],),
    ).fetchall()
    return dict(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recsys_audit.sandbox.seed", description="seed a recsys database that already has the schema"
    )
    parser.add_argument("dsn", help="a superuser or owner connection (row-level security must not apply)")
    parser.add_argument("--rows", type=int, default=DEFAULT_EXPOSURE_ROWS, help="exposure_events rows")
    parser.add_argument("--interactions", type=int, default=DEFAULT_INTERACTION_ROWS, help="interaction_events rows")
    parser.add_argument("--hash-secret", default="", help="API_KEY_HASH_SECRET of the service")
    parser.add_argument("--stale-signals", action="store_true")
    parser.add_argument("--pii-unhashed", action="store_true")
    args = parser.parse_args(argv)
    options = SeedOptions(
        api_key_hash_secret=args.hash_secret,
        stale_signals=args.stale_signals,
        pii_unhashed=args.pii_unhashed,
        exposure_rows=args.rows,
        interaction_rows=args.interactions,
    )
    try:
        with psycopg.connect(args.dsn, autocommit=True, connect_timeout=10) as conn:
            result = seed(conn, options)
    except psycopg.Error as exc:
        parser.exit(1, f"seed failed: {' '.join(str(exc).split())[:300]}\n")
    timings = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in result.timings_s.items())
    print(f"seeded tenants {', '.join(result.tenant_ids)}; {args.rows} exposures, {args.interactions} interactions")
    print(f"timings: {timings}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
