"""OpenTelemetry spans as an operator's trace viewer shows them: REST requests, WebSocket
envelopes, their queries and bus publishes, under the right parents, with the request, user
and session ids; and nothing at all while tracing is off."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from boltorezka_client import BoltorezkaClient, NackError
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from boltorezka.api.middleware import tracing_middleware
from boltorezka.app import build_app
from boltorezka.observability import tracing
from boltorezka.runtime import Services
from boltorezka.store import migrate
from boltorezka.store.database import PooledConnection, create_pool
from tests import conftest
from tests.conftest import MIGRATIONS
from tests.helpers import create_room, eventually, register


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()
    provider.shutdown()


@pytest.fixture
async def pool(
    spans: InMemorySpanExporter, test_db: conftest.TestDatabase
) -> AsyncIterator[asyncpg.Pool]:
    """conftest's pool, made once tracing is on (the pool's connection class depends on it)."""
    pool = await create_pool(
        test_db.url, min_size=1, max_size=10, server_settings=test_db.server_settings
    )
    async with pool.acquire() as conn:
        await migrate.apply(conn, MIGRATIONS)
    spans.clear()
    yield pool
    await pool.close()


def _children(all_spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        s
        for s in all_spans
        if s.parent is not None
        and s.parent.span_id == parent.context.span_id
        and s.context is not None
        and s.context.trace_id == parent.context.trace_id
    ]


def _one(all_spans: tuple[ReadableSpan, ...], name: str, **attributes: Any) -> ReadableSpan:
    found = [
        s
        for s in all_spans
        if s.name == name
        and all((s.attributes or {}).get(key) == value for key, value in attributes.items())
    ]
    assert len(found) == 1, [(s.name, dict(s.attributes or {})) for s in all_spans]
    return found[0]


def _attr(span: ReadableSpan, key: str) -> Any:
    return (span.attributes or {}).get(key)


async def test_rest_request_span_has_its_queries_and_the_callers_ids(
    spans: InMemorySpanExporter, client: TestClient[Any, Any]
) -> None:
    account = await register(client)
    response = await client.get("/v1/me", headers={**account.headers, "X-Request-ID": "trace-me-1"})
    assert response.status == 200
    finished = spans.get_finished_spans()

    request = _one(finished, "GET /v1/me")
    assert request.kind is SpanKind.SERVER
    assert _attr(request, "http.route") == "/v1/me"
    assert _attr(request, "http.response.status_code") == 200
    assert _attr(request, tracing.REQUEST_ID) == "trace-me-1"
    assert _attr(request, tracing.USER_ID) == account.id
    assert _attr(request, tracing.SESSION_ID) == account.session_id
    assert request.status.status_code is not StatusCode.ERROR

    queries = _children(finished, request)
    assert queries, "the request's queries are nested under its span"
    for query in queries:
        assert query.kind is SpanKind.CLIENT
        assert _attr(query, "db.system.name") == "postgresql"
        assert _attr(query, tracing.REQUEST_ID) == "trace-me-1"
    # Queries after the bearer token was checked carry the caller too.
    assert any(_attr(q, tracing.USER_ID) == account.id for q in queries)
    # The statement text, never the values bound to it (the password hash, tokens).
    signup = _one(finished, "POST /v1/auth/register")
    texts = " ".join(str(_attr(q, "db.query.text")) for q in _children(finished, signup))
    assert "$1" in texts
    assert account.username not in texts


async def test_server_errors_mark_the_span_and_client_errors_do_not(
    spans: InMemorySpanExporter, client: TestClient[Any, Any]
) -> None:
    response = await client.get("/v1/me")
    assert response.status == 401
    span = _one(spans.get_finished_spans(), "GET /v1/me")
    assert _attr(span, "http.response.status_code") == 401
    assert span.status.status_code is not StatusCode.ERROR


async def test_chat_send_envelope_span_with_its_bus_publish_and_query(
    spans: InMemorySpanExporter, client: TestClient[Any, Any], ws_url: str
) -> None:
    owner = await register(client)
    room = await create_room(client, owner)
    async with BoltorezkaClient(ws_url, owner.access_token) as device:
        await device.join(room)
        spans.clear()
        await device.send_message(room, "traced hello")

        def chat_send_done() -> bool:
            return any(s.name == "chat.send" for s in spans.get_finished_spans())

        await eventually(chat_send_done, "the chat.send span to end")
    finished = spans.get_finished_spans()

    send = _one(finished, "chat.send")
    assert send.kind is SpanKind.SERVER
    assert send.parent is None, "an envelope starts a trace of its own, not the socket's"
    assert _attr(send, tracing.WS_OUTCOME) == "ack"
    assert send.status.status_code is StatusCode.OK
    assert _attr(send, tracing.USER_ID) == owner.id
    assert _attr(send, tracing.SESSION_ID) == owner.session_id
    envelope_request_id = _attr(send, tracing.REQUEST_ID)
    assert envelope_request_id and envelope_request_id.startswith(
        str(_attr(send, "boltorezka.connection_id"))
    )

    # The message committed, then published to the room's channel under the envelope.
    publishes = [s for s in _children(finished, send) if s.name == "bus.publish"]
    assert [_attr(p, "messaging.destination.name") for p in publishes] == [f"room:{room}"]
    publish = publishes[0]
    assert publish.kind is SpanKind.PRODUCER
    assert _attr(publish, tracing.USER_ID) == owner.id
    assert _attr(publish, tracing.SESSION_ID) == owner.session_id
    assert _attr(publish, tracing.REQUEST_ID) == envelope_request_id

    # The insert itself: one batch statement for every send queued with it, so a trace of
    # the message writer rather than of one envelope.
    inserts = [s for s in finished if "post_messages" in str(_attr(s, "db.query.text"))]
    assert len(inserts) == 1
    assert inserts[0].kind is SpanKind.CLIENT


async def test_auth_envelope_queries_nest_under_it_and_nacks_are_errors(
    spans: InMemorySpanExporter, client: TestClient[Any, Any], ws_url: str
) -> None:
    owner = await register(client)
    stranger = await register(client)
    room = await create_room(client, owner)
    spans.clear()
    async with BoltorezkaClient(ws_url, stranger.access_token) as device:
        with pytest.raises(NackError) as refused:
            await device.send_message(room, "not my room")

        def nacked() -> bool:
            return any(s.name == "chat.send" for s in spans.get_finished_spans())

        await eventually(nacked, "the refused chat.send span to end")
    finished = spans.get_finished_spans()

    auth = _one(finished, "auth")
    assert _attr(auth, tracing.USER_ID) == stranger.id  # set by the envelope itself
    assert _attr(auth, tracing.WS_OUTCOME) == "ack"
    queries = _children(finished, auth)
    assert queries and all(_attr(q, "db.system.name") == "postgresql" for q in queries)

    send = _one(finished, "chat.send")
    assert send.status.status_code is StatusCode.ERROR
    assert send.status.description == refused.value.code
    assert _attr(send, tracing.WS_OUTCOME) == refused.value.code


async def test_nothing_is_traced_while_tracing_is_off(
    test_db: conftest.TestDatabase, settings: Any
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # never installed
    assert not tracing.enabled()
    pool = await create_pool(
        test_db.url, min_size=1, max_size=2, server_settings=test_db.server_settings
    )
    try:
        async with pool.acquire() as conn:
            assert type(conn._con) is PooledConnection  # type: ignore[attr-defined]
            await migrate.apply(conn, MIGRATIONS)
        services = Services.build(settings, pool)
        app = build_app(services)
        assert tracing_middleware not in app.middlewares
        async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
            owner = await register(test_client)
            room = await create_room(test_client, owner)
            url = f"ws://127.0.0.1:{test_client.server.port}/v1/ws"
            async with BoltorezkaClient(url, owner.access_token) as device:
                await device.join(room)
                await device.send_message(room, "untraced")
    finally:
        await pool.close()
    assert exporter.get_finished_spans() == ()


def test_the_switch_is_otel_traces_exporter() -> None:
    assert tracing.wanted({}) is None
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "otlp"}) == "otlp"
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"}) == "console"
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) is None
    assert (
        tracing.wanted(
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        )
        == "otlp"
    )
    for refused in (
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_TRACES_EXPORTER": "otlp,console"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ):
        with pytest.raises(tracing.TracingConfigError):
            tracing.wanted(refused)
    assert tracing.configure_from_env({}) is False
    assert not tracing.enabled()


def test_otlp_from_the_environment_turns_tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # An endpoint nothing listens on: the exporter only sends when spans end.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "boltorezka-test")
    try:
        assert tracing.configure_from_env({"OTEL_TRACES_EXPORTER": "otlp"}) is True
        assert tracing.enabled()
        assert tracing._provider is not None
        assert tracing._provider.resource.attributes["service.name"] == "boltorezka-test"
    finally:
        tracing.shutdown()
    assert not tracing.enabled()


def test_tracing_without_the_sdk_installed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def without_sdk(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry.sdk"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_sdk)
    with pytest.raises(tracing.TracingUnavailable, match=r"boltorezka\[tracing\]"):
        tracing.configure_from_env({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing.enabled()
