"""protocol/asyncapi.json must describe exactly the realtime protocol the code implements."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from boltorezka_client import BoltorezkaClient

from boltorezka.realtime import protocol
from boltorezka.realtime.closecodes import CloseCode
from boltorezka.rtc.turn import IceServer
from boltorezka.runtime import Services
from tests.conftest import make_client
from tests.helpers import create_room, register

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "protocol"
DOCUMENT = PROTOCOL_DIR / "asyncapi.json"
CHANNEL = "realtime"
# Operations are written from the client's side: what it sends, what it receives.
DIRECTIONS = {
    "send": ("client.json", protocol.CLIENT_TYPES),
    "receive": ("server.json", protocol.SERVER_TYPES),
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return _load(DOCUMENT)


def _pointer(document: Any, pointer: str) -> Any:
    """Follow a JSON pointer such as ``/components/messages/Ack``; KeyError if it dangles."""
    node = document
    for raw in pointer.removeprefix("/").split("/") if pointer not in ("", "/") else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(pointer)
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for value in node.values():
            found += _refs(value)
        return found
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    target, _, pointer = ref.partition("#")
    document = doc if target == "" else _load(PROTOCOL_DIR / target)
    return _pointer(document, pointer)


def _operation_messages(doc: dict[str, Any], operation: str) -> dict[str, dict[str, Any]]:
    """Component message name -> message object, for the messages an operation lists."""
    listed: dict[str, dict[str, Any]] = {}
    for item in doc["operations"][operation]["messages"]:
        ref = item["$ref"]
        assert ref.startswith(f"#/channels/{CHANNEL}/messages/"), ref
        channel_entry = _resolve(doc, ref)
        component_ref = channel_entry["$ref"]
        assert component_ref.startswith("#/components/messages/"), component_ref
        name = component_ref.removeprefix("#/components/messages/")
        assert name not in listed, f"{name} listed twice in {operation}"
        listed[name] = _resolve(doc, component_ref)
    return listed


def test_document_describes_the_websocket_channel(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"].startswith("3.")
    assert doc["info"]["version"] == str(protocol.PROTOCOL_VERSION)
    assert list(doc["channels"]) == [CHANNEL]
    assert doc["channels"][CHANNEL]["address"] == "/v1/ws"
    assert set(doc["operations"]) == set(DIRECTIONS)
    for name, operation in doc["operations"].items():
        assert operation["action"] == name
        assert operation["channel"] == {"$ref": f"#/channels/{CHANNEL}"}


@pytest.mark.parametrize("operation", sorted(DIRECTIONS))
def test_every_type_has_exactly_one_message_in_its_direction(
    doc: dict[str, Any], operation: str
) -> None:
    schema_file, expected = DIRECTIONS[operation]
    messages = _operation_messages(doc, operation)

    tags = Counter(message["name"] for message in messages.values())
    assert set(tags) == set(expected), set(tags) ^ set(expected)
    assert all(count == 1 for count in tags.values()), tags
    for name, message in messages.items():
        payload_ref = message["payload"]["$ref"]
        assert payload_ref.startswith(f"schemas/{schema_file}#/$defs/"), (name, payload_ref)
        definition = _resolve(doc, payload_ref)
        assert definition["properties"]["type"] == {"enum": [message["name"]]}, name


def test_no_message_is_unlisted_or_in_both_directions(doc: dict[str, Any]) -> None:
    sent = set(_operation_messages(doc, "send"))
    received = set(_operation_messages(doc, "receive"))

    assert not sent & received
    assert sent | received == set(doc["components"]["messages"])
    assert sent | received == set(doc["channels"][CHANNEL]["messages"])


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = _refs(doc)
    assert refs
    for ref in refs:
        try:
            _resolve(doc, ref)
        except (KeyError, IndexError, FileNotFoundError) as exc:
            pytest.fail(f"{ref} does not resolve: {exc!r}")


def test_every_close_code_is_documented(doc: dict[str, Any]) -> None:
    description = doc["channels"][CHANNEL]["description"]
    for code in CloseCode:
        assert f"| {int(code)} | `{code.name}` | {code.description} |" in description


@pytest.mark.parametrize("operation", sorted(DIRECTIONS))
def test_examples_decode_as_their_message(doc: dict[str, Any], operation: str) -> None:
    for name, message in _operation_messages(doc, operation).items():
        for example in message.get("examples", []):
            frame = json.dumps(example["payload"])
            decoded: Any
            if operation == "send":
                decoded = protocol.decode_client(frame, max_frame_bytes=64 * 1024)
            else:
                decoded = protocol.decode_server(frame)
            assert protocol.message_type(decoded) == message["name"], (name, example["name"])
            assert type(decoded).__name__ == name, (name, example["name"])


def _check_result(base: dict[str, Any], value: Any, schema: dict[str, Any], at: str) -> list[str]:
    """Where ``value`` departs from ``schema`` (the subset the documented results use);
    ``base`` is the document the schema's local refs point into."""
    if "$ref" in schema:
        target, _, pointer = schema["$ref"].partition("#")
        document = base if target == "" else _load(PROTOCOL_DIR / target)
        return _check_result(document, value, _pointer(document, pointer), at)
    kind = schema.get("type")
    if kind is None and "anyOf" in schema:
        options = [_check_result(base, value, option, at) for option in schema["anyOf"]]
        return [] if [] in options else options[0]
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{at}: not an object"]
        properties = schema.get("properties", {})
        problems = [f"{at}: {key!r} is not documented" for key in value if key not in properties]
        problems += [f"{at}: {key!r} is missing" for key in schema["required"] if key not in value]
        for key, item in value.items():
            if key in properties:
                problems += _check_result(base, item, properties[key], f"{at}.{key}")
        return problems
    if kind == "array":
        if not isinstance(value, list):
            return [f"{at}: not an array"]
        items = schema.get("items", {})
        return [
            problem
            for index, item in enumerate(value)
            for problem in _check_result(base, item, items, f"{at}[{index}]")
        ]
    expected = {"string": str, "integer": int, "boolean": bool}.get(str(kind))
    # bool is an int subclass: an integer must not be a boolean, nor a boolean an integer.
    if expected is not None and (
        not isinstance(value, expected) or isinstance(value, bool) != (expected is bool)
    ):
        return [f"{at}: not {kind}"]
    return []


