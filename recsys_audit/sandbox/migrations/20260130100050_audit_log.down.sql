-- Down migration for 20260130100050_audit_log.up.sql.
DROP TABLE IF EXISTS audit_log;
