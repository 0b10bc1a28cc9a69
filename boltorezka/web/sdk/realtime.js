// The realtime WebSocket (`/v1/ws`, protocol/README.md), kept alive for the application:
// every request is matched to its ack or nack by requestId (with a timeout), an idle
// socket is probed with `ping`, a lost one is replaced with exponential backoff and full
// jitter, and every room that was open is resumed from the last seq it holds. Messages
// reach the application through one SeqGate per room: in order and exactly once, with a
// hole filled from history (REST when the application passes `fetchHistory`) before
// anything after it. clients/python/boltorezka_client/client.py does the same in Python.

import { backoffDelay } from './backoff.js';
import { DEFAULT_MAX_FRAME_BYTES, decodeServerFrame, encodeClientMessage } from './codec.js';
import { Emitter } from './emitter.js';
import { ConnectionLostError, NackError, RequestTimeoutError, SessionEndedError } from './errors.js';
import { SeqGate } from './seqgate.js';

/** Closes after which reconnecting cannot help (protocol/README.md, "Close codes"). */
export const FINAL_CLOSE_CODES = Object.freeze(new Set([1000, 4004, 4005]));
/** Auth answers that a fresh access token can cure. */
const STALE_TOKEN = new Set(['invalid_token', 'token_expired']);
/** Auth answers that end the session. */
const SESSION_OVER = new Set(['session_revoked', 'unauthenticated']);
/** What the client reports for a socket it gave up on without a close frame. */
const ABANDONED = 1006;
const HISTORY_PAGE = 200;

/**
 * @typedef {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} ConnectionState
 */

/**
 * @typedef {object} TokenOptions
 * @property {boolean} [force] the server refused the last token: get a new one
 */

/**
 * @typedef {(roomId: string, range: {after: number, before: number, limit: number}) =>
 *   Promise<import('./types.js').MessagePage>} HistoryFetcher
 */

/**
 * @typedef {object} RealtimeOptions
 * @property {string} [url] default: `/v1/ws` on the page's own origin
 * @property {string | ((options: TokenOptions) => Promise<string>)} token the access token,
 *   or where to get one (called again with `force` when the server refuses it)
 * @property {HistoryFetcher} [fetchHistory] where gaps are filled from (default:
 *   `chat.history` on the socket)
 * @property {{new (url: string): WebSocket}} [WebSocket]
 * @property {number} [requestTimeoutMs]
 * @property {number} [connectTimeoutMs] for the greeting and the auth answer
 * @property {number} [backoffInitialMs]
 * @property {number} [backoffMaxMs]
 * @property {number} [maxReconnectAttempts] give up after this many failures in a row
 * @property {number} [heartbeatIntervalMs] default: what the server announces
 * @property {() => number} [random]
 */

/**
 * @typedef {object} RealtimeEvents
 * @property {{state: ConnectionState, attempt: number, delayMs: number}} state
 * @property {import('./types.js').Capabilities} capabilities
 * @property {{result: import('./types.js').AuthResult, reconnected: boolean}} authenticated
 * @property {{roomId: string, lastSeq: number, replayed: number, resumed: boolean}} joined
 * @property {{roomId: string}} reset a room's resume point was refused; its messages start over
 * @property {{roomId: string, message: import('./types.js').Message}} message in seq order, once each
 * @property {{roomId: string, message: import('./types.js').Message}} edited
 * @property {{roomId: string, messageId: string, seq: number}} deleted
 * @property {{roomId: string, userId: string, seq: number}} read
 * @property {{roomId: string, userId: string, active: boolean}} typing
 * @property {{userId: string, status: import('./types.js').ObservedPresence}} presence
 * @property {{roomId: string, members: {userId: string, status: import('./types.js').ObservedPresence}[]}} room-presence
 * @property {{roomId: string, userId: string}} member-joined
 * @property {{roomId: string, userId: string}} member-left
 * @property {{roomId: string, kind: 'unread' | 'mention', unreadCount: number, seq: number, messageId?: string}} notification
 * @property {{roomId: string, kind: string, name: string, topic: string, archived: boolean}} room-updated
 * @property {{roomId: string}} room-deleted
 * @property {import('./types.js').CallState} call-state
 * @property {{type: 'rtc.offer' | 'rtc.answer' | 'rtc.ice', payload: any}} rtc
 * @property {{reconnectAfterMs: number}} draining
 * @property {{code: string, message: string}} server-error
 * @property {{roomId: string, after: number, before: number, error: unknown}} gap-failed
 * @property {{closeCode: number | null, reason: string, error: Error | null}} closed final: no more reconnects
 * @property {import('./codec.js').ServerFrame} frame every frame received
 */

