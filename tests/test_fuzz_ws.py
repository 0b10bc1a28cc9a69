"""Hypothesis fuzzes the realtime protocol: the envelope codec alone, then a live socket.

The codec properties: ``protocol.decode_client`` turns any text, any bytes, any JSON tree
and any mutation of the vectors in ``protocol/vectors`` into either a client message or a
``ProtocolError`` with a documented code (never another exception); what it decodes
encodes back to the same message; the same frame decodes alike as ``str`` and as UTF-8
bytes; every error's nack encodes and decodes; server messages round-trip. The client-frame
mask guard (``realtime/wsreader.py``) is checked against a model over random frames cut at
random points.

The live test sends arbitrary and mutated envelopes of every client request type over one
authenticated socket of a real server, each followed by a ``ping``. The local codec says how
each frame must be answered: exactly one ``nack`` with its code and ``requestId`` for a
broken frame, exactly one ``ack`` or ``nack`` (never ``internal_error``) carrying the
``requestId`` for a request; the ``ping`` after it shows the socket is still usable. Frames
past the violation budget must close the socket with 4008, after which the test reconnects.
The server must log no error and no traceback throughout.

Bounded and deterministic: derandomized generation, so a run repeats the same inputs, and a
fixed number of examples per test (``BOLTOREZKA_FUZZ_EXAMPLES`` sets it for every test, as
for ``tests/test_fuzz_openapi.py``; ``BOLTOREZKA_FUZZ_SEED`` switches to seeded random
generation). For a longer hunt:

    BOLTOREZKA_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_ws.py
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import hypothesis
import pytest
import structlog
import websockets
from aiohttp import WSCloseCode
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from boltorezka.realtime import protocol
from boltorezka.realtime.closecodes import CloseCode
from boltorezka.realtime.wsreader import MaskedFramesOnly
from boltorezka.runtime import Services
from tests.helpers import add_member, create_room, post_message, quick_accounts
from tests.test_ws_protocol import custom_app, ws_url_of

VECTORS = Path(__file__).resolve().parent.parent / "protocol" / "vectors"
VALID = json.loads((VECTORS / "valid.json").read_text(encoding="utf-8"))
INVALID = json.loads((VECTORS / "invalid.json").read_text(encoding="utf-8"))
MAX_FRAME = VALID["maxFrameBytes"]
TEMPLATES: list[dict[str, Any]] = [case["frame"] for case in VALID["cases"]]
assert {t["type"] for t in TEMPLATES} == protocol.CLIENT_TYPES, "a template for every type"

_ENV_EXAMPLES = int(os.environ.get("BOLTOREZKA_FUZZ_EXAMPLES", "0"))
_ENV_SEED = os.environ.get("BOLTOREZKA_FUZZ_SEED")
Test = TypeVar("Test", bound=Callable[..., Any])


def fuzz_settings(examples: int, **extra: Any) -> Callable[[Test], Test]:
    """Hypothesis settings of this file: ``examples`` unless the environment says otherwise,
    derandomized unless a seed is given, no example database (runs stay independent)."""
    configured = hypothesis.settings(
        max_examples=_ENV_EXAMPLES or examples,
        derandomize=_ENV_SEED is None,
        deadline=None,
        database=None,
        **extra,
    )

    def apply(test: Test) -> Test:
        wrapped = configured(test)
        return wrapped if _ENV_SEED is None else hypothesis.seed(int(_ENV_SEED))(wrapped)

    return apply


# --- strategies --------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24)
)
json_trees = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=16,
)
request_ids = (
    st.builds(lambda n: f"f-{n}", st.integers(0, 10_000))
    | st.text(max_size=70)
    | st.none()
    | st.integers()
)
type_names = st.sampled_from(sorted(protocol.CLIENT_TYPES | protocol.SERVER_TYPES)) | st.text(
    max_size=16
)


@st.composite
def mutated_envelope(draw: st.DrawFn, template: dict[str, Any]) -> dict[str, Any]:
    """``template`` changed in one to three places: a key dropped, an unknown key added, or a
    value replaced with arbitrary JSON, in the envelope or its payload."""
    frame = copy.deepcopy(template)
    for _ in range(draw(st.integers(1, 3))):
        payload = frame.get("payload")
        target = frame if not isinstance(payload, dict) or draw(st.booleans()) else payload
        action = draw(st.sampled_from(["drop", "add", "replace"]))
        keys = sorted(target)
        if action == "drop" and keys:
            del target[draw(st.sampled_from(keys))]
        elif action == "add":
            target[draw(st.text(min_size=1, max_size=10))] = draw(json_trees)
        elif keys:
            key = draw(st.sampled_from(keys))
            if key == "requestId":
                target[key] = draw(request_ids)
            elif key == "type":
                target[key] = draw(type_names)
            else:
                target[key] = draw(json_trees)
    return frame


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, inserted or cut: often no longer UTF-8 or JSON."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(out) - 1)))
        if action == "flip" and out:
            out[at] = draw(st.integers(0, 255))
        elif action == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif action == "delete" and out:
            del out[at]
        else:
            del out[at:]
    return bytes(out)


envelopes = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 1, 1, 0, 2, "1", True, None]) | json_scalars,
        "type": type_names,
        "requestId": request_ids,
        "payload": json_trees,
    },
)
vector_frames = st.sampled_from(TEMPLATES).flatmap(mutated_envelope)
any_frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    json_trees.map(json.dumps),
    envelopes.map(json.dumps),
    vector_frames.map(json.dumps),
    vector_frames.map(lambda f: json.dumps(f, ensure_ascii=False).encode()).flatmap(mutated_bytes),
    st.sampled_from(INVALID["cases"]).map(lambda c: c["frame"].encode()).flatmap(mutated_bytes),
)


# --- 1. the codec ------------------------------------------------------------------------


def _check_outcome(frame: str | bytes) -> protocol.ClientMessage | protocol.ProtocolError:
    """Decode ``frame`` and check whichever outcome it has; return it."""
    try:
        msg = protocol.decode_client(frame, max_frame_bytes=MAX_FRAME)
    except protocol.ProtocolError as error:
        assert error.code in protocol.ERROR_CODES, error.code
        assert error.request_id is None or 1 <= len(error.request_id) <= 64
        assert error.msg_type is None or error.msg_type in protocol.CLIENT_TYPES
        nack = error.to_nack()
        assert protocol.decode_server(protocol.encode(nack)) == nack
        return error
    assert protocol.message_type(msg) in protocol.CLIENT_TYPES
    assert 1 <= len(msg.request_id) <= 64
    assert protocol.decode_client(protocol.encode(msg), max_frame_bytes=MAX_FRAME) == msg
    return msg


@fuzz_settings(300)
@given(any_frames)
def test_decode_client_answers_any_frame_with_a_message_or_a_protocol_error(
    frame: str | bytes,
) -> None:
    _check_outcome(frame)


def _outcome_key(outcome: protocol.ClientMessage | protocol.ProtocolError) -> Any:
    if isinstance(outcome, protocol.ProtocolError):
        return ("error", outcome.code, outcome.request_id)
    return ("message", outcome)


@fuzz_settings(200)
@given(st.one_of(st.text(max_size=200), envelopes.map(json.dumps), vector_frames.map(json.dumps)))
def test_a_frame_decodes_alike_as_text_and_as_utf8_bytes(text: str) -> None:
    # The gateway hands the codec raw bytes; clients and tests often hand it text.
    assert _outcome_key(_check_outcome(text)) == _outcome_key(_check_outcome(text.encode()))


uuids = st.uuids()
server_messages = st.one_of(
    st.builds(
        protocol.nack,
        st.none() | st.text(min_size=1, max_size=64),
        st.text(min_size=1, max_size=30),
        st.text(max_size=60),
        retryable=st.booleans(),
        retry_after_ms=st.none() | st.integers(0, 2**53 - 1),
    ),
    st.builds(
        protocol.ack,
        st.text(min_size=1, max_size=64),
        json_trees,
    ),
    st.builds(
        lambda room, user, active: protocol.TypingIndicator(
            payload=protocol.TypingPayload(room_id=room, user_id=user, active=active)
        ),
        uuids,
        uuids,
        st.booleans(),
    ),
    st.builds(
        lambda user, status: protocol.PresenceChanged(
            payload=protocol.PresenceChangedPayload(user_id=user, status=status)
        ),
        uuids,
        st.sampled_from(["online", "away", "dnd", "offline"]),
    ),
    st.builds(
        lambda room, message, seq: protocol.ChatDeleted(
            payload=protocol.ChatDeletedPayload(room_id=room, message_id=message, seq=seq)
        ),
        uuids,
        uuids,
        st.integers(0, 2**53 - 1),
    ),
)


@fuzz_settings(200)
@given(server_messages)
def test_server_messages_round_trip(message: protocol.ServerMessage) -> None:
    assert protocol.decode_server(protocol.encode(message)) == message


# --- 2. the mask guard -------------------------------------------------------------------


class _Reader:
    """Stands in for aiohttp's reader: keeps what the guard passes on."""

    def __init__(self) -> None:
        self.fed = bytearray()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.fed += data
        return False, b""

    def feed_eof(self) -> None:
        pass


