// The app: the signed-in session, the realtime connection and the shell around one room
// at a time. Only the open room is joined on the socket; the others report unread
// messages and mentions through `notification` events.

import { ApiClient, webStorageStore } from '../sdk/rest.js';
import { RealtimeClient } from '../sdk/realtime.js';
import { forgetMessages } from './cache.js';
import { CallView } from './call.js';
import { browseRoomsDialog, createRoomDialog, settingsDialog } from './dialogs.js';
import { avatar, h, icon, replace } from './dom.js';
import { authView } from './auth.js';
import { RoomView } from './room.js';
import { describeError } from './text.js';

const RELAY_KEY = 'boltorezka.relayOnly';

/**
 * @typedef {object} RoomEntry
 * @property {import('../sdk/types.js').Room} room
 * @property {string} myRole
 * @property {number} unread
 * @property {boolean} mention
 * @property {string} [peerName] the other person, for a direct room
 */

export class App {
  /** @param {HTMLElement} root */
  constructor(root) {
    this.root = root;
    this.api = new ApiClient({ store: webStorageStore(), deviceName: deviceName() });
    /** @type {RealtimeClient | null} */
    this.realtime = null;
    /** @type {Map<string, RoomEntry>} */
    this.rooms = new Map();
    /** @type {Map<string, {username: string, displayName: string}>} */
    this.users = new Map();
    /** @type {Map<string, Promise<void>>} */
    this._userLookups = new Map();
    /** @type {Map<string, import('../sdk/types.js').ObservedPresence>} */
    this.presence = new Map();
    /** @type {Map<string, import('../sdk/types.js').CallState>} live calls by room */
    this.liveCalls = new Map();
    /** @type {RoomView | null} */
    this.view = null;
    /** @type {CallView | null} */
    this.call = null;
    /** @type {(() => void)[]} */
    this._teardown = [];
    this.shell = /** @type {HTMLElement | null} */ (null);
    this.roomList = h('nav', { class: 'room-list', 'aria-label': 'Rooms' });
    this.mainArea = h('main', { class: 'main' });
    this.callSlot = h('div', { class: 'call-slot' });
    this.roomSlot = h('div', { class: 'room-slot' });
    this.connDot = h('span', { class: 'conn', title: 'Connecting…' });
    this.meBox = h('footer', { class: 'me' });
    this.api.on('ended', () => this.signedOut('Your session has ended. Please sign in again.'));
    window.addEventListener('storage', (event) => {
      if (event.key === 'boltorezka.session') {
        this.api.reloadSession();
        if (this.api.session === null && this.shell !== null) this.signedOut('You signed out in another tab.');
      }
    });
    window.addEventListener('hashchange', () => this.route());
    window.addEventListener('online', () => this.realtime?.reconnect());
  }

  get me() {
    return this.api.user;
  }

  get relayOnly() {
    return localStorage.getItem(RELAY_KEY) === '1';
  }

  /** @param {boolean} value */
  set relayOnly(value) {
    localStorage.setItem(RELAY_KEY, value ? '1' : '0');
  }

  start() {
    if (this.api.session) void this.enter();
    else this.showAuth();
  }

  showAuth() {
    this.shell = null;
    replace(this.root, authView(this.api, () => void this.enter()));
  }

  // --- signed in ------------------------------------------------------------------------

  async enter() {
    const me = this.me;
    if (me === null) return this.showAuth();
    this.users.set(me.id, { username: me.username, displayName: me.displayName });
    const realtime = new RealtimeClient({
      token: (options) => this.api.accessToken(options),
      fetchHistory: (roomId, range) => this.api.history(roomId, range),
    });
    this.realtime = realtime;
    this._wire(realtime);
    this._buildShell();
    try {
      await this.loadRooms();
    } catch (error) {
      if (this.shell === null) return;
      this.toast(describeError(error), true);
    }
    realtime.connect().catch(() => {
      // Reported through the 'closed' event.
    });
    this.route();
  }