/** @template T */
class Deferred {
  constructor() {
    /** @type {(value: T) => void} */
    this.resolve = () => {};
    /** @type {(error: unknown) => void} */
    this.reject = () => {};
    /** @type {Promise<T>} */
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }
}

/** A Deferred whose rejection nobody has to observe. @returns {Deferred<void>} */
function openedDeferred() {
  /** @type {Deferred<void>} */
  const deferred = new Deferred();
  deferred.promise.catch(() => {});
  return deferred;
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * @typedef {object} Pending
 * @property {string} type
 * @property {(result: any) => void} resolve
 * @property {(error: unknown) => void} reject
 * @property {ReturnType<typeof setTimeout>} timer
 */

/** One socket, from open to close. */
class Link {
  /**
   * @param {WebSocket} ws
   * @param {(link: Link, text: string) => void} onText
   * @param {(link: Link) => void} onFinish called before anything waiting on the socket
   *   learns that it closed
   */
  constructor(ws, onText, onFinish) {
    this.ws = ws;
    this._onFinish = onFinish;
    /** @type {Map<string, Pending>} */
    this.pending = new Map();
    this.lastReceived = Date.now();
    this.maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
    /** @type {Deferred<import('./types.js').Capabilities>} */
    this.greeting = new Deferred();
    /** @type {Deferred<{code: number, reason: string}>} */
    this.closed = new Deferred();
    this.done = false;
    this.greeting.promise.catch(() => {});
    ws.onmessage = (event) => {
      this.lastReceived = Date.now();
      if (typeof event.data === 'string') onText(this, event.data);
    };
    ws.onclose = (event) => this.finish(event.code, event.reason);
    // An error is always followed by a close event; the close carries what is known.
    ws.onerror = () => {};
  }

  /** @param {number} code @param {string} reason */
  finish(code, reason) {
    if (this.done) return;
    this.done = true;
    this.ws.onmessage = null;
    this.ws.onclose = null;
    this._onFinish(this);
    const lost = new ConnectionLostError(code, reason);
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(lost);
    }
    this.pending.clear();
    this.greeting.reject(lost);
    this.closed.resolve({ code, reason });
  }

  /**
   * Give up on the socket now, without waiting for a close handshake that a dead
   * network would never complete.
   * @param {number} code reported as the close code
   * @param {string} reason
   */
  abandon(code, reason) {
    try {
      this.ws.close(4000, reason.slice(0, 100));
    } catch {
      // Already closing.
    }
    this.finish(code, reason);
  }

  /**
   * @param {string} requestId
   * @param {string} type
   * @param {Record<string, unknown>} payload
   * @param {number} timeoutMs
   * @returns {Promise<any>}
   */
  request(requestId, type, payload, timeoutMs) {
    if (this.done || this.ws.readyState !== 1) return Promise.reject(new ConnectionLostError());
    let text;
    try {
      text = encodeClientMessage({ type, requestId, payload }, { maxFrameBytes: this.maxFrameBytes });
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new RequestTimeoutError(type, timeoutMs));
      }, timeoutMs);
      this.pending.set(requestId, { type, resolve, reject, timer });
      try {
        this.ws.send(text);
      } catch (error) {
        clearTimeout(timer);
        this.pending.delete(requestId);
        reject(new ConnectionLostError());
      }
    });
  }

  /** @param {import('./codec.js').ServerFrame} frame */
  answer(frame) {
    const pending = frame.requestId === null ? undefined : this.pending.get(frame.requestId);
    if (pending === undefined) {
      if (frame.type === 'nack' && frame.requestId === null) {
        console.warn('the server could not read a frame', frame.payload);
      }
      return;
    }
    this.pending.delete(/** @type {string} */ (frame.requestId));
    clearTimeout(pending.timer);
    if (frame.type === 'ack') pending.resolve(frame.payload.result ?? null);
    else pending.reject(new NackError(pending.type, frame.payload));
  }
}

