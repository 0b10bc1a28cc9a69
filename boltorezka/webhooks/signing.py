"""Delivery signatures, in the scheme Stripe uses (so receivers can reuse what they know).

``Boltorezka-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, keyed with
the endpoint's secret as it was issued (the whole ``whsec_…`` string, as UTF-8). The
timestamp is signed with the body, so a receiver that refuses old timestamps refuses
replays of captured deliveries; several ``v1=`` entries may appear, any one matching is
enough. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "Boltorezka-Signature"
EVENT_ID_HEADER = "Boltorezka-Event-Id"
EVENT_TYPE_HEADER = "Boltorezka-Event-Type"
ATTEMPT_HEADER = "Boltorezka-Delivery-Attempt"
SECRET_PREFIX = "whsec_"
# What receivers are told to accept (RUNBOOK.md): a signature older or newer than this is
# a replay or a badly wrong clock.
DEFAULT_TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    return hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()


def header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Boltorezka-Signature`` value for ``body`` signed now (or at ``timestamp``)."""
    at = int(time.time()) if timestamp is None else timestamp
    return f"t={at},v1={signature(secret, at, body)}"


def verify(
    secret: str,
    body: bytes,
    value: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``value`` (a ``Boltorezka-Signature`` header) signs ``body`` with ``secret``
    within ``tolerance`` seconds of ``now``: what a receiver runs on every delivery."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in value.split(","):
        key, _, item = part.strip().partition("=")
        if key == "t" and item.isdigit():
            timestamp = int(item)
        elif key == "v1":
            candidates.append(item)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
