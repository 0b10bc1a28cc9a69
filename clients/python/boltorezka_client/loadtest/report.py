"""The summary: merged worker results as a table for people and as JSON for tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from boltorezka_client.loadtest.scenario import Scenario
from boltorezka_client.loadtest.stats import Counters, Histogram, WorkerResult, count_losses

DEFINITIONS = {
    "delivered": "chat.message copies received by joined members other than the sender, "
    "counted once per (room, seq, receiver); expected = acked x (joined members - 1)",
    "lost": "copies of acked messages that a member joined before the send never received "
    "by the end of the drain grace",
    "duplicated": "copies a receiver got again for a (room, seq) it already had",
    "latency": "ack: chat.send to its ack, at the sender; delivery: send time (carried in "
    "clientMsgId) to arrival at another member, both on this machine's clock",
}


def summarize(
    scenario: Scenario,
    results: list[WorkerResult],
    *,
    rooms: list[int],
    interrupted: bool,
    timed_out: bool,
) -> dict[str, Any]:
    counters = Counters()
    histograms: dict[str, Histogram] = {}
    nacks: dict[str, int] = {}
    errors: list[str] = []
    for result in results:
        counters.merge(result.counters)
        for name, histogram in result.histograms.items():
            histograms.setdefault(name, Histogram()).merge(histogram)
        for code, n in result.nack_codes.items():
            nacks[code] = nacks.get(code, 0) + n
        errors.extend(result.errors)
    expected, lost = count_losses(results)
    phases = next((r.phases for r in results if r.phases), {})
    window = max(1e-9, phases.get("sendEnd", 0.0) - phases.get("sendStart", 0.0))

    def latency(name: str) -> dict[str, Any]:
        return histograms.get(name, Histogram()).summary()

    return {
        "scenario": {
            "urls": list(scenario.urls),
            "clients": scenario.clients,
            "rooms": len(rooms),
            "roomSizeMin": min(rooms, default=0),
            "roomSizeMax": max(rooms, default=0),
            "ratePerClient": scenario.rate,
            "durationSeconds": scenario.duration,
            "rampUpSeconds": scenario.ramp_up,
            "callShare": scenario.call_share,
            "churnPerSecond": scenario.churn,
            "processes": scenario.processes,
            "bodyBytes": scenario.body_bytes,
        },
        "phases": phases,
        "interrupted": interrupted,
        "timedOut": timed_out,
        "connections": {
            "clients": counters.clients,
            "ok": counters.connected,
            "failed": counters.connect_failed,
            "reconnects": counters.reconnects,
            "reconnectFailed": counters.reconnect_failed,
            "unexpectedDisconnects": counters.disconnects,
            "churned": counters.churned,
            "tokenRefreshes": counters.token_refreshes,
        },
        "messages": {
            "sent": counters.sent,
            "acked": counters.acked,
            "nacked": counters.nacked,
            "ackTimeouts": counters.ack_timeouts,
            "resent": counters.resent,
            "expected": expected,
            "delivered": counters.delivered,
            "lost": lost,
            "duplicated": counters.duplicated,
        },
        "latencyMs": {
            "ack": latency("ack"),
            "delivery": latency("delivery"),
            "connect": latency("connect"),
        },
        "throughputPerSecond": {
            "sent": round(counters.sent / window, 1),
            "acked": round(counters.acked / window, 1),
            "delivered": round(counters.delivered / window, 1),
        },
        "signaling": {
            "callsJoined": counters.calls_joined,
            "sent": counters.signal_sent,
            "acked": counters.signal_acked,
            "nacked": counters.signal_nacked,
            "received": counters.signal_received,
            "ackMs": latency("signal_ack"),
        },
        "nackCodes": nacks,
        "errors": errors[:40],
        "definitions": DEFINITIONS,
    }


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(summary: dict[str, Any]) -> str:
    s, c, m = summary["scenario"], summary["connections"], summary["messages"]
    rooms = (
        f"{s['roomSizeMin']}"
        if s["roomSizeMin"] == s["roomSizeMax"]
        else f"{s['roomSizeMin']}-{s['roomSizeMax']}"
    )
    lines = [
        f"loadtest: {s['clients']} clients, {s['rooms']} rooms of {rooms}, "
        f"{s['ratePerClient']:g} msg/s each, {s['durationSeconds']:g} s after "
        f"{s['rampUpSeconds']:g} s ramp-up, {s['processes']} process(es)"
        + (" [INTERRUPTED]" if summary["interrupted"] else "")
        + (" [TIMED OUT]" if summary["timedOut"] else ""),
        f"connections  ok {c['ok']}  failed {c['failed']}  reconnects {c['reconnects']} "
        f"(failed {c['reconnectFailed']})  unexpected disconnects {c['unexpectedDisconnects']}"
        f"  churned {c['churned']}  token refreshes {c['tokenRefreshes']}",
        f"messages     sent {m['sent']}  acked {m['acked']}  nacked {m['nacked']}  "
        f"ack timeouts {m['ackTimeouts']}",
        f"copies       expected {m['expected']}  delivered {m['delivered']}  lost {m['lost']}"
        f"  duplicated {m['duplicated']}",
        f"{'latency ms':<13}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}{'count':>10}",
    ]
    for name, key in (("ack", "ack"), ("delivery", "delivery"), ("connect", "connect")):
        h = summary["latencyMs"][key]
        lines.append(
            f"{name:<13}"
            + "".join(f"{_ms(h[q]):>9}" for q in ("p50", "p95", "p99", "max"))
            + f"{h['count']:>10}"
        )
    t = summary["throughputPerSecond"]
    lines.append(
        f"throughput   sent {t['sent']:g}/s  acked {t['acked']:g}/s  delivered {t['delivered']:g}/s"
    )
    sig = summary["signaling"]
    if sig["callsJoined"]:
        lines.append(
            f"signaling    calls joined {sig['callsJoined']}  rtc.ice sent {sig['sent']}  "
            f"acked {sig['acked']}  received {sig['received']}  ack p99 "
            f"{_ms(sig['ackMs']['p99'])} ms"
        )
    if summary["nackCodes"]:
        codes = summary["nackCodes"].items()
        lines.append("nack codes   " + ", ".join(f"{k} {v}" for k, v in codes))
    for error in summary["errors"][:5]:
        lines.append(f"error        {error}")
    return "\n".join(lines)


def write_json(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
