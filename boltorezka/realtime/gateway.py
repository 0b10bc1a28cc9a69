"""The WebSocket endpoint ``/v1/ws``: upgrade checks, the read loop, errors and draining.

Log lines of one socket carry its ``connection`` id; those written while an envelope is
handled also carry a ``request_id`` of that envelope's own (``<connection>-<n>``) and, when
the frame has a readable one, the client's ``requestId`` as ``client_request_id``. Lines of
the socket itself (opening, closing) keep the upgrade request's ``request_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import time
from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from boltorezka.api.http import client_ip, request_info
from boltorezka.errors import (
    AppError,
    Forbidden,
    InternalError,
    RateLimited,
    Unavailable,
    UpgradeRequired,
)
from boltorezka.observability import tracing
from boltorezka.realtime import protocol
from boltorezka.realtime.closecodes import CloseCode
from boltorezka.realtime.connection import Connection
from boltorezka.realtime.handlers import ALREADY_ACKED, RequestHandlers, TooManyConnections
from boltorezka.realtime.hub import Hub
from boltorezka.realtime.session_clock import Due, SessionState, next_deadline
from boltorezka.realtime.wsreader import StrictWebSocketResponse
from boltorezka.runtime import Services
from boltorezka.store.outage import OUTAGE_ERRORS, RETRY_AFTER_MS

_log = structlog.get_logger("boltorezka.gateway")

FEATURES = [
    "chat",
    "presence",
    "typing",
    "resume",
    "notifications",
    "read-markers",
    "calls",
    "sfu",
]
BINARY_NOT_SUPPORTED = "binary_not_supported"
_OUTAGE_ERRORS = OUTAGE_ERRORS
_OUTAGE_RETRY_MS = RETRY_AFTER_MS
# Frames up to this multiple of the limit are read and answered with frame_too_large;
# beyond it the transport refuses to buffer them at all and closes with 1009.
_HARD_FRAME_FACTOR = 4


class OriginRejected(Forbidden):
    code = "origin_rejected"
    title = "This Origin may not open a WebSocket here"


class Gateway:
    def __init__(self, services: Services, hub: Hub) -> None:
        self.services = services
        self.settings = services.settings
        self.hub = hub
        self.handlers = RequestHandlers(services, hub)
        self.node_id = hub.node_id
        self._connect_limiter = services.connect_limiter
        self.draining = False
        # Open sockets per client address on this node: counted at the upgrade, so the cap
        # costs a dict lookup rather than a walk over the hub's connections.
        self._per_address: dict[str, int] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # Cleanups of closed sockets still running (the drain waits for them).
        self._cleanups: set[asyncio.Future[None]] = set()

    # --- upgrade --------------------------------------------------------------------------

    def _check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            return  # not a browser: cross-site hijacking needs a browser's ambient cookies
        allowed = self.settings.ws_allowed_origins
        if "*" in allowed:
            return
        normalized = origin.rstrip("/")
        if normalized in allowed:
            return
        host = request.headers.get("Host", "")
        if not allowed and normalized in (f"http://{host}", f"https://{host}"):
            return  # with no list configured, only same-origin pages may connect
        raise OriginRejected(f"Origin {origin!r} is not in BOLTOREZKA_WS_ALLOWED_ORIGINS")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            raise Unavailable("this node is draining; reconnect to another one")
        self._check_origin(request)
        address = client_ip(request)
        wait_ms = await self._connect_limiter.take(f"ip:{address}")
        if wait_ms:
            raise RateLimited(wait_ms, "too many WebSocket connections from this address")
        # No await between the check and the count, so concurrent upgrades cannot overshoot.
        cap = self.settings.ws_max_per_address
        open_here = self._per_address.get(address, 0)
        if cap and open_here >= cap:
            raise TooManyConnections(
                f"this address already has {cap} open WebSocket connections on this node"
            )
        self._per_address[address] = open_here + 1
        try:
            return await self._serve(request)
        finally:
            left = self._per_address[address] - 1
            if left:
                self._per_address[address] = left
            else:
                del self._per_address[address]

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        settings = self.settings
        ws = StrictWebSocketResponse(
            heartbeat=settings.ws_heartbeat_seconds,
            max_msg_size=settings.ws_max_frame_bytes * _HARD_FRAME_FACTOR,
            autoping=True,
            # No permessage-deflate: it would cost a compression per recipient of every
            # event (the context is per connection), and chat frames are small.
            compress=False,
        )
        if not ws.can_prepare(request).ok:
            raise UpgradeRequired()
        await ws.prepare(request)
        if settings.ws_send_buffer_bytes and request.transport is not None:
            sock = request.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.ws_send_buffer_bytes)
        conn = Connection(
            ws,
            transport=request.transport,
            queue_size=settings.ws_outbound_queue,
            close_timeout=settings.ws_close_timeout_seconds,
            metrics=self.services.metrics,
            on_session_change=self._session_changed,
        )
        conn.request_info = request_info(request)
        self.hub.add(conn)
        structlog.contextvars.bind_contextvars(connection=conn.id)
        conn.send(self._capabilities(conn))
        self._session_changed(conn)
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    await self._on_text(conn, frame.data)
                elif frame.type == WSMsgType.BINARY:
                    self._violation(
                        conn,
                        protocol.nack(
                            None, BINARY_NOT_SUPPORTED, "send JSON envelopes as text frames"
                        ),
                    )
                elif frame.type == WSMsgType.ERROR:
                    # aiohttp has closed the socket already: 1002 for a frame that breaks
                    # RFC 6455 (unmasked, reserved bits), 1009 for one over the hard limit.
                    self.services.metrics.ws_closes.labels(str(ws.close_code)).inc()
                    _log.info(
                        "websocket protocol error", close=ws.close_code, error=str(frame.data)
                    )
                    break
                if conn.closed:
                    break
        finally:
            if conn.session_timer is not None:
                conn.session_timer.cancel()
            self.hub.remove(conn)
            # aiohttp cancels this handler when the peer's connection is lost; what is left
            # to do (the calls' grace periods start here) must happen all the same.
            cleanup = asyncio.ensure_future(self._after_close(conn, ws))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            try:
                await asyncio.shield(cleanup)
            except asyncio.CancelledError:
                # The socket is over either way: its request ends as a finished upgrade
                # (logged like any other), and the cleanup goes on in its own task.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
        return ws

    async def _after_close(self, conn: Connection, ws: web.WebSocketResponse[Any]) -> None:
        await conn.stop()
        with contextlib.suppress(Exception):
            await self.services.calls.connection_closed(conn.id)
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()

    def _capabilities(self, conn: Connection) -> protocol.ServerCapabilities:
        s = self.settings
        return protocol.ServerCapabilities(
            payload=protocol.CapabilitiesPayload(
                protocol_versions=list(protocol.SUPPORTED_VERSIONS),
                features=FEATURES,
                limits=protocol.Limits(
                    max_frame_bytes=s.ws_max_frame_bytes,
                    rates={
                        "chatSendPerSecond": s.chat_send_per_second,
                        "chatSendBurst": float(s.chat_send_burst),
                        "typingPerSecond": s.typing_per_second,
                        "connectsPerMinute": float(s.ws_connect_rate_per_minute),
                    },
                ),
                heartbeat_interval_ms=int(s.ws_heartbeat_seconds * 1000),
                node_id=self.node_id,
                session_id=conn.id,
                # Messages are durable, so a resume works for as long as the client can sign in.
                resume_window_seconds=s.refresh_token_ttl,
            )
        )

    # --- frames ---------------------------------------------------------------------------

    async def _on_text(self, conn: Connection, data: str | bytes) -> None:
        envelope_id = conn.next_envelope_id()
        try:
            message = protocol.decode_client(data, max_frame_bytes=self.settings.ws_max_frame_bytes)
        except protocol.ProtocolError as exc:
            tokens = _bind_envelope(envelope_id, exc.request_id)
            try:
                _log.debug("ws frame rejected", code=exc.code)
                self._violation(conn, exc.to_nack())
            finally:
                structlog.contextvars.reset_contextvars(**tokens)
            return
        tokens = _bind_envelope(envelope_id, message.request_id)
        try:
            if tracing.enabled():
                await self._on_request_traced(conn, message)
            else:
                await self._on_request(conn, message)
        finally:
            # Back to the socket's own ids (the upgrade request's) between envelopes.
            structlog.contextvars.reset_contextvars(**tokens)

    async def _on_request_traced(self, conn: Connection, message: protocol.ClientMessage) -> None:
        msg_type = protocol.message_type(message)
        with tracing.envelope_span(msg_type, conn.user_id, conn.session_id) as span:
            await self._on_request(conn, message)
            tracing.envelope_done(span, conn.user_id, conn.session_id)

    async def _on_request(self, conn: Connection, message: protocol.ClientMessage) -> None:
        msg_type = protocol.message_type(message)
        self.services.metrics.ws_messages_in.labels(msg_type).inc()
        if not conn.authenticated and not isinstance(message, protocol.Auth | protocol.Ping):
            _log.debug("ws request", type=msg_type, outcome="unauthenticated")
            self._nack(
                conn,
                message.request_id,
                "unauthenticated",
                "send an auth message with your access token first",
            )
            return
        handler = self.handlers.table[type(message)]
        started = time.perf_counter()
        outcome = "ack"
        self._begin()
        try:
            result = await handler(conn, message)
        except AppError as error:
            outcome = error.code
            self._nack_error(conn, message.request_id, error)
            if isinstance(message, protocol.Auth) and not conn.authenticated:
                await self._auth_failed(conn, error)
            return
        except _OUTAGE_ERRORS as exc:
            # Every request fails alike while it lasts: a line each, but no traceback.
            unavailable = Unavailable(
                "the database is unreachable; try again", retryAfterMs=_OUTAGE_RETRY_MS
            )
            outcome = unavailable.code
            self._nack_error(conn, message.request_id, unavailable)
            _log.warning("database unreachable", type=msg_type, error=repr(exc))
            if isinstance(message, protocol.Auth) and not conn.authenticated:
                await self._auth_failed(conn, unavailable)
            return
        except Exception:
            internal = InternalError()
            outcome = internal.code
            # Answer first: rendering the traceback must not delay the client.
            self._nack_error(conn, message.request_id, internal)
            _log.exception("handler failed", type=msg_type)
            if isinstance(message, protocol.Auth) and not conn.authenticated:
                await self._auth_failed(conn, internal)
            return
        finally:
            self._end()
            elapsed = time.perf_counter() - started
            self.services.metrics.ws_request_latency.labels(msg_type).observe(elapsed)
            _log.debug(
                "ws request", type=msg_type, outcome=outcome, duration_ms=round(elapsed * 1000, 2)
            )
        if result is not ALREADY_ACKED:
            conn.send(protocol.ack(message.request_id, result))

    async def _auth_failed(self, conn: Connection, error: AppError) -> None:
        """Close a socket whose ``auth`` failed, with a code that says what to do next.

        It would otherwise sit unauthenticated until the auth timeout, and a client that
        waits for the close to reconnect would wait that long for nothing.
        """
        if isinstance(error, TooManyConnections):
            code = CloseCode.TOO_MANY_CONNECTIONS
        elif error.retryable:
            # The token was not judged (the database is down, or the server failed): the
            # client keeps it and comes back later.
            code = CloseCode.TRY_AGAIN_LATER
        else:
            code = CloseCode.AUTH_FAILED
        _log.info("ws auth failed", code=error.code, close=int(code))
        await conn.close(code, flush=True)

    def _nack_error(self, conn: Connection, request_id: str | None, error: AppError) -> None:
        retry = error.extra.get("retryAfterMs")
        details = {k: v for k, v in error.extra.items() if k != "retryAfterMs"}
        self._nack(
            conn,
            request_id,
            error.code,
            error.detail,
            retryable=error.retryable,
            retry_after_ms=retry if isinstance(retry, int) else None,
            details=details,
        )

    def _nack(
        self,
        conn: Connection,
        request_id: str | None,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after_ms: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.services.metrics.ws_nacks.labels(code).inc()
        tracing.nack(code)
        conn.send(
            protocol.nack(
                request_id,
                code,
                message,
                retryable=retryable,
                retry_after_ms=retry_after_ms,
                details=details,
            )
        )

    def _violation(self, conn: Connection, nack: protocol.Nack) -> None:
        self.services.metrics.ws_nacks.labels(nack.payload.code).inc()
        conn.send(nack)
        conn.violations += 1
        if conn.violations > self.settings.ws_violation_budget:
            # Flush so the nack for the frame that broke the budget still arrives.
            conn.close_soon(CloseCode.POLICY_VIOLATION_BUDGET, flush=True)

    # --- session expiry -------------------------------------------------------------------

    def _session_changed(self, conn: Connection) -> None:
        """Look at the connection's session deadlines again: at open, after ``auth`` and
        ``auth.refresh``, and whenever the last deadline set comes."""
        if conn.session_timer is not None:
            conn.session_timer.cancel()
            conn.session_timer = None
        if conn.closed:
            return
        state = SessionState(
            opened_at=conn.opened_at,
            authenticated=conn.authenticated,
            expires_at=conn.token_expires_at,
            warned_for=conn.warned_for,
        )
        due, at = next_deadline(
            state,
            time.time(),
            auth_timeout=self.settings.ws_auth_timeout_seconds,
            warning=self.settings.auth_expiry_warning_seconds,
        )
        if due is Due.AUTH_TIMEOUT:
            conn.close_soon(CloseCode.AUTH_TIMEOUT)
            return
        if due is Due.EXPIRED:
            conn.send(
                protocol.ServerError(
                    payload=protocol.ErrorPayload(
                        code="session_expired", message="the access token expired"
                    )
                )
            )
            conn.close_soon(CloseCode.SESSION_EXPIRED, flush=True)
            return
        if due is Due.WARN:
            conn.warned_for = conn.token_expires_at
            conn.send(
                protocol.AuthExpiring(
                    payload=protocol.AuthExpiringPayload(expires_at=conn.token_expires_at)
                )
            )
        # One timer per connection, no task: idle connections cost no ticks and no frames.
        conn.session_timer = asyncio.get_running_loop().call_later(
            max(0.05, at - time.time()), self._session_changed, conn
        )

    # --- draining -------------------------------------------------------------------------

    def _begin(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _end(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def drain(self) -> None:
        """Refuse new sockets, tell clients to move, finish requests, close with 1012."""
        self.draining = True
        connections = list(self.hub.connections.values())
        reconnect_ms = 500
        for conn in connections:
            conn.send(
                protocol.ServerDraining(
                    payload=protocol.DrainingPayload(reconnect_after_ms=reconnect_ms)
                )
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.ws_drain_seconds):
                await self._idle.wait()
        await asyncio.gather(
            *(conn.close(CloseCode.SERVICE_RESTART, flush=True) for conn in connections),
            return_exceptions=True,
        )
        # The grace periods of the calls these sockets were in are recorded before the
        # node gives its calls up.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.ws_close_timeout_seconds):
                while self._cleanups:
                    await asyncio.gather(*list(self._cleanups), return_exceptions=True)


def _bind_envelope(
    envelope_id: str, client_request_id: str | None
) -> Mapping[str, contextvars.Token[Any]]:
    """Bind an envelope's ids into the log context; return the tokens that undo it.

    Tokens rather than ``bound_contextvars``, which reads the whole context to save it: this
    runs for every frame.
    """
    if client_request_id is None:
        return structlog.contextvars.bind_contextvars(request_id=envelope_id)
    return structlog.contextvars.bind_contextvars(
        request_id=envelope_id, client_request_id=client_request_id
    )


def attach(app: web.Application, gateway: Gateway) -> None:
    app.router.add_get("/v1/ws", gateway.handle)