  _buildShell() {
    const me = /** @type {import('../sdk/types.js').User} */ (this.me);
    const presence = h(
      'select',
      {
        class: 'select',
        'aria-label': 'Your status',
        onchange: (/** @type {Event} */ event) => {
          const status = /** @type {HTMLSelectElement} */ (event.target).value;
          this.realtime?.setPresence(/** @type {import('../sdk/types.js').PresenceStatus} */ (status)).catch((error) => this.toast(describeError(error), true));
        },
      },
      h('option', { value: 'online' }, 'Online'),
      h('option', { value: 'away' }, 'Away'),
      h('option', { value: 'dnd' }, 'Do not disturb'),
    );
    replace(
      this.meBox,
      avatar({ id: me.id, name: me.displayName || me.username }),
      h('div', { class: 'who' }, h('strong', null, me.displayName || me.username), presence),
      h('button', { class: 'icon-btn', type: 'button', title: 'Settings', 'aria-label': 'Settings', onclick: () => settingsDialog(this) }, icon('settings')),
      h('button', { class: 'icon-btn', type: 'button', title: 'Sign out', 'aria-label': 'Sign out', onclick: () => void this.signOut() }, icon('logout')),
    );
    const sidebar = h(
      'aside',
      { class: 'sidebar' },
      h('header', { class: 'sidebar-head' }, h('span', { class: 'brand-mark' }, icon('bolt')), h('span', { class: 'brand-name' }, 'Boltorezka'), this.connDot),
      h(
        'div',
        { class: 'sidebar-actions' },
        h('button', { class: 'btn', type: 'button', onclick: () => createRoomDialog(this) }, icon('plus'), 'New room'),
        h('button', { class: 'btn', type: 'button', onclick: () => browseRoomsDialog(this) }, icon('search'), 'Browse'),
      ),
      h('div', { class: 'section-title' }, 'Rooms'),
      this.roomList,
      this.meBox,
    );
    replace(this.mainArea, this.callSlot, this.roomSlot);
    this.shell = h('div', { class: 'shell' }, sidebar, this.mainArea);
    replace(this.root, this.shell);
    this.renderRooms();
    this.showPlaceholder();
  }

  showPlaceholder() {
    replace(
      this.roomSlot,
      h(
        'div',
        { class: 'placeholder' },
        h(
          'div',
          null,
          h('span', { class: 'brand-mark center' }, icon('chat')),
          h('h2', null, this.rooms.size ? 'Pick a room' : 'Welcome to Boltorezka'),
          h('p', null, this.rooms.size ? 'Choose a room on the left to start talking.' : 'Create a room, or browse the public ones to join.'),
        ),
      ),
    );
  }

  async loadRooms() {
    const summaries = await this.api.rooms();
    const known = new Map(this.rooms);
    this.rooms.clear();
    for (const summary of summaries) {
      const before = known.get(summary.room.id);
      this.rooms.set(summary.room.id, {
        room: summary.room,
        myRole: summary.myRole,
        unread: this.view?.roomId === summary.room.id ? 0 : summary.unreadCount,
        mention: before?.mention ?? false,
        peerName: before?.peerName,
      });
    }
    this.renderRooms();
    for (const entry of this.rooms.values()) {
      if (entry.room.kind === 'direct' && entry.peerName === undefined) void this._nameDirect(entry);
    }
  }

  /** @param {RoomEntry} entry */
  async _nameDirect(entry) {
    try {
      const members = await this.api.members(entry.room.id);
      for (const member of members) this.rememberUser(member.userId, member.username, member.displayName);
      const other = members.find((m) => m.userId !== this.me?.id);
      entry.peerName = other ? other.displayName || other.username : entry.room.name;
      this.renderRooms();
      if (this.view?.roomId === entry.room.id) this.view.renderHeader();
    } catch {
      // The room keeps its stored name.
    }
  }

  /** @param {string} roomId */
  roomName(roomId) {
    const entry = this.rooms.get(roomId);
    if (!entry) return 'room';
    return entry.room.kind === 'direct' ? entry.peerName ?? 'Direct message' : entry.room.name;
  }

  renderRooms() {
    const entries = [...this.rooms.values()].sort((a, b) => {
      const rank = (/** @type {RoomEntry} */ e) => (e.room.kind === 'direct' ? 1 : 0);
      return rank(a) - rank(b) || this.roomName(a.room.id).localeCompare(this.roomName(b.room.id));
    });
    if (entries.length === 0) {
      replace(this.roomList, h('p', { class: 'empty-note' }, 'No rooms yet.'));
      return;
    }
    replace(
      this.roomList,
      entries.map((entry) => {
        const id = entry.room.id;
        const active = this.view?.roomId === id;
        const kindIcon = entry.room.kind === 'public' ? 'hash' : entry.room.kind === 'private' ? 'lock' : 'user';
        const live = this.liveCalls.has(id);
        return h(
          'a',
          {
            class: `room-item${active ? ' active' : ''}${entry.unread > 0 ? ' unread' : ''}`,
            href: `#/room/${id}`,
            dataset: { roomId: id },
            'aria-current': active ? 'page' : undefined,
          },
          icon(kindIcon),
          h('span', { class: 'room-name' }, this.roomName(id)),
          live ? h('span', { class: 'live-dot', title: 'Call in progress' }) : null,
          entry.mention && entry.unread > 0 ? h('span', { class: 'badge mention', title: 'You were mentioned' }, '@') : null,
          entry.unread > 0 ? h('span', { class: 'badge', 'aria-label': `${entry.unread} unread` }, entry.unread > 99 ? '99+' : entry.unread) : null,
        );
      }),
    );
  }

