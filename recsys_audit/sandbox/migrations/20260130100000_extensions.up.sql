-- Extensions: gen_random_uuid(), digest(), hmac().
CREATE EXTENSION IF NOT EXISTS pgcrypto;
