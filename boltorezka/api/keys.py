"""Typed keys for objects stored on the aiohttp application."""

from aiohttp import web

from boltorezka.runtime import Services

SERVICES = web.AppKey("services", Services)
