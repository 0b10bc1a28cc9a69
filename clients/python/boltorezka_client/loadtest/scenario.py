"""The scenario: what load to generate, for how long, against which nodes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "ws://127.0.0.1:8080/v1/ws"


@dataclass(frozen=True, slots=True)
class Scenario:
    urls: tuple[str, ...] = (DEFAULT_URL,)
    clients: int = 100
    rooms: int = 10  # used when provisioning; a tokens file brings its own rooms
    room_size: int = 10
    rate: float = 1.0  # chat.send per second per client, during the send phase
    body_bytes: int = 100
    duration: float = 30.0  # the send phase, after ramp-up
    ramp_up: float = 10.0  # clients connect evenly spread over this
    call_share: float = 0.0  # fraction of each room's members in a p2p call, sending rtc.ice
    signal_rate: float = 2.0  # rtc.ice per second per call participant
    churn: float = 0.0  # forced reconnects (dropped TCP connections) per second, all clients
    processes: int = 1
    drain: float = 3.0  # grace after the send phase for the last copies to arrive
    timeout: float | None = None  # whole run; default: ramp-up + duration + drain + 60 s
    request_timeout: float = 10.0
    allow_remote: bool = False
    tokens: Path | None = None
    provision: bool = False
    json_out: Path | None = None
    progress: bool = True

    @property
    def hard_limit(self) -> float:
        if self.timeout is not None:
            return self.timeout
        return self.ramp_up + self.duration + self.drain + 60.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="boltorezka-loadtest",
        description="Generate realtime chat load against Boltorezka nodes and report "
        "delivery, loss, duplicates and latency.",
        epilog="Accounts come from `boltorezka admin bulk-users --out FILE` (--tokens FILE), "
        "or --provision runs that command on this machine first. Targets other than "
        "loopback addresses are refused without --allow-remote.",
    )
    p.add_argument(
        "--url",
        action="append",
        dest="urls",
        metavar="WS_URL",
        help=f"a node's WebSocket URL; repeat for several nodes (default {DEFAULT_URL})",
    )
    p.add_argument("--clients", type=int, default=100, help="connections, one per account")
    p.add_argument("--rooms", type=int, default=10, help="rooms to provision")
    p.add_argument("--room-size", type=int, default=10, help="members per provisioned room")
    p.add_argument("--rate", type=float, default=1.0, help="messages per second per client")
    p.add_argument("--body-bytes", type=int, default=100, help="message body size")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of sending")
    p.add_argument("--ramp-up", type=float, default=10.0, help="seconds to connect everyone")
    p.add_argument(
        "--call-share", type=float, default=0.0, help="share of each room's members in a call"
    )
    p.add_argument("--signal-rate", type=float, default=2.0, help="rtc.ice/s per call member")
    p.add_argument("--churn", type=float, default=0.0, help="forced reconnects per second")
    p.add_argument("--processes", type=int, default=1, help="worker processes")
    p.add_argument("--drain", type=float, default=3.0, help="grace seconds after sending")
    p.add_argument("--timeout", type=float, help="hard limit for the whole run, seconds")
    p.add_argument("--request-timeout", type=float, default=10.0, help="ack timeout, seconds")
    p.add_argument("--allow-remote", action="store_true", help="allow non-loopback targets")
    p.add_argument("--tokens", type=Path, help="tokens file from `boltorezka admin bulk-users`")
    p.add_argument(
        "--provision",
        action="store_true",
        help="run `boltorezka admin bulk-users` here first (same environment as the server)",
    )
    p.add_argument("--json", type=Path, dest="json_out", help="also write the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no live progress lines")
    return p


def from_args(args: argparse.Namespace) -> Scenario:
    scenario = Scenario(
        urls=tuple(args.urls or (DEFAULT_URL,)),
        clients=args.clients,
        rooms=args.rooms,
        room_size=args.room_size,
        rate=args.rate,
        body_bytes=args.body_bytes,
        duration=args.duration,
        ramp_up=args.ramp_up,
        call_share=args.call_share,
        signal_rate=args.signal_rate,
        churn=args.churn,
        processes=args.processes,
        drain=args.drain,
        timeout=args.timeout,
        request_timeout=args.request_timeout,
        allow_remote=args.allow_remote,
        tokens=args.tokens,
        provision=args.provision,
        json_out=args.json_out,
        progress=not args.no_progress,
    )
    problems = [
        message
        for ok, message in (
            (scenario.clients >= 1, "--clients must be at least 1"),
            (scenario.processes >= 1, "--processes must be at least 1"),
            (scenario.rate >= 0, "--rate must not be negative"),
            (1 <= scenario.body_bytes <= 4000, "--body-bytes must be 1..4000"),
            (scenario.duration >= 0 and scenario.ramp_up >= 0, "durations must not be negative"),
            (0 <= scenario.call_share <= 1, "--call-share must be between 0 and 1"),
            (scenario.churn >= 0 and scenario.drain >= 0, "--churn/--drain must be >= 0"),
            (scenario.tokens is not None or scenario.provision, "give --tokens or --provision"),
        )
        if not ok
    ]
    if problems:
        raise ValueError("; ".join(problems))
    return scenario
