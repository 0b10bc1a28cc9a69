"""Shared HTTP plumbing for handlers: bodies, parameters, responses, the caller's identity."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias, TypeVar

import msgspec
from aiohttp import web

from boltorezka.api.bodies import invalid_body, nul_field
from boltorezka.api.keys import SERVICES
from boltorezka.context import Actor, RequestInfo
from boltorezka.errors import (
    InvalidInput,
    MalformedJson,
    MalformedRequest,
    PayloadTooLarge,
    Unauthenticated,
    UnsupportedMediaType,
)
from boltorezka.text import NUL_ESCAPE

T = TypeVar("T")
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

ACTOR_KEY = web.RequestKey("actor", Actor)
# Why the Authorization header was rejected; raised only where the caller's identity is needed.
AUTH_ERROR_KEY = web.RequestKey("auth_error", Unauthenticated)
REQUEST_ID_KEY = web.RequestKey("request_id", str)

_encoder = msgspec.json.Encoder()


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encoder.encode(data), status=status, content_type="application/json", headers=headers
    )


def no_content() -> web.Response:
    return web.Response(status=204)


async def decode_body(request: web.Request, model: type[T]) -> T:
    """Read and validate a JSON body as ``model``; every failure is a typed client error."""
    limit = request.app[SERVICES].settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is {request.content_length} bytes; the limit is {limit}")
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.content_type or 'none'}"
        )
    raw = await _read_limited(request, limit)
    if not raw.strip():
        raise MalformedJson("the body is empty; send a JSON object")
    try:
        decoded = msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise invalid_body(exc) from None
    except msgspec.DecodeError as exc:
        raise MalformedJson(str(exc)) from None
    # JSON can carry U+0000 only as an escape, so the scan runs only when one is present.
    if NUL_ESCAPE in raw and (where := nul_field(msgspec.to_builtins(decoded))) is not None:
        raise InvalidInput("text must not contain the NUL character (U+0000)", field=where)
    return decoded


async def _read_limited(request: web.Request, limit: int) -> bytes:
    # Chunked bodies carry no Content-Length, so the limit is enforced while reading.
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except web.RequestPayloadError as exc:
        # The client's framing or encoding is broken (bad chunk, undecodable gzip, cut
        # short): its mistake, not a server failure.
        lines = str(exc).strip().splitlines()  # aiohttp's text is "400, message:\n  <reason>"
        reason = lines[-1].strip() if lines else "malformed"
        raise MalformedRequest(f"the request body cannot be read: {reason}"[:200]) from None
    return b"".join(chunks)


def path_uuid(request: web.Request, name: str) -> uuid.UUID:
    raw = request.match_info[name]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidInput(f"path parameter {name!r} must be a UUID", field=name) from None


# The longest opaque page cursor accepted; the server's own are far shorter.
CURSOR_MAX = 200


def query_int(
    request: web.Request, name: str, default: int | None, *, low: int, high: int
) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name!r} must be an integer", field=name) from None
    if not low <= value <= high:
        raise InvalidInput(f"query parameter {name!r} must be between {low} and {high}", field=name)
    return value


def query_page(request: web.Request, *, default: int, maximum: int) -> tuple[int, str | None]:
    """A keyset page's ``limit`` (1..maximum) and its opaque ``cursor``, as given."""
    limit = query_int(request, "limit", default, low=1, high=maximum)
    assert limit is not None
    return limit, query_str(request, "cursor", max_length=CURSOR_MAX)


def query_str(request: web.Request, name: str, *, max_length: int) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if "\x00" in raw:
        raise InvalidInput(f"query parameter {name!r} must not contain NUL", field=name)
    if len(raw) > max_length:
        raise InvalidInput(
            f"query parameter {name!r} must be at most {max_length} characters", field=name
        )
    return raw


def query_uuid(request: web.Request, name: str) -> uuid.UUID | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name!r} must be a UUID", field=name) from None


def actor(request: web.Request) -> Actor:
    """The authenticated caller; the auth middleware put it there or the route is public."""
    found: Actor | None = request.get(ACTOR_KEY)
    if found is None:
        rejected = request.get(AUTH_ERROR_KEY)
        if rejected is not None:
            raise rejected
        raise Unauthenticated("send an access token in the Authorization: Bearer header")
    return found


def request_info(request: web.Request) -> RequestInfo:
    return RequestInfo(
        request_id=request.get(REQUEST_ID_KEY, ""),
        ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", "")[:256],
    )


def client_ip(request: web.Request) -> str:
    """The address rate limits and the audit log count: the TCP peer, or the client a trusted
    proxy reports for it in ``X-Forwarded-For`` (``BOLTOREZKA_TRUSTED_PROXIES``)."""
    peer = request.remote or ""
    trusted = request.app[SERVICES].settings.trusted_proxies
    if not trusted:
        return peer
    return forwarded_client(peer, request.headers.getall("X-Forwarded-For", ()), trusted)


# Further than this from the node, an address is not worth believing: real chains (CDN,
# balancer, ingress) are a few hops long, and the walk must stay cheap on a crafted header.
MAX_FORWARDED_HOPS = 16


def forwarded_client(peer: str, forwarded_for: Iterable[str], trusted: Sequence[IPNetwork]) -> str:
    """The client's address behind the proxies in ``trusted``.

    Every proxy appends the address it received the request from, so only the entries
    appended by trusted proxies are believable, and those are at the right: read from the
    right, skipping trusted proxies; the first address that is not one is the client. The
    client writes whatever it likes to the left of that, so nothing further is read. A
    malformed entry stops the walk at the hop that wrote it, the last one known to be true.
    """
    # A link-local peer may carry its interface (fe80::1%eth0); trust is about the address.
    hop = _address(peer.partition("%")[0])
    if hop is None or not _is_trusted(hop, trusted):
        return peer
    client = peer
    # Repeated header fields are one comma-separated list, in order (RFC 9110, 5.3);
    # HAProxy's ``option forwardfor`` adds a field of its own rather than appending.
    entries = [entry.strip() for entry in ",".join(forwarded_for).split(",")]
    for entry in [e for e in reversed(entries) if e][:MAX_FORWARDED_HOPS]:
        address = _address(entry)
        if address is None:
            break
        client = str(address)
        if not _is_trusted(address, trusted):
            break
    return client


def _address(text: str) -> IPAddress | None:
    if "%" in text:
        return None  # an interface name means nothing a hop away, and its length is unbounded
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; compare them as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)
