"""The API side of the route to the SFU process, over the bus.

Signals for calls in ``sfu`` mode go out on ``sfu-signal``; the SFU answers on
``sfu-events``, and the call service delivers those to the participant's connection. The
SFU publishes a heartbeat so that a missing SFU is a clear ``sfu_unavailable`` nack
rather than silence.

Besides the signals it addresses to a participant, the SFU reports media it lost or
regained as ``sfu.media`` (:data:`MEDIA_EVENT`), which the call service acts on and never
passes to a client.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

import msgspec

from boltorezka.bus.base import Bus

SIGNAL_CHANNEL = "sfu-signal"
EVENT_CHANNEL = "sfu-events"
HEARTBEAT_CHANNEL = "sfu-heartbeat"
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_STALE = 3.5
MEDIA_EVENT = "sfu.media"
"""Payload ``{"connected": bool, "reason"?: str}``: the SFU dropped a participant's connection
on its own (``reason`` ``lost`` or ``no_answer``), or a connection of it reached connected."""


class SfuMessage(msgspec.Struct, kw_only=True):
    call_id: uuid.UUID
    participant_id: uuid.UUID
    kind: str  # rtc.offer, rtc.answer, rtc.ice, "left", or MEDIA_EVENT from the SFU
    payload: dict[str, Any] = {}


class SfuHeartbeat(msgspec.Struct, kw_only=True):
    sfu_id: str
    calls: int = 0
    peers: int = 0
    # Packets the SFU process dropped because it could not handle them, since it started.
    dropped_packets: int = 0


_encoder = msgspec.json.Encoder()
message_decoder = msgspec.json.Decoder(SfuMessage)
heartbeat_decoder = msgspec.json.Decoder(SfuHeartbeat)


def encode(message: SfuMessage | SfuHeartbeat) -> bytes:
    return _encoder.encode(message)


class SfuDeliverer(Protocol):
    async def from_sfu(
        self, call_id: uuid.UUID, participant_id: uuid.UUID, kind: str, payload: dict[str, Any]
    ) -> None: ...

    async def sfu_media(
        self, call_id: uuid.UUID, participant_id: uuid.UUID, connected: bool, reason: str | None
    ) -> None: ...


class SfuUnreachable(Exception):
    """No SFU has sent a heartbeat recently."""


class SfuBusLink:
    def __init__(self, bus: Bus, deliverer: SfuDeliverer) -> None:
        self._bus = bus
        self._deliverer = deliverer
        self.last_heartbeat = 0.0
        self.last_status: SfuHeartbeat | None = None
        bus.subscribe(EVENT_CHANNEL, self._on_event)
        bus.subscribe(HEARTBEAT_CHANNEL, self._on_heartbeat)

    @property
    def available(self) -> bool:
        return time.monotonic() - self.last_heartbeat < HEARTBEAT_STALE

    async def signal(
        self, call_id: uuid.UUID, participant_id: uuid.UUID, kind: str, payload: dict[str, Any]
    ) -> None:
        if not self.available:
            raise SfuUnreachable()
        await self._bus.publish(
            SIGNAL_CHANNEL,
            encode(
                SfuMessage(
                    call_id=call_id, participant_id=participant_id, kind=kind, payload=payload
                )
            ),
        )

    async def participant_left(self, call_id: uuid.UUID, participant_id: uuid.UUID) -> None:
        await self._bus.publish(
            SIGNAL_CHANNEL,
            encode(SfuMessage(call_id=call_id, participant_id=participant_id, kind="left")),
        )

    async def _on_event(self, data: bytes) -> None:
        message = message_decoder.decode(data)
        if message.kind == MEDIA_EVENT:
            reason = message.payload.get("reason")
            await self._deliverer.sfu_media(
                message.call_id,
                message.participant_id,
                message.payload.get("connected") is True,
                reason if isinstance(reason, str) else None,
            )
            return
        await self._deliverer.from_sfu(
            message.call_id, message.participant_id, message.kind, message.payload
        )

    async def _on_heartbeat(self, data: bytes) -> None:
        self.last_status = heartbeat_decoder.decode(data)
        self.last_heartbeat = time.monotonic()
