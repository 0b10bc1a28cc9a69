// The call panel: camera and microphone, one tile per participant, mute and leave. The
// SDK's Call does the signaling; this only shows it.

import { Call } from '../sdk/calls.js';
import { avatar, h, icon, replace } from './dom.js';
import { describeError } from './text.js';

/**
 * @typedef {object} Tile
 * @property {HTMLElement} element
 * @property {HTMLVideoElement} video
 * @property {HTMLElement} label
 * @property {HTMLElement} state
 * @property {string | null} userId
 */

/** @type {Record<string, string>} */
const PEER_STATE = {
  new: 'Connecting…',
  connecting: 'Connecting…',
  disconnected: 'Reconnecting…',
  failed: 'Connection failed; retrying…',
  closed: 'Left',
  connected: '',
};

export class CallView {
  /**
   * Ask for the camera and microphone, then start the room's call or join it.
   * @param {import('./app.js').App} app
   * @param {import('../sdk/realtime.js').RealtimeClient} realtime
   * @param {string} roomId
   * @param {string | null} callId the live call to join, if one is known
   * @returns {Promise<CallView>}
   */
  static async open(app, realtime, roomId, callId) {
    const stream = await localMedia(app);
    const options = { localStream: stream, iceTransportPolicy: app.relayOnly ? /** @type {const} */ ('relay') : /** @type {const} */ ('all') };
    try {
      const call = callId ? await Call.join(realtime, callId, options) : await Call.start(realtime, roomId, options);
      return new CallView(app, call, roomId, stream);
    } catch (error) {
      for (const track of stream?.getTracks() ?? []) track.stop();
      // The call we knew of ended meanwhile: start a new one instead.
      if (callId && error && typeof error === 'object' && 'code' in error && (error.code === 'call_not_found' || error.code === 'invalid_call_transition')) {
        return CallView.open(app, realtime, roomId, null);
      }
      throw error;
    }
  }

  /**
   * @param {import('./app.js').App} app
   * @param {Call} call
   * @param {string} roomId
   * @param {MediaStream | null} stream
   */
  constructor(app, call, roomId, stream) {
    this.app = app;
    this.call = call;
    this.roomId = roomId;
    this.stream = stream;
    this.micOn = Boolean(stream?.getAudioTracks().length);
    this.camOn = Boolean(stream?.getVideoTracks().length);
    /** @type {Map<string, Tile>} */
    this.tiles = new Map();
    /**
     * The state of the connection to the SFU, which carries every remote tile in `sfu` mode
     * (its tracks arrive through renegotiations after it connected, with no event of their
     * own): null while there is none.
     * @type {RTCPeerConnectionState | null}
     */
    this.sfuState = null;
    this.tilesBox = h('div', { class: 'tiles' });
    this.controls = h('div', { class: 'call-controls' });
    this.title = h('strong', null);
    this.element = h(
      'section',
      { class: 'call', 'aria-label': 'Call' },
      h('div', { class: 'call-title' }, icon('video'), this.title),
      this.tilesBox,
      this.controls,
    );
    const me = /** @type {import('../sdk/types.js').User} */ (app.me);
    const local = this.tile('local', me.id, 'You');
    local.element.classList.add('local');
    local.video.muted = true;
    if (stream) {
      local.video.srcObject = stream;
      void local.video.play().catch(() => {});
    }
    replace(local.state, stream ? '' : 'Camera and microphone are off');
    this.renderControls();
    this.onState(call.state);
    call.on('state', (state) => this.onState(state));
    call.on('track', ({ participantId, userId, stream: remote }) => {
      const tile = this.tile(participantId ?? remote.id, userId, null);
      if (tile.video.srcObject !== remote) {
        tile.video.srcObject = remote;
        if (this.call.mode === 'sfu') this.showPeerState(tile, this.sfuState);
        tile.video.play().catch(() => {
          // Autoplay with sound was refused: play muted and offer sound on a click.
          tile.video.muted = true;
          void tile.video.play().catch(() => {});
          replace(tile.state, h('button', { class: 'btn', type: 'button', onclick: () => { tile.video.muted = false; replace(tile.state); } }, 'Turn sound on'));
        });
      }
    });
    call.on('peer-state', ({ participantId, state }) => {
      if (participantId === null) {
        this.sfuState = state;
        for (const [key, tile] of this.tiles) if (key !== 'local' && tile.video.srcObject) this.showPeerState(tile, state);
        return;
      }
      const tile = this.tiles.get(participantId);
      if (tile) this.showPeerState(tile, state);
    });
    call.on('participant-left', ({ participantId }) => this.removeTile(participantId));
    call.on('ended', ({ reason }) => {
      if (reason !== 'left' && reason !== 'ended_by_user') app.toast(reason === 'removed' || reason === 'connection_lost' ? 'You dropped out of the call.' : 'The call has ended.');
      this.teardown();
    });
    call.on('error', ({ error, context }) => console.warn(`call: ${context} failed`, error));
  }

