"""Validate frames against the committed JSON Schemas with an independent validator.

``jsonschema`` shares no code with msgspec, which generated the schemas and encodes the
frames: a frame the server sends that its own schema refuses, or a vector the server
accepts that the schema refuses (or the other way round), shows that the two drifted.
A frame is checked against the one definition its ``type`` names (the schema's
discriminator), so an error names the field instead of listing every alternative.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parent.parent / "protocol" / "schemas"


@cache
def _document(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return document


@cache
def _validators(name: str) -> dict[str, Draft202012Validator]:
    """One validator per message type of ``client.json`` or ``server.json``."""
    document = _document(name)
    registry: Registry[Any] = Registry().with_resource(
        f"urn:boltorezka:{name}", Resource.from_contents(document)
    )
    validators = {}
    for branch in document["anyOf"]:
        definition = branch["$ref"].removeprefix("#/$defs/")
        (tag,) = document["$defs"][definition]["properties"]["type"]["enum"]
        schema = {"$ref": f"urn:boltorezka:{name}#/$defs/{definition}"}
        validators[tag] = Draft202012Validator(
            schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
    return validators


def problems(name: str, frame: Any) -> list[str]:
    """Why ``frame`` (decoded JSON) does not fit ``name``'s schema; empty if it does."""
    if not isinstance(frame, dict):
        return ["a frame is a JSON object"]
    validator = _validators(name).get(frame.get("type"))  # type: ignore[arg-type]
    if validator is None:
        return [f"no message type {frame.get('type')!r}"]
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(frame)'}: {error.message}"
        for error in validator.iter_errors(frame)
    ]


@cache
def _definition_validator(name: str, definition: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        f"urn:boltorezka:{name}", Resource.from_contents(_document(name))
    )
    return Draft202012Validator(
        {"$ref": f"urn:boltorezka:{name}#/$defs/{definition}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def ack_result_problems(request_type: str, result: Any) -> list[str]:
    """Why ``result`` (decoded JSON) is not what ``x-ackResults`` says the ack of
    ``request_type`` carries; empty if it is."""
    shape = _document("server.json")["x-ackResults"].get(request_type)
    if shape is None:
        return [f"no ack result is documented for {request_type!r}"]
    if "$ref" not in shape:
        return [] if result is None else [f"the ack of {request_type} carries null"]
    definition = shape["$ref"].removeprefix("#/$defs/")
    return [
        f"result/{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in _definition_validator("server.json", definition).iter_errors(result)
    ]
