// Calls over the realtime socket: `call.start`/`call.join`, then `rtc.offer`, `rtc.answer`
// and `rtc.ice` relayed by the server (protocol/README.md, "Calls").
//
// Peer-to-peer (`p2p`): a mesh, one RTCPeerConnection per other participant. Whoever joins
// offers to everyone already connected; later renegotiations follow WebRTC "perfect
// negotiation", where the participant with the smaller id is the impolite side and wins a
// collision. The ICE servers (STUN/TURN with credentials for this user) come with the
// join's ack.
//
// SFU (`sfu`): one RTCPeerConnection to the server's SFU, addressed by leaving `to` out.
// The client offers its own tracks; the SFU offers everyone else's tracks, each carrying
// its source participant's id as the stream id, and it is the impolite side
// (boltorezka/rtc/sfu.py). aiortc cannot restart ICE, so a restart there is a new
// RTCPeerConnection.
//
// After the socket reconnects the call is joined again (within the server's grace period
// the participant id stays the same) and every connection restarts ICE. A remote
// participant who comes back with a new RTCPeerConnection (a reloaded page) is recognised
// by the new session id in its offer, and its old connection is replaced.

import { Emitter } from './emitter.js';
import { ConnectionLostError, NackError } from './errors.js';

const DISCONNECTED_RESTART_MS = 4000;
const MEDIA_WAIT_MS = 30_000;

/**
 * @typedef {object} CallOptions
 * @property {MediaStream | null} [localStream] what this side sends (null: receive only)
 * @property {RTCIceTransportPolicy} [iceTransportPolicy] 'relay' sends everything
 *   through TURN (hides this side's addresses)
 * @property {typeof RTCPeerConnection} [RTCPeerConnection]
 */

/**
 * @typedef {object} RemoteTrack
 * @property {string | null} participantId whose media it is
 * @property {string | null} userId
 * @property {MediaStreamTrack} track
 * @property {MediaStream} stream
 */

/**
 * @typedef {object} PeerStats
 * @property {string | null} participantId null for the SFU connection
 * @property {RTCPeerConnectionState} connectionState
 * @property {RTCIceConnectionState} iceConnectionState
 * @property {string | null} candidateType of the selected local candidate
 * @property {number} framesDecoded inbound video
 * @property {number} framesSent outbound video
 * @property {number} bytesReceived
 * @property {number} audioPacketsReceived
 */

/**
 * @typedef {object} CallEvents
 * @property {import('./types.js').CallState} state every call.state of this call
 * @property {RemoteTrack} track remote media arrived
 * @property {{participantId: string | null, state: RTCPeerConnectionState}} peer-state
 * @property {{participantId: string}} participant-left
 * @property {{reason: string}} ended the call is over for this side
 * @property {{error: unknown, context: string}} error something failed that the call survives
 */

/**
 * @param {RTCIceCandidate} candidate
 * @returns {Record<string, unknown>}
 */
function wireCandidate(candidate) {
  /** @type {Record<string, unknown>} */
  const out = { candidate: candidate.candidate };
  if (candidate.sdpMid !== null && candidate.sdpMid !== undefined) out.sdpMid = candidate.sdpMid;
  if (candidate.sdpMLineIndex !== null && candidate.sdpMLineIndex !== undefined) out.sdpMLineIndex = candidate.sdpMLineIndex;
  if (candidate.usernameFragment) out.usernameFragment = candidate.usernameFragment;
  return out;
}

/**
 * The session id of an SDP's origin line: it changes only with a new RTCPeerConnection.
 * @param {string} sdp
 */
export function sdpSessionId(sdp) {
  const match = /^o=\S+ (\S+) /m.exec(sdp);
  return match === null ? null : match[1];
}

