-- Domain model: users, device sessions, rooms, members, messages, calls, audit log.
-- Objects are created unqualified so the schema comes from search_path (tests use one per test).

CREATE TABLE users (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    username      text        NOT NULL,
    display_name  text        NOT NULL,
    password_hash text        NOT NULL,
    bio           text        NOT NULL DEFAULT '',
    avatar_url    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz,
    CONSTRAINT users_username_format CHECK (username ~ '^[A-Za-z0-9_.-]{3,32}$')
);
-- Usernames are unique regardless of case; login looks them up the same way.
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));

CREATE TABLE device_sessions (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_name    text        NOT NULL DEFAULT '',
    user_agent     text        NOT NULL DEFAULT '',
    ip             text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX device_sessions_user_idx ON device_sessions (user_id, created_at DESC);

-- Every refresh token ever issued, by hash only. A token whose row is already rotated
-- and is presented again is the signal of theft: its device session gets revoked.
CREATE TABLE refresh_tokens (
    token_hash bytea       PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES device_sessions (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

CREATE TABLE rooms (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    kind        text        NOT NULL CHECK (kind IN ('public', 'private', 'direct')),
    name        text        NOT NULL,
    topic       text        NOT NULL DEFAULT '',
    created_by  uuid        REFERENCES users (id) ON DELETE SET NULL,
    -- For direct rooms: the two user ids, sorted and joined, so a pair has one room.
    direct_key  text        UNIQUE,
    last_seq    bigint      NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz,
    deleted_at  timestamptz,
    search      tsvector GENERATED ALWAYS AS (
        to_tsvector('simple', coalesce(name, '') || ' ' || coalesce(topic, ''))
    ) STORED,
    CONSTRAINT rooms_direct_key CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);
CREATE INDEX rooms_public_idx ON rooms (created_at DESC, id)
    WHERE kind = 'public' AND deleted_at IS NULL;
CREATE INDEX rooms_search_idx ON rooms USING gin (search)
    WHERE kind = 'public' AND deleted_at IS NULL;

CREATE TABLE room_members (
    room_id       uuid        NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role          text        NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at     timestamptz NOT NULL DEFAULT now(),
    last_read_seq bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user_idx ON room_members (user_id);
-- At most one owner per room.
CREATE UNIQUE INDEX room_members_one_owner ON room_members (room_id) WHERE role = 'owner';

CREATE TABLE messages (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    room_id       uuid        NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq           bigint      NOT NULL,
    sender_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_msg_id text        NOT NULL,
    body          text        NOT NULL,
    reply_to      uuid        REFERENCES messages (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    edited_at     timestamptz,
    deleted_at    timestamptz,
    search        tsvector GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED,
    CONSTRAINT messages_room_seq_key UNIQUE (room_id, seq),
    CONSTRAINT messages_sender_client_msg_key UNIQUE (sender_id, client_msg_id)
);
CREATE INDEX messages_search_idx ON messages USING gin (search) WHERE deleted_at IS NULL;

CREATE TABLE call_sessions (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    room_id    uuid        NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    mode       text        NOT NULL CHECK (mode IN ('p2p', 'sfu')),
    state      text        NOT NULL CHECK (state IN ('ringing', 'active', 'ended')),
    started_by uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    active_at  timestamptz,
    ended_at   timestamptz,
    end_reason text
);
-- One live call per room.
CREATE UNIQUE INDEX call_sessions_live_per_room ON call_sessions (room_id)
    WHERE state <> 'ended';

CREATE TABLE call_participants (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    call_id           uuid        NOT NULL REFERENCES call_sessions (id) ON DELETE CASCADE,
    user_id           uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_session_id uuid        REFERENCES device_sessions (id) ON DELETE SET NULL,
    joined_at         timestamptz NOT NULL DEFAULT now(),
    left_at           timestamptz,
    leave_reason      text
);
CREATE INDEX call_participants_call_idx ON call_participants (call_id) WHERE left_at IS NULL;
CREATE INDEX call_participants_user_idx ON call_participants (user_id, joined_at DESC);

CREATE TABLE audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor_id    uuid,
    action      text        NOT NULL,
    target_type text,
    target_id   text,
    room_id     uuid,
    request_id  text,
    ip          text,
    outcome     text        NOT NULL DEFAULT 'ok',
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, at DESC);
CREATE INDEX audit_log_action_idx ON audit_log (action, at DESC);
CREATE INDEX audit_log_room_idx ON audit_log (room_id, at DESC) WHERE room_id IS NOT NULL;
