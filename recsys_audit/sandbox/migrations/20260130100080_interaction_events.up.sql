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