def test_ice_server_schema_is_the_struct_the_server_encodes(doc: dict[str, Any]) -> None:
    schema = doc["components"]["schemas"]["IceServer"]
    fields = msgspec.structs.fields(IceServer)
    assert set(schema["properties"]) == {f.encode_name for f in fields}
    assert schema["required"] == [f.encode_name for f in fields if f.required]


async def test_auth_and_call_acks_carry_what_the_document_describes(
    doc: dict[str, Any], services: Services
) -> None:
    """The documented ack results, checked against what a server with TURN and STUN sends."""
    assert doc["components"]["messages"]["Auth"]["x-ack-result"] == {
        "$ref": "#/components/schemas/AuthResult"
    }
    configured = await make_client(
        services,
        turn_secret="turn-secret-for-tests-0123456789abcdef",
        turn_uris=("turn:127.0.0.1:3478?transport=udp",),
        stun_uris=("stun:127.0.0.1:3478",),
    )
    try:
        alice = await register(configured)
        room = await create_room(configured, alice)
        url = f"ws://127.0.0.1:{configured.server.port}/v1/ws"
        async with BoltorezkaClient(url, alice.access_token) as ws:
            auth = ws.auth_result
            schema = doc["components"]["messages"]["Auth"]["x-ack-result"]
            assert _check_result(doc, auth, schema, "auth") == []
            assert [s for s in auth["iceServers"] if "credential" in s], auth
            # A refresh on the live socket brings TURN credentials as fresh as a new auth.
            refreshed = await ws.refresh_token(alice.access_token)
            assert [s for s in refreshed["iceServers"] if "credential" in s], refreshed
            joined = await ws.request("call.start", {"roomId": room, "mode": "p2p"})
            schema = doc["components"]["messages"]["CallStart"]["x-ack-result"]
            assert _check_result(doc, joined, schema, "call.start") == []
    finally:
        await configured.close()
