// RealtimeClient against an in-process fake server: acks and typed nacks, timeouts,
// resume by seq after a drop, gap fill from history, exactly-once in-order delivery, auth
// with a refreshed token, final closes, the heartbeat, and backoff.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { backoffDelay } from '../src/sdk/backoff.js';
import { ConnectionLostError, NackError, ProtocolError, RequestTimeoutError } from '../src/sdk/errors.js';
import { RealtimeClient } from '../src/sdk/realtime.js';
import { FakeServer, until } from './fake-server.js';

const ROOM = '0b5e3c1a-7d2f-4c8e-9a61-3f2d8e4b5c71';

/** @type {RealtimeClient[]} */
const clients = [];
afterEach(() => {
  for (const client of clients.splice(0)) client.close();
});

/**
 * @param {FakeServer} server
 * @param {Partial<import('../src/sdk/realtime.js').RealtimeOptions>} [options]
 */
function makeClient(server, options = {}) {
  const client = new RealtimeClient({
    url: 'ws://fake/v1/ws',
    token: 'good',
    // The fake's constructor takes the same argument as the browser's WebSocket.
    WebSocket: /** @type {any} */ (server.WebSocket),
    backoffInitialMs: 5,
    backoffMaxMs: 20,
    requestTimeoutMs: 500,
    ...options,
  });
  clients.push(client);
  /** @type {number[]} */
  const seen = [];
  client.on('message', ({ message }) => seen.push(message.seq));
  return { client, seen };
}

test('requests are matched to acks; nacks are typed; invalid requests never leave', async () => {
  const server = new FakeServer();
  server.intercept = (request, socket) => {
    if (request.type === 'chat.edit') {
      socket.nack(request.requestId, 'forbidden', 'only the sender may edit');
      return true;
    }
    return false;
  };
  const { client } = makeClient(server);
  const auth = await client.connect();
  assert.equal(auth.userId, 'u-me');
  assert.equal(client.state, 'open');
  const pong = await client.request('ping', { ts: 5 });
  assert.equal(pong.ts, 5);
  await assert.rejects(client.editMessage(ROOM, ROOM, 'x'), (error) => {
    assert.ok(error instanceof NackError);
    assert.equal(error.code, 'forbidden');
    assert.equal(error.requestType, 'chat.edit');
    return true;
  });
  const before = server.requests.length;
  await assert.rejects(client.request('chat.read', { roomId: 'not-a-uuid', seq: 1 }), (error) => {
    assert.ok(error instanceof ProtocolError);
    assert.equal(error.code, 'validation_failed');
    return true;
  });
  assert.equal(server.requests.length, before, 'a request the server would refuse is not sent');
});

test('a request with no answer times out', async () => {
  const server = new FakeServer();
  const { client } = makeClient(server, { requestTimeoutMs: 50 });
  await client.connect();
  server.answering = false;
  await assert.rejects(client.request('ping'), (error) => error instanceof RequestTimeoutError);
});

test('pending requests fail with ConnectionLostError when the socket drops', async () => {
  const server = new FakeServer();
  const { client } = makeClient(server);
  await client.connect();
  server.answering = false;
  const pending = client.request('ping');
  server.open()[0].drop();
  await assert.rejects(pending, (error) => error instanceof ConnectionLostError && error.closeCode === 1006);
});

test('resume after a drop: every missed message once, in order, from the last seq held', async () => {
  const server = new FakeServer();
  for (let i = 1; i <= 3; i += 1) server.post(ROOM, `before ${i}`);
  const { client, seen } = makeClient(server);
  await client.connect();
  await client.join(ROOM, { lastSeq: 1 });
  assert.deepEqual(seen, [2, 3], 'the join replays what came after lastSeq');
  server.post(ROOM, 'live 4');
  await until(() => seen.length === 3, 1000, 'live message');

  /** @type {string[]} */
  const states = [];
  client.on('state', ({ state }) => states.push(state));
  server.open()[0].drop();
  for (let i = 5; i <= 8; i += 1) server.post(ROOM, `while away ${i}`);
  await until(() => seen.length === 7, 2000, 'the replay');
  assert.deepEqual(seen, [2, 3, 4, 5, 6, 7, 8]);
  assert.ok(states.includes('reconnecting') && states.at(-1) === 'open', states.join());
  const joins = server.requests.filter((r) => r.type === 'room.join').map((r) => r.payload.lastSeq);
  assert.deepEqual(joins, [1, 4], 'resumed from the last seq it held');
  assert.equal(client.lastSeq(ROOM), 8);
});

test('a hole in live delivery is filled from history before anything after it', async () => {
  const server = new FakeServer();
  /** @type {{after: number, before: number, limit: number}[]} */
  const fetched = [];
  const { client, seen } = makeClient(server, {
    fetchHistory: async (roomId, range) => {
      fetched.push(range);
      return server.page(roomId, range);
    },
  });
  await client.connect();
  await client.join(ROOM, { lastSeq: 0 });
  server.post(ROOM, 'one');
  server.post(ROOM, 'two', { deliver: false });
  server.post(ROOM, 'three', { deliver: false });
  server.post(ROOM, 'four');
  server.post(ROOM, 'five');
  await until(() => seen.length === 5, 1000, 'gap fill');
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  assert.deepEqual(fetched, [{ after: 1, before: 4, limit: 200 }]);
  assert.equal(client.gapsFilled, 1);
});

