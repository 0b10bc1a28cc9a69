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
import uuid
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


@dataclass
class RoomSubscription:
    room_id: uuid.UUID
    # Holds the frames of the room's chat messages, by seq, until they can go out in order.
    gate: SeqGate[bytes] = field(default_factory=SeqGate)
    gap_task: asyncio.Task[None] | None = None


class Connection:
    def __init__(
        self,
        ws: web.WebSocketResponse[Any],
        *,
        transport: asyncio.Transport | None,
        queue_size: int,
        close_timeout: float,
        metrics: Metrics,
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
        # Set whenever identity or token expiry changes, to wake the session watchdog.
        self.session_changed = asyncio.Event()
        self.close_code: int | None = None
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self._close_timeout = close_timeout
        self._metrics = metrics
        self._writer: asyncio.Task[None] | None = None
        self._space = asyncio.Event()
        self._sending = asyncio.Event()  # set while a frame is being written
        self._sent = asyncio.Event()  # pulsed after every write
        self._closing: asyncio.Task[None] | None = None

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
            self._queue.put_nowait(frame)
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
        headroom = max(1, self._queue.maxsize // 2)
        while self._queue.qsize() >= headroom:
            if self.close_code is not None or self._closing is not None:
                return False
            self._space.clear()
            try:
                async with asyncio.timeout(self._close_timeout):
                    await self._space.wait()
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
                    await self._queue.join()
        self.close_code = int(code)
        self._metrics.ws_closes.labels(str(int(code))).inc()
        # The writer task unhooks itself when it ends: hold on to the one running now.
        writer = self._writer
        if writer is not None and not writer.done():
            # Cancelling a send that waits in aiohttp's drain would also cancel the drain
            # future the close frame needs, so let the frame in flight finish first.
            if self._sending.is_set():
                try:
                    async with asyncio.timeout(self._close_timeout):
                        while self._sending.is_set():
                            await self._sent.wait()
                            self._sent.clear()
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
        try:
            while True:
                try:
                    frame = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                self._space.set()
                self._sending.set()
                try:
                    await self.ws.send_frame(frame, WSMsgType.TEXT)
                except (ConnectionError, RuntimeError):
                    self._queue.task_done()
                    return
                finally:
                    self._sending.clear()
                    self._sent.set()
                self._queue.task_done()
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
