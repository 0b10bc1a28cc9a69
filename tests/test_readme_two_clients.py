"""README's two-client session runs as written against a live server."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

ROOT = Path(__file__).resolve().parent.parent


def _script() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- two-clients:start -->\s*```python\n(.*?)```\s*<!-- two-clients:end -->", readme, re.S
    )
    assert block is not None, "README.md lost its two-client session"
    return block.group(1)


async def test_two_client_session_from_readme(client: TestClient[Any, Any], tmp_path: Path) -> None:
    script = _script().replace("http://127.0.0.1:8080", f"http://127.0.0.1:{client.server.port}")
    path = tmp_path / "two_clients.py"
    path.write_text(script)
    # The client is installed (README's run command does it): nothing on PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(path),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    text = out.decode()
    assert "dave sees:" in text and "'active': True" in text
    assert "carol's message acknowledged with seq 1" in text
    assert "dave received: Hi Dave! seq 1" in text
    assert "carol received: Hi Carol, got it." in text
