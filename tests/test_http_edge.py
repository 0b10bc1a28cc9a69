"""The HTTP edge: slow request heads, parser refusals, proxies' client addresses, start-up.

The head deadline and the parser's refusals live below the application (api/edge.py, the
runner ``boltorezka serve`` listens with), so those tests run the real command and speak raw
HTTP/1.1 over sockets. The client address (api/http.py ``client_ip``) is the application's,
so those tests use the in-process test server, whose peer is 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from boltorezka_client import BoltorezkaClient
from multidict import CIMultiDict

from boltorezka.api.http import MAX_FORWARDED_HOPS, forwarded_client
from boltorezka.cli import EXIT_DATABASE_UNAVAILABLE
from boltorezka.config import ConfigError, Settings
from boltorezka.runtime import Services
from tests.conftest import ROOT, make_client
from tests.helpers import (
    PASSWORD,
    cli_env,
    expect_problem,
    free_port,
    run_cli,
    url_with_search_path,
)

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

PATIENCE = 30.0
PROBLEM_JSON = "application/problem+json"


# --- A real server, spoken to in raw HTTP ------------------------------------------------


@dataclass
class Server:
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@contextlib.asynccontextmanager
async def serving(test_db: TestDatabase, tmp_path: Path, **settings: str) -> AsyncIterator[Server]:
    """``boltorezka serve`` on a free port, ready; killed afterwards whatever happened."""
    port = free_port()
    env = cli_env(
        DATABASE_URL=url_with_search_path(test_db.url, test_db.schema),
        DATA_DIR=str(tmp_path / "data"),
        PORT=str(port),
        JWT_SECRET="edge-test-secret-0123456789-abcdefghijklmnopqrstuv",
        LOG_LEVEL="info",
        **settings,
    )
    log = tmp_path / f"server-{port}.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "boltorezka", "serve", env=env, cwd=ROOT, stdout=sink, stderr=sink
        )
    server = Server(port, log)
    try:
        async with asyncio.timeout(PATIENCE), aiohttp.ClientSession() as http:
            while True:
                assert proc.returncode is None, log.read_text()
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with http.get(f"{server.base}/healthz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
        yield server
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@dataclass
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("Content-Type", "").startswith(PROBLEM_JSON), self
        data: dict[str, Any] = json.loads(self.body)
        assert data["status"] == self.status, data
        assert data["type"] == f"urn:boltorezka:problem:{data['code']}", data
        text = self.body.decode()
        assert "Traceback" not in text and 'File "' not in text and ".py" not in text, text
        return data


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
    body = await reader.readexactly(int(headers.get("Content-Length", "0")))
    return RawResponse(int(status_line.split()[1]), headers, body)


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection.

    A byte the client sent after the server closed makes the server's kernel answer with a
    reset, which ends the stream with an error rather than EOF; what arrived before it
    still counts.
    """
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes the connection (within the test's patience)."""
    async with asyncio.timeout(PATIENCE):
        return await read_until_closed(reader)


def get(path: str = "/healthz", *, close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + connection + b"\r\n"


# --- Slow request heads --------------------------------------------------------------------

PARTIAL_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n"
SLOW_SOCKETS = 200


# Trickled a byte at a time: the request line itself, or a header after a whole line.
TRICKLES = [(b"GET /", b"a" * 10_000), (PARTIAL_HEAD, b"X-Trickle: " + b"a" * 10_000)]


async def _slowloris(
    server: Server, start: bytes, trickle: bytes, stop: asyncio.Event
) -> tuple[bytes, float]:
    """Send ``start``, then a byte of ``trickle`` every 0.2 s until the server hangs up.

    Returns what the server sent and how long the socket lived.
    """
    started = time.monotonic()
    reader, writer = await server.connect()
    writer.write(start)
    received = asyncio.ensure_future(read_until_closed(reader))
    try:
        for byte in trickle:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await asyncio.shield(received)
            if received.done() or stop.is_set():
                break
            writer.write(bytes([byte]))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        async with asyncio.timeout(PATIENCE):
            answer = await received
        return answer, time.monotonic() - started
    finally:
        received.cancel()
        writer.close()


async def test_slow_request_heads_are_cut_off_while_normal_requests_work(
    test_db: TestDatabase, tmp_path: Path
) -> None:
    async with serving(test_db, tmp_path, HTTP_HEADER_TIMEOUT_SECONDS="1") as server:
        stop = asyncio.Event()
        # If the server never hangs up, the trickle stops at PATIENCE and the test fails.
        stopper = asyncio.get_running_loop().call_later(PATIENCE, stop.set)
        slow = [
            asyncio.create_task(_slowloris(server, *TRICKLES[n % 2], stop))
            for n in range(SLOW_SOCKETS)
        ]
        try:
            # While they trickle, the server still answers everyone else, WebSocket included.
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{server.base}/healthz") as response:
                    assert response.status == 200
                async with http.post(
                    f"{server.base}/v1/auth/register",
                    json={"username": "prompt", "password": PASSWORD},
                ) as response:
                    assert response.status == 201, await response.text()
                    token = (await response.json())["accessToken"]
            async with BoltorezkaClient(
                f"ws://127.0.0.1:{server.port}/v1/ws", token, reconnect=False
            ) as ws:
                # Longer than the head deadline: an open WebSocket owes the server no head.
                await asyncio.sleep(1.5)
                assert (await ws.request("ping", {"ts": 7}))["ts"] == 7
            results = await asyncio.gather(*slow)
        finally:
            stopper.cancel()
            stop.set()
            for task in slow:
                task.cancel()
    for answer, lived in results:
        # Cut off by the deadline, not by the test's patience, however busy the machine.
        assert lived < PATIENCE / 2, lived
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"Content-Type: application/problem+json" in head
        assert b"Connection: close" in head
        problem = json.loads(body)
        assert problem["code"] == "request_timeout" and problem["status"] == 408
        assert problem["retryable"] is True


async def test_head_deadline_and_keep_alive_idle_are_separate(
    test_db: TestDatabase, tmp_path: Path
) -> None:
    async with serving(
        test_db, tmp_path, HTTP_HEADER_TIMEOUT_SECONDS="1", HTTP_KEEPALIVE_SECONDS="5"
    ) as server:
        # A socket that never sends a byte is closed at the deadline, without an answer.
        silent_reader, silent_writer = await server.connect()
        # Between two requests, an idle keep-alive connection owes no head yet: a second
        # request after longer than the head deadline is answered on the same connection.
        reader, writer = await server.connect()
        writer.write(get())
        assert (await read_response(reader)).status == 200
        await asyncio.sleep(2.0)
        writer.write(get())
        assert (await read_response(reader)).status == 200
        # ...but the next head has its own deadline once its first byte arrives.
        writer.write(PARTIAL_HEAD)
        late = await read_response(reader)
        assert late.status == 408
        assert late.problem()["code"] == "request_timeout"
        assert await read_to_eof(reader) == b""
        assert await read_to_eof(silent_reader) == b""
        # And a keep-alive connection left idle is closed after the keep-alive time.
        idle_reader, idle_writer = await server.connect()
        idle_writer.write(get())
        assert (await read_response(idle_reader)).status == 200
        started = time.monotonic()
        assert await read_to_eof(idle_reader) == b""
        assert 2.0 < time.monotonic() - started < PATIENCE
        for each in (writer, silent_writer, idle_writer):
            each.close()


# --- What the parser refuses ---------------------------------------------------------------


async def _refusal(server: Server, request: bytes) -> RawResponse:
    reader, writer = await server.connect()
    try:
        writer.write(request)
        response = await read_response(reader)
        # The parser cannot find where this request ends: the connection is done.
        assert await read_to_eof(reader) == b""
        return response
    finally:
        writer.close()


async def test_parser_refusals_are_problem_json(test_db: TestDatabase, tmp_path: Path) -> None:
    many_headers = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    cases = [
        (get("/" + "a" * 9000), 414, "uri_too_long"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + many_headers + b"\r\n", 431, "headers_too_large"),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "malformed_request"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "malformed_request",
        ),
    ]
    async with serving(test_db, tmp_path) as server:
        for request, status, code in cases:
            response = await _refusal(server, request)
            assert response.status == status, (request[:40], response)
            problem = response.problem()
            assert problem["code"] == code, problem
            assert problem["requestId"] == response.headers["X-Request-ID"]
            assert len(problem["detail"]) <= 200
        # Just under the limits the request reaches the router like any other.
        reader, writer = await server.connect()
        writer.write(get("/" + "a" * 8000, close=True))
        response = await read_response(reader)
        assert (response.status, response.problem()["code"]) == (404, "route_not_found")
        writer.close()
        # And nothing the server logged is a traceback of the client's mistakes.
    assert "Traceback" not in server.log.read_text()


Client = TestClient[Any, Any]


async def test_an_undecodable_body_is_the_clients_mistake(client: Client) -> None:
    # Declared gzip, but not gzip: the body cannot be read, which is a 400, not a crash.
    response = await client.post(
        "/v1/auth/register",
        data=b'{"username": "gz", "password": "not gzip at all"}',
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    problem = await expect_problem(response, 400, "malformed_request")
    assert "content-encoding" in problem["detail"].lower(), problem
    assert "Traceback" not in await response.text()


# --- The client's address behind proxies ---------------------------------------------------

XFF = "X-Forwarded-For"


def _networks(*items: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item) for item in items)


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # An untrusted peer's header is never read.
        ("198.51.100.1", ["6.6.6.6"], "198.51.100.1"),
        # The rightmost untrusted entry is the client; whatever is left of it is the client's.
        ("127.0.0.1", ["6.6.6.6, 203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["6.6.6.6, 203.0.113.7, 10.0.0.2"], "203.0.113.7"),
        # Repeated fields form one list, in order (HAProxy adds its own field).
        ("127.0.0.1", ["6.6.6.6", "203.0.113.7"], "203.0.113.7"),
        # Every hop trusted: the furthest one is where the request came from.
        ("127.0.0.1", ["10.1.1.1, 10.2.2.2"], "10.1.1.1"),
        # Malformed entries stop the walk at the last hop known to be true.
        ("127.0.0.1", ["203.0.113.7, not-an-ip"], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.7:443"], "127.0.0.1"),
        ("127.0.0.1", ["unknown, 10.0.0.9"], "10.0.0.9"),
        ("127.0.0.1", ["[2001:db8::1]"], "127.0.0.1"),
        ("127.0.0.1", ["fe80::1%" + "x" * 5000], "127.0.0.1"),
        # Empty and missing headers leave the peer.
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", [" , ,"], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.7,, "], "203.0.113.7"),
        # IPv6, and IPv4 peers seen through a dual-stack socket.
        ("::ffff:127.0.0.1", ["2001:db8::7"], "2001:db8::7"),
        ("127.0.0.1", ["::ffff:203.0.113.7"], "203.0.113.7"),
        # No peer address at all (a Unix socket).
        ("", ["203.0.113.7"], ""),
        # A crafted chain of trusted addresses is read only so far.
        ("127.0.0.1", [", ".join(["6.6.6.6"] + ["10.0.0.1"] * 40)], "10.0.0.1"),
    ],
)
def test_forwarded_client(peer: str, forwarded: list[str], expected: str) -> None:
    trusted = _networks("127.0.0.1", "10.0.0.0/8")
    assert forwarded_client(peer, forwarded, trusted) == expected
    assert MAX_FORWARDED_HOPS < 40


