"""The OpenAPI document is the contract: it matches the routes, the code and real responses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boltorezka.api.bodies import URL_PATTERN, check_url
from boltorezka.app import build_app
from boltorezka.errors import AppError
from boltorezka.runtime import Services
from tests.conftest import ROOT, make_client
from tests.helpers import (
    Account,
    add_member,
    create_room,
    expect_problem,
    post_message,
    register,
)

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


def assert_documented_headers(
    doc: dict[str, Any], documented: dict[str, Any], response: Any
) -> None:
    """Every header the reply documents as required is there, and matches its schema."""
    for name, header in documented.get("headers", {}).items():
        if "$ref" in header:
            header = resolve(doc, header["$ref"])
        value = response.headers.get(name)
        if value is None:
            assert not header.get("required"), f"{response.status}: no {name} header"
            continue
        errors = schema_errors(value, header["schema"], doc, name)
        assert not errors, errors


async def assert_documented(doc: dict[str, Any], method: str, template: str, response: Any) -> Any:
    """The response's status, headers, media type and body are what the document says."""
    op = doc["paths"][template][method.lower()]
    status = str(response.status)
    assert status in op["responses"], f"{method} {template}: {status} is not documented"
    documented = op["responses"][status]
    assert_documented_headers(doc, documented, response)
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


# -- (e) what schemathesis found: the document and the server accept the same requests --------


