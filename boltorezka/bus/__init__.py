"""Fan-out of events between nodes: in-memory for one node, Redis for several (one
server, or a Redis Cluster with sharded pub/sub; :func:`boltorezka.bus.factory.redis_bus`
chooses from the URL).

Every implementation satisfies :class:`Bus`; the rest of the server never knows which one
it has. Messages are opaque bytes on named channels.
"""

from boltorezka.bus.base import Bus, Handler
from boltorezka.bus.memory import MemoryBus

__all__ = ["Bus", "Handler", "MemoryBus"]