/** One RTCPeerConnection: to another participant, or (remoteId null) to the SFU. */
class Peer {
  /**
   * @param {Call} call
   * @param {string | null} remoteId
   * @param {boolean} polite
   * @param {boolean} initiate this side makes the first offer
   */
  constructor(call, remoteId, polite, initiate) {
    this.call = call;
    this.remoteId = remoteId;
    this.polite = polite;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.restarting = false;
    this.closed = false;
    /** @type {string | null} */
    this.remoteSession = null;
    /** @type {RTCIceCandidateInit[]} */
    this.early = [];
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.disconnectTimer = null;
    const pc = new call.RTCPeerConnection(call.rtcConfiguration());
    this.pc = pc;
    const stream = call.localStream;
    if (stream) {
      for (const track of stream.getTracks()) pc.addTrack(track, stream);
    }
    if (initiate && (!stream || stream.getTracks().length === 0)) {
      // Sending nothing (no camera or microphone) still needs a first offer to receive.
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
    }
    pc.onnegotiationneeded = () => void this.offer();
    pc.onicecandidate = ({ candidate }) => {
      void this.send('rtc.ice', { candidate: candidate ? wireCandidate(candidate) : null });
    };
    pc.ontrack = ({ track, streams }) => {
      const remote = streams[0] ?? new MediaStream([track]);
      const participantId = remoteId ?? remote.id ?? null;
      call.emit('track', { participantId, userId: call.userOf(participantId), track, stream: remote });
    };
    pc.onconnectionstatechange = () => this.onConnectionState();
  }

  async offer() {
    if (this.closed) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      const sdp = this.pc.localDescription?.sdp;
      if (!sdp || this.closed) return;
      const iceRestart = this.restarting;
      this.restarting = false;
      await this.send('rtc.offer', { sdp, iceRestart });
    } catch (error) {
      this.call.report(error, 'offer');
    } finally {
      this.makingOffer = false;
    }
  }

  /**
   * @param {'offer' | 'answer'} type
   * @param {string} sdp
   */
  async onDescription(type, sdp) {
    const pc = this.pc;
    const collision = type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
    this.ignoreOffer = !this.polite && collision;
    if (this.ignoreOffer) return;
    if (type === 'answer' && pc.signalingState !== 'have-local-offer') return; // stale
    await pc.setRemoteDescription({ type, sdp });
    if (type === 'offer') this.remoteSession = sdpSessionId(sdp);
    for (const candidate of this.early.splice(0)) await this.addCandidate(candidate);
    if (type === 'offer') {
      await pc.setLocalDescription();
      const answer = pc.localDescription?.sdp;
      if (answer) await this.send('rtc.answer', { sdp: answer });
    }
  }

  /** @param {RTCIceCandidateInit} candidate */
  async addCandidate(candidate) {
    if (this.pc.remoteDescription === null) {
      this.early.push(candidate);
      return;
    }
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (error) {
      if (!this.ignoreOffer) this.call.report(error, 'addIceCandidate');
    }
  }

  onConnectionState() {
    const state = this.pc.connectionState;
    this.call.emit('peer-state', { participantId: this.remoteId, state });
    this.call.noteConnectionState(this, state);
    if (this.disconnectTimer !== null) clearTimeout(this.disconnectTimer);
    this.disconnectTimer = null;
    if (state === 'failed') this.call.recover(this);
    if (state === 'disconnected') {
      // Often a blip that ICE survives; restart only if it lasts.
      this.disconnectTimer = setTimeout(() => {
        if (!this.closed && this.pc.connectionState === 'disconnected') this.call.recover(this);
      }, DISCONNECTED_RESTART_MS);
    }
  }

  restartIce() {
    if (this.closed) return;
    this.restarting = true;
    this.pc.restartIce();
  }

  /**
   * @param {'rtc.offer' | 'rtc.answer' | 'rtc.ice'} type
   * @param {Record<string, unknown>} payload
   */
  async send(type, payload) {
    if (this.closed) return;
    /** @type {Record<string, unknown>} */
    const body = { callId: this.call.callId, ...payload };
    if (this.remoteId !== null) body.to = this.remoteId;
    await this.call.signal(type, body);
  }

  close() {
    this.closed = true;
    if (this.disconnectTimer !== null) clearTimeout(this.disconnectTimer);
    this.pc.onnegotiationneeded = null;
    this.pc.onicecandidate = null;
    this.pc.ontrack = null;
    this.pc.onconnectionstatechange = null;
    this.pc.close();
  }
}

