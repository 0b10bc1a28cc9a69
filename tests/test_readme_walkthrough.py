"""The README's "Run it" path works on a fresh machine: no database configured, nothing else.

Each test starts ``python -m boltorezka serve`` as a subprocess with no
``BOLTOREZKA_DATABASE_URL``, so the server starts its own embedded PostgreSQL in a temporary
data directory, exactly as a first-time user would get it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
README_BASE_URL = "http://127.0.0.1:8080"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
PASSWORD = "correct horse battery"


def walkthrough_script() -> str:
    """The bash block between the walkthrough markers in README.md."""
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- walkthrough:start -->", "<!-- walkthrough:end -->"
    assert start in text and end in text, "README.md lost its walkthrough markers"
    block = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert block.startswith("```bash\n") and block.endswith("```"), block[:80]
    script = block.removeprefix("```bash\n").removesuffix("```")
    assert README_BASE_URL in script, "the walkthrough no longer uses the default address"
    return script


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def processes_using(path: Path) -> list[psutil.Process]:
    """Processes whose command line mentions ``path`` (the embedded postgres and its kin)."""
    needle = str(path)
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(needle in part for part in cmdline):
            found.append(proc)
    return found


def http(
    method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 10
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-6000:]


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"server exited with {server.process.returncode} before it was ready:\n"
                + server.output()
            )
        try:
            status, body = http("GET", server.base_url + "/readyz", timeout=2)
        except (OSError, ValueError) as exc:
            last = repr(exc)
        else:
            if status == 200:
                return
            last = f"{status} {body}"
        time.sleep(0.25)
    raise AssertionError(
        f"/readyz did not answer 200 within {START_TIMEOUT:.0f}s (last: {last}):\n"
        + server.output()
    )


def start_server(
    data_dir: Path,
    log: Path,
    command: Sequence[str] = (sys.executable, "-m", "boltorezka", "serve"),
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
) -> Server:
    """``boltorezka serve`` as on a fresh machine: no BOLTOREZKA_* but the data dir and port.

    ``env`` adds variables on top of that (a database URL, say).
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BOLTOREZKA_")}
    port = free_port()
    full_env |= {"BOLTOREZKA_DATA_DIR": str(data_dir), "BOLTOREZKA_PORT": str(port)}
    full_env |= env or {}
    with log.open("ab") as sink:
        process = subprocess.Popen(
            list(command),
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Server(process, f"http://127.0.0.1:{port}", log)


@contextlib.contextmanager
def running_server(
    data_dir: Path,
    log: Path,
    command: Sequence[str] = (sys.executable, "-m", "boltorezka", "serve"),
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """A ready server on ``data_dir``; on exit, SIGTERM it and insist on a clean stop.

    Whatever happens, nothing started for ``data_dir`` is left running afterwards.
    """
    server = start_server(data_dir, log, command, cwd, env)
    process = server.process
    stopped_cleanly = False
    try:
        _wait_ready(server)
        yield server
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"server did not exit within {STOP_TIMEOUT:.0f}s of SIGTERM:\n" + server.output()
            ) from None
        assert code == 0, f"server exited with {code} after SIGTERM:\n" + server.output()
        # The embedded postgres stops as the server exits; give it a moment to be gone.
        deadline = time.monotonic() + STOP_TIMEOUT
        while processes_using(data_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftovers = [p.info.get("cmdline") for p in processes_using(data_dir)]
        assert not leftovers, f"still running after the server stopped: {leftovers}"
        stopped_cleanly = True
    finally:
        if not stopped_cleanly:
            _force_stop(process, data_dir)


def _force_stop(process: subprocess.Popen[bytes] | None, data_dir: Path) -> None:
    """Clean up after a failed test: our server, then any postgres it left on data_dir."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    leftovers = processes_using(data_dir)
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(leftovers, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch directory for the data dir and the server's log.

    Not pytest's ``tmp_path``: as root, the embedded PostgreSQL runs as the ``pgserver`` user
    and needs to traverse every parent directory, while each new pytest session (of anyone
    on this machine) resets ``/tmp/pytest-of-<user>`` to mode 0700 under our feet.
    """
    path = Path(tempfile.mkdtemp(prefix="boltorezka-readme-")).resolve()
    try:
        yield path
    finally:
        _force_stop(None, path)
        shutil.rmtree(path, ignore_errors=True)


def test_readme_walkthrough_on_a_fresh_machine(workdir: Path) -> None:
    data_dir = workdir / "data"
    with running_server(data_dir, workdir / "server.log") as server:
        script = walkthrough_script().replace(README_BASE_URL, server.base_url)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=workdir,
            check=False,
        )
        transcript = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        assert result.returncode == 0, transcript
        assert "Hello, world" in result.stdout, transcript
        assert '"seq":1' in result.stdout, transcript
        # The embedded database lives where the data directory says.
        assert (data_dir / "pgdata" / "PG_VERSION").is_file()


def test_data_survives_a_restart_on_the_same_data_dir(workdir: Path) -> None:
    data_dir = workdir / "data"
    log = workdir / "server.log"
    with running_server(data_dir, log) as server:
        status, body = http(
            "POST",
            server.base_url + "/v1/auth/register",
            {"username": "persistent", "password": PASSWORD},
        )
        assert status == 201, body
        user_id = body["user"]["id"]

    with running_server(data_dir, log) as server:
        status, body = http(
            "POST",
            server.base_url + "/v1/auth/login",
            {"username": "persistent", "password": PASSWORD},
        )
        assert status == 200, body
        assert body["user"]["id"] == user_id
        # Migrations already applied in run 1 are not applied again.
        status, ready = http("GET", server.base_url + "/readyz")
        assert status == 200 and ready["checks"]["migrations"] == "ok", ready


def test_a_crashed_server_does_not_leak_the_embedded_postgres(workdir: Path) -> None:
    """After a SIGKILL the next clean run still stops the embedded PostgreSQL on exit."""
    data_dir = workdir / "data"
    log = workdir / "server.log"
    crashed = start_server(data_dir, log)
    try:
        _wait_ready(crashed)
        status, body = http(
            "POST",
            crashed.base_url + "/v1/auth/register",
            {"username": "survivor", "password": PASSWORD},
        )
        assert status == 201, body
        crashed.process.kill()
        crashed.process.wait(timeout=STOP_TIMEOUT)
        # Nothing ran the crashed process's exit hooks, so its postgres is still up.
        assert processes_using(data_dir), "expected the orphaned embedded postgres"

        # The next run attaches to it, and its clean exit stops it (running_server checks).
        with running_server(data_dir, log) as server:
            status, body = http(
                "POST",
                server.base_url + "/v1/auth/login",
                {"username": "survivor", "password": PASSWORD},
            )
            assert status == 200, body
    finally:
        _force_stop(crashed.process, data_dir)
