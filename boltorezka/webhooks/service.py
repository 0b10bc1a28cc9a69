"""Webhook endpoints: what operators register, for which events; server admins only.

An endpoint is a URL, the event types it is sent, and a secret the server generates, stores
(it signs every delivery with it) and shows once, in the answer that created it. Listing
an endpoint never shows its secret; to change one, delete the endpoint and add another.
Moderators get nothing here: endpoint URLs can carry the receiver's own credentials.

The events themselves are written by the database (migration ``0008_webhooks.sql``) in the
transaction of each change; webhooks/dispatcher.py sends them.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import asyncpg
import msgspec

from boltorezka.admin.service import ADMINS, AdminService, Caller
from boltorezka.context import Actor, RequestInfo
from boltorezka.errors import Conflict, InvalidInput, NotFound
from boltorezka.store import audit
from boltorezka.store import webhooks as store
from boltorezka.store.webhooks import WebhookEndpoint
from boltorezka.webhooks import signing

# Every type an endpoint may subscribe to, in the order the documentation lists them.
EventType = Literal[
    "message.posted",
    "message.edited",
    "message.deleted",
    "member.joined",
    "member.left",
    "member.banned",
    "call.started",
    "call.ended",
    "user.registered",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
URL_MAX = 2048
DESCRIPTION_MAX = 200
# Each event costs one outbox row per subscribed endpoint, in the change's transaction.
MAX_ENDPOINTS = 50


class WebhookNotFound(NotFound):
    code = "webhook_not_found"
    title = "No webhook endpoint has this id"


class TooManyWebhooks(Conflict):
    code = "too_many_webhooks"
    title = "The server has as many webhook endpoints as it allows"


class CreatedWebhook(msgspec.Struct, rename="camel", kw_only=True):
    """The new endpoint and its signing secret: shown here once, never again."""

    endpoint: WebhookEndpoint
    secret: str


class WebhookList(msgspec.Struct, rename="camel", kw_only=True):
    endpoints: list[WebhookEndpoint]


def check_url(url: str) -> str:
    if not url or len(url) > URL_MAX:
        raise InvalidInput(f"the url is 1 to {URL_MAX} characters", field="url")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) > 0x7E for c in url):
        raise InvalidInput("the url is printable ASCII without spaces", field="url")
    parts = urlsplit(url)
    try:
        _ = parts.port
    except ValueError:
        raise InvalidInput("the url has a port out of range", field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("the url must be an absolute http or https URL", field="url")
    if parts.username is not None or parts.password is not None:
        # Listings show URLs; receivers authenticate deliveries by their signature.
        raise InvalidInput("the url must not carry user info", field="url")
    return url


def check_event_types(types: list[str]) -> list[str]:
    if not types:
        raise InvalidInput("name at least one event type", field="eventTypes")
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            f"unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}",
            field="eventTypes",
        )
    return list(dict.fromkeys(types))


class WebhookService:
    def __init__(self, pool: asyncpg.Pool, admin: AdminService) -> None:
        self._pool = pool
        self._admin = admin

    async def create(
        self,
        caller: Caller,
        url: str,
        event_types: list[str],
        description: str,
        info: RequestInfo,
    ) -> CreatedWebhook:
        await self._admin.require(caller, ADMINS)
        url = check_url(url)
        types = check_event_types(event_types)
        if len(description) > DESCRIPTION_MAX or "\x00" in description:
            raise InvalidInput(
                f"a description is at most {DESCRIPTION_MAX} characters", field="description"
            )
        secret = signing.new_secret()
        actor_id = caller.user_id if isinstance(caller, Actor) else None
        async with self._pool.acquire() as conn, conn.transaction():
            # Serialises creations, so the cap holds under concurrent requests.
            await conn.execute("LOCK TABLE webhook_endpoints IN SHARE ROW EXCLUSIVE MODE")
            if await store.count_endpoints(conn) >= MAX_ENDPOINTS:
                raise TooManyWebhooks(f"at most {MAX_ENDPOINTS} endpoints")
            endpoint = await store.create_endpoint(conn, url, secret, types, description, actor_id)
            await self._audit(
                conn, caller, "admin.webhook.create", info, endpoint.id,
                {"url": url, "eventTypes": types},
            )  # fmt: skip
        return CreatedWebhook(endpoint=endpoint, secret=secret)

    async def list_endpoints(self, caller: Caller) -> WebhookList:
        await self._admin.require(caller, ADMINS)
        return WebhookList(endpoints=await store.list_endpoints(self._pool))

    async def delete(self, caller: Caller, endpoint_id: uuid.UUID, info: RequestInfo) -> None:
        """Delete the endpoint; what it had not been sent yet is dropped with it."""
        await self._admin.require(caller, ADMINS)
        async with self._pool.acquire() as conn, conn.transaction():
            found = await store.get_endpoint(conn, endpoint_id)
            if found is None or not await store.delete_endpoint(conn, endpoint_id):
                raise WebhookNotFound()
            await self._audit(
                conn, caller, "admin.webhook.delete", info, endpoint_id,
                {"url": found.url, "undelivered": found.pending},
            )  # fmt: skip

    @staticmethod
    async def _audit(
        conn: Any,
        caller: Caller,
        action: str,
        info: RequestInfo,
        endpoint_id: uuid.UUID,
        details: dict[str, Any],
    ) -> None:
        is_actor = isinstance(caller, Actor)
        await audit.record(
            conn,
            action,
            info if is_actor or info.user_agent else RequestInfo(user_agent="boltorezka admin"),
            actor_id=caller.user_id if isinstance(caller, Actor) else None,
            target_type="webhook",
            target_id=endpoint_id,
            details={**details, **({} if is_actor else {"via": "command line"})},
        )
