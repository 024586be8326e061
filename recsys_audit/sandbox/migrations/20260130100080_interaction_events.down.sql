-- Down migration for 20260130100080_interaction_events.up.sql.
DROP TABLE IF EXISTS interaction_events;
