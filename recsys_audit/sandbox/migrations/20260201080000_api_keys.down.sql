-- Down migration for 20260201080000_api_keys.up.sql.
DROP TABLE IF EXISTS tenant_api_keys;
