-- Down migration for 20260130100010_types.up.sql.
DROP TYPE IF EXISTS interaction_type;
DROP TYPE IF EXISTS cache_invalidation_status;
DROP TYPE IF EXISTS api_client_status;
DROP TYPE IF EXISTS tenant_status;
