"""Typed keys for objects stored on the aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from boltorezka.runtime import Services

SERVICES = web.AppKey("services", Services)

if TYPE_CHECKING:
    from boltorezka.realtime.gateway import Gateway

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway")