  /** @param {import('../sdk/types.js').CallState | null} state */
  onState(state) {
    if (state === null) return;
    this.title.textContent = `Call in ${this.app.roomName(this.roomId)}`;
    for (const participant of state.participants) {
      if (participant.participantId === this.call.participantId) continue;
      const tile = this.tile(participant.participantId, participant.userId, null);
      if (!participant.connected) replace(tile.state, 'Reconnecting…');
      // Back after the SFU lost their media: the SFU connection's state says the rest.
      else if (this.call.mode === 'sfu' && tile.video.srcObject) this.showPeerState(tile, this.sfuState);
    }
    this.refreshNames();
  }

  /**
   * @param {Tile} tile
   * @param {RTCPeerConnectionState | null} state of the connection that carries its media
   */
  showPeerState(tile, state) {
    if (state !== null && !tile.state.querySelector('button')) replace(tile.state, PEER_STATE[state] ?? '');
  }

  /**
   * @param {string} key
   * @param {string | null} userId
   * @param {string | null} label
   */
  tile(key, userId, label) {
    let tile = this.tiles.get(key);
    if (tile === undefined) {
      const video = h('video', { autoplay: true, playsInline: true });
      const state = h('span', { class: 'state' }, key === 'local' ? '' : 'Connecting…');
      const name = h('span', null, label ?? (userId ? this.app.nameOf(userId) : 'Guest'));
      const element = h(
        'div',
        { class: 'tile', dataset: { participantId: key } },
        userId ? h('span', { class: 'placeholder-avatar' }, avatar({ id: userId, name: name.textContent ?? '?' })) : null,
        video,
        h('span', { class: 'label' }, name),
        state,
      );
      tile = { element, video, label: name, state, userId };
      this.tiles.set(key, tile);
      this.tilesBox.append(element);
    } else if (userId && tile.userId === null) {
      tile.userId = userId;
    }
    return tile;
  }

  /** @param {string} key */
  removeTile(key) {
    const tile = this.tiles.get(key);
    if (!tile) return;
    tile.video.srcObject = null;
    tile.element.remove();
    this.tiles.delete(key);
  }

  refreshNames() {
    for (const [key, tile] of this.tiles) {
      if (key !== 'local' && tile.userId) tile.label.textContent = this.app.nameOf(tile.userId);
    }
  }

  renderControls() {
    const hasMic = Boolean(this.stream?.getAudioTracks().length);
    const hasCam = Boolean(this.stream?.getVideoTracks().length);
    replace(
      this.controls,
      h(
        'button',
        {
          class: `icon-btn${this.micOn ? '' : ' off'}`,
          type: 'button',
          disabled: !hasMic,
          title: this.micOn ? 'Mute microphone' : 'Unmute microphone',
          'aria-label': this.micOn ? 'Mute microphone' : 'Unmute microphone',
          'aria-pressed': String(!this.micOn),
          onclick: () => {
            this.micOn = !this.micOn;
            this.call.setEnabled('audio', this.micOn);
            this.renderControls();
          },
        },
        icon(this.micOn ? 'mic' : 'micOff'),
      ),
      h(
        'button',
        {
          class: `icon-btn${this.camOn ? '' : ' off'}`,
          type: 'button',
          disabled: !hasCam,
          title: this.camOn ? 'Turn camera off' : 'Turn camera on',
          'aria-label': this.camOn ? 'Turn camera off' : 'Turn camera on',
          'aria-pressed': String(!this.camOn),
          onclick: () => {
            this.camOn = !this.camOn;
            this.call.setEnabled('video', this.camOn);
            this.renderControls();
          },
        },
        icon(this.camOn ? 'video' : 'videoOff'),
      ),
      h('button', { class: 'icon-btn hangup', type: 'button', title: 'Leave call', 'aria-label': 'Leave call', onclick: () => void this.leave() }, icon('hangup')),
    );
  }

  async leave() {
    await this.call.leave();
    this.teardown();
  }

  teardown() {
    for (const tile of this.tiles.values()) tile.video.srcObject = null;
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.app.callEnded(this);
  }
}

/**
 * Camera and microphone; the microphone alone if there is no camera; nothing (a
 * receive-only call) if the browser refuses both, with the reason shown.
 * @param {import('./app.js').App} app
 * @returns {Promise<MediaStream | null>}
 */
async function localMedia(app) {
  const media = navigator.mediaDevices;
  if (!media?.getUserMedia) {
    app.toast('This browser cannot use a camera or microphone here (calls need https or localhost). You can still watch and listen.', true);
    return null;
  }
  try {
    return await media.getUserMedia({ audio: true, video: { width: { ideal: 1280 }, height: { ideal: 720 } } });
  } catch (error) {
    try {
      const audio = await media.getUserMedia({ audio: true });
      app.toast('No camera available: joining with your microphone only.');
      return audio;
    } catch {
      app.toast(`${describeError(error)} You can still watch and listen.`, true);
      return null;
    }
  }
}