/** @extends {Emitter<CallEvents>} */
export class Call extends Emitter {
  /**
   * Start a call in a room, or join the one already live there.
   * @param {import('./realtime.js').RealtimeClient} realtime
   * @param {string} roomId
   * @param {CallOptions & {mode?: 'p2p' | 'sfu' | 'auto'}} [options]
   */
  static async start(realtime, roomId, { mode = 'auto', ...options } = {}) {
    const call = new Call(realtime, options);
    try {
      await call._enter('call.start', { roomId, mode });
    } catch (error) {
      const live = error instanceof NackError && error.code === 'call_already_live' ? error.details.callId : null;
      if (typeof live !== 'string') {
        call._detach();
        throw error;
      }
      try {
        await call._enter('call.join', { callId: live });
      } catch (joinError) {
        call._detach();
        throw joinError;
      }
    }
    return call;
  }

  /**
   * @param {import('./realtime.js').RealtimeClient} realtime
   * @param {string} callId
   * @param {CallOptions} [options]
   */
  static async join(realtime, callId, options = {}) {
    const call = new Call(realtime, options);
    try {
      await call._enter('call.join', { callId });
    } catch (error) {
      call._detach();
      throw error;
    }
    return call;
  }

  /**
   * Use {@link Call.start} or {@link Call.join}.
   * @param {import('./realtime.js').RealtimeClient} realtime
   * @param {CallOptions} options
   */
  constructor(realtime, { localStream = null, iceTransportPolicy = 'all', RTCPeerConnection: impl } = {}) {
    super();
    this.realtime = realtime;
    this.localStream = localStream;
    this.iceTransportPolicy = iceTransportPolicy;
    /** @type {typeof RTCPeerConnection} */
    this.RTCPeerConnection = impl ?? globalThis.RTCPeerConnection;
    /** @type {string} */
    this.callId = '';
    /** @type {string} */
    this.participantId = '';
    /** @type {'p2p' | 'sfu'} */
    this.mode = 'p2p';
    /** @type {import('./types.js').IceServer[]} */
    this.iceServers = [];
    /** @type {import('./types.js').CallState | null} */
    this.state = null;
    /** @type {Map<string, Peer>} */
    this.peers = new Map();
    /** @type {Peer | null} */
    this.sfu = null;
    this.ended = false;
    this._startedAt = Date.now();
    this._reported = false;
    /** @type {{type: 'rtc.offer' | 'rtc.answer' | 'rtc.ice', payload: any}[] | null} */
    this._early = [];
    /** @type {import('./types.js').CallState[]} */
    this._earlyStates = [];
    this._unsubscribe = [
      realtime.on('rtc', (event) => {
        if (this._early !== null) this._early.push(event);
        else void this._onRtc(event.type, event.payload);
      }),
      realtime.on('call-state', (state) => {
        if (this._early !== null) this._earlyStates.push(state);
        else this._onState(state);
      }),
      realtime.on('authenticated', ({ reconnected }) => {
        if (reconnected && !this.ended && this.callId) void this._rejoin();
      }),
    ];
  }

  /** @returns {RTCConfiguration} */
  rtcConfiguration() {
    return {
      iceServers: this.iceServers.map((server) => {
        /** @type {RTCIceServer} */
        const entry = { urls: server.urls };
        if (server.username) entry.username = server.username;
        if (server.credential) entry.credential = server.credential;
        return entry;
      }),
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: 'max-bundle',
    };
  }

