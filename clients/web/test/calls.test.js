// Call signaling with fake RTCPeerConnections: who offers to whom in a peer-to-peer mesh,
// answering, a remote reload, the SFU's addressing (no `to`, no `from`), its stream ids,
// recovery after `media_lost`, the rejoin and ICE restart after a reconnect, and the end.
// Browsers are exercised for real by tests/test_web_e2e.py (peer-to-peer, direct and TURN).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Call, sdpSessionId } from '../src/sdk/calls.js';
import { Emitter } from '../src/sdk/emitter.js';

const CALL = '5d1f0c9e-2b7a-4e3c-8f61-9a0b1c2d3e4f';
const ROOM = '0b5e3c1a-7d2f-4c8e-9a61-3f2d8e4b5c71';
const ME = '22222222-2222-4222-8222-222222222222';
const LOW = '11111111-1111-4111-8111-111111111111';
const HIGH = '33333333-3333-4333-8333-333333333333';
const ICE = [{ urls: ['turn:127.0.0.1:3478?transport=udp'], username: 'u', credential: 'c' }];

let sessions = 1000;

/** Enough of RTCPeerConnection for the signaling logic. */
class FakePeerConnection {
  /** @param {RTCConfiguration} config */
  constructor(config) {
    FakePeerConnection.all.push(this);
    this.config = config;
    this.session = String((sessions += 1));
    this.version = 0;
    this.signalingState = 'stable';
    this.connectionState = 'new';
    this.iceConnectionState = 'new';
    /** @type {{type: string, sdp: string} | null} */
    this.localDescription = null;
    /** @type {{type: string, sdp: string} | null} */
    this.remoteDescription = null;
    /** @type {unknown[]} */
    this.candidates = [];
    this.transceivers = 0;
    this.restarts = 0;
    this.closed = false;
    /** @type {(() => void) | null} */
    this.onnegotiationneeded = null;
    /** @type {((event: any) => void) | null} */
    this.onicecandidate = null;
    /** @type {((event: any) => void) | null} */
    this.ontrack = null;
    /** @type {(() => void) | null} */
    this.onconnectionstatechange = null;
  }

  _needed() {
    setTimeout(() => {
      if (!this.closed && this.signalingState === 'stable') this.onnegotiationneeded?.();
    }, 0);
  }

  addTrack() {
    this.transceivers += 1;
    this._needed();
  }

  addTransceiver() {
    this.transceivers += 1;
    this._needed();
  }

  restartIce() {
    this.restarts += 1;
    this._needed();
  }

  async setLocalDescription() {
    const type = this.signalingState === 'have-remote-offer' ? 'answer' : 'offer';
    this.version += 1;
    this.localDescription = { type, sdp: `v=0\r\no=- ${this.session} ${this.version} IN IP4 127.0.0.1\r\na=ice-ufrag:r${this.restarts}\r\n` };
    this.signalingState = type === 'offer' ? 'have-local-offer' : 'stable';
  }

  /** @param {{type: string, sdp: string}} description */
  async setRemoteDescription(description) {
    this.remoteDescription = description;
    this.signalingState = description.type === 'offer' ? 'have-remote-offer' : 'stable';
  }

  /** @param {unknown} candidate */
  async addIceCandidate(candidate) {
    this.candidates.push(candidate);
  }

  async getStats() {
    return new Map();
  }

  close() {
    this.closed = true;
  }
}
/** @type {FakePeerConnection[]} */
FakePeerConnection.all = [];

/**
 * The RealtimeClient surface a Call uses: requests with canned answers, and events.
 * @extends {Emitter<any>}
 */
class FakeRealtime extends Emitter {
  /** @param {(type: string, payload: any) => any} answer */
  constructor(answer) {
    super();
    this.answer = answer;
    /** @type {{type: string, payload: any}[]} */
    this.sent = [];
  }

  /** @param {string} type @param {any} payload */
  async request(type, payload) {
    this.sent.push({ type, payload });
    return this.answer(type, payload);
  }

  /** @param {string} type */
  of(type) {
    return this.sent.filter((s) => s.type === type).map((s) => s.payload);
  }
}

/**
 * @param {'p2p' | 'sfu'} mode
 * @param {{participantId: string, connected?: boolean}[]} others
 * @param {string} [participantId]
 */
