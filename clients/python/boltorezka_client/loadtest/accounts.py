"""The tokens file of ``boltorezka admin bulk-users``, and refreshing its access tokens."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

FORMAT = "boltorezka-load-accounts/1"


class AccountsError(ValueError):
    """The tokens file is missing, malformed or too small for the scenario."""


@dataclass(slots=True)
class Account:
    index: int
    id: str
    username: str
    access_token: str
    access_expires_at: int
    refresh_token: str


@dataclass(frozen=True, slots=True)
class RoomSpec:
    id: str
    members: tuple[int, ...]  # account indexes


@dataclass(slots=True)
class Accounts:
    path: Path
    document: dict[str, Any]
    accounts: list[Account]
    rooms: list[RoomSpec]


def load(path: Path) -> Accounts:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AccountsError(f"cannot read the tokens file {path}: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise AccountsError(f"{path} is not a tokens file of `boltorezka admin bulk-users`")
    accounts = [
        Account(
            index=i,
            id=u["id"],
            username=u["username"],
            access_token=u["accessToken"],
            access_expires_at=int(u["accessTokenExpiresAt"]),
            refresh_token=u["refreshToken"],
        )
        for i, u in enumerate(document["users"])
    ]
    index_of = {a.id: a.index for a in accounts}
    rooms = [
        RoomSpec(r["id"], tuple(index_of[m] for m in r["members"] if m in index_of))
        for r in document["rooms"]
    ]
    return Accounts(path, document, accounts, rooms)


def save_refreshed(accounts: Accounts, refreshed: dict[str, dict[str, Any]]) -> None:
    """Write rotated tokens back: the old refresh tokens are spent, and presenting one
    again would be taken for theft and revoke the session."""
    if not refreshed:
        return
    for user in accounts.document["users"]:
        user.update(refreshed.get(user["id"], {}))
    tmp = accounts.path.with_name(f".{accounts.path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(accounts.document, out, indent=1)
        out.write("\n")
    os.replace(tmp, accounts.path)


def http_base(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}"


def _post_refresh(url: str, refresh_token: str, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the URL is the target, checked by targets.py
        url,
        data=json.dumps({"refreshToken": refresh_token}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        data: dict[str, Any] = json.loads(response.read())
        return data


async def refresh(account: Account, ws_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """Rotate the account's tokens through ``POST /v1/auth/refresh``; return the new fields."""
    data = await asyncio.to_thread(
        _post_refresh, f"{http_base(ws_url)}/v1/auth/refresh", account.refresh_token, timeout
    )
    account.access_token = data["accessToken"]
    account.access_expires_at = int(data["accessTokenExpiresAt"])
    account.refresh_token = data["refreshToken"]
    return {
        "accessToken": account.access_token,
        "accessTokenExpiresAt": account.access_expires_at,
        "refreshToken": account.refresh_token,
    }


def expires_soon(account: Account, margin: float = 15.0) -> bool:
    return account.access_expires_at - time.time() < margin