async def _failed_login(client: Client, number: int, headers: Any) -> int:
    response = await client.post(
        "/v1/auth/login",
        json={"username": f"nobody{number}", "password": "wrong password"},
        headers=headers,
    )
    if response.status == 401:
        await expect_problem(response, 401, "invalid_credentials")
    else:
        await expect_problem(response, 429, "rate_limited")
    return response.status


async def _login_ips(pool: asyncpg.Pool) -> list[str | None]:
    rows = await pool.fetch("SELECT ip FROM audit_log WHERE action = 'auth.login' ORDER BY id")
    return [row["ip"] for row in rows]


@pytest.mark.parametrize("trusted", [(), ("10.0.0.0/8",)], ids=["no-proxies", "other-proxies"])
async def test_an_untrusted_peer_cannot_choose_its_address(
    services: Services, pool: asyncpg.Pool, trusted: tuple[str, ...]
) -> None:
    client = await make_client(
        services, login_rate_per_minute=3, trusted_proxies=_networks(*trusted)
    )
    try:
        # A fresh "address" for every attempt: the budget is still the peer's.
        statuses = [await _failed_login(client, n, {XFF: f"203.0.113.{n}"}) for n in range(4)]
        assert statuses == [401, 401, 401, 429]
        assert await _login_ips(pool) == ["127.0.0.1"] * 3
    finally:
        await client.close()


