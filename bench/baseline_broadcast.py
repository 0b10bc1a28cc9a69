"""A bare aiohttp WebSocket broadcast server: the floor that Boltorezka's fan-out is compared to.

It speaks just enough of the v1 envelope for the load tester: it sends
``server.capabilities``, answers every request with an ``ack`` (``auth`` with a far
expiry, ``room.join`` with the room's current ``lastSeq``), and broadcasts ``chat.send`` to
every socket joined to the room as ``chat.message`` with a per-room ``seq``, the sender
included, before the sender's ack (as Boltorezka does).

What it leaves out, on purpose (everything Boltorezka pays for and this does not): token
verification, sessions and expiry; membership and any authorization; persistence (no
PostgreSQL: messages, seqs and rooms live in a dict and die with the process); idempotent
``clientMsgId`` retries; resume and replay (``lastSeq`` is ignored); per-connection
outbound queues, slow-consumer handling, heartbeats, rate limits, presence, typing,
read markers, calls and every validation and error code (unknown requests get ``ack``
``null``); the bus between processes and nodes; logs and metrics.

    python bench/baseline_broadcast.py --port 8099
"""

import argparse
import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

ROOMS: defaultdict[str, set[web.WebSocketResponse]] = defaultdict(set)
SEQ: defaultdict[str, int] = defaultdict(int)


def frame(kind: str, payload: Any, request_id: str | None = None) -> str:
    return json.dumps({"v": 1, "type": kind, "requestId": request_id, "payload": payload})


async def endpoint(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    await ws.send_str(frame("server.capabilities", {"protocolVersions": [1], "features": []}))
    joined: set[str] = set()
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        req = json.loads(msg.data)
        kind, rid, body = req["type"], req["requestId"], req.get("payload") or {}
        result: Any = None
        if kind == "auth":
            result = {"userId": "", "sessionId": "", "expiresAt": 2**40, "iceServers": []}
        elif kind == "room.join":
            ROOMS[body["roomId"]].add(ws)
            joined.add(body["roomId"])
            result = {"roomId": body["roomId"], "lastSeq": SEQ[body["roomId"]], "replayed": 0}
        elif kind == "chat.send":
            room = body["roomId"]
            SEQ[room] += 1
            now = datetime.now(UTC).isoformat()
            message = {"id": f"{room}:{SEQ[room]}", "roomId": room, "seq": SEQ[room]}
            message.update(senderId="", clientMsgId=body["clientMsgId"], body=body["body"])
            out = frame("chat.message", {"roomId": room, "message": message | {"createdAt": now}})
            for member in list(ROOMS[room]):
                if not member.closed:
                    await member.send_str(out)
            result = {"messageId": message["id"], "seq": SEQ[room], "createdAt": now}
        await ws.send_str(frame("ack", {"result": result}, rid))
    for room in joined:
        ROOMS[room].discard(ws)
    return ws


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/v1/ws", endpoint)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)
