-- When a code issued to a client was last redeemed (kept to the day), so that registrations nobody uses
-- can be told from those in use and deleted. Clients registered before this column count as used now,
-- at the migration: whether they were used before is not known, and none may look idle for longer than
-- it has been watched.
ALTER TABLE clients ADD COLUMN used_at INTEGER;
UPDATE clients SET used_at = CAST(strftime('%s', 'now') AS INTEGER);
CREATE INDEX clients_used_at ON clients (used_at);
