-- Down migration for 20260130100110_signal_tables.up.sql.
DROP TABLE IF EXISTS item_popularity_daily;
DROP TABLE IF EXISTS item_tags;