/**
 * @typedef {object} RoomState
 * @property {string} id
 * @property {SeqGate<import('./types.js').Message>} gate
 * @property {number} gapFailures
 * @property {string} lastGap
 * @property {Deferred<any> | null} waiting a join asked for while offline
 */

/** @extends {Emitter<RealtimeEvents>} */
export class RealtimeClient extends Emitter {
  /** @param {RealtimeOptions} options */
  constructor(options) {
    super();
    this.url = options.url ?? defaultUrl();
    const token = options.token;
    /** @type {(options: TokenOptions) => Promise<string>} */
    this._token = typeof token === 'string' ? async () => token : token;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.backoffInitialMs = options.backoffInitialMs ?? 250;
    this.backoffMaxMs = options.backoffMaxMs ?? 10_000;
    this.maxReconnectAttempts = options.maxReconnectAttempts ?? Infinity;
    this._heartbeatOverride = options.heartbeatIntervalMs ?? null;
    this._random = options.random ?? Math.random;
    /** @type {HistoryFetcher} */
    this._fetchHistory =
      options.fetchHistory ??
      (async (roomId, range) => {
        const result = await this.request('chat.history', { roomId, ...range });
        return { messages: result.messages, hasMore: result.hasMore };
      });

    /** @type {ConnectionState} */
    this.state = 'idle';
    /** @type {import('./types.js').Capabilities | null} */
    this.capabilities = null;
    /** @type {import('./types.js').AuthResult | null} */
    this.auth = null;
    /** @type {Map<string, RoomState>} */
    this._rooms = new Map();
    /** @type {Link | null} */
    this._link = null;
    this._ids = 0;
    this._stopped = false;
    this._connects = 0;
    /** How many times a gap had to be filled from history (for diagnostics and tests). */
    this.gapsFilled = 0;
    this._opened = openedDeferred();
    /** @type {number | null} */
    this._drainDelayMs = null;
    /** @type {(() => void) | null} */
    this._wake = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this._heartbeat = null;
    /** @type {Promise<void> | null} */
    this._running = null;
  }

  /** @returns {string | null} */
  get userId() {
    return this.auth?.userId ?? null;
  }

  /**
   * Connect (and keep reconnecting). Resolves once authenticated; rejects only if the
   * connection can never succeed (the session ended, or the attempts ran out).
   * @returns {Promise<import('./types.js').AuthResult>}
   */
  async connect() {
    if (this._running === null) {
      this._stopped = false;
      this._running = this._supervise();
    }
    await this._opened.promise;
    return /** @type {import('./types.js').AuthResult} */ (this.auth);
  }

  /** Close for good: no reconnect. Pending requests fail with ConnectionLostError. */
  close() {
    this._stopped = true;
    this._wake?.();
    const link = this._link;
    if (link !== null) {
      try {
        link.ws.close(1000, 'closed by the client');
      } catch {
        // Already closing.
      }
      link.finish(1000, 'closed by the client');
    }
  }

  /** Replace the socket now (a network change, or the user asked), resuming every room. */
  reconnect() {
    this._wake?.();
    this._link?.abandon(ABANDONED, 'reconnect requested');
  }

  // --- the connection loop --------------------------------------------------------------

