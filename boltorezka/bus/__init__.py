"""Fan-out of events between nodes: in-memory for one node, Redis for several.

Both implementations satisfy :class:`Bus`; the rest of the server never knows which one
it has. Messages are opaque bytes on named channels.
"""

from boltorezka.bus.base import Bus, Handler
from boltorezka.bus.memory import MemoryBus

__all__ = ["Bus", "Handler", "MemoryBus"]
