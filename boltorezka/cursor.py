"""Opaque keyset cursors: a (timestamp, id) position encoded for clients to hand back."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from boltorezka.errors import InvalidInput


def encode(created_at: datetime, item_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{item_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, item = raw.split("|", 1)
        return datetime.fromisoformat(stamp), uuid.UUID(item)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("the cursor is not one this server issued", field="cursor") from None
