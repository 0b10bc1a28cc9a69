-- Account self-service: deleted accounts, and one-time password reset tokens an operator
-- issues (there is no mail server to send a link).
--
-- A deleted account keeps its row, so its messages stay attributed (messages.sender_id
-- cascades on delete): the profile is erased, the username replaced by a tombstone that
-- frees the old one, and disabled_at set as well, so the release before this one, which
-- does not know deleted_at, treats the account as disabled: no login, no live session.
ALTER TABLE users ADD COLUMN deleted_at timestamptz;

-- Only the SHA-256 of a token is kept. A used token stays (used_at) so that presenting it
-- again is told apart from presenting a wrong one; issuing a new token deletes the unused
-- ones, so only the newest works.
CREATE TABLE password_reset_tokens (
    token_hash bytea       PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issued_by  uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX password_reset_tokens_user_idx ON password_reset_tokens (user_id);
