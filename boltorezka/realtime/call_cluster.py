"""Requests for a call, routed to the node that holds it, over the bus.

A live call's state lives on one node. When a participant's connection is on another
node, that node forwards the request (join, leave, end, relay, telemetry) on the holder's
own channel and waits for the answer; errors come back with their code, so the client
gets the same nack either way. Node liveness comes from the presence directory.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, ClassVar, Protocol

import msgspec
import structlog

from boltorezka.bus.base import Bus
from boltorezka.calls.service import CallHostUnavailable
from boltorezka.errors import AppError, InternalError
from boltorezka.realtime.presence import PresenceDirectory

_log = structlog.get_logger("boltorezka.calls.cluster")

CONNECTIONS_CHANNEL = "call-connections"
FORWARD_TIMEOUT = 5.0


class CallRequest(msgspec.Struct, tag="request", kw_only=True):
    id: str
    reply_to: str
    op: str
    args: dict[str, Any]


class CallReply(msgspec.Struct, tag="reply", kw_only=True):
    id: str
    result: Any = None
    error: dict[str, Any] | None = None


class ConnectionGone(msgspec.Struct, kw_only=True):
    connection_id: str


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CallRequest | CallReply)
_gone_decoder = msgspec.json.Decoder(ConnectionGone)


class CallHandler(Protocol):
    async def handle_forwarded(self, op: str, args: dict[str, Any]) -> Any: ...

    async def local_connection_closed(self, connection_id: str) -> None: ...


def channel_of(node: str) -> str:
    return f"calls:{node}"


def remote_error(error: dict[str, Any]) -> AppError:
    """Rebuild the error a remote node raised, keeping its status and stable code."""
    kind: type[AppError] = type(
        "RemoteCallError",
        (AppError,),
        {
            "status": int(error.get("status", 500)),
            "code": str(error.get("code", "internal_error")),
            "title": str(error.get("title", "Error")),
            "retryable": bool(error.get("retryable", False)),
        },
    )
    return kind(str(error.get("detail") or ""), **dict(error.get("extra") or {}))


class BusCallCluster:
    """The node-to-node side of call routing; one per node."""

    forward_timeout: ClassVar[float] = FORWARD_TIMEOUT

    def __init__(
        self, bus: Bus, node_id: str, directory: PresenceDirectory, handler: CallHandler
    ) -> None:
        self._bus = bus
        self.node_id = node_id
        self._directory = directory
        self._handler = handler
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening_since = time.monotonic()
        bus.subscribe(channel_of(node_id), self._on_message)
        bus.on_recovered(self._routing_recovered)
        bus.subscribe(CONNECTIONS_CHANNEL, self._on_connection_gone)

    def is_alive(self, node: str) -> bool:
        return node == self.node_id or self._directory.is_alive(node, time.monotonic())

    def alive_nodes(self) -> list[str]:
        alive = self._directory.alive_nodes(time.monotonic())
        return alive if self.node_id in alive else [self.node_id, *alive]

    def knows_liveness(self) -> bool:
        # Every live node reports within the TTL: after one TTL of listening, a node not
        # heard from is silent, not merely not heard yet. While the bus is down nobody is
        # heard, so silence says nothing; after it recovers, the clock starts again.
        if self._bus.routing_problem() is not None:
            return False
        return time.monotonic() - self._listening_since >= self._directory.node_ttl

    def _routing_recovered(self) -> None:
        self._listening_since = time.monotonic()

    async def forward(self, node: str, op: str, args: dict[str, Any]) -> Any:
        request_id = uuid.uuid4().hex
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            request = CallRequest(id=request_id, reply_to=self.node_id, op=op, args=args)
            await self._bus.publish(channel_of(node), _encoder.encode(request))
            async with asyncio.timeout(self.forward_timeout):
                return await future
        except TimeoutError:
            raise CallHostUnavailable() from None
        finally:
            self._waiting.pop(request_id, None)

    async def connection_closed(self, connection_id: str) -> None:
        await self._bus.publish(
            CONNECTIONS_CHANNEL, _encoder.encode(ConnectionGone(connection_id=connection_id))
        )

    async def _on_connection_gone(self, data: bytes) -> None:
        await self._handler.local_connection_closed(_gone_decoder.decode(data).connection_id)

    async def _on_message(self, data: bytes) -> None:
        message = _decoder.decode(data)
        if isinstance(message, CallReply):
            future = self._waiting.get(message.id)
            if future is None or future.done():
                return
            if message.error is not None:
                future.set_exception(remote_error(message.error))
            else:
                future.set_result(message.result)
            return
        # Handled on a task of its own: a request may wait on locks or the database, and
        # the bus must keep delivering meanwhile (the answer to it may be among them).
        task = asyncio.create_task(self._serve(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, request: CallRequest) -> None:
        reply = CallReply(id=request.id)
        try:
            reply.result = await self._handler.handle_forwarded(request.op, request.args)
        except AppError as error:
            reply.error = _describe(error)
        except Exception:
            _log.exception("forwarded call request failed", op=request.op)
            reply.error = _describe(InternalError())
        await self._bus.publish(channel_of(request.reply_to), _encoder.encode(reply))


def _describe(error: AppError) -> dict[str, Any]:
    return {
        "status": error.status,
        "code": error.code,
        "title": error.title,
        "detail": error.detail,
        "retryable": error.retryable,
        "extra": error.extra,
    }
