"""A PostgreSQL cluster of a test's own, on its own loopback port, to stop and start at will.

Tests that break the database never touch the machine's shared one. The binaries are
pgserver's bundled ``initdb`` and ``pg_ctl`` (pgserver is in ``requirements/dev.txt``, so
every machine that runs the suite has them), else those on ``PATH``. PostgreSQL refuses to
run as root, so under root (as on CI) they run as the unprivileged ``pgserver`` user, the
way pgserver itself runs its embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import asyncpg

from tests.helpers import free_port
from tests.redis_server import require_program

PATIENCE = 60.0
# The system user pgserver runs PostgreSQL as when started by root.
SERVICE_USER = "pgserver"


def _bundled_bin() -> Path | None:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "pginstall" / "bin"
    return path if (path / "pg_ctl").exists() else None


def _find_bin() -> Path | None:
    bundled = _bundled_bin()
    if bundled is not None:
        return bundled
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and shutil.which("initdb") else None


PG_BIN = _find_bin()


def _run_as_service_user() -> str | None:
    """The user to run PostgreSQL as: None unless this process is root."""
    if os.geteuid() != 0:
        return None
    assert PG_BIN is not None
    # Imported only here: these helpers are what pgserver does itself when run as root
    # (create the user, let it traverse to and execute the binaries). Importing the
    # package asks platformdirs for a runtime directory it does not need here, which
    # warns where XDG_RUNTIME_DIR is unset (containers, CI).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import (  # type: ignore[import-untyped, unused-ignore]
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    ensure_user_exists(SERVICE_USER)
    ensure_prefix_permissions(PG_BIN)
    ensure_folder_permissions(PG_BIN, 0o055)
    ensure_folder_permissions(PG_BIN.parent / "lib", 0o044)
    return SERVICE_USER


class PrivatePostgres:
    """One PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only."""

    def __init__(self) -> None:
        require_program(str(PG_BIN) if PG_BIN is not None else None, "initdb and pg_ctl")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user = _run_as_service_user()
        # Not under pytest's tmp_path: its parents are private to root, and the service
        # user must reach the directory (a short path also keeps the Unix socket legal).
        self.directory = Path(tempfile.mkdtemp(prefix="bz-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        if self._user is not None:
            shutil.chown(self.directory, self._user, self._user)
        self._pg(
            "initdb",
            "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
            "--no-sync",
        )  # fmt: skip

    def _pg(self, program: str, *args: str) -> None:
        assert PG_BIN is not None
        # Output to a file, not a pipe: the postmaster that pg_ctl starts inherits its
        # descriptors, and a pipe held open by it would never reach end of file.
        with tempfile.TemporaryFile() as output:
            done = subprocess.run(
                [str(PG_BIN / program), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                user=self._user,
                timeout=PATIENCE,
                check=False,
            )
            if done.returncode != 0:
                output.seek(0)
                text = output.read().decode(errors="replace")
                raise RuntimeError(f"{program} {' '.join(args)} failed:\n{text}\n{self.log_tail()}")

    def start(self) -> None:
        """Start and wait until it accepts connections (``pg_ctl -w``)."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c max_connections=50 -c shared_buffers=16MB"
        )
        self._pg(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(PATIENCE)),
            "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>``: ``fast`` ends every session first, ``immediate`` is a
        crash (no shutdown checkpoint; the next start recovers from the WAL)."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    async def wait_up(self) -> None:
        async with asyncio.timeout(PATIENCE):
            while True:
                try:
                    conn = await asyncpg.connect(self.url, timeout=2)
                except (OSError, asyncpg.PostgresError, TimeoutError):
                    await asyncio.sleep(0.05)
                    continue
                await conn.close()
                return

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    def cleanup(self) -> None:
        """Whatever the test did, leave no server and no files behind."""
        if self.running:
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