  /** @param {string | null} participantId */
  userOf(participantId) {
    return this.state?.participants.find((p) => p.participantId === participantId)?.userId ?? null;
  }

  /**
   * @param {'call.start' | 'call.join'} type
   * @param {Record<string, unknown>} payload
   */
  async _enter(type, payload) {
    /** @type {import('./types.js').CallJoined} */
    const joined = await this.realtime.request(type, payload);
    this.callId = joined.call.callId;
    this._adopt(joined);
    const early = this._early ?? [];
    const states = this._earlyStates;
    this._early = null;
    this._earlyStates = [];
    this._connectAll();
    for (const state of states) this._onState(state);
    for (const event of early) await this._onRtc(event.type, event.payload);
  }

  /** @param {import('./types.js').CallJoined} joined */
  _adopt(joined) {
    this.participantId = joined.participantId;
    this.iceServers = joined.iceServers ?? [];
    this.mode = joined.call.mode;
    this.state = joined.call;
    this.emit('state', joined.call);
  }

  /** Offer to everyone already connected (p2p), or to the SFU. */
  _connectAll() {
    if (this.mode === 'sfu') {
      this.sfu ??= new Peer(this, null, true, true);
      return;
    }
    for (const participant of this.state?.participants ?? []) {
      if (participant.participantId === this.participantId || !participant.connected) continue;
      if (!this.peers.has(participant.participantId)) this._peer(participant.participantId, true);
    }
  }

  /** @param {string} remoteId @param {boolean} initiate */
  _peer(remoteId, initiate) {
    // The smaller id is the impolite side: both ends agree without a message.
    const peer = new Peer(this, remoteId, this.participantId > remoteId, initiate);
    this.peers.set(remoteId, peer);
    return peer;
  }

  /**
   * @param {'rtc.offer' | 'rtc.answer' | 'rtc.ice'} type
   * @param {any} payload
   */
  async _onRtc(type, payload) {
    if (payload.callId !== this.callId || this.ended) return;
    const from = payload.from ?? null;
    /** @type {Peer | null} */
    let peer;
    if (from === null) {
      if (this.mode !== 'sfu') return;
      peer = this.sfu ??= new Peer(this, null, true, false);
    } else {
      peer = this.peers.get(from) ?? null;
      if (type === 'rtc.offer') {
        const session = sdpSessionId(payload.sdp);
        if (peer !== null && peer.remoteSession !== null && session !== peer.remoteSession) {
          // A new RTCPeerConnection on their side (a reloaded page): start afresh.
          peer.close();
          this.peers.delete(from);
          peer = null;
        }
        peer ??= this._peer(from, false);
      }
      if (peer === null) return;
    }
    try {
      if (type === 'rtc.ice') {
        if (payload.candidate) await peer.addCandidate(payload.candidate);
      } else {
        await peer.onDescription(type === 'rtc.offer' ? 'offer' : 'answer', payload.sdp);
      }
    } catch (error) {
      this.report(error, type);
    }
  }

  /** @param {import('./types.js').CallState} state */
  _onState(state) {
    if (state.callId !== this.callId || this.ended) return;
    const before = this.state;
    this.state = state;
    this.emit('state', state);
    if (state.state === 'ended') {
      this._finish(state.reason ?? 'ended');
      return;
    }
    const me = state.participants.find((p) => p.participantId === this.participantId);
    if (me === undefined) {
      this._finish('removed');
      return;
    }
    if (state.mode === 'sfu' && this.mode === 'p2p') {
      this.mode = 'sfu';
      for (const [id, peer] of this.peers) {
        peer.close();
        this.emit('participant-left', { participantId: id });
      }
      this.peers.clear();
      this._connectAll();
      return;
    }
    const present = new Set(state.participants.map((p) => p.participantId));
    // Through the SFU nobody has a connection of their own to close: whoever is missing
    // from the state has left, and so has anyone of the mesh who never connected.
    const left = new Set((before?.participants ?? []).map((p) => p.participantId).filter((id) => id !== this.participantId && !present.has(id)));
    for (const [id, peer] of this.peers) {
      if (!present.has(id)) {
        peer.close();
        this.peers.delete(id);
        left.add(id);
      }
    }
    for (const id of left) this.emit('participant-left', { participantId: id });
    if (state.reason === 'host_changed') {
      if (!me.connected) void this._rejoin();
      else this._restartAll(false);
    } else if (state.reason === 'media_lost' && !me.connected && this.mode === 'sfu') {
      // The SFU dropped our media connection while the socket stays in the call: a new
      // RTCPeerConnection and its offer bring it back, without call.join.
      this._restartAll(true);
    }
  }

