"""The web SDK's own checks, run from the Python suite so README's test command runs them:
its unit tests under Node's built-in runner (``clients/web/test``: every protocol vector,
the seq gate, reconnect and resume against a fake server, token refresh) and the
``tsc --noEmit`` type check of the SDK and the app.

Without Node (or, for the type check, without ``npm ci --prefix clients/web``) these are
skipped, except on CI (``CI=true``), where ``.ci/run`` installs what they need and they
must run. tests/test_web_e2e.py reuses the checks for the browser.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.redis_server import require_program

WEB = ROOT / "clients" / "web"
TSC = WEB / "node_modules" / "typescript" / "bin" / "tsc"
CHROMIUM = Path("/usr/bin/chromium")
# Fake camera and microphone, and none of the background traffic this closed network refuses;
# every browser test launches with these.
CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NODE_TESTS = sorted(path.name for path in (WEB / "test").glob("*.test.js"))
MIN_NODE = 20


def on_ci() -> bool:
    return os.environ.get("CI") == "true"


def require_node() -> str:
    """Node.js 20 or newer, or skip (fail on CI)."""
    node = require_program(shutil.which("node"), "node (Node.js 20+)")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    major = int(version.lstrip("v").split(".")[0] or 0)
    if major < MIN_NODE:
        message = f"node {version} is too old; the web client's tests need Node.js {MIN_NODE}+"
        if on_ci():
            pytest.fail(message)
        pytest.skip(message)
    return node


def require_chromium() -> str:
    """Debian's chromium (never a browser Playwright downloads), or skip (fail on CI)."""
    return require_program(str(CHROMIUM) if CHROMIUM.is_file() else None, "chromium")


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NODE_OPTIONS": "", "NO_COLOR": "1"},
    )


def test_the_sdk_has_unit_tests() -> None:
    assert {"codec.test.js", "seqgate.test.js", "realtime.test.js"} <= set(NODE_TESTS)


@pytest.mark.parametrize("name", NODE_TESTS)
def test_sdk_unit_tests(name: str) -> None:
    node = require_node()
    result = _run([node, "--test", f"test/{name}"], timeout=120)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    # The runner prints "# pass N" / "# fail N"; a file whose tests never ran is a failure too.
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout, result.stdout[-4000:]


def test_typecheck_sdk_and_app() -> None:
    node = require_node()
    if not TSC.is_file():
        message = "TypeScript is not installed: run `npm ci --prefix clients/web`"
        if on_ci():
            require_program(shutil.which("npm"), "npm")
            pytest.fail(message + " (.ci/run does)")
        pytest.skip(message)
    result = _run([node, str(TSC), "--noEmit", "-p", "."], timeout=600)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
