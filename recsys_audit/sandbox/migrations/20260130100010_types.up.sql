-- Enumerated types.
CREATE TYPE tenant_status AS ENUM ('active', 'suspended', 'deleted');
CREATE TYPE api_client_status AS ENUM ('active', 'revoked');
CREATE TYPE cache_invalidation_status AS ENUM ('requested', 'applied', 'failed');
CREATE TYPE interaction_type AS ENUM ('impression', 'click', 'add_to_cart', 'purchase', 'view');
