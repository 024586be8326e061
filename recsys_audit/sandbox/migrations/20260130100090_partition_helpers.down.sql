-- Down migration for 20260130100090_partition_helpers.up.sql.
DROP FUNCTION IF EXISTS ensure_monthly_partitions;
