-- When a code issued to a client was last redeemed (kept to the day), so that registrations nobody uses
-- can be told from those in use and deleted. Clients registered before this column are taken as used
-- when they registered: only registrations made from now on can count as never used.
ALTER TABLE clients ADD COLUMN used_at BIGINT;
UPDATE clients SET used_at = created_at;
CREATE INDEX clients_used_at ON clients (used_at);
