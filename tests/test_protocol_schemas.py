"""The committed JSON Schemas and protocol README must match the code they describe."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from boltorezka.realtime import protocol
from boltorezka.realtime.closecodes import CloseCode
from tools.schema_text import clean_descriptions

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "gen_protocol_schemas.py"
SCHEMAS = ROOT / "protocol" / "schemas"


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _schema(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return data


def test_committed_schemas_are_up_to_date() -> None:
    result = _run("--check")
    assert result.returncode == 0, result.stderr


def _descriptions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "description" and isinstance(v, str)]
        return found + [d for v in node.values() for d in _descriptions(v)]
    if isinstance(node, list):
        return [d for item in node for d in _descriptions(item)]
    return []


def test_descriptions_do_not_depend_on_how_msgspec_dedents_docstrings() -> None:
    """msgspec releases dedent docstring continuation lines differently; the output must not."""
    as_older_releases_emit = {"description": "First line,\n    and the rest.", "x": [{}]}
    as_newer_releases_emit = {"description": "First line,\nand the rest.", "x": [{}]}
    assert clean_descriptions(as_older_releases_emit) == clean_descriptions(as_newer_releases_emit)

    documents = [_schema("client.json"), _schema("server.json")]
    documents.append(json.loads((ROOT / "protocol" / "openapi.json").read_text(encoding="utf-8")))
    texts = [text for document in documents for text in _descriptions(document)]
    assert texts, "no descriptions found"
    assert [t for t in texts if inspect.cleandoc(t) != t] == []


def test_check_names_the_drifted_file(tmp_path: Path) -> None:
    assert _run("--out", tmp_path).returncode == 0
    assert _run("--check", "--out", tmp_path).returncode == 0

    client = tmp_path / "client.json"
    client.write_text(client.read_text(encoding="utf-8") + " ", encoding="utf-8")
    (tmp_path / "server.json").unlink()
    result = _run("--check", "--out", tmp_path)

    assert result.returncode == 1
    assert f"{client} is out of date" in result.stderr
    assert f"{tmp_path / 'server.json'} is missing" in result.stderr
    # --check must not repair anything.
    assert not (tmp_path / "server.json").exists()


@pytest.mark.parametrize(
    ("name", "tags"),
    [("client.json", protocol.CLIENT_TYPES), ("server.json", protocol.SERVER_TYPES)],
)
def test_schema_lists_every_type(name: str, tags: frozenset[str]) -> None:
    schema = _schema(name)
    mapping: dict[str, str] = schema["discriminator"]["mapping"]

    assert schema["discriminator"]["propertyName"] == "type"
    assert set(mapping) == tags
    assert len(schema["anyOf"]) == len(tags)
    for tag, ref in mapping.items():
        definition = schema["$defs"][ref.removeprefix("#/$defs/")]
        assert definition["properties"]["type"] == {"enum": [tag]}


def test_client_payloads_forbid_unknown_fields() -> None:
    defs = _schema("client.json")["$defs"]
    payload_refs = {
        d["properties"]["payload"]["$ref"].removeprefix("#/$defs/")
        for d in defs.values()
        if "payload" in d.get("properties", {})
    }
    assert payload_refs
    assert all(defs[name]["additionalProperties"] is False for name in payload_refs)


def test_client_envelope_requires_request_id() -> None:
    schema = _schema("client.json")
    for ref in schema["discriminator"]["mapping"].values():
        definition = schema["$defs"][ref.removeprefix("#/$defs/")]
        assert {"type", "v", "requestId"} <= set(definition["required"])


def test_readme_documents_every_close_and_error_code() -> None:
    readme = (ROOT / "protocol" / "README.md").read_text(encoding="utf-8")
    for code in CloseCode:
        assert f"| {int(code)} | `{code.name}` | {code.description} |" in readme
    for error_code, description in protocol.ERROR_CODES.items():
        assert f"| `{error_code}` | {description} |" in readme
    for tag in protocol.CLIENT_TYPES | protocol.SERVER_TYPES:
        assert f"`{tag}`" in readme