async def test_behind_a_trusted_proxy_limits_and_audit_key_on_the_client(
    services: Services, pool: asyncpg.Pool
) -> None:
    client = await make_client(
        services, login_rate_per_minute=3, trusted_proxies=_networks("127.0.0.1", "10.0.0.0/8")
    )
    try:
        # The client spoofs the left of the header; the proxies' entries at the right hold.
        statuses = [
            await _failed_login(client, n, {XFF: f"6.6.6.{n}, 203.0.113.7, 10.0.0.2"})
            for n in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        # Another client behind the same proxy has a budget of its own, in either form of
        # the header (one list, or HAProxy's field added to the client's).
        other = [(XFF, "203.0.113.7"), (XFF, "198.51.100.9")]
        assert await _failed_login(client, 10, CIMultiDict(other)) == 401
        assert await _failed_login(client, 11, {XFF: "198.51.100.9"}) == 401
        # A malformed entry from the proxy counts on the proxy, and breaks nothing.
        assert await _failed_login(client, 12, {XFF: "203.0.113.7, garbage"}) == 401
        assert await _login_ips(pool) == ["203.0.113.7"] * 3 + ["198.51.100.9"] * 2 + ["127.0.0.1"]
    finally:
        await client.close()


async def test_websocket_connect_limit_keys_on_the_forwarded_client(services: Services) -> None:
    client = await make_client(
        services, ws_connect_rate_per_minute=2, trusted_proxies=_networks("127.0.0.1")
    )
    url = f"http://127.0.0.1:{client.server.port}/v1/ws"
    try:
        async with aiohttp.ClientSession() as http:

            async def connect(address: str) -> int:
                try:
                    async with http.ws_connect(url, headers={XFF: address}):
                        return 101
                except aiohttp.WSServerHandshakeError as exc:
                    return exc.status

            assert [await connect("203.0.113.7") for _ in range(3)] == [101, 101, 429]
            assert await connect("198.51.100.9") == 101
    finally:
        await client.close()


def test_trusted_proxies_setting() -> None:
    def from_env(**values: str) -> Settings:
        return Settings.from_env({f"BOLTOREZKA_{k}": v for k, v in values.items()})

    assert from_env().trusted_proxies == ()
    settings = from_env(TRUSTED_PROXIES="10.0.0.5, 172.16.0.0/12,2001:db8::/32,")
    assert settings.trusted_proxies == _networks("10.0.0.5/32", "172.16.0.0/12", "2001:db8::/32")
    for bad in ("10.0.0.300", "10.0.0.1/8", "proxy.internal"):
        with pytest.raises(ConfigError, match="BOLTOREZKA_TRUSTED_PROXIES"):
            from_env(TRUSTED_PROXIES=bad)
    # The old switch believed the client's own entry: it must not pass silently.
    with pytest.raises(ConfigError, match="BOLTOREZKA_TRUSTED_PROXIES"):
        from_env(TRUST_PROXY_HEADERS="true")
    assert from_env(TRUST_PROXY_HEADERS="false").trusted_proxies == ()
    assert from_env().http_header_timeout_seconds == 10.0
    assert from_env(HTTP_HEADER_TIMEOUT_SECONDS="2.5").http_header_timeout_seconds == 2.5
    for name in ("HTTP_HEADER_TIMEOUT_SECONDS", "HTTP_KEEPALIVE_SECONDS"):
        with pytest.raises(ConfigError, match=f"BOLTOREZKA_{name}"):
            from_env(**{name: "0"})


# --- An unreachable database at start-up ---------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [("serve",), ("migrate",), ("serve", "--no-migrate")],
    ids=["serve", "migrate", "serve-empty-pool"],
)
async def test_an_unreachable_database_is_one_line_and_a_distinct_exit(
    command: tuple[str, ...],
) -> None:
    port = free_port()  # nothing listens there
    secret = "pw-never-printed"
    settings = {"DATABASE_URL": f"postgresql://boltorezka:{secret}@127.0.0.1:{port}/boltorezka"}
    if "--no-migrate" in command:
        settings["DB_POOL_MIN"] = "0"  # an empty pool connects on first use: checked anyway
    code, out, err = await run_cli(*command, env=cli_env(**settings))
    assert code == EXIT_DATABASE_UNAVAILABLE == 6, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("boltorezka: cannot connect to the database at "), err
    assert f"postgresql://boltorezka:***@127.0.0.1:{port}/boltorezka" in lines[0]
    assert "ConnectionRefusedError" in lines[0]
    assert "Traceback" not in err + out
    assert secret not in err + out
