// The REST API (`/v1`, protocol/openapi.json) and the signed-in session: access tokens are
// short-lived, so every call gets a fresh one through `accessToken()`, which rotates the
// refresh token when the access token is about to expire. Where the tokens are kept is
// the application's choice (a SessionStore); tabs sharing one store see each other's
// rotations, and the server's reuse grace covers two tabs refreshing at the same moment.

import { Emitter } from './emitter.js';
import { ApiError, NetworkError, SessionEndedError } from './errors.js';

/**
 * @typedef {object} StoredSession
 * @property {string} accessToken
 * @property {string} refreshToken
 * @property {number} accessTokenExpiresAt Unix seconds
 * @property {string} sessionId
 * @property {import('./types.js').User} user
 */

/**
 * @typedef {object} SessionStore
 * @property {() => StoredSession | null} load
 * @property {(session: StoredSession) => void} save
 * @property {() => void} clear
 */

/** @returns {SessionStore} a store that forgets everything when the page goes */
export function memoryStore() {
  /** @type {StoredSession | null} */
  let held = null;
  return {
    load: () => held,
    save: (session) => {
      held = session;
    },
    clear: () => {
      held = null;
    },
  };
}

/**
 * A store in `localStorage` (or any Storage): the session survives reloads and is shared
 * by the tabs of one origin.
 * @param {string} [key]
 * @param {Storage} [storage]
 * @returns {SessionStore}
 */
export function webStorageStore(key = 'boltorezka.session', storage = globalThis.localStorage) {
  return {
    load() {
      const text = storage.getItem(key);
      if (!text) return null;
      try {
        const parsed = JSON.parse(text);
        return parsed && typeof parsed.refreshToken === 'string' ? parsed : null;
      } catch {
        return null;
      }
    },
    save(session) {
      storage.setItem(key, JSON.stringify(session));
    },
    clear() {
      storage.removeItem(key);
    },
  };
}

/** Refresh answers that end the session: signing in again is the only way on. */
const SESSION_OVER = new Set(['invalid_refresh_token', 'refresh_token_reused', 'session_revoked', 'unauthenticated']);
/** Answers to a call made with an access token that a refresh can cure. */
const STALE_TOKEN = new Set(['token_expired', 'invalid_token']);

/**
 * @typedef {object} ApiEvents
 * @property {StoredSession | null} session the session changed (signed in, rotated, signed out)
 * @property {SessionEndedError} ended the session ended without `logout()`
 */

/**
 * @typedef {object} ApiOptions
 * @property {string} [baseUrl] '' for the page's own origin
 * @property {SessionStore} [store]
 * @property {string} [deviceName] shown in the user's list of device sessions
 * @property {typeof fetch} [fetch]
 * @property {() => number} [now] milliseconds
 * @property {number} [refreshMarginSeconds] refresh when the access token has less left
 */

/**
 * @typedef {object} RequestOptions
 * @property {unknown} [body] sent as JSON
 * @property {Record<string, string | number | undefined | null>} [query]
 * @property {boolean} [auth] send the access token (default true)
 */

/** @extends {Emitter<ApiEvents>} */
export class ApiClient extends Emitter {
  /** @param {ApiOptions} [options] */
  constructor({
    baseUrl = '',
    store = memoryStore(),
    deviceName = '',
    fetch: fetchImpl = globalThis.fetch.bind(globalThis),
    now = () => Date.now(),
    refreshMarginSeconds = 60,
  } = {}) {
    super();
    this.baseUrl = baseUrl.replace(/\/$/, '');
    this.store = store;
    this.deviceName = deviceName;
    this._fetch = fetchImpl;
    this._now = now;
    this._margin = refreshMarginSeconds;
    /** @type {StoredSession | null} */
    this._session = store.load();
    /** @type {Promise<StoredSession> | null} */
    this._refreshing = null;
  }

  /** @returns {StoredSession | null} */
  get session() {
    return this._session;
  }

  /** @returns {import('./types.js').User | null} */
  get user() {
    return this._session?.user ?? null;
  }

  // --- accounts -------------------------------------------------------------------------

  /**
   * Create an account; this signs in on this device as well.
   * @param {{username: string, password: string, displayName?: string}} account
   */
  async register({ username, password, displayName }) {
    /** @type {Record<string, string>} */
    const body = { username, password, deviceName: this.deviceName };
    if (displayName) body.displayName = displayName;
    const pair = await this.request('POST', '/v1/auth/register', { body, auth: false });
    return this._adopt(pair);
  }

  /** @param {{username: string, password: string}} credentials */
  async login({ username, password }) {
    const pair = await this.request('POST', '/v1/auth/login', {
      body: { username, password, deviceName: this.deviceName },
      auth: false,
    });
    return this._adopt(pair);
  }

