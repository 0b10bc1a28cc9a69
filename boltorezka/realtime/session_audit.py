"""Periodic re-check that every open socket's device session is still live.

Revocations through the auth service close their sockets at once (over the bus). Whatever
bypasses it — a user deleted or disabled in the database, a session revoked in SQL by an
operator, a session that simply expired — would otherwise keep a working socket until its
access token expires, or for ever while the client keeps sending ``auth.refresh``. So each
node asks PostgreSQL, with one query per interval however many sockets it holds, which of
its sessions are no longer live, and closes those sockets as revoked ones are closed.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from boltorezka.bus.base import raise_if_cancelling
from boltorezka.realtime.closecodes import CloseCode
from boltorezka.realtime.hub import Hub
from boltorezka.store import Executor, sessions

_log = structlog.get_logger("boltorezka.session_audit")


class SessionAudit:
    def __init__(self, hub: Hub, db: Executor, *, interval_seconds: float) -> None:
        self._hub = hub
        self._db = db
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="session-audit")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check(self) -> int:
        """One pass: close the sockets of sessions no longer live; return how many."""
        held = list(self._hub.by_session)
        if not held:
            return 0
        ended = await sessions.not_live(self._db, held)
        closed = 0
        for session_id in ended:
            # Sockets that authenticated since the query are on a session that is not live
            # either, so they go too.
            for conn in list(self._hub.by_session.get(session_id, ())):
                conn.close_soon(CloseCode.SESSION_REVOKED)
                closed += 1
        if closed:
            _log.info("closed sockets of ended sessions", sessions=len(ended), sockets=closed)
        return closed

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception:
                # A database outage must not end the audit; the next pass catches up.
                raise_if_cancelling()
                _log.exception("session audit failed")
