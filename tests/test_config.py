"""Configuration from the environment: safe secrets in production, clear errors, no leaks."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from boltorezka.config import MIN_SECRET_BYTES, ConfigError, Settings, SigningKey
from tests.helpers import PASSWORD, cli_env, free_port, run_cli, url_with_search_path

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

STRONG = "k3Yq7mZ0vX9pL2rT5wB8nC1dF4gH6jA0sE3uI7oP9qR2tY5"
CLI_TIMEOUT = 60
# A generated secret is token_urlsafe(48): 64 characters of this alphabet.
LONG_TOKEN = re.compile(r"[A-Za-z0-9_\-]{40,}")


def from_env(**values: str) -> Settings:
    return Settings.from_env({f"BOLTOREZKA_{k}": v for k, v in values.items()})


# --- Secrets ------------------------------------------------------------------------------


def test_production_without_a_secret_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        from_env(ENV="production")


@pytest.mark.parametrize(
    "weak", ["secret", "changeme", "CHANGEME", "password", "short-but-not-that-short", "a" * 31]
)
def test_production_refuses_placeholder_or_short_secrets(weak: str) -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET") as caught:
        from_env(ENV="production", JWT_SECRET=weak)
    if len(weak) > 8:  # short dictionary words occur in the help text itself
        assert weak not in str(caught.value)


def test_production_accepts_a_strong_secret() -> None:
    settings = from_env(ENV="production", JWT_SECRET=STRONG)
    assert settings.production
    assert settings.secret_generated is False
    assert settings.active_key == SigningKey.from_secret(STRONG)
    assert len(settings.signing_keys) == 1


def test_previous_secrets_follow_the_active_one() -> None:
    old_a = "old-secret-number-one-0123456789abcdef"
    old_b = "old-secret-number-two-0123456789abcdef"
    settings = from_env(
        ENV="production", JWT_SECRET=STRONG, JWT_PREVIOUS_SECRETS=f"{old_a}, {old_b}"
    )
    assert [k.secret for k in settings.signing_keys] == [
        STRONG.encode(),
        old_a.encode(),
        old_b.encode(),
    ]
    assert len({k.kid for k in settings.signing_keys}) == 3


def test_production_refuses_a_weak_previous_secret() -> None:
    # A previous key still verifies tokens, so a guessable one lets anyone mint them.
    with pytest.raises(ConfigError, match="JWT_PREVIOUS_SECRETS") as caught:
        from_env(ENV="production", JWT_SECRET=STRONG, JWT_PREVIOUS_SECRETS="changeme")
    assert "changeme" not in str(caught.value)


def test_dev_without_a_secret_generates_an_ephemeral_one() -> None:
    first = from_env(ENV="dev")
    second = from_env()
    assert first.secret_generated and second.secret_generated
    assert not first.production
    assert len(first.active_key.secret) >= MIN_SECRET_BYTES
    assert first.active_key.secret != second.active_key.secret
    assert first.active_key.secret.decode() not in repr(first)


def test_dev_accepts_the_secret_it_is_given() -> None:
    settings = from_env(ENV="dev", JWT_SECRET="short-dev-secret")
    assert settings.secret_generated is False
    assert settings.active_key.secret == b"short-dev-secret"


def test_secret_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "jwt_secret"
    path.write_text(STRONG + "\n")
    settings = from_env(ENV="production", JWT_SECRET_FILE=str(path))
    assert settings.active_key.secret == STRONG.encode()
    assert settings.secret_generated is False


def test_weak_secret_file_is_refused_in_production(tmp_path: Path) -> None:
    path = tmp_path / "jwt_secret"
    path.write_text("changeme\n")
    with pytest.raises(ConfigError):
        from_env(ENV="production", JWT_SECRET_FILE=str(path))


def test_unreadable_secret_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET_FILE"):
        from_env(ENV="production", JWT_SECRET_FILE=str(tmp_path / "missing"))


# --- Other values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("MAX_BODY_BYTES", "64k"),
        ("ACCESS_TOKEN_TTL", "1.5"),
        ("DB_POOL_MAX", "0"),
        ("LOGIN_RATE_PER_MINUTE", "lots"),
        ("MIGRATE_ON_START", "maybe"),
        ("TRUST_PROXY_HEADERS", "2"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
        ("HTTP_HEADER_TIMEOUT_SECONDS", "soon"),
        ("ENV", "staging"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"BOLTOREZKA_{name}"):
        from_env(**{name: value})


def test_values_are_parsed(tmp_path: Path) -> None:
    settings = from_env(
        PORT="9000",
        HOST="0.0.0.0",
        MIGRATE_ON_START="false",
        TRUSTED_PROXIES="10.0.0.5,10.1.0.0/16",
        MAX_BODY_BYTES="2048",
        LOGIN_RATE_PER_MINUTE="7",
        MIGRATIONS_DIR=str(tmp_path),
        ENV="DEV",
    )
    assert (settings.port, settings.host) == (9000, "0.0.0.0")
    assert settings.migrate_on_start is False
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.5/32", "10.1.0.0/16"]
    assert settings.max_body_bytes == 2048
    assert settings.login_rate_per_minute == 7
    assert settings.migrations_dir == tmp_path
    assert settings.env == "dev"


def test_empty_values_mean_unset() -> None:
    settings = from_env(PORT="", JWT_SECRET="", MIGRATE_ON_START="")
    assert settings.port == Settings().port
    assert settings.secret_generated is True
    assert settings.migrate_on_start is True


# --- The command line ---------------------------------------------------------------------


async def test_serve_in_production_without_a_secret_exits_2_without_leaking() -> None:
    previous = "previous-secret-value-that-must-stay-private-42"
    db_password = "db-password-that-must-stay-private"
    env = cli_env(
        ENV="production",
        JWT_PREVIOUS_SECRETS=previous,
        DATABASE_URL=f"postgresql://boltorezka:{db_password}@127.0.0.1:1/none",
        PORT="0",
    )
    code, out, err = await run_cli("serve", env=env)
    assert code == 2
    assert "BOLTOREZKA_JWT_SECRET" in err
    for secret in (previous, db_password):
        assert secret not in err and secret not in out
    assert "Traceback" not in err


async def test_serve_in_production_with_a_weak_secret_exits_2_without_echoing_it() -> None:
    weak = "my-weak-secret"
    env = cli_env(ENV="production", JWT_SECRET=weak, PORT="0")
    code, out, err = await run_cli("serve", env=env)
    assert code == 2
    assert "JWT_SECRET" in err
    assert weak not in err and weak not in out


async def test_dev_server_never_logs_its_generated_secret(test_db: TestDatabase) -> None:
    port = free_port()
    env = cli_env(
        ENV="dev",
        DATABASE_URL=url_with_search_path(test_db.url, test_db.schema),
        PORT=str(port),
        LOG_LEVEL="debug",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "boltorezka",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    issued: list[str] = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                assert proc.returncode is None, "the server exited early"
                try:
                    async with http.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the server never answered /healthz")
            # Work that logs: tokens issued here must not show up in the logs either.
            async with http.post(
                f"{base}/v1/auth/register", json={"username": "alice", "password": PASSWORD}
            ) as response:
                assert response.status == 201
                data = await response.json()
                issued += [data["accessToken"], data["refreshToken"]]
            async with http.get(
                f"{base}/v1/me", headers={"Authorization": f"Bearer {data['accessToken']}"}
            ) as response:
                assert response.status == 200
            # The realtime plane takes the token in its first message; it stays out of logs too.
            async with http.ws_connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
                await ws.receive_json()  # server.capabilities
                await ws.send_json(
                    {
                        "v": 1,
                        "type": "auth",
                        "requestId": "a",
                        "payload": {"token": data["accessToken"]},
                    }
                )
                while (answer := await ws.receive_json())["type"] not in ("ack", "nack"):
                    pass  # presence.changed for our own arrival may come first
                assert answer["type"] == "ack"
            forged = data["accessToken"][:-6] + "AAAAAA"
            issued.append(forged)
            async with http.ws_connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
                await ws.receive_json()
                await ws.send_json(
                    {"v": 1, "type": "auth", "requestId": "b", "payload": {"token": forged}}
                )
                assert (await ws.receive_json())["type"] == "nack"
        proc.send_signal(signal.SIGTERM)
        out_bytes, err_bytes = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out, err = out_bytes.decode(), err_bytes.decode()
    assert proc.returncode == 0, (out, err)
    assert "generated" in out and "signing key" in out
    assert "listening" in out
    for stream in (out, err):
        assert not LONG_TOKEN.search(stream), LONG_TOKEN.search(stream)
        for token in issued:
            assert token not in stream
