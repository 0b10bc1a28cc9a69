"""``boltorezka admin …``: the operators' API from the command line, against the database.

Whoever can run these holds the database's credentials, so they act without a server
role (that is how the first admin is made: ``boltorezka admin set-role NAME admin``) and
are audited with no actor, ``"via": "command line"``. Lists print one JSON page on stdout;
changes print one line. Accounts are named by username, rooms by id.

Disabling or revoking from here revokes the sessions in the database; the nodes close their
sockets at their next session check (``BOLTOREZKA_WS_SESSION_RECHECK_SECONDS``), where the
REST API closes them at once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from boltorezka.accounts.service import AccountService
from boltorezka.admin.service import COMMAND_LINE, AdminService, AuditFilter
from boltorezka.auth.service import AuthService
from boltorezka.auth.tokens import TokenCodec
from boltorezka.config import Settings
from boltorezka.context import RequestInfo
from boltorezka.errors import AppError
from boltorezka.observability.metrics import Metrics
from boltorezka.ratelimit import LocalLimiter, TokenBucketLimiter
from boltorezka.rooms.service import RoomService
from boltorezka.store.database import create_pool, resolve_database_url
from boltorezka.webhooks import commands as webhook_commands

# The command line refused the request (unknown user, taken name, bad value): like a
# configuration error, retrying the same command cannot help.
EXIT_REFUSED = 2
ROLES = ("admin", "moderator", "none")
_encoder = msgspec.json.Encoder()
_INFO = RequestInfo(user_agent="boltorezka admin")


def add_parsers(commands: Any) -> None:
    """The operator subcommands, beside ``bulk-users``."""
    set_role = commands.add_parser("set-role", help="give a user a server role, or take it away")
    set_role.add_argument("username")
    set_role.add_argument("role", choices=ROLES, help="admin, moderator or none")

    create = commands.add_parser("create-user", help="create an account")
    create.add_argument("username")
    create.add_argument(
        "--password-file",
        type=Path,
        required=True,
        help="file whose first line is the password ('-': read it from stdin)",
    )
    create.add_argument("--display-name")
    create.add_argument("--role", choices=ROLES, default="none", help="server role (default none)")

    for name, text in (
        ("disable", "disable an account: its device sessions are revoked"),
        ("enable", "enable a disabled account again"),
        ("revoke-sessions", "revoke every device session of an account"),
        (
            "reset-password",
            "print a one-time password reset token for an account "
            "(BOLTOREZKA_PASSWORD_RESET_TTL_SECONDS)",
        ),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("username")

    for name, text in (("users", "list users"), ("rooms", "list rooms of every kind")):
        listing = commands.add_parser(name, help=f"{text}, newest first (JSON)")
        listing.add_argument("--prefix", help="only names starting with this (any case)")
        _page_arguments(listing)

    delete = commands.add_parser("delete-room", help="delete a room (not a direct one)")
    delete.add_argument("room_id", type=uuid.UUID)

    log = commands.add_parser("audit", help="read the audit log, newest first (JSON)")
    log.add_argument("--actor", help="only actions by this username")
    log.add_argument("--action", help="only this action, for example admin.user.disable")
    log.add_argument("--room", type=uuid.UUID, help="only entries about this room id")
    log.add_argument("--since", type=_instant, help="from this time (ISO 8601), inclusive")
    log.add_argument("--until", type=_instant, help="up to this time (ISO 8601), exclusive")
    _page_arguments(log)
    webhook_commands.add_parsers(commands)


def _page_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=50, help="page size, 1 to 200 (default 50)")
    parser.add_argument("--cursor", help="nextCursor of the previous page")


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def run(settings: Settings, args: argparse.Namespace) -> int:
    if hasattr(args, "limit") and not 1 <= args.limit <= 200:
        print("boltorezka: --limit must be between 1 and 200", file=sys.stderr)
        return EXIT_REFUSED
    password = None
    if args.admin_command == "create-user":
        source = sys.stdin if str(args.password_file) == "-" else None
        try:
            text = source.read() if source else args.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"boltorezka: cannot read the password: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        password = text.splitlines()[0] if text.strip() else ""
        if not 8 <= len(password) <= 256:
            print("boltorezka: the password must be 8 to 256 characters", file=sys.stderr)
            return EXIT_REFUSED
    try:
        output = asyncio.run(
            _with_service(settings, lambda admin: _dispatch(admin, args, password))
        )
    except AppError as exc:
        print(f"boltorezka: {exc.code}: {exc.detail}", file=sys.stderr)
        return EXIT_REFUSED
    print(output)
    return 0


async def _with_service(settings: Settings, work: Callable[[AdminService], Awaitable[str]]) -> str:
    url, embedded = await resolve_database_url(settings)
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        auth = AuthService(
            pool,
            TokenCodec(settings.signing_keys, settings.access_token_ttl),
            refresh_ttl_seconds=settings.refresh_token_ttl,
            # Nobody signs in through this process.
            login_limiter=LocalLimiter(TokenBucketLimiter.per_minute(1)),
            register_limiter=LocalLimiter(TokenBucketLimiter.per_minute(1)),
            metrics=Metrics(),
        )
        accounts = AccountService(pool, auth, reset_ttl_seconds=settings.password_reset_ttl_seconds)
        return await work(AdminService(pool, auth, RoomService(pool), accounts=accounts))
    finally:
        await pool.close()
        del embedded


def _role(value: str) -> Any:
    return None if value == "none" else value


async def _dispatch(admin: AdminService, args: argparse.Namespace, password: str | None) -> str:
    command: str = args.admin_command
    if command == "set-role":
        user = await admin.set_role(
            COMMAND_LINE, await admin.user_id_of(args.username), _role(args.role), _INFO
        )
        return f"{user.username}: server role {user.server_role or 'none'}"
    if command == "create-user":
        assert password is not None
        user = await admin.create_user(
            COMMAND_LINE, args.username, password, args.display_name, _role(args.role), _INFO
        )
        return f"created {user.username} ({user.id}), server role {user.server_role or 'none'}"
    if command in ("disable", "enable"):
        user_id = await admin.user_id_of(args.username)
        user = await admin.set_disabled(COMMAND_LINE, user_id, command == "disable", _INFO)
        return f"{user.username}: {'disabled' if user.disabled_at else 'enabled'}"
    if command == "reset-password":
        issued = await admin.issue_password_reset(
            COMMAND_LINE, await admin.user_id_of(args.username), _INFO
        )
        # The token last, so a script takes the line's last field.
        expires = issued.expires_at.isoformat(timespec="seconds")
        return f"{args.username}: password reset token, valid until {expires}: {issued.token}"
    if command == "revoke-sessions":
        revoked = await admin.revoke_sessions(
            COMMAND_LINE, await admin.user_id_of(args.username), _INFO
        )
        return f"{args.username}: {revoked.revoked} session(s) revoked"
    if command == "users":
        page: Any = await admin.list_users(COMMAND_LINE, args.prefix, args.limit, args.cursor)
        return _encoder.encode(page).decode()
    if command == "rooms":
        page = await admin.list_rooms(COMMAND_LINE, args.prefix, args.limit, args.cursor)
        return _encoder.encode(page).decode()
    if command == "delete-room":
        await admin.delete_room(COMMAND_LINE, args.room_id, _INFO)
        return f"deleted room {args.room_id}"
    if command in webhook_commands.COMMANDS:
        return await webhook_commands.dispatch(admin, args)
    assert command == "audit", command
    actor = None if args.actor is None else await admin.user_id_of(args.actor)
    where = AuditFilter(
        actor_id=actor, action=args.action, room_id=args.room, since=args.since, until=args.until
    )
    page = await admin.audit_log(COMMAND_LINE, where, args.limit, args.cursor)
    return _encoder.encode(page).decode()
