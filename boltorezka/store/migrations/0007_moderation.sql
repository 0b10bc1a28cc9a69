-- Room moderation: bans, mutes and message reports (rooms/moderation.py).
--
-- Bans and mutes are rows of their own, not columns of room_members: they outlive the
-- membership (a ban removes it; a muted member who leaves and joins a public room again is
-- still muted). A NULL expires_at lasts until lifted; a row whose expires_at has passed
-- counts for nothing and is replaced by the next ban or mute of that user.

CREATE TABLE room_bans (
    room_id    uuid        NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    banned_by  uuid        REFERENCES users (id) ON DELETE SET NULL,
    reason     text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    PRIMARY KEY (room_id, user_id)
);

CREATE TABLE room_mutes (
    room_id    uuid        NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    muted_by   uuid        REFERENCES users (id) ON DELETE SET NULL,
    reason     text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    PRIMARY KEY (room_id, user_id)
);

-- A member's report of a message. The message's sender, seq and body are copied when it is
-- reported, so what was reported can still be judged after the sender deletes it.
CREATE TABLE message_reports (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    room_id         uuid        NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    message_id      uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    reporter_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sender_id       uuid        NOT NULL,
    message_seq     bigint      NOT NULL,
    message_body    text        NOT NULL,
    reason          text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    resolved_by     uuid        REFERENCES users (id) ON DELETE SET NULL,
    resolved_at     timestamptz,
    resolution      text,
    resolution_note text
);
-- One open report per message and reporter; once resolved, the message may be reported again.
CREATE UNIQUE INDEX message_reports_open_key ON message_reports (message_id, reporter_id)
    WHERE resolved_at IS NULL;
-- The room's reports, newest first, open ones or all.
CREATE INDEX message_reports_room_idx ON message_reports (room_id, created_at DESC, id DESC);

-- post_messages as in 0003, and a muted sender's send answered 'muted'. A function of its
-- own, so the previous release keeps calling the old one (which knows no 'muted') during a
-- rolling upgrade; a later migration drops post_messages once no release calls it.
CREATE FUNCTION post_messages_v2(
    p_rooms uuid[], p_senders uuid[], p_client_ids text[], p_bodies text[], p_replies uuid[]
) RETURNS SETOF post_outcome
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    answers post_outcome[];
    lost integer;
