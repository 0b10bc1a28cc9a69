"""The HTTP edge below the application: a deadline on request heads, parser errors as problems.

aiohttp runs one ``RequestHandler`` per TCP connection. Left as it is, it waits for a request
head for as long as the keep-alive timer allows (an hour by default), however slowly the head
trickles in, so a few hundred sockets sending a header byte a second hold the node's file
descriptors (slowloris). It also answers what its parser refuses (a request target over
8 KiB, oversized or too many headers, garbage) in plain text, outside every middleware.

``EdgeRunner`` is the ``AppRunner`` that ``boltorezka serve`` listens with; its connections
are ``EdgeRequestHandler``s, which

- close a connection whose request head is not complete within
  ``BOLTOREZKA_HTTP_HEADER_TIMEOUT_SECONDS`` of its first byte (of the connection, for the
  first request), with a 408 problem when some of the head had arrived and silently when
  nothing had (a browser's preconnect, or a socket held open for nothing);
- close idle keep-alive connections after ``BOLTOREZKA_HTTP_KEEPALIVE_SECONDS``;
- answer parser errors with problem JSON: 414 ``uri_too_long``, 431 ``headers_too_large``,
  400 ``malformed_request``, and close the connection, as aiohttp does.

The handler reads private attributes of aiohttp's ``RequestHandler``: ``_request_count``
(bumped for every head the parser completes), ``_messages`` (the parsed requests with their
bodies, not yet handled), ``_waiter`` (pending while the connection waits for its next
request) and ``_upgraded``; tests/test_http_edge.py pins the behaviour on the locked version.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from boltorezka.api.keys import SERVICES
from boltorezka.api.problems import problem_response
from boltorezka.errors import (
    AppError,
    HeadersTooLarge,
    InternalError,
    MalformedRequest,
    RequestTimeout,
    UriTooLong,
)
from boltorezka.observability.metrics import Metrics

# The parser raises the same LineTooLong for an over-long request target and an over-long
# header field, naming only the limit it hit; two different limits tell the cases apart.
REQUEST_TARGET_LIMIT = 8192  # 8 KiB
HEADER_FIELD_LIMIT = 8190  # a header's name and value together; aiohttp's default
MAX_HEADERS = 128  # aiohttp's default
_TOO_MANY_HEADERS = "Too many headers"  # the start of the parser's message for that case
_DETAIL_LIMIT = 200
_ROUTE = "unmatched"  # the route label of requests that never reached the router

_log = structlog.get_logger("boltorezka.http")


class EdgeRunner(web.AppRunner):
    """``web.AppRunner`` for ``app`` whose connections are ``EdgeRequestHandler``s.

    The deadlines come from the settings of the services the app was built around.
    """

    __slots__ = ()

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        # The access log is the middleware's (structlog); aiohttp's own one stays off.
        super().__init__(app, access_log=None, **kwargs)

    async def _make_server(self) -> web.Server:
        # aiohttp's own server object is built (and the app started) as usual; only the
        # protocol it makes per connection changes, so everything else stays aiohttp's.
        plain = await super()._make_server()
        services = self.app[SERVICES]
        settings = services.settings
        return _EdgeServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            head_timeout=settings.http_header_timeout_seconds,
            metrics=services.metrics,
            keepalive_timeout=settings.http_keepalive_seconds,
            access_log=None,
            max_line_size=REQUEST_TARGET_LIMIT,
            max_field_size=HEADER_FIELD_LIMIT,
            max_headers=MAX_HEADERS,
        )


class _EdgeServer(web.Server):
    """aiohttp's per-listener protocol factory, making ``EdgeRequestHandler``s."""

    def __init__(
        self,
        handler: Any,
        *,
        request_factory: Any,
        handler_cancellation: bool,
        loop: asyncio.AbstractEventLoop,
        head_timeout: float,
        metrics: Metrics | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            handler,
            request_factory=request_factory,
            handler_cancellation=handler_cancellation,
            loop=loop,
            **kwargs,
        )
        # The handler's keyword arguments, kept apart from those that are the server's own.
        self._edge_loop = loop
        self._edge_kwargs = kwargs
        self._head_timeout = head_timeout
        self._metrics = metrics

    def __call__(self) -> RequestHandler:
        return EdgeRequestHandler(
            self,
            loop=self._edge_loop,
            head_timeout=self._head_timeout,
            metrics=self._metrics,
            **self._edge_kwargs,
        )


