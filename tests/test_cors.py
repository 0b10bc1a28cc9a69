"""CORS: a page on a listed origin can sign in and call the API; others get no CORS headers,
and with no list (the default) the API answers only same-origin pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from boltorezka.runtime import Services
from tests.conftest import make_client
from tests.helpers import register

DEV_PAGE = "http://localhost:5173"


@pytest.fixture
async def cors_client(services: Services) -> AsyncIterator[TestClient[Any, Any]]:
    client = await make_client(services, cors_allowed_origins=(DEV_PAGE,))
    yield client
    await client.close()


async def test_a_listed_origin_passes_the_preflight_and_reads_the_answer(
    cors_client: TestClient[Any, Any],
) -> None:
    preflight = await cors_client.options(
        "/v1/auth/login",
        headers={
            "Origin": DEV_PAGE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == DEV_PAGE
    assert preflight.headers["Access-Control-Allow-Methods"] == "POST"
    assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "Origin" in preflight.headers["Vary"]

    account = await register(cors_client)
    me = await cors_client.get("/v1/me", headers={**account.headers, "Origin": DEV_PAGE})
    assert me.status == 200
    assert me.headers["Access-Control-Allow-Origin"] == DEV_PAGE
    assert "X-Request-ID" in me.headers["Access-Control-Expose-Headers"]

    # Errors are readable too: a page can show the problem's words.
    denied = await cors_client.get("/v1/me", headers={"Origin": DEV_PAGE})
    assert denied.status == 401
    assert denied.headers["Access-Control-Allow-Origin"] == DEV_PAGE
    assert "WWW-Authenticate" in denied.headers["Access-Control-Expose-Headers"]


async def test_the_preflight_names_only_the_methods_the_path_has(
    cors_client: TestClient[Any, Any],
) -> None:
    preflight = await cors_client.options(
        "/v1/rooms/00000000-0000-0000-0000-000000000000",
        headers={"Origin": DEV_PAGE, "Access-Control-Request-Method": "PUT"},
    )
    assert preflight.status == 204
    methods = set(preflight.headers["Access-Control-Allow-Methods"].split(", "))
    assert "PUT" not in methods  # the browser refuses the request itself
    assert {"GET", "PATCH", "DELETE"} <= methods

    unknown = await cors_client.options(
        "/v1/no-such-thing",
        headers={"Origin": DEV_PAGE, "Access-Control-Request-Method": "GET"},
    )
    assert unknown.status == 404
    assert unknown.content_type == "application/problem+json"


async def test_an_origin_not_listed_gets_no_cors_headers(
    cors_client: TestClient[Any, Any],
) -> None:
    preflight = await cors_client.options(
        "/v1/auth/login",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    answer = await cors_client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in answer.headers


async def test_by_default_only_same_origin_pages_are_served(
    client: TestClient[Any, Any],
) -> None:
    preflight = await client.options(
        "/v1/auth/login",
        headers={"Origin": DEV_PAGE, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 405
    assert "Access-Control-Allow-Origin" not in preflight.headers
    answer = await client.get("/healthz", headers={"Origin": DEV_PAGE})
    assert "Access-Control-Allow-Origin" not in answer.headers
