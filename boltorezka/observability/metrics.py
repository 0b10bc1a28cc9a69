"""Prometheus metrics, one registry per application instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every metric the server exports; tests and several apps in one process stay apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "boltorezka_http_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "boltorezka_http_request_duration_seconds",
            "HTTP request latency by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.auth_events = Counter(
            "boltorezka_auth_events_total",
            "Authentication events by kind and outcome",
            ["event", "outcome"],
            registry=self.registry,
        )

        self.ws_connections = Gauge(
            "boltorezka_ws_connections",
            "Open WebSocket connections on this node",
            registry=self.registry,
        )
        self.ws_joins = Counter(
            "boltorezka_ws_room_joins_total", "Room joins over WebSocket", registry=self.registry
        )
        self.ws_leaves = Counter(
            "boltorezka_ws_room_leaves_total", "Room leaves over WebSocket", registry=self.registry
        )
        self.ws_messages_in = Counter(
            "boltorezka_ws_messages_in_total",
            "Client frames received, by message type",
            ["type"],
            registry=self.registry,
        )
        self.ws_messages_out = Counter(
            "boltorezka_ws_messages_out_total", "Frames sent to clients", registry=self.registry
        )
        self.ws_delivery_latency = Histogram(
            "boltorezka_ws_delivery_latency_seconds",
            "From a chat message's commit to its frame being written to a subscriber",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ws_nacks = Counter(
            "boltorezka_ws_nacks_total", "Nacks sent, by code", ["code"], registry=self.registry
        )
        self.ws_queue_overflows = Counter(
            "boltorezka_ws_queue_overflows_total",
            "Connections closed because their outbound queue overflowed",
            registry=self.registry,
        )
        self.ws_closes = Counter(
            "boltorezka_ws_closes_total",
            "Connections closed by the server, by close code",
            ["code"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data