def _ecma(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A JSON Schema 2020-12 validator (ECMA-262 patterns, formats on) over ``schema``."""
    return jsonschema_rs.validator_for(
        {**schema, "components": doc["components"]}, validate_formats=True
    )


def _request_strings(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, schema) of every string a request body or query parameter carries."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(schema: dict[str, Any], where: str) -> None:
        if "$ref" in schema:
            walk(resolve(doc, schema["$ref"]), where)
        for option in schema.get("anyOf", ()):
            walk(option, where)
        for name, prop in schema.get("properties", {}).items():
            walk(prop, f"{where}.{name}")
        if "items" in schema:
            walk(schema["items"], f"{where}[]")
        if schema.get("type") == "string":
            found.append((where, schema))

    for path, item in doc["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                walk(body["schema"], f"{method.upper()} {path} body")
            for param in op["parameters"]:
                if param.get("in") == "query":
                    walk(param["schema"], f"{method.upper()} {path} ?{param['name']}")
    return found


def test_request_strings_refuse_nul_in_the_document_as_the_server_does(
    doc: dict[str, Any],
) -> None:
    # decode_body and query_str answer 422 to U+0000 in any string, so a schema that allowed
    # it would let a conforming client be refused.
    strings = _request_strings(doc)
    assert len(strings) > 20
    for where, schema in strings:
        if schema.get("format") == "uuid" or "enum" in schema:
            continue  # no value the schema allows can hold U+0000
        assert "pattern" in schema, f"{where}: nothing in the schema refuses U+0000"
        sample = "ok-value"
        assert not _ecma(doc, schema).is_valid(sample[:3] + "\x00" + sample[3:]), where
        assert re.search(schema["pattern"], "a\x00b") is None, where


@settings(max_examples=25, derandomize=True, database=None, deadline=None)
@given(data=st.data())
def test_patterns_mean_the_same_to_python_and_to_ecma(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    """msgspec runs a pattern with Python's re, clients with ECMA-262: they must agree.

    The classic split is ``$``, which in Python also matches before a final newline: the
    username pattern let "abc\\n" through the server while the document refused it.
    """
    patterns = sorted({s["pattern"] for _, s in _request_strings(doc) if "pattern" in s})
    assert len(patterns) >= 4
    pattern = data.draw(st.sampled_from(patterns))
    value = data.draw(st.from_regex(pattern, fullmatch=True))
    ecma = _ecma(doc, {"type": "string", "pattern": pattern})
    for candidate in (value, value + "\n", "\n" + value, value + "\x00"):
        assert (re.search(pattern, candidate) is not None) == ecma.is_valid(candidate), (
            pattern,
            candidate,
        )


async def test_usernames_with_a_trailing_newline_are_refused(client: TestClient[Any, Any]) -> None:
    # Python's "$" let "alice\n" past the body pattern, and the database's check on usernames
    # refused it: a 500 for a request the document already called invalid.
    response = await client.post(
        "/v1/auth/register", json={"username": "alice\n", "password": "correct horse battery"}
    )
    await expect_problem(response, 422, "validation_failed")


def test_avatar_url_schema_states_its_format(doc: dict[str, Any]) -> None:
    avatar = doc["components"]["schemas"]["ProfileBody"]["properties"]["avatarUrl"]
    url = next(option for option in avatar["anyOf"] if option.get("type") == "string")
    assert url["format"] == "uri"
    assert url["pattern"] == URL_PATTERN
    assert url["maxLength"] == 2048
    validator = _ecma(doc, url)
    for bad in ("http://[", "http://a:99999", "javascript:alert(1)", "//cdn.example/a.png"):
        assert not validator.is_valid(bad), bad
    assert validator.is_valid("https://cdn.example:8443/a%20b.png?size=64#top")


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(url=st.from_regex(URL_PATTERN, fullmatch=True))
def test_every_url_the_schema_allows_is_a_uri_urllib_can_split(url: str) -> None:
    """So a client that takes a stored avatarUrl apart with urlsplit never crashes."""
    check_url(url)  # raises ValueError otherwise
    assert jsonschema_rs.is_valid({"type": "string", "format": "uri"}, url, validate_formats=True)


async def test_avatar_url_must_be_an_absolute_http_url(client: TestClient[Any, Any]) -> None:
    alice = await register(client)
    for bad in (
        "http://[",  # urlsplit raises: "Invalid IPv6 URL"
        "http://[::1",
        "http://a:99999/x.png",  # SplitResult.port raises
        "http://ex\u00e4mple.com/a.png",  # not ASCII
        "https://user:pw@cdn.example/a.png",
        "javascript:alert(1)",
        "/relative.png",
        "https://cdn.example/" + "a" * 2048,
    ):
        response = await client.patch("/v1/me", json={"avatarUrl": bad}, headers=alice.headers)
        await expect_problem(response, 422, "validation_failed")
    good = "https://cdn.example:8443/a%20b.png?size=64#top"
    response = await client.patch("/v1/me", json={"avatarUrl": good}, headers=alice.headers)
    assert response.status == 200, await response.text()
    assert (await response.json())["avatarUrl"] == good


async def test_nul_is_refused_by_server_and_document_alike(
    client: TestClient[Any, Any], doc: dict[str, Any]
) -> None:
    alice = await register(client)
    body = {"name": "a\u0000b", "kind": "public"}
    response = await client.post("/v1/rooms", json=body, headers=alice.headers)
    await expect_problem(response, 422, "validation_failed")
    schema = doc["paths"]["/v1/rooms"]["post"]["requestBody"]["content"]["application/json"]
    assert not _ecma(doc, schema["schema"]).is_valid(body)
    assert _ecma(doc, schema["schema"]).is_valid({"name": "ab", "kind": "public"})


async def test_search_needs_more_than_spaces_in_document_and_server(
    client: TestClient[Any, Any], doc: dict[str, Any]
) -> None:
    alice = await register(client)
    (q,) = [
        p for p in doc["paths"]["/v1/messages/search"]["get"]["parameters"] if p.get("name") == "q"
    ]
    validator = _ecma(doc, q["schema"])
    for blank in (" ", "\t \u3000", "\u00a0"):
        assert not validator.is_valid(blank), repr(blank)
        response = await client.get(
            "/v1/messages/search", params={"q": blank}, headers=alice.headers
        )
        body = await expect_problem(response, 422, "validation_failed")
        assert body["field"] == "q"
    assert validator.is_valid(" fox ")
    response = await client.get("/v1/messages/search", params={"q": " fox "}, headers=alice.headers)
    assert response.status == 200, await response.text()


async def test_a_whole_number_written_as_a_float_is_an_integer(
    client: TestClient[Any, Any],
) -> None:
    # JSON Schema's "integer" admits 2.0, so the server must take it as 2.
    alice = await register(client)
    room = await create_room(client, alice)
    await post_message(client, room, alice, "one")
    response = await client.put(f"/v1/rooms/{room}/read", json={"seq": 1.0}, headers=alice.headers)
    assert response.status == 200, await response.text()
    assert (await response.json())["seq"] == 1
    response = await client.put(f"/v1/rooms/{room}/read", json={"seq": 0.5}, headers=alice.headers)
    await expect_problem(response, 422, "validation_failed")


def test_state_checked_fields_are_listed_on_the_422_answer(doc: dict[str, Any]) -> None:
    """Where only stored state can refuse a schema-valid value, the document names the field."""
    listed = {
        op["operationId"]: op["responses"]["422"].get("x-state-checked-fields")
        for item in doc["paths"].values()
        for op in item.values()
        if "422" in op["responses"] and "x-state-checked-fields" in op["responses"]["422"]
    }
    assert listed == {
        "openDirectRoom": ["userId"],
        "listPublicRooms": ["cursor"],
        "transferOwnership": ["userId"],
        "postMessage": ["replyTo"],
        "markRead": ["seq"],
        "searchMessages": ["cursor"],
        "adminListUsers": ["cursor"],
        "adminListRooms": ["cursor"],
        "adminAuditLog": ["cursor", "since"],
        "banUser": ["userId"],
        "muteMember": ["userId"],
        "reportMessage": ["messageId"],
        "listReports": ["cursor"],
    }


def test_websocket_handshake_headers_are_required_parameters(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/v1/ws"]["get"]
    headers = {p["name"]: p for p in op["parameters"] if p.get("in") == "header"}
    required = {name for name, p in headers.items() if p["required"]}
    assert required == {"Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version"}
    assert "Origin" in headers
    # What a browser sends is schema-valid; a plain GET lacks them, so 426 is no surprise.
    browser = {
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    for name, value in browser.items():
        assert _ecma(doc, headers[name]["schema"]).is_valid(value), name
    upgrade = op["responses"]["426"]["headers"]["Upgrade"]
    assert upgrade["required"] is True and upgrade["schema"]["enum"] == ["websocket"]
    assert {"Upgrade", "Connection", "Sec-WebSocket-Accept"} <= set(
        op["responses"]["101"]["headers"]
    )


async def test_websocket_answers_are_documented(
    client: TestClient[Any, Any], doc: dict[str, Any]
) -> None:
    plain = await client.get("/v1/ws")
    assert plain.status == 426
    assert plain.headers["Upgrade"] == "websocket"  # RFC 9110: a 426 names the protocol
    await assert_documented(doc, "GET", "/v1/ws", plain)
    handshake = await client.get(
        "/v1/ws",
        headers={
            "Upgrade": "WebSocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    try:
        assert handshake.status == 101
        documented = doc["paths"]["/v1/ws"]["get"]["responses"]["101"]
        assert_documented_headers(doc, documented, handshake)
    finally:
        handshake.close()


async def test_allow_lists_exactly_the_methods_of_the_matched_resource(
    client: TestClient[Any, Any], doc: dict[str, Any]
) -> None:
    """OPTIONS, and any other method a path lacks, answers 405 with that path's own methods.

    /v1/rooms/direct and /v1/rooms/public used to advertise /v1/rooms/{roomId}'s methods
    too, because that dynamic route also matched them; PATCH on them even reached it.
    """
    for path, item in doc["paths"].items():
        url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        documented = {method.upper() for method in item}
        if "GET" in documented:
            documented.add("HEAD")  # aiohttp answers HEAD wherever it answers GET
        response = await client.options(url)
        await expect_problem(response, 405, "method_not_allowed")
        assert set(response.headers["Allow"].split(",")) == documented, path
    for path, allowed in (("/v1/rooms/direct", {"POST"}), ("/v1/rooms/public", {"GET", "HEAD"})):
        for method in ("PATCH", "DELETE"):
            response = await client.request(method, path)
            await expect_problem(response, 405, "method_not_allowed")
            assert set(response.headers["Allow"].split(",")) == allowed, (method, path)