test('long holes are fetched page by page while hasMore', async () => {
  const server = new FakeServer();
  const { client, seen } = makeClient(server, {
    fetchHistory: async (roomId, range) => server.page(roomId, { ...range, limit: 3 }),
  });
  await client.connect();
  await client.join(ROOM, { lastSeq: 0 });
  for (let i = 1; i <= 10; i += 1) server.post(ROOM, `m${i}`, { deliver: false });
  server.post(ROOM, 'eleven');
  await until(() => seen.length === 11, 1000, 'paged gap fill');
  assert.deepEqual(seen, Array.from({ length: 11 }, (_, i) => i + 1));
});

test('a failed fill is retried; nothing is delivered past the hole meanwhile', async () => {
  const server = new FakeServer();
  let calls = 0;
  /** @type {unknown[]} */
  const failures = [];
  const { client, seen } = makeClient(server, {
    fetchHistory: async (roomId, range) => {
      calls += 1;
      if (calls === 1) throw new Error('offline for a moment');
      return server.page(roomId, range);
    },
  });
  client.on('gap-failed', ({ error }) => failures.push(error));
  await client.connect();
  await client.join(ROOM, { lastSeq: 0 });
  server.post(ROOM, 'one', { deliver: false });
  server.post(ROOM, 'two');
  await until(() => failures.length === 1, 1000, 'first failure');
  assert.deepEqual(seen, []);
  await until(() => seen.length === 2, 3000, 'retried fill');
  assert.deepEqual(seen, [1, 2]);
});

test('duplicates from overlapping replays and live frames are dropped', async () => {
  const server = new FakeServer();
  const { client, seen } = makeClient(server);
  await client.connect();
  await client.join(ROOM, { lastSeq: 0 });
  const one = server.post(ROOM, 'one');
  await until(() => seen.length === 1);
  const socket = server.open()[0];
  socket.event('chat.message', { roomId: ROOM, message: one });
  server.post(ROOM, 'two');
  await until(() => seen.length === 2);
  socket.event('chat.message', { roomId: ROOM, message: one });
  assert.deepEqual(seen, [1, 2]);
});

test('a refused token is replaced once with a forced refresh', async () => {
  const server = new FakeServer();
  /** @type {boolean[]} */
  const asked = [];
  const { client } = makeClient(server, {
    token: async ({ force = false } = {}) => {
      asked.push(force);
      return force ? 'good' : 'stale';
    },
  });
  await client.connect();
  assert.deepEqual(asked, [false, true]);
});

test('a close that reconnecting cannot cure is final', async () => {
  const server = new FakeServer();
  const { client } = makeClient(server);
  await client.connect();
  /** @type {number | null} */
  let code = null;
  client.on('closed', (event) => {
    code = event.closeCode;
  });
  const sockets = server.sockets.length;
  server.open()[0].serverClose(4004, 'session_revoked');
  await until(() => code !== null, 1000, 'closed');
  assert.equal(code, 4004);
  assert.equal(client.state, 'closed');
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(server.sockets.length, sockets, 'no reconnect after 4004');
});

test('a silent socket is probed with ping and replaced when the probe goes unanswered', async () => {
  const server = new FakeServer();
  const { client } = makeClient(server, { heartbeatIntervalMs: 60 });
  await client.connect();
  await until(() => server.requests.some((r) => r.type === 'ping'), 1000, 'a heartbeat ping');
  const first = server.sockets[0];
  // Only the first socket goes silent: a replacement opened before the test looks again
  // must be answered, or it too is abandoned and the client backs off for longer.
  server.intercept = (_request, socket) => socket === first;
  await until(() => first.closedByClient !== null, 5000, 'the dead socket abandoned');
  await until(() => server.open().length === 1 && server.open()[0] !== first && client.state === 'open', 5000, 'a new socket');
});

test('chat.send survives a reconnect with the same clientMsgId', async () => {
  const server = new FakeServer();
  let dropped = false;
  server.intercept = (request, socket) => {
    if (request.type === 'chat.send' && !dropped) {
      dropped = true;
      socket.drop();
      return true;
    }
    return false;
  };
  const { client } = makeClient(server);
  await client.connect();
  const result = await client.sendMessage(ROOM, 'hello', { clientMsgId: 'c-fixed' });
  assert.equal(result.seq, 1);
  const sends = server.requests.filter((r) => r.type === 'chat.send').map((r) => r.payload.clientMsgId);
  assert.deepEqual(sends, ['c-fixed', 'c-fixed']);
});

test('a join asked for while offline happens on the next connection', async () => {
  const server = new FakeServer();
  server.post(ROOM, 'one');
  const { client, seen } = makeClient(server);
  await client.connect();
  server.accepting = false;
  server.open()[0].drop();
  await until(() => client.state !== 'open');
  const joining = client.join(ROOM, { lastSeq: 0 });
  await until(() => server.sockets.length >= 3, 2000, 'failed reconnect attempts');
  assert.equal(seen.length, 0);
  server.accepting = true;
  const joined = await joining;
  assert.equal(joined.lastSeq, 1);
  assert.deepEqual(seen, [1]);
});

test('backoff: full jitter under an exponential ceiling', () => {
  assert.equal(backoffDelay(0, { initialMs: 100, random: () => 0.999999 }) < 100, true);
  assert.equal(backoffDelay(3, { initialMs: 100, random: () => 0.5 }), 400);
  assert.equal(backoffDelay(50, { initialMs: 100, maxMs: 5000, random: () => 1 }), 5000);
  assert.equal(backoffDelay(4, { random: () => 0 }), 0);
});