  route() {
    if (this.shell === null) return;
    const match = /^#\/room\/([0-9a-f-]{36})$/i.exec(location.hash);
    const roomId = match ? match[1].toLowerCase() : null;
    if (roomId === null) {
      this.closeRoom();
      return;
    }
    if (this.view?.roomId === roomId) return;
    if (!this.rooms.has(roomId)) {
      void this.loadRooms().then(() => {
        if (this.rooms.has(roomId)) this.openRoom(roomId);
        else {
          this.toast('That room does not exist, or you cannot see it.', true);
          location.hash = '#/';
        }
      });
      return;
    }
    this.openRoom(roomId);
  }

  /** @param {string} roomId */
  openRoom(roomId) {
    const entry = this.rooms.get(roomId);
    if (!entry || this.realtime === null) return;
    this.view?.close();
    entry.unread = 0;
    entry.mention = false;
    this.view = new RoomView(this, entry);
    replace(this.roomSlot, this.view.element);
    this.shell?.classList.add('room-open');
    this.renderRooms();
    void this.view.open();
  }

  closeRoom() {
    this.view?.close();
    this.view = null;
    this.shell?.classList.remove('room-open');
    this.renderRooms();
    this.showPlaceholder();
  }

  /** @param {string} roomId */
  goTo(roomId) {
    location.hash = `#/room/${roomId}`;
  }

  // --- people ---------------------------------------------------------------------------

  /**
   * @param {string} userId
   * @param {string} username
   * @param {string} [displayName]
   */
  rememberUser(userId, username, displayName) {
    this.users.set(userId, { username, displayName: displayName || username });
  }

  /** @param {string} userId */
  nameOf(userId) {
    const user = this.users.get(userId);
    if (user) return user.displayName || user.username;
    void this.lookUpUser(userId);
    return 'Someone';
  }

  /** @param {string} userId */
  lookUpUser(userId) {
    let pending = this._userLookups.get(userId);
    if (pending === undefined) {
      pending = this.api
        .userProfile(userId)
        .then((user) => {
          this.rememberUser(user.id, user.username, user.displayName);
          this.view?.refreshNames();
          this.call?.refreshNames();
        })
        .catch(() => {});
      this._userLookups.set(userId, pending);
    }
    return pending;
  }

  // --- realtime events ------------------------------------------------------------------

  /** @param {RealtimeClient} realtime */
  _wire(realtime) {
    const on = realtime.on.bind(realtime);
    this._teardown.push(
      on('state', ({ state }) => {
        this.connDot.className = `conn ${state}`;
        this.connDot.title = { open: 'Connected', connecting: 'Connecting…', reconnecting: 'Reconnecting…', closed: 'Disconnected', idle: '' }[state];
        this.view?.showConnection(state);
      }),
      on('joined', ({ roomId, resumed }) => {
        // A resume replays new messages only; edits and deletions meanwhile need a look.
        if (resumed && this.view?.roomId === roomId) void this.view.refreshWindow();
      }),
      on('authenticated', ({ reconnected }) => {
        if (reconnected) void this.loadRooms().catch(() => {});
      }),
      on('closed', ({ closeCode, reason }) => {
        if (this.realtime !== realtime) return;
        if (closeCode === 4004 || closeCode === 4001 || reason === 'session_revoked' || reason === 'unauthenticated') {
          this.signedOut('You were signed out on this device.');
        } else if (this.shell !== null) {
          this.view?.showConnection('closed');
        }
      }),
      on('message', ({ roomId, message }) => {
        if (this.view?.roomId === roomId) this.view.onMessage(message);
      }),
      on('edited', ({ roomId, message }) => {
        if (this.view?.roomId === roomId) this.view.onEdited(message);
      }),
      on('deleted', ({ roomId, messageId, seq }) => {
        if (this.view?.roomId === roomId) this.view.onDeleted(messageId, seq);
      }),
      on('reset', ({ roomId }) => {
        const me = this.me;
        if (me) forgetMessages(me.id, roomId);
        if (this.view?.roomId === roomId) void this.view.onReset();
      }),
      on('read', ({ roomId, userId, seq }) => {
        // Read positions reach only the reader's own devices: another tab or device read it.
        const entry = this.rooms.get(roomId);
        if (entry === undefined || userId !== this.me?.id || this.view?.roomId === roomId) return;
        entry.unread = Math.max(0, entry.room.lastSeq - seq);
        if (entry.unread === 0) entry.mention = false;
        this.renderRooms();
      }),
      on('typing', (event) => {
        if (this.view?.roomId === event.roomId && event.userId !== this.me?.id) this.view.onTyping(event.userId, event.active);
      }),
      on('room-presence', ({ roomId, members }) => {
        for (const member of members) this.presence.set(member.userId, member.status);
        if (this.view?.roomId === roomId) this.view.renderMembers();
      }),
      on('presence', ({ userId, status }) => {
        this.presence.set(userId, status);
        this.view?.renderMembers();
      }),
      on('member-joined', ({ roomId, userId }) => {
        // The event means one of their connections opened the room, but it carries no
        // status, and a newcomer's presence.changed reached only the rooms they were in.
        const known = this.presence.get(userId);
        if (known === undefined || known === 'offline') this.presence.set(userId, 'online');
        if (this.view?.roomId === roomId) void this.view.loadMembers();
      }),
      on('notification', ({ roomId, kind, unreadCount, seq }) => {
        const entry = this.rooms.get(roomId);
        if (entry === undefined) {
          void this.loadRooms().catch(() => {});
          return;
        }
        entry.room.lastSeq = Math.max(entry.room.lastSeq, seq);
        if (this.view?.roomId === roomId) return;
        entry.unread = unreadCount;
        if (kind === 'mention') entry.mention = true;
        this.renderRooms();
      }),
      on('room-updated', (info) => {
        const entry = this.rooms.get(info.roomId);
        if (entry === undefined) return;
        entry.room = { ...entry.room, name: info.name, topic: info.topic, archivedAt: info.archived ? entry.room.archivedAt ?? new Date().toISOString() : null };
        this.renderRooms();
        if (this.view?.roomId === info.roomId) this.view.renderHeader();
      }),
      on('room-deleted', ({ roomId }) => {
        this.rooms.delete(roomId);
        if (this.view?.roomId === roomId) {
          this.toast('This room was deleted.');
          location.hash = '#/';
        }
        this.renderRooms();
      }),
      on('call-state', (state) => {
        if (state.state === 'ended') this.liveCalls.delete(state.roomId);
        else this.liveCalls.set(state.roomId, state);
        this.renderRooms();
        if (this.view?.roomId === state.roomId) this.view.renderCallBanner();
      }),
    );
  }

