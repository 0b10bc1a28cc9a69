"""Boltorezka installs as it ships: from the lock files and the wheel, not from the checkout.

- The release install (``tools/install-release.sh``, which the container image runs) gives a
  virtualenv that migrates and serves from a directory outside the source tree, with the
  migrations and the OpenAPI document read from inside the package, and without the
  optional weight (embedded PostgreSQL, media stack).
- README's run command, on a clean copy of the tree, gives a server and the Python client:
  the README's two-client example then runs with nothing else installed.

These build virtualenvs from the lock files, so they take a minute or so each.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

import boltorezka
from tests.conftest import ROOT
from tests.test_readme_two_clients import _script as two_clients_script
from tests.test_readme_walkthrough import http, running_server

INSTALL_TIMEOUT = 900


def _run(
    command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _clean_env() -> dict[str, str]:
    """The environment of a new shell: no BOLTOREZKA_*, no virtualenv, no PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BOLTOREZKA_") and k not in {"PYTHONPATH", "VIRTUAL_ENV"}
    }
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


def _readme_command(name: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(
        rf"<!-- {name}:start -->\s*```bash\n(.*?)\n```\s*<!-- {name}:end -->", text, re.S
    )
    assert match is not None, f"README.md lost its {name} block"
    return match.group(1)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """Not pytest's tmp_path: the embedded PostgreSQL (run as its own user when we are root)
    must traverse every parent directory, and /tmp/pytest-of-* is mode 0700."""
    path = Path(tempfile.mkdtemp(prefix="boltorezka-install-")).resolve()
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def release_venv(scratch: Path) -> Path:
    venv = scratch / "release-venv"
    result = _run(
        ["bash", str(ROOT / "tools" / "install-release.sh"), str(venv)],
        cwd=scratch,
        env=_clean_env(),
        timeout=INSTALL_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return venv


@pytest.fixture
def fresh_schema_url(pg_url: str) -> Iterator[str]:
    """A database URL whose connections use a new, empty schema (dropped afterwards)."""
    schema = f"t_{uuid.uuid4().hex[:16]}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f"CREATE SCHEMA {schema}"))
    try:
        # asyncpg passes query parameters it does not know on as server settings.
        yield f"{pg_url}?search_path={schema}"
    finally:
        asyncio.run(execute(f"DROP SCHEMA {schema} CASCADE"))


def test_release_install_serves_from_outside_the_checkout(
    release_venv: Path, scratch: Path, fresh_schema_url: str
) -> None:
    outside = scratch / "elsewhere"
    outside.mkdir(exist_ok=True)
    python = release_venv / "bin" / "python"
    boltorezka_cmd = str(release_venv / "bin" / "boltorezka")

    located = _run([str(python), "-c", "import boltorezka; print(boltorezka.__file__)"], outside)
    assert located.returncode == 0, located.stderr
    assert Path(located.stdout.strip()).is_relative_to(release_venv), located.stdout
    version = _run([boltorezka_cmd, "--version"], outside, env=_clean_env())
    assert version.stdout.strip() == f"boltorezka {boltorezka.__version__}"

    env = _clean_env() | {"BOLTOREZKA_DATABASE_URL": fresh_schema_url}
    migrated = _run([boltorezka_cmd, "migrate"], outside, env=env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    shipped = sorted(p.name for p in (ROOT / "boltorezka" / "store" / "migrations").glob("*.sql"))
    assert f"applied {len(shipped)} migration(s): {', '.join(shipped)}" in migrated.stdout

    with running_server(
        scratch / "data-release",
        scratch / "release-server.log",
        command=[boltorezka_cmd, "serve", "--no-migrate"],
        cwd=outside,
        env={"BOLTOREZKA_DATABASE_URL": fresh_schema_url},
    ) as server:
        status, ready = http("GET", server.base_url + "/readyz")
        assert status == 200, ready
        assert ready["checks"] == {"database": "ok", "migrations": "ok"}
        status, document = http("GET", server.base_url + "/v1/openapi.json")
        assert status == 200
        assert document == json.loads((ROOT / "protocol" / "openapi.json").read_text())
        # The web app is package data too: / and its modules come from inside the wheel.
        for path in ("/", "/app/main.js", "/sdk/index.js"):
            with urllib.request.urlopen(server.base_url + path, timeout=10) as response:
                kind = "text/html" if path == "/" else "text/javascript"
                assert response.headers["Content-Type"].startswith(kind), path
                packaged = ROOT / "boltorezka" / "web" / (path.strip("/") or "index.html")
                assert response.read() == packaged.read_bytes(), path
        status, body = http(
            "POST",
            server.base_url + "/v1/auth/register",
            {"username": "from-the-wheel", "password": "correct horse battery"},
        )
        assert status == 201, body


def test_release_install_leaves_out_the_optional_weight(release_venv: Path, scratch: Path) -> None:
    python = str(release_venv / "bin" / "python")
    for module in ("pgserver", "aiortc", "av", "pytest"):
        found = _run([python, "-c", f"import {module}"], scratch)
        assert found.returncode != 0, f"{module} is in the production install"

    # Without a database URL and without the embedded PostgreSQL: a clear message, exit 5.
    boltorezka_cmd = str(release_venv / "bin" / "boltorezka")
    env = _clean_env() | {"BOLTOREZKA_DATA_DIR": str(scratch / "data-none")}
    serve = _run([boltorezka_cmd, "serve"], scratch, env=env, timeout=60)
    assert serve.returncode == 5, serve.stdout + serve.stderr
    assert "boltorezka[embedded]" in serve.stderr and "BOLTOREZKA_DATABASE_URL" in serve.stderr
    assert "Traceback" not in serve.stderr + serve.stdout
    sfu = _run([boltorezka_cmd, "sfu"], scratch, env=env, timeout=60)
    assert sfu.returncode == 5, sfu.stdout + sfu.stderr
    assert "boltorezka[sfu]" in sfu.stderr and "Traceback" not in sfu.stderr


def _copy_of_the_tree(destination: Path) -> None:
    """The files a fresh clone has (git's tracked files), without this checkout's venv."""
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT)
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree but not yet in the index
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


def test_readme_run_command_gives_server_and_client(scratch: Path) -> None:
    command = _readme_command("run-command")
    install, serve = command.rsplit(" && ", 1)
    assert serve == "boltorezka serve", command
    tree = scratch / "tree"
    _copy_of_the_tree(tree)
    installed = _run(
        ["bash", "-euo", "pipefail", "-c", install], tree, _clean_env(), INSTALL_TIMEOUT
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr[-4000:]

    venv_bin = tree / ".venv" / "bin"
    with running_server(
        scratch / "data-readme",
        scratch / "readme-server.log",
        command=[str(venv_bin / "boltorezka"), "serve"],
        cwd=tree,
    ) as server:
        script = two_clients_script().replace("http://127.0.0.1:8080", server.base_url)
        path = scratch / "two_clients.py"
        path.write_text(script)
        # As the README says: the virtualenv's python, run from anywhere, nothing on PYTHONPATH.
        ran = _run([str(venv_bin / "python"), str(path)], scratch, _clean_env(), timeout=120)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "carol's message acknowledged with seq 1" in ran.stdout, ran.stdout
        assert "carol received: Hi Carol, got it." in ran.stdout, ran.stdout


def test_the_container_image_is_the_release_install() -> None:
    """No engine runs here, so the Dockerfile must stay a wrapper over what the tests run."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    runs = re.findall(r"^RUN (.*)$", dockerfile, re.M)
    installs = [run for run in runs if "install-release.sh" in run]
    assert installs == [
        "tools/install-release.sh /opt/boltorezka requirements/server.txt",
        "tools/install-release.sh /opt/boltorezka requirements/sfu.txt",
    ]
    assert not any("pip install" in run for run in runs), runs
    stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M)
    assert stages[-1] == "server", "the default target must be the API node"
    final = dockerfile.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", final, re.M), "must run as a numeric non-root user"
    assert "HEALTHCHECK" in final.split("AS server", 1)[1]
