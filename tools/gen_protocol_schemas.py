#!/usr/bin/env python3
"""Generate the realtime protocol's JSON Schemas from the msgspec structs.

Writes `protocol/schemas/client.json` (the client→server union) and
`protocol/schemas/server.json` (the server→client union). The output is deterministic
(sorted keys, indent 2, trailing newline) so the committed files diff cleanly.

    python tools/gen_protocol_schemas.py            # regenerate
    python tools/gen_protocol_schemas.py --check    # exit 1 if committed files drifted

`--out DIR` writes or checks another directory instead (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "protocol" / "schemas"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Run as a plain script, so the repository root is not on sys.path unless we put it there.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from boltorezka.realtime import protocol  # noqa: E402
from tools.schema_text import clean_descriptions  # noqa: E402

# What the server refuses in any text it reads (PostgreSQL stores no U+0000).
NO_NUL_PATTERN = "^[^\\u0000]*$"


def _as_strict_as_the_server(node: Any, *, in_properties: bool = False) -> None:
    """Tighten what msgspec cannot say: ``v`` is one of the versions the server speaks
    (its struct types it as any int; the codec checks the value), and free text refuses
    U+0000 (the codec checks every string of a frame)."""
    if isinstance(node, list):
        for item in node:
            _as_strict_as_the_server(item)
        return
    if not isinstance(node, dict):
        return
    if in_properties:
        for name, prop in node.items():
            if name == "v" and isinstance(prop, dict) and prop.get("type") == "integer":
                for loose in ("minimum", "type", "default"):
                    prop.pop(loose, None)
                prop["enum"] = list(protocol.SUPPORTED_VERSIONS)
            _as_strict_as_the_server(prop)
        return
    if node.get("type") == "string" and not {"format", "enum", "pattern", "const"} & set(node):
        node["pattern"] = NO_NUL_PATTERN
    for key, value in node.items():
        _as_strict_as_the_server(value, in_properties=key == "properties")


def _document(
    union: Any, title: str, description: str, *, ack_results: bool = False
) -> dict[str, Any]:
    results = sorted(
        {r for r in protocol.ACK_RESULTS.values() if r is not None} if ack_results else set(),
        key=lambda struct: struct.__name__,
    )
    (root, *_), components = msgspec.json.schema_components(
        [union, *results], ref_template="#/$defs/{name}"
    )
    _as_strict_as_the_server(components)
    document = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": title,
        "description": description,
        **root,
        "$defs": components,
    }
    if ack_results:
        # An ack does not say which request it answers (the client knows, by requestId),
        # so a schema cannot pick the result's shape: this map does, per request type.
        document["x-ackResults"] = {
            request: {"type": "null"} if result is None else {"$ref": f"#/$defs/{result.__name__}"}
            for request, result in sorted(protocol.ACK_RESULTS.items())
        }
    cleaned: dict[str, Any] = clean_descriptions(document)
    return cleaned


def render() -> dict[str, str]:
    """Map each schema file name to its exact expected text."""
    version = protocol.PROTOCOL_VERSION
    docs = {
        "client.json": _document(
            protocol.ClientMessage,
            f"Boltorezka realtime client-to-server message (protocol v{version})",
            "One JSON text frame sent by a client. Every message carries `requestId`, "
            "echoed in the `ack` or `nack` that answers it. Generated from "
            "boltorezka/realtime/protocol.py by tools/gen_protocol_schemas.py; do not edit.",
        ),
        "server.json": _document(
            protocol.ServerMessage,
            f"Boltorezka realtime server-to-client message (protocol v{version})",
            "One JSON text frame sent by the server. Clients must ignore unknown fields and "
            "unknown message types. `x-ackResults` names the shape of `payload.result` in "
            "the ack of each request type. Generated from boltorezka/realtime/protocol.py "
            "by tools/gen_protocol_schemas.py; do not edit.",
            ack_results=True,
        ),
    }
    return {
        name: json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, doc in docs.items()
    }


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and name each file that differs from the generated one",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="schema directory")
    args = parser.parse_args(argv)
    out: Path = args.out

    drifted = []
    for name, text in render().items():
        path = out / name
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current == text:
            continue
        if args.check:
            drifted.append(path)
            state = "missing" if current is None else "out of date"
            print(f"{_display(path)} is {state}", file=sys.stderr)
        else:
            out.mkdir(parents=True, exist_ok=True)
            # newline="" keeps "\n" on every platform, so the bytes match the check.
            with path.open("w", encoding="utf-8", newline="") as fh:
                fh.write(text)
            print(f"wrote {_display(path)}")
    if drifted:
        print("regenerate with: python tools/gen_protocol_schemas.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
