-- Webhooks: endpoints operators register, and a durable outbox of deliveries to them.
--
-- Outbox rows are written by statement-level triggers on the tables whose changes are
-- events, so they commit or roll back with the change itself, whichever code path made it
-- (the batch writer's post_messages included, and the previous release's code during a
-- rolling upgrade). Each trigger first looks for an endpoint subscribed to its type: with
-- none, a statement pays one lookup in a small table and nothing else.

CREATE TABLE webhook_endpoints (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    url         text        NOT NULL,
    -- The HMAC key deliveries are signed with: the server must be able to sign, so it is
    -- stored as issued, and never returned after the answer that created it.
    secret      text        NOT NULL,
    event_types text[]      NOT NULL,
    description text        NOT NULL DEFAULT '',
    created_by  uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per event and endpoint. event_id is the same for every endpoint and every attempt
-- (receivers deduplicate on it). A claim moves next_attempt_at forward by a lease and sets
-- claim_token; a node that dies mid-delivery leaves the row to come due again.
CREATE TABLE webhook_outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL,
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    claim_token     uuid,
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    failed_at       timestamptz,
    CONSTRAINT webhook_outbox_event_endpoint_key UNIQUE (event_id, endpoint_id)
);
-- What the dispatchers claim, oldest due first.
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
-- What the retention sweep deletes.
CREATE INDEX webhook_outbox_done_idx ON webhook_outbox (created_at)
    WHERE delivered_at IS NOT NULL OR failed_at IS NOT NULL;
CREATE INDEX webhook_outbox_endpoint_idx ON webhook_outbox (endpoint_id);

-- One event per payload, for every endpoint subscribed to p_type; in the caller's
-- transaction. Also what code without a trigger of its own calls (store/webhooks.enqueue).
CREATE FUNCTION webhook_enqueue(p_type text, p_payloads jsonb[]) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    written integer;
BEGIN
    WITH events AS MATERIALIZED (
        SELECT gen_random_uuid() AS event_id, p.payload
        FROM unnest(p_payloads) AS p (payload)
        WHERE p.payload IS NOT NULL
    )
    INSERT INTO webhook_outbox (event_id, endpoint_id, event_type, payload)
    SELECT e.event_id, w.id, p_type, e.payload
    FROM events e CROSS JOIN webhook_endpoints w
    WHERE p_type = ANY (w.event_types);
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END;
$$;

CREATE FUNCTION webhook_subscribed(p_type text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE p_type = ANY (event_types))
$$;

-- The usernames a body mentions, as realtime/notifications.py reads them: "@name", and
-- "@name." read both with and without the dot that may end a sentence.
CREATE FUNCTION webhook_mentions(p_room uuid, p_body text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    names text[];
    found jsonb;
BEGIN
    IF strpos(p_body, '@') = 0 THEN
        RETURN '[]'::jsonb;
    END IF;
    names := ARRAY(
        SELECT DISTINCT v.name
        FROM regexp_matches(p_body, '@([A-Za-z0-9_.-]{3,32})', 'g') AS x,
            LATERAL (VALUES (lower(x[1])), (rtrim(lower(x[1]), '.'))) AS v (name)
    );
    -- By the unique index on lower(username), then the membership's primary key.
    SELECT jsonb_agg(jsonb_build_object('userId', u.id, 'username', u.username)
            ORDER BY u.username)
    INTO found
    FROM users u
    WHERE lower(u.username) = ANY (names)
        AND EXISTS (SELECT 1 FROM room_members rm WHERE rm.room_id = p_room AND rm.user_id = u.id);
    RETURN coalesce(found, '[]'::jsonb);
END;
$$;

CREATE FUNCTION webhook_message_json(m messages) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'message', jsonb_build_object(
            'id', m.id, 'roomId', m.room_id, 'seq', m.seq, 'senderId', m.sender_id,
            'clientMsgId', m.client_msg_id, 'body', m.body, 'replyTo', m.reply_to,
            'createdAt', m.created_at, 'editedAt', m.edited_at, 'deletedAt', m.deleted_at
        ),
        'room', (SELECT jsonb_build_object('id', r.id, 'kind', r.kind, 'name', r.name)
                 FROM rooms r WHERE r.id = m.room_id),
        'sender', (SELECT jsonb_build_object(
                       'id', u.id, 'username', u.username, 'displayName', u.display_name)
                   FROM users u WHERE u.id = m.sender_id),
        'mentions', CASE WHEN m.deleted_at IS NULL THEN webhook_mentions(m.room_id, m.body)
                         ELSE '[]'::jsonb END
    )
$$;