function joined(mode, others, participantId = ME) {
  return {
    call: {
      callId: CALL,
      roomId: ROOM,
      state: 'active',
      mode,
      participants: [{ participantId, userId: 'u-me', connected: true }, ...others.map((o) => ({ userId: `u-${o.participantId.slice(0, 4)}`, connected: true, ...o }))],
    },
    participantId,
    iceServers: ICE,
  };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 5));

/** @param {FakeRealtime} realtime */
function startCall(realtime, options = {}) {
  // The fake has the shape Call needs; JSDoc cannot see that without the real class.
  return Call.join(/** @type {any} */ (realtime), CALL, { RTCPeerConnection: /** @type {any} */ (FakePeerConnection), ...options });
}

test('a newcomer offers to every connected participant, with the ICE servers of the ack', async () => {
  FakePeerConnection.all = [];
  const realtime = new FakeRealtime((type) => (type === 'call.join' ? joined('p2p', [{ participantId: LOW }, { participantId: HIGH, connected: false }]) : null));
  const call = await startCall(realtime, { iceTransportPolicy: 'relay' });
  await settle();
  assert.equal(FakePeerConnection.all.length, 1, 'no connection to a participant who is away');
  const pc = FakePeerConnection.all[0];
  assert.deepEqual(pc.config.iceServers, [{ urls: ICE[0].urls, username: 'u', credential: 'c' }]);
  assert.equal(pc.config.iceTransportPolicy, 'relay');
  const offers = realtime.of('rtc.offer');
  assert.equal(offers.length, 1);
  assert.equal(offers[0].to, LOW);
  assert.equal(offers[0].callId, CALL);
  assert.equal(offers[0].iceRestart, false);
  // Their answer completes it; their candidates are added.
  realtime.emit('rtc', { type: 'rtc.answer', payload: { callId: CALL, from: LOW, sdp: 'v=0\r\no=- 9 1 IN IP4 x\r\n' } });
  realtime.emit('rtc', { type: 'rtc.ice', payload: { callId: CALL, from: LOW, candidate: { candidate: 'candidate:1 1 udp 1 1.2.3.4 5 typ host' } } });
  await settle();
  assert.equal(pc.signalingState, 'stable');
  assert.equal(pc.candidates.length, 1);
  // Candidates go out to the one peer, in the protocol's shape.
  pc.onicecandidate?.({ candidate: { candidate: 'candidate:2 1 udp 1 5.6.7.8 9 typ relay', sdpMid: '0', sdpMLineIndex: 0, usernameFragment: null } });
  await settle();
  assert.deepEqual(realtime.of('rtc.ice').at(-1), { callId: CALL, to: LOW, candidate: { candidate: 'candidate:2 1 udp 1 5.6.7.8 9 typ relay', sdpMid: '0', sdpMLineIndex: 0 } });
  call._finish('test');
});

test('an offer from a newcomer is answered; a new session from them replaces the connection', async () => {
  FakePeerConnection.all = [];
  const realtime = new FakeRealtime((type) => (type === 'call.join' ? joined('p2p', []) : null));
  const call = await startCall(realtime);
  realtime.emit('rtc', { type: 'rtc.offer', payload: { callId: CALL, from: HIGH, sdp: 'v=0\r\no=- 77 1 IN IP4 x\r\n' } });
  await settle();
  assert.equal(FakePeerConnection.all.length, 1);
  assert.deepEqual(realtime.of('rtc.answer').map((a) => a.to), [HIGH]);
  // A renegotiation from the same connection keeps it.
  realtime.emit('rtc', { type: 'rtc.offer', payload: { callId: CALL, from: HIGH, sdp: 'v=0\r\no=- 77 2 IN IP4 x\r\n' } });
  await settle();
  assert.equal(FakePeerConnection.all.length, 1);
  // A reloaded page: new session id, so a new connection.
  realtime.emit('rtc', { type: 'rtc.offer', payload: { callId: CALL, from: HIGH, sdp: 'v=0\r\no=- 78 1 IN IP4 x\r\n' } });
  await settle();
  assert.equal(FakePeerConnection.all.length, 2);
  assert.equal(FakePeerConnection.all[0].closed, true);
  assert.equal(realtime.of('rtc.answer').length, 3);
  call._finish('test');
});

