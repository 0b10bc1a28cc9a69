"""Forwarding a received track's encoded frames to every subscriber, without transcoding.

aiortc's receiver reassembles each encoded frame from RTP (jitter buffer, NACKs, REMB) and
hands it to a decoder thread through a queue; its sender encodes what its track yields, or
only packetizes it when the track yields an ``av.Packet`` (the encoder's ``pack()``). So
the SFU taps the receiver's queue: each encoded frame becomes one ``av.Packet`` (the
source's RTP timestamp as ``pts``, ``1/clock rate`` as ``time_base``, which ``pack()``
turns back into the same RTP timestamp) that every subscriber's sender packetizes with its
own SSRC, sequence numbers, payload type and header-extension ids. Nothing is decoded or
encoded in the SFU, however many subscribe: the one encoder of a source is the
publisher's.

Keyframes come from that encoder. A subscriber's sender asks for one when its client
sends PLI or FIR (aiortc would force a keyframe on the sender's own encoder, which never
encodes here); the request becomes a PLI to the publisher. A video subscriber starts, and
restarts after falling behind, by waiting for a keyframe (asking for one as it starts and
again while it waits): a delta frame it could not decode would only earn a decoder error
and a PLI later. Requests are coalesced per source: one is outstanding at a time, repeated
after ``KEYFRAME_REQUEST_INTERVAL`` if no keyframe came.

A subscriber gets only frames of the codec its own transceiver negotiated (the engine
restricts a subscription's codecs to its source's); a frame of another codec is dropped
and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import structlog
from aiortc import MediaStreamTrack, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import get_capabilities, is_rtx
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

_log = structlog.get_logger("boltorezka.sfu")

# Seconds before an unanswered keyframe request is repeated (a lost PLI, or a keyframe
# lost on the way in).
KEYFRAME_REQUEST_INTERVAL = 0.5
# Frames a subscriber's queue holds before its sender counts as behind. Packetizing is
# cheap, so only a stalled sender gets there: video then drops the backlog and restarts at
# the next keyframe, audio drops its oldest frame.
QUEUE_FRAMES = {"audio": 50, "video": 30}


@dataclass
class ForwardingCounts:
    frames_in: int = 0
    frames_out: int = 0
    keyframes_in: int = 0
    keyframe_requests: int = 0
    dropped: int = 0


class _DecoderTap(queue.Queue[Any]):
    """Stands in for a receiver's decoder queue: encoded frames go to the forwarder (on the
    event loop's thread, where the receiver handles RTP); only the end-of-stream sentinel
    reaches the decoder thread, which then ends as aiortc means it to."""

    def __init__(self, forwarder: SourceForwarder) -> None:
        super().__init__()
        self._forwarder = forwarder

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(item, block, timeout)
        else:
            codec, frame = item
            self._forwarder.forward(codec, frame)


class SourceForwarder:
    """One received track: its encoded frames, fanned out to :class:`ForwardedTrack`\\ s."""

    def __init__(self, transceiver: RTCRtpTransceiver) -> None:
        receiver = transceiver.receiver
        if getattr(receiver, "_RTCRtpReceiver__decoder_thread", None) is not None:
            raise RuntimeError("the receiver already decodes: tap it before it starts")
        self.kind = transceiver.kind
        self.counts = ForwardingCounts()
        self._transceiver = transceiver
        self._tracks: set[ForwardedTrack] = set()
        self._media_ssrc: int | None = None
        self._requested_at: float | None = None  # an outstanding keyframe request
        self._requests: set[asyncio.Task[None]] = set()
        self._closed = False
        # Read by receive() when it starts the decoder thread, and by every frame after.
        receiver._RTCRtpReceiver__decoder_queue = _DecoderTap(self)  # type: ignore[attr-defined]
        handle_rtp = receiver._handle_rtp_packet

        async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
            # A PLI names the media SSRC, never the retransmission stream's.
            codec = self._codec_for(packet.payload_type)
            if codec is not None and not is_rtx(codec):
                self._media_ssrc = packet.ssrc
            await handle_rtp(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]

    @property
    def codec(self) -> RTCRtpCodecParameters | None:
        """The codec the publisher was asked to send with (the answer's first)."""
        return next((c for c in self._transceiver._codecs if not is_rtx(c)), None)

    def codec_preferences(self) -> list[RTCRtpCodecCapability]:
        """What a subscription to this source may negotiate: its codec (and retransmission
        for video), so that what arrives can be sent on as it is."""
        codec = self.codec
        if codec is None:
            return []
        capabilities = get_capabilities(self.kind).codecs
        same = [c for c in capabilities if c.mimeType.lower() == codec.mimeType.lower()]
        return same + [c for c in capabilities if is_rtx(c)] if same else []

    def subscribe(self) -> ForwardedTrack:
        track = ForwardedTrack(self)
        if self._closed:
            track.stop()
        else:
            self._tracks.add(track)
        return track

    def close(self) -> None:
        """The source ended: every subscriber's track ends, and with it its sender."""
        self._closed = True
        for track in list(self._tracks):
            track.stop()
        for request in self._requests:
            request.cancel()

    def forward(self, codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
        self.counts.frames_in += 1
        keyframe = is_keyframe(codec, frame.data)
        if keyframe and self.kind == "video":
            self.counts.keyframes_in += 1
            self._requested_at = None
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = Fraction(1, codec.clockRate)
        for track in self._tracks:
            track._deliver(codec, packet, keyframe)

    def request_keyframe(self) -> None:
        if self.kind != "video" or self._closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._requested_at is not None and now - self._requested_at < (
            KEYFRAME_REQUEST_INTERVAL
        ):
            return  # one is on its way: its keyframe reaches every subscriber
        ssrc = self._media_ssrc
        if ssrc is None:
            return  # nothing received yet: the first frame of a stream is a keyframe
        self._requested_at = now
        self.counts.keyframe_requests += 1
        receiver = self._transceiver.receiver
        task = loop.create_task(receiver._send_rtcp_pli(ssrc))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    def _discard(self, track: ForwardedTrack) -> None:
        self._tracks.discard(track)

    def _codec_for(self, payload_type: int) -> RTCRtpCodecParameters | None:
        return next((c for c in self._transceiver._codecs if c.payloadType == payload_type), None)


class ForwardedTrack(MediaStreamTrack):
    """One subscriber's copy of a source: yields the source's encoded frames as
    ``av.Packet``\\ s, which its sender packetizes without encoding."""

    def __init__(self, source: SourceForwarder) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._queue: asyncio.Queue[av.Packet[Any] | None] = asyncio.Queue()
        self._limit = QUEUE_FRAMES.get(source.kind, 50)
        self._transceiver: RTCRtpTransceiver | None = None
        self._mime: str | None = None
        # Nothing is queued until the sender reads: a subscription waiting for its
        # negotiation would otherwise start with a backlog.
        self._reading = False
        self._need_keyframe = source.kind == "video"

    def bind(self, transceiver: RTCRtpTransceiver) -> None:
        """Send through this transceiver: its sender's keyframe requests go to the source."""
        self._transceiver = transceiver
        sender: RTCRtpSender = transceiver.sender
        # RTCRtpSender calls this for every PLI and FIR its client sends.
        sender._send_keyframe = self._source.request_keyframe  # type: ignore[method-assign]

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._reading:
            self._reading = True
            if self._transceiver is not None and self._transceiver._codecs:
                self._mime = self._transceiver._codecs[0].mimeType.lower()
            if self._need_keyframe:
                self._source.request_keyframe()
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self._source._discard(self)
            self._queue.put_nowait(None)
        super().stop()

    def _deliver(
        self, codec: RTCRtpCodecParameters, packet: av.Packet[Any], keyframe: bool
    ) -> None:
        if not self._reading:
            return
        counts = self._source.counts
        if self._mime is not None and codec.mimeType.lower() != self._mime:
            counts.dropped += 1
            return
        if self._need_keyframe:
            if not keyframe:
                counts.dropped += 1
                self._source.request_keyframe()
                return
            self._need_keyframe = False
        if self._queue.qsize() >= self._limit:
            if self.kind == "video":
                counts.dropped += self._queue.qsize() + 1
                _flush(self._queue)
                self._need_keyframe = True
                self._source.request_keyframe()
                return
            counts.dropped += 1
            self._queue.get_nowait()
        self._queue.put_nowait(packet)
        counts.frames_out += 1


def is_keyframe(codec: RTCRtpCodecParameters, data: bytes) -> bool:
    """Whether an encoded frame can be decoded on its own (every audio frame can)."""
    name = codec.mimeType.lower()
    if name == "video/vp8":
        # RFC 6386 §9.1: bit 0 of the frame tag is 0 for a key frame.
        return len(data) > 0 and data[0] & 0x01 == 0
    if name == "video/h264":
        return any(nal and nal[0] & 0x1F in (5, 7) for nal in data.split(b"\x00\x00\x01"))
    return not name.startswith("video/")


def _flush(pending: asyncio.Queue[av.Packet[Any] | None]) -> None:
    with contextlib.suppress(asyncio.QueueEmpty):
        while True:
            pending.get_nowait()
