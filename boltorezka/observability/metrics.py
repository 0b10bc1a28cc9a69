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
        # Frames sent since the last scrape: a plain int per frame, folded into the counter
        # when /metrics is read, so fan-out pays no lock per recipient.
        self._frames_out = 0
        self.ws_delivery_latency = Histogram(
            "boltorezka_ws_delivery_latency_seconds",
            "From a chat message's commit to its frames being handed to this node's "
            "subscribers' sockets, once per message and node",
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

        self.call_events = Counter(
            "boltorezka_call_events_total",
            "Call lifecycle requests by kind",
            ["event"],
            registry=self.registry,
        )
        # ICE connecting is not media flowing: the call_setup* series count ICE, once per
        # participant; call_media_* count calls by whether any frame was decoded.
        self.call_setups = Counter(
            "boltorezka_call_setups_total",
            "ICE set-ups reported by call participants (once per participant and outcome), "
            "by outcome (connected or failed); not media, see boltorezka_call_media_total",
            ["outcome"],
            registry=self.registry,
        )
        self.call_setup_success_ratio = Gauge(
            "boltorezka_call_setup_success_ratio",
            "Share of participants' reported ICE set-ups that connected, since start",
            registry=self.registry,
        )
        self.call_setup_seconds = Histogram(
            "boltorezka_call_setup_seconds",
            "Time from starting or joining a call to ICE connected, as clients report it",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0),
            registry=self.registry,
        )
        self.call_media = Counter(
            "boltorezka_call_media_total",
            "Calls with set-up reports, once per call: media (a participant decoded a frame "
            "from another), no_media (ICE connected but no frame by the end), failed",
            ["outcome"],
            registry=self.registry,
        )
        self.call_media_success_ratio = Gauge(
            "boltorezka_call_media_success_ratio",
            "Share of calls with set-up reports in which media flowed, since start",
            registry=self.registry,
        )
        self.call_first_frame_seconds = Histogram(
            "boltorezka_call_first_frame_seconds",
            "Time from starting or joining a call to the first decoded remote frame, "
            "as clients report it",
            buckets=(0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0),
            registry=self.registry,
        )
        self.ice_outcomes = Counter(
            "boltorezka_ice_outcomes_total",
            "ICE outcomes reported by clients (ok or failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.ice_failure_rate = Gauge(
            "boltorezka_ice_failure_rate",
            "Share of reported ICE negotiations that failed, since start",
            registry=self.registry,
        )
        self.ice_candidate_types = Counter(
            "boltorezka_ice_selected_candidates_total",
            "Selected ICE candidate type reported by clients",
            ["type"],
            registry=self.registry,
        )
        self._setups = {"connected": 0, "failed": 0}
        self._ice = {"ok": 0, "failed": 0}
        self._media = {"media": 0, "no_media": 0, "failed": 0}

    def record_call_setup(self, outcome: str, ice_failed: bool) -> None:
        self.call_setups.labels(outcome).inc()
        self._setups[outcome] = self._setups.get(outcome, 0) + 1
        total = sum(self._setups.values())
        self.call_setup_success_ratio.set(self._setups["connected"] / total)
        ice = "failed" if ice_failed else "ok"
        self.ice_outcomes.labels(ice).inc()
        self._ice[ice] += 1
        self.ice_failure_rate.set(self._ice["failed"] / sum(self._ice.values()))

    def record_call_media(self, outcome: str) -> None:
        """One call's media outcome: ``media``, ``no_media`` or ``failed``."""
        self.call_media.labels(outcome).inc()
        self._media[outcome] = self._media.get(outcome, 0) + 1
        self.call_media_success_ratio.set(self._media["media"] / sum(self._media.values()))

    def count_frame_out(self) -> None:
        self._frames_out += 1

    def render(self) -> bytes:
        if self._frames_out:
            self.ws_messages_out.inc(self._frames_out)
            self._frames_out = 0
        data: bytes = generate_latest(self.registry)
        return data