  /** Revoke this device session (its sockets close with 4004) and forget the tokens. */
  async logout() {
    try {
      if (this._session) await this.request('POST', '/v1/auth/logout');
    } catch {
      // Signing out must work offline too; the session then simply expires.
    } finally {
      this._forget();
    }
  }

  /**
   * Change the password. This device stays signed in; every other device session is
   * revoked (its sockets close with 4004). ApiError `wrong_password` (403) when
   * `currentPassword` is not right.
   * @param {{currentPassword: string, newPassword: string}} change
   * @returns {Promise<{sessionsRevoked: number}>}
   */
  changePassword({ currentPassword, newPassword }) {
    return this.request('POST', '/v1/me/password', { body: { currentPassword, newPassword } });
  }

  /**
   * Delete the account for good: every session ends, so the tokens are forgotten too.
   * Messages stay, shown as from a deleted user. ApiError `owner_must_transfer` (409)
   * while the account owns a room, `wrong_password` (403) for a wrong password.
   * @param {string} password
   * @returns {Promise<void>}
   */
  async deleteAccount(password) {
    await this.request('DELETE', '/v1/me', { body: { password } });
    this._forget();
  }

  /**
   * Set a new password with the one-time token an operator gave out; every device
   * session of the account ends, so sign in again afterwards. ApiError
   * `invalid_reset_token`, `reset_token_expired` or `reset_token_used` (401).
   * @param {{token: string, newPassword: string}} reset
   * @returns {Promise<void>}
   */
  async resetPassword({ token, newPassword }) {
    await this.request('POST', '/v1/auth/password-reset', {
      body: { token, newPassword },
      auth: false,
    });
  }

  /**
   * A usable access token, rotating the refresh token first if it is about to expire.
   * @param {{force?: boolean}} [options] force: the server refused the current one
   * @returns {Promise<string>}
   */
  async accessToken({ force = false } = {}) {
    const session = this._session;
    if (session === null) throw new SessionEndedError('unauthenticated', 'not signed in');
    if (!force && session.accessTokenExpiresAt - this._margin > this._now() / 1000) {
      return session.accessToken;
    }
    return (await this.refresh(force ? session.accessToken : null)).accessToken;
  }

