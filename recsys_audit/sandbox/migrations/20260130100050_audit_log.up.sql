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
