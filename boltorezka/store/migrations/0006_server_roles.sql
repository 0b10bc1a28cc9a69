-- Server-wide roles beside the per-room ones: 'admin' (every operator action) or
-- 'moderator' (reads users, rooms and the audit log); NULL for everyone else. The values
-- are checked by the admin service, not by a constraint: a new constraint on users would
-- refuse writes of the previous release during a rolling upgrade. Accounts are disabled
-- through users.disabled_at, which the first schema already has.
ALTER TABLE users ADD COLUMN server_role text;

-- The operators' user list: username prefix search, and pages newest first.
CREATE INDEX users_username_prefix_idx ON users (lower(username) text_pattern_ops);
CREATE INDEX users_created_idx ON users (created_at DESC, id DESC);

-- The audit log read by time range.
CREATE INDEX audit_log_at_idx ON audit_log (at DESC);
