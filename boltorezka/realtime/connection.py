"""One WebSocket connection: identity, room subscriptions and the way out to the client.

A frame is written straight to the transport while the transport's buffer is below a
high-water mark: no queue, no task, no await per recipient. Past the mark, frames go into a
bounded queue drained by a writer task that waits for the socket to drain (started only
then, and gone once the queue is empty), so a slow reader only ever fills its own queue;
when that overflows, the connection is closed with a code that tells the client to
reconnect and resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from boltorezka.context import RequestInfo
from boltorezka.observability.metrics import Metrics
from boltorezka.realtime import protocol
from boltorezka.realtime.closecodes import CloseCode
from boltorezka.realtime.framing import text_frame
from boltorezka.realtime.sequencing import SeqGate

_log = structlog.get_logger("boltorezka.realtime")

# Bytes a transport may hold unsent before frames queue instead of being written at once.
WRITE_HIGH_WATER = 64 * 1024


@dataclass(slots=True)
class RoomSubscription:
    room_id: uuid.UUID
    # Holds the frames of the room's chat messages, by seq, until they can go out in order.
    gate: SeqGate[bytes] = field(default_factory=SeqGate)
    gap_task: asyncio.Task[None] | None = None


class _Backlog:
    """Frames waiting for a slow reader, and the events the writer task paces by."""

    __slots__ = ("queue", "sending", "sent", "space")

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=size)
        self.space = asyncio.Event()
        self.sending = asyncio.Event()  # set while a frame is being written
        self.sent = asyncio.Event()  # pulsed after every write


class Connection:
    # Slots: a node holds tens of thousands of these, and a per-instance dict is ~1 KB each.
    __slots__ = (
        "__weakref__",
        "_backlog_state",
        "_close_timeout",
        "_closing",
        "_metrics",
        "_on_session_change",
        "_queue_size",
        "_transport",
        "_writer",
        "close_code",
        "envelope_id",
        "envelopes",
        "id",
        "member_rooms",
        "opened_at",
        "request_info",
        "session_id",
        "session_timer",
        "status",
        "subscriptions",
        "token_expires_at",
        "user_id",
        "username",
        "violations",
        "warned_for",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse[Any],
        *,
        transport: asyncio.Transport | None,
        queue_size: int,
        close_timeout: float,
        metrics: Metrics,
        on_session_change: Callable[[Connection], None] | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.ws = ws
        # None: frames always take the queue (a transport that cannot be written directly).
        self._transport = transport
        self.user_id: uuid.UUID | None = None
        self.session_id: uuid.UUID | None = None
        self.username = ""
        self.token_expires_at = 0
        self.status = "online"
        self.subscriptions: dict[uuid.UUID, RoomSubscription] = {}
        self.member_rooms: set[uuid.UUID] = set()
        self.violations = 0
        # Where the upgrade request came from, with its request id.
        self.request_info = RequestInfo()
        # Envelopes received so far; numbers the server-side id of each (see envelope_id).
        self.envelopes = 0
        # The server-side request id of the envelope being handled, or handled last.
        self.envelope_id = ""
        # The session's deadlines (auth timeout, expiry warning, expiry) are the gateway's,
        # told of every change of identity or token expiry; one timer at a time.
        self._on_session_change = on_session_change
        self.opened_at = time.time()
        self.warned_for = 0
        self.session_timer: asyncio.TimerHandle | None = None
        self.close_code: int | None = None
        self._queue_size = queue_size
        # Made at the first backlog: most connections never have one, and a queue with its
        # events is a few KB per idle connection.
        self._backlog_state: _Backlog | None = None
        self._close_timeout = close_timeout
        self._metrics = metrics
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def _backlog(self) -> _Backlog:
        if self._backlog_state is None:
            self._backlog_state = _Backlog(self._queue_size)
        return self._backlog_state

    def session_changed(self) -> None:
        """Identity or token expiry changed (auth, auth.refresh): deadlines move."""
        if self._on_session_change is not None:
            self._on_session_change(self)

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None

    @property
    def closed(self) -> bool:
        return self.close_code is not None or self.ws.closed

    def next_envelope_id(self) -> str:
        """A request id for the next envelope: unique (the connection id is a random UUID),
        cheap (no randomness per frame) and telling which connection it came in on."""
        self.envelopes += 1
        self.envelope_id = f"{self.id}-{self.envelopes}"
        return self.envelope_id

    def envelope_info(self) -> RequestInfo:
        """The request info of the envelope being handled, for the audit log: its own
        request id, so an audit row points at the log lines of the request that made it."""
        own = self.envelope_id or self.request_info.request_id
        return replace(self.request_info, request_id=own)

    def send(self, message: protocol.ServerMessage) -> None:
        self.send_raw(protocol.encode(message))

    def send_raw(self, frame: bytes) -> None:
        """Send a frame; never blocks. Overflow closes the connection for resume."""
        if self.close_code is not None:
            return
        transport = self._transport
        if self._writer is None and transport is not None:
            if transport.is_closing():
                return  # the peer is gone; the read loop ends and cleans up
            if transport.get_write_buffer_size() < WRITE_HIGH_WATER:
                transport.write(text_frame(frame))
                self._metrics.count_frame_out()
                return
        try:
            self._backlog.queue.put_nowait(frame)
        except asyncio.QueueFull:
            if self._closing is not None:
                return  # already closing for this overflow: count and log it once
            self._metrics.ws_queue_overflows.inc()
            _log.warning(
                "outbound queue overflow; closing for resume",
                connection=self.id,
                user_id=str(self.user_id),
            )
            self.close_soon(CloseCode.SLOW_CONSUMER_RESUME)
            return
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")

    async def send_paced(self, frame: bytes) -> bool:
        """Queue a frame of a bulk transfer (a resume replay) at the reader's pace.

        It waits while the queue is half full, so a long replay never overflows the queue
        of a reader that keeps up, and live frames for other rooms keep their headroom.
        A reader that takes nothing for the close timeout is closed for resume; returns
        False then.
        """
        headroom = max(1, self._queue_size // 2)
        while self._backlog_state is not None and self._backlog.queue.qsize() >= headroom:
            if self.close_code is not None or self._closing is not None:
                return False
            self._backlog.space.clear()
            try:
                async with asyncio.timeout(self._close_timeout):
                    await self._backlog.space.wait()
            except TimeoutError:
                self._metrics.ws_queue_overflows.inc()
                self.close_soon(CloseCode.SLOW_CONSUMER_RESUME)
                return False
        self.send_raw(frame)
        return self.close_code is None and self._closing is None

    def close_soon(self, code: CloseCode, *, flush: bool = False) -> None:
        """Close from synchronous code; the close happens on its own task."""
        if self._closing is None and self.close_code is None:
            self._closing = asyncio.create_task(
                self.close(code, flush=flush), name=f"ws-close-{self.id}"
            )

    async def close(self, code: CloseCode, *, flush: bool = False) -> None:
        """Close with ``code``. With ``flush``, frames already queued are sent first."""
        if self.close_code is not None:
            return
        if flush and self._writer is not None and not self._writer.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._close_timeout):
                    await self._backlog.queue.join()
        self.close_code = int(code)
        self._metrics.ws_closes.labels(str(int(code))).inc()
        # The writer task unhooks itself when it ends: hold on to the one running now.
        writer = self._writer
        if writer is not None and not writer.done():
            # Cancelling a send that waits in aiohttp's drain would also cancel the drain
            # future the close frame needs, so let the frame in flight finish first.
            backlog = self._backlog
            if backlog.sending.is_set():
                try:
                    async with asyncio.timeout(self._close_timeout):
                        while backlog.sending.is_set():
                            await backlog.sent.wait()
                            backlog.sent.clear()
                except TimeoutError:
                    # The peer stopped reading: drop the transport and what it buffered.
                    self._abort()
                    writer.cancel()
                    return
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        try:
            async with asyncio.timeout(self._close_timeout):
                await self.ws.close(code=int(code), message=code.reason.encode())
        except (TimeoutError, ConnectionError, RuntimeError):
            self._abort()

    def _abort(self) -> None:
        request = getattr(self.ws, "_req", None)
        transport = getattr(request, "transport", None)
        if transport is not None:
            transport.abort()

    async def _write_loop(self) -> None:
        """Send the backlog at the reader's pace; once it is empty, direct writes resume."""
        backlog = self._backlog
        try:
            while True:
                try:
                    frame = backlog.queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                backlog.space.set()
                backlog.sending.set()
                try:
                    await self.ws.send_frame(frame, WSMsgType.TEXT)
                except (ConnectionError, RuntimeError):
                    backlog.queue.task_done()
                    return
                finally:
                    backlog.sending.clear()
                    backlog.sent.set()
                backlog.queue.task_done()
                self._metrics.count_frame_out()
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None

    async def stop(self) -> None:
        """Stop the writer and any room gap-fill tasks (after the socket is gone)."""
        tasks = [t for t in (self._writer, self._closing) if t is not None]
        tasks += [s.gap_task for s in self.subscriptions.values() if s.gap_task is not None]
        for task in tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for task in tasks:
            if task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
