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