  /**
   * @param {boolean} everyone false: only where this side is the impolite one, so that
   *   the two ends do not both restart
   */
  _restartAll(everyone) {
    if (this.mode === 'sfu') {
      this.sfu?.close();
      this.sfu = new Peer(this, null, true, true);
      return;
    }
    for (const peer of this.peers.values()) if (everyone || !peer.polite) peer.restartIce();
  }

  async _rejoin() {
    try {
      /** @type {import('./types.js').CallJoined} */
      const joined = await this.realtime.request('call.join', { callId: this.callId });
      const same = joined.participantId === this.participantId;
      if (!same) {
        // The grace period ran out: this side is a new participant and starts over.
        for (const peer of this.peers.values()) peer.close();
        this.peers.clear();
        this.sfu?.close();
        this.sfu = null;
      }
      this._adopt(joined);
      if (same) this._restartAll(true);
      this._connectAll();
    } catch (error) {
      if (error instanceof ConnectionLostError) return; // the next reconnect tries again
      if (error instanceof NackError && error.code === 'invalid_call_transition' && /already/.test(error.detail)) return;
      this._finish(error instanceof NackError ? error.code : 'rejoin_failed');
    }
  }

  /** @param {Peer} peer */
  recover(peer) {
    if (this.ended) return;
    if (peer.remoteId === null) {
      this._restartAll(true);
      return;
    }
    peer.restartIce();
  }

  /**
   * @param {Peer} peer
   * @param {RTCPeerConnectionState} state
   */
  noteConnectionState(peer, state) {
    if (this._reported || (state !== 'connected' && state !== 'failed')) return;
    this._reported = true;
    void this._telemetry(peer, state === 'connected' ? 'connected' : 'failed');
    if (state === 'connected') void this._awaitMedia(peer);
  }

