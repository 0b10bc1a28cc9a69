"""The OpenAPI document is the contract: it matches the routes, the code and real responses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from boltorezka.app import build_app
from boltorezka.errors import AppError
from boltorezka.runtime import Services
from tests.conftest import ROOT, make_client
from tests.helpers import Account, add_member, create_room, post_message, register

OPENAPI = ROOT / "protocol" / "openapi.json"
GENERATOR = ROOT / "tools" / "gen_openapi.py"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(OPENAPI.read_text(encoding="utf-8"))
    return loaded


def registered_routes(services: Services) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the real application registers."""
    app = build_app(services)
    found: set[tuple[str, str]] = set()
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None, f"route without a resource: {route!r}"
        found.add((route.method.upper(), resource.canonical))
    # aiohttp adds HEAD next to every GET; only a HEAD of its own would need documenting.
    return {(m, p) for m, p in found if not (m == "HEAD" and ("GET", p) in found)}


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


# -- (a) routes and document describe the same operations --------------------------------------


def test_every_route_is_documented_and_every_operation_is_routed(
    services: Services, doc: dict[str, Any]
) -> None:
    routes = registered_routes(services)
    documented = documented_operations(doc)
    undocumented = sorted(routes - documented)
    unrouted = sorted(documented - routes)
    assert not undocumented and not unrouted, (
        f"routes missing from protocol/openapi.json: {undocumented}; "
        f"documented operations with no route: {unrouted} "
        "(update OPERATIONS in tools/gen_openapi.py and regenerate)"
    )
    # The non-/v1 endpoints are part of the contract too.
    for path in ("/healthz", "/readyz", "/metrics", "/v1/openapi.json"):
        assert ("GET", path) in documented


