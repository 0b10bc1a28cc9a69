"""WebSocket edge cases: auth during a database outage, RFC 6455 framing (masking, UTF-8),
per-envelope request ids in the logs, and the caps on open sockets.

Framing tests speak the protocol over a bare TCP socket (:class:`RawTcpWebSocket`): every
WebSocket library masks its frames and refuses to send invalid UTF-8 as text, which is
exactly what these tests must do. The database outage is real: the server's pool reaches
PostgreSQL through a TCP relay (:class:`TcpProxy`) that the test pulls out, so the pool's
connections die and new ones are refused, as when the database host goes away.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import logging
import struct
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from boltorezka_client import BoltorezkaClient, NackError, RequestTimeout
from websockets.exceptions import InvalidStatus
from websockets.protocol import State

from boltorezka.app import build_app
from boltorezka.observability.logging import configure
from boltorezka.realtime import protocol
from boltorezka.realtime.closecodes import CloseCode
from boltorezka.runtime import Services
from boltorezka.store.database import create_pool
from tests.helpers import (
    add_member,
    audit_rows,
    create_room,
    post_message,
    quick_accounts,
    register,
    wait_closed,
)
from tests.test_ws_protocol import custom_app, problem_of, raw_socket, ws_url_of

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# A fixed masking key keeps the bytes on the wire the same on every run.
_MASK_KEY = b"\x37\xfa\x21\x3d"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE = 0x0, 0x1, 0x2, 0x8


# --- a WebSocket client written out by hand ----------------------------------------------


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, key: bytes = _MASK_KEY
) -> bytes:
    """One client→server frame (RFC 6455 §5.2), masked unless told otherwise."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return header + payload
    body = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return header + key + body


def envelope(msg_type: str, request_id: str, payload: dict[str, Any] | None = None) -> bytes:
    frame: dict[str, Any] = {"v": 1, "type": msg_type, "requestId": request_id}
    if payload is not None:
        frame["payload"] = payload
    return json.dumps(frame).encode()


class RawTcpWebSocket:
    """The client side of ``/v1/ws`` over a plain TCP stream: handshake and frames by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls, port: int, *, headers: dict[str, str] | None = None, pipelined: bytes = b""
    ) -> RawTcpWebSocket:
        """Upgrade a new TCP connection; ``pipelined`` goes out in the same write as the
        handshake, before the server has answered it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(b"boltorezka-16byt").decode()
        lines = [
            "GET /v1/ws HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + pipelined)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status, *fields = head.decode("latin-1").split("\r\n")
        assert status.startswith("HTTP/1.1 101"), head
        accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
        assert f"Sec-WebSocket-Accept: {accept}".lower() in (f.lower() for f in fields), head
        return cls(reader, writer)

    async def send(self, frame: bytes) -> None:
        self.writer.write(frame)
        await self.writer.drain()

    async def send_text(self, payload: bytes, *, masked: bool = True) -> None:
        await self.send(client_frame(OP_TEXT, payload, masked=masked))

    async def recv_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next server frame as (opcode, payload); server frames are never masked."""
        async with asyncio.timeout(timeout):
            first, second = await self.reader.readexactly(2)
            assert not second & 0x80, "a server frame must not be masked"
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(length)
        assert first & 0x80, "the server sends no fragmented frames"
        return first & 0x0F, payload

    async def recv_json(self, timeout: float = 5.0) -> dict[str, Any]:
        opcode, payload = await self.recv_frame(timeout)
        assert opcode == OP_TEXT, (opcode, payload)
        frame: dict[str, Any] = json.loads(payload)
        return frame

    async def greeting(self) -> dict[str, Any]:
        first = await self.recv_json()
        assert first["type"] == "server.capabilities", first
        return first

    async def answer(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next ack or nack, skipping events."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv_json()
                if frame["type"] in ("ack", "nack"):
                    return frame

    async def request(self, msg_type: str, request_id: str, payload: Any = None) -> dict[str, Any]:
        await self.send_text(envelope(msg_type, request_id, payload))
        answer = await self.answer()
        assert answer["requestId"] == request_id, answer
        return answer

    async def expect_close(self, timeout: float = 5.0) -> tuple[int, str]:
        """Read up to the server's close frame and answer it, as RFC 6455 §5.5.1 asks;
        return its code and reason once the server has dropped the TCP connection."""
        async with asyncio.timeout(timeout):
            while True:
                opcode, payload = await self.recv_frame(timeout)
                if opcode == OP_CLOSE:
                    break
            assert len(payload) >= 2, payload
            (code,) = struct.unpack("!H", payload[:2])
            with contextlib.suppress(ConnectionError):
                await self.send(client_frame(OP_CLOSE, payload[:2]))
                # A server that has already let go resets instead; dropped either way.
                assert await self.reader.read() == b"", "the server must drop the connection"
        return code, payload[2:].decode()

    def close(self) -> None:
        self.writer.transport.abort()


@asynccontextmanager
async def raw_tcp(port: int, **kwargs: Any) -> AsyncIterator[RawTcpWebSocket]:
    ws = await RawTcpWebSocket.open(port, **kwargs)
    try:
        yield ws
    finally:
        ws.close()


def port_of(c: TestClient[Any, Any]) -> int:
    port = c.server.port
    assert port is not None
    return port


# --- 1. auth while the database is gone --------------------------------------------------


@contextlib.contextmanager
def production_logging(level: str, into: io.StringIO) -> Iterator[None]:
    """Log as ``boltorezka serve`` does (JSON lines, structlog's and the standard library's),
    into ``into`` instead of stdout, then restore the test's configuration.

    The default console renderer draws tracebacks with every local variable, which can take
    seconds on a busy machine: too slow for tests that time the server.
    """
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    with contextlib.redirect_stdout(into):  # configure() writes to the stdout of the moment
        configure(level, "json")
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(root_level)


class TcpProxy:
    """A TCP relay to PostgreSQL that a test can pull out and put back.

    ``stop`` drops every relayed connection and stops listening, so the server's pool loses
    its connections and new ones are refused, as when the database host goes away.
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, server_w}
        try:
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))
        finally:
            self._writers -= {client_w, server_w}

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.transport.abort()


