"""OpenTelemetry traces: REST requests, WebSocket envelopes, queries and bus publishes.

Off unless ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp`` or ``console``); the other
standard variables (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_*``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``) are read by the SDK
itself. Unlike the SDK's own auto-configuration, an unset exporter means no tracing: a node
nobody collects traces from pays nothing for them.

While it is off no span is made anywhere: callers ask :func:`enabled` (a global read)
before building attributes, the database pool gets connections without the tracing layer,
and the application no tracing middleware. The SDK is imported only once tracing is on,
so the server runs without the ``tracing`` extra installed.

Every span carries the ids the log lines carry (request, user, device session, WebSocket
connection), read from structlog's context variables when it starts; spans started inside
a WebSocket envelope take the user and session from their parent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from boltorezka import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import Span as SdkSpan
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Span, Tracer

_log = structlog.get_logger("boltorezka.tracing")

SERVICE_NAME = "boltorezka"
# Attribute names of the ids shared with the log lines (structlog key → span attribute).
REQUEST_ID = "boltorezka.request_id"
CLIENT_REQUEST_ID = "boltorezka.client_request_id"
USER_ID = "boltorezka.user_id"
SESSION_ID = "boltorezka.session_id"
CONNECTION_ID = "boltorezka.connection_id"
WS_TYPE = "boltorezka.ws.type"
WS_OUTCOME = "boltorezka.ws.outcome"
_FROM_LOG_CONTEXT = {
    "request_id": REQUEST_ID,
    "client_request_id": CLIENT_REQUEST_ID,
    "user_id": USER_ID,
    "session_id": SESSION_ID,
    "connection": CONNECTION_ID,
}
_INHERITED = (USER_ID, SESSION_ID)
# Long statements (a batch's generated SQL) are cut: the text is for finding the query.
_MAX_STATEMENT = 2000
_EXPORTERS = ("otlp", "console")
_OTLP_PROTOCOL = "http/protobuf"

_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_owned = False
# Reused for every call made while tracing is off: nullcontext keeps no state.
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


class TracingUnavailable(RuntimeError):
    """Tracing is asked for but the ``tracing`` extra (the OpenTelemetry SDK) is missing."""


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable asks for something this server does not support."""


def enabled() -> bool:
    return _tracer is not None


