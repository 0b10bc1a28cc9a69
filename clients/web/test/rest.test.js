// ApiClient against a fake fetch: refresh-token rotation (one request for concurrent
// callers), a stale access token cured by one refresh, tokens another tab rotated, the
// session ending when the refresh token is refused, and problem documents as ApiError.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ApiError, NetworkError, SessionEndedError } from '../src/sdk/errors.js';
import { ApiClient, memoryStore } from '../src/sdk/rest.js';

/**
 * @param {number} status
 * @param {unknown} body
 */
function reply(status, body) {
  return new Response(body === null ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}

/** A fake /v1 that rotates refresh tokens like the server does. */
function fakeApi() {
  const state = { generation: 1, refreshes: 0, now: 1_000_000, refuseRefresh: false };
  /** @type {{method: string, path: string, auth: string | null}[]} */
  const calls = [];
  /** @param {number} generation */
  const pair = (generation) => ({
    accessToken: `a${generation}`,
    refreshToken: `r${generation}`,
    accessTokenExpiresAt: state.now + 900,
    sessionId: 's1',
    user: { id: 'u1', username: 'alice', displayName: 'alice' },
  });
  /** @type {typeof fetch} */
  const fetchImpl = async (input, init = {}) => {
    const url = new URL(String(input), 'http://x');
    const headers = /** @type {Record<string, string>} */ (init.headers ?? {});
    const auth = headers.Authorization ?? null;
    calls.push({ method: init.method ?? 'GET', path: url.pathname, auth });
    if (url.pathname === '/v1/auth/login') return reply(200, pair(state.generation));
    if (url.pathname === '/v1/auth/refresh') {
      state.refreshes += 1;
      const { refreshToken } = JSON.parse(String(init.body));
      if (state.refuseRefresh || refreshToken !== `r${state.generation}`) {
        return reply(401, { code: 'refresh_token_reused', detail: 'reused', status: 401 });
      }
      state.generation += 1;
      return reply(200, pair(state.generation));
    }
    if (url.pathname === '/v1/rooms') {
      if (auth !== `Bearer a${state.generation}`) return reply(401, { code: 'token_expired', detail: 'expired' });
      return reply(200, { rooms: [] });
    }
    if (url.pathname === '/v1/rooms/missing/join') {
      return reply(404, { code: 'room_not_found', detail: 'Room not found', status: 404, retryable: false, requestId: 'q1' });
    }
    return reply(404, { code: 'route_not_found', detail: 'no route' });
  };
  return { state, calls, fetchImpl };
}

test('a stale access token is cured by one refresh, and the refresh token rotates', async () => {
  const { state, calls, fetchImpl } = fakeApi();
  const store = memoryStore();
  const api = new ApiClient({ fetch: fetchImpl, store, now: () => state.now * 1000 });
  await api.login({ username: 'alice', password: 'pw' });
  assert.deepEqual(await api.rooms(), []);
  // Expire the access token by the clock: the next call refreshes first.
  state.now += 900;
  assert.deepEqual(await api.rooms(), []);
  assert.equal(state.refreshes, 1);
  assert.equal(store.load()?.refreshToken, 'r2', 'the rotated refresh token is stored');
  assert.equal(calls.at(-1)?.auth, 'Bearer a2');
});

test('concurrent callers share one refresh', async () => {
  const { state, fetchImpl } = fakeApi();
  const api = new ApiClient({ fetch: fetchImpl, now: () => state.now * 1000 });
  await api.login({ username: 'alice', password: 'pw' });
  state.now += 2000;
  const tokens = await Promise.all([api.accessToken(), api.accessToken(), api.accessToken()]);
  assert.deepEqual(tokens, ['a2', 'a2', 'a2']);
  assert.equal(state.refreshes, 1);
});

test('tokens another tab rotated are taken over instead of refreshing again', async () => {
  const { state, fetchImpl } = fakeApi();
  const store = memoryStore();
  const api = new ApiClient({ fetch: fetchImpl, store, now: () => state.now * 1000 });
  await api.login({ username: 'alice', password: 'pw' });
  const other = new ApiClient({ fetch: fetchImpl, store, now: () => state.now * 1000 });
  await other.refresh();
  assert.equal(state.refreshes, 1);
  // This tab still holds r1, which the server would now call reused.
  assert.equal(await api.accessToken({ force: true }), 'a2');
  assert.equal(state.refreshes, 1);
});

test('a refused refresh token ends the session', async () => {
  const { state, fetchImpl } = fakeApi();
  const store = memoryStore();
  const api = new ApiClient({ fetch: fetchImpl, store, now: () => state.now * 1000 });
  await api.login({ username: 'alice', password: 'pw' });
  /** @type {SessionEndedError[]} */
  const ended = [];
  api.on('ended', (error) => ended.push(error));
  state.refuseRefresh = true;
  await assert.rejects(api.refresh(), (error) => error instanceof SessionEndedError && error.code === 'refresh_token_reused');
  assert.equal(ended.length, 1);
  assert.equal(store.load(), null);
  assert.equal(api.session, null);
});

test('problem documents become ApiError; a failed fetch is a NetworkError', async () => {
  const { state, fetchImpl } = fakeApi();
  const api = new ApiClient({ fetch: fetchImpl, now: () => state.now * 1000 });
  await api.login({ username: 'alice', password: 'pw' });
  await assert.rejects(api.joinRoom('missing'), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 404);
    assert.equal(error.code, 'room_not_found');
    assert.equal(error.requestId, 'q1');
    return true;
  });
  const offline = new ApiClient({
    fetch: async () => {
      throw new TypeError('Failed to fetch');
    },
  });
  await assert.rejects(offline.login({ username: 'a', password: 'b' }), (error) => error instanceof NetworkError);
});
