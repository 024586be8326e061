-- Down migration for 20260130100120_item_covisit_daily.up.sql.
DROP TABLE IF EXISTS item_covisit_daily;