def test_document_is_well_formed(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1.")
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    ids: list[str] = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            ids.append(op["operationId"])
            assert op["security"] in ([], [{"bearerAuth": []}]), (method, path)
            declared = {p["name"] for p in op["parameters"] if p.get("in") == "path"}
            assert declared == set(re.findall(r"\{([^}]+)\}", path)), (method, path)
            for status, reply in op["responses"].items():
                for media in reply.get("content", {}):
                    if media == "application/problem+json":
                        assert int(status) >= 400 and reply["x-problem-codes"], (path, status)
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    # Every $ref points at something that exists.
    for ref in re.findall(r'"\$ref": "([^"]+)"', OPENAPI.read_text(encoding="utf-8")):
        resolve(doc, ref)


def error_classes() -> list[type[AppError]]:
    found: list[type[AppError]] = []
    pending: list[type[AppError]] = [AppError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_documented_problem_codes_are_real_errors_with_that_status(doc: dict[str, Any]) -> None:
    statuses: dict[str, set[int]] = {}
    for cls in error_classes():  # the app, imported above, has loaded every module
        statuses.setdefault(cls.code, set()).add(cls.status)
    enum = set(doc["components"]["schemas"]["ProblemCode"]["enum"])
    used: set[str] = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, reply in op["responses"].items():
                for code in reply.get("x-problem-codes", ()):
                    assert int(status) in statuses.get(code, set()), (method, path, status, code)
                    used.add(code)
    assert used <= enum
    assert enum <= set(statuses)


def test_query_parameters_carry_their_limits(doc: dict[str, Any]) -> None:
    def params(path: str) -> dict[str, dict[str, Any]]:
        op = doc["paths"][path]["get"]
        return {p["name"]: p for p in op["parameters"] if p.get("in") == "query"}

    history = params("/v1/rooms/{roomId}/messages")
    assert set(history) == {"before", "after", "limit"}
    assert history["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 200,
        "default": 50,
    }
    public = params("/v1/rooms/public")
    assert set(public) == {"q", "limit", "cursor"}
    assert public["limit"]["schema"]["maximum"] == 100
    search = params("/v1/messages/search")
    assert set(search) == {"q", "limit", "cursor", "roomId"}
    assert search["q"]["required"] is True
    assert search["roomId"]["schema"]["format"] == "uuid"


# -- (b) the committed document is what the generator produces ---------------------------------


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def test_generator_check_passes() -> None:
    result = run_generator("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_generator_check_reports_drift(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    text = OPENAPI.read_text(encoding="utf-8")
    stale.write_text(text.replace('"operationId": "postMessage"', '"operationId": "sendIt"'))
    result = run_generator("--check", "--out", str(stale))
    assert result.returncode == 1
    assert "out of date" in result.stderr and "sendIt" in result.stderr, result.stderr
    missing = run_generator("--check", "--out", str(tmp_path / "absent.json"))
    assert missing.returncode == 1 and "missing" in missing.stderr
    # Without --check it writes exactly the committed bytes.
    written = tmp_path / "fresh.json"
    assert run_generator("--out", str(written)).returncode == 0
    assert written.read_bytes() == OPENAPI.read_bytes()


# -- (c) the server serves the committed document -----------------------------------------------


async def test_server_serves_the_committed_document(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.read() == OPENAPI.read_bytes()


# -- (d) real responses match their documented schemas ----------------------------------------
#
# A tiny validator for the JSON Schema subset the document uses: type, properties, required,
# additionalProperties, items, $ref, anyOf, enum and the string/number limits; ``format`` and
# annotations are ignored. It is deliberately stricter than JSON Schema on one point: an object
# property the schema does not declare is an error, so the document cannot silently lag behind
# a response that grew a field. Unknown keywords fail loudly rather than pass unchecked.

_ANNOTATIONS = {"title", "description", "default", "format", "examples"}
_KEYWORDS = _ANNOTATIONS | {
    "$ref",
    "anyOf",
    "enum",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
}
_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def resolve(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/"), f"only local refs are supported: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        assert part in node, f"unresolvable $ref {ref}"
        node = node[part]
    assert isinstance(node, dict)
    return node


def schema_errors(
    value: Any, schema: dict[str, Any], doc: dict[str, Any], at: str = "$"
) -> list[str]:
    unknown = set(schema) - _KEYWORDS
    assert not unknown, f"validator does not support {sorted(unknown)} (at {at})"
    errors: list[str] = []
    if "$ref" in schema:
        errors += schema_errors(value, resolve(doc, schema["$ref"]), doc, at)
    if "anyOf" in schema and all(schema_errors(value, s, doc, at) for s in schema["anyOf"]):
        errors.append(f"{at}: {value!r} matches none of anyOf")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: {value!r} is not one of {schema['enum']}")
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in allowed):
            return [*errors, f"{at}: expected {'/'.join(allowed)}, got {value!r}"]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                errors.append(f"{at}: missing required property {name!r}")
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(item, properties[name], doc, f"{at}.{name}")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, doc, f"{at}.{name}")
            elif "properties" in schema or extra is False:
                errors.append(f"{at}: undocumented property {name!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], doc, f"{at}[{i}]")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{at}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{at}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{at}: does not match {schema['pattern']}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{at}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{at}: above {schema['maximum']}")
    return errors


def test_validator_catches_what_it_should(doc: dict[str, Any]) -> None:
    message = {"$ref": "#/components/schemas/Message"}
    good = {
        "id": str(uuid.uuid4()),
        "roomId": str(uuid.uuid4()),
        "seq": 1,
        "senderId": str(uuid.uuid4()),
        "clientMsgId": "c1",
        "body": "hi",
        "replyTo": None,
        "createdAt": "2024-01-01T00:00:00Z",
        "editedAt": None,
        "deletedAt": None,
    }
    assert schema_errors(good, message, doc) == []
    assert schema_errors({**good, "seq": "1"}, message, doc)
    assert schema_errors({**good, "seq": True}, message, doc)
    assert schema_errors({**good, "surprise": 1}, message, doc)
    assert schema_errors({k: v for k, v in good.items() if k != "body"}, message, doc)
    assert schema_errors({**good, "replyTo": 5}, message, doc)
    page = {"$ref": "#/components/schemas/MessagePage"}
    assert schema_errors({"messages": [good], "hasMore": False}, page, doc) == []
    assert schema_errors({"messages": [{**good, "id": 1}], "hasMore": False}, page, doc)
    problem = {"$ref": "#/components/schemas/Problem"}
    assert schema_errors({"code": "no_such_code"}, problem, doc)


async def assert_documented(doc: dict[str, Any], method: str, template: str, response: Any) -> Any:
    """The response's status, media type and body are what the document says."""
    op = doc["paths"][template][method.lower()]
    status = str(response.status)
    assert status in op["responses"], f"{method} {template}: {status} is not documented"
    documented = op["responses"][status]
    media = response.content_type
    assert media in documented.get("content", {}), f"{method} {template} {status}: {media}"
    body = await response.json(content_type=None)
    errors = schema_errors(body, documented["content"][media]["schema"], doc)
    assert not errors, f"{method} {template} {status}:\n" + "\n".join(errors)
    if media == "application/problem+json":
        assert body["code"] in documented["x-problem-codes"], (template, body["code"])
    return body


async def test_core_responses_match_their_schemas(
    client: TestClient[Any, Any], doc: dict[str, Any]
) -> None:
    response = await client.post(
        "/v1/auth/register", json={"username": "contract", "password": "correct horse battery"}
    )
    pair = await assert_documented(doc, "POST", "/v1/auth/register", response)
    headers = {"Authorization": f"Bearer {pair['accessToken']}"}

    response = await client.post(
        "/v1/rooms", json={"name": "general", "kind": "public"}, headers=headers
    )
    view = await assert_documented(doc, "POST", "/v1/rooms", response)
    room = view["room"]["id"]

    messages = f"/v1/rooms/{room}/messages"
    payload = {"clientMsgId": "m1", "body": "Hello, world"}
    response = await client.post(messages, json=payload, headers=headers)
    assert response.status == 201
    await assert_documented(doc, "POST", "/v1/rooms/{roomId}/messages", response)
    replay = await client.post(messages, json=payload, headers=headers)
    assert replay.status == 200
    await assert_documented(doc, "POST", "/v1/rooms/{roomId}/messages", replay)

    response = await client.get(messages, params={"limit": "50"}, headers=headers)
    page = await assert_documented(doc, "GET", "/v1/rooms/{roomId}/messages", response)
    assert [m["seq"] for m in page["messages"]] == [1]


async def test_problem_responses_match_their_schema(
    client: TestClient[Any, Any], doc: dict[str, Any]
) -> None:
    alice = await register(client)
    missing = await client.get(f"/v1/rooms/{uuid.uuid4()}", headers=alice.headers)
    assert missing.status == 404
    body = await assert_documented(doc, "GET", "/v1/rooms/{roomId}", missing)
    assert body["code"] == "room_not_found"
    assert body["requestId"] == missing.headers["X-Request-ID"]

    room = await create_room(client, alice)
    bad = await client.get(
        f"/v1/rooms/{room}/messages", params={"limit": "0"}, headers=alice.headers
    )
    assert bad.status == 422
    body = await assert_documented(doc, "GET", "/v1/rooms/{roomId}/messages", bad)
    assert body["field"] == "limit"

    anonymous = await client.post("/v1/rooms", json={"name": "x"})
    assert anonymous.status == 401
    await assert_documented(doc, "POST", "/v1/rooms", anonymous)

    not_upgraded = await client.get("/v1/ws")
    assert not_upgraded.status == 426
    assert (await not_upgraded.json())["code"] == "upgrade_required"
    await assert_documented(doc, "GET", "/v1/ws", not_upgraded)
    foreign = await client.get("/v1/ws", headers={"Origin": "https://elsewhere.example"})
    assert foreign.status == 403
    await assert_documented(doc, "GET", "/v1/ws", foreign)

    taken = await client.post(
        "/v1/auth/register", json={"username": alice.username, "password": "correct horse x"}
    )
    assert taken.status == 409
    await assert_documented(doc, "POST", "/v1/auth/register", taken)


async def test_turn_credentials_match_their_schema(
    client: TestClient[Any, Any], services: Services, doc: dict[str, Any]
) -> None:
    alice = await register(client)
    unconfigured = await client.get("/v1/turn/credentials", headers=alice.headers)
    assert unconfigured.status == 503
    await assert_documented(doc, "GET", "/v1/turn/credentials", unconfigured)

    turn_client = await make_client(
        services,
        turn_secret="turn-secret-that-is-long-enough-0123456789",
        turn_uris=("turn:turn.example:3478?transport=udp",),
        stun_uris=("stun:turn.example:3478",),
    )
    try:
        response = await turn_client.get("/v1/turn/credentials", headers=alice.headers)
        assert response.status == 200, await response.text()
        body = await assert_documented(doc, "GET", "/v1/turn/credentials", response)
        assert [len(s) for s in body["iceServers"]] == [1, 3]  # STUN has no credentials
    finally:
        await turn_client.close()


async def test_envelope_responses_match_their_schemas(
    client: TestClient[Any, Any], doc: dict[str, Any]
) -> None:
    """The list and page envelopes handlers build by hand, checked against the document."""
    alice = await register(client)
    bob: Account = await register(client)
    room = await create_room(client, alice, kind="public", name="lobby")
    await add_member(client, room, alice, bob)
    await post_message(client, room, alice, "searchable words here")
    h = alice.headers

    async def check(method: str, template: str, url: str, **kwargs: Any) -> Any:
        response = await client.request(method, url, headers=h, **kwargs)
        assert response.status < 400, await response.text()
        return await assert_documented(doc, method, template, response)

    await check("GET", "/healthz", "/healthz")
    await check("GET", "/readyz", "/readyz")
    sessions = await check("GET", "/v1/auth/sessions", "/v1/auth/sessions")
    assert [s["current"] for s in sessions["sessions"]] == [True]
    await check("GET", "/v1/me", "/v1/me")
    await check("GET", "/v1/users/{userId}", f"/v1/users/{bob.id}")
    await check("GET", "/v1/rooms", "/v1/rooms")
    public = await check("GET", "/v1/rooms/public", "/v1/rooms/public", params={"limit": "1"})
    assert public["nextCursor"] is not None
    await check("GET", "/v1/rooms/{roomId}", f"/v1/rooms/{room}")
    await check("GET", "/v1/rooms/{roomId}/members", f"/v1/rooms/{room}/members")
    await check("PUT", "/v1/rooms/{roomId}/read", f"/v1/rooms/{room}/read", json={"seq": 1})
    found = await check(
        "GET", "/v1/messages/search", "/v1/messages/search", params={"q": "searchable"}
    )
    assert len(found["messages"]) == 1
    await check(
        "POST",
        "/v1/rooms/direct",
        "/v1/rooms/direct",
        json={"userId": bob.id},
    )
    await check(
        "POST",
        "/v1/rooms/{roomId}/transfer",
        f"/v1/rooms/{room}/transfer",
        json={"userId": bob.id},
    )
