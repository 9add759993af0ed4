-- Failed sign-in attempts per key (an account, an address), shared by every instance on this store.
CREATE TABLE failures (
    key         TEXT NOT NULL PRIMARY KEY,
    count       INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    window_ends INTEGER NOT NULL
) STRICT;
CREATE INDEX failures_window_ends ON failures (window_ends);

-- One row, rewritten by the health probe: proves the store can be written.
CREATE TABLE probe (
    id        INTEGER NOT NULL PRIMARY KEY,
    probed_at INTEGER NOT NULL
) STRICT;