  /**
   * Rotate the refresh token. Concurrent callers share one request.
   * @param {string | null} [rejected] an access token the server refused
   * @returns {Promise<StoredSession>}
   */
  refresh(rejected = null) {
    if (this._refreshing === null) {
      this._refreshing = this._refresh(rejected).finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  /** @param {string | null} rejected */
  async _refresh(rejected) {
    const held = this._session;
    // Another tab may have rotated already: its tokens are in the shared store.
    const stored = this.store.load();
    if (stored && held && stored.refreshToken !== held.refreshToken && stored.sessionId === held.sessionId) {
      this._session = stored;
      if (stored.accessToken !== rejected && stored.accessTokenExpiresAt - this._margin > this._now() / 1000) {
        this.emit('session', stored);
        return stored;
      }
    }
    const current = this._session;
    if (current === null) throw new SessionEndedError('unauthenticated', 'not signed in');
    try {
      const pair = await this.request('POST', '/v1/auth/refresh', {
        body: { refreshToken: current.refreshToken },
        auth: false,
      });
      return this._adopt(pair);
    } catch (error) {
      if (error instanceof ApiError && SESSION_OVER.has(error.code)) {
        const ended = new SessionEndedError(error.code, 'Your session has ended. Please sign in again.');
        this._forget();
        this.emit('ended', ended);
        throw ended;
      }
      throw error;
    }
  }

  /** @param {any} pair @returns {StoredSession} */
  _adopt(pair) {
    /** @type {StoredSession} */
    const session = {
      accessToken: pair.accessToken,
      refreshToken: pair.refreshToken,
      accessTokenExpiresAt: pair.accessTokenExpiresAt,
      sessionId: pair.sessionId,
      user: pair.user,
    };
    this._session = session;
    this.store.save(session);
    this.emit('session', session);
    return session;
  }

  _forget() {
    this._session = null;
    this.store.clear();
    this.emit('session', null);
  }

  /** Take over a session another tab stored (call from a `storage` event). */
  reloadSession() {
    const stored = this.store.load();
    const changed = stored?.refreshToken !== this._session?.refreshToken;
    this._session = stored;
    if (changed) this.emit('session', stored);
  }

  // --- transport ------------------------------------------------------------------------

  /**
   * One API call; throws ApiError (problem document), NetworkError or SessionEndedError.
   * @param {string} method
   * @param {string} path
   * @param {RequestOptions} [options]
   * @returns {Promise<any>}
   */
  async request(method, path, { body, query, auth = true } = {}) {
    let url = this.baseUrl + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(query)) {
        if (value !== undefined && value !== null) params.set(key, String(value));
      }
      const text = params.toString();
      if (text) url += `?${text}`;
    }
    let token = auth ? await this.accessToken() : null;
    for (let attempt = 0; ; attempt += 1) {
      /** @type {Record<string, string>} */
      const headers = { Accept: 'application/json' };
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      if (token) headers.Authorization = `Bearer ${token}`;
      let response;
      try {
        response = await this._fetch(url, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (error) {
        throw new NetworkError('The server cannot be reached. Check your connection.', error);
      }
      if (response.ok) {
        if (response.status === 204) return null;
        const text = await response.text();
        return text ? JSON.parse(text) : null;
      }
      const problem = await readProblem(response);
      if (auth && attempt === 0 && response.status === 401 && STALE_TOKEN.has(problem.code)) {
        token = await this.accessToken({ force: true });
        continue;
      }
      if (auth && response.status === 401 && (problem.code === 'session_revoked' || problem.code === 'unauthenticated')) {
        const ended = new SessionEndedError(problem.code, 'Your session has ended. Please sign in again.');
        this._forget();
        this.emit('ended', ended);
        throw ended;
      }
      throw new ApiError(response.status, problem);
    }
  }

  // --- endpoints ------------------------------------------------------------------------

  /** @returns {Promise<import('./types.js').User>} */
  me() {
    return this.request('GET', '/v1/me');
  }

  /** @param {string} userId @returns {Promise<import('./types.js').User>} */
  userProfile(userId) {
    return this.request('GET', `/v1/users/${encodeURIComponent(userId)}`);
  }

  /**
   * The user with exactly this username (compared case-insensitively); an ApiError with
   * code `user_not_found` when nobody has it.
   * @param {string} username
   * @returns {Promise<import('./types.js').User>}
   */
  findUser(username) {
    return this.request('GET', '/v1/users', { query: { username } });
  }

  /** @returns {Promise<import('./types.js').RoomSummary[]>} */
  async rooms() {
    return (await this.request('GET', '/v1/rooms')).rooms;
  }

  /**
   * @param {{name: string, kind?: 'public' | 'private', topic?: string}} room
   * @returns {Promise<import('./types.js').Room>}
   */
  async createRoom({ name, kind = 'public', topic = '' }) {
    return (await this.request('POST', '/v1/rooms', { body: { name, kind, topic } })).room;
  }

  /**
   * @param {{q?: string, limit?: number, cursor?: string | null}} [options]
   * @returns {Promise<{rooms: import('./types.js').Room[], nextCursor: string | null}>}
   */
  publicRooms({ q, limit = 50, cursor } = {}) {
    return this.request('GET', '/v1/rooms/public', { query: { q: q || undefined, limit, cursor } });
  }

  /** @param {string} roomId */
  joinRoom(roomId) {
    return this.request('POST', `/v1/rooms/${encodeURIComponent(roomId)}/join`);
  }

  /** @param {string} roomId */
  leaveRoom(roomId) {
    return this.request('POST', `/v1/rooms/${encodeURIComponent(roomId)}/leave`);
  }

  /** @param {string} roomId @returns {Promise<import('./types.js').Member[]>} */
  async members(roomId) {
    return (await this.request('GET', `/v1/rooms/${encodeURIComponent(roomId)}/members`)).members;
  }

  /**
   * A page of history in ascending seq; both bounds exclusive.
   * @param {string} roomId
   * @param {{before?: number, after?: number, limit?: number}} [range]
   * @returns {Promise<import('./types.js').MessagePage>}
   */
  history(roomId, { before, after, limit = 50 } = {}) {
    return this.request('GET', `/v1/rooms/${encodeURIComponent(roomId)}/messages`, {
      query: { before, after, limit },
    });
  }

  /**
   * @param {string} roomId
   * @param {number} seq
   * @returns {Promise<{roomId: string, seq: number, unreadCount: number}>}
   */
  markRead(roomId, seq) {
    return this.request('PUT', `/v1/rooms/${encodeURIComponent(roomId)}/read`, { body: { seq } });
  }

  /** @returns {Promise<{iceServers: import('./types.js').IceServer[], expiresAt: number}>} */
  turnCredentials() {
    return this.request('GET', '/v1/turn/credentials');
  }
}

/**
 * @param {Response} response
 * @returns {Promise<import('./types.js').Problem>}
 */
async function readProblem(response) {
  try {
    const problem = await response.json();
    if (problem && typeof problem.code === 'string') return problem;
  } catch {
    // Not problem JSON: a proxy's error page, say.
  }
  return {
    code: response.status >= 500 ? 'unavailable' : 'internal_error',
    detail: `The server answered ${response.status} ${response.statusText}`.trim(),
    retryable: response.status >= 500,
  };
}
