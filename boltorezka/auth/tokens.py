"""Access tokens (HS256 JWT with a key id) and opaque refresh tokens.

Access tokens are short-lived and verified against every configured key by ``kid`` so
keys can rotate. Refresh tokens are random bytes; only their SHA-256 reaches the database.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

from boltorezka.config import SigningKey
from boltorezka.errors import InvalidToken, TokenExpired

ISSUER = "boltorezka"
AUDIENCE = "boltorezka"
ALGORITHM = "HS256"
REFRESH_TOKEN_PREFIX = "brt_"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: int


class TokenCodec:
    def __init__(self, keys: tuple[SigningKey, ...], ttl_seconds: int) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self._keys = {key.kid: key for key in keys}
        self._active = keys[0]
        self.ttl_seconds = ttl_seconds

    def issue(
        self, user_id: uuid.UUID, session_id: uuid.UUID, *, now: int | None = None
    ) -> tuple[str, int]:
        """Return ``(token, expires_at)``."""
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
            "jti": secrets.token_hex(8),
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
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except jwt.PyJWTError:
            raise InvalidToken() from None
        if claims.get("typ") != "access":
            raise InvalidToken("not an access token")
        try:
            return AccessClaims(
                user_id=uuid.UUID(str(claims["sub"])),
                session_id=uuid.UUID(str(claims["sid"])),
                expires_at=int(claims["exp"]),
            )
        except (ValueError, TypeError):
            raise InvalidToken() from None


def new_refresh_token() -> str:
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
