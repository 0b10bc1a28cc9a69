"""Checks on text that PostgreSQL would refuse further down."""

from __future__ import annotations

from typing import Any

NUL_ESCAPE = b"\\u0000"


def has_nul(value: Any) -> bool:
    """Whether any string in a decoded JSON value contains U+0000 (text columns cannot)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(item) for item in value)
    return False
