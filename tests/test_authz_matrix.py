"""Who may do what, over both transports: one table, every route and request type, by actor.

Every REST route of the OpenAPI document and every WebSocket request type that acts on a
room, a user or a call has one row here, with the expected outcome for each actor:

- ``owner``, ``admin``, ``member``: those roles in the room the row acts on (private unless
  the row says ``[public]``);
- ``other``: another device, of another plain member, acting on the *member's* resources:
  the member's message, device session or place in a call. Where a row has no such
  resource, it acts as a plain member would;
- ``non-member``: signed in, not in the room;
- ``anonymous``: no credentials at all;
- ``revoked``: the owner's own token, from a device session that was logged out;
- ``deleted``: a room admin whose account was then disabled (how accounts are deleted:
  a hard delete would take their messages with it), holding a token issued before;
- ``moderator``, ``server-admin``: server roles (admin/service.py), in no room. They may
  use the ``/v1/admin`` routes (a moderator only to read) and moderate any room (bans,
  mutes, reports: rooms/moderation.py), and nothing more of a room than a non-member may:
  every other row expects for them what it expects for ``non-member``;
- ``banned``: signed in, banned from every room the world makes (and so in none); unless
  a row says otherwise, as ``non-member``.

So ``revoked`` and ``deleted`` would be allowed nearly everything if their credentials
were not checked. An expectation is ``"<status>"`` or ``"<status> <code>"`` for REST and
``"ok"`` or ``"<nack code>"`` for the WebSocket; ``"auth:<code>"`` means the ``auth``
request is refused with that code and the socket closed with 4001, and the request sent
right behind it is never answered. Where a row can check what a request did (or did not
do), it does.

The world (accounts, rooms, a message, a live call) is built once for the module in a
schema of its own, like every test's: a fresh schema per case costs about 0.3 s, and there
are about 480 cases. A case that changes what it acts on (deleting, leaving, archiving, …)
gets a room, message, call or session of its own, so no case decides the outcome of
another and any subset runs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from boltorezka.app import build_app
from boltorezka.auth import passwords
from boltorezka.auth.tokens import hash_refresh_token, new_refresh_token
from boltorezka.config import Settings, SigningKey
from boltorezka.context import Actor, RequestInfo
from boltorezka.realtime import protocol
from boltorezka.runtime import Services
from boltorezka.store import migrate
from boltorezka.store import moderation as moderation_store
from boltorezka.store import rooms as room_store
from boltorezka.store.database import create_pool
from tests.conftest import MIGRATIONS, ROOT, TEST_SECRET
from tests.helpers import PASSWORD, Account, api_call, eventually

Client = TestClient[Any, Any]
PATIENCE = 10.0
SEARCH_WORD = "matrixneedle"

OWNER, ADMIN, MEMBER, OTHER = "owner", "admin", "member", "other"
OUTSIDER, ANONYMOUS, REVOKED, DELETED = "non-member", "anonymous", "revoked", "deleted"
MODERATOR, SERVER_ADMIN = "moderator", "server-admin"
BANNED = "banned"
ACTORS = (
    OWNER,
    ADMIN,
    MEMBER,
    OTHER,
    OUTSIDER,
    ANONYMOUS,
    REVOKED,
    DELETED,
    MODERATOR,
    SERVER_ADMIN,
    BANNED,
)
# Those in the shared room.
IN_ROOM = frozenset({OWNER, ADMIN, MEMBER, OTHER})
# Server roles, and what build_world gives them.
SERVER_ROLES = {MODERATOR: "moderator", SERVER_ADMIN: "admin"}
# Whose roles are set in every room the world makes, and as what.
ROLES = {ADMIN: "admin", MEMBER: "member", OTHER: "member", DELETED: "admin"}

_ids = itertools.count(1)


def _unique(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    client: Client
    services: Services
    pool: asyncpg.Pool
    accounts: dict[str, Account] = field(default_factory=dict)  # every actor but anonymous
    # Set by build_world once the accounts exist.
    room: str = field(init=False)  # private; roles as in ROLES, the owner's
    message: str = field(init=False)  # the member's, in ``room``; contains SEARCH_WORD
    call: str = field(init=False)  # live, peer-to-peer, in ``room``; ``holder`` is in it
    holder: Socket = field(init=False)  # the member's connection: in the call and the room
    holder_participant: str = field(init=False)

    def who(self, actor: str) -> Account | None:
        return self.accounts.get(actor)

    def user_id(self, actor: str) -> str:
        return self.accounts[actor].id

    async def session(self, actor: str) -> Account | None:
        """A device session of the actor's own, for a case that ends or rotates it."""
        if actor == ANONYMOUS:
            return None
        user = OWNER if actor == REVOKED else actor
        return await self.new_session(self.user_id(user), revoked=actor == REVOKED)

    async def new_session(self, user_id: str, *, revoked: bool = False) -> Account:
        refresh = new_refresh_token()
        async with self.pool.acquire() as conn, conn.transaction():
            session_id = await conn.fetchval(
                "INSERT INTO device_sessions (user_id, device_name, expires_at) "
                "VALUES ($1, 'matrix', now() + interval '1 day') RETURNING id",
                uuid.UUID(user_id),
            )
            await conn.execute(
                "INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
                hash_refresh_token(refresh),
                session_id,
            )
            if revoked:
                await conn.execute(
                    "UPDATE device_sessions SET revoked_at = now(), revoked_reason = 'logout' "
                    "WHERE id = $1",
                    session_id,
                )
        token, _ = self.services.auth.codec.issue(uuid.UUID(user_id), session_id)
        username = await self.pool.fetchval(
            "SELECT username FROM users WHERE id = $1", uuid.UUID(user_id)
        )
        return Account(user_id, username, token, refresh, str(session_id))

    async def new_room(self, kind: str = "private", *, archived: bool = False) -> str:
        async with self.pool.acquire() as conn, conn.transaction():
            room_owner = uuid.UUID(self.user_id(OWNER))
            room = await room_store.create(conn, kind, _unique("room"), "", room_owner)
            for actor, role in ROLES.items():
                await room_store.add_member(conn, room.id, uuid.UUID(self.user_id(actor)), role)
            await moderation_store.put_ban(
                conn, room.id, uuid.UUID(self.user_id(BANNED)), room_owner, "matrix", None
            )
            if archived:
                await room_store.set_archived(conn, room.id, True)
        return str(room.id)

    async def new_message(self, room: str | None = None) -> str:
        """A message of the member's, posted the way every send is (the batching writer)."""
        member = self.accounts[MEMBER]
        result = await self.services.messages.post(
            Actor(user_id=uuid.UUID(member.id), session_id=uuid.UUID(member.session_id)),
            uuid.UUID(room or self.room),
            _unique("seed"),
            f"a message with {SEARCH_WORD} in it",
            None,
        )
        return str(result.message.id)

    async def new_call(self) -> tuple[str, str, str]:
        """A fresh room with a live call the holder started: room, call and the holder's
        participant ids."""
        room = await self.new_room()
        result = await self.holder.request("call.start", {"roomId": room, "mode": "p2p"})
        assert result.ok, result
        return room, str(result.value["call"]["callId"]), str(result.value["participantId"])

    async def message_state(self, message_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow(
            "SELECT body, deleted_at FROM messages WHERE id = $1", uuid.UUID(message_id)
        )
        assert row is not None
        return row

    async def role_of(self, room: str, actor_or_user: str) -> str | None:
        user = self.accounts[actor_or_user].id if actor_or_user in ACTORS else actor_or_user
        role: str | None = await self.pool.fetchval(
            "SELECT role FROM room_members WHERE room_id = $1 AND user_id = $2",
            uuid.UUID(room),
            uuid.UUID(user),
        )
        return role

    async def status_with(self, token: Account, path: str = "/v1/me") -> int:
        status, _ = await api_call(self.client, "GET", path, token)
        return status


# ---------------------------------------------------------------- a raw WebSocket client


@dataclass
class Answer:
    """The ack or nack of one request; ``code`` is None for an ack."""

    code: str | None
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.code is None


class Socket:
    """A bare ``/v1/ws`` connection: no automatic auth, retries or reconnects, so a case
    sends exactly what it means to and sees every frame the server sends back."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, client: Client) -> Socket:
        socket = cls(await client.ws_connect("/v1/ws"))
        await socket.wait_for(lambda f: f["type"] == "server.capabilities")
        return socket

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self.frames.append(json.loads(message.data))
                    self._changed.set()
        finally:
            self._changed.set()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code if self._reader.done() else None

    async def send(self, msg_type: str, payload: dict[str, Any]) -> str:
        request_id = _unique("r")
        await self.ws.send_json(
            {"v": 1, "type": msg_type, "requestId": request_id, "payload": payload}
        )
        return request_id

    def answer_now(self, request_id: str) -> Answer | None:
        for frame in self.frames:
            if frame["type"] in ("ack", "nack") and frame.get("requestId") == request_id:
                if frame["type"] == "ack":
                    return Answer(None, frame["payload"]["result"])
                return Answer(frame["payload"]["code"], frame["payload"])
        return None

    async def answer(self, request_id: str) -> Answer | None:
        """The answer, or None if the socket closed without one."""
        async with asyncio.timeout(PATIENCE):
            while (found := self.answer_now(request_id)) is None:
                if self._reader.done():
                    return None
                self._changed.clear()
                await self._changed.wait()
        return found

    async def request(self, msg_type: str, payload: dict[str, Any]) -> Answer:
        found = await self.answer(await self.send(msg_type, payload))
        assert found is not None, f"{msg_type}: the socket closed ({self.ws.close_code})"
        return found

    async def wait_for(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async with asyncio.timeout(PATIENCE):
            while True:
                for frame in self.frames:
                    if match(frame):
                        return frame
                assert not self._reader.done(), "the socket closed"
                self._changed.clear()
                await self._changed.wait()

    async def wait_closed(self) -> int | None:
        async with asyncio.timeout(PATIENCE):
            await self._reader
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(Exception):
            await self._reader


# ---------------------------------------------------------------------------- the rows

NOAUTH = "401 unauthenticated"
SESSION_GONE = "401 session_revoked"  # revoked sessions and disabled accounts alike
HIDDEN = "404 room_not_found"
NOT_MEMBER = "403 not_a_member"
FORBID = "403 forbidden"
WS_AUTH_REFUSED = "auth:session_revoked"


def cols(
    owner: str,
    admin: str,
    member: str,
    other: str,
    outsider: str,
    anonymous: str = NOAUTH,
    revoked: str = SESSION_GONE,
    deleted: str = SESSION_GONE,
    *,
    moderator: str | None = None,
    server_admin: str | None = None,
    banned: str | None = None,
) -> dict[str, str]:
    """Server roles count for nothing in a room, nor does a ban to one not in it: unless
    told, as ``outsider``."""
    return dict(
        zip(
            ACTORS,
            (
                owner, admin, member, other, outsider, anonymous, revoked, deleted,
                outsider if moderator is None else moderator,
                outsider if server_admin is None else server_admin,
                outsider if banned is None else banned,
            ),
            strict=True,
        )
    )  # fmt: skip


def same(outcome: str) -> dict[str, str]:
    """One outcome for every actor: routes that need no identity, and ignore a bad one."""
    return dict.fromkeys(ACTORS, outcome)


def signed_in(outcome: str) -> dict[str, str]:
    """``outcome`` for every live account, the usual refusals for the rest."""
    return cols(outcome, outcome, outcome, outcome, outcome)


def ws_cols(owner: str, admin: str, member: str, other: str, outsider: str) -> dict[str, str]:
    return cols(owner, admin, member, other, outsider, "unauthenticated", *(WS_AUTH_REFUSED,) * 2)


@dataclass
class Prepared:
    """What one case sends, and anything its check needs to know."""

    path: str = ""
    body: Any = None
    who: Account | None = None
    msg_type: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    setup: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


Prepare = Callable[[World, str], Awaitable[Prepared]]
# After the request: what went wrong (None if nothing did), given whether it was allowed.
Check = Callable[[World, str, Prepared, bool, Any], Awaitable[str | None]]


@dataclass(frozen=True)
class Http:
    method: str
    path: str  # as in the OpenAPI document
    expect: dict[str, str]
    prepare: Prepare | None = None  # default: the shared room, message and member
    check: Check | None = None
    variant: str = ""

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}" + (f" [{self.variant}]" if self.variant else "")


@dataclass(frozen=True)
class Ws:
    msg_type: str
    expect: dict[str, str]
    prepare: Prepare
    check: Check | None = None
    variant: str = ""

    @property
    def name(self) -> str:
        return f"ws {self.msg_type}" + (f" [{self.variant}]" if self.variant else "")


def _fill(world: World, path: str, **ids: str) -> str:
    values = {
        "roomId": world.room,
        "userId": world.user_id(MEMBER),
        "messageId": world.message,
        "sessionId": world.accounts[MEMBER].session_id,
        **ids,
    }
    return path.format(**values)


def shared(path: str, body: Callable[[World, str], Any] | None = None) -> Prepare:
    """The request as the actor, on the shared room, message and member."""

    async def prepare(world: World, actor: str) -> Prepared:
        return Prepared(_fill(world, path), body(world, actor) if body else None, world.who(actor))

    return prepare


def in_fresh_room(
    path: str,
    body: Callable[[World, str], Any] | None = None,
    *,
    kind: str = "private",
    archived: bool = False,
) -> Prepare:
    """The request as the actor, on a room of the case's own."""

    async def prepare(world: World, actor: str) -> Prepared:
        room = await world.new_room(kind, archived=archived)
        return Prepared(
            _fill(world, path, roomId=room),
            body(world, actor) if body else None,
            world.who(actor),
            facts={"room": room},
        )

    return prepare


def with_own_session(path: str, body: Callable[[Account | None], Any] | None = None) -> Prepare:
    """The request with a device session of the actor's own, made for this case."""

    async def prepare(world: World, actor: str) -> Prepared:
        session = await world.session(actor)
        return Prepared(path, body(session) if body else None, session, facts={"mine": session})

    return prepare


# --- checks ----------------------------------------------------------------------------


async def check_logout(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
    mine: Account | None = p.facts["mine"]
    if allowed and mine is not None and await world.status_with(mine) != 401:
        return "the token still works after logout"
    return None


async def prepare_revoke(world: World, actor: str) -> Prepared:
    target = await world.new_session(world.user_id(MEMBER))
    return Prepared(
        f"/v1/auth/sessions/{target.session_id}", None, world.who(actor), facts={"target": target}
    )


async def check_revoke(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
    status = await world.status_with(p.facts["target"])
    if allowed != (status == 401):
        return f"the member's session answers {status} afterwards"
    return None


async def check_session_list(
    world: World, actor: str, p: Prepared, allowed: bool, data: Any
) -> str | None:
    if not allowed:
        return None
    listed = {s["id"] for s in data["sessions"]}
    if (world.accounts[MEMBER].session_id in listed) != (actor == MEMBER):
        return f"the member's session is {'missing' if actor == MEMBER else 'listed'}"
    return None


async def check_profile(
    world: World, actor: str, p: Prepared, allowed: bool, data: Any
) -> str | None:
    if allowed and any("password" in key.lower() for key in data):
        return f"a profile shows {sorted(data)}"
    return None


async def check_my_rooms(
    world: World, actor: str, p: Prepared, allowed: bool, data: Any
) -> str | None:
    if not allowed:
        return None
    listed = {r["room"]["id"] for r in data["rooms"]}
    if (world.room in listed) != (actor in IN_ROOM):
        return f"the private room is {'missing' if actor in IN_ROOM else 'listed'}"
    return None


async def check_public_list(
    world: World, actor: str, p: Prepared, allowed: bool, data: Any
) -> str | None:
    if allowed and world.room in {r["id"] for r in data["rooms"]}:
        return "a private room is in the public directory"
    return None


async def check_search(
    world: World, actor: str, p: Prepared, allowed: bool, data: Any
) -> str | None:
    if not allowed:
        return None
    found = {m["roomId"] for m in data["messages"]}
    if (world.room in found) != (actor in IN_ROOM):
        return f"search {'misses' if actor in IN_ROOM else 'leaks'} the private room: {found}"
    return None


async def check_topic(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
    topic = await world.pool.fetchval(
        "SELECT topic FROM rooms WHERE id = $1", uuid.UUID(world.room)
    )
    if allowed != (topic == p.body["topic"]):
        return f"the topic is {topic!r}"
    return None


async def check_deleted_room(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    gone = await world.pool.fetchval(
        "SELECT deleted_at IS NOT NULL FROM rooms WHERE id = $1", uuid.UUID(p.facts["room"])
    )
    return None if gone == allowed else f"deleted_at set: {gone}"


def check_archived(want_when_allowed: bool) -> Check:
    async def check(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
        archived = await world.pool.fetchval(
            "SELECT archived_at IS NOT NULL FROM rooms WHERE id = $1", uuid.UUID(p.facts["room"])
        )
        want = want_when_allowed if allowed else not want_when_allowed
        return None if archived == want else f"archived is {archived}"

    return check


async def check_joined_public(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    if actor == OUTSIDER and allowed and await world.role_of(p.facts["room"], OUTSIDER) != "member":
        return "joining made no member"
    return None


async def check_left(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
    if actor not in ROLES and actor != OWNER:
        return None  # never a member of the room
    role = await world.role_of(p.facts["room"], actor)
    if allowed == (role is not None):
        return f"role after leave: {role}"
    return None


async def prepare_add_member(world: World, actor: str) -> Prepared:
    room = await world.new_room()
    newcomer = await world.pool.fetchval(
        "INSERT INTO users (username, display_name, password_hash) VALUES ($1, $1, '!') "
        "RETURNING id",
        _unique("newcomer"),
    )
    return Prepared(
        f"/v1/rooms/{room}/members",
        {"userId": str(newcomer), "role": "member"},
        world.who(actor),
        facts={"room": room, "newcomer": str(newcomer)},
    )


async def check_added(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
    role = await world.role_of(p.facts["room"], p.facts["newcomer"])
    return None if allowed == (role == "member") else f"the newcomer's role is {role}"


def check_member_role(when_allowed: str | None, otherwise: str | None) -> Check:
    async def check(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
        role = await world.role_of(p.facts["room"], MEMBER)
        want = when_allowed if allowed else otherwise
        return None if role == want else f"the member's role is {role}, expected {want}"

    return check


async def check_posted(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
    client_msg_id = p.body["clientMsgId"] if p.body else p.payload["clientMsgId"]
    stored = await world.pool.fetchval(
        "SELECT count(*) FROM messages WHERE client_msg_id = $1", client_msg_id
    )
    return None if stored == (1 if allowed else 0) else f"{stored} messages stored"


async def check_edit(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
    body = p.body["body"] if p.body else p.payload["body"]
    state = await world.message_state(world.message)
    return None if allowed == (state["body"] == body) else f"the body is {state['body']!r}"


async def prepare_delete_message(world: World, actor: str) -> Prepared:
    message = await world.new_message()
    return Prepared(
        f"/v1/rooms/{world.room}/messages/{message}",
        None,
        world.who(actor),
        msg_type="chat.delete",
        payload={"roomId": world.room, "messageId": message},
        facts={"message": message},
    )


async def check_message_deleted(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    state = await world.message_state(p.facts["message"])
    deleted = state["deleted_at"] is not None
    return None if deleted == allowed else f"deleted: {deleted}"


def _login(world: World, actor: str) -> dict[str, str]:
    if actor == ANONYMOUS:
        return {"username": "nobody-here", "password": PASSWORD}
    account = world.accounts[OWNER if actor == REVOKED else actor]
    return {"username": account.username, "password": PASSWORD}


async def prepare_refresh(world: World, actor: str) -> Prepared:
    session = await world.session(actor)
    token = session.refresh_token if session else new_refresh_token()
    return Prepared("/v1/auth/refresh", {"refreshToken": token}, session)


async def prepare_deleted_profile(world: World, actor: str) -> Prepared:
    return Prepared(f"/v1/users/{world.user_id(DELETED)}", None, world.who(actor))


def prepare_lookup(whom: str) -> Prepare:
    async def prepare(world: World, actor: str) -> Prepared:
        name = world.accounts[whom].username.upper()  # the lookup ignores case
        return Prepared(f"/v1/users?username={name}", None, world.who(actor))

    return prepare


async def prepare_direct_with_deleted(world: World, actor: str) -> Prepared:
    return Prepared("/v1/rooms/direct", {"userId": world.user_id(DELETED)}, world.who(actor))


def _topic(world: World, actor: str) -> dict[str, str]:
    return {"topic": _unique(f"topic by {actor} ")}


def _post(world: World, actor: str) -> dict[str, str]:
    return {"clientMsgId": _unique("rest"), "body": f"hello from {actor}"}


def _edit(world: World, actor: str) -> dict[str, str]:
    return {"body": _unique(f"edited by {actor} ")}


NO_ROLE = "403 server_role_required"


def server_cols(moderator: str, server_admin: str) -> dict[str, str]:
    """An operators' route: refused to every room role, whatever it is."""
    return cols(*(NO_ROLE,) * 5, moderator=moderator, server_admin=server_admin)


async def prepare_member_search(world: World, actor: str) -> Prepared:
    """The operators' user list, narrowed to the member's name: the world holds more
    accounts than a page."""
    name = await world.pool.fetchval(
        "SELECT username FROM users WHERE id = $1", uuid.UUID(world.user_id(MEMBER))
    )
    return Prepared(f"/v1/admin/users?prefix={name}", None, world.who(actor))


async def prepare_room_search(world: World, actor: str) -> Prepared:
    """The operators' room list, narrowed to the shared room's name."""
    name = await world.pool.fetchval("SELECT name FROM rooms WHERE id = $1", uuid.UUID(world.room))
    return Prepared(f"/v1/admin/rooms?prefix={name}", None, world.who(actor))


async def check_user_list(
    world: World, actor: str, p: Prepared, allowed: bool, data: Any
) -> str | None:
    if allowed and world.user_id(MEMBER) not in {u["id"] for u in data["users"]}:
        return "the member is not listed"
    return None


async def prepare_create_user(world: World, actor: str) -> Prepared:
    name = _unique("made-")
    body = {"username": name, "password": PASSWORD}
    return Prepared("/v1/admin/users", body, world.who(actor), facts={"name": name})


async def check_user_created(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    found = await world.pool.fetchval(
        "SELECT count(*) FROM users WHERE username = $1", p.facts["name"]
    )
    return None if found == (1 if allowed else 0) else f"{found} users made"


def for_new_user(path: str, body: Any = None, *, disabled: bool = False) -> Prepare:
    """The request on an account of the case's own, with a live device session."""

    async def prepare(world: World, actor: str) -> Prepared:
        user_id = str(
            await world.pool.fetchval(
                "INSERT INTO users (username, display_name, password_hash) VALUES ($1, $1, '!') "
                "RETURNING id",
                _unique("target"),
            )
        )
        session = await world.new_session(user_id)
        if disabled:
            await world.pool.execute(
                "UPDATE users SET disabled_at = now() WHERE id = $1", uuid.UUID(user_id)
            )
        return Prepared(
            path.format(userId=user_id),
            body,
            world.who(actor),
            facts={"user": user_id, "session": session},
        )

    return prepare


def check_new_user(column: str, when_allowed: Any, otherwise: Any) -> Check:
    async def check(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
        value = await world.pool.fetchval(
            f"SELECT {column} FROM users WHERE id = $1", uuid.UUID(p.facts["user"])
        )
        want = when_allowed if allowed else otherwise
        return None if value == want else f"{column} is {value!r}, expected {want!r}"

    return check


def check_disabled(when_allowed: bool) -> Check:
    async def check(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
        disabled = await world.pool.fetchval(
            "SELECT disabled_at IS NOT NULL FROM users WHERE id = $1", uuid.UUID(p.facts["user"])
        )
        want = when_allowed if allowed else not when_allowed
        if disabled != want:
            return f"disabled is {disabled}"
        if when_allowed and allowed and await world.status_with(p.facts["session"]) != 401:
            return "the disabled account's session still works"
        return None

    return check


async def check_new_user_signed_out(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    status = await world.status_with(p.facts["session"])
    return None if allowed == (status == 401) else f"the session answers {status} afterwards"


async def check_admin_room_list(
    world: World, actor: str, p: Prepared, allowed: bool, data: Any
) -> str | None:
    if allowed and world.room not in {r["room"]["id"] for r in data["rooms"]}:
        return "the private room is not listed for an operator"
    return None


async def check_node_list(
    world: World, actor: str, p: Prepared, allowed: bool, data: Any
) -> str | None:
    here = world.services.node_control.node_id
    if allowed and {"nodeId": here, "current": True} not in data["nodes"]:
        return f"this node is not listed: {data}"
    return None


def prepare_drain(*, known: bool) -> Prepare:
    async def prepare(world: World, actor: str) -> Prepared:
        node = world.services.node_control.node_id if known else _unique("no-such-node-")
        return Prepared(f"/v1/admin/nodes/{node}/drain", None, world.who(actor))

    return prepare


async def check_drain_sent(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    # Nothing waits on this module's stop event, so the audit row tells who drained it.
    who = world.who(actor)
    rows = await world.pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'admin.node.drain' AND actor_id = $1",
        uuid.UUID(who.id) if who is not None else None,
    )
    if allowed != (rows == 1):
        return f"{rows} drain audit rows by {actor}"
    if allowed and not world.services.node_control.stop.is_set():
        return "the drain did not reach the node"
    return None


# Webhook endpoints point at a closed local port: cases must not reach out to anything.
HOOK_URL = "http://127.0.0.1:9/"


async def check_webhook_list(
    world: World, actor: str, p: Prepared, allowed: bool, data: Any
) -> str | None:
    if allowed and any("secret" in e for e in data["endpoints"]):
        return "a listed endpoint shows its secret"
    return None


async def prepare_create_webhook(world: World, actor: str) -> Prepared:
    url = HOOK_URL + _unique("made-")
    body = {"url": url, "eventTypes": ["call.ended"]}
    return Prepared("/v1/admin/webhooks", body, world.who(actor), facts={"url": url})


async def check_webhook_created(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    found = await world.pool.fetchval(
        "SELECT count(*) FROM webhook_endpoints WHERE url = $1", p.facts["url"]
    )
    return None if found == (1 if allowed else 0) else f"{found} endpoints made"


async def prepare_delete_webhook(world: World, actor: str) -> Prepared:
    hook = await world.pool.fetchval(
        "INSERT INTO webhook_endpoints (url, secret, event_types) "
        "VALUES ($1, 'whsec_matrix', ARRAY['call.ended']) RETURNING id",
        HOOK_URL + _unique("gone-"),
    )
    return Prepared(f"/v1/admin/webhooks/{hook}", None, world.who(actor), facts={"hook": hook})


async def check_webhook_deleted(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    left = await world.pool.fetchval(
        "SELECT count(*) FROM webhook_endpoints WHERE id = $1", p.facts["hook"]
    )
    return None if left == (0 if allowed else 1) else f"{left} endpoints left"


# Moderating a room: its owner and admins, and server moderators and admins in any room.
def moderate_cols(allowed: str) -> dict[str, str]:
    return cols(allowed, allowed, FORBID, FORBID, HIDDEN, moderator=allowed, server_admin=allowed)


async def _sanction(world: World, table: str, room: str, actor: str) -> bool:
    found = await world.pool.fetchval(
        f"SELECT count(*) FROM {table} WHERE room_id = $1 AND user_id = $2 "
        "AND (expires_at IS NULL OR expires_at > now())",
        uuid.UUID(room),
        uuid.UUID(world.user_id(actor)),
    )
    return bool(found)


def check_sanction(table: str, whom: str, *, when_allowed: bool) -> Check:
    async def check(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
        held = await _sanction(world, table, p.facts["room"], whom)
        want = when_allowed if allowed else not when_allowed
        return None if held == want else f"{table} row for the {whom}: {held}"

    return check


async def check_banned_out(
    world: World, actor: str, p: Prepared, allowed: bool, data: Any
) -> str | None:
    problem = await check_sanction("room_bans", MEMBER, when_allowed=True)(
        world, actor, p, allowed, data
    )
    return problem or await check_member_role(None, "member")(world, actor, p, allowed, data)


async def prepare_unban(world: World, actor: str) -> Prepared:
    room = await world.new_room()  # the banned actor is banned from it
    path = f"/v1/rooms/{room}/bans/{world.user_id(BANNED)}"
    return Prepared(path, None, world.who(actor), facts={"room": room})


async def prepare_muted_member(world: World, actor: str) -> Prepared:
    room = await world.new_room()
    await moderation_store.put_mute(
        world.pool,
        uuid.UUID(room),
        uuid.UUID(world.user_id(MEMBER)),
        uuid.UUID(world.user_id(OWNER)),
        "matrix",
        None,
    )
    return Prepared(
        f"/v1/rooms/{room}/mutes/{world.user_id(MEMBER)}",
        None,
        world.who(actor),
        facts={"room": room},
    )


async def check_ban_list(
    world: World, actor: str, p: Prepared, allowed: bool, data: Any
) -> str | None:
    if allowed and world.user_id(BANNED) not in {b["userId"] for b in data["bans"]}:
        return "the banned user is not listed"
    return None


async def prepare_report(world: World, actor: str) -> Prepared:
    message = await world.new_message()
    body = {"messageId": message, "reason": f"reported by {actor}"}
    return Prepared(
        f"/v1/rooms/{world.room}/reports", body, world.who(actor), facts={"message": message}
    )


async def check_reported(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    found = await world.pool.fetchval(
        "SELECT count(*) FROM message_reports WHERE message_id = $1",
        uuid.UUID(p.facts["message"]),
    )
    return None if found == (1 if allowed else 0) else f"{found} reports stored"


async def prepare_resolve(world: World, actor: str) -> Prepared:
    message = await world.new_message()
    report = await moderation_store.add_report(
        world.pool,
        uuid.UUID(world.room),
        uuid.UUID(message),
        uuid.UUID(world.user_id(OTHER)),
        "matrix",
    )
    assert report is not None
    return Prepared(
        f"/v1/rooms/{world.room}/reports/{report.id}/resolve",
        {"resolution": "dismissed"},
        world.who(actor),
        facts={"report": str(report.id)},
    )


async def check_resolved(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    resolved = await world.pool.fetchval(
        "SELECT resolved_at IS NOT NULL FROM message_reports WHERE id = $1",
        uuid.UUID(p.facts["report"]),
    )
    return None if resolved == allowed else f"resolved: {resolved}"


# --- account self-service: the caller's own password and account -----------------------


def as_stand_in(path: str, body: Callable[[World, str], Any] | None = None) -> Prepare:
    """The request as a throwaway account standing in for the actor: the same server role,
    the same role in a room of the case's own (the owner's stand-in owns it), revoked or
    disabled alike. Changing the actor's own password or deleting their account would
    spoil the shared world for every later case."""

    async def prepare(world: World, actor: str) -> Prepared:
        if actor == ANONYMOUS:
            return Prepared(path, body(world, actor) if body else None, None)
        password_hash = await world.pool.fetchval(
            "SELECT password_hash FROM users WHERE id = $1", uuid.UUID(world.user_id(OWNER))
        )
        user_id = await world.pool.fetchval(
            "INSERT INTO users (username, display_name, password_hash, server_role) "
            "VALUES ($1, $1, $2, $3) RETURNING id",
            _unique("standin-"),
            password_hash,
            SERVER_ROLES.get(actor),
        )
        room = await world.new_room()
        if actor in (OWNER, REVOKED):
            await world.pool.execute(
                "UPDATE room_members SET role = 'admin' WHERE room_id = $1 AND role = 'owner'",
                uuid.UUID(room),
            )
            await room_store.add_member(world.pool, uuid.UUID(room), user_id, "owner")
        elif actor in ROLES:
            await room_store.add_member(world.pool, uuid.UUID(room), user_id, ROLES[actor])
        session = await world.new_session(str(user_id), revoked=actor == REVOKED)
        spare = await world.new_session(str(user_id))  # another device of theirs
        if actor == DELETED:
            await world.pool.execute("UPDATE users SET disabled_at = now() WHERE id = $1", user_id)
        return Prepared(
            path,
            body(world, actor) if body else None,
            session,
            facts={"user": str(user_id), "session": session, "spare": spare, "hash": password_hash},
        )

    return prepare


def _password_change(world: World, actor: str) -> dict[str, str]:
    return {"currentPassword": PASSWORD, "newPassword": _unique("a new passphrase ")}


async def check_password_changed(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    if p.who is None:
        return None
    stored = await world.pool.fetchval(
        "SELECT password_hash FROM users WHERE id = $1", uuid.UUID(p.facts["user"])
    )
    if (stored != p.facts["hash"]) != allowed:
        return f"the password {'stayed' if allowed else 'changed'}"
    spare = await world.status_with(p.facts["spare"])
    if allowed and (spare != 401 or await world.status_with(p.who) != 200):
        return f"afterwards the other device answers {spare}, and it should be signed out"
    return None


async def check_account_deleted(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    if p.who is None:
        return None
    deleted = await world.pool.fetchval(
        "SELECT deleted_at IS NOT NULL FROM users WHERE id = $1", uuid.UUID(p.facts["user"])
    )
    if deleted != allowed:
        return f"deleted: {deleted}"
    if allowed and await world.status_with(p.facts["spare"]) != 401:
        return "a device session of the deleted account still works"
    return None


async def prepare_password_reset(world: World, actor: str) -> Prepared:
    """A token an operator issued for an account of the case's own, presented with the
    actor's credentials sent along (the route needs none and ignores them)."""
    target = await for_new_user("/v1/auth/password-reset")(world, actor)
    issued = await world.services.accounts.issue_reset(
        uuid.UUID(target.facts["user"]), RequestInfo(), issued_by=None
    )
    target.body = {"token": issued.token, "newPassword": _unique("a reset passphrase ")}
    return target


def check_reset_tokens(when_allowed: int) -> Check:
    async def check(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
        count = await world.pool.fetchval(
            "SELECT count(*) FROM password_reset_tokens WHERE user_id = $1 AND used_at IS NULL",
            uuid.UUID(p.facts["user"]),
        )
        want = when_allowed if allowed else 0
        return None if count == want else f"{count} unused reset tokens, expected {want}"

    return check


HTTP_ROWS: tuple[Http, ...] = (
    # Public: no identity needed; a stale or revoked token sent along changes nothing.
    Http("GET", "/healthz", same("200"), shared("/healthz")),
    Http("GET", "/readyz", same("200"), shared("/readyz")),
    Http("GET", "/metrics", same("200"), shared("/metrics")),
    Http("GET", "/v1/openapi.json", same("200"), shared("/v1/openapi.json")),
    Http("GET", "/v1/ws", same("426 upgrade_required"), shared("/v1/ws")),
    Http(
        "POST", "/v1/auth/register", same("201"),
        shared("/v1/auth/register", lambda w, a: {"username": _unique("r"), "password": PASSWORD}),
    ),
    # The actor's own username and password: a logged-out device does not stop a new login.
    Http(
        "POST", "/v1/auth/login",
        cols("200", "200", "200", "200", "200", "401 invalid_credentials", "200",
             "403 account_disabled"),
        shared("/v1/auth/login", _login),
    ),
    Http(
        "POST", "/v1/auth/refresh",
        cols("200", "200", "200", "200", "200", *("401 invalid_refresh_token",) * 2,
             "403 account_disabled"),
        prepare_refresh,
    ),
    # The caller's own account and sessions.
    Http("POST", "/v1/auth/logout", signed_in("204"), with_own_session("/v1/auth/logout"),
         check_logout),
    Http("GET", "/v1/auth/sessions", signed_in("200"), shared("/v1/auth/sessions"),
         check_session_list),
    Http(
        "DELETE", "/v1/auth/sessions/{sessionId}",
        cols(*("404 session_not_found",) * 2, "204", *("404 session_not_found",) * 2),
        prepare_revoke, check_revoke,
    ),
    # The reset token is the credential; a bearer token sent along changes nothing.
    Http("POST", "/v1/auth/password-reset", same("204"), prepare_password_reset,
         check_new_user_signed_out),
    Http("GET", "/v1/me", signed_in("200"), shared("/v1/me"), check_profile),
    Http("PATCH", "/v1/me", signed_in("200"), shared("/v1/me", lambda w, a: {"bio": a})),
    Http("POST", "/v1/me/password", signed_in("200"),
         as_stand_in("/v1/me/password", _password_change), check_password_changed),
    # A room owner hands each room over first; server roles are no exception.
    Http("DELETE", "/v1/me", cols("409 owner_must_transfer", "204", "204", "204", "204"),
         as_stand_in("/v1/me", lambda w, a: {"password": PASSWORD}), check_account_deleted),
    Http("GET", "/v1/users/{userId}", signed_in("200"), shared("/v1/users/{userId}"),
         check_profile),
    Http("GET", "/v1/users/{userId}", signed_in("404 user_not_found"), prepare_deleted_profile,
         variant="deleted user"),
    Http("GET", "/v1/users", signed_in("200"), prepare_lookup(OWNER), check_profile),
    Http("GET", "/v1/users", signed_in("404 user_not_found"), prepare_lookup(DELETED),
         variant="deleted user"),
    Http("GET", "/v1/turn/credentials", signed_in("200"), shared("/v1/turn/credentials")),
    # Rooms: creating, listing, direct rooms.
    Http("GET", "/v1/rooms", signed_in("200"), shared("/v1/rooms"), check_my_rooms),
    Http("POST", "/v1/rooms", signed_in("201"),
         shared("/v1/rooms", lambda w, a: {"name": "fresh", "kind": "private"})),
    Http("GET", "/v1/rooms/public", signed_in("200"), shared("/v1/rooms/public"),
         check_public_list),
    Http(
        "POST", "/v1/rooms/direct", cols("201", "201", "422 validation_failed", "201", "201"),
        shared("/v1/rooms/direct", lambda w, a: {"userId": w.user_id(MEMBER)}),
    ),
    Http("POST", "/v1/rooms/direct", signed_in("404 user_not_found"),
         prepare_direct_with_deleted, variant="with a deleted user"),
    # One room.
    Http("GET", "/v1/rooms/{roomId}", cols("200", "200", "200", "200", HIDDEN),
         shared("/v1/rooms/{roomId}")),
    Http("GET", "/v1/rooms/{roomId}", cols("200", "200", "200", "200", "200"),
         in_fresh_room("/v1/rooms/{roomId}", kind="public"), variant="public"),
    Http("PATCH", "/v1/rooms/{roomId}", cols("200", "200", FORBID, FORBID, HIDDEN),
         shared("/v1/rooms/{roomId}", _topic), check_topic),
    Http("DELETE", "/v1/rooms/{roomId}", cols("204", FORBID, FORBID, FORBID, HIDDEN),
         in_fresh_room("/v1/rooms/{roomId}"), check_deleted_room),
    Http("POST", "/v1/rooms/{roomId}/archive", cols("200", "200", FORBID, FORBID, HIDDEN),
         in_fresh_room("/v1/rooms/{roomId}/archive"), check_archived(True)),
    Http("POST", "/v1/rooms/{roomId}/unarchive", cols("200", "200", FORBID, FORBID, HIDDEN),
         in_fresh_room("/v1/rooms/{roomId}/unarchive", archived=True), check_archived(False)),
    Http("POST", "/v1/rooms/{roomId}/join", cols("200", "200", "200", "200", HIDDEN),
         shared("/v1/rooms/{roomId}/join")),
    Http("POST", "/v1/rooms/{roomId}/join",
         cols("200", "200", "200", "200", "200", banned="403 banned"),
         in_fresh_room("/v1/rooms/{roomId}/join", kind="public"), check_joined_public,
         variant="public"),
    Http(
        "POST", "/v1/rooms/{roomId}/leave",
        cols("409 owner_must_transfer", "204", "204", "204", HIDDEN),
        in_fresh_room("/v1/rooms/{roomId}/leave"), check_left,
    ),
    Http("POST", "/v1/rooms/{roomId}/transfer", cols("200", FORBID, FORBID, FORBID, HIDDEN),
         in_fresh_room("/v1/rooms/{roomId}/transfer", lambda w, a: {"userId": w.user_id(MEMBER)}),
         check_member_role("owner", "member")),
    # Membership.
    Http("GET", "/v1/rooms/{roomId}/members", cols("200", "200", "200", "200", HIDDEN),
         shared("/v1/rooms/{roomId}/members")),
    Http("POST", "/v1/rooms/{roomId}/members", cols("201", "201", FORBID, FORBID, HIDDEN),
         prepare_add_member, check_added),
    # The member removing themselves is leaving; another plain member may not remove them.
    Http("DELETE", "/v1/rooms/{roomId}/members/{userId}",
         cols("204", "204", "204", FORBID, HIDDEN),
         in_fresh_room("/v1/rooms/{roomId}/members/{userId}"), check_member_role(None, "member")),
    Http("PATCH", "/v1/rooms/{roomId}/members/{userId}",
         cols("200", FORBID, FORBID, FORBID, HIDDEN),
         in_fresh_room("/v1/rooms/{roomId}/members/{userId}", lambda w, a: {"role": "admin"}),
         check_member_role("admin", "member")),
    # Messages.
    Http("GET", "/v1/rooms/{roomId}/messages", cols("200", "200", "200", "200", HIDDEN),
         shared("/v1/rooms/{roomId}/messages")),
    Http("GET", "/v1/rooms/{roomId}/messages", cols("200", "200", "200", "200", NOT_MEMBER),
         in_fresh_room("/v1/rooms/{roomId}/messages", kind="public"), variant="public"),
    Http("POST", "/v1/rooms/{roomId}/messages", cols("201", "201", "201", "201", HIDDEN),
         shared("/v1/rooms/{roomId}/messages", _post), check_posted),
    Http("POST", "/v1/rooms/{roomId}/messages", cols("201", "201", "201", "201", NOT_MEMBER),
         in_fresh_room("/v1/rooms/{roomId}/messages", _post, kind="public"), check_posted,
         variant="public"),
    # Only the sender edits; the sender or a room admin deletes.
    Http("PATCH", "/v1/rooms/{roomId}/messages/{messageId}",
         cols(FORBID, FORBID, "200", FORBID, HIDDEN),
         shared("/v1/rooms/{roomId}/messages/{messageId}", _edit), check_edit),
    Http("DELETE", "/v1/rooms/{roomId}/messages/{messageId}",
         cols("200", "200", "200", FORBID, HIDDEN), prepare_delete_message, check_message_deleted),
    Http("PUT", "/v1/rooms/{roomId}/read", cols("200", "200", "200", "200", HIDDEN),
         shared("/v1/rooms/{roomId}/read", lambda w, a: {"seq": 1})),
    Http("GET", "/v1/messages/search", cols("200", "200", "200", "200", HIDDEN),
         shared(f"/v1/messages/search?q={SEARCH_WORD}&roomId={{roomId}}"), check_search),
    Http("GET", "/v1/messages/search", signed_in("200"),
         shared(f"/v1/messages/search?q={SEARCH_WORD}"), check_search, variant="every room"),
    # Moderation: a room's owner and admins, server moderators and admins in any room.
    Http("GET", "/v1/rooms/{roomId}/bans", moderate_cols("200"),
         shared("/v1/rooms/{roomId}/bans"), check_ban_list),
    Http("PUT", "/v1/rooms/{roomId}/bans/{userId}", moderate_cols("200"),
         in_fresh_room("/v1/rooms/{roomId}/bans/{userId}", lambda w, a: {"reason": a}),
         check_banned_out),
    Http("DELETE", "/v1/rooms/{roomId}/bans/{userId}", moderate_cols("204"),
         prepare_unban, check_sanction("room_bans", BANNED, when_allowed=False)),
    Http("GET", "/v1/rooms/{roomId}/mutes", moderate_cols("200"),
         shared("/v1/rooms/{roomId}/mutes")),
    Http("PUT", "/v1/rooms/{roomId}/mutes/{userId}", moderate_cols("200"),
         in_fresh_room("/v1/rooms/{roomId}/mutes/{userId}", lambda w, a: {"reason": a}),
         check_sanction("room_mutes", MEMBER, when_allowed=True)),
    Http("DELETE", "/v1/rooms/{roomId}/mutes/{userId}", moderate_cols("204"),
         prepare_muted_member, check_sanction("room_mutes", MEMBER, when_allowed=False)),
    # Members report others' messages (the member's own is refused); moderators resolve.
    Http("POST", "/v1/rooms/{roomId}/reports",
         cols("201", "201", "422 validation_failed", "201", HIDDEN),
         prepare_report, check_reported),
    Http("GET", "/v1/rooms/{roomId}/reports", moderate_cols("200"),
         shared("/v1/rooms/{roomId}/reports")),
    Http("POST", "/v1/rooms/{roomId}/reports/{reportId}/resolve", moderate_cols("200"),
         prepare_resolve, check_resolved),
    # Operators: moderators read, server admins do everything; room roles count for nothing.
    Http("GET", "/v1/admin/users", server_cols("200", "200"), prepare_member_search,
         check_user_list),
    Http("POST", "/v1/admin/users", server_cols(NO_ROLE, "201"), prepare_create_user,
         check_user_created),
    Http("GET", "/v1/admin/users/{userId}", server_cols("200", "200"),
         shared("/v1/admin/users/{userId}")),
    Http("PUT", "/v1/admin/users/{userId}/role", server_cols(NO_ROLE, "200"),
         for_new_user("/v1/admin/users/{userId}/role", {"role": "moderator"}),
         check_new_user("server_role", "moderator", None)),
    Http("POST", "/v1/admin/users/{userId}/disable", server_cols(NO_ROLE, "200"),
         for_new_user("/v1/admin/users/{userId}/disable"), check_disabled(True)),
    Http("POST", "/v1/admin/users/{userId}/enable", server_cols(NO_ROLE, "200"),
         for_new_user("/v1/admin/users/{userId}/enable", disabled=True), check_disabled(False)),
    Http("DELETE", "/v1/admin/users/{userId}/sessions", server_cols(NO_ROLE, "200"),
         for_new_user("/v1/admin/users/{userId}/sessions"), check_new_user_signed_out),
    Http("POST", "/v1/admin/users/{userId}/password-reset", server_cols(NO_ROLE, "201"),
         for_new_user("/v1/admin/users/{userId}/password-reset"), check_reset_tokens(1)),
    Http("GET", "/v1/admin/rooms", server_cols("200", "200"), prepare_room_search,
         check_admin_room_list),
    Http("DELETE", "/v1/admin/rooms/{roomId}", server_cols(NO_ROLE, "204"),
         in_fresh_room("/v1/admin/rooms/{roomId}"), check_deleted_room),
    Http("GET", "/v1/admin/audit", server_cols("200", "200"),
         shared("/v1/admin/audit?action=room.delete")),
    Http("GET", "/v1/admin/nodes", server_cols(NO_ROLE, "200"), shared("/v1/admin/nodes"),
         check_node_list),
    Http("POST", "/v1/admin/nodes/{nodeId}/drain", server_cols(NO_ROLE, "202"),
         prepare_drain(known=True), check_drain_sent),
    Http("POST", "/v1/admin/nodes/{nodeId}/drain", server_cols(NO_ROLE, "404 node_not_found"),
         prepare_drain(known=False), variant="unknown node"),
    # Webhooks: server admins only (endpoint URLs may carry the receiver's credentials).
    Http("GET", "/v1/admin/webhooks", server_cols(NO_ROLE, "200"), shared("/v1/admin/webhooks"),
         check_webhook_list),
    Http("POST", "/v1/admin/webhooks", server_cols(NO_ROLE, "201"), prepare_create_webhook,
         check_webhook_created),
    Http("DELETE", "/v1/admin/webhooks/{webhookId}", server_cols(NO_ROLE, "204"),
         prepare_delete_webhook, check_webhook_deleted),
)  # fmt: skip


# --- WebSocket rows --------------------------------------------------------------------


def ws(
    msg_type: str,
    payload: Callable[[World, str, dict[str, Any]], dict[str, Any]],
    *,
    setup: Callable[[World, str, dict[str, Any]], list[tuple[str, dict[str, Any]]]] | None = None,
    facts: Callable[[World], Awaitable[dict[str, Any]]] | None = None,
) -> Prepare:
    """A request of ``msg_type``, after ``setup`` requests on the same connection (whose
    answers are not what the row is about), with ``facts`` made for the case first."""

    async def prepare(world: World, actor: str) -> Prepared:
        made = await facts(world) if facts else {}
        return Prepared(
            who=world.who(actor),
            msg_type=msg_type,
            payload=payload(world, actor, made),
            setup=setup(world, actor, made) if setup else [],
            facts=made,
        )

    return prepare


def _join_room(world: World, actor: str, facts: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("room.join", {"roomId": world.room})]


def _join_call_unless_other(
    world: World, actor: str, facts: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Everyone takes part in the call first, except ``other``, who acts on the member's
    call from a device that is not in it."""
    if actor == OTHER:
        return []
    return [("call.join", {"callId": facts.get("call", world.call)})]


def _join_call_if_member(
    world: World, actor: str, facts: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """The member joins before ending it; admins may end a call they are not in."""
    return [("call.join", {"callId": facts["call"]})] if actor == MEMBER else []


def _rtc(kind: str) -> Callable[[World, str, dict[str, Any]], dict[str, Any]]:
    def payload(world: World, actor: str, facts: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = (
            {"candidate": {"candidate": f"candidate:{facts['marker']}", "sdpMid": "0"}}
            if kind == "rtc.ice"
            else {"sdp": f"v=0 {facts['marker']}"}
        )
        return {"callId": world.call, "to": world.holder_participant, **body}

    return payload


async def _marker(world: World) -> dict[str, Any]:
    return {"marker": _unique("sig")}


async def _fresh_room(world: World) -> dict[str, Any]:
    return {"room": await world.new_room()}


async def _fresh_public_room(world: World) -> dict[str, Any]:
    return {"room": await world.new_room("public")}


async def _fresh_call(world: World) -> dict[str, Any]:
    room, call, _ = await world.new_call()
    return {"room": room, "call": call}


async def _fresh_message(world: World) -> dict[str, Any]:
    return {"message": await world.new_message()}


def _send(world: World, actor: str, facts: dict[str, Any]) -> dict[str, Any]:
    return {
        "roomId": facts.get("room", world.room),
        "clientMsgId": _unique("ws"),
        "body": f"hello from {actor}",
    }


async def check_relayed(world: World, actor: str, p: Prepared, allowed: bool, _: Any) -> str | None:
    if not allowed:
        return None
    marker = p.facts["marker"]
    try:
        frame = await world.holder.wait_for(
            lambda f: f["type"] == p.msg_type and marker in json.dumps(f["payload"])
        )
    except TimeoutError:
        return "the target never received it"
    if frame["payload"].get("from") != p.facts.get("participant"):
        return f"from is {frame['payload'].get('from')}, not the sender's participant id"
    return None


async def check_call_ended(
    world: World, actor: str, p: Prepared, allowed: bool, _: Any
) -> str | None:
    live = uuid.UUID(p.facts["call"]) in world.services.calls.calls
    return None if live != allowed else f"the call is {'still' if live else 'no longer'} live"


WS_ROWS: tuple[Ws, ...] = (
    Ws("room.join", ws_cols("ok", "ok", "ok", "ok", "room_not_found"),
       ws("room.join", lambda w, a, f: {"roomId": w.room})),
    Ws("room.join", ws_cols("ok", "ok", "ok", "ok", "not_a_member"),
       ws("room.join", lambda w, a, f: {"roomId": f["room"]}, facts=_fresh_public_room),
       variant="public"),
    Ws("room.leave", ws_cols("ok", "ok", "ok", "ok", "ok"),
       ws("room.leave", lambda w, a, f: {"roomId": w.room}, setup=_join_room)),
    Ws("presence.set", ws_cols("ok", "ok", "ok", "ok", "ok"),
       ws("presence.set", lambda w, a, f: {"status": "away"})),
    Ws("typing.start", ws_cols("ok", "ok", "ok", "ok", "room_not_joined"),
       ws("typing.start", lambda w, a, f: {"roomId": w.room}, setup=_join_room)),
    Ws("typing.stop", ws_cols("ok", "ok", "ok", "ok", "room_not_joined"),
       ws("typing.stop", lambda w, a, f: {"roomId": w.room}, setup=_join_room)),
    Ws("chat.send", ws_cols("ok", "ok", "ok", "ok", "room_not_found"),
       ws("chat.send", _send), check_posted),
    Ws("chat.send", ws_cols("ok", "ok", "ok", "ok", "not_a_member"),
       ws("chat.send", _send, facts=_fresh_public_room), check_posted, variant="public"),
    Ws("chat.edit", ws_cols("forbidden", "forbidden", "ok", "forbidden", "room_not_found"),
       ws("chat.edit", lambda w, a, f: {"roomId": w.room, "messageId": w.message,
                                        "body": _unique(f"ws edit by {a} ")}),
       check_edit),
    Ws("chat.delete", ws_cols("ok", "ok", "ok", "forbidden", "room_not_found"),
       ws("chat.delete", lambda w, a, f: {"roomId": w.room, "messageId": f["message"]},
          facts=_fresh_message),
       check_message_deleted),
    Ws("chat.read", ws_cols("ok", "ok", "ok", "ok", "room_not_found"),
       ws("chat.read", lambda w, a, f: {"roomId": w.room, "seq": 1})),
    Ws("chat.history", ws_cols("ok", "ok", "ok", "ok", "room_not_found"),
       ws("chat.history", lambda w, a, f: {"roomId": w.room})),
    Ws("call.start", ws_cols("ok", "ok", "ok", "ok", "room_not_found"),
       ws("call.start", lambda w, a, f: {"roomId": f["room"], "mode": "p2p"}, facts=_fresh_room)),
    Ws("call.join", ws_cols("ok", "ok", "ok", "ok", "room_not_found"),
       ws("call.join", lambda w, a, f: {"callId": w.call})),
    Ws("call.leave", ws_cols("ok", "ok", "ok", "not_in_call", "room_not_found"),
       ws("call.leave", lambda w, a, f: {"callId": f["call"]}, setup=_join_call_unless_other,
          facts=_fresh_call)),
    Ws("call.end", ws_cols("ok", "ok", "ok", "not_in_call", "room_not_found"),
       ws("call.end", lambda w, a, f: {"callId": f["call"]}, setup=_join_call_if_member,
          facts=_fresh_call),
       check_call_ended),
    *(
        Ws(kind, ws_cols("ok", "ok", "ok", "not_in_call", "not_in_call"),
           ws(kind, _rtc(kind), setup=_join_call_unless_other, facts=_marker), check_relayed)
        for kind in ("rtc.offer", "rtc.answer", "rtc.ice")
    ),
    Ws("call.telemetry", ws_cols("ok", "ok", "ok", "not_in_call", "not_in_call"),
       ws("call.telemetry", lambda w, a, f: {"callId": w.call, "outcome": "connected"},
          setup=_join_call_unless_other)),
    # The connection's own token again; ``other`` presents the member's.
    Ws("auth.refresh", ws_cols("ok", "ok", "ok", "token_mismatch", "ok"),
       ws("auth.refresh", lambda w, a, f: {
           "token": w.accounts[MEMBER if a in (OTHER, ANONYMOUS) else a].access_token})),
)  # fmt: skip

# Requests that act on no room, user or call: ``auth`` is how every case above begins.
WS_EXEMPT = frozenset({"auth", "ping"})


# ---------------------------------------------------------------------------- the test


async def run_http(world: World, row: Http, actor: str) -> tuple[str, Prepared, Any]:
    prepare = row.prepare or shared(row.path)
    p = await prepare(world, actor)
    headers = dict(p.who.headers) if p.who is not None else {}
    async with world.client.request(row.method, p.path, json=p.body, headers=headers) as response:
        text = await response.text()
        data: Any = json.loads(text) if "json" in response.content_type and text else text
        if response.status >= 400:
            # Every refusal is problem JSON carrying its own status and a stable code.
            assert response.content_type == "application/problem+json", (response.status, text)
            assert data["status"] == response.status, data
            return f"{response.status} {data['code']}", p, data
        return str(response.status), p, data


async def run_ws(world: World, row: Ws, actor: str) -> tuple[str, Prepared, Any]:
    p = await row.prepare(world, actor)
    socket = await Socket.open(world.client)
    try:
        if p.who is None:
            found = await socket.request(p.msg_type, p.payload)
            return found.code or "ok", p, found.value
        if actor in (REVOKED, DELETED):
            # Sent back to back: nothing queued behind a refused auth may run.
            auth_id = await socket.send("auth", {"token": p.who.access_token})
            request_id = await socket.send(p.msg_type, p.payload)
            auth = await socket.answer(auth_id)
            close = await socket.wait_closed()
            late = socket.answer_now(request_id)
            if auth is None or auth.ok or close != 4001 or late is not None:
                return f"auth {auth}, close {close}, then {late}", p, None
            return f"auth:{auth.code}", p, None
        auth = await socket.request("auth", {"token": p.who.access_token})
        assert auth.ok, auth
        for msg_type, payload in p.setup:
            done = await socket.request(msg_type, payload)
            if msg_type == "call.join" and done.ok:
                p.facts["participant"] = done.value["participantId"]
        found = await socket.request(p.msg_type, p.payload)
        return found.code or "ok", p, found.value
    finally:
        await socket.close()


ROWS: tuple[Http | Ws, ...] = (*HTTP_ROWS, *WS_ROWS)
CASES = [pytest.param(row, actor, id=f"{row.name}-{actor}") for row in ROWS for actor in ACTORS]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("row", "actor"), CASES)
async def test_authorization(world: World, row: Http | Ws, actor: str) -> None:
    if isinstance(row, Http):
        got, prepared, data = await run_http(world, row, actor)
    else:
        got, prepared, data = await run_ws(world, row, actor)
    want = row.expect[actor]
    assert got == want, f"{row.name} as {actor}: expected {want}, got {got}: {data}"
    if row.check is not None:
        allowed = got == "ok" or got.startswith("2")
        problem = await row.check(world, actor, prepared, allowed, data)
        assert problem is None, f"{row.name} as {actor}: {problem}"


def test_every_rest_route_and_realtime_request_has_a_row() -> None:
    document = json.loads((ROOT / "protocol" / "openapi.json").read_text())
    methods = {"get", "put", "post", "patch", "delete"}
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }
    in_table = {(row.method, row.path) for row in HTTP_ROWS}
    assert documented - in_table == set(), "routes without a row in HTTP_ROWS"
    assert in_table - documented == set(), "rows for routes the OpenAPI document lacks"
    covered = {row.msg_type for row in WS_ROWS}
    assert protocol.CLIENT_TYPES - WS_EXEMPT - covered == set(), "request types without a row"
    assert covered - protocol.CLIENT_TYPES == set()
    for row in ROWS:
        assert set(row.expect) == set(ACTORS), row.name
    names = [row.name for row in ROWS]
    assert len(names) == len(set(names)), "two rows share a name (add a variant)"


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("how", ["removed", "left", "room deleted"])
async def test_who_loses_the_room_loses_the_call(world: World, how: str) -> None:
    """Membership is checked on every request, signaling included: someone removed from the
    room (or who left it, or whose room was deleted) can no longer signal into its call."""
    room, call, holder_participant = await world.new_call()
    other = world.accounts[OTHER]
    socket = await Socket.open(world.client)
    try:
        assert (await socket.request("auth", {"token": other.access_token})).ok
        joined = await socket.request("call.join", {"callId": call})
        assert joined.ok, joined
        offer = {"callId": call, "to": holder_participant, "sdp": "v=0 while a member"}
        assert (await socket.request("rtc.offer", offer)).ok
        if how == "removed":
            path, by = f"/v1/rooms/{room}/members/{other.id}", world.accounts[OWNER]
        elif how == "left":
            path, by = f"/v1/rooms/{room}/leave", other
        else:
            path, by = f"/v1/rooms/{room}", world.accounts[OWNER]
        method = "POST" if how == "left" else "DELETE"
        status, data = await api_call(world.client, method, path, by)
        assert status == 204, data

        # Their place in the call ends with their membership (the call itself, with the room).
        async def place_ended() -> bool:
            if how == "room deleted":
                reason = await world.pool.fetchval(
                    "SELECT end_reason FROM call_sessions WHERE id = $1 AND state = 'ended'",
                    uuid.UUID(call),
                )
                return bool(reason == "room_deleted")
            reasons = await world.pool.fetch(
                "SELECT leave_reason FROM call_participants WHERE call_id = $1 AND user_id = $2",
                uuid.UUID(call),
                uuid.UUID(other.id),
            )
            return bool(reasons) and all(r["leave_reason"] == "removed_from_room" for r in reasons)

        await eventually(place_ended, "the call no longer lists the ex-member")
        expected = "call_not_found" if how == "room deleted" else "not_in_call"
        for kind, payload in (
            ("rtc.offer", {"sdp": "v=0 after losing the room"}),
            ("rtc.answer", {"sdp": "v=0 after losing the room"}),
            ("rtc.ice", {"candidate": None}),
        ):
            refused = await socket.request(
                kind, {"callId": call, "to": holder_participant, **payload}
            )
            assert refused.code == expected, (kind, refused)
        assert not any(
            "after losing the room" in json.dumps(f.get("payload")) for f in world.holder.frames
        )
    finally:
        await socket.close()


# ---------------------------------------------------------------------------- the world


def matrix_settings(database_url: str) -> Settings:
    return Settings(
        env="dev",
        database_url=database_url,
        migrations_dir=MIGRATIONS,
        signing_keys=(SigningKey.from_secret(TEST_SECRET),),
        login_rate_per_minute=100_000,
        register_rate_per_minute=100_000,
        # Every case connects from 127.0.0.1; the limits have tests of their own.
        ws_connect_rate_per_minute=1_000_000,
        chat_send_burst=100_000,
        chat_send_per_second=100_000.0,
        typing_burst=100_000,
        typing_per_second=100_000.0,
        signaling_burst=100_000,
        signaling_per_second=100_000.0,
        turn_secret="matrix-turn-secret-0123456789abcdef0123456789",
        turn_uris=("turn:127.0.0.1:3478",),
        # The shared call rings with one participant for the whole module.
        call_ring_timeout_seconds=3600.0,
        call_grace_seconds=1.0,
    )


async def build_world(client: Client, services: Services) -> World:
    pool = services.pool
    password_hash = await passwords.hash_password(PASSWORD)
    users: dict[str, str] = {}
    async with pool.acquire() as conn, conn.transaction():
        for actor in (OWNER, ADMIN, MEMBER, OTHER, OUTSIDER, DELETED, BANNED, *SERVER_ROLES):
            users[actor] = str(
                await conn.fetchval(
                    "INSERT INTO users (username, display_name, password_hash, server_role) "
                    "VALUES ($1, $1, $2, $3) RETURNING id",
                    _unique(f"mx-{actor.replace('-', '')}-"),
                    password_hash,
                    SERVER_ROLES.get(actor),
                )
            )
    world = World(client, services, pool)
    for actor, user_id in users.items():
        world.accounts[actor] = await world.new_session(user_id)
    # The owner's second device, logged out the way a user does it.
    revoked = await world.new_session(users[OWNER])
    status, _ = await api_call(client, "POST", "/v1/auth/logout", revoked)
    assert status == 204
    world.accounts[REVOKED] = revoked
    world.room = await world.new_room()
    world.message = await world.new_message()
    world.holder = await Socket.open(client)
    assert (await world.holder.request("auth", {"token": world.accounts[MEMBER].access_token})).ok
    assert (await world.holder.request("room.join", {"roomId": world.room})).ok
    started = await world.holder.request("call.start", {"roomId": world.room, "mode": "p2p"})
    assert started.ok, started
    world.call = started.value["call"]["callId"]
    world.holder_participant = started.value["participantId"]
    # Deleted last: until now the account was an admin of every room like any other.
    await pool.execute(
        "UPDATE users SET disabled_at = now() WHERE id = $1", uuid.UUID(users[DELETED])
    )
    return world


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(pg_url: str) -> AsyncIterator[World]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        pool = await create_pool(
            pg_url, min_size=1, max_size=10, server_settings={"search_path": schema}
        )
        try:
            async with pool.acquire() as conn:
                await migrate.apply(conn, MIGRATIONS)
            services = Services.build(matrix_settings(pg_url), pool)
            client: Client = TestClient(TestServer(build_app(services), host="127.0.0.1"))
            await client.start_server()
            try:
                built = await build_world(client, services)
                yield built
                await built.holder.close()
            finally:
                await client.close()
        finally:
            await pool.close()
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
