"""The server's WebSocket response: aiohttp's, plus the client-masking rule its reader skips.

RFC 6455 §5.1: a client MUST mask every frame it sends, and the server MUST close the
connection when a frame is not masked, with 1002 (protocol error). aiohttp's
``WebSocketReader`` is direction-agnostic (it unmasks a masked frame and takes an unmasked
one as it is, on both sides; aiohttp's THREAT_MODEL.md lists "unmasked client frames
accepted" as open), so :class:`StrictWebSocketResponse` puts :class:`MaskedFramesOnly` in
front of it. That guard walks the frame headers of the raw byte stream (a few bytes per
frame; payloads are skipped by length, never copied), hands the reader everything up to an
unmasked frame, and then fails the stream the way the reader fails it for its own framing
errors, so aiohttp sends the close frame (1002) and drops the connection.

The guard is installed through two private attributes of aiohttp's ``RequestHandler``:
``_message_tail`` (bytes that arrived right behind the upgrade request, before a parser was
set) and ``_payload_parser`` (where the handler feeds every later read). The locked aiohttp
version is pinned by ``tests/test_ws_hardening.py``, which sends unmasked frames both after
the handshake and in the same packet as it.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from aiohttp import WSCloseCode, web
from aiohttp.http_websocket import WebSocketError, WebSocketWriter
from aiohttp.web_request import BaseRequest

_MASK_BIT = 0x80
_LENGTH_BITS = 0x7F
_MASK_KEY = 4
# Second-byte length values that announce a 16-bit or a 64-bit extended length.
_EXTENDED = {126: 2, 127: 8}
UNMASKED = "client frames must be masked (RFC 6455, section 5.1)"


class _Reader(Protocol):
    """What the guard needs of aiohttp's ``WebSocketReader``."""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...

    def feed_eof(self) -> None: ...


class MaskedFramesOnly:
    """Feeds a WebSocket reader only the frames that come masked; fails at the first other.

    ``feed_data`` and ``feed_eof`` are the parser interface aiohttp's ``RequestHandler``
    calls. ``reader`` is aiohttp's ``WebSocketReader`` and ``queue`` the message queue it
    fills, on which the failure is set.
    """

    __slots__ = ("_failed", "_header", "_need", "_queue", "_reader", "_skip")

    def __init__(self, reader: Any, queue: Any) -> None:
        self._reader: _Reader = reader
        self._queue = queue
        # Header bytes of the frame being read, when a read ended inside its header.
        self._header = bytearray()
        # How many header bytes the current frame has in all (2 until its length is known).
        self._need = 2
        # Bytes of the current frame still to pass (extended length, key, payload).
        self._skip = 0
        self._failed = False

    def feed_eof(self) -> None:
        self._reader.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._failed:
            return True, b""
        bad = self._first_unmasked(data)
        if bad < 0:
            return self._reader.feed_data(data)
        if bad:
            # Frames before the unmasked one are delivered, as they would be without it.
            eof, tail = self._reader.feed_data(data[:bad])
            if eof:
                return eof, tail
        self._failed = True
        self._queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, UNMASKED))
        return True, b""

    def _first_unmasked(self, data: bytes) -> int:
        """Offset in ``data`` of the header of the first unmasked frame, or -1.

        A header that began in an earlier read reports offset 0: its first bytes already
        went to the reader, which never gets the rest, so the frame is never delivered.
        """
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            if not self._header and end - pos >= 2:
                # Fast path, the usual case: the whole header is in this read.
                second = data[pos + 1]
                if not second & _MASK_BIT:
                    return pos
                length = second & _LENGTH_BITS
                extra = _EXTENDED.get(length, 0)
                if end - pos >= 2 + extra:
                    if extra:
                        length = int.from_bytes(data[pos + 2 : pos + 2 + extra], "big")
                    pos += 2 + extra
                    self._skip = _MASK_KEY + length
                    continue
            start = pos - len(self._header)
            take = min(self._need - len(self._header), end - pos)
            self._header += data[pos : pos + take]
            pos += take
            if len(self._header) < self._need:
                break  # the header continues in the next read
            second = self._header[1]
            if not second & _MASK_BIT:
                return max(start, 0)
            length = second & _LENGTH_BITS
            extra = _EXTENDED.get(length, 0)
            if self._need == 2 and extra:
                self._need += extra  # read the extended length before the payload size
                continue
            if extra:
                length = int.from_bytes(self._header[2:], "big")
            self._skip = _MASK_KEY + length
            self._header.clear()
            self._need = 2
        return -1


class StrictWebSocketResponse(web.WebSocketResponse[Literal[False]]):
    """``web.WebSocketResponse`` that refuses unmasked client frames (close 1002).

    Text frames arrive as bytes (``decode_text=False``), so the codec sees invalid UTF-8 and
    answers it with a ``malformed_json`` nack, instead of aiohttp closing the connection
    with 1007 before the application can say which frame was wrong.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(decode_text=False, **kwargs)

    def _post_start(
        self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter
    ) -> None:
        handler: Any = request.protocol
        # Bytes sent right behind the upgrade request wait here until a parser is set; take
        # them so that they go through the guard as well.
        early: bytes = handler._message_tail
        handler._message_tail = b""
        super()._post_start(request, protocol, writer)
        guard = MaskedFramesOnly(self._parser, self._reader)
        handler._payload_parser = guard
        if early:
            eof, _ = guard.feed_data(early)
            if eof:
                handler.close()
