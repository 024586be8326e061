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
