"""Server configuration, read once from ``BOLTOREZKA_*`` environment variables.

Every variable is documented in ``docs/DEVELOPMENT.md`` with its default. Secrets are
never given defaults that could reach production: in ``production`` mode a missing or weak
secret stops start-up; in ``dev`` mode an ephemeral one is generated for this process only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

ENV_PREFIX = "BOLTOREZKA_"
MIN_SECRET_BYTES = 32
# Values people paste from examples; refusing them in production is cheap insurance.
_KNOWN_PLACEHOLDERS = frozenset(
    {"secret", "changeme", "change-me", "dev", "development", "test", "password", "default"}
)


class _Getter(Protocol):
    def __call__(self, name: str, default: str | None = None) -> str | None: ...


class ConfigError(ValueError):
    """A configuration value is missing, malformed or unsafe for the chosen mode."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One HMAC key for access tokens; ``kid`` goes into the JWT header."""

    kid: str
    secret: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: str) -> SigningKey:
        raw = secret.encode()
        # The key id is a short digest so rotation needs no extra variable and reveals nothing.
        return cls(kid=hashlib.sha256(raw).hexdigest()[:12], secret=raw)


@dataclass(frozen=True, slots=True)
class Settings:
    env: str = "dev"
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str | None = None
    data_dir: Path = Path.home() / ".local" / "share" / "boltorezka"
    # None: the migrations that ship inside the package (store.migrate.packaged()).
    migrations_dir: Path | None = None
    migrate_on_start: bool = True
    signing_keys: tuple[SigningKey, ...] = ()
    secret_generated: bool = False
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    # How long the refresh token rotated last may be presented again (a retry, or tabs
    # racing) and get the same new pair instead of revoking the session; 0: never.
    refresh_reuse_grace_seconds: int = 20
    # How long a password reset token an operator issued stays usable.
    password_reset_ttl_seconds: int = 3600
    max_body_bytes: int = 64 * 1024
    db_pool_min: int = 1
    db_pool_max: int = 10
    log_level: str = "info"
    log_format: str = "json"
    login_rate_per_minute: int = 10
    register_rate_per_minute: int = 5
    # Peers whose X-Forwarded-For is believed (api/http.py client_ip); empty: none.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # How long a connection may take to send a whole request head (api/edge.py).
    http_header_timeout_seconds: float = 10.0
    # How long an idle keep-alive connection stays open between requests.
    http_keepalive_seconds: float = 75.0
    ws_allowed_origins: tuple[str, ...] = ()
    # Origins whose pages may call the REST API from another origin (CORS); empty: none.
    cors_allowed_origins: tuple[str, ...] = ()
    ws_heartbeat_seconds: float = 20.0
    ws_auth_timeout_seconds: float = 10.0
    ws_max_frame_bytes: int = 64 * 1024
    ws_outbound_queue: int = 256
    ws_violation_budget: int = 20
    ws_connect_rate_per_minute: int = 60
    # Open sockets this node holds per client address and per user; 0: no cap.
    ws_max_per_address: int = 200
    ws_max_per_user: int = 50
    ws_drain_seconds: float = 10.0
    drain_prestop_seconds: float = 0.0
    ws_close_timeout_seconds: float = 5.0
    ws_send_buffer_bytes: int = 0
    # How often the node checks the sessions of its open sockets are still live; 0: never.
    ws_session_recheck_seconds: float = 30.0
    chat_send_burst: int = 20
    chat_send_per_second: float = 5.0
    typing_burst: int = 5
    typing_per_second: float = 1.0
    auth_expiry_warning_seconds: int = 60
    node_id: str = ""
    turn_secret: str | None = field(default=None, repr=False)
    turn_uris: tuple[str, ...] = ()
    stun_uris: tuple[str, ...] = ()
    turn_ttl: int = 3600
    call_ring_timeout_seconds: float = 45.0
    call_grace_seconds: float = 20.0
    sfu_threshold: int = 4
    redis_url: str | None = None
    sfu_mode: str = "spawn"
    event_loop: str = "auto"
    bus_socket: Path | None = None
    sfu_ice_addresses: tuple[str, ...] = ()
    signaling_burst: int = 50
    signaling_per_second: float = 20.0
    # Webhook deliveries (webhooks/dispatcher.py): whether this node dispatches, per-attempt
    # timeout, parallel requests, how often it looks for due rows, when it gives up, the
    # backoff between attempts, and how long finished rows are kept.
    webhook_dispatch: bool = True
    webhook_timeout_seconds: float = 10.0
    webhook_concurrency: int = 8
    webhook_poll_seconds: float = 1.0
    webhook_max_attempts: int = 20
    webhook_max_age_seconds: float = 3 * 86400.0
    webhook_retry_base_seconds: float = 10.0
    webhook_retry_max_seconds: float = 3600.0
    webhook_retention_seconds: float = 7 * 86400.0
    # Where /metrics is served instead of the main listener (host, port); None: there.
    metrics_listen: tuple[str, int] | None = None

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def active_key(self) -> SigningKey:
        return self.signing_keys[0]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return default if value is None or value == "" else value

        mode = (get("ENV", "dev") or "dev").lower()
        if mode not in {"dev", "production"}:
            raise ConfigError(f"{ENV_PREFIX}ENV must be 'dev' or 'production', got {mode!r}")

        keys, generated = _signing_keys(
            get("JWT_SECRET"),
            get("JWT_SECRET_FILE"),
            get("JWT_PREVIOUS_SECRETS"),
            production=mode == "production",
        )
        data_dir = get("DATA_DIR")
        xdg = env.get("XDG_DATA_HOME")
        default_data = (Path(xdg) if xdg else Path.home() / ".local" / "share") / "boltorezka"
        migrations = get("MIGRATIONS_DIR")
        defaults = cls()
        return cls(
            env=mode,
            host=get("HOST", defaults.host) or defaults.host,
            port=_int(get, "PORT", defaults.port, 0, 65535),
            database_url=get("DATABASE_URL"),
            data_dir=Path(data_dir) if data_dir else default_data,
            migrations_dir=Path(migrations) if migrations else None,
            migrate_on_start=_bool(get, "MIGRATE_ON_START", True),
            signing_keys=keys,
            secret_generated=generated,
            access_token_ttl=_int(get, "ACCESS_TOKEN_TTL", defaults.access_token_ttl, 30, 86400),
            refresh_token_ttl=_int(
                get, "REFRESH_TOKEN_TTL", defaults.refresh_token_ttl, 300, 365 * 86400
            ),
            refresh_reuse_grace_seconds=_int(
                get, "REFRESH_REUSE_GRACE_SECONDS", defaults.refresh_reuse_grace_seconds, 0, 300
            ),
            password_reset_ttl_seconds=_int(
                get, "PASSWORD_RESET_TTL_SECONDS", defaults.password_reset_ttl_seconds, 60, 604800
            ),
            max_body_bytes=_int(get, "MAX_BODY_BYTES", defaults.max_body_bytes, 1024, 16 << 20),
            db_pool_min=_int(get, "DB_POOL_MIN", defaults.db_pool_min, 0, 1000),
            db_pool_max=_int(get, "DB_POOL_MAX", defaults.db_pool_max, 1, 1000),
            log_level=(get("LOG_LEVEL", "info") or "info").lower(),
            log_format=(get("LOG_FORMAT", "json") or "json").lower(),
            login_rate_per_minute=_int(get, "LOGIN_RATE_PER_MINUTE", 10, 1, 100000),
            register_rate_per_minute=_int(get, "REGISTER_RATE_PER_MINUTE", 5, 1, 100000),
            trusted_proxies=_trusted_proxies(get),
            http_header_timeout_seconds=_float(
                get, "HTTP_HEADER_TIMEOUT_SECONDS", defaults.http_header_timeout_seconds, 0.1, 3600
            ),
            http_keepalive_seconds=_float(
                get, "HTTP_KEEPALIVE_SECONDS", defaults.http_keepalive_seconds, 1, 3600
            ),
            ws_allowed_origins=tuple(
                o.strip().rstrip("/")
                for o in (get("WS_ALLOWED_ORIGINS") or "").split(",")
                if o.strip()
            ),
            cors_allowed_origins=tuple(
                o.strip().rstrip("/")
                for o in (get("CORS_ALLOWED_ORIGINS") or "").split(",")
                if o.strip()
            ),
            ws_heartbeat_seconds=_float(get, "WS_HEARTBEAT_SECONDS", 20.0, 0.1, 3600),
            ws_auth_timeout_seconds=_float(get, "WS_AUTH_TIMEOUT_SECONDS", 10.0, 0.1, 600),
            ws_max_frame_bytes=_int(get, "WS_MAX_FRAME_BYTES", 64 * 1024, 1024, 16 << 20),
            ws_outbound_queue=_int(get, "WS_OUTBOUND_QUEUE", 256, 1, 1_000_000),
            ws_violation_budget=_int(get, "WS_VIOLATION_BUDGET", 20, 1, 1_000_000),
            ws_connect_rate_per_minute=_int(get, "WS_CONNECT_RATE_PER_MINUTE", 60, 1, 1_000_000),
            ws_max_per_address=_int(get, "WS_MAX_PER_ADDRESS", 200, 0, 10_000_000),
            ws_max_per_user=_int(get, "WS_MAX_PER_USER", 50, 0, 10_000_000),
            ws_drain_seconds=_float(get, "WS_DRAIN_SECONDS", 10.0, 0, 600),
            drain_prestop_seconds=_float(get, "DRAIN_PRESTOP_SECONDS", 0.0, 0, 600),
            ws_close_timeout_seconds=_float(get, "WS_CLOSE_TIMEOUT_SECONDS", 5.0, 0.1, 600),
            ws_send_buffer_bytes=_int(get, "WS_SEND_BUFFER_BYTES", 0, 0, 64 << 20),
            ws_session_recheck_seconds=_float(
                get, "WS_SESSION_RECHECK_SECONDS", defaults.ws_session_recheck_seconds, 0, 86400
            ),
            chat_send_burst=_int(get, "CHAT_SEND_BURST", 20, 1, 1_000_000),
            chat_send_per_second=_float(get, "CHAT_SEND_PER_SECOND", 5.0, 0.001, 1_000_000),
            typing_burst=_int(get, "TYPING_BURST", 5, 1, 1_000_000),
            typing_per_second=_float(get, "TYPING_PER_SECOND", 1.0, 0.001, 1_000_000),
            auth_expiry_warning_seconds=_int(get, "AUTH_EXPIRY_WARNING_SECONDS", 60, 1, 3600),
            node_id=get("NODE_ID") or "",
            turn_secret=_turn_secret(
                get("TURN_SECRET"), get("TURN_SECRET_FILE"), production=mode == "production"
            ),
            turn_uris=_list(get("TURN_URIS")),
            stun_uris=_list(get("STUN_URIS")),
            turn_ttl=_int(get, "TURN_TTL", 3600, 60, 7 * 86400),
            call_ring_timeout_seconds=_float(get, "CALL_RING_TIMEOUT_SECONDS", 45.0, 0.1, 3600),
            call_grace_seconds=_float(get, "CALL_GRACE_SECONDS", 20.0, 0.0, 3600),
            sfu_threshold=_int(get, "SFU_THRESHOLD", 4, 1, 1000),
            redis_url=get("REDIS_URL"),
            sfu_mode=_choice(get, "SFU", "spawn", ("spawn", "external", "off")),
            event_loop=_choice(get, "EVENT_LOOP", "auto", ("auto", "uvloop", "asyncio")),
            bus_socket=Path(get("BUS_SOCKET") or "") if get("BUS_SOCKET") else None,
            sfu_ice_addresses=_list(get("SFU_ICE_ADDRESSES")),
            signaling_burst=_int(get, "SIGNALING_BURST", 50, 1, 1_000_000),
            signaling_per_second=_float(get, "SIGNALING_PER_SECOND", 20.0, 0.001, 1_000_000),
            webhook_dispatch=_bool(get, "WEBHOOK_DISPATCH", True),
            webhook_timeout_seconds=_float(get, "WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.1, 120),
            webhook_concurrency=_int(get, "WEBHOOK_CONCURRENCY", 8, 1, 1000),
            webhook_poll_seconds=_float(get, "WEBHOOK_POLL_SECONDS", 1.0, 0.01, 60),
            webhook_max_attempts=_int(get, "WEBHOOK_MAX_ATTEMPTS", 20, 1, 1000),
            webhook_max_age_seconds=_float(
                get, "WEBHOOK_MAX_AGE_SECONDS", 3 * 86400.0, 1, 30 * 86400
            ),
            webhook_retry_base_seconds=_float(get, "WEBHOOK_RETRY_BASE_SECONDS", 10.0, 0.01, 3600),
            webhook_retry_max_seconds=_float(get, "WEBHOOK_RETRY_MAX_SECONDS", 3600.0, 0.01, 86400),
            webhook_retention_seconds=_float(
                get, "WEBHOOK_RETENTION_SECONDS", 7 * 86400.0, 60, 365 * 86400
            ),
            metrics_listen=_listen_address(get, "METRICS_LISTEN"),
        )


def _signing_keys(
    secret: str | None, secret_file: str | None, previous: str | None, *, production: bool
) -> tuple[tuple[SigningKey, ...], bool]:
    if secret is None and secret_file is not None:
        try:
            secret = Path(secret_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {ENV_PREFIX}JWT_SECRET_FILE: {exc.strerror}") from None
    generated = False
    if secret is None:
        if production:
            raise ConfigError(
                f"{ENV_PREFIX}JWT_SECRET (or {ENV_PREFIX}JWT_SECRET_FILE) is required in production"
            )
        secret = secrets.token_urlsafe(48)
        generated = True
    elif production:
        _check_strong(secret, "JWT_SECRET")
    keys = [SigningKey.from_secret(secret)]
    for old in (previous or "").split(","):
        old = old.strip()
        if old:
            if production:
                # A previous key still verifies tokens, so a weak one lets anyone mint them.
                _check_strong(old, "JWT_PREVIOUS_SECRETS")
            keys.append(SigningKey.from_secret(old))
    return tuple(keys), generated


def _turn_secret(secret: str | None, secret_file: str | None, *, production: bool) -> str | None:
    if secret is None and secret_file is not None:
        try:
            secret = Path(secret_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {ENV_PREFIX}TURN_SECRET_FILE: {exc.strerror}") from None
    if secret is not None and production:
        _check_strong(secret, "TURN_SECRET")
    return secret


def _trusted_proxies(get: _Getter) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if _bool(get, "TRUST_PROXY_HEADERS", False):
        # The old switch believed the leftmost X-Forwarded-For entry, which the client writes;
        # refusing to start beats silently changing whose address the limits count.
        raise ConfigError(
            f"{ENV_PREFIX}TRUST_PROXY_HEADERS was replaced by {ENV_PREFIX}TRUSTED_PROXIES: "
            "list your proxies' addresses or networks (e.g. 10.0.0.5,10.1.0.0/16) and unset it"
        )
    networks = []
    for item in _list(get("TRUSTED_PROXIES")):
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError:
            raise ConfigError(
                f"{ENV_PREFIX}TRUSTED_PROXIES: {item!r} is not an IP address or network "
                "(a network must have no host bits set, e.g. 10.1.0.0/16)"
            ) from None
    return tuple(networks)


def _listen_address(get: _Getter, name: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6 address]:port`` for IPv6) to listen on, or None when unset."""
    raw = get(name)
    if raw is None:
        return None
    text = raw.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.partition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"{ENV_PREFIX}{name} must be host:port ([address]:port for IPv6), got {raw!r}"
        )
    number = int(port)
    if not 0 <= number <= 65535:
        raise ConfigError(f"{ENV_PREFIX}{name}: the port must be 0-65535, got {number}")
    return host, number


def _list(raw: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (raw or "").split(",") if item.strip())


def _check_strong(secret: str, name: str) -> None:
    if secret.lower() in _KNOWN_PLACEHOLDERS or len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{ENV_PREFIX}{name} is a placeholder or shorter than {MIN_SECRET_BYTES} bytes; "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )


def _int(get: _Getter, name: str, default: int, low: int, high: int) -> int:
    raw = get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{ENV_PREFIX}{name} must be between {low} and {high}, got {value}")
    return value


def _float(get: _Getter, name: str, default: float, low: float, high: float) -> float:
    raw = get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{ENV_PREFIX}{name} must be between {low} and {high}, got {value}")
    return value


def _choice(get: _Getter, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (get(name) or default).lower()
    if value not in allowed:
        raise ConfigError(f"{ENV_PREFIX}{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _bool(get: _Getter, name: str, default: bool) -> bool:
    raw = get(name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{ENV_PREFIX}{name} must be a boolean (true/false), got {raw!r}")