@pytest.fixture
async def outage(
    pg_url: str, test_db: TestDatabase, services: Services
) -> AsyncIterator[tuple[TestClient[Any, Any], TcpProxy]]:
    """A server whose database sits behind a :class:`TcpProxy` (running when yielded)."""
    parts = urllib.parse.urlsplit(pg_url)
    if parts.hostname is None or parts.port is None:
        pytest.skip("the outage test needs PostgreSQL over TCP")
    proxy = TcpProxy(parts.hostname, parts.port)
    await proxy.start()
    relayed = parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}")
    pool = await create_pool(
        urllib.parse.urlunsplit(relayed),
        min_size=1,
        max_size=2,
        server_settings=test_db.server_settings,
    )
    # A long auth timeout: the close under test must come from the failed auth, not from it.
    settings = replace(services.settings, ws_auth_timeout_seconds=60)
    app = TestClient(TestServer(build_app(Services.build(settings, pool)), host="127.0.0.1"))
    await app.start_server()
    try:
        with production_logging("info", io.StringIO()):
            yield app, proxy
    finally:
        if not proxy.running:
            await proxy.start()  # shutting down stores and reads a little
        await app.close()
        await pool.close()
        await proxy.stop()


async def test_auth_during_a_database_outage_nacks_unavailable_and_closes_1013(
    outage: tuple[TestClient[Any, Any], TcpProxy], services: Services
) -> None:
    app, proxy = outage
    (user,) = await quick_accounts(services, 1)
    async with raw_tcp(port_of(app)) as ws:  # authenticates while the database answers
        await ws.greeting()
        assert (await ws.request("auth", "a0", {"token": user.access_token}))["type"] == "ack"

    await proxy.stop()
    async with raw_tcp(port_of(app)) as ws:
        await ws.greeting()
        loop = asyncio.get_running_loop()
        sent = loop.time()
        answer = await ws.request("auth", "a1", {"token": user.access_token})
        assert answer["type"] == "nack", answer
        refusal = answer["payload"]
        assert (refusal["code"], refusal["retryable"], refusal["retryAfterMs"]) == (
            "unavailable",
            True,
            1000,
        )
        code, reason = await ws.expect_close()
        assert (code, reason) == (CloseCode.TRY_AGAIN_LATER, "try_again_later")
        assert loop.time() - sent < 5, "closed by the failed auth, not by the auth timeout"

    # The database is back: the same token works again, as 1013 promised.
    await proxy.start()
    async with raw_tcp(port_of(app)) as ws:
        await ws.greeting()
        assert (await ws.request("auth", "a2", {"token": user.access_token}))["type"] == "ack"


