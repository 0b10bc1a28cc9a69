"""Synthetic media peers for SFU tests and benches: solid-colour video, a tone, and an
aiortc participant that signals through a callback. Receivers tell sources apart by the
stream id the SFU puts in its SDP (the source participant's id) and by the colour decoded.

:func:`browser_numbering` makes such a participant number its RTP identifiers as Chrome
does, which aiortc's own defaults never match (the SFU re-offer bug browsers exposed).
"""

import asyncio
import contextlib
import copy
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from fractions import Fraction
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
)
from av import AudioFrame, VideoFrame

# --- synthetic media ------------------------------------------------------------------------

WIDTH, HEIGHT, FPS = 160, 120, 10
AUDIO_RATE, AUDIO_SAMPLES = 48000, 960  # 20 ms
# Solid colours in Y'CbCr, far apart so they survive VP8 at any bitrate.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (81, 90, 240),
    "green": (145, 54, 34),
    "blue": (41, 240, 110),
    "white": (235, 128, 128),
}


class _Paced(MediaStreamTrack):
    """Frames at a fixed rate, scheduled from the first one (no drift, no catch-up burst)."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self._interval = interval
        self._start: float | None = None
        self._count = 0

    async def _next(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._count += 1
            delay = self._start + self._count * self._interval - now
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:  # fell far behind (a busy machine): skip instead of bursting
                self._start, self._count = now, 0
        return self._count


class ColourVideoTrack(_Paced):
    kind = "video"

    def __init__(self, colour: str, fps: int = FPS, size: tuple[int, int] = (WIDTH, HEIGHT)):
        super().__init__(1 / fps)
        self.colour = colour
        self.size = size
        self._planes = [bytes([value]) for value in PALETTE[colour]]
        self._step = 90000 // fps
        self._pts = 0

    async def recv(self) -> VideoFrame:
        await self._next()
        frame = VideoFrame(*self.size, "yuv420p")
        for plane, value in zip(frame.planes, self._planes, strict=True):
            plane.update(value * plane.buffer_size)
        frame.pts = self._pts
        frame.time_base = Fraction(1, 90000)
        self._pts += self._step
        return frame


class ToneAudioTrack(_Paced):
    kind = "audio"

    def __init__(self, hz: float) -> None:
        super().__init__(AUDIO_SAMPLES / AUDIO_RATE)
        samples = (
            int(3000 * math.sin(2 * math.pi * hz * n / AUDIO_RATE)) for n in range(AUDIO_SAMPLES)
        )
        self._pcm = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
        self._pts = 0

    async def recv(self) -> AudioFrame:
        await self._next()
        frame = AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        frame.planes[0].update(self._pcm)
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._pts
        frame.time_base = Fraction(1, AUDIO_RATE)
        self._pts += AUDIO_SAMPLES
        return frame


def frame_colour(frame: VideoFrame) -> str | None:
    """The palette colour at the centre of a decoded frame (None if it is none of them)."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    y_plane, u_plane, v_plane = frame.planes
    cy, cx = frame.height // 2, frame.width // 2
    sample = (
        memoryview(y_plane)[cy * y_plane.line_size + cx],
        memoryview(u_plane)[(cy // 2) * u_plane.line_size + cx // 2],
        memoryview(v_plane)[(cy // 2) * v_plane.line_size + cx // 2],
    )
    name, distance = min(
        (
            (n, sum((a - b) ** 2 for a, b in zip(sample, c, strict=True)))
            for n, c in PALETTE.items()
        ),
        key=lambda item: item[1],
    )
    return name if distance < 40**2 else None


def stream_ids_by_mid(sdp: str) -> dict[str, str]:
    """mid → the stream id of ``a=msid`` for each m-section of an SDP."""
    found: dict[str, str] = {}
    mid: str | None = None
    msid: str | None = None
    for line in [*sdp.splitlines(), "m="]:
        if line.startswith("m="):
            if mid is not None and msid is not None:
                found[mid] = msid
            mid = msid = None
        elif line.startswith("a=mid:"):
            mid = line[6:].strip()
        elif line.startswith("a=msid:"):
            msid = line[7:].split()[0]
    return found


def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"]


# --- numbering RTP identifiers as a browser does -------------------------------------------

_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
_WEBRTC = "http://www.webrtc.org/experiments/rtp-hdrext/"
# What Chromium 156 offers for one audio and one video track, ids and payload types as it
# numbers them, including what aiortc does not support (a later offer must not reuse those
# numbers either: Chrome remembers every binding for the life of the connection).
BROWSER_EXTENSIONS: dict[str, list[tuple[int, str]]] = {
    "audio": [(1, _LEVEL), (2, _ABS_SEND_TIME), (3, _TWCC), (4, _MID)],
    "video": [
        (14, "urn:ietf:params:rtp-hdrext:toffset"),
        (2, _ABS_SEND_TIME),
        (13, "urn:3gpp:video-orientation"),
        (3, _TWCC),
        (5, _WEBRTC + "playout-delay"),
        (6, _WEBRTC + "video-content-type"),
        (7, _WEBRTC + "video-timing"),
        (8, _WEBRTC + "color-space"),
        (4, _MID),
        (10, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
        (11, "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"),
    ],
}
_FEEDBACK = [RTCRtcpFeedback("goog-remb"), RTCRtcpFeedback("nack"), RTCRtcpFeedback("nack", "pli")]


def _h264(pt: int, profile: str, mode: str) -> RTCRtpCodecParameters:
    parameters: dict[str, str | int | None] = {
        "level-asymmetry-allowed": "1",
        "packetization-mode": mode,
        "profile-level-id": profile,
    }
    return RTCRtpCodecParameters("video/H264", 90000, None, pt, list(_FEEDBACK), parameters)


def _rtx(pt: int, apt: int) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters("video/rtx", 90000, None, pt, [], {"apt": apt})


BROWSER_CODECS: dict[str, list[RTCRtpCodecParameters]] = {
    "audio": [
        RTCRtpCodecParameters("audio/opus", 48000, 2, 111, [], {"minptime": 10, "useinbandfec": 1}),
        RTCRtpCodecParameters("audio/red", 48000, 2, 63),
        RTCRtpCodecParameters("audio/G722", 8000, None, 9),
        RTCRtpCodecParameters("audio/PCMU", 8000, None, 0),
        RTCRtpCodecParameters("audio/PCMA", 8000, None, 8),
        RTCRtpCodecParameters("audio/CN", 8000, None, 13),
        RTCRtpCodecParameters("audio/telephone-event", 48000, None, 110),
    ],
    "video": [
        RTCRtpCodecParameters("video/VP8", 90000, None, 96, list(_FEEDBACK)),
        _rtx(97, 96),
        _h264(102, "42001f", "1"),
        _rtx(103, 102),
        _h264(104, "42001f", "0"),
        _rtx(107, 104),
        _h264(108, "42e01f", "1"),
        _rtx(109, 108),
        RTCRtpCodecParameters("video/AV1", 90000, None, 45, list(_FEEDBACK)),
        _rtx(46, 45),
        RTCRtpCodecParameters("video/VP9", 90000, None, 98, list(_FEEDBACK)),
        _rtx(99, 98),
        RTCRtpCodecParameters("video/ulpfec", 90000, None, 120),
    ],
}


def browser_numbering(sdp: str) -> str:
    """An aiortc offer renumbered as a browser numbers it (codecs, payload types and
    header-extension ids of every media section). The peer then sends with whatever the
    answer echoes back, so its RTP carries the browser's numbers too."""
    description = aiortc_sdp.SessionDescription.parse(sdp)
    for media in description.media:
        if media.kind not in BROWSER_CODECS:
            continue
        media.rtp.codecs = [copy.deepcopy(codec) for codec in BROWSER_CODECS[media.kind]]
        media.fmt = [codec.payloadType for codec in media.rtp.codecs]
        media.rtp.headerExtensions = [
            RTCRtpHeaderExtensionParameters(id=ident, uri=uri)
            for ident, uri in BROWSER_EXTENSIONS[media.kind]
        ]
    return str(description)


# --- a test participant ---------------------------------------------------------------------

SignalOut = Callable[[str, dict[str, Any]], Awaitable[None]]


class MediaPeer:
    """A client of the SFU: publishes a colour video and a tone, answers SFU offers and
    counts the frames it decodes per source participant (the SDP stream id)."""

    def __init__(
        self,
        name: str,
        colour: str,
        send: SignalOut,
        *,
        trickle: bool = False,
        fps: int = FPS,
        size: tuple[int, int] = (WIDTH, HEIGHT),
        rewrite_offer: Callable[[str], str] | None = None,
        answer_offers: bool = True,
    ) -> None:
        self.name = name
        self.colour = colour
        self._send = send
        self._trickle = trickle
        self._rewrite_offer = rewrite_offer
        # False: a client that never answers the SFU's offers (it rejected them, or hangs).
        self._answer_offers = answer_offers
        self.offers_received: list[str] = []
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(ToneAudioTrack(300 + 100 * len(name)))
        self.pc.addTrack(ColourVideoTrack(colour, fps, size))
        self.frames: Counter[tuple[str, str]] = Counter()
        self.colours: dict[str, Counter[str | None]] = {}
        self.offers_answered = 0
        self._arrived: list[MediaStreamTrack] = []
        self._readers: list[asyncio.Task[None]] = []
        self._inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._worker = asyncio.create_task(self._work())
        self._tick = asyncio.Event()
        self.errors: list[BaseException] = []
        self.pc.on("track", self._arrived.append)

    async def offer(self) -> None:
        """The client's own offer to the SFU; with ``trickle`` its candidates go separately."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        if self._rewrite_offer is not None:
            sdp = self._rewrite_offer(sdp)
        if not self._trickle:
            await self._send("rtc.offer", {"sdp": sdp})
            return
        lines = sdp.splitlines()
        candidates = [line[2:] for line in lines if line.startswith("a=candidate:")]
        stripped = [
            line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))
        ]
        await self._send("rtc.offer", {"sdp": "\r\n".join(stripped) + "\r\n"})
        for candidate in candidates:
            await self._send(
                "rtc.ice",
                {"candidate": {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}},
            )
        await self._send("rtc.ice", {"candidate": None})

    def deliver(self, kind: str, payload: dict[str, Any]) -> None:
        """A message from the SFU; handled in order by this peer's worker."""
        self._inbox.put_nowait((kind, payload))

    async def _work(self) -> None:
        while True:
            kind, payload = await self._inbox.get()
            try:
                await self._on_signal(kind, payload)
            except Exception as exc:  # surfaced by the test's checks
                self.errors.append(exc)

    async def _on_signal(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "rtc.answer":
            await self.pc.setRemoteDescription(RTCSessionDescription(payload["sdp"], "answer"))
            self._bind(payload["sdp"])
        elif kind == "rtc.offer":
            self.offers_received.append(payload["sdp"])
            if not self._answer_offers:
                return
            await self.pc.setRemoteDescription(RTCSessionDescription(payload["sdp"], "offer"))
            self._bind(payload["sdp"])
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self._send("rtc.answer", {"sdp": self.pc.localDescription.sdp})
            self.offers_answered += 1

    def _bind(self, sdp: str) -> None:
        owners = stream_ids_by_mid(sdp)
        arrived = list(self._arrived)
        self._arrived.clear()  # the same list: the track handler holds it
        for track in arrived:
            mid = next(t.mid for t in self.pc.getTransceivers() if t.receiver.track is track)
            source = owners.get(mid or "", "?")
            self._readers.append(asyncio.create_task(self._read(track, source)))

    async def _read(self, track: MediaStreamTrack, source: str) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.frames[(source, track.kind)] += 1
                if isinstance(frame, VideoFrame):
                    self.colours.setdefault(source, Counter())[frame_colour(frame)] += 1
                self._tick.set()

    def direction_for(self, source: str) -> set[str | None]:
        """Negotiated directions of the transceivers that carry ``source``'s tracks."""
        description = self.pc.remoteDescription
        owners = stream_ids_by_mid(description.sdp) if description else {}
        return {
            t.currentDirection
            for t in self.pc.getTransceivers()
            if owners.get(t.mid or "") == source
        }

    async def wait_frames(
        self, sources: Iterable[str], *, video: int, audio: int, timeout: float
    ) -> None:
        """Wait until ``video``/``audio`` more frames arrived from each source than now."""
        wanted = {
            (source, kind): self.frames[(source, kind)] + count
            for source in sources
            for kind, count in (("video", video), ("audio", audio))
        }
        try:
            async with asyncio.timeout(timeout):
                while any(self.frames[key] < count for key, count in wanted.items()):
                    self._tick.clear()
                    await self._tick.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: wanted {wanted}, got {dict(self.frames)}; errors {self.errors}"
            ) from None

    async def close(self) -> None:
        self._worker.cancel()
        await self.pc.close()
        for task in [self._worker, *self._readers]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# --- the test -------------------------------------------------------------------------------