test('after a reconnect the call is joined again and ICE restarts', async () => {
  FakePeerConnection.all = [];
  const realtime = new FakeRealtime((type) => (type === 'call.join' ? joined('p2p', [{ participantId: LOW }]) : null));
  const call = await startCall(realtime);
  await settle();
  realtime.emit('rtc', { type: 'rtc.answer', payload: { callId: CALL, from: LOW, sdp: 'v=0\r\no=- 9 1 IN IP4 x\r\n' } });
  await settle();
  realtime.emit('authenticated', { result: /** @type {any} */ ({}), reconnected: true });
  await settle();
  assert.equal(realtime.of('call.join').length, 2);
  assert.equal(FakePeerConnection.all.length, 1, 'the same connection, restarted');
  assert.equal(FakePeerConnection.all[0].restarts, 1);
  const last = realtime.of('rtc.offer').at(-1);
  assert.equal(last.iceRestart, true);
  assert.equal(last.to, LOW);
  call._finish('test');
});

test('SFU mode: one connection, no `to`; SFU offers are answered; stream ids name the source', async () => {
  FakePeerConnection.all = [];
  const realtime = new FakeRealtime((type) => (type === 'call.join' ? joined('sfu', [{ participantId: HIGH }]) : null));
  const call = await startCall(realtime);
  await settle();
  assert.equal(FakePeerConnection.all.length, 1);
  const pc = FakePeerConnection.all[0];
  assert.equal(pc.transceivers, 2, 'receive-only transceivers when nothing is sent');
  const [offer] = realtime.of('rtc.offer');
  assert.ok(!('to' in offer));
  realtime.emit('rtc', { type: 'rtc.answer', payload: { callId: CALL, sdp: 'v=0\r\no=- 5 1 IN IP4 sfu\r\n' } });
  await settle();
  realtime.emit('rtc', { type: 'rtc.offer', payload: { callId: CALL, sdp: 'v=0\r\no=- 5 2 IN IP4 sfu\r\n' } });
  await settle();
  const [answer] = realtime.of('rtc.answer');
  assert.ok(answer && !('to' in answer));
  /** @type {any[]} */
  const tracks = [];
  call.on('track', (event) => tracks.push(event));
  pc.ontrack?.({ track: { kind: 'video' }, streams: [{ id: HIGH }] });
  assert.equal(tracks[0].participantId, HIGH);
  assert.equal(tracks[0].userId, 'u-3333');

  // The SFU lost our media: a new RTCPeerConnection and a new offer, no call.join.
  realtime.emit('call-state', { ...joined('sfu', [{ participantId: HIGH }]).call, participants: [{ participantId: ME, userId: 'u-me', connected: false }, { participantId: HIGH, userId: 'u-3333', connected: true }], reason: 'media_lost' });
  await settle();
  assert.equal(FakePeerConnection.all.length, 2);
  assert.equal(pc.closed, true);
  assert.equal(realtime.of('rtc.offer').length, 2);
  assert.equal(realtime.of('call.join').length, 1);
  call._finish('test');
});

test('a call that grows past the threshold moves from the mesh to the SFU', async () => {
  FakePeerConnection.all = [];
  const realtime = new FakeRealtime((type) => (type === 'call.join' ? joined('p2p', [{ participantId: LOW }]) : null));
  const call = await startCall(realtime);
  await settle();
  /** @type {string[]} */
  const left = [];
  call.on('participant-left', ({ participantId }) => left.push(participantId));
  realtime.emit('call-state', { ...joined('sfu', [{ participantId: LOW }]).call, reason: 'upgraded_to_sfu' });
  await settle();
  assert.deepEqual(left, [LOW]);
  assert.equal(FakePeerConnection.all[0].closed, true);
  assert.equal(call.mode, 'sfu');
  assert.ok(call.sfu !== null);
  assert.ok(!('to' in realtime.of('rtc.offer').at(-1)));
  call._finish('test');
});

test('the end of the call closes every connection and says why', async () => {
  FakePeerConnection.all = [];
  const realtime = new FakeRealtime((type) => (type === 'call.join' ? joined('p2p', [{ participantId: LOW }]) : null));
  const call = await startCall(realtime);
  await settle();
  /** @type {string[]} */
  const reasons = [];
  call.on('ended', ({ reason }) => reasons.push(reason));
  realtime.emit('call-state', { ...joined('p2p', []).call, state: 'ended', reason: 'ended_by_user' });
  assert.deepEqual(reasons, ['ended_by_user']);
  assert.equal(FakePeerConnection.all[0].closed, true);
  assert.equal(call.ended, true);
});

test('the session id is read from the origin line', () => {
  assert.equal(sdpSessionId('v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n'), '4611731400430051336');
  assert.equal(sdpSessionId('v=0\r\n'), null);
});
