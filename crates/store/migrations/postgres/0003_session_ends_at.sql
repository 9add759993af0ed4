-- When the sign-in a refresh token descends from ends, whatever its rotations: no token of the family
-- expires later. NULL for tokens stored before this column (their next rotation sets it).
ALTER TABLE refresh_tokens ADD COLUMN session_ends_at BIGINT;