  /**
   * ICE connecting is not media flowing: report `media` once a remote frame is decoded.
   * @param {Peer} peer
   */
  async _awaitMedia(peer) {
    const deadline = Date.now() + MEDIA_WAIT_MS;
    while (!this.ended && !peer.closed && Date.now() < deadline) {
      try {
        const stats = await peerStats(peer);
        if (stats.framesDecoded > 0 || stats.audioPacketsReceived > 0) {
          await this._telemetry(peer, 'media');
          return;
        }
      } catch {
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  /**
   * @param {Peer} peer
   * @param {'connected' | 'media' | 'failed'} outcome
   */
  async _telemetry(peer, outcome) {
    try {
      /** @type {Record<string, unknown>} */
      const payload = {
        callId: this.callId,
        outcome,
        setupMs: Math.min(600_000, Math.max(0, Math.round(Date.now() - this._startedAt))),
      };
      if (outcome === 'failed') {
        payload.iceFailed = true;
      } else {
        const type = (await peerStats(peer)).candidateType;
        if (type === 'host' || type === 'srflx' || type === 'prflx' || type === 'relay') payload.candidateType = type;
      }
      await this.realtime.request('call.telemetry', payload);
    } catch {
      // Telemetry is best effort.
    }
  }

  /**
   * Relay a signaling message; a rate limit is waited out, a lost socket dropped (the
   * rejoin after the reconnect restarts ICE anyway).
   * @param {'rtc.offer' | 'rtc.answer' | 'rtc.ice'} type
   * @param {Record<string, unknown>} payload
   */
  async signal(type, payload) {
    for (let attempt = 0; attempt < 5; attempt += 1) {
      try {
        await this.realtime.request(type, payload);
        return;
      } catch (error) {
        if (error instanceof NackError && error.code === 'rate_limited') {
          await new Promise((resolve) => setTimeout(resolve, error.retryAfterMs ?? 100));
          continue;
        }
        if (error instanceof ConnectionLostError) return;
        if (error instanceof NackError && error.code === 'participant_not_found') return; // they left
        this.report(error, type);
        return;
      }
    }
  }

  /** @param {unknown} error @param {string} context */
  report(error, context) {
    this.emit('error', { error, context });
  }

  /**
   * Mute or unmute what this side sends, without renegotiating.
   * @param {'audio' | 'video'} kind
   * @param {boolean} enabled
   */
  setEnabled(kind, enabled) {
    for (const track of this.localStream?.getTracks() ?? []) if (track.kind === kind) track.enabled = enabled;
  }

  /** @returns {Promise<PeerStats[]>} */
  async stats() {
    const peers = [...this.peers.values()];
    if (this.sfu) peers.push(this.sfu);
    return Promise.all(peers.map(peerStats));
  }

  /** Leave; the call goes on for the others. */
  async leave() {
    if (this.ended) return;
    try {
      await this.realtime.request('call.leave', { callId: this.callId });
    } catch {
      // Leaving must work even when the call or the socket is gone already.
    }
    this._finish('left');
  }

  /** End the call for everyone (participants and room admins). */
  async end() {
    if (this.ended) return;
    await this.realtime.request('call.end', { callId: this.callId });
    this._finish('ended_by_user');
  }

  /** @param {string} reason */
  _finish(reason) {
    if (this.ended) return;
    this.ended = true;
    for (const peer of this.peers.values()) peer.close();
    this.peers.clear();
    this.sfu?.close();
    this.sfu = null;
    this._detach();
    this.emit('ended', { reason });
  }

  _detach() {
    for (const unsubscribe of this._unsubscribe) unsubscribe();
    this._unsubscribe = [];
  }
}

/**
 * @param {Peer} peer
 * @returns {Promise<PeerStats>}
 */
async function peerStats(peer) {
  /** @type {PeerStats} */
  const out = {
    participantId: peer.remoteId,
    connectionState: peer.pc.connectionState,
    iceConnectionState: peer.pc.iceConnectionState,
    candidateType: null,
    framesDecoded: 0,
    framesSent: 0,
    bytesReceived: 0,
    audioPacketsReceived: 0,
  };
  const report = await peer.pc.getStats();
  /** @type {Map<string, any>} */
  const byId = new Map();
  report.forEach((entry) => byId.set(entry.id, entry));
  for (const entry of byId.values()) {
    if (entry.type === 'inbound-rtp' && entry.kind === 'video') out.framesDecoded += entry.framesDecoded ?? 0;
    if (entry.type === 'inbound-rtp') out.bytesReceived += entry.bytesReceived ?? 0;
    if (entry.type === 'inbound-rtp' && entry.kind === 'audio') out.audioPacketsReceived += entry.packetsReceived ?? 0;
    if (entry.type === 'outbound-rtp' && entry.kind === 'video') out.framesSent += entry.framesSent ?? 0;
    if (entry.type === 'transport' && entry.selectedCandidatePairId) {
      const pair = byId.get(entry.selectedCandidatePairId);
      const local = pair ? byId.get(pair.localCandidateId) : undefined;
      if (local?.candidateType) out.candidateType = local.candidateType;
    }
  }
  return out;
}