class _Queue:
    def __init__(self) -> None:
        self.error: BaseException | None = None

    def set_exception(self, exc: BaseException) -> None:
        self.error = exc


def _wire_frame(length: int, *, masked: bool, opcode: int = 0x1) -> bytes:
    header = bytes([0x80 | opcode])
    bit = 0x80 if masked else 0
    if length < 126:
        header += bytes([bit | length])
    elif length < 65536:
        header += bytes([bit | 126]) + length.to_bytes(2, "big")
    else:
        header += bytes([bit | 127]) + length.to_bytes(8, "big")
    key = b"\x01\x02\x03\x04" if masked else b""
    return header + key + bytes(length)  # payload content is irrelevant to the guard


frame_specs = st.lists(
    st.tuples(
        st.integers(0, 200) | st.sampled_from([125, 126, 127, 65535, 65536]),
        st.booleans() | st.just(True),
        st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]),
    ),
    min_size=1,
    max_size=8,
)


@fuzz_settings(200)
@given(frame_specs, st.data())
def test_the_mask_guard_passes_exactly_the_frames_before_the_first_unmasked_one(
    specs: list[tuple[int, bool, int]], data: st.DataObject
) -> None:
    frames = [_wire_frame(n, masked=m, opcode=op) for n, m, op in specs]
    stream = b"".join(frames)
    first_bad = next((i for i, (_, masked, _) in enumerate(specs) if not masked), None)
    expected = stream if first_bad is None else b"".join(frames[:first_bad])
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=6)))
    reader, queue = _Reader(), _Queue()
    guard = MaskedFramesOnly(reader, queue)
    failed = False
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        eof, _ = guard.feed_data(stream[start:end])
        if eof:
            failed = True
            break
    assert failed is (first_bad is not None)
    assert (queue.error is not None) is failed
    if queue.error is not None:
        assert getattr(queue.error, "code", None) == WSCloseCode.PROTOCOL_ERROR
    if first_bad is None:
        assert bytes(reader.fed) == stream
    else:
        # A read may end right after the first byte of the unmasked frame's header, which is
        # then passed on; the reader never gets the rest, so it never delivers that frame.
        assert bytes(reader.fed) in (expected, expected + frames[first_bad][:1])


