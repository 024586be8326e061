-- Down migration for 20260130100000_extensions.up.sql.
DROP EXTENSION IF EXISTS pgcrypto;
