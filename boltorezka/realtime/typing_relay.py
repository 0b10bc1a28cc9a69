"""Typing indicators: relayed to the room's other subscribers here, throttled, expiring.

Each node relays the typing of its own connections to its own subscribers only; typing is
ephemeral, so it never crosses the bus (a typist on another node is simply not shown).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import cast

from boltorezka.realtime.audience import Audience
from boltorezka.realtime.presence import TypingTracker
from boltorezka.realtime.protocol import event_frame

SWEEP_INTERVAL = 0.5


class TypingRelay:
    def __init__(self, audience: Audience) -> None:
        self._audience = audience
        self.tracker = TypingTracker()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
        if self.tracker.start((room_id, user_id), time.monotonic()):
            self._send(room_id, user_id, active=True)

    def stop(self, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
        if self.tracker.stop((room_id, user_id)):
            self._send(room_id, user_id, active=False)

    def _send(self, room_id: uuid.UUID, user_id: uuid.UUID, *, active: bool) -> None:
        """Tell the room's other members; the typist's own devices need no echo."""
        payload = {"roomId": str(room_id), "userId": str(user_id), "active": active}
        self._audience.send_room(room_id, event_frame("typing", payload), except_user=user_id)

    def run(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="typing-sweeper")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            for key in self.tracker.expired(time.monotonic()):
                room_id, user_id = cast(tuple[uuid.UUID, uuid.UUID], key)
                self._send(room_id, user_id, active=False)