# --- 3. a live socket --------------------------------------------------------------------

ID_FIELDS = ("roomId", "messageId", "callId", "replyTo", "to")
NOTHING = "00000000-0000-4000-8000-000000000000"  # an id no room, message or call has
VIOLATION_BUDGET = 25


@dataclass
class LiveSocket:
    """One authenticated socket of a real server, and what the fuzzer has learnt about it."""

    url: str
    token: str
    room_id: str
    message_ids: list[str]
    call_ids: list[str] = field(default_factory=list)
    ws: ClientConnection | None = None
    violations: int = 0
    frames: int = 0

    async def open(self) -> None:
        ws = await websockets.connect(self.url, ping_interval=None, max_size=None, close_timeout=2)
        greeting = json.loads(await ws.recv())
        assert greeting["type"] == "server.capabilities"
        await ws.send(
            json.dumps(
                {"v": 1, "type": "auth", "requestId": "~auth", "payload": {"token": self.token}}
            )
        )
        answer = await self._answer(ws, "~auth")
        assert answer["type"] == "ack", answer
        self.ws, self.violations = ws, 0

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    @staticmethod
    async def _answer(ws: ClientConnection, request_id: str) -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame.get("requestId") == request_id and frame["type"] in ("ack", "nack"):
                return frame

    async def exchange(self, frame: bytes, *, binary: bool) -> None:
        """Send ``frame``, then a ping; check the answers the codec predicts came back."""
        assert self.ws is not None
        self.frames += 1
        expected_id: str | None
        if binary:
            expected_id, expected_code, violation = None, "binary_not_supported", True
        else:
            try:
                msg = protocol.decode_client(frame, max_frame_bytes=MAX_FRAME)
            except protocol.ProtocolError as error:
                expected_id, expected_code, violation = error.request_id, error.code, True
            else:
                expected_id, expected_code, violation = msg.request_id, None, False
        await self.ws.send(frame, text=not binary)
        self.violations += violation
        if self.violations > VIOLATION_BUDGET:
            await self._expect_budget_close(expected_id, expected_code)
            return
        sentinel = f"~ping-{self.frames}"
        await self.ws.send(json.dumps({"v": 1, "type": "ping", "requestId": sentinel}))
        answers = []
        async with asyncio.timeout(10):
            while True:
                got: dict[str, Any] = json.loads(await self.ws.recv())
                assert got["type"] != "error", got
                if got["type"] not in ("ack", "nack"):
                    continue  # events: presence, replayed messages, call state...
                if got.get("requestId") == sentinel:
                    assert got["type"] == "ack", got  # still usable
                    break
                answers.append(got)
        assert len(answers) == 1, (frame, answers)
        (answer,) = answers
        assert answer.get("requestId") == expected_id, (frame, answer)
        code = answer["payload"].get("code") if answer["type"] == "nack" else "ack"
        if expected_code is not None:
            assert (answer["type"], code) == ("nack", expected_code), (frame, answer)
        else:
            assert code != "internal_error", (frame, answer)  # an unhandled exception
        self._learn(answer)

    async def _expect_budget_close(
        self, expected_id: str | None, expected_code: str | None
    ) -> None:
        assert self.ws is not None
        nacks = []
        try:
            async with asyncio.timeout(10):
                while True:
                    got = json.loads(await self.ws.recv())
                    if got["type"] == "nack":
                        nacks.append(got)
        except ConnectionClosed:
            pass
        assert [(n.get("requestId"), n["payload"]["code"]) for n in nacks] == [
            (expected_id, expected_code)
        ]
        assert self.ws.close_code == CloseCode.POLICY_VIOLATION_BUDGET
        await self.open()

    def known_id(self, key: str, pick: int) -> str:
        """The ``pick``-th id this socket knows for payload field ``key`` (wrapping around),
        or an id of nothing while it knows none."""
        known = {
            "roomId": [self.room_id],
            "messageId": self.message_ids,
            "replyTo": self.message_ids,
            "callId": self.call_ids,
        }.get(key, [])
        return known[pick % len(known)] if known else NOTHING

    def _learn(self, answer: dict[str, Any]) -> None:
        """Keep ids the server made, so later frames can aim at real calls and messages."""
        result = answer["payload"].get("result") if answer["type"] == "ack" else None
        if not isinstance(result, dict):
            return
        call = result.get("call")
        if isinstance(call, dict) and isinstance(call.get("callId"), str):
            self.call_ids.append(call["callId"])
        if isinstance(result.get("messageId"), str):
            self.message_ids.append(result["messageId"])


