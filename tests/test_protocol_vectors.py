"""Run the language-neutral vectors in protocol/vectors through `decode_client`, and
through jsonschema against protocol/schemas/client.json, which must agree with it.

The Swift and web clients run the same files, so these tests pin the server to them rather
than the other way round: a failing case means the codec changed behaviour.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from boltorezka.realtime import protocol
from boltorezka.realtime.protocol import ProtocolError, decode_client, decode_server, encode
from tests.frame_schemas import problems

VECTORS = Path(__file__).resolve().parent.parent / "protocol" / "vectors"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


VALID = _load("valid.json")
INVALID = _load("invalid.json")


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["name"] for case in cases]


def _as_text(frame: Any) -> str:
    # Valid frames are stored as JSON objects for readability; send them as compact text.
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("case", VALID["cases"], ids=_ids(VALID["cases"]))
def test_valid_vector(case: dict[str, Any]) -> None:
    msg = decode_client(_as_text(case["frame"]), max_frame_bytes=VALID["maxFrameBytes"])

    built = msgspec.to_builtins(msg)
    assert {k: built[k] for k in ("type", "requestId", "payload")} == case["decoded"]
    assert built["v"] == case["frame"]["v"]
    # Re-encoding the canonical form must decode to the same message.
    assert decode_client(encode(msg), max_frame_bytes=VALID["maxFrameBytes"]) == msg


@pytest.mark.parametrize("case", INVALID["cases"], ids=_ids(INVALID["cases"]))
def test_invalid_vector(case: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client(case["frame"], max_frame_bytes=INVALID["maxFrameBytes"])

    assert (info.value.code, info.value.request_id) == (case["code"], case["requestId"])
    # Bytes and text frames must be classified identically.
    with pytest.raises(ProtocolError) as from_bytes:
        decode_client(case["frame"].encode(), max_frame_bytes=INVALID["maxFrameBytes"])
    assert (from_bytes.value.code, from_bytes.value.request_id) == (
        case["code"],
        case["requestId"],
    )


def test_every_client_type_has_a_valid_vector() -> None:
    covered = {case["decoded"]["type"] for case in VALID["cases"]}
    assert covered == protocol.CLIENT_TYPES


def test_every_error_code_has_an_invalid_vector() -> None:
    covered = {case["code"] for case in INVALID["cases"]}
    assert covered == set(protocol.ERROR_CODES)


def test_vector_names_are_unique() -> None:
    names = _ids(VALID["cases"]) + _ids(INVALID["cases"])
    assert len(names) == len(set(names))


def test_vectors_share_one_frame_limit() -> None:
    assert VALID["maxFrameBytes"] == INVALID["maxFrameBytes"] == 65536


def test_nack_for_each_invalid_vector_is_a_valid_server_frame() -> None:
    for case in INVALID["cases"]:
        with pytest.raises(ProtocolError) as info:
            decode_client(case["frame"], max_frame_bytes=INVALID["maxFrameBytes"])
        frame = encode(info.value.to_nack())
        assert decode_server(frame) == info.value.to_nack()
        assert json.loads(frame)["requestId"] == case["requestId"]


# --- the schemas agree with the codec (jsonschema, independent of msgspec) -----------------

# What a JSON Schema cannot say about a frame: its size in bytes.
_BEYOND_A_SCHEMA = {protocol.FRAME_TOO_LARGE}


@pytest.mark.parametrize("case", VALID["cases"], ids=_ids(VALID["cases"]))
def test_valid_vector_fits_the_client_schema(case: dict[str, Any]) -> None:
    assert problems("client.json", case["frame"]) == []


def _refused_by_schema_cases() -> list[dict[str, Any]]:
    cases = []
    for case in INVALID["cases"]:
        try:
            json.loads(case["frame"])
        except ValueError:
            continue  # not JSON: nothing for a schema to look at
        if case["code"] not in _BEYOND_A_SCHEMA:
            cases.append(case)
    return cases


@pytest.mark.parametrize("case", _refused_by_schema_cases(), ids=_ids(_refused_by_schema_cases()))
def test_invalid_vector_is_refused_by_the_client_schema(case: dict[str, Any]) -> None:
    assert problems("client.json", json.loads(case["frame"])) != []