class EdgeRequestHandler(RequestHandler):
    """One HTTP connection, with a deadline on each request head and problem-JSON refusals."""

    __slots__ = (
        "_edge_loop",
        "_edge_metrics",
        "_head_bytes",
        "_head_timeout",
        "_head_timer",
        "_last_body",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        head_timeout: float,
        metrics: Metrics | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._edge_loop = loop
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        # The body of the request parsed last; until it is complete, bytes are its body.
        self._last_body: StreamReader | None = None
        self._edge_metrics = metrics

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # The first head's clock starts at once: a socket that sends nothing at all holds
        # a descriptor as surely as one that trickles.
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Bytes that arrive while the parser is between requests start the next head, even
        # while the previous request is still being answered (a client may send its next
        # request the moment it has read a response). Idle time before them belongs to the
        # keep-alive timer. Once upgraded (WebSocket), bytes are frames, never heads.
        body = self._last_body
        starts_head = (
            self._head_timer is None and not self._upgraded and (body is None or body.is_eof())
        )
        completed = self._request_count
        super().data_received(data)
        if self._request_count != completed:
            # A whole head (or a parse error, answered next) arrived; the handler owns the
            # connection from here, body included.
            self._disarm_head_timer()
            self._last_body = self._messages[-1][1] if self._messages else None
        elif starts_head and data:
            self._arm_head_timer()
            self._head_bytes = len(data)
        elif self._head_timer is not None:
            self._head_bytes += len(data)

    def _arm_head_timer(self) -> None:
        self._head_bytes = 0
        self._head_timer = self._edge_loop.call_later(self._head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None:
            return
        waiter = self._waiter
        idle = waiter is not None and not waiter.done()
        if self._head_bytes and idle:
            # Part of a head arrived: the client is owed an answer. Nothing else is being
            # written on this connection (it waits for a request), so the bytes go as they are.
            # (Behind a request still being answered, only closing is left.)
            transport.write(_raw_response(problem_response(RequestTimeout(), uuid.uuid4().hex)))
            self._count(RequestTimeout.status)
        _log.info(
            "request head timed out",
            peer=_peer(transport),
            received_bytes=self._head_bytes,
            timeout_seconds=self._head_timeout,
        )
        # Closing flushes the 408 first; aiohttp's own keep-alive expiry closes the same way.
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        """aiohttp's last resort: a head its parser refused, or a handler that failed outside
        every middleware. Problem JSON either way, never a traceback; the connection closes."""
        if request.writer.output_size > 0:
            # As in aiohttp: a response is half sent, so only dropping the connection is left.
            raise ConnectionError("a response was already started; cannot send the error")
        error = _parse_error(exc) if isinstance(exc, HttpProcessingError) else None
        if error is None:
            self.log_exception("unhandled error outside the middleware", exc_info=exc)
            error = InternalError()
        else:
            _log.info(
                "request refused by the parser",
                status=error.status,
                code=error.code,
                peer=_peer(self.transport),
            )
        self._count(error.status)
        response = problem_response(error, uuid.uuid4().hex)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # After answering, aiohttp reads what is left of the body to keep the connection;
        # a body the client broke fails there again and would be logged as an unhandled
        # error with a traceback. It was answered (400) already: a line is enough.
        exc = kwargs.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            _log.info("request body unreadable; connection closed", peer=_peer(self.transport))
            return
        super().log_exception(*args, **kwargs)

    def _count(self, status: int) -> None:
        if self._edge_metrics is not None:
            self._edge_metrics.http_requests.labels(_ROUTE, "-", str(status)).inc()


def _parse_error(exc: HttpProcessingError) -> AppError:
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == REQUEST_TARGET_LIMIT:
            return UriTooLong(f"the request target is longer than {REQUEST_TARGET_LIMIT} bytes")
        return HeadersTooLarge(f"a header is longer than {HEADER_FIELD_LIMIT} bytes")
    if isinstance(exc, BadHttpMessage) and exc.message.startswith(_TOO_MANY_HEADERS):
        return HeadersTooLarge(f"the request has more than {MAX_HEADERS} headers")
    # The parser's own words help a client developer; only their first line, which names
    # the problem (the rest draws a caret under the offending bytes).
    first_line = (exc.message or "").strip().splitlines()
    detail = first_line[0].rstrip(":")[:_DETAIL_LIMIT] if first_line else None
    return MalformedRequest(detail)


def _raw_response(response: web.Response) -> bytes:
    """``response`` as HTTP/1.1 bytes, for a connection no request object exists on."""
    body = response.body
    assert isinstance(body, bytes)
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


def _peer(transport: asyncio.BaseTransport | None) -> str:
    peername = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return ""