# How often each kind of frame comes: mostly requests a client could send, aimed at real
# rooms, messages and calls so that they reach the services, not only the codec.
MODES = ["request"] * 6 + ["edge"] * 3 + ["mutated"] * 2 + ["bytes"] * 2 + ["text", "binary"]


@st.composite
def live_frames(draw: st.DrawFn, live: LiveSocket) -> tuple[bytes, bool]:
    """A frame for ``live``: a request of some type (``request``), one with a field at the
    edge of its constraints (``edge``), a mutated one, broken bytes, text or a binary frame.

    Every choice is drawn, never read from the socket's state: Hypothesis must see the same
    draws when it replays an example. Ids are all 36 characters, so what a drawn index
    resolves to does not change the frame's length, and with it later draws, either.
    """
    mode = draw(st.sampled_from(MODES))
    if mode == "binary":
        return draw(st.binary(max_size=64)), True
    if mode == "text":
        return draw(st.text(max_size=100)).encode(), False
    frame = copy.deepcopy(draw(st.sampled_from(TEMPLATES)))
    frame["requestId"] = f"f-{draw(st.integers(0, 9999)):04d}"
    payload = frame.get("payload")
    if isinstance(payload, dict):
        for key in list(payload):
            if key in ID_FIELDS:
                aim = draw(st.sampled_from(["known"] * 4 + ["fresh", "template"]))
                if aim == "known":
                    payload[key] = live.known_id(key, draw(st.integers(0, 15)))
                elif aim == "fresh":
                    payload[key] = str(draw(st.uuids()))
            elif key == "token":
                payload[key] = draw(st.sampled_from([live.token, live.token, payload[key], "x"]))
        fields = sorted(k for k in payload if k not in ID_FIELDS and k != "token")
        if mode == "edge" and fields:
            key = draw(st.sampled_from(fields))
            payload[key] = draw(_value_for(key))
    if mode == "mutated":
        frame = draw(mutated_envelope(frame))
    encoded = json.dumps(frame, ensure_ascii=False).encode()
    if mode == "bytes":
        encoded = draw(mutated_bytes(encoded))
    return encoded, False