CREATE FUNCTION webhook_messages_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF webhook_subscribed('message.posted') THEN
        PERFORM webhook_enqueue('message.posted', ARRAY(
            SELECT webhook_message_json(n) FROM new_rows n ORDER BY n.room_id, n.seq));
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION webhook_messages_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF webhook_subscribed('message.edited') THEN
        PERFORM webhook_enqueue('message.edited', ARRAY(
            SELECT webhook_message_json(n) FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE n.deleted_at IS NULL AND n.edited_at IS DISTINCT FROM o.edited_at
            ORDER BY n.room_id, n.seq));
    END IF;
    IF webhook_subscribed('message.deleted') THEN
        PERFORM webhook_enqueue('message.deleted', ARRAY(
            SELECT webhook_message_json(n) FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE o.deleted_at IS NULL AND n.deleted_at IS NOT NULL
            ORDER BY n.room_id, n.seq));
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION webhook_member_json(p_room uuid, p_user uuid, p_role text, p_at timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'member', jsonb_build_object(
            'roomId', p_room, 'userId', p_user, 'role', p_role, 'joinedAt', p_at),
        'room', (SELECT jsonb_build_object('id', r.id, 'kind', r.kind, 'name', r.name)
                 FROM rooms r WHERE r.id = p_room),
        'user', (SELECT jsonb_build_object(
                     'id', u.id, 'username', u.username, 'displayName', u.display_name)
                 FROM users u WHERE u.id = p_user)
    )
$$;

CREATE FUNCTION webhook_members_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF webhook_subscribed('member.joined') THEN
        PERFORM webhook_enqueue('member.joined', ARRAY(
            SELECT webhook_member_json(n.room_id, n.user_id, n.role, n.joined_at)
            FROM new_rows n ORDER BY n.room_id, n.joined_at));
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION webhook_members_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF webhook_subscribed('member.left') THEN
        PERFORM webhook_enqueue('member.left', ARRAY(
            SELECT webhook_member_json(o.room_id, o.user_id, o.role, o.joined_at)
            FROM old_rows o ORDER BY o.room_id, o.joined_at));
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION webhook_call_json(c call_sessions) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'call', jsonb_build_object(
            'id', c.id, 'roomId', c.room_id, 'mode', c.mode, 'state', c.state,
            'startedBy', c.started_by, 'createdAt', c.created_at, 'endedAt', c.ended_at,
            'endReason', c.end_reason
        ),
        'room', (SELECT jsonb_build_object('id', r.id, 'kind', r.kind, 'name', r.name)
                 FROM rooms r WHERE r.id = c.room_id)
    )
$$;

CREATE FUNCTION webhook_calls_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF webhook_subscribed('call.started') THEN
        PERFORM webhook_enqueue('call.started', ARRAY(
            SELECT webhook_call_json(n) FROM new_rows n ORDER BY n.created_at));
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION webhook_calls_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF webhook_subscribed('call.ended') THEN
        PERFORM webhook_enqueue('call.ended', ARRAY(
            SELECT webhook_call_json(n) FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE n.state = 'ended' AND o.state <> 'ended' ORDER BY n.created_at));
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION webhook_users_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF webhook_subscribed('user.registered') THEN
        PERFORM webhook_enqueue('user.registered', ARRAY(
            SELECT jsonb_build_object('user', jsonb_build_object(
                'id', n.id, 'username', n.username, 'displayName', n.display_name,
                'createdAt', n.created_at))
            FROM new_rows n ORDER BY n.created_at));
    END IF;
    RETURN NULL;
END;
$$;

-- A ban, or a ban made again (0007's put_ban replaces the row, with a new created_at).
CREATE FUNCTION webhook_ban_json(b room_bans) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'ban', jsonb_build_object(
            'roomId', b.room_id, 'userId', b.user_id, 'bannedBy', b.banned_by,
            'reason', b.reason, 'createdAt', b.created_at, 'expiresAt', b.expires_at
        ),
        'room', (SELECT jsonb_build_object('id', r.id, 'kind', r.kind, 'name', r.name)
                 FROM rooms r WHERE r.id = b.room_id),
        'user', (SELECT jsonb_build_object(
                     'id', u.id, 'username', u.username, 'displayName', u.display_name)
                 FROM users u WHERE u.id = b.user_id)
    )
$$;

CREATE FUNCTION webhook_bans_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF webhook_subscribed('member.banned') THEN
        PERFORM webhook_enqueue('member.banned', ARRAY(
            SELECT webhook_ban_json(n) FROM new_rows n ORDER BY n.created_at));
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION webhook_bans_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF webhook_subscribed('member.banned') THEN
        PERFORM webhook_enqueue('member.banned', ARRAY(
            SELECT webhook_ban_json(n) FROM new_rows n
            JOIN old_rows o ON o.room_id = n.room_id AND o.user_id = n.user_id
            WHERE n.created_at IS DISTINCT FROM o.created_at ORDER BY n.created_at));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER webhook_messages_inserted AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_messages_inserted();
CREATE TRIGGER webhook_messages_updated AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_messages_updated();
CREATE TRIGGER webhook_members_inserted AFTER INSERT ON room_members
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_members_inserted();
CREATE TRIGGER webhook_members_deleted AFTER DELETE ON room_members
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_members_deleted();
CREATE TRIGGER webhook_calls_inserted AFTER INSERT ON call_sessions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_calls_inserted();
CREATE TRIGGER webhook_calls_updated AFTER UPDATE ON call_sessions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_calls_updated();
CREATE TRIGGER webhook_users_inserted AFTER INSERT ON users
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_users_inserted();
CREATE TRIGGER webhook_bans_inserted AFTER INSERT ON room_bans
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_bans_inserted();
CREATE TRIGGER webhook_bans_updated AFTER UPDATE ON room_bans
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_bans_updated();