async def test_client_connect_during_a_database_outage_raises_and_closes_its_socket(
    outage: tuple[TestClient[Any, Any], TcpProxy], services: Services
) -> None:
    app, proxy = outage
    (user,) = await quick_accounts(services, 1)
    await proxy.stop()
    c = BoltorezkaClient(ws_url_of(app), user.access_token, reconnect=False)
    try:
        with pytest.raises(NackError) as caught:
            await c.connect()
        assert (caught.value.code, caught.value.retryable) == ("unavailable", True)
        # connect() returns only once the socket is closed, and the reader saw the code.
        assert c.websocket.state is State.CLOSED
        assert c.close_codes == [CloseCode.TRY_AGAIN_LATER]
    finally:
        await c.close()


# --- 1b. the client closes what it opened ------------------------------------------------


@asynccontextmanager
async def stub_server(answer_auth: bool) -> AsyncIterator[tuple[str, asyncio.Future[int | None]]]:
    """A WebSocket peer that greets, then nacks ``auth`` (or ignores it) and never closes.

    Yields its URL and a future resolved with the close code once the client closes.
    """
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        caps = protocol.ServerCapabilities(
            payload=protocol.CapabilitiesPayload(
                protocol_versions=[1],
                features=[],
                limits=protocol.Limits(max_frame_bytes=65536, rates={}),
                heartbeat_interval_ms=20_000,
                node_id="stub",
                session_id="stub",
                resume_window_seconds=60,
            )
        )
        await ws.send_str(protocol.encode(caps).decode())
        async for message in ws:
            if message.type == WSMsgType.TEXT and answer_auth:
                request_id = json.loads(message.data)["requestId"]
                nack = protocol.nack(request_id, "invalid_token", "stub says no")
                await ws.send_str(protocol.encode(nack).decode())
        if not closed.done():
            closed.set_result(ws.close_code)
        return ws

    app = web.Application()
    app.router.add_get("/v1/ws", endpoint)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"ws://127.0.0.1:{server.port}/v1/ws", closed
    finally:
        await server.close()


@pytest.mark.parametrize("answer_auth", [True, False], ids=["nacked", "unanswered"])
async def test_client_closes_its_socket_when_connect_fails(answer_auth: bool) -> None:
    async with stub_server(answer_auth) as (url, closed):
        c = BoltorezkaClient(url, "token", reconnect=False, request_timeout=0.5)
        try:
            with pytest.raises(NackError if answer_auth else RequestTimeout):
                await c.connect()
            # The peer never closes, so only the client can have ended the connection.
            assert await asyncio.wait_for(closed, 5) == 1000
            assert c.websocket.state is State.CLOSED
        finally:
            await c.close()


# --- 2. unmasked client frames -----------------------------------------------------------


async def test_an_unmasked_client_frame_closes_with_1002(
    client: TestClient[Any, Any], services: Services
) -> None:
    (user,) = await quick_accounts(services, 1)
    async with raw_tcp(port_of(client)) as ws:
        await ws.greeting()
        assert (await ws.request("auth", "m1", {"token": user.access_token}))["type"] == "ack"
        assert (await ws.request("ping", "m2", {"ts": 1}))["type"] == "ack"  # masked: fine
        await ws.send_text(envelope("ping", "m3", {"ts": 2}), masked=False)
        # No answer to the unmasked ping: the next frame of substance is the close.
        async with asyncio.timeout(5):
            while True:
                opcode, payload = await ws.recv_frame()
                if opcode == OP_CLOSE:
                    break
                frame = json.loads(payload)
                assert frame.get("requestId") != "m3", frame
        (code,) = struct.unpack("!H", payload[:2])
        assert (code, payload[2:]) == (CloseCode.PROTOCOL_ERROR, b"")  # the layer's own close
        assert await asyncio.wait_for(ws.reader.read(), 5) == b""


async def test_an_unmasked_frame_sent_with_the_handshake_closes_with_1002(
    client: TestClient[Any, Any],
) -> None:
    # The frame rides in the same packet as the upgrade request, so it reaches the server
    # before any WebSocket parser exists: it must be checked all the same.
    masked_ping = client_frame(OP_TEXT, envelope("ping", "p1"))
    unmasked_ping = client_frame(OP_TEXT, envelope("ping", "p2"), masked=False)
    async with raw_tcp(port_of(client), pipelined=masked_ping + unmasked_ping) as ws:
        await ws.greeting()
        first = await ws.answer()
        assert (first["type"], first["requestId"]) == ("ack", "p1")  # frames before it count
        code, _ = await ws.expect_close()
        assert code == CloseCode.PROTOCOL_ERROR


