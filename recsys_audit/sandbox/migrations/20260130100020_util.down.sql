-- Down migration for 20260130100020_util.up.sql.
DROP FUNCTION IF EXISTS prevent_update_delete;
DROP FUNCTION IF EXISTS set_updated_at;
