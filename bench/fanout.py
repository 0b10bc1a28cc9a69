"""Fan-out cost: Boltorezka against a bare aiohttp broadcast server, same load, one run.

Starts Boltorezka (throwaway schema, see harness.py) and bench/baseline_broadcast.py, makes
the accounts with `boltorezka admin bulk-users`, and drives each server in turn with the
same load-tester scenario. Server CPU is read from /proc over the send phase plus the
drain grace (ramp-up excluded), for the server process and, for Boltorezka, separately for
the PostgreSQL backends serving it. Prints numbers; asserts nothing.

    python bench/fanout.py                        # 1,000 clients, rooms of 50, 1 msg/s, 30 s
    python bench/fanout.py --clients 200 --room-size 20 --rate 2 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DEFAULT_DB, running_server
from loadrun import (
    Sampler,
    baseline_server,
    bulk_users,
    loadtest,
    postgres_backends,
    raise_open_files_limit,
    sample_while,
)


async def measure(
    name: str,
    url: str,
    pid: int,
    tokens: Path,
    workdir: Path,
    args: argparse.Namespace,
    database_url: str | None = None,
) -> dict[str, Any]:
    server = Sampler({pid})
    postgres = Sampler(set())
    scenario = [
        "--clients", str(args.clients), "--rate", str(args.rate), "--duration", str(args.seconds),
        "--ramp-up", str(args.ramp_up), "--processes", str(args.processes),
        "--drain", str(args.drain), "--request-timeout", "30",
    ]  # fmt: skip
    run = asyncio.create_task(
        loadtest(url, tokens, workdir / f"{name}.json", scenario, args.timeout / 2)
    )
    finder = asyncio.create_task(find_backends(postgres, pid, database_url, run))
    await sample_while([server, postgres], run)
    await finder
    summary = run.result()
    phases = summary["phases"]
    start, end = phases["sendStart"], phases["sendEnd"] + args.drain
    return {
        "summary": summary,
        "server_cpu": server.between(start, end),
        "postgres_cpu": postgres.between(start, end),
    }


async def find_backends(
    sampler: Sampler, pid: int, database_url: str | None, run: asyncio.Task[Any]
) -> None:
    """The pool may open connections while the load grows: look again every 2 s."""
    while database_url is not None and not run.done():
        sampler.pids |= await postgres_backends(database_url, pid)
        await asyncio.wait({run}, timeout=2.0)


def row(label: str, values: list[str]) -> str:
    return f"{label:<34}" + "".join(f"{v:>14}" for v in values)


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    print(
        f"fan-out: {args.clients} clients, rooms of {args.room_size}, {args.rate:g} msg/s each, "
        f"{args.seconds:g} s after {args.ramp_up:g} s ramp-up, load tester in "
        f"{args.processes} process(es)"
    )
    names = list(results)
    print(row("", names))

    def stat(path: list[str]) -> list[Any]:
        out = []
        for name in names:
            value: Any = results[name]["summary"]
            for key in path:
                value = value[key]
            out.append(value)
        return out

    def ms(values: list[Any]) -> list[str]:
        return ["-" if v is None else f"{v:.1f}" for v in values]

    print(row("connections ok / failed", [
        f"{ok}/{failed}" for ok, failed in zip(
            stat(["connections", "ok"]), stat(["connections", "failed"]), strict=True)
    ]))  # fmt: skip
    for label, key in (("sent", "sent"), ("acked", "acked"), ("delivered copies", "delivered")):
        print(row(label, [str(v) for v in stat(["messages", key])]))
    print(row("lost", [str(v) for v in stat(["messages", "lost"])]))
    print(row("duplicated", [str(v) for v in stat(["messages", "duplicated"])]))
    print(row("delivery p50 ms", ms(stat(["latencyMs", "delivery", "p50"]))))
    print(row("delivery p99 ms", ms(stat(["latencyMs", "delivery", "p99"]))))
    print(row("ack p99 ms", ms(stat(["latencyMs", "ack", "p99"]))))
    per_copy: dict[str, float] = {}
    per_copy_pg: dict[str, float] = {}
    for name in names:
        delivered = max(1, results[name]["summary"]["messages"]["delivered"])
        per_copy[name] = results[name]["server_cpu"] / delivered * 1e6
        total = results[name]["server_cpu"] + results[name]["postgres_cpu"]
        per_copy_pg[name] = total / delivered * 1e6
    print(row("server CPU s (send + drain)", [f"{results[n]['server_cpu']:.2f}" for n in names]))
    print(row("PostgreSQL backends CPU s", [f"{results[n]['postgres_cpu']:.2f}" for n in names]))
    print(row("server CPU µs per delivered copy", [f"{per_copy[n]:.1f}" for n in names]))
    print(row("  with PostgreSQL", [f"{per_copy_pg[n]:.1f}" for n in names]))
    if per_copy.get("baseline"):
        print(
            f"ratio boltorezka/baseline, server CPU per delivered copy: "
            f"{per_copy['boltorezka'] / per_copy['baseline']:.2f}x "
            f"(with PostgreSQL: {per_copy_pg['boltorezka'] / per_copy['baseline']:.2f}x)"
        )


async def bench(args: argparse.Namespace) -> None:
    raise_open_files_limit()
    results: dict[str, dict[str, Any]] = {}
    async with (
        asyncio.timeout(args.timeout),
        running_server(
            args.database_url,
            CHAT_SEND_BURST="100000",
            CHAT_SEND_PER_SECOND="100000",
            WS_OUTBOUND_QUEUE="4096",
            SFU="off",
        ) as server,
    ):
        workdir = Path(tempfile.mkdtemp(prefix="bz-fanout-", dir=server.workdir))
        tokens = workdir / "tokens.json"
        await bulk_users(server.env, tokens, args.clients, args.room_size)
        database_url = server.env["BOLTOREZKA_DATABASE_URL"].split("?")[0]
        results["boltorezka"] = await measure(
            "boltorezka", server.ws_url, server.process.pid, tokens, workdir, args, database_url
        )
        async with baseline_server(workdir) as (url, process):
            results["baseline"] = await measure("baseline", url, process.pid, tokens, workdir, args)
    report(args, results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--room-size", type=int, default=50)
    parser.add_argument("--rate", type=float, default=1.0, help="messages per second per client")
    parser.add_argument("--seconds", type=float, default=30.0, help="send phase, after ramp-up")
    parser.add_argument("--ramp-up", type=float, default=20.0)
    parser.add_argument("--drain", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=2, help="load tester processes")
    parser.add_argument("--timeout", type=float, default=600.0, help="hard limit, seconds")
    parser.add_argument("--database-url", default=DEFAULT_DB)
    asyncio.run(bench(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