  async _supervise() {
    let failures = 0;
    let forceToken = false;
    let authRetried = false;
    /** @type {{code: number | null, reason: string, error: Error | null}} */
    let final = { code: null, reason: '', error: null };
    for (;;) {
      if (this._stopped) break;
      /** @type {{code: number, reason: string} | null} */
      let closedWith = null;
      let delayMs = 0;
      try {
        const link = await this._open(forceToken);
        forceToken = false;
        authRetried = false;
        failures = 0;
        closedWith = await link.closed.promise;
      } catch (error) {
        if (error instanceof SessionEndedError) {
          final = { code: null, reason: error.code, error };
          break;
        }
        if (error instanceof NackError && STALE_TOKEN.has(error.code) && !authRetried) {
          // The token was refused: one more try at once with a fresh one.
          forceToken = true;
          authRetried = true;
          continue;
        }
        if (error instanceof NackError && (SESSION_OVER.has(error.code) || STALE_TOKEN.has(error.code))) {
          final = { code: 4001, reason: error.code, error };
          break;
        }
        failures += 1;
      }
      this._stopHeartbeat();
      if (this._stopped) break;
      if (closedWith !== null) {
        if (FINAL_CLOSE_CODES.has(closedWith.code)) {
          final = { code: closedWith.code, reason: closedWith.reason, error: null };
          break;
        }
        if (closedWith.code === 4001 || closedWith.code === 4003) forceToken = true;
        if (closedWith.code === 1012) delayMs = (this._drainDelayMs ?? 0) + this._random() * 1000;
        else if (closedWith.code === 4009 || closedWith.code === 4003) delayMs = 0;
        else delayMs = backoffDelay(0, { initialMs: this.backoffInitialMs, random: this._random });
      } else {
        if (failures > this.maxReconnectAttempts) {
          final = { code: null, reason: 'gave up reconnecting', error: new ConnectionLostError() };
          break;
        }
        delayMs = backoffDelay(failures - 1, {
          initialMs: this.backoffInitialMs,
          maxMs: this.backoffMaxMs,
          random: this._random,
        });
      }
      this._drainDelayMs = null;
      this._setState('reconnecting', failures, delayMs);
      await this._pause(delayMs);
    }
    this._link = null;
    this._running = null;
    this._setState('closed', 0, 0);
    const error = final.error ?? new ConnectionLostError(final.code, final.reason);
    this._opened.reject(error);
    this._opened = openedDeferred();
    for (const room of this._rooms.values()) {
      room.waiting?.reject(error);
      room.waiting = null;
    }
    this.emit('closed', { closeCode: final.code, reason: final.reason, error: final.error });
  }

