-- Failed sign-in attempts per key (an account, an address), shared by every replica.
CREATE TABLE failures (
    key         TEXT NOT NULL PRIMARY KEY,
    count       BIGINT NOT NULL,
    last_at     BIGINT NOT NULL,
    window_ends BIGINT NOT NULL
);
CREATE INDEX failures_window_ends ON failures (window_ends);

-- One row, rewritten by the health probe: proves the store can be written.
CREATE TABLE probe (
    id        BIGINT NOT NULL PRIMARY KEY,
    probed_at BIGINT NOT NULL
);
