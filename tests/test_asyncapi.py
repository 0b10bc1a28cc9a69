"""protocol/asyncapi.json is generated from the protocol structs and describes exactly them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any, get_args

import pytest
from boltorezka_client import BoltorezkaClient
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

import boltorezka.realtime.handlers  # noqa: F401  (defines the realtime-only error codes)
from boltorezka import __version__
from boltorezka.errors import AppError
from boltorezka.realtime import protocol
from boltorezka.realtime.closecodes import CloseCode
from boltorezka.runtime import Services
from tests.conftest import make_client
from tests.helpers import add_member, create_room, register

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "gen_asyncapi.py"
PROTOCOL_DIR = ROOT / "protocol"
DOCUMENT = PROTOCOL_DIR / "asyncapi.json"
CHANNEL = "realtime"
# File URIs, so the document's relative refs (`schemas/client.json#/...`) resolve as any
# AsyncAPI tool resolves them: against the document's own location.
DOCUMENT_URI = DOCUMENT.as_uri()
SCHEMA_FILES = ("schemas/client.json", "schemas/server.json")
# AsyncAPI 3.0 §"Components Object": keys of reusable objects must match this.
COMPONENT_KEY = re.compile(r"^[a-zA-Z0-9.\-_]+$")
REPLIES = frozenset({"ack", "nack"})


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return _load(DOCUMENT)


@cache
def _registry() -> Registry[Any]:
    # The document has no `$schema` of its own; its schemas are JSON Schema 2020-12.
    resources = [(DOCUMENT_URI, DRAFT202012.create_resource(_load(DOCUMENT)))]
    for name in SCHEMA_FILES:
        path = PROTOCOL_DIR / name
        resources.append((path.as_uri(), DRAFT202012.create_resource(_load(path))))
    registry: Registry[Any] = Registry().with_resources(resources)
    return registry


def _lookup(ref: str) -> Any:
    """What ``ref``, written in the document, points to; Unresolvable if it dangles."""
    return _registry().resolver(base_uri=DOCUMENT_URI).lookup(ref).contents


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for a schema written in the document (its refs resolve from there)."""
    return Draft202012Validator(
        {"$ref": _absolute(schema["$ref"])} if "$ref" in schema else schema,
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _absolute(ref: str) -> str:
    target, _, pointer = ref.partition("#")
    base = (DOCUMENT.parent / target).as_uri() if target else DOCUMENT_URI
    return f"{base}#{pointer}"


def _problems(schema: dict[str, Any], value: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(value)'}: {error.message}"
        for error in _validator(schema).iter_errors(value)
    ]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for value in node.values():
            found += _refs(value)
        return found
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _channel_message(doc: dict[str, Any], ref: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """A `#/channels/realtime/messages/X` ref -> (component name, message object)."""
    prefix = f"#/channels/{CHANNEL}/messages/"
    assert ref["$ref"].startswith(prefix), ref
    entry = doc["channels"][CHANNEL]["messages"][ref["$ref"].removeprefix(prefix)]
    name = entry["$ref"].removeprefix("#/components/messages/")
    return name, doc["components"]["messages"][name]


def _operations(doc: dict[str, Any], action: str) -> dict[str, dict[str, Any]]:
    return {key: op for key, op in doc["operations"].items() if op["action"] == action}


def _app_error_codes() -> set[str]:
    found: set[str] = set()
    pending = [AppError]
    while pending:
        cls = pending.pop()
        found.add(cls.code)
        pending += cls.__subclasses__()
    return found


def test_committed_document_is_the_generated_one() -> None:
    result = _run("--check")
    assert result.returncode == 0, result.stderr


def test_check_reports_a_drifted_or_missing_document(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    assert _run("--out", out).returncode == 0
    assert _run("--check", "--out", out).returncode == 0

    out.write_text(out.read_text(encoding="utf-8") + " ", encoding="utf-8")
    drifted = _run("--check", "--out", out)
    assert drifted.returncode == 1
    assert f"{out} is out of date" in drifted.stderr

    out.unlink()
    missing = _run("--check", "--out", out)
    assert missing.returncode == 1
    assert f"{out} is missing" in missing.stderr
    # --check must not repair anything.
    assert not out.exists()


def test_document_has_the_structure_asyncapi_3_requires(doc: dict[str, Any]) -> None:
    """No AsyncAPI meta-schema is available offline, so the spec's rules are checked here."""
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc) <= {
        "asyncapi",
        "id",
        "info",
        "servers",
        "defaultContentType",
        "channels",
        "operations",
        "components",
    }
    info = doc["info"]
    assert isinstance(info["title"], str) and info["title"]
    assert info["version"] == __version__
    assert info["x-protocol-version"] == protocol.PROTOCOL_VERSION
    for server in doc["servers"].values():
        assert {"host", "protocol"} <= set(server)
        assert server["protocol"] == "ws"

    assert list(doc["channels"]) == [CHANNEL]
    channel = doc["channels"][CHANNEL]
    assert channel["address"] == "/v1/ws"
    for server_ref in channel["servers"]:
        assert server_ref["$ref"].removeprefix("#/servers/") in doc["servers"]

    for key, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive"), key
        assert operation["channel"] == {"$ref": f"#/channels/{CHANNEL}"}, key
        assert operation["messages"], key
        for ref in operation["messages"]:
            _channel_message(doc, ref)  # an operation may list only its channel's messages
        reply = operation.get("reply")
        if reply is not None:
            assert operation["action"] == "send", key
            assert reply["channel"] == {"$ref": f"#/channels/{CHANNEL}"}, key
            for ref in reply["messages"]:
                _channel_message(doc, ref)

    for kind, objects in doc["components"].items():
        assert all(COMPONENT_KEY.match(key) for key in objects), kind
    for name, message in doc["components"]["messages"].items():
        assert {"name", "summary", "payload", "contentType"} <= set(message), name
        correlation = message.get("correlationId")
        if correlation is not None:
            assert _lookup(correlation["$ref"])["location"].startswith("$message.payload#/")


def test_every_type_has_one_message_in_its_direction(doc: dict[str, Any]) -> None:
    """Requests are what a client sends; the rest it receives, ack and nack as replies."""
    sent = [
        _channel_message(doc, ref)
        for op in _operations(doc, "send").values()
        for ref in op["messages"]
    ]
    pushed = [
        _channel_message(doc, ref)
        for op in _operations(doc, "receive").values()
        for ref in op["messages"]
    ]
    replies = {
        _channel_message(doc, ref)[1]["name"]
        for op in _operations(doc, "send").values()
        for ref in op["reply"]["messages"]
    }

    sent_tags = Counter(message["name"] for _, message in sent)
    pushed_tags = Counter(message["name"] for _, message in pushed)
    assert set(sent_tags) == protocol.CLIENT_TYPES, set(sent_tags) ^ protocol.CLIENT_TYPES
    assert set(pushed_tags) | replies == protocol.SERVER_TYPES
    assert replies == REPLIES
    assert max(sent_tags.values()) == 1 and max(pushed_tags.values()) == 1
    requests = {name for name, _ in sent}
    listed = requests | {name for name, _ in pushed} | {"Ack", "Nack"}
    assert listed == set(doc["components"]["messages"])
    assert listed == set(doc["channels"][CHANNEL]["messages"])

    structs = {
        s.__name__: s
        for s in (*get_args(protocol.ClientMessage), *get_args(protocol.ServerMessage))
    }
    for name, message in doc["components"]["messages"].items():
        definition = _lookup(message["payload"]["$ref"])
        assert definition["properties"]["type"] == {"enum": [message["name"]]}, name
        assert protocol.message_type(structs[name]) == message["name"], name
        schema = "client.json" if name in requests else "server.json"
        assert message["payload"]["$ref"] == f"schemas/{schema}#/$defs/{name}", name


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = _refs(doc)
    assert any(ref.startswith("schemas/") for ref in refs)
    for ref in refs:
        try:
            _lookup(ref)
        except Unresolvable as exc:
            pytest.fail(f"{ref} does not resolve: {type(exc).__name__}")


def test_every_request_replies_with_its_ack_result_or_a_nack(doc: dict[str, Any]) -> None:
    server_schema = _load(PROTOCOL_DIR / "schemas" / "server.json")
    known_codes = _app_error_codes() | set(protocol.ERROR_CODES)
    seen = set()
    for key, operation in _operations(doc, "send").items():
        ((_, message),) = [_channel_message(doc, ref) for ref in operation["messages"]]
        request = message["name"]
        seen.add(request)
        reply = operation["reply"]
        assert [_channel_message(doc, ref)[1]["name"] for ref in reply["messages"]] == [
            "ack",
            "nack",
        ]
        result = protocol.ACK_RESULTS[request]
        expected = (
            {"type": "null"}
            if result is None
            else {"$ref": f"schemas/server.json#/$defs/{result.__name__}"}
        )
        assert reply["x-ack-result"] == expected, key
        if result is not None:
            assert _lookup(expected["$ref"]) == server_schema["$defs"][result.__name__]
        # The schemas' own map of ack results, written relative to server.json, agrees.
        shape = server_schema["x-ackResults"][request]
        if "$ref" in shape:
            shape = {"$ref": f"schemas/server.json{shape['$ref']}"}
        assert shape == expected, key
        unknown = set(reply["x-nack-codes"]) - known_codes
        assert not unknown, (key, unknown)
        for code in reply["x-nack-codes"]:
            assert f"`{code}`" in reply["description"], (key, code)
    assert seen == protocol.CLIENT_TYPES


def test_ack_result_schemas_tell_right_from_wrong(doc: dict[str, Any]) -> None:
    nothing = doc["operations"]["sendTypingStart"]["reply"]["x-ack-result"]
    assert _problems(nothing, None) == []
    assert _problems(nothing, {}) != []
    left = doc["operations"]["sendRoomLeave"]["reply"]["x-ack-result"]
    room = "0b5e3c1a-7d2f-4c8e-9a61-3f2d8e4b5c71"
    assert _problems(left, {"roomId": room, "left": False}) == []
    assert _problems(left, {"roomId": room, "left": "no"}) != []


def test_close_codes_are_those_of_closecodes(doc: dict[str, Any]) -> None:
    channel = doc["channels"][CHANNEL]
    assert channel["x-close-codes"] == [
        {"code": int(code), "name": code.name, "description": code.description}
        for code in CloseCode
    ]
    for code in CloseCode:
        assert f"| {int(code)} | `{code.name}` | {code.description} |" in channel["description"]


def test_messages_say_what_their_struct_docstrings_say(doc: dict[str, Any]) -> None:
    """The prose lives on the structs: a docstring edit must reach the document."""
    for struct in (*get_args(protocol.ClientMessage), *get_args(protocol.ServerMessage)):
        message = doc["components"]["messages"][struct.__name__]
        text = " ".join((struct.__doc__ or "").split())
        assert message["summary"] in text, struct.__name__
        described = " ".join(message.get("description", "").split())
        assert described in text, struct.__name__


@pytest.mark.parametrize("action", ["send", "receive"])
def test_examples_decode_as_their_message_and_fit_its_schema(
    doc: dict[str, Any], action: str
) -> None:
    names = {
        name
        for op in _operations(doc, action).values()
        for name, _ in (_channel_message(doc, ref) for ref in op["messages"])
    }
    if action == "receive":
        names |= {"Ack", "Nack"}
    examples = 0
    for name in sorted(names):
        message = doc["components"]["messages"][name]
        for example in message.get("examples", []):
            examples += 1
            frame = json.dumps(example["payload"])
            decoded: Any
            if action == "send":
                decoded = protocol.decode_client(frame, max_frame_bytes=64 * 1024)
            else:
                decoded = protocol.decode_server(frame)
            assert type(decoded).__name__ == name, (name, example["name"])
            assert _problems(message["payload"], example["payload"]) == [], example["name"]
    assert examples >= len(names)


async def test_live_auth_and_call_acks_fit_the_documented_results(
    doc: dict[str, Any], services: Services
) -> None:
    """The document's ack results, checked against what a server with TURN and STUN sends."""
    results = {
        op["messages"][0]["$ref"].rsplit("/", 1)[-1]: op["reply"]["x-ack-result"]
        for op in _operations(doc, "send").values()
    }
    configured = await make_client(
        services,
        turn_secret="turn-secret-for-tests-0123456789abcdef",
        turn_uris=("turn:127.0.0.1:3478?transport=udp",),
        stun_uris=("stun:127.0.0.1:3478",),
    )
    try:
        alice = await register(configured)
        bob = await register(configured)
        room = await create_room(configured, alice)
        await add_member(configured, room, alice, bob)
        url = f"ws://127.0.0.1:{configured.server.port}/v1/ws"
        async with (
            BoltorezkaClient(url, alice.access_token) as a,
            BoltorezkaClient(url, bob.access_token) as b,
        ):
            auth = a.auth_result
            assert _problems(results["Auth"], auth) == []
            assert [s for s in auth["iceServers"] if "credential" in s], auth
            # A refresh on the live socket brings TURN credentials as fresh as a new auth.
            refreshed = await a.refresh_token(alice.access_token)
            assert _problems(results["AuthRefresh"], refreshed) == []
            assert [s for s in refreshed["iceServers"] if "credential" in s], refreshed
            started = await a.request("call.start", {"roomId": room, "mode": "p2p"})
            assert _problems(results["CallStart"], started) == []
            joined = await b.request("call.join", {"callId": started["call"]["callId"]})
            assert _problems(results["CallJoin"], joined) == []
            # The schema is strict enough to tell: a result missing its call is refused.
            assert _problems(results["CallJoin"], {**joined, "call": None}) != []
    finally:
        await configured.close()
