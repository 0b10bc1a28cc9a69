"""aiortc's ``RTCPeerConnection`` made fit for an SFU that re-offers to browsers.

**Stable RTP identifiers.** A BUNDLE group is one RTP session: a header-extension id and a
payload type mean one thing across every m-line of it, for the life of the connection
(RFC 8285 §6, RFC 8843 §9.1). Chrome enforces both: since M148 it refuses a description
that binds an extension id to another URI than any m-line ever did ("RTP extension ID
reassignment not supported"), and it refuses a BUNDLE group whose m-lines give one payload
type to two codecs. aiortc's ``createOffer`` ignores all that: it resets *every*
transceiver to its own defaults (opus 96, VP8 97, ``sdes:mid`` 1, …), even one whose ids
the browser chose in its offer (``ssrc-audio-level`` 1, opus 111, VP8 96, …). Chrome then
rejects the re-offer; worse, the SFU's receivers start later with the reset codec map (and
drop the browser's payload types), and the one header-extension map the bundled transport
parses with is reconfigured with the defaults, so a 3-byte ``abs-send-time`` is read as a
1-byte audio level and ``struct.error`` ends the transport.

:class:`SfuPeerConnection` fixes that where it starts. It remembers every id and payload
type the session has used (the remote's descriptions, all m-lines, even codecs and
extensions aiortc does not support, and its own offers). In a re-offer, a transceiver that
was negotiated keeps its negotiated codecs and extensions unchanged, and a new one gets
the session's id or payload type for everything already in it, and an unused one for
anything new. The alternatives were weaker: ``setCodecPreferences`` picks codecs but not
their numbers, and making the browser the offerer for every change would move the
negotiation the protocol documents into every client.

**A bad packet is dropped, not fatal.** aiortc's DTLS transport drops a packet whose parse
raises ``ValueError`` but lets anything else (``struct.error`` from a header extension of
an unexpected size, an error from a receiver) end its read loop, which closes the whole
connection: one odd packet from a client would cost it all of its media.
:func:`harden_packet_handling` drops such a packet, counts it and logs a sample.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription, sdp
from aiortc.codecs import is_rtx
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters

_log = structlog.get_logger("boltorezka.sfu")

# Dynamic payload types, the classic range first; Chrome uses 35-63 once 96-127 are gone.
_DYNAMIC_PAYLOAD_TYPES: tuple[int, ...] = (*range(96, 128), *range(35, 64))
# One-byte header extension ids (RFC 8285 §4.2): aiortc writes no two-byte headers.
_EXTENSION_IDS = range(1, 15)


class RtpIdentifiers:
    """The header-extension ids and payload types one BUNDLE session has used."""

    def __init__(self) -> None:
        self.extension_ids: dict[str, int] = {}
        self.extension_uris: dict[int, str] = {}
        self.codecs: dict[int, RTCRtpCodecParameters] = {}

    def learn(self, description: sdp.SessionDescription) -> None:
        """Record every binding of a description. A binding never changes once made: a
        peer that tried to rebind would be the one breaking the session."""
        for media in description.media:
            if media.kind not in ("audio", "video"):
                continue
            for extension in media.rtp.headerExtensions:
                self._bind_extension(extension.uri, extension.id)
            for codec in media.rtp.codecs:
                if codec.payloadType is not None:
                    self.codecs.setdefault(codec.payloadType, codec)

    def extensions_for(
        self, wanted: list[RTCRtpHeaderExtensionParameters]
    ) -> list[RTCRtpHeaderExtensionParameters]:
        """``wanted`` (aiortc's defaults for a kind) with this session's ids."""
        chosen = []
        for extension in wanted:
            ident = self.extension_ids.get(extension.uri)
            if ident is None:
                ident = next((i for i in _EXTENSION_IDS if i not in self.extension_uris), None)
                if ident is None:
                    continue  # the one-byte id space is full: offer the extension without it
                self._bind_extension(extension.uri, ident)
            chosen.append(RTCRtpHeaderExtensionParameters(id=ident, uri=extension.uri))
        return chosen

    def codecs_for(self, wanted: list[RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
        """``wanted`` (aiortc's codecs for a kind) renumbered to this session's payload
        types; a retransmission codec follows its base codec's new number."""
        chosen: list[RTCRtpCodecParameters] = []
        renumbered: dict[int, int] = {}
        for original in wanted:
            codec = copy.deepcopy(original)  # aiortc's defaults are shared module state
            if is_rtx(codec):
                apt = codec.parameters.get("apt")
                if not isinstance(apt, int) or apt not in renumbered:
                    continue
                codec.parameters = {**codec.parameters, "apt": renumbered[apt]}
                payload_type = self._payload_type(codec, apt=renumbered[apt])
            else:
                payload_type = self._payload_type(codec)
                if original.payloadType is not None:
                    renumbered[original.payloadType] = payload_type
            codec.payloadType = payload_type
            self.codecs.setdefault(payload_type, codec)
            chosen.append(codec)
        return chosen

    def _bind_extension(self, uri: str, ident: int) -> None:
        if uri not in self.extension_ids and ident not in self.extension_uris:
            self.extension_ids[uri] = ident
            self.extension_uris[ident] = uri

    def _payload_type(self, codec: RTCRtpCodecParameters, apt: int | None = None) -> int:
        for payload_type, known in self.codecs.items():
            if apt is not None:
                if is_rtx(known) and known.parameters.get("apt") == apt:
                    return payload_type
            elif not is_rtx(known) and is_codec_compatible(known, codec):
                return payload_type
        static = codec.payloadType
        if static is not None and static not in _DYNAMIC_PAYLOAD_TYPES:
            return static  # a static payload type (PCMU 0, G722 9) is fixed
        free = next((pt for pt in _DYNAMIC_PAYLOAD_TYPES if pt not in self.codecs), None)
        if free is None:
            raise ValueError("no free payload type left in this session")
        return free


class SfuPeerConnection(RTCPeerConnection):
    """An ``RTCPeerConnection`` whose offers keep the session's RTP identifiers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rtp_ids = RtpIdentifiers()

    async def setRemoteDescription(self, sessionDescription: RTCSessionDescription) -> None:
        # Learned before it is applied: a later offer must not reuse what the remote chose,
        # even for codecs and extensions the answer leaves out (Chrome remembers those too).
        self.rtp_ids.learn(sdp.SessionDescription.parse(sessionDescription.sdp))
        await super().setRemoteDescription(sessionDescription)

    async def createOffer(self) -> RTCSessionDescription:
        negotiated = {
            transceiver: (transceiver._codecs, transceiver._headerExtensions)
            for transceiver in self.getTransceivers()
            if transceiver.mid is not None and transceiver._codecs
        }
        offer = await super().createOffer()  # resets every transceiver to aiortc's defaults
        description = sdp.SessionDescription.parse(offer.sdp)
        for index, media in enumerate(description.media):
            if media.kind not in ("audio", "video"):
                continue
            transceiver = _at_mline(self.getTransceivers(), index)
            if transceiver in negotiated:
                codecs, extensions = negotiated[transceiver]
            else:
                codecs = self.rtp_ids.codecs_for(transceiver._codecs)
                extensions = self.rtp_ids.extensions_for(transceiver._headerExtensions)
            transceiver._codecs = codecs
            transceiver._headerExtensions = extensions
            media.fmt = [codec.payloadType for codec in codecs]
            media.rtp.codecs = codecs
            media.rtp.headerExtensions = extensions
            if not any(is_rtx(codec) for codec in codecs):
                media.ssrc, media.ssrc_group = media.ssrc[:1], []  # no retransmission stream
        self.rtp_ids.learn(description)
        return RTCSessionDescription(sdp=str(description), type="offer")


def _at_mline(transceivers: list[RTCRtpTransceiver], index: int) -> RTCRtpTransceiver:
    # createOffer numbers every transceiver it describes, new ones (without a mid) too.
    return next(t for t in transceivers if t._get_mline_index() == index)


# --- packets that cannot be handled ------------------------------------------------------

_dropped_packets = 0
_LOG_EVERY = 1000


def dropped_packets() -> int:
    """RTP and RTCP packets dropped by :func:`harden_packet_handling` in this process."""
    return _dropped_packets


def harden_packet_handling() -> None:
    """Make aiortc drop a packet it fails to handle instead of closing the connection.

    Process-wide and idempotent. ``ConnectionError`` still ends the transport, as aiortc
    means it to (the peer closed DTLS, or sending failed).
    """
    if getattr(RTCDtlsTransport, "_boltorezka_hardened", False):
        return
    for name in ("_handle_rtp_data", "_handle_rtcp_data"):
        setattr(RTCDtlsTransport, name, _dropping_failures(getattr(RTCDtlsTransport, name)))
    RTCDtlsTransport._boltorezka_hardened = True  # type: ignore[attr-defined]


def _dropping_failures(
    handle: Callable[..., Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    async def guarded(self: RTCDtlsTransport, data: bytes, **kwargs: Any) -> None:
        global _dropped_packets
        try:
            await handle(self, data, **kwargs)
        except ConnectionError:
            raise
        except Exception as exc:
            _dropped_packets += 1
            if _dropped_packets % _LOG_EVERY == 1:
                _log.warning(
                    "sfu dropped a packet it could not handle",
                    handler=handle.__name__,
                    error=f"{type(exc).__name__}: {exc}",
                    dropped=_dropped_packets,
                )

    guarded.__name__ = handle.__name__
    return guarded
