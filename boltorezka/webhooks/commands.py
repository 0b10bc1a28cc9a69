"""``boltorezka admin webhook-add/webhook-list/webhook-remove``, beside the other operator
commands (admin/commands.py parses and runs them through here).

``webhook-add`` prints one JSON line: the endpoint and its secret, which is shown this once.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import msgspec

from boltorezka.admin.service import COMMAND_LINE, AdminService
from boltorezka.context import RequestInfo
from boltorezka.webhooks.service import EVENT_TYPES, WebhookService

COMMANDS = ("webhook-add", "webhook-list", "webhook-remove")
_encoder = msgspec.json.Encoder()
_INFO = RequestInfo(user_agent="boltorezka admin")


def add_parsers(commands: Any) -> None:
    add = commands.add_parser(
        "webhook-add", help="register a webhook endpoint; prints its secret once (JSON)"
    )
    add.add_argument("url", help="the receiver's http or https URL")
    add.add_argument(
        "--events",
        required=True,
        help=f"comma-separated event types, of: {', '.join(EVENT_TYPES)}",
    )
    add.add_argument("--description", default="", help="a note for operators")
    commands.add_parser("webhook-list", help="list webhook endpoints, without secrets (JSON)")
    remove = commands.add_parser(
        "webhook-remove", help="delete a webhook endpoint and its undelivered events"
    )
    remove.add_argument("webhook_id", type=uuid.UUID)


async def dispatch(admin: AdminService, args: argparse.Namespace) -> str:
    webhooks = WebhookService(admin.pool, admin)
    command: str = args.admin_command
    if command == "webhook-add":
        types = [t.strip() for t in args.events.split(",") if t.strip()]
        created = await webhooks.create(COMMAND_LINE, args.url, types, args.description, _INFO)
        return _encoder.encode(created).decode()
    if command == "webhook-list":
        return _encoder.encode(await webhooks.list_endpoints(COMMAND_LINE)).decode()
    assert command == "webhook-remove", command
    await webhooks.delete(COMMAND_LINE, args.webhook_id, _INFO)
    return f"deleted webhook {args.webhook_id}"