  /** @param {number} ms */
  _pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve(undefined);
      }
      this._wake = () => {
        this._wake = null;
        done();
      };
    });
  }

  /**
   * @param {ConnectionState} state
   * @param {number} attempt
   * @param {number} delayMs
   */
  _setState(state, attempt, delayMs) {
    this.state = state;
    this.emit('state', { state, attempt, delayMs });
  }

  /**
   * Open a socket, read the greeting, authenticate and resume the rooms.
   * @param {boolean} forceToken
   * @returns {Promise<Link>}
   */
  async _open(forceToken) {
    const reconnected = this._connects > 0;
    if (!reconnected || this.state === 'idle') this._setState('connecting', 0, 0);
    const ws = new this._WebSocket(this.url);
    const link = new Link(
      ws,
      (from, text) => this._onText(from, text),
      (from) => this._onLinkFinished(from),
    );
    this._link = link;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    try {
      const deadline = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new ConnectionLostError(null, 'no greeting from the server')), this.connectTimeoutMs);
      });
      const capabilities = await Promise.race([link.greeting.promise, deadline]);
      clearTimeout(timer);
      this.capabilities = capabilities;
      link.maxFrameBytes = capabilities.limits?.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
      this.emit('capabilities', capabilities);
      const token = await this._token({ force: forceToken });
      /** @type {import('./types.js').AuthResult} */
      const result = await link.request(this._nextId(), 'auth', { token }, this.connectTimeoutMs);
      this.auth = result;
    } catch (error) {
      clearTimeout(timer);
      link.abandon(ABANDONED, 'connection attempt failed');
      throw error;
    }
    this._connects += 1;
    this._setState('open', 0, 0);
    this._startHeartbeat(link);
    this.emit('authenticated', { result: this.auth, reconnected });
    this._opened.resolve();
    for (const room of this._rooms.values()) {
      this._sendJoin(room, reconnected).catch(() => {
        // A join that fails on a socket that closed is retried on the next one; others
        // (the room is gone) are reported through the room's own join promise.
      });
    }
    return link;
  }

  /** @param {Link} link */
  _onLinkFinished(link) {
    if (link !== this._link || this.state !== 'open') return;
    // Synchronously, so that a request failing with this socket waits for the next one.
    this._stopHeartbeat();
    this._opened = openedDeferred();
    this._setState('reconnecting', 0, 0);
  }

  _nextId() {
    this._ids += 1;
    return `r${this._ids}`;
  }

  /** @param {Link} link */
  _startHeartbeat(link) {
    this._stopHeartbeat();
    const interval = this._heartbeatOverride ?? Math.max(1000, this.capabilities?.heartbeatIntervalMs ?? 20_000);
    let probing = false;
    this._heartbeat = setInterval(() => {
      if (link.done || probing || Date.now() - link.lastReceived < interval) return;
      probing = true;
      link
        .request(this._nextId(), 'ping', { ts: Date.now() }, interval)
        .catch((error) => {
          // Silence for a whole interval after a probe: the network is gone, even if the
          // browser has not noticed yet.
          if (error instanceof RequestTimeoutError) link.abandon(4010, 'heartbeat timeout');
        })
        .finally(() => {
          probing = false;
        });
    }, Math.min(1000, Math.max(20, interval / 4)));
  }

  _stopHeartbeat() {
    if (this._heartbeat !== null) clearInterval(this._heartbeat);
    this._heartbeat = null;
  }

  // --- requests -------------------------------------------------------------------------

  /**
   * Send a request and wait for its answer: the ack's `result`, or a NackError,
   * RequestTimeoutError, ConnectionLostError or ProtocolError (refused before sending).
   * @param {string} type
   * @param {Record<string, unknown>} [payload]
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<any>}
   */
  request(type, payload = {}, { timeoutMs } = {}) {
    const link = this._link;
    if (link === null || this.state !== 'open') return Promise.reject(new ConnectionLostError());
    return link.request(this._nextId(), type, payload, timeoutMs ?? this.requestTimeoutMs);
  }

  /**
   * Wait until the connection is open (for a request that must survive a reconnect).
   * @param {number} timeoutMs
   */
  async whenOpen(timeoutMs) {
    if (this.state === 'open') return;
    if (this._running === null) throw new ConnectionLostError(null, 'not connected');
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    try {
      await Promise.race([
        this._opened.promise,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new ConnectionLostError(null, 'still offline')), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Open a room's live view. With `lastSeq`, everything after it is delivered first
   * (the resume); without, delivery starts after the room's newest message. The room is
   * resumed after every reconnect until `leave`.
   * @param {string} roomId
   * @param {{lastSeq?: number}} [options]
   * @returns {Promise<{roomId: string, lastSeq: number, replayed: number}>}
   */
  async join(roomId, { lastSeq } = {}) {
    let room = this._rooms.get(roomId);
    if (room === undefined) {
      room = { id: roomId, gate: new SeqGate(lastSeq ?? null), gapFailures: 0, lastGap: '', waiting: null };
      this._rooms.set(roomId, room);
    }
    if (this.state === 'open') {
      try {
        return await this._sendJoin(room, false);
      } catch (error) {
        // Lost with the socket: the next connection joins it, and answers this call then.
        if (!(error instanceof ConnectionLostError) || this._rooms.get(roomId) !== room) throw error;
      }
    }
    room.waiting ??= new Deferred();
    return room.waiting.promise;
  }

  /** The last seq delivered for a room with nothing missing below it. @param {string} roomId */
  lastSeq(roomId) {
    return this._rooms.get(roomId)?.gate.lastSeq ?? null;
  }

  /**
   * @param {RoomState} room
   * @param {boolean} resumed
   * @returns {Promise<{roomId: string, lastSeq: number, replayed: number}>}
   */
  async _sendJoin(room, resumed) {
    /** @type {Record<string, unknown>} */
    const payload = { roomId: room.id };
    if (room.gate.lastSeq !== null) payload.lastSeq = room.gate.lastSeq;
    let result;
    try {
      result = await this.request('room.join', payload);
    } catch (error) {
      if (error instanceof NackError && error.code === 'validation_failed' && 'lastSeq' in payload) {
        // The room has fewer messages than we hold (restored from a backup, say): what we
        // hold is not this room's history any more, so start over without a resume point.
        room.gate = new SeqGate(null);
        this.emit('reset', { roomId: room.id });
        return this._sendJoin(room, resumed);
      }
      if (error instanceof RequestTimeoutError) {
        // Without this join the room would stay silent on this socket: start over.
        this._link?.abandon(ABANDONED, 'room.join got no answer');
        throw new ConnectionLostError(ABANDONED, 'room.join got no answer');
      }
      if (!(error instanceof ConnectionLostError)) {
        room.waiting?.reject(error);
        room.waiting = null;
        if (this._rooms.get(room.id) === room && error instanceof NackError) this._rooms.delete(room.id);
      }
      throw error;
    }
    if (this._rooms.get(room.id) === room) {
      this._apply(room, room.gate.advanceTo(result.lastSeq));
      this.emit('joined', { roomId: room.id, lastSeq: result.lastSeq, replayed: result.replayed, resumed });
    }
    room.waiting?.resolve(result);
    room.waiting = null;
    return result;
  }

  /** Close a room's live view; it is no longer resumed. @param {string} roomId */
  async leave(roomId) {
    const room = this._rooms.get(roomId);
    this._rooms.delete(roomId);
    room?.waiting?.reject(new ConnectionLostError(null, 'left'));
    if (this.state === 'open') {
      try {
        await this.request('room.leave', { roomId });
      } catch {
        // Leaving a view that is already gone is not an error worth showing.
      }
    }
  }

  /**
   * Post a message. Retried across reconnects and rate limits with the same
   * `clientMsgId`, which the server stores once whatever the number of tries.
   * @param {string} roomId
   * @param {string} body
   * @param {{clientMsgId?: string, replyTo?: string, attempts?: number, offlineTimeoutMs?: number}} [options]
   * @returns {Promise<import('./types.js').SendResult>}
   */
  async sendMessage(roomId, body, { clientMsgId = newId(), replyTo, attempts = 6, offlineTimeoutMs = 30_000 } = {}) {
    /** @type {Record<string, unknown>} */
    const payload = { roomId, clientMsgId, body };
    if (replyTo) payload.replyTo = replyTo;
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.request('chat.send', payload);
      } catch (error) {
        if (attempt >= attempts) throw error;
        if (error instanceof ConnectionLostError || error instanceof RequestTimeoutError) {
          await this.whenOpen(offlineTimeoutMs);
        } else if (error instanceof NackError && (error.code === 'rate_limited' || error.code === 'unavailable' || error.code === 'internal_error')) {
          await sleep(error.retryAfterMs ?? backoffDelay(attempt, { random: this._random }));
        } else {
          throw error;
        }
      }
    }
  }

  /** @param {string} roomId @param {string} messageId @param {string} body */
  async editMessage(roomId, messageId, body) {
    /** @type {{message: import('./types.js').Message}} */
    const result = await this.request('chat.edit', { roomId, messageId, body });
    return result.message;
  }

  /** @param {string} roomId @param {string} messageId */
  deleteMessage(roomId, messageId) {
    return this.request('chat.delete', { roomId, messageId });
  }

  /**
   * @param {string} roomId
   * @param {number} seq everything up to and including it has been read
   * @returns {Promise<{roomId: string, seq: number, unreadCount: number}>}
   */
  markRead(roomId, seq) {
    return this.request('chat.read', { roomId, seq });
  }

  /** @param {string} roomId @param {boolean} [active] */
  typing(roomId, active = true) {
    return this.request(active ? 'typing.start' : 'typing.stop', { roomId });
  }

  /** @param {import('./types.js').PresenceStatus} status */
  setPresence(status) {
    return this.request('presence.set', { status });
  }

  /**
   * @param {string} roomId
   * @param {{before?: number, after?: number, limit?: number}} [range]
   * @returns {Promise<{roomId: string, messages: import('./types.js').Message[], hasMore: boolean}>}
   */
  history(roomId, range = {}) {
    return this.request('chat.history', { roomId, ...range });
  }

  // --- incoming -------------------------------------------------------------------------

  /** @param {Link} link @param {string} text */
  _onText(link, text) {
    if (link !== this._link) return;
    let frame;
    try {
      frame = decodeServerFrame(text);
    } catch (error) {
      console.warn('ignoring an unreadable frame from the server', error);
      return;
    }
    this.emit('frame', frame);
    if (!frame.known) return; // a newer server's type: ignore, as the protocol asks
    const p = frame.payload;
    switch (frame.type) {
      case 'ack':
      case 'nack':
        link.answer(frame);
        return;
      case 'server.capabilities':
        link.greeting.resolve(p);
        return;
      case 'chat.message': {
        const room = this._rooms.get(p.roomId);
        if (room !== undefined) this._apply(room, room.gate.push(p.message));
        return;
      }
      case 'chat.edited':
        this.emit('edited', { roomId: p.roomId, message: p.message });
        return;
      case 'chat.deleted':
        this.emit('deleted', { roomId: p.roomId, messageId: p.messageId, seq: p.seq });
        return;
      case 'chat.read':
        this.emit('read', p);
        return;
      case 'typing':
        this.emit('typing', p);
        return;
      case 'presence.changed':
        this.emit('presence', p);
        return;
      case 'room.presence':
        this.emit('room-presence', p);
        return;
      case 'member.joined':
        this.emit('member-joined', p);
        return;
      case 'member.left':
        this.emit('member-left', p);
        return;
      case 'notification':
        this.emit('notification', p);
        return;
      case 'room.updated':
        this.emit('room-updated', p);
        return;
      case 'room.deleted':
        this._rooms.delete(p.roomId);
        this.emit('room-deleted', p);
        return;
      case 'call.state':
        this.emit('call-state', p);
        return;
      case 'rtc.offer':
      case 'rtc.answer':
      case 'rtc.ice':
        this.emit('rtc', { type: frame.type, payload: p });
        return;
      case 'auth.expiring':
        this._refreshAuth(link);
        return;
      case 'server.draining':
        this._drainDelayMs = p.reconnectAfterMs ?? 0;
        this.emit('draining', p);
        return;
      case 'error':
        this.emit('server-error', p);
        return;
      default:
    }
  }

  /** @param {Link} link */
  async _refreshAuth(link) {
    try {
      const token = await this._token({ force: true });
      if (link === this._link) await this.request('auth.refresh', { token });
    } catch {
      // The server closes with 4003 at expiry; the reconnect gets a token then.
    }
  }

  /**
   * @param {RoomState} room
   * @param {import('./seqgate.js').GateResult<import('./types.js').Message>} result
   */
  _apply(room, result) {
    for (const message of result.deliver) this.emit('message', { roomId: room.id, message });
    if (result.gap !== null) void this._fillGap(room, result.gap);
  }

  /**
   * @param {RoomState} room
   * @param {{after: number, before: number}} gap
   */
  async _fillGap(room, gap) {
    const key = `${gap.after}:${gap.before}`;
    // The same hole again right after a fill means history did not have it yet: wait.
    if (key === room.lastGap) await sleep(backoffDelay(room.gapFailures, { random: this._random }) + 50);
    room.lastGap = key;
    /** @type {import('./types.js').Message[]} */
    const found = [];
    try {
      let after = gap.after;
      for (;;) {
        const page = await this._fetchHistory(room.id, { after, before: gap.before, limit: HISTORY_PAGE });
        found.push(...page.messages);
        const last = page.messages.at(-1);
        if (!page.hasMore || last === undefined) break;
        after = last.seq;
      }
    } catch (error) {
      room.gapFailures += 1;
      this.emit('gap-failed', { roomId: room.id, after: gap.after, before: gap.before, error });
      await sleep(backoffDelay(room.gapFailures, { random: this._random, maxMs: 5000 }));
      if (this._rooms.get(room.id) === room) {
        const again = room.gate.retryGap();
        if (again !== null) void this._fillGap(room, again);
      }
      return;
    }
    if (this._rooms.get(room.id) !== room) return;
    room.gapFailures = 0;
    this.gapsFilled += 1;
    this._apply(room, room.gate.fill(found));
  }
}

function defaultUrl() {
  const where = globalThis.location;
  if (where === undefined) throw new Error('RealtimeClient needs a url outside a browser');
  return `${where.protocol === 'https:' ? 'wss' : 'ws'}://${where.host}/v1/ws`;
}

/** A random id for clientMsgId (UUID v4 where the platform has it). */
export function newId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}