  // --- calls ----------------------------------------------------------------------------

  /** @param {string} roomId @param {string | null} [callId] */
  async startCall(roomId, callId = null) {
    if (this.call !== null) {
      if (this.call.roomId === roomId) return;
      await this.call.leave();
    }
    if (this.realtime === null) return;
    try {
      const view = await CallView.open(this, this.realtime, roomId, callId);
      this.call = view;
      replace(this.callSlot, view.element);
    } catch (error) {
      this.toast(describeError(error), true);
    }
    this.view?.renderCallBanner();
  }

  /** @param {CallView} view */
  callEnded(view) {
    if (this.call !== view) return;
    this.call = null;
    replace(this.callSlot);
    this.view?.renderCallBanner();
  }

  /** Per-connection media statistics of the current call (diagnostics). */
  async callStats() {
    return this.call ? this.call.call.stats() : [];
  }

  // --- session --------------------------------------------------------------------------

  async signOut() {
    const me = this.me;
    await this.call?.leave();
    this._stopRealtime();
    await this.api.logout();
    if (me) for (const roomId of this.rooms.keys()) forgetMessages(me.id, roomId);
    this._reset();
    this.showAuth();
  }

  /** @param {string} message */
  signedOut(message) {
    if (this.shell === null) return;
    void this.call?.leave();
    this._stopRealtime();
    this._reset();
    this.showAuth();
    this.toast(message, true);
  }

  _stopRealtime() {
    for (const off of this._teardown.splice(0)) off();
    this.realtime?.close();
    this.realtime = null;
  }

  _reset() {
    this.view?.close();
    this.view = null;
    this.rooms.clear();
    this.liveCalls.clear();
    this.presence.clear();
    this.call = null;
  }

  /**
   * @param {string} text
   * @param {boolean} [error]
   */
  toast(text, error = false) {
    const area = document.getElementById('toasts');
    if (area === null) return;
    const item = h('div', { class: error ? 'toast error' : 'toast', role: error ? 'alert' : 'status' }, text);
    area.append(item);
    setTimeout(() => item.remove(), error ? 6000 : 3500);
  }
}

function deviceName() {
  const agent = navigator.userAgent;
  const browser = /Firefox\//.test(agent) ? 'Firefox' : /Edg\//.test(agent) ? 'Edge' : /Chrome\//.test(agent) ? 'Chrome' : /Safari\//.test(agent) ? 'Safari' : 'Browser';
  const system = /Android/.test(agent) ? 'Android' : /iPhone|iPad/.test(agent) ? 'iOS' : /Mac OS X/.test(agent) ? 'macOS' : /Windows/.test(agent) ? 'Windows' : /Linux/.test(agent) ? 'Linux' : '';
  return `${browser}${system ? ` on ${system}` : ''}`.slice(0, 64);
}
