"""Access tokens (HS256 JWT with a key id) and opaque refresh tokens.

Access tokens are short-lived and verified against every configured key by ``kid`` so
keys can rotate. Refresh tokens are opaque; only their SHA-256 reaches the database. The
first one of a device session is random; each later one is derived from its predecessor
with a keyed HMAC (:meth:`TokenCodec.successor`), so any node can recompute what a rotation
issued when the client retries it, without the token ever being stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import jwt

from boltorezka.config import SigningKey
from boltorezka.errors import InvalidToken, TokenExpired

ISSUER = "boltorezka"
AUDIENCE = "boltorezka"
ALGORITHM = "HS256"
REFRESH_TOKEN_PREFIX = "brt_"
# Clock skew tolerated between the nodes that issue and verify a token.
LEEWAY_SECONDS = 5
# Domain separation: the successor key is derived from a signing secret but never signs JWTs,
# and a JWT signature never equals a successor token.
_SUCCESSOR_LABEL = b"boltorezka/refresh-token-successor/v1"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: int


@dataclass(frozen=True, slots=True)
class Successor:
    """What a rotation of one refresh token issues: the next refresh token and the ``jti``
    of the access token issued with it, both functions of the old token and a key."""

    refresh_token: str = field(repr=False)
    jti: str


class TokenCodec:
    def __init__(self, keys: tuple[SigningKey, ...], ttl_seconds: int) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self._keys = {key.kid: key for key in keys}
        self._active = keys[0]
        self._successor_keys = tuple(
            hmac.digest(key.secret, _SUCCESSOR_LABEL, "sha256") for key in keys
        )
        self.ttl_seconds = ttl_seconds

    def issue(
        self,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        *,
        now: int | None = None,
        jti: str | None = None,
    ) -> tuple[str, int]:
        """Return ``(token, expires_at)``.

        The same arguments (with ``now`` and ``jti`` given) give the same token, byte for
        byte, as long as the active key is the same.
        """
        issued = int(time.time()) if now is None else now
        expires = issued + self.ttl_seconds
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(user_id),
            "sid": str(session_id),
            "iat": issued,
            "nbf": issued,
            "exp": expires,
            "jti": secrets.token_hex(8) if jti is None else jti,
            "typ": "access",
        }
        token = jwt.encode(
            claims, self._active.secret, algorithm=ALGORITHM, headers={"kid": self._active.kid}
        )
        return token, expires

    def verify(self, token: str) -> AccessClaims:
        """Verify signature, algorithm, issuer, audience and expiry; raise a typed error."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the access token is not a well-formed JWT") from None
        key = self._keys.get(str(header.get("kid", "")))
        if key is None:
            raise InvalidToken("the access token was signed with an unknown key")
        try:
            # The algorithm list is fixed: a token declaring "none" or RS256 never verifies.
            claims = jwt.decode(
                token,
                key.secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "sid", "iss", "aud"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except jwt.PyJWTError:
            raise InvalidToken() from None
        if claims.get("typ") != "access":
            raise InvalidToken("not an access token")
        try:
            issued_at = int(claims["iat"])
            expires_at = int(claims["exp"])
        except (ValueError, TypeError):
            raise InvalidToken() from None
        # A valid signature is not enough: a token minted with a leaked key, or by a bug,
        # with a far-off exp would outlive every rotation. Nothing this server issues lives
        # longer than its TTL or starts in the future (older PyJWT does not check iat).
        if expires_at - issued_at > self.ttl_seconds + LEEWAY_SECONDS:
            raise InvalidToken("the access token lives longer than this server issues them")
        if issued_at > time.time() + LEEWAY_SECONDS:
            raise InvalidToken("the access token was issued in the future")
        try:
            return AccessClaims(
                user_id=uuid.UUID(str(claims["sub"])),
                session_id=uuid.UUID(str(claims["sid"])),
                expires_at=expires_at,
            )
        except (ValueError, TypeError):
            raise InvalidToken() from None

    def successor(self, refresh_token: str) -> Successor:
        """What rotating ``refresh_token`` issues now, with the active key."""
        return _successor(self._successor_keys[0], refresh_token)

    def successors(self, refresh_token: str) -> Iterator[Successor]:
        """What rotating ``refresh_token`` issued with each configured key, active first:
        a retry may reach a node after the rotation moved the key into the previous ones."""
        for key in self._successor_keys:
            yield _successor(key, refresh_token)


def _successor(key: bytes, refresh_token: str) -> Successor:
    raw = refresh_token.encode()
    token = hmac.digest(key, b"refresh\x00" + raw, "sha256")
    jti = hmac.digest(key, b"jti\x00" + raw, "sha256")
    return Successor(
        refresh_token=REFRESH_TOKEN_PREFIX + base64.urlsafe_b64encode(token).rstrip(b"=").decode(),
        jti=jti[:8].hex(),
    )


def new_refresh_token() -> str:
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
