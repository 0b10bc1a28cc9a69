"""Unread counts and mentions for members connected here who do not have the room open.

Read positions of the members connected here are read from PostgreSQL once per room, then
kept current by ``chat.read`` and the members' own sends, so a message costs no query per
recipient; after a bus outage (``chat.read`` from other nodes missed) they are read again.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg

from boltorezka.realtime.audience import Audience
from boltorezka.realtime.protocol import event_frame
from boltorezka.store import rooms as room_store

_MENTION = re.compile(r"@([A-Za-z0-9_.-]{3,32})")


def mentioned_names(body: str) -> set[str]:
    names: set[str] = set()
    for name in _MENTION.findall(body):
        # Names may contain dots, but "thanks @bob." ends a sentence: accept both readings.
        names.update((name.lower(), name.rstrip(".").lower()))
    return names


class Notifier:
    def __init__(self, pool: asyncpg.Pool, audience: Audience) -> None:
        self._pool = pool
        self._audience = audience
        self._read_seq: dict[tuple[uuid.UUID, uuid.UUID], int] = {}

    def advance_read(self, room_id: uuid.UUID, user_id: uuid.UUID, seq: int) -> None:
        key = (room_id, user_id)
        if key in self._read_seq:
            self._read_seq[key] = max(self._read_seq[key], seq)

    def forget(self, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """The user has no connection here that is a member of the room any more."""
        self._read_seq.pop((room_id, user_id), None)

    def forget_all(self) -> None:
        self._read_seq.clear()

    async def message_stored(self, room_id: uuid.UUID, message: dict[str, Any], seq: int) -> None:
        sender = message.get("senderId")
        if sender is not None:
            # What you wrote yourself is read (the send stored that marker too).
            self.advance_read(room_id, uuid.UUID(sender), seq)
        targets = [
            conn
            for conn in self._audience.members_here.get(room_id, ())
            if room_id not in conn.subscriptions and str(conn.user_id) != sender
        ]
        if not targets:
            return
        if any((room_id, conn.user_id) not in self._read_seq for conn in targets):
            markers = await room_store.read_markers(self._pool, room_id)
            for conn in targets:
                assert conn.user_id is not None
                stored = markers.get(conn.user_id)
                if stored is not None:
                    key = (room_id, conn.user_id)
                    self._read_seq[key] = max(self._read_seq.get(key, stored), stored)
        mentioned = mentioned_names(message.get("body", ""))
        for conn in targets:
            assert conn.user_id is not None
            last_read = self._read_seq.get((room_id, conn.user_id))
            if last_read is None or conn.closed:
                continue
            kind = "mention" if conn.username.lower() in mentioned else "unread"
            conn.send_raw(
                event_frame(
                    "notification",
                    {
                        "roomId": str(room_id),
                        "kind": kind,
                        "unreadCount": max(0, seq - last_read),
                        "seq": seq,
                        "messageId": message["id"],
                    },
                )
            )
