-- API keys (package auth/apikey). A key is "cpk_<prefix>_<secret>"; only the
-- prefix is kept in clear, to list and revoke keys by; hash is the SHA-256
-- of the whole key (256 random bits: a fast hash is enough, see
-- auth/apikey/key.go). The prefix is unique across tenants: a key names its
-- tenant, the caller does not.
--
-- Numbered 003: 002 is taken by a migration written alongside this one.
-- Migrate skips versions below the highest applied, so a number must never
-- be lower than one a database may already have run.

CREATE TABLE api_keys (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix       text        NOT NULL UNIQUE CHECK (prefix ~ '^[a-z2-7]{8}$'),
    hash         bytea       NOT NULL CHECK (length(hash) = 32),
    tenant       text        NOT NULL,
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz,          -- NULL: never
    revoked_at   timestamptz,          -- NULL: in force
    last_used_at timestamptz           -- updated at most once per cache TTL
);

CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);
