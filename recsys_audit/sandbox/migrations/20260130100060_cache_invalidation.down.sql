-- Down migration for 20260130100060_cache_invalidation.up.sql.
DROP TABLE IF EXISTS cache_invalidation_events;
