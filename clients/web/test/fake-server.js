// An in-process stand-in for the server's WebSocket, enough to drive RealtimeClient
// through connects, drops, resumes and gaps without a network. Its room.join follows
// protocol/README.md: replay after lastSeq, then the ack, then room.presence.

/** @typedef {{id: string, roomId: string, seq: number, senderId: string, clientMsgId: string, body: string, createdAt: string}} Msg */

export class FakeServer {
  constructor() {
    /** @type {FakeSocket[]} */
    this.sockets = [];
    /** @type {Map<string, Msg[]>} */
    this.rooms = new Map();
    /** @type {{type: string, payload: any, socket: FakeSocket}[]} */
    this.requests = [];
    /** Tokens that authenticate. @type {Set<string>} */
    this.validTokens = new Set(['good']);
    /** @type {(request: {type: string, requestId: string, payload: any}, socket: FakeSocket) => boolean} */
    this.intercept = () => false;
    this.answering = true;
    /** false: new sockets fail as if the network were down */
    this.accepting = true;
    this.heartbeatIntervalMs = 20_000;
    const server = this;
    /** A WebSocket class bound to this server, for RealtimeClient's `WebSocket` option. */
    this.WebSocket = class extends FakeSocket {
      /** @param {string} url */
      constructor(url) {
        super(server, url);
      }
    };
  }

  /** @param {string} roomId @param {string} body @param {{deliver?: boolean}} [options] */
  post(roomId, body, { deliver = true } = {}) {
    const list = this.rooms.get(roomId) ?? [];
    this.rooms.set(roomId, list);
    const seq = list.length + 1;
    /** @type {Msg} */
    const message = {
      id: `m-${roomId}-${seq}`,
      roomId,
      seq,
      senderId: 'u-other',
      clientMsgId: `c${seq}`,
      body,
      createdAt: new Date(0).toISOString(),
    };
    list.push(message);
    if (deliver) for (const socket of this.open()) if (socket.joined.has(roomId)) socket.event('chat.message', { roomId, message });
    return message;
  }

  open() {
    return this.sockets.filter((s) => s.readyState === 1);
  }

  /** @param {string} roomId @param {{after?: number, before?: number, limit?: number}} range */
  page(roomId, { after, before, limit = 50 }) {
    const all = (this.rooms.get(roomId) ?? []).filter(
      (m) => (after === undefined || m.seq > after) && (before === undefined || m.seq < before),
    );
    const messages = after !== undefined ? all.slice(0, limit) : all.slice(-limit);
    const hasMore = after !== undefined ? all.length > limit : all.length > messages.length;
    return { messages, hasMore };
  }

  /**
   * @param {FakeSocket} socket
   * @param {{type: string, requestId: string, payload: any}} request
   */
  handle(socket, request) {
    this.requests.push({ type: request.type, payload: request.payload, socket });
    if (this.intercept(request, socket) || !this.answering) return;
    const { type, requestId, payload } = request;
    switch (type) {
      case 'auth':
        if (!this.validTokens.has(payload.token)) {
          socket.nack(requestId, 'invalid_token', 'bad token');
          socket.serverClose(4001, 'auth_failed');
          return;
        }
        socket.ack(requestId, { userId: 'u-me', sessionId: 's-1', expiresAt: 2e9, iceServers: [] });
        return;
      case 'room.join': {
        const list = this.rooms.get(payload.roomId) ?? [];
        let last = list.length;
        let replayed = 0;
        if (payload.lastSeq !== undefined) {
          for (const message of list.slice(payload.lastSeq)) {
            socket.event('chat.message', { roomId: payload.roomId, message });
            replayed += 1;
          }
          last = Math.max(payload.lastSeq, list.length);
        }
        socket.joined.add(payload.roomId);
        socket.ack(requestId, { roomId: payload.roomId, lastSeq: last, replayed });
        socket.event('room.presence', { roomId: payload.roomId, members: [] });
        return;
      }
      case 'chat.history':
        socket.ack(requestId, { roomId: payload.roomId, ...this.page(payload.roomId, payload) });
        return;
      case 'chat.send': {
        const message = this.post(payload.roomId, payload.body);
        socket.ack(requestId, { messageId: message.id, seq: message.seq, createdAt: message.createdAt, duplicate: false });
        return;
      }
      case 'ping':
        socket.ack(requestId, { ts: payload.ts ?? null, serverTime: Date.now() });
        return;
      default:
        socket.ack(requestId, null);
    }
  }
}

export class FakeSocket {
  /** @param {FakeServer} server @param {string} url */
  constructor(server, url) {
    this.server = server;
    this.url = url;
    this.readyState = 0;
    /** @type {Set<string>} */
    this.joined = new Set();
    /** @type {((event: {data: string}) => void) | null} */
    this.onmessage = null;
    /** @type {((event: {code: number, reason: string}) => void) | null} */
    this.onclose = null;
    /** @type {(() => void) | null} */
    this.onerror = null;
    /** @type {{code?: number, reason?: string} | null} */
    this.closedByClient = null;
    server.sockets.push(this);
    setTimeout(() => {
      if (this.readyState !== 0) return;
      if (!server.accepting) {
        this.readyState = 3;
        this.onclose?.({ code: 1006, reason: '' });
        return;
      }
      this.readyState = 1;
      this.event('server.capabilities', {
        protocolVersions: [1],
        features: [],
        limits: { maxFrameBytes: 65536, rates: {} },
        heartbeatIntervalMs: server.heartbeatIntervalMs,
        nodeId: 'n1',
        sessionId: 'ws-1',
        resumeWindowSeconds: 3600,
      });
    }, 0);
  }

  /** @param {string} text */
  send(text) {
    if (this.readyState !== 1) throw new Error('not open');
    const request = JSON.parse(text);
    queueMicrotask(() => this.server.handle(this, request));
  }

  /** @param {number} [code] @param {string} [reason] */
  close(code, reason) {
    if (this.readyState >= 2) return;
    this.closedByClient = { code, reason };
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code: code ?? 1005, reason: reason ?? '' }), 0);
  }

  /** @param {string} type @param {any} payload */
  event(type, payload) {
    if (this.readyState !== 1) return;
    const text = JSON.stringify({ v: 1, type, payload });
    this.onmessage?.({ data: text });
  }

  /** @param {string} requestId @param {any} result */
  ack(requestId, result) {
    if (this.readyState !== 1) return;
    this.onmessage?.({ data: JSON.stringify({ v: 1, type: 'ack', requestId, payload: { result } }) });
  }

  /** @param {string} requestId @param {string} code @param {string} message @param {{retryable?: boolean, retryAfterMs?: number | null, details?: any}} [extra] */
  nack(requestId, code, message, { retryable = false, retryAfterMs = null, details = null } = {}) {
    if (this.readyState !== 1) return;
    const payload = { code, message, retryable, retryAfterMs, details };
    this.onmessage?.({ data: JSON.stringify({ v: 1, type: 'nack', requestId, payload }) });
  }

  /** The server closes (a close frame arrives). @param {number} code @param {string} reason */
  serverClose(code, reason) {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }

  /** The network dies: no close frame, the browser reports 1006 (eventually). */
  drop() {
    this.serverClose(1006, '');
  }
}

/**
 * Wait until `predicate` holds, polling; fail after `timeoutMs`.
 * @param {() => boolean} predicate
 * @param {number} [timeoutMs]
 * @param {string} [what]
 */
export async function until(predicate, timeoutMs = 3000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
