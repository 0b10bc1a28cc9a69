"""protocol/asyncapi.json must describe exactly the realtime protocol the code implements."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from boltorezka.realtime import protocol
from boltorezka.realtime.closecodes import CloseCode

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
