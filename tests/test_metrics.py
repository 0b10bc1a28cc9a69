"""What an operator's Prometheus scrapes: process and runtime series, the node's state read
at scrape time, cluster-safe call counters, the separate metrics listener, and a dashboard
that names only metrics the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from boltorezka_client import BoltorezkaClient

from boltorezka.config import ConfigError, Settings
from boltorezka.observability.metrics import Metrics
from boltorezka.runtime import Services
from tests.conftest import make_client
from tests.helpers import create_room, free_port, register

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "boltorezka.json"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$")
# Metric names the server exports (the families of the registry's prefixes); PromQL's own
# words and label names never start with these.
_METRIC_NAME = re.compile(r"\b(?:boltorezka|process|python)_[a-zA-Z0-9_]+\b")


def exported_names(text: str) -> set[str]:
    """Every series name a scrape of ``text`` can show: samples, and each family's names
    even before its first observation (a labelled counter shows no sample until then)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif not line.startswith("#") and (match := _SAMPLE.match(line)):
            names.add(match.group(1))
    return names


def value(text: str, series: str) -> float:
    for line in text.splitlines():
        name, _, number = line.rpartition(" ")
        if name == series:
            return float(number)
    raise AssertionError(f"{series} is not in the scrape")


def promql_names(expr: str) -> set[str]:
    return set(_METRIC_NAME.findall(expr))


async def scrape(client: TestClient[Any, Any]) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    return await response.text()


async def test_process_and_runtime_series_are_on_the_apps_registry(
    client: TestClient[Any, Any],
) -> None:
    text = await scrape(client)
    assert value(text, "process_resident_memory_bytes") > 0
    assert value(text, "process_open_fds") > 0
    assert "process_cpu_seconds_total" in exported_names(text)
    assert 'python_gc_collections_total{generation="0"}' in text
    assert "python_info{" in text


def test_two_registries_in_one_process_each_get_the_collectors() -> None:
    # Tests and several apps share a process; a collector registered twice would raise.
    first, second = Metrics(), Metrics()
    for metrics in (first, second):
        assert "process_resident_memory_bytes" in exported_names(metrics.render().decode())


async def test_node_state_is_read_at_scrape_time(
    services: Services, client: TestClient[Any, Any]
) -> None:
    text = await scrape(client)
    assert value(text, "boltorezka_bus_routing_up") == 1
    assert value(text, "boltorezka_draining") == 0
    assert value(text, "boltorezka_db_pool_max_connections") == 10
    assert value(text, "boltorezka_db_pool_connections") >= 1
    assert value(text, "boltorezka_message_writer_queued") == 0
    services.draining = True
    assert value(await scrape(client), "boltorezka_draining") == 1


async def test_ws_request_latency_is_counted_per_type(
    client: TestClient[Any, Any], ws_url: str
) -> None:
    owner = await register(client)
    room = await create_room(client, owner)
    async with BoltorezkaClient(ws_url, owner.access_token) as device:
        await device.join(room)
        await device.send_message(room, "counted")
        await device.send_message(room, "counted again")
    text = await scrape(client)
    assert value(text, 'boltorezka_ws_request_duration_seconds_count{type="chat.send"}') == 2
    assert value(text, 'boltorezka_ws_request_duration_seconds_count{type="auth"}') == 1
    assert (
        value(text, 'boltorezka_ws_request_duration_seconds_bucket{le="+Inf",type="room.join"}')
        == 1
    )


def test_call_outcomes_are_counters_and_the_ratio_gauges_say_they_are_deprecated() -> None:
    metrics = Metrics()
    metrics.record_call_setup("connected", ice_failed=False)
    metrics.record_call_setup("connected", ice_failed=False)
    metrics.record_call_setup("failed", ice_failed=True)
    metrics.record_call_media("media")
    text = metrics.render().decode()
    # What PromQL sums across nodes: counters only go up, and rate() sees through restarts.
    assert "# TYPE boltorezka_call_setups_total counter" in text
    assert "# TYPE boltorezka_ice_outcomes_total counter" in text
    assert value(text, 'boltorezka_call_setups_total{outcome="connected"}') == 2
    assert value(text, 'boltorezka_call_setups_total{outcome="failed"}') == 1
    assert value(text, 'boltorezka_ice_outcomes_total{outcome="failed"}') == 1
    assert value(text, 'boltorezka_ice_outcomes_total{outcome="ok"}') == 2
    assert value(text, 'boltorezka_call_media_total{outcome="media"}') == 1
    # The old per-process gauges still answer, and say what replaces them.
    assert value(text, "boltorezka_call_setup_success_ratio") == pytest.approx(2 / 3)
    assert value(text, "boltorezka_ice_failure_rate") == pytest.approx(1 / 3)
    for gauge, counter in (
        ("boltorezka_call_setup_success_ratio", "boltorezka_call_setups_total"),
        ("boltorezka_ice_failure_rate", "boltorezka_ice_outcomes_total"),
        ("boltorezka_call_media_success_ratio", "boltorezka_call_media_total"),
    ):
        assert f"# HELP {gauge} Deprecated, use {counter}" in text


async def test_metrics_listen_serves_metrics_apart_and_not_on_the_api_port(
    services: Services,
) -> None:
    port = free_port()
    api = await make_client(services, metrics_listen=("127.0.0.1", port))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                text = await response.text()
        assert "boltorezka_ws_connections" in text
        assert "process_resident_memory_bytes" in text
        on_api = await api.get("/metrics")
        assert on_api.status == 404
        assert (await api.get("/healthz")).status == 200
    finally:
        await api.close()
    # The listener closes with the application.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/metrics")


def test_metrics_listen_setting() -> None:
    def parse(raw: str) -> tuple[str, int] | None:
        return Settings.from_env({"BOLTOREZKA_METRICS_LISTEN": raw}).metrics_listen

    assert Settings.from_env({}).metrics_listen is None
    assert parse("10.0.0.5:9100") == ("10.0.0.5", 9100)
    assert parse("[::1]:9100") == ("::1", 9100)
    for wrong in ("9100", "::1:9100", "host:", "host:port", "host:70000"):
        with pytest.raises(ConfigError, match="BOLTOREZKA_METRICS_LISTEN"):
            parse(wrong)


async def test_every_metric_the_dashboard_queries_is_exported(
    client: TestClient[Any, Any],
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 10
    exported = exported_names(await scrape(client))
    for expr in exprs:
        names = promql_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exported, f"{sorted(names - exported)} in {expr!r} are not exported"
    wanted = {
        "boltorezka_ws_connections",
        "boltorezka_ws_delivery_latency_seconds_bucket",
        "boltorezka_ws_request_duration_seconds_bucket",
        "boltorezka_call_setups_total",
        "boltorezka_ice_outcomes_total",
        "boltorezka_bus_routing_up",
        "boltorezka_db_pool_connections",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    }
    assert wanted <= set().union(*(promql_names(e) for e in exprs))
