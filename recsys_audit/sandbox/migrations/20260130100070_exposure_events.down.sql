-- Down migration for 20260130100070_exposure_events.up.sql.
DROP TABLE IF EXISTS exposure_events;