BEGIN
    -- Every change to a room's state or membership locks the room row first. Taking those
    -- locks in a statement of its own (in id order, so concurrent batches cannot deadlock)
    -- means the next statement's snapshot already holds every such change that committed
    -- while this one waited: a kick, an archive or a delete is seen, not written past.
    PERFORM 1 FROM rooms WHERE id = ANY (p_rooms) ORDER BY id FOR UPDATE;

    WITH input AS (
        SELECT i.idx::integer AS idx, i.room_id, i.sender_id, i.client_msg_id, i.body,
            i.reply_to
        FROM unnest(p_rooms, p_senders, p_client_ids, p_bodies, p_replies)
            WITH ORDINALITY AS i (room_id, sender_id, client_msg_id, body, reply_to, idx)
    ),
    -- The checks of resolve_access, require_member, the idempotent replay,
    -- require_not_muted, require_writable and replyTo, in that order: the first that
    -- fails answers.
    checked AS (
        SELECT input.*, prior.id AS prior_id,
            CASE
                WHEN r.id IS NULL OR (rm.user_id IS NULL AND r.kind <> 'public')
                    THEN 'room_not_found'
                WHEN rm.user_id IS NULL THEN 'not_a_member'
                WHEN prior.id IS NOT NULL THEN 'prior'
                WHEN mu.user_id IS NOT NULL THEN 'muted'
                WHEN r.archived_at IS NOT NULL THEN 'room_archived'
                WHEN input.reply_to IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM messages t
                    WHERE t.room_id = input.room_id AND t.id = input.reply_to
                ) THEN 'invalid_reply'
                ELSE 'new'
            END AS verdict
        FROM input
        LEFT JOIN rooms r ON r.id = input.room_id AND r.deleted_at IS NULL
        LEFT JOIN room_members rm
            ON rm.room_id = input.room_id AND rm.user_id = input.sender_id
        LEFT JOIN messages prior
            ON prior.sender_id = input.sender_id AND prior.client_msg_id = input.client_msg_id
        LEFT JOIN room_mutes mu
            ON mu.room_id = input.room_id AND mu.user_id = input.sender_id
            AND (mu.expires_at IS NULL OR mu.expires_at > now())
    ),
    -- Within the batch the first accepted send of a clientMsgId is stored; later ones
    -- replay it, as if they had arrived after it committed.
    winners AS (
        SELECT DISTINCT ON (sender_id, client_msg_id)
            idx, room_id, sender_id, client_msg_id, body, reply_to
        FROM checked WHERE verdict = 'new'
        ORDER BY sender_id, client_msg_id, idx
    ),
    counts AS (SELECT room_id, count(*) AS n FROM winners GROUP BY room_id),
    -- Only accepted sends are counted, so refused ones leave no gap in a room's seqs.
    bumped AS (
        UPDATE rooms r SET last_seq = r.last_seq + counts.n, updated_at = now()
        FROM counts WHERE r.id = counts.room_id
        RETURNING r.id, r.last_seq - counts.n AS base
    ),
    numbered AS (
        SELECT w.*, b.base + row_number() OVER (PARTITION BY w.room_id ORDER BY w.idx) AS seq
        FROM winners w JOIN bumped b ON b.id = w.room_id
    ),
    inserted AS (
        INSERT INTO messages AS m (room_id, seq, sender_id, client_msg_id, body, reply_to)
        SELECT room_id, seq, sender_id, client_msg_id, body, reply_to FROM numbered
        ORDER BY idx
        ON CONFLICT (sender_id, client_msg_id) DO NOTHING
        RETURNING m.id, m.room_id, m.seq, m.sender_id, m.client_msg_id, m.body, m.reply_to,
            m.created_at
    ),
    -- What you wrote yourself is read: it never counts as unread for you.
    marked AS (
        UPDATE room_members rm SET last_read_seq = GREATEST(rm.last_read_seq, x.seq)
        FROM (
            SELECT room_id, sender_id, max(seq) AS seq FROM numbered GROUP BY room_id, sender_id
        ) x
        WHERE rm.room_id = x.room_id AND rm.user_id = x.sender_id
    ),
    answered AS (
        SELECT c.idx,
            CASE
                WHEN c.verdict IN ('room_not_found', 'not_a_member', 'muted') THEN c.verdict
                WHEN c.verdict = 'prior' THEN
                    CASE WHEN p.room_id <> c.room_id
                        OR (p.deleted_at IS NULL AND p.body <> c.body)
                    THEN 'idempotency_conflict' ELSE 'duplicate' END
                WHEN w.idx = c.idx THEN 'created'
                WHEN w.idx < c.idx THEN
                    CASE WHEN w.room_id <> c.room_id OR w.body <> c.body
                    THEN 'idempotency_conflict' ELSE 'duplicate' END
                ELSE c.verdict
            END AS outcome,
            (w.idx IS NOT NULL AND w.idx <= c.idx AND c.verdict <> 'prior') AS stored,
            p AS prior_row, i AS new_row
        FROM checked c
        LEFT JOIN winners w
            ON w.sender_id = c.sender_id AND w.client_msg_id = c.client_msg_id
        LEFT JOIN inserted i
            ON i.sender_id = c.sender_id AND i.client_msg_id = c.client_msg_id
        LEFT JOIN messages p ON p.id = c.prior_id
    )
    SELECT
        array_agg(
            CASE
                WHEN a.outcome IN ('created', 'duplicate') AND a.stored THEN ROW(
                    a.idx, a.outcome, (a.new_row).id, (a.new_row).room_id, (a.new_row).seq,
                    (a.new_row).sender_id, (a.new_row).client_msg_id, (a.new_row).body,
                    (a.new_row).reply_to, (a.new_row).created_at, NULL, NULL
                )::post_outcome
                WHEN a.outcome = 'duplicate' THEN ROW(
                    a.idx, a.outcome, (a.prior_row).id, (a.prior_row).room_id,
                    (a.prior_row).seq, (a.prior_row).sender_id, (a.prior_row).client_msg_id,
                    CASE WHEN (a.prior_row).deleted_at IS NULL THEN (a.prior_row).body
                        ELSE '' END,
                    (a.prior_row).reply_to, (a.prior_row).created_at,
                    (a.prior_row).edited_at, (a.prior_row).deleted_at
                )::post_outcome
                ELSE ROW(
                    a.idx, a.outcome, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
                )::post_outcome
            END
            ORDER BY a.idx
        ),
        count(*) FILTER (WHERE a.stored AND (a.new_row).id IS NULL)
    INTO answers, lost
    FROM answered a;

    -- A send with the same clientMsgId into another room committed after this statement's
    -- snapshot: DO NOTHING skipped the row after its seq was taken. Undo the whole batch
    -- (no gap, nothing half-stored); the retry sees that message and replays it.
    IF lost > 0 THEN
        RAISE EXCEPTION 'a concurrent send used the same clientMsgId'
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN QUERY SELECT * FROM unnest(answers);
END;
$$;