async def test_an_unmasked_control_frame_closes_with_1002(client: TestClient[Any, Any]) -> None:
    async with raw_tcp(port_of(client)) as ws:
        await ws.greeting()
        await ws.send(client_frame(0x9, b"hi", masked=False))  # a ping, unmasked
        code, _ = await ws.expect_close()
        assert code == CloseCode.PROTOCOL_ERROR


# --- 3. invalid UTF-8 in a text frame ----------------------------------------------------


async def test_invalid_utf8_text_is_a_malformed_json_nack_that_counts_as_a_violation(
    services: Services,
) -> None:
    (user,) = await quick_accounts(services, 1)
    async with custom_app(services, ws_violation_budget=2) as app:
        async with raw_tcp(port_of(app)) as ws:
            await ws.greeting()
            assert (await ws.request("auth", "u0", {"token": user.access_token}))["type"] == "ack"
            # Invalid UTF-8 in a field the codec skips: the requestId is still readable.
            await ws.send_text(b'{"v":1,"type":"ping","requestId":"u1","x":"\xff"}')
            nack = await ws.answer()
            assert (nack["type"], nack["requestId"]) == ("nack", "u1")
            assert nack["payload"]["code"] == "malformed_json"
            assert (await ws.request("ping", "u2"))["type"] == "ack"  # still usable
            # A lone continuation byte: nothing readable, so no requestId.
            await ws.send_text(b"\x80")
            nack = await ws.answer()
            assert (nack["requestId"], nack["payload"]["code"]) == (None, "malformed_json")
            # A character split over two fragments is valid UTF-8 once they are joined...
            head, tail = '{"v":1,"type":"ping","requestId":"€1"}'.encode().split(b"\x82", 1)
            await ws.send(client_frame(OP_TEXT, head, fin=False))
            await ws.send(client_frame(OP_CONTINUATION, b"\x82" + tail))
            assert (await ws.answer())["requestId"] == "€1"
            # ...and the third broken frame is over the budget of two.
            await ws.send_text(b'{"v":1,"type":"ping","requestId":"u3","x":"\xc3\x28"}')
            assert (await ws.answer())["payload"]["code"] == "malformed_json"
            assert await ws.expect_close() == (
                CloseCode.POLICY_VIOLATION_BUDGET,
                "policy_violation_budget",
            )


