-- The hash of the token that replaced a rotated refresh token. A retried or concurrent
-- refresh that presents the token just rotated, within the grace window, gets that same
-- successor back (recomputed from the presented token, never stored in plaintext) instead
-- of being taken for theft; a NULL here (rows rotated before this migration) still counts
-- as reuse.
ALTER TABLE refresh_tokens ADD COLUMN successor_hash bytea;
