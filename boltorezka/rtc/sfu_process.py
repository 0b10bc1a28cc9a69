"""``boltorezka sfu``: the SFU as a process of its own, attached to the bus.

Media work (DTLS, SRTP, codecs) is CPU-heavy and would stall signaling if it shared the
server's event loop, so it lives here. The process reads ``sfu-signal``, answers on
``sfu-events`` and publishes a heartbeat the API uses to tell whether an SFU is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Sequence
from typing import Any

import structlog

from boltorezka.bus.base import Bus
from boltorezka.rtc.peer import dropped_packets
from boltorezka.rtc.sfu import SfuEngine, use_host_addresses
from boltorezka.rtc.sfu_link import (
    EVENT_CHANNEL,
    HEARTBEAT_CHANNEL,
    HEARTBEAT_INTERVAL,
    SIGNAL_CHANNEL,
    SfuHeartbeat,
    SfuMessage,
    encode,
    message_decoder,
)

_log = structlog.get_logger("boltorezka.sfu")


async def run(
    bus: Bus, *, stop: asyncio.Event | None = None, ice_addresses: Sequence[str] | None = None
) -> None:
    """Serve SFU signaling on ``bus`` until stopped.

    ``ice_addresses`` limits the local addresses offered as ICE host candidates
    (BOLTOREZKA_SFU_ICE_ADDRESSES; default every non-loopback address, and "127.0.0.1"
    keeps media on loopback for tests and benches).
    """
    sfu_id = f"sfu-{uuid.uuid4().hex[:8]}"
    if ice_addresses:
        use_host_addresses(ice_addresses)

    async def send(
        call_id: uuid.UUID, participant_id: uuid.UUID, kind: str, payload: dict[str, Any]
    ) -> None:
        await bus.publish(
            EVENT_CHANNEL,
            encode(
                SfuMessage(
                    call_id=call_id, participant_id=participant_id, kind=kind, payload=payload
                )
            ),
        )

    engine = SfuEngine(send)

    async def on_signal(data: bytes) -> None:
        message = message_decoder.decode(data)
        if message.kind == "left":
            await engine.participant_left(message.call_id, message.participant_id)
        else:
            await engine.handle(
                message.call_id, message.participant_id, message.kind, message.payload
            )

    bus.subscribe(SIGNAL_CHANNEL, on_signal)
    await bus.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    _log.info("sfu started", sfu_id=sfu_id)
    # A socket-bus client loses its server when `boltorezka serve` exits: stop with it.
    bus_closed: asyncio.Event | None = getattr(bus, "closed", None)
    try:
        while not stop.is_set() and not (bus_closed is not None and bus_closed.is_set()):
            calls, peers = engine.stats()
            with contextlib.suppress(ConnectionError):
                await bus.publish(
                    HEARTBEAT_CHANNEL,
                    encode(
                        SfuHeartbeat(
                            sfu_id=sfu_id,
                            calls=calls,
                            peers=peers,
                            dropped_packets=dropped_packets(),
                        )
                    ),
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_INTERVAL):
                    await stop.wait()
    finally:
        await engine.close()
        await bus.close()
        _log.info("sfu stopped", sfu_id=sfu_id)
