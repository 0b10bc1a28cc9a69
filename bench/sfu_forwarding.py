"""What does the SFU pay per participant? CPU, received frame rate and encoders, for 2-6.

For each call size (``--sizes``, default 2, 4 and 6) it starts a fresh SFU engine in a
process of its own and that many aiortc participants in this one, each publishing a
solid-colour video (``--width`` by ``--height`` at ``--fps``) and a tone to all the others
through the SFU. Once every participant decodes video from every other, it measures for
``--seconds``: the SFU process's CPU (user+system from ``getrusage``, 100% = one core),
the clients' CPU, the video frame rate each participant decoded from each source (min and
median over all those streams), and the encoders the SFU ran (distinct encoder objects
that encoded at least one frame in the window; each one is a per-subscriber transcode).

    python bench/sfu_forwarding.py [--sizes 2 4 6] [--seconds 10] [--width 320 --height 240]

Signaling between the two processes is JSON lines on a Unix socket in a temporary
directory; media stays on 127.0.0.1. ``--engine MODULE`` runs another module's
``SfuEngine`` (to compare with an earlier engine saved as a file on ``PYTHONPATH``).
Everything is bounded (``--timeout`` per call size); the SFU process and the socket are
removed at the end whatever happens. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from harness import stop_process  # noqa: E402

# --- the SFU process ---------------------------------------------------------------------


class EncoderCount:
    """Encoder objects that encoded at least once since the last ``take``."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._lock = threading.Lock()  # aiortc encodes in executor threads

    def install(self) -> None:
        from aiortc.codecs.base import Encoder
        from aiortc.codecs.h264 import H264Encoder
        from aiortc.codecs.opus import OpusEncoder
        from aiortc.codecs.vpx import Vp8Encoder
        from av.frame import Frame

        for cls in (Vp8Encoder, H264Encoder, OpusEncoder):
            original = cls.encode

            def encode(
                encoder: Encoder,
                frame: Frame,
                force_keyframe: bool = False,
                original: Any = original,
            ) -> tuple[list[bytes], int]:
                with self._lock:
                    self._seen.add(id(encoder))
                result: tuple[list[bytes], int] = original(encoder, frame, force_keyframe)
                return result

            setattr(cls, "encode", encode)  # noqa: B010 (a method replaced on the class)

    def take(self) -> int:
        with self._lock:
            count, self._seen = len(self._seen), set()
        return count


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    return usage.ru_utime + usage.ru_stime


async def serve_sfu(socket_path: str, engine_module: str) -> None:
    """The SFU side: one engine, driven by JSON lines from the one client connection."""
    import aioice.ice

    from tests.sfu_media import loopback_only

    aioice.ice.get_host_addresses = loopback_only
    encoders = EncoderCount()
    encoders.install()
    module = importlib.import_module(engine_module)
    done = asyncio.Event()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def to_client(
            call: uuid.UUID, participant: uuid.UUID, kind: str, payload: dict[str, Any]
        ) -> None:
            if not writer.is_closing():  # the bench is over
                line = {"participant": str(participant), "kind": kind, "payload": payload}
                writer.write(json.dumps(line).encode() + b"\n")

        engine = module.SfuEngine(to_client)
        call_id = uuid.uuid4()
        try:
            while line := await _read_line(reader):
                message = json.loads(line)
                if "participant" in message:
                    participant = uuid.UUID(message["participant"])
                    await engine.handle(call_id, participant, message["kind"], message["payload"])
                    continue
                stats: dict[str, Any] = {"cpu": cpu_seconds(), "encoders": encoders.take()}
                forwarding = getattr(engine, "forwarding_stats", None)
                if forwarding is not None:
                    stats["forwarding"] = vars(forwarding())
                writer.write(json.dumps({"stats": stats}).encode() + b"\n")
        finally:
            await engine.close()
            writer.close()
            done.set()

    server = await asyncio.start_unix_server(on_client, socket_path)
    async with server:
        await done.wait()


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ConnectionError:  # the other side went away: the same as the end of input
        return b""


# --- the participants (this process) -----------------------------------------------------


@dataclass
class Result:
    size: int
    sfu_cpu: float
    client_cpu: float
    fps_min: float
    fps_median: float
    encoders: int
    keyframe_requests: int | None


