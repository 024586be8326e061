-- recsys schema for the sandbox: generated from migrations/*.up.sql, do not edit by hand.
-- Regenerate with: python -m recsys_audit.sandbox.database --write-schema

-- 20260130100000_extensions.up.sql
-- Extensions: gen_random_uuid(), digest(), hmac().
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- 20260130100010_types.up.sql
-- Enumerated types.
CREATE TYPE tenant_status AS ENUM ('active', 'suspended', 'deleted');
CREATE TYPE api_client_status AS ENUM ('active', 'revoked');
CREATE TYPE cache_invalidation_status AS ENUM ('requested', 'applied', 'failed');
CREATE TYPE interaction_type AS ENUM ('impression', 'click', 'add_to_cart', 'purchase', 'view');

-- 20260130100020_util.up.sql
-- Trigger functions: keep updated_at current; refuse changes to append-only rows.
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE FUNCTION prevent_update_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: rows are immutable', TG_OP, TG_TABLE_NAME
        USING ERRCODE = '0A000';
END;
$$;

-- 20260130100030_tenants.up.sql
-- Tenants; external_id is the tenant claim / header value.
CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    external_id text NOT NULL UNIQUE,
    name        text NOT NULL,
    status      tenant_status NOT NULL DEFAULT 'active',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER tenants_set_updated_at BEFORE UPDATE ON tenants
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- 20260130100040_config_rules.up.sql
-- Tenant config and rules: append-only versions keyed by a content etag, plus one current pointer per tenant.
CREATE TABLE tenant_config_versions (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    config         jsonb NOT NULL,
    etag           text GENERATED ALWAYS AS (encode(sha256(config::text::bytea), 'hex')) STORED,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by_sub text NOT NULL,
    comment        text,
    UNIQUE (tenant_id, etag)
);
CREATE INDEX tenant_config_versions_tenant_created_idx ON tenant_config_versions (tenant_id, created_at DESC);
CREATE INDEX tenant_config_versions_config_gin ON tenant_config_versions USING gin (config);
CREATE TRIGGER tenant_config_versions_immutable_ud BEFORE UPDATE OR DELETE ON tenant_config_versions
    FOR EACH ROW EXECUTE FUNCTION prevent_update_delete();

CREATE TABLE tenant_configs_current (
    tenant_id         uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE RESTRICT,
    config_version_id uuid NOT NULL REFERENCES tenant_config_versions (id) ON DELETE RESTRICT,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by_sub    text NOT NULL
);
CREATE TRIGGER tenant_configs_current_set_updated_at BEFORE UPDATE ON tenant_configs_current
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE tenant_rule_versions (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    rules          jsonb NOT NULL,
    etag           text GENERATED ALWAYS AS (encode(sha256(rules::text::bytea), 'hex')) STORED,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by_sub text NOT NULL,
    comment        text,
    UNIQUE (tenant_id, etag)
);
CREATE INDEX tenant_rule_versions_tenant_created_idx ON tenant_rule_versions (tenant_id, created_at DESC);
CREATE INDEX tenant_rule_versions_rules_gin ON tenant_rule_versions USING gin (rules);
CREATE TRIGGER tenant_rule_versions_immutable_ud BEFORE UPDATE OR DELETE ON tenant_rule_versions
    FOR EACH ROW EXECUTE FUNCTION prevent_update_delete();

CREATE TABLE tenant_rules_current (
    tenant_id        uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE RESTRICT,
    rules_version_id uuid NOT NULL REFERENCES tenant_rule_versions (id) ON DELETE RESTRICT,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    updated_by_sub   text NOT NULL
);
CREATE TRIGGER tenant_rules_current_set_updated_at BEFORE UPDATE ON tenant_rules_current
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- 20260130100050_audit_log.up.sql
-- Database audit trail of admin changes; rows are immutable.
CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    tenant_id    uuid REFERENCES tenants (id) ON DELETE SET NULL,
    actor_sub    text,
    actor_type   text,
    action       text NOT NULL,
    entity_type  text,
    entity_id    text,
    request_id   uuid,
    ip           inet,
    user_agent   text,
    before_state jsonb,
    after_state  jsonb,
    extra        jsonb
);
CREATE INDEX audit_log_tenant_time_idx ON audit_log (tenant_id, occurred_at DESC);
CREATE INDEX audit_log_action_time_idx ON audit_log (action, occurred_at DESC);
CREATE INDEX audit_log_request_id_idx ON audit_log (request_id);
CREATE TRIGGER audit_log_immutable_ud BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION prevent_update_delete();

-- 20260130100060_cache_invalidation.up.sql
-- Record of admin cache invalidations.
CREATE TABLE cache_invalidation_events (
    id               bigserial PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    request_id       uuid,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    requested_by_sub text NOT NULL,
    targets          text[] NOT NULL,
    surface          text,
    status           cache_invalidation_status NOT NULL DEFAULT 'requested',
    applied_at       timestamptz,
    applied_by       text,
    error_detail     text
);
CREATE INDEX cache_invalidation_tenant_time_idx ON cache_invalidation_events (tenant_id, requested_at DESC);
CREATE INDEX cache_invalidation_status_idx ON cache_invalidation_events (status);

-- 20260130100070_exposure_events.up.sql
-- What was shown: one row per recommendation response, range-partitioned by time.
CREATE TABLE exposure_events (
    id                 bigserial,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    occurred_at        timestamptz NOT NULL DEFAULT now(),
    request_id         uuid NOT NULL,
    surface            text NOT NULL,
    segment            text NOT NULL,
    user_key           bytea,
    session_id         text,
    experiment_id      text,
    experiment_variant text,
    algo_version       text NOT NULL,
    config_etag        text,
    rules_etag         text,
    request            jsonb NOT NULL,
    response           jsonb NOT NULL,
    meta               jsonb,
    PRIMARY KEY (occurred_at, id)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE exposure_events_default PARTITION OF exposure_events DEFAULT;
CREATE INDEX exposure_events_tenant_time_idx ON exposure_events (tenant_id, occurred_at DESC);
CREATE INDEX exposure_events_req_idx ON exposure_events (request_id);
CREATE INDEX exposure_events_surface_time_idx ON exposure_events (tenant_id, surface, occurred_at DESC);
CREATE INDEX exposure_events_user_time_idx ON exposure_events (tenant_id, user_key, occurred_at DESC)
    WHERE user_key IS NOT NULL;
CREATE INDEX exposure_events_request_gin ON exposure_events USING gin (request);
CREATE INDEX exposure_events_response_gin ON exposure_events USING gin (response);

-- 20260130100080_interaction_events.up.sql
-- What users did with recommended items, range-partitioned by time.
CREATE TABLE interaction_events (
    id          bigserial,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    request_id  uuid,
    user_key    bytea,
    session_id  text,
    surface     text,
    segment     text,
    event_type  interaction_type NOT NULL,
    item_id     text NOT NULL,
    position    int,
    value       numeric(18, 6),
    meta        jsonb,
    PRIMARY KEY (occurred_at, id)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE interaction_events_default PARTITION OF interaction_events DEFAULT;
CREATE INDEX interaction_events_tenant_time_idx ON interaction_events (tenant_id, occurred_at DESC);
CREATE INDEX interaction_events_req_idx ON interaction_events (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX interaction_events_user_time_idx ON interaction_events (tenant_id, user_key, occurred_at DESC)
    WHERE user_key IS NOT NULL;
CREATE INDEX interaction_events_item_time_idx ON interaction_events (tenant_id, item_id, occurred_at DESC);
CREATE INDEX interaction_events_meta_gin ON interaction_events USING gin (meta);

-- 20260130100090_partition_helpers.up.sql
-- ensure_monthly_partitions(parent, start_month, months_ahead): create missing <parent>_<YYYY_MM> partitions
-- covering [month start, next month start) in the session time zone; returns how many it created.
CREATE FUNCTION ensure_monthly_partitions(parent regclass, start_month date, months_ahead int)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    base_name   text := replace(parent::text, '.', '_');
    month_start timestamptz;
    month_end   timestamptz;
    part_name   text;
    created     int := 0;
BEGIN
    IF months_ahead < 1 THEN
        RAISE EXCEPTION 'months_ahead must be at least 1, got %', months_ahead;
    END IF;
    FOR i IN 0 .. months_ahead - 1 LOOP
        month_start := date_trunc('month', start_month::timestamptz) + make_interval(months => i);
        month_end := month_start + interval '1 month';
        part_name := base_name || '_' || to_char(month_start, 'YYYY_MM');
        IF to_regclass(part_name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           part_name, parent, month_start, month_end);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

-- 20260130100100_optional_rls.up.sql
-- Row-level security is optional and not enabled by the migrations. To isolate tenants in the database, enable it
-- per tenant table with a policy comparing tenant_id::text to the app.tenant_id setting, for example:
--   ALTER TABLE <table> ENABLE ROW LEVEL SECURITY;
--   ALTER TABLE <table> FORCE ROW LEVEL SECURITY;
--   CREATE POLICY tenant_isolation ON <table>
--       USING (tenant_id::text = current_setting('app.tenant_id', true));

-- 20260130100110_signal_tables.up.sql
-- Signals for DB-only serving; namespace is the surface.
CREATE TABLE item_tags (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    namespace  text NOT NULL DEFAULT 'default',
    item_id    text NOT NULL,
    tags       text[] NOT NULL DEFAULT '{}',
    price      numeric(18, 6),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, namespace, item_id)
);
CREATE INDEX item_tags_tags_gin ON item_tags USING gin (tags);
CREATE INDEX item_tags_tenant_ns_created_idx ON item_tags (tenant_id, namespace, created_at DESC);
CREATE TRIGGER item_tags_set_updated_at BEFORE UPDATE ON item_tags
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE item_popularity_daily (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    namespace  text NOT NULL DEFAULT 'default',
    item_id    text NOT NULL,
    day        date NOT NULL,
    score      numeric(18, 6) NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, namespace, item_id, day)
);
CREATE INDEX item_popularity_daily_tenant_ns_day_idx ON item_popularity_daily (tenant_id, namespace, day DESC);
CREATE INDEX item_popularity_daily_tenant_item_day_idx ON item_popularity_daily (tenant_id, item_id, day DESC);
CREATE TRIGGER item_popularity_daily_set_updated_at BEFORE UPDATE ON item_popularity_daily
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- 20260130100120_item_covisit_daily.up.sql
-- Co-visitation signal: how often two items were seen together per day.
CREATE TABLE item_covisit_daily (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    namespace   text NOT NULL DEFAULT 'default',
    item_id     text NOT NULL,
    neighbor_id text NOT NULL,
    day         date NOT NULL,
    score       numeric(18, 6) NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, namespace, item_id, neighbor_id, day)
);
CREATE INDEX item_covisit_daily_tenant_item_day_idx ON item_covisit_daily (tenant_id, namespace, item_id, day DESC);
CREATE INDEX item_covisit_daily_tenant_neighbor_day_idx
    ON item_covisit_daily (tenant_id, namespace, neighbor_id, day DESC);
CREATE TRIGGER item_covisit_daily_set_updated_at BEFORE UPDATE ON item_covisit_daily
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- 20260201080000_api_keys.up.sql
-- API keys: only an HMAC-SHA256 (or SHA-256) hash of the key is stored.
CREATE TABLE tenant_api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    name         text,
    key_prefix   text,
    key_hash     text NOT NULL UNIQUE,
    roles        text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX tenant_api_keys_tenant_idx ON tenant_api_keys (tenant_id);
CREATE INDEX tenant_api_keys_active_idx ON tenant_api_keys (tenant_id) WHERE revoked_at IS NULL;

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    bigint PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    exec_ms    int NOT NULL DEFAULT 0,
    success    boolean NOT NULL DEFAULT true
);

INSERT INTO schema_migrations (version, name, checksum, applied_at, exec_ms, success) VALUES
    (20260130100000, 'extensions', 'f61862f25ba09c1b5678eac57c105cb1b37ba959e8ba5b10912272531f53e5b2', now(), 0, true),
    (20260130100010, 'types', '81754678ec3ed2a44fcc8695917b6ad2309550d5700de6ae8d95aa0799618ae6', now(), 0, true),
    (20260130100020, 'util', 'cc4d7bd66bc36f2b973fee17b5cebdce1766819004cdee782ed58ecc3d7ca38c', now(), 0, true),
    (20260130100030, 'tenants', 'bd61dc2e20bdd25f4e00281926de49e74710681fa7e7c07656f3a92281538063', now(), 0, true),
    (20260130100040, 'config_rules', '9991433ab2eaf6f6c6e66b0e15a9046c0fbf6c53f289f6b03de65f99cb89a1ae', now(), 0, true),
    (20260130100050, 'audit_log', '08fdbcb0b5176821fa28cf600674075e700cc179e94085aa0d40428037725451', now(), 0, true),
    (20260130100060, 'cache_invalidation', 'ba413ce0798abb39fcb4a4af9476d842fed5296cc4e1cd25abec46c11c3de085', now(), 0, true),
    (20260130100070, 'exposure_events', '94efd1dd6dca778776cb28c1875b8dfb38ccb4126633cfef75e40be7440448ab', now(), 0, true),
    (20260130100080, 'interaction_events', 'c455689bda1ca820fdf3f5a54a345226e9849090b6119ecbbe909d34a8b5812e', now(), 0, true),
    (20260130100090, 'partition_helpers', 'd6292b0a6e0ca1d7e312018c28b99f294ea0fe21fd27fdc14d2376a5ee1dbcb8', now(), 0, true),
    (20260130100100, 'optional_rls', 'dabf1cf968b36a2c0a2be2a5da1d1554d3089845acfbf5d1bec4b30c1d33f527', now(), 0, true),
    (20260130100110, 'signal_tables', '9278470b0b2f6c6314a7f7aae4ea38e12251bc19c43963926b284da1740ed2e2', now(), 0, true),
    (20260130100120, 'item_covisit_daily', '48fb97b23ff6feacd612c72c397401327731c28fdea7aed2229c86189a86804c', now(), 0, true),
    (20260201080000, 'api_keys', '5011eb24555299c9e4d587e0f34adaeb5ee1cdc1cfa32a9b323d02e8a81acf70', now(), 0, true);
