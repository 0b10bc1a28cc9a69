"""The shipped deployment files agree with each other: compose.yml runs two API nodes behind
HAProxy with deploy/haproxy.cfg as shipped, and that file is valid for one, two or three
nodes (HAProxy's own checker decides)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.redis_server import require_program

ROOT = Path(__file__).resolve().parent.parent
HAPROXY = shutil.which("haproxy")


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "compose.yml").read_text())
    return document


def _haproxy_check(nodes: int) -> subprocess.CompletedProcess[str]:
    require_program(HAPROXY, "haproxy")
    assert HAPROXY is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLTOREZKA_")}
    env["BOLTOREZKA_LB_BIND"] = "127.0.0.1:18000"
    for index in range(1, nodes + 1):
        env[f"BOLTOREZKA_NODE{index}"] = f"127.0.0.1:{18000 + index}"
    return subprocess.run(
        [HAPROXY, "-c", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_compose_runs_two_api_nodes_behind_the_shipped_balancer() -> None:
    services = _compose()["services"]
    api_nodes = [
        name for name, spec in services.items() if spec.get("build", {}).get("target") == "server"
    ]
    assert sorted(api_nodes) == ["api-1", "api-2"]
    node_ids = {services[name]["environment"]["BOLTOREZKA_NODE_ID"] for name in api_nodes}
    assert node_ids == {"api-1", "api-2"}, "each node needs its own stable id"
    for name in api_nodes:
        env = services[name]["environment"]
        assert env["BOLTOREZKA_REDIS_URL"].startswith("redis://"), "two nodes need Redis routing"
        assert "ports" not in services[name], "clients reach the nodes only through the balancer"

    balancer = services["lb"]
    assert "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in balancer["volumes"]
    targets = {
        value.split(":")[0]
        for key, value in balancer["environment"].items()
        if key.startswith("BOLTOREZKA_NODE")
    }
    assert targets == set(api_nodes)
    assert balancer["ports"] == ["8080:8080"]
    # The nodes believe X-Forwarded-For from the balancer's fixed address, and only from it.
    balancer_address = balancer["networks"]["default"]["ipv4_address"]
    for name in api_nodes:
        assert services[name]["environment"]["BOLTOREZKA_TRUSTED_PROXIES"] == balancer_address


@pytest.mark.parametrize("nodes", [1, 2, 3])
def test_the_balancer_config_is_valid_for_one_to_three_nodes(nodes: int) -> None:
    result = _haproxy_check(nodes)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_balancer_config_needs_the_first_node() -> None:
    result = _haproxy_check(0)
    assert result.returncode != 0