async def run_size(size: int, args: argparse.Namespace, workdir: Path) -> Result:
    import aioice.ice

    from tests.sfu_media import PALETTE, MediaPeer, loopback_only

    aioice.ice.get_host_addresses = loopback_only
    socket_path = workdir / f"sfu-{size}.sock"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-sfu",
        str(socket_path),
        "--engine",
        args.engine,
        cwd=ROOT,
    )
    peers: dict[str, MediaPeer] = {}
    reader_task: asyncio.Task[None] | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        for _ in range(200):
            if socket_path.exists():
                break
            await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        stats_replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def read_signals() -> None:
            while line := await _read_line(reader):
                message = json.loads(line)
                if "stats" in message:
                    stats_replies.put_nowait(message["stats"])
                elif message["participant"] in peers:
                    peers[message["participant"]].deliver(message["kind"], message["payload"])

        reader_task = asyncio.create_task(read_signals())
        out = writer

        async def stats() -> dict[str, Any]:
            out.write(b'{"stats": true}\n')
            return await asyncio.wait_for(stats_replies.get(), 30)

        colours = list(PALETTE)
        for index in range(size):
            participant = str(uuid.uuid4())

            async def send(kind: str, payload: dict[str, Any], who: str = participant) -> None:
                line = {"participant": who, "kind": kind, "payload": payload}
                out.write(json.dumps(line).encode() + b"\n")

            peers[participant] = MediaPeer(
                f"p{index}",
                colours[index % len(colours)],
                send,
                fps=args.fps,
                size=(args.width, args.height),
            )
        for peer in peers.values():
            await peer.offer()
        for pid, peer in peers.items():
            others = [o for o in peers if o != pid]
            await peer.wait_frames(others, video=5, audio=5, timeout=args.timeout)
        await asyncio.sleep(args.warmup)

        def video_frames() -> dict[tuple[str, str], int]:
            return {
                (pid, source): peer.frames[(source, "video")]
                for pid, peer in peers.items()
                for source in peers
                if source != pid
            }

        before, frames_before = await stats(), video_frames()
        began, client_before = time.monotonic(), cpu_seconds()
        await asyncio.sleep(args.seconds)
        after, frames_after = await stats(), video_frames()
        wall, client_after = time.monotonic() - began, cpu_seconds()
        rates = [(frames_after[key] - frames_before[key]) / wall for key in frames_before]
        forwarding_before = before.get("forwarding", {})
        forwarding_after = after.get("forwarding", {})
        requests = (
            forwarding_after["keyframe_requests"] - forwarding_before["keyframe_requests"]
            if forwarding_after
            else None
        )
        return Result(
            size=size,
            sfu_cpu=(after["cpu"] - before["cpu"]) / wall * 100,
            client_cpu=(client_after - client_before) / wall * 100,
            fps_min=min(rates),
            fps_median=statistics.median(rates),
            encoders=after["encoders"],
            keyframe_requests=requests,
        )
    finally:
        if writer is not None:
            writer.close()  # the SFU closes its side first, then the participants go
        for peer in peers.values():
            await peer.close()
        if reader_task is not None:
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader_task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.wait(), 10)
        if child.returncode is None:
            await stop_process(child, 5)


async def main(args: argparse.Namespace) -> None:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sfu-") as workdir:
        for size in args.sizes:
            async with asyncio.timeout(args.timeout + args.seconds + args.warmup + 30):
                results.append(await run_size(size, args, Path(workdir)))
    print(
        f"\nSFU forwarding, engine {args.engine}: {args.width}x{args.height} at {args.fps} fps "
        f"per participant, {args.seconds:.0f} s windows (100% = one core)\n"
    )
    print("| participants | streams | SFU CPU | clients CPU | fps min | fps median | encoders |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.size} | {r.size * (r.size - 1)} | {r.sfu_cpu:.0f}% | {r.client_cpu:.0f}% "
            f"| {r.fps_min:.1f} | {r.fps_median:.1f} | {r.encoders} |"
        )
    requests = [r.keyframe_requests for r in results if r.keyframe_requests is not None]
    if requests:
        print(f"\nkeyframe requests sent to publishers in the windows: {requests}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--engine", default="boltorezka.rtc.sfu")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--serve-sfu", metavar="SOCKET", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve_sfu:
        asyncio.run(serve_sfu(arguments.serve_sfu, arguments.engine))
    else:
        asyncio.run(main(arguments))