def _value_for(key: str) -> st.SearchStrategy[Any]:
    """Values near the edges of each payload field's constraints."""
    edges: dict[str, st.SearchStrategy[Any]] = {
        "body": st.text(max_size=40),
        "clientMsgId": st.text(max_size=70),
        "seq": st.integers(-1, 10) | st.just(2**53),
        "lastSeq": st.integers(-1, 10) | st.just(2**53),
        "before": st.integers(-1, 10),
        "after": st.integers(-1, 10),
        "limit": st.integers(-1, 250),
        "status": st.sampled_from(["online", "away", "dnd", "offline", "busy"]),
        "mode": st.sampled_from(["p2p", "sfu", "auto", "mesh"]),
        "sdp": st.text(max_size=40),
        "ts": st.integers(-1, 2**53),
        "outcome": st.sampled_from(["connected", "failed", "maybe"]),
        "setupMs": st.integers(-1, 700_000),
    }
    return edges.get(key, json_trees)


@pytest.fixture
async def live(
    client: TestClient[Any, Any], services: Services, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[LiveSocket, list[MutableMapping[str, Any]]]]:
    """A socket on a server with a room, a member and a message; yields it with the list of
    the server's structlog records (standard-library records at WARNING and up go to caplog)."""
    owner, member = await quick_accounts(services, 2)
    room = await create_room(client, owner)
    await add_member(client, room, owner, member)
    message = (await post_message(client, room, member, "fuzz me"))["id"]
    caplog.set_level(logging.WARNING)
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as records:
        async with custom_app(
            services,
            ws_violation_budget=VIOLATION_BUDGET,
            ws_connect_rate_per_minute=100_000,
        ) as app:
            socket = LiveSocket(ws_url_of(app), owner.access_token, room, [message])
            await socket.open()
            try:
                yield socket, records
            finally:
                await socket.close()


# One server and socket for every example: that is the point, not an accident.
@fuzz_settings(
    250, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
async def test_every_frame_on_a_live_socket_gets_its_one_typed_answer(
    live: tuple[LiveSocket, list[MutableMapping[str, Any]]],
    caplog: pytest.LogCaptureFixture,
    data: st.DataObject,
) -> None:
    socket, records = live
    frame, binary = data.draw(live_frames(socket), label="frame")
    await socket.exchange(frame, binary=binary)
    failures = [r for r in records if r.get("log_level") in ("error", "critical")]
    failures += [r for r in records if "exc_info" in r or "exception" in r]
    assert failures == [], failures
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
