"""Prometheus metrics, one registry per application instance, and the listener that can
serve them apart from the API (``BOLTOREZKA_METRICS_LISTEN``)."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

_log = structlog.get_logger("boltorezka.metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every metric the server exports; tests and several apps in one process stay apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # The default registry's process_*, python_info and python_gc_* series, on this one:
        # CPU, RSS, open fds and collector pauses beside the server's own numbers. (The
        # module-level collectors are bound to prometheus_client's global registry, which
        # /metrics does not serve.)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
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
        self.ws_request_latency = Histogram(
            "boltorezka_ws_request_duration_seconds",
            "From a client request's arrival to its ack or nack being queued, by message type",
            ["type"],
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
        # The *_ratio and *_rate gauges are this process's since its start: they reset on
        # restart and cannot be summed across nodes. Deprecated for the counters beside
        # them (deploy/grafana/boltorezka.json has the PromQL); kept while dashboards move.
        self.call_setup_success_ratio = Gauge(
            "boltorezka_call_setup_success_ratio",
            "Deprecated, use boltorezka_call_setups_total: share of participants' reported "
            "ICE set-ups that connected, since this process started",
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
            "Deprecated, use boltorezka_call_media_total: share of calls with set-up "
            "reports in which media flowed, since this process started",
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
            "Deprecated, use boltorezka_ice_outcomes_total: share of reported ICE "
            "negotiations that failed, since this process started",
            registry=self.registry,
        )
        self.ice_candidate_types = Counter(
            "boltorezka_ice_selected_candidates_total",
            "Selected ICE candidate type reported by clients",
            ["type"],
            registry=self.registry,
        )
        # Read at scrape time from the objects they describe (observe_node).
        self.bus_routing_up = Gauge(
            "boltorezka_bus_routing_up",
            "1 while events reach the other nodes through the bus (Redis), 0 while they "
            "cannot (the /readyz bus check)",
            registry=self.registry,
        )
        self.draining = Gauge(
            "boltorezka_draining",
            "1 once the node is draining (/readyz answers 503)",
            registry=self.registry,
        )
        self.db_pool_connections = Gauge(
            "boltorezka_db_pool_connections",
            "Database connections the pool holds open",
            registry=self.registry,
        )
        self.db_pool_idle = Gauge(
            "boltorezka_db_pool_idle_connections",
            "Open database connections not in use",
            registry=self.registry,
        )
        self.db_pool_max = Gauge(
            "boltorezka_db_pool_max_connections",
            "Largest size of the database pool (BOLTOREZKA_DB_POOL_MAX)",
            registry=self.registry,
        )
        self.writer_queued = Gauge(
            "boltorezka_message_writer_queued",
            "Chat sends waiting for the next batch to the database",
            registry=self.registry,
        )
        # Webhooks (webhooks/dispatcher.py). The queue gauges are read from the shared
        # outbox, so every node reports the same cluster-wide value.
        self.webhook_deliveries = Counter(
            "boltorezka_webhook_deliveries_total",
            "Webhook delivery attempts by outcome: delivered (2xx), retrying (failed, "
            "another attempt is scheduled), gave_up (failed past the attempts or age allowed)",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_attempt_seconds = Histogram(
            "boltorezka_webhook_attempt_duration_seconds",
            "Time one webhook POST took, whatever its outcome",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.webhook_delivery_lag = Histogram(
            "boltorezka_webhook_delivery_lag_seconds",
            "From an event's commit to its webhook's 2xx answer, retries included",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0),
            registry=self.registry,
        )
        self.webhook_queue_depth = Gauge(
            "boltorezka_webhook_queue_depth",
            "Webhook deliveries not yet made nor given up, all nodes together",
            registry=self.registry,
        )
        self.webhook_queue_oldest = Gauge(
            "boltorezka_webhook_queue_oldest_seconds",
            "Age of the oldest webhook delivery not yet made nor given up (0: none)",
            registry=self.registry,
        )
        self._setups = {"connected": 0, "failed": 0}
        self._ice = {"ok": 0, "failed": 0}
        self._media = {"media": 0, "no_media": 0, "failed": 0}

    def observe_node(
        self,
        *,
        pool: asyncpg.Pool,
        routing_problem: Callable[[], str | None],
        draining: Callable[[], bool],
        writer_queued: Callable[[], int],
    ) -> None:
        """Read the node's state at each scrape; nothing is counted between scrapes."""
        self.bus_routing_up.set_function(lambda: 0.0 if routing_problem() else 1.0)
        self.draining.set_function(lambda: 1.0 if draining() else 0.0)
        self.db_pool_connections.set_function(lambda: float(pool.get_size()))
        self.db_pool_idle.set_function(lambda: float(pool.get_idle_size()))
        self.db_pool_max.set_function(lambda: float(pool.get_max_size()))
        self.writer_queued.set_function(lambda: float(writer_queued()))

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


class MetricsListener:
    """``/metrics`` on an address of its own, for a scraper on a private network.

    With it, the API's listener no longer serves ``/metrics`` (app.py), so the public port
    shows nothing of the node's internals.
    """

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self._metrics = metrics
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = [a for a in runner.addresses if isinstance(a, tuple)]
        self.port = int(addresses[0][1]) if addresses else self._port
        _log.info("metrics listening", host=self._host, port=self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )
