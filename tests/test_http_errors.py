"""HTTP edge behaviour: problem JSON for every failure, limits, request ids, health, metrics."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from boltorezka.runtime import Services
from tests.conftest import MIGRATIONS, make_client
from tests.helpers import PASSWORD, create_room, expect_problem, register

Client = TestClient[Any, Any]
JSON = {"Content-Type": "application/json"}
LIMIT = 2048


async def _chunks(data: bytes, size: int = 512) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _register_body(padding: int = 0) -> bytes:
    """A valid registration body, padded with whitespace to change only its size."""
    name = f"pad{uuid.uuid4().hex[:8]}"
    body = f'{{"username": "{name}", "password": "{PASSWORD}"}}'
    return (body + " " * padding).encode()


def _assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text
    assert 'File "' not in text
    assert ".py" not in text


# --- Bodies -------------------------------------------------------------------------------


async def test_malformed_json_is_a_400_with_the_reason(client: Client) -> None:
    response = await client.post(
        "/v1/auth/register", data=b'{"username": "alice", "password": ', headers=JSON
    )
    body = await expect_problem(response, 400, "malformed_json")
    assert body["detail"] and body["detail"] != body["title"]
    assert "malformed" in body["detail"].lower() or "truncated" in body["detail"].lower()
    assert body["retryable"] is False
    assert body["requestId"] == response.headers["X-Request-ID"]


async def test_empty_body_is_a_400(client: Client) -> None:
    for data in (b"", b"   \n"):
        response = await client.post("/v1/auth/register", data=data, headers=JSON)
        await expect_problem(response, 400, "malformed_json")


async def test_wrong_content_type_is_a_415(client: Client) -> None:
    valid = _register_body()
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = await client.post(
            "/v1/auth/register", data=valid, headers={"Content-Type": content_type}
        )
        body = await expect_problem(response, 415, "unsupported_media_type")
        assert content_type in body["detail"]
    # A charset parameter is fine.
    response = await client.post(
        "/v1/auth/register",
        data=valid,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status == 201, await response.text()


async def test_oversized_body_is_a_413_with_content_length(services: Services) -> None:
    small = await make_client(services, max_body_bytes=LIMIT)
    try:
        response = await small.post("/v1/auth/register", data=_register_body(LIMIT), headers=JSON)
        body = await expect_problem(response, 413, "payload_too_large")
        assert str(LIMIT) in body["detail"]
        # A body of exactly the limit is still accepted.
        exact = _register_body()
        exact += b" " * (LIMIT - len(exact))
        response = await small.post("/v1/auth/register", data=exact, headers=JSON)
        assert response.status == 201, await response.text()
    finally:
        await small.close()


async def test_oversized_chunked_body_is_a_413(services: Services) -> None:
    small = await make_client(services, max_body_bytes=LIMIT)
    try:
        response = await small.post(
            "/v1/auth/register", data=_chunks(_register_body(2 * LIMIT)), headers=JSON
        )
        assert "Content-Length" not in response.request_info.headers
        await expect_problem(response, 413, "payload_too_large")
        # A chunked body under the limit goes through.
        response = await small.post(
            "/v1/auth/register", data=_chunks(_register_body(LIMIT // 2)), headers=JSON
        )
        assert response.status == 201, await response.text()
    finally:
        await small.close()


async def test_validation_failures_are_422_naming_the_field(client: Client) -> None:
    cases = [
        ({"username": "ab", "password": PASSWORD}, "username"),
        ({"username": "has space", "password": PASSWORD}, "username"),
        ({"username": "alice", "password": "short"}, "password"),
        ({"username": "alice", "password": PASSWORD, "nickname": "al"}, "nickname"),
        ({"username": "alice", "password": 12345678}, "password"),
        ({"username": ["alice"], "password": PASSWORD}, "username"),
        ({"password": PASSWORD}, "username"),
    ]
    for payload, field in cases:
        response = await client.post("/v1/auth/register", json=payload)
        body = await expect_problem(response, 422, "validation_failed")
        assert field in body["detail"], (payload, body)
        # Named as the WebSocket nacks name fields: the wire name, for a client to branch on.
        assert body["field"] == field, (payload, body)
    # Nothing was created by any of them.
    response = await client.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert response.status == 401


async def test_body_field_names_use_wire_names_and_whole_body_errors_name_none(
    client: Client,
) -> None:
    alice = await register(client)
    cases: list[tuple[str, str, Any, str]] = [
        ("PATCH", "/v1/me", {"displayName": ""}, "displayName"),
        ("PATCH", "/v1/me", {"avatarUrl": "ftp://example.org/a.png"}, "avatarUrl"),
        ("PATCH", "/v1/me", {"bio": 5}, "bio"),
        ("POST", "/v1/rooms", {"name": "general", "kind": "secret"}, "kind"),
        ("POST", "/v1/rooms/direct", {"userId": "not-a-uuid"}, "userId"),
        ("POST", "/v1/auth/refresh", {}, "refreshToken"),
    ]
    for method, path, payload, field in cases:
        response = await client.request(method, path, json=payload, headers=alice.headers)
        body = await expect_problem(response, 422, "validation_failed")
        assert body["field"] == field, (path, payload, body)
    # A body that is not an object at all has no field to blame.
    response = await client.post("/v1/rooms", json=["general"], headers=alice.headers)
    body = await expect_problem(response, 422, "validation_failed")
    assert "field" not in body, body
    # U+0000 is refused after decoding, and the field holding it is named too.
    response = await client.patch(
        "/v1/me",
        data='{"displayName": "Al", "bio": "a\\u0000b"}',
        headers={**alice.headers, **JSON},
    )
    body = await expect_problem(response, 422, "validation_failed")
    assert body["field"] == "bio", body


async def test_message_body_over_4000_characters_is_refused(client: Client) -> None:
    alice = await register(client)
    room_id = await create_room(client, alice, kind="public")
    too_long = await client.post(
        f"/v1/rooms/{room_id}/messages",
        json={"clientMsgId": "long-1", "body": "x" * 4001},
        headers=alice.headers,
    )
    body = await expect_problem(too_long, 422, "validation_failed")
    assert "body" in body["detail"]
    at_limit = await client.post(
        f"/v1/rooms/{room_id}/messages",
        json={"clientMsgId": "long-2", "body": "я" * 4000},
        headers=alice.headers,
    )
    assert at_limit.status == 201, await at_limit.text()


async def test_bad_uuid_in_the_path_is_a_422(client: Client) -> None:
    alice = await register(client)
    for path in ("/v1/rooms/not-a-uuid", "/v1/users/123", "/v1/rooms/xyz/messages"):
        response = await client.get(path, headers=alice.headers)
        body = await expect_problem(response, 422, "validation_failed")
        assert body.get("field") in {"roomId", "userId"}, body
    response = await client.delete("/v1/auth/sessions/zzz", headers=alice.headers)
    body = await expect_problem(response, 422, "validation_failed")
    assert body["field"] == "sessionId"


# --- Routing ------------------------------------------------------------------------------


async def test_unknown_route_is_a_404_problem(client: Client) -> None:
    for path in ("/v1/nope", "/nope", "/v1/rooms/a/b/c/d"):
        response = await client.get(path)
        await expect_problem(response, 404, "route_not_found")


async def test_wrong_method_is_a_405_with_allow(client: Client) -> None:
    response = await client.delete("/v1/auth/login")
    await expect_problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers.get("Allow", "")
    response = await client.put("/healthz")
    await expect_problem(response, 405, "method_not_allowed")


# --- Failures inside the server -----------------------------------------------------------


async def test_a_crash_never_leaks_a_traceback(client: Client, services: Services) -> None:
    alice = await register(client)
    await services.pool.close()
    requests: list[tuple[str, str, dict[str, str], dict[str, str] | None]] = [
        ("GET", "/v1/me", alice.headers, None),
        ("POST", "/v1/auth/login", {}, {"username": alice.username, "password": PASSWORD}),
    ]
    for method, path, headers, json_body in requests:
        response = await client.request(
            method, path, headers={"X-Request-ID": "crash-1", **headers}, json=json_body
        )
        text = await response.text()
        assert response.status in (500, 503), text
        assert response.content_type == "application/problem+json"
        body = await response.json(content_type=None)
        assert body["code"] in {"internal_error", "unavailable"}
        assert body["requestId"] == "crash-1"
        _assert_no_traceback(text)
        assert "pool" not in text.lower() and "asyncpg" not in text.lower()


# --- Request ids --------------------------------------------------------------------------


async def test_request_id_is_echoed_when_valid(client: Client) -> None:
    for request_id in ("abc-123", "trace.id:42_x", "a" * 128):
        response = await client.get("/v1/nope", headers={"X-Request-ID": request_id})
        assert response.headers["X-Request-ID"] == request_id
        assert (await response.json(content_type=None))["requestId"] == request_id
    response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"


async def test_request_id_is_generated_when_absent_or_invalid(client: Client) -> None:
    seen = set()
    for headers in (
        {},
        {"X-Request-ID": ""},
        {"X-Request-ID": "has spaces"},
        {"X-Request-ID": "<script>"},
        {"X-Request-ID": "a" * 129},
    ):
        response = await client.get("/v1/nope", headers=headers)
        generated = response.headers["X-Request-ID"]
        assert re.fullmatch(r"[A-Za-z0-9._:-]{8,128}", generated), generated
        assert generated != headers.get("X-Request-ID")
        assert (await response.json(content_type=None))["requestId"] == generated
        seen.add(generated)
    assert len(seen) == 5, "every request gets its own id"


# --- Health and readiness -----------------------------------------------------------------


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_readyz_reports_database_and_migrations(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status == 200, await response.text()
    data = await response.json()
    assert data["status"] == "ready"
    assert data["checks"]["database"] == "ok"
    assert data["checks"]["migrations"] == "ok"


async def test_readyz_is_503_while_a_migration_is_pending(
    services: Services, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, directory)
    (directory / "9999_pending.sql").write_text("SELECT 1;")
    pending = await make_client(services, migrations_dir=directory)
    try:
        response = await pending.get("/readyz")
        assert response.status == 503
        data = await response.json()
        assert data["status"] == "not_ready"
        assert data["checks"]["database"] == "ok"
        assert "9999_pending.sql" in data["checks"]["migrations"]
    finally:
        await pending.close()


async def test_readyz_is_503_when_the_database_is_gone(client: Client, services: Services) -> None:
    await services.pool.close()
    response = await client.get("/readyz")
    assert response.status == 503
    data = await response.json()
    assert data["status"] == "not_ready"
    assert data["checks"]["database"] != "ok"
    _assert_no_traceback(await response.text())


# --- Metrics ------------------------------------------------------------------------------


async def test_metrics_use_route_templates_and_a_latency_histogram(client: Client) -> None:
    alice = await register(client)
    room_ids = [uuid.uuid4() for _ in range(3)]
    for room_id in room_ids:
        response = await client.get(f"/v1/rooms/{room_id}", headers=alice.headers)
        assert response.status in (403, 404)
    stray = f"/v1/stray-{uuid.uuid4().hex}"
    assert (await client.get(stray)).status == 404

    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    requests = families["boltorezka_http_requests"]
    assert requests.type == "counter"
    by_route: dict[str, float] = {}
    for sample in requests.samples:
        if sample.name.endswith("_total") and sample.labels["method"] == "GET":
            route = sample.labels["route"]
            by_route[route] = by_route.get(route, 0) + sample.value
    assert by_route["/v1/rooms/{roomId}"] == 3
    # Raw ids never become label values: the label set stays bounded.
    for room_id in room_ids:
        assert str(room_id) not in text
    assert stray not in text

    latency = families["boltorezka_http_request_duration_seconds"]
    assert latency.type == "histogram"
    buckets = [
        s
        for s in latency.samples
        if s.name.endswith("_bucket") and s.labels["route"] == "/v1/rooms/{roomId}"
    ]
    assert buckets and any(s.labels["le"] == "+Inf" and s.value == 3 for s in buckets)
    counts = [
        s
        for s in latency.samples
        if s.name.endswith("_count") and s.labels["route"] == "/v1/auth/register"
    ]
    assert counts and counts[0].value == 1


# --- Authentication at the edge -----------------------------------------------------------


async def test_protected_routes_need_a_token(client: Client) -> None:
    for method, path in [
        ("GET", "/v1/me"),
        ("GET", "/v1/rooms"),
        ("GET", "/v1/auth/sessions"),
        ("POST", "/v1/auth/logout"),
        ("GET", f"/v1/users/{uuid.uuid4()}"),
    ]:
        response = await client.request(method, path)
        await expect_problem(response, 401, "unauthenticated")
    response = await client.post("/v1/rooms", json={"name": "general", "kind": "public"})
    await expect_problem(response, 401, "unauthenticated")


async def test_non_bearer_authorization_is_an_invalid_token(client: Client) -> None:
    for value in ("Basic x", "Basic YWxpY2U6cGFzc3dvcmQ=", "Bearer", "Bearer   ", "Token abc"):
        response = await client.get("/v1/me", headers={"Authorization": value})
        await expect_problem(response, 401, "invalid_token")


async def test_401_answers_name_the_bearer_scheme(client: TestClient[Any, Any]) -> None:
    anonymous = await client.get("/v1/me")
    assert anonymous.status == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="boltorezka"'
    forged = await client.get("/v1/me", headers={"Authorization": "Bearer not-a-jwt"})
    assert forged.status == 401
    assert 'error="invalid_token"' in forged.headers["WWW-Authenticate"]


async def test_nul_characters_are_refused_not_crashed_on(client: TestClient[Any, Any]) -> None:
    # PostgreSQL text cannot hold U+0000; the server must say so, not fail with a 500.
    alice = await register(client)
    created = await client.post(
        "/v1/rooms",
        data='{"name": "a\\u0000b"}',
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert created.status == 422
    assert (await created.json())["code"] == "validation_failed"
    search = await client.get("/v1/rooms/public", params={"q": "a\x00b"}, headers=alice.headers)
    assert search.status == 422
    assert (await search.json())["field"] == "q"