# --- 4. request ids in the logs ----------------------------------------------------------


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The server's real JSON log configuration, at debug; yields a function returning the
    records written so far."""
    written = io.StringIO()

    def records() -> list[dict[str, Any]]:
        return [json.loads(line) for line in written.getvalue().splitlines()]

    with production_logging("debug", written):
        yield records


async def test_each_envelope_logs_under_its_own_request_id(
    client: TestClient[Any, Any],
    services: Services,
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    owner, member = await register(client), await register(client)
    room = await create_room(client, owner)
    await add_member(client, room, owner, member)
    # Deleting someone else's message is moderation, which the audit log records.
    theirs = (await post_message(client, room, member, "moderate me"))["id"]
    async with raw_tcp(port_of(client), headers={"X-Request-ID": "upgrade-7"}) as ws:
        connection = (await ws.greeting())["payload"]["sessionId"]
        assert (await ws.request("auth", "alpha", {"token": owner.access_token}))["type"] == "ack"
        assert (await ws.request("ping", "beta"))["type"] == "ack"
        await ws.send_text(b"{oops")
        assert (await ws.answer())["requestId"] is None
        sent = await ws.request(
            "chat.send", "gamma", {"roomId": room, "clientMsgId": "c1", "body": "hello"}
        )
        assert sent["type"] == "ack", sent
        delete = {"roomId": room, "messageId": theirs}
        assert (await ws.request("chat.delete", "delta", delete))["type"] == "ack"
        await ws.send(client_frame(OP_CLOSE, struct.pack("!H", 1000)))
        await ws.expect_close()

    def upgrade_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in logs if r.get("event") == "request" and r.get("route") == "/v1/ws"]

    logs = json_logs()
    async with asyncio.timeout(5):  # the upgrade's own line is written once the socket ended
        while not upgrade_lines(logs):
            await asyncio.sleep(0.05)
            logs = json_logs()
    handled = {r["client_request_id"]: r for r in logs if r.get("event") == "ws request"}
    assert set(handled) == {"alpha", "beta", "gamma", "delta"}
    ids = [r["request_id"] for r in handled.values()]
    assert len(set(ids)) == len(ids), "every envelope has a request id of its own"
    for record in handled.values():
        assert record["connection"] == connection
        assert record["request_id"].startswith(f"{connection}-")
        assert record["outcome"] == "ack"
    (rejected,) = [r for r in logs if r.get("event") == "ws frame rejected"]
    assert rejected["code"] == "malformed_json"
    assert "client_request_id" not in rejected
    assert rejected["request_id"] not in ids and rejected["connection"] == connection
    # The socket's own line keeps the upgrade's id.
    (upgrade,) = upgrade_lines(logs)
    assert upgrade["request_id"] == "upgrade-7"
    # The audit row of the delete points at the log lines of the envelope that made it.
    (row,) = await audit_rows(services.pool, "message.delete")
    assert row["request_id"] == handled["delta"]["request_id"]


# --- 5. caps on open sockets -------------------------------------------------------------


async def _connects(url: str, token: str) -> BoltorezkaClient:
    c = BoltorezkaClient(url, token, reconnect=False)
    await c.connect()
    return c


async def _eventually_connects(url: str, token: str, timeout: float = 5.0) -> BoltorezkaClient:
    """Connect once the server has let go of a socket the test just closed."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await _connects(url, token)
            except (InvalidStatus, NackError):
                await asyncio.sleep(0.05)


async def test_sockets_per_address_are_capped_before_the_upgrade(services: Services) -> None:
    (user,) = await quick_accounts(services, 1)
    async with custom_app(services, ws_max_per_address=2, ws_max_per_user=0) as app:
        url = ws_url_of(app)
        async with raw_socket(url), raw_socket(url) as second:  # unauthenticated ones count
            with pytest.raises(InvalidStatus) as caught:
                await _connects(url, user.access_token)
            assert caught.value.response.status_code == 429
            problem = problem_of(caught.value)
            assert (problem["code"], problem["retryable"]) == ("too_many_connections", False)
            await second.close()
            freed = await _eventually_connects(url, user.access_token)
            await freed.close()


async def test_sockets_per_user_are_capped_at_auth_with_close_4030(services: Services) -> None:
    alice, bob = await quick_accounts(services, 2)
    async with custom_app(services, ws_max_per_user=2) as app:
        url = ws_url_of(app)
        first = await _connects(url, alice.access_token)
        second = await _connects(url, alice.access_token)
        try:
            async with raw_socket(url) as raw:  # not authenticated: not counted for alice
                third = BoltorezkaClient(url, alice.access_token, reconnect=False)
                with pytest.raises(NackError) as caught:
                    await third.connect()
                refusal = (caught.value.code, caught.value.retryable)
                assert refusal == ("too_many_connections", False)
                assert third.close_codes == [CloseCode.TOO_MANY_CONNECTIONS]
                await third.close()
                other = await _connects(url, bob.access_token)  # bob has a cap of his own
                await other.close()
                refused = await raw.request("auth", {"token": alice.access_token})
                assert refused["payload"]["code"] == "too_many_connections"
                assert await wait_closed(raw.ws) == CloseCode.TOO_MANY_CONNECTIONS
            await first.close()
            replacement = await _eventually_connects(url, alice.access_token)
            await replacement.close()
        finally:
            await first.close()
            await second.close()


async def test_caps_of_zero_leave_sockets_uncapped(services: Services) -> None:
    (user,) = await quick_accounts(services, 1)
    # One more socket than the default per-user cap allows, and a per-address cap of 0 too.
    count = services.settings.ws_max_per_user + 1
    async with custom_app(
        services, ws_max_per_address=0, ws_max_per_user=0, ws_connect_rate_per_minute=10_000
    ) as app:
        url = ws_url_of(app)
        clients = [await _connects(url, user.access_token) for _ in range(count)]
        try:
            assert all(c.auth_result["userId"] == user.id for c in clients)
        finally:
            for c in clients:
                await c.close()
