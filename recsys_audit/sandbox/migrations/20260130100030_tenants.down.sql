-- Down migration for 20260130100030_tenants.up.sql.
DROP TABLE IF EXISTS tenants;
