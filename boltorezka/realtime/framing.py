"""Server-to-client WebSocket text frames, framed without a writer object (RFC 6455 §5.2).

Server frames are never masked and Boltorezka negotiates no compression, so a frame is a
two-to-ten-byte header and the payload: cheap enough to write straight to a transport for
each recipient of an event whose JSON was encoded once.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one final, unmasked text frame."""
    length = len(payload)
    if length < 126:
        header = _SHORT.pack(_FIN_TEXT, length)
    elif length < 65536:
        header = _MEDIUM.pack(_FIN_TEXT, 126, length)
    else:
        header = _LONG.pack(_FIN_TEXT, 127, length)
    return header + payload
