"""`boltorezka serve` runs on uvloop when it is installed, unless told to use asyncio's own."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from tests.helpers import cli_env, run_cli
from tests.test_drain import _start

if TYPE_CHECKING:
    from tests.conftest import TestDatabase


def _listening(log: Path) -> dict[str, object]:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"listening"' in line:
            record: dict[str, object] = json.loads(line)
            return record
    raise AssertionError("no 'listening' log line:\n" + log.read_text(errors="replace"))


@pytest.mark.parametrize(("setting", "expected"), [("auto", "uvloop"), ("asyncio", "asyncio")])
async def test_the_event_loop_follows_the_setting(
    test_db: TestDatabase, tmp_path: Path, setting: str, expected: str
) -> None:
    pytest.importorskip("uvloop")
    server = await _start(test_db, tmp_path, EVENT_LOOP=setting, LOG_LEVEL="info")
    try:
        async with aiohttp.ClientSession() as http:
            await server.wait_status(http, 200)
            # The server still does its job on either loop.
            async with http.get(f"{server.base}/v1/openapi.json") as response:
                assert response.status == 200
        assert _listening(server.log)["event_loop"] == expected
        server.proc.send_signal(signal.SIGTERM)
        assert await server.exit_code() == 0
    finally:
        await server.kill()


async def test_an_unknown_event_loop_is_a_configuration_error() -> None:
    code, _, err = await run_cli("serve", env=cli_env(EVENT_LOOP="trio"))
    assert code == 2
    assert "BOLTOREZKA_EVENT_LOOP" in err
