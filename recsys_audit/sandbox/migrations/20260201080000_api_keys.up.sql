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