def wanted(environ: Mapping[str, str]) -> str | None:
    """The exporter ``environ`` asks for, or None when tracing stays off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n and n != "none"]
    if not names:
        return None
    if len(names) > 1 or names[0] not in _EXPORTERS:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={environ['OTEL_TRACES_EXPORTER']!r}: use one of "
            f"{', '.join(_EXPORTERS)} or none"
        )
    if names[0] == "otlp":
        for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            value = environ.get(variable, "").strip()
            if value and value != _OTLP_PROTOCOL:
                raise TracingConfigError(
                    f"{variable}={value!r}: only {_OTLP_PROTOCOL} is supported"
                )
            if value:
                break
    return names[0]


def configure_from_env(environ: Mapping[str, str]) -> bool:
    """Turn tracing on when ``environ`` asks for it (see the module docstring)."""
    exporter_name = wanted(environ)
    if exporter_name is None:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError as exc:
        raise TracingUnavailable(
            f"OTEL_TRACES_EXPORTER={exporter_name} needs the OpenTelemetry SDK: install "
            "boltorezka[tracing], or unset OTEL_TRACES_EXPORTER"
        ) from exc
    exporter: SpanExporter
    if exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise TracingUnavailable(
                "OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http: "
                "install boltorezka[tracing]"
            ) from exc
        exporter = OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
    else:
        exporter = ConsoleSpanExporter()
    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER(_ARG)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider, owned=True)
    # Names only: OTEL_EXPORTER_OTLP_HEADERS may hold a collector's credentials.
    _log.info(
        "tracing on", exporter=exporter_name, service=str(resource.attributes["service.name"])
    )
    return True


def install(provider: TracerProvider, *, owned: bool = False) -> None:
    """Trace with ``provider`` from now on (tests pass one with an in-memory exporter).

    Not the process-wide OpenTelemetry provider, which can be set only once: the server's
    spans go through this one alone.
    """
    global _provider, _tracer, _owned
    provider.add_span_processor(_ids_from_context())
    _provider, _owned = provider, owned
    _tracer = provider.get_tracer("boltorezka", __version__)


def uninstall() -> None:
    """Stop tracing; spans already started still end normally."""
    global _provider, _tracer, _owned
    _provider, _tracer, _owned = None, None, False


def shutdown() -> None:
    """Export what is buffered and stop tracing (the end of ``serve``)."""
    provider, owned = _provider, _owned
    uninstall()
    if provider is not None and owned:
        provider.shutdown()


# --- spans ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _span(name: str, kind_name: str, attributes: dict[str, Any]) -> Iterator[Span]:
    from opentelemetry.trace import SpanKind

    assert _tracer is not None
    with _tracer.start_as_current_span(
        name, kind=SpanKind[kind_name], attributes=attributes
    ) as span:
        yield span


def http_span(method: str, route: str, path: str) -> contextlib.AbstractContextManager[Span]:
    """The span of one REST request; call only while :func:`enabled`."""
    return _span(
        f"{method} {route}",
        "SERVER",
        {"http.request.method": method, "http.route": route, "url.path": path},
    )


def http_done(span: Span, status: int, request_id: str, user_id: Any, session_id: Any) -> None:
    from opentelemetry.trace import StatusCode

    span.set_attribute("http.response.status_code", status)
    _set_ids(span, request_id=request_id, user_id=user_id, session_id=session_id)
    # A client's 4xx is an answer, not a failure of the server (HTTP semantic conventions).
    if status >= 500:
        span.set_status(StatusCode.ERROR, str(status))


def envelope_span(
    msg_type: str, user_id: Any, session_id: Any
) -> contextlib.AbstractContextManager[Span]:
    """The span of one WebSocket envelope, named by its type; only while :func:`enabled`."""
    attributes: dict[str, Any] = {WS_TYPE: msg_type}
    if user_id is not None:
        attributes[USER_ID] = str(user_id)
        attributes[SESSION_ID] = str(session_id)
    return _span(msg_type, "SERVER", attributes)


def envelope_done(span: Span, user_id: Any, session_id: Any) -> None:
    """Close an envelope's span: ``ack`` unless :func:`nack` marked it, and the identity an
    ``auth`` in it may have set."""
    from opentelemetry.trace import StatusCode

    _set_ids(span, user_id=user_id, session_id=session_id)
    attributes = getattr(span, "attributes", None) or {}
    if WS_OUTCOME not in attributes:
        span.set_attribute(WS_OUTCOME, "ack")
        span.set_status(StatusCode.OK)


def nack(code: str) -> None:
    """Mark the current envelope's span as answered with a nack ``code``."""
    if _tracer is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import StatusCode

    span = trace.get_current_span()
    span.set_attribute(WS_OUTCOME, code)
    span.set_status(StatusCode.ERROR, code)


def query_span(query: str) -> contextlib.AbstractContextManager[Span]:
    """The span of one database round trip; only while :func:`enabled`.

    The statement text only: values travel as ``$n`` parameters and are never recorded.
    """
    operation = query.lstrip().split(None, 1)[0].upper() if query.strip() else "QUERY"
    return _span(
        operation,
        "CLIENT",
        {
            "db.system.name": "postgresql",
            "db.operation.name": operation,
            "db.query.text": query[:_MAX_STATEMENT],
        },
    )


def publish_span(
    channel: str, size: int, system: str
) -> contextlib.AbstractContextManager[Span | None]:
    """The span of one bus publish; a no-op (no allocation) while tracing is off."""
    if _tracer is None:
        return _NOTHING
    family = channel.partition(":")[0]
    return _span(
        "bus.publish",
        "PRODUCER",
        {
            "messaging.system": system,
            "messaging.operation.type": "send",
            "messaging.destination.name": channel,
            "boltorezka.bus.family": family,
            "messaging.message.body.size": size,
        },
    )


def _set_ids(span: Span, **ids: Any) -> None:
    for key, value in ids.items():
        if value is not None and value != "":
            span.set_attribute(_FROM_LOG_CONTEXT[key], str(value))


def _ids_from_context() -> SpanProcessor:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor

    class IdsFromContext(SpanProcessor):
        """Puts the log context's ids on every span as it starts, and the user and session
        of its parent where the log context has none (inside a WebSocket envelope)."""

        def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
            for key, value in structlog.contextvars.get_contextvars().items():
                attribute = _FROM_LOG_CONTEXT.get(key)
                if attribute is not None and value is not None:
                    span.set_attribute(attribute, str(value))
            inherited = getattr(trace.get_current_span(parent_context), "attributes", None)
            if inherited:
                own = span.attributes or {}
                for attribute in _INHERITED:
                    if attribute not in own and attribute in inherited:
                        span.set_attribute(attribute, inherited[attribute])

    return IdsFromContext()
