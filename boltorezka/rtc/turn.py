"""Time-limited TURN credentials in coturn's TURN REST scheme (``use-auth-secret``).

username = "<expiry unix time>:<user id>", password = base64(HMAC-SHA1(secret, username)).
coturn recomputes the password from its own copy of the secret and refuses the allocation
once the expiry has passed, so nothing long-lived ever reaches a client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

import msgspec


class IceServer(msgspec.Struct, omit_defaults=True):
    """One entry of ``RTCConfiguration.iceServers``, as browsers and aiortc take it."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class TurnCredentials(msgspec.Struct, rename="camel", kw_only=True):
    username: str
    password: str
    ttl: int
    expires_at: int
    uris: list[str]
    ice_servers: list[IceServer]


def turn_password(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def issue(
    user_id: uuid.UUID,
    *,
    secret: str,
    ttl: int,
    turn_uris: tuple[str, ...],
    stun_uris: tuple[str, ...] = (),
    now: int | None = None,
) -> TurnCredentials:
    expires_at = (int(time.time()) if now is None else now) + ttl
    username = f"{expires_at}:{user_id}"
    password = turn_password(secret, username)
    servers: list[IceServer] = []
    if stun_uris:
        servers.append(IceServer(urls=list(stun_uris)))
    if turn_uris:
        servers.append(IceServer(urls=list(turn_uris), username=username, credential=password))
    return TurnCredentials(
        username=username,
        password=password,
        ttl=ttl,
        expires_at=expires_at,
        uris=list(turn_uris),
        ice_servers=servers,
    )
