-- Initial schema: the tables of the SQLite schema in PostgreSQL types. JSON is kept as TEXT there too: it
-- reads back byte for byte as it was written, and one SQL text serves both backends (cast to jsonb to query it).
-- Every *_hash column holds the lowercase hex SHA-256 of a secret the store never sees.

CREATE TABLE clients (
    client_id   TEXT NOT NULL PRIMARY KEY,
    secret_hash TEXT,
    metadata    TEXT NOT NULL,              -- JSON, exactly as registered
    source      TEXT NOT NULL,              -- dynamic | configured | metadata_document
    created_at  BIGINT NOT NULL
);
CREATE INDEX clients_created_at ON clients (created_at);

CREATE TABLE users (
    username      TEXT NOT NULL PRIMARY KEY,
    subject       TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,            -- argon2 PHC string
    created_at    BIGINT NOT NULL
);

CREATE TABLE consents (
    subject    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (subject, client_id)
);
CREATE INDEX consents_client_id ON consents (client_id);

CREATE TABLE pending (
    id_hash    TEXT NOT NULL PRIMARY KEY,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,               -- JSON
    expires_at BIGINT NOT NULL
);
CREATE INDEX pending_expires_at ON pending (expires_at);

CREATE TABLE codes (
    code_hash      TEXT NOT NULL PRIMARY KEY,
    client_id      TEXT NOT NULL,
    subject        TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    resource       TEXT NOT NULL,
    scope          TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    nonce          TEXT,
    auth_time      BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    family_id      TEXT NOT NULL,
    redeemed_at    BIGINT                   -- set once; the row stays as a tombstone to detect replays
);
CREATE INDEX codes_expires_at ON codes (expires_at);

-- Revocation is a property of the family, so a token stored into a revoked family is born revoked.
CREATE TABLE refresh_families (
    family_id  TEXT NOT NULL PRIMARY KEY,
    client_id  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE,
    expires_at BIGINT NOT NULL              -- the latest expiry of anything that refers to the family
);
CREATE INDEX refresh_families_client_id ON refresh_families (client_id);
CREATE INDEX refresh_families_subject ON refresh_families (subject);
CREATE INDEX refresh_families_expires_at ON refresh_families (expires_at);

CREATE TABLE refresh_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    family_id  TEXT NOT NULL REFERENCES refresh_families (family_id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    resource   TEXT NOT NULL,
    scope      TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    rotated_at BIGINT                       -- set once; a rotated token presented again is a replay
);
CREATE INDEX refresh_tokens_family_id ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE signing_keys (
    kid            TEXT NOT NULL PRIMARY KEY,
    alg            TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,           -- JSON
    private_sealed BYTEA NOT NULL,          -- encrypted with the operator's key
    created_at     BIGINT NOT NULL,
    not_before     BIGINT NOT NULL,
    retired_at     BIGINT
);

CREATE TABLE upstream_tokens (
    subject    TEXT NOT NULL,
    provider   TEXT NOT NULL,
    sealed     BYTEA NOT NULL,              -- encrypted with the operator's key
    expires_at BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (subject, provider)
);
