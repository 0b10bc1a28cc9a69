"""Scripted Boltorezka realtime client on the ``websockets`` library.

It does what a production client must: authenticates in the first message, tracks every
request until its ``ack``/``nack`` (with a timeout), keeps the last ``seq`` it has seen per
room, drops duplicates, fills seq gaps from history, and after an unexpected disconnect
reconnects with exponential backoff and full jitter, re-authenticates and resumes each
joined room from its last seq. Tests and load generators drive the server through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Self

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

Event = dict[str, Any]
TokenSource = str | Callable[[], Awaitable[str]]

# Close codes after which reconnecting cannot help.
FINAL_CLOSE_CODES = frozenset({1000, 4001, 4004, 4005})


class ClientError(Exception):
    """Base class of client errors."""


class NackError(ClientError):
    """The server answered a request with ``nack``."""

    def __init__(self, code: str, message: str, retryable: bool, retry_after_ms: int | None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms


class ConnectionLost(ClientError):
    """The connection closed before the request was answered."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"connection closed ({code} {reason})".strip())
        self.code = code
        self.reason = reason


class RequestTimeout(ClientError):
    """No answer arrived within the request timeout."""


class BoltorezkaClient:
    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        request_timeout: float = 10.0,
        reconnect: bool = True,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        max_reconnect_attempts: int = 20,
        origin: str | None = None,
        open_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self._token = token
        self.request_timeout = request_timeout
        self.reconnect_enabled = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_reconnect_attempts = max_reconnect_attempts
        self.origin = origin
        self.open_timeout = open_timeout

        self.capabilities: dict[str, Any] = {}
        self.auth_result: dict[str, Any] = {}
        self.last_seq: dict[str, int] = {}
        self.joined: set[str] = set()
        self.events: list[Event] = []
        self.close_codes: list[int | None] = []
        self.reconnects = 0
        self.gaps_filled = 0

        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._connected = asyncio.Event()
        self._closing = False
        self.final_close: int | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def connect(self) -> dict[str, Any]:
        """Open the socket, read capabilities and authenticate; return the auth result."""
        await self._open()
        if self.reconnect_enabled:
            self._supervisor = asyncio.create_task(self._supervise())
        return self.auth_result

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def websocket(self) -> ClientConnection:
        assert self._ws is not None, "not connected"
        return self._ws

    async def _open(self) -> None:
        headers = {"Origin": self.origin} if self.origin else None
        ws = await websockets.connect(
            self.url,
            additional_headers=headers,
            open_timeout=self.open_timeout,
            max_size=None,
            ping_interval=None,
        )
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), self.request_timeout))
            if first.get("type") != "server.capabilities":
                raise ClientError(f"expected server.capabilities first, got {first.get('type')}")
            self.capabilities = first["payload"]
            self._ws = ws
            self._reader = asyncio.create_task(self._read(ws))
            token = self._token if isinstance(self._token, str) else await self._token()
            self.auth_result = await self.request("auth", {"token": token})
        except BaseException:
            # Whatever failed (a nack, a timeout, a bad greeting, a cancel), the socket must
            # not outlive the attempt: nothing would read it, and the server would hold it
            # open until its own auth timeout.
            await self._discard(ws)
            raise
        self._connected.set()

    async def _discard(self, ws: ClientConnection) -> None:
        """Close ``ws`` after a failed open and let its reader finish (bounded by the
        library's close timeout)."""
        with contextlib.suppress(Exception):
            await ws.close()
        reader = self._reader
        if reader is not None and self._ws is ws and reader is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _supervise(self) -> None:
        """Reconnect after unexpected closes and resume every joined room."""
        while not self._closing:
            assert self._reader is not None
            with contextlib.suppress(Exception):
                await self._reader
            if self._closing or self.final_close is not None:
                return
            self._connected.clear()
            for attempt in range(self.max_reconnect_attempts):
                ceiling = min(self.backoff_max, self.backoff_initial * 2**attempt)
                await asyncio.sleep(random.uniform(0, ceiling))  # full jitter  # noqa: S311
                try:
                    await self._open()
                    self.reconnects += 1
                    for room_id in list(self.joined):
                        await self.join(room_id, last_seq=self.last_seq.get(room_id, 0))
                    break
                except (OSError, ClientError, ConnectionClosed, TimeoutError):
                    continue
            else:
                return

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    # --- requests -------------------------------------------------------------------------

    async def request(
        self, msg_type: str, payload: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Send a request and wait for its ack result; raise NackError on nack."""
        ws = self._ws
        if ws is None:
            raise ConnectionLost()
        request_id = f"r{next(self._ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        frame = {"v": 1, "type": msg_type, "requestId": request_id, "payload": payload or {}}
        try:
            await ws.send(json.dumps(frame))
            return await asyncio.wait_for(future, timeout or self.request_timeout)
        except TimeoutError:
            raise RequestTimeout(f"{msg_type} {request_id} got no answer") from None
        except ConnectionClosed as exc:
            raise ConnectionLost(exc.rcvd.code if exc.rcvd else None) from None
        finally:
            self._pending.pop(request_id, None)

    async def send_raw(self, frame: str | bytes) -> None:
        await self.websocket.send(frame)

    async def join(self, room_id: str, last_seq: int | None = None) -> Any:
        payload: dict[str, Any] = {"roomId": room_id}
        if last_seq is not None:
            payload["lastSeq"] = last_seq
        result = await self.request("room.join", payload)
        self.joined.add(room_id)
        self.last_seq[room_id] = max(self.last_seq.get(room_id, 0), result["lastSeq"])
        return result

    async def leave(self, room_id: str) -> Any:
        self.joined.discard(room_id)
        return await self.request("room.leave", {"roomId": room_id})

    async def send_message(
        self,
        room_id: str,
        body: str,
        *,
        client_msg_id: str | None = None,
        reply_to: str | None = None,
        attempts: int = 5,
    ) -> Any:
        """Post a message; retried across reconnects with the same clientMsgId (safe)."""
        payload: dict[str, Any] = {
            "roomId": room_id,
            "clientMsgId": client_msg_id or uuid.uuid4().hex,
            "body": body,
        }
        if reply_to is not None:
            payload["replyTo"] = reply_to
        for attempt in range(attempts):
            try:
                return await self.request("chat.send", payload)
            except ConnectionLost:
                if not self.reconnect_enabled or attempt == attempts - 1:
                    raise
                await self.wait_connected()
            except NackError as exc:
                if exc.code != "rate_limited" or attempt == attempts - 1:
                    raise
                await asyncio.sleep((exc.retry_after_ms or 100) / 1000)
        raise AssertionError("unreachable")

    async def history(
        self, room_id: str, *, after: int | None = None, before: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        payload: dict[str, Any] = {"roomId": room_id, "limit": limit}
        if after is not None:
            payload["after"] = after
        if before is not None:
            payload["before"] = before
        result = await self.request("chat.history", payload)
        messages: list[dict[str, Any]] = result["messages"]
        return messages

    async def typing(self, room_id: str, active: bool = True) -> Any:
        return await self.request("typing.start" if active else "typing.stop", {"roomId": room_id})

    async def set_presence(self, status: str) -> Any:
        return await self.request("presence.set", {"status": status})

    async def mark_read(self, room_id: str, seq: int) -> Any:
        return await self.request("chat.read", {"roomId": room_id, "seq": seq})

    async def refresh_token(self, token: str) -> Any:
        return await self.request("auth.refresh", {"token": token})

    # --- events ---------------------------------------------------------------------------

    async def wait_for(
        self, predicate: Callable[[Event], bool], timeout: float = 5.0, *, consume: bool = True
    ) -> Event:
        """Return the first received event matching ``predicate`` (waiting if needed)."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for index, event in enumerate(self.events):
                    if predicate(event):
                        if consume:
                            del self.events[index]
                        return event
                await self._changed.wait()

    async def wait_type(self, msg_type: str, timeout: float = 5.0, **payload: Any) -> Event:
        def match(event: Event) -> bool:
            body = event.get("payload", {})
            return event.get("type") == msg_type and all(
                body.get(k) == v for k, v in payload.items()
            )

        return await self.wait_for(match, timeout)

    def messages(self, room_id: str) -> list[dict[str, Any]]:
        """The chat messages received so far for a room, in arrival order."""
        return [
            e["payload"]["message"]
            for e in self.events
            if e.get("type") == "chat.message" and e["payload"]["roomId"] == room_id
        ]

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                await self._handle(json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            code = ws.close_code
            self.close_codes.append(code)
            if code in FINAL_CLOSE_CODES and not self._closing:
                self.final_close = code
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionLost(code, ws.close_reason or ""))
            async with self._changed:
                self._changed.notify_all()

    async def _handle(self, frame: Event) -> None:
        kind = frame.get("type")
        if kind in ("ack", "nack"):
            self._answer(frame)
        elif kind == "chat.message":
            events, held = await self._sequence(frame)
            for event in events:
                await self._push(event)
            for later in held:
                await self._handle(later)
        else:
            await self._push(frame)

    def _answer(self, frame: Event) -> None:
        future = self._pending.get(frame.get("requestId") or "")
        if future is None or future.done():
            return
        payload = frame["payload"]
        if frame["type"] == "ack":
            future.set_result(payload.get("result"))
        else:
            future.set_exception(
                NackError(
                    payload["code"],
                    payload["message"],
                    payload["retryable"],
                    payload.get("retryAfterMs"),
                )
            )

    async def _sequence(self, frame: Event) -> tuple[list[Event], list[Event]]:
        """Drop duplicates; when a seq skips ahead, fetch what is missing first.

        Returns the events to deliver now, in order, and frames that arrived while the
        gap was being fetched (to be handled after them).
        """
        room_id = frame["payload"]["roomId"]
        seq = frame["payload"]["message"]["seq"]
        last = self.last_seq.get(room_id)
        if last is not None and seq <= last:
            return [], []
        out: list[Event] = []
        held: list[Event] = []
        if last is not None and seq > last + 1:
            self.gaps_filled += 1
            missing, held = await self._fetch_gap(room_id, last, seq)
            out.extend(
                {"type": "chat.message", "v": 1, "payload": {"roomId": room_id, "message": m}}
                for m in missing
            )
        out.append(frame)
        self.last_seq[room_id] = seq
        return out, held

    async def _fetch_gap(
        self, room_id: str, after: int, before: int
    ) -> tuple[list[dict[str, Any]], list[Event]]:
        """Ask for the missing range; this runs on the reader, so it reads the answer inline."""
        ws = self._ws
        held: list[Event] = []
        if ws is None:
            return [], held
        request_id = f"gap{next(self._ids)}"
        await ws.send(
            json.dumps(
                {
                    "v": 1,
                    "type": "chat.history",
                    "requestId": request_id,
                    "payload": {"roomId": room_id, "after": after, "before": before, "limit": 200},
                }
            )
        )
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("requestId") == request_id:
                if frame["type"] == "ack":
                    found: list[dict[str, Any]] = frame["payload"]["result"]["messages"]
                    return found, held
                return [], held
            if frame.get("type") in ("ack", "nack"):
                self._answer(frame)
            else:
                held.append(frame)
        return [], held

    async def _push(self, event: Event) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()
