"""``--provision``: make the accounts on this machine with ``boltorezka admin bulk-users``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from boltorezka_client.loadtest.scenario import Scenario


class ProvisionError(RuntimeError):
    pass


def command(scenario: Scenario, out: Path) -> list[str]:
    installed = shutil.which("boltorezka")
    base = [installed] if installed else [sys.executable, "-m", "boltorezka"]
    return [
        *base,
        "admin",
        "bulk-users",
        "--count",
        str(scenario.clients),
        "--rooms",
        str(scenario.rooms),
        "--room-size",
        str(scenario.room_size),
        "--out",
        str(out),
    ]


def provision(scenario: Scenario, out: Path, timeout: float = 300.0) -> None:
    """Runs with this process's environment: BOLTOREZKA_DATABASE_URL and
    BOLTOREZKA_JWT_SECRET must be the target server's."""
    try:
        done = subprocess.run(  # noqa: S603 - our own command, no shell
            command(scenario, out), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProvisionError(f"`boltorezka admin bulk-users` did not run: {exc}") from None
    if done.returncode != 0:
        raise ProvisionError(
            f"`boltorezka admin bulk-users` failed ({done.returncode}): {done.stderr.strip()}"
        )
