"""Operators' control of one node over the bus: a drain asked for on any node reaches the
node it names, wherever the balancer sent the request.

Each node listens on a channel of its own; a drain request there sets the same stop event
SIGTERM sets (``boltorezka serve`` waits on it), so the node drains exactly as it does for
its supervisor and exits 0. Alone without Redis, the in-process bus delivers the request
to the node itself. Node liveness comes from the presence directory.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import structlog

from boltorezka.bus.base import Bus
from boltorezka.realtime.presence import PresenceDirectory

_log = structlog.get_logger("boltorezka.node_control")


class DrainRequest(msgspec.Struct, tag="drain", kw_only=True):
    node: str


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DrainRequest)


def channel_of(node_id: str) -> str:
    return f"node-control:{node_id}"


class NodeControl:
    """This node's end of the control channel, and the sender of requests to any node."""

    def __init__(self, bus: Bus, node_id: str, directory: PresenceDirectory) -> None:
        self._bus = bus
        self._node_id = node_id
        self._directory = directory
        # Set by SIGINT/SIGTERM and by a drain request alike: one way to stop.
        self.stop = asyncio.Event()
        bus.subscribe(channel_of(node_id), self._on_message)

    @property
    def node_id(self) -> str:
        return self._node_id

    def alive_nodes(self) -> list[str]:
        return self._directory.alive_nodes(time.monotonic())

    async def request_drain(self, node_id: str) -> None:
        await self._bus.publish(channel_of(node_id), _encoder.encode(DrainRequest(node=node_id)))

    async def _on_message(self, data: bytes) -> None:
        try:
            request = _decoder.decode(data)
        except msgspec.DecodeError:
            _log.warning("ignored an undecodable node control message", size=len(data))
            return
        if request.node != self._node_id:
            return
        if not self.stop.is_set():
            _log.warning("drain requested by an operator", node_id=self._node_id)
        self.stop.set()
