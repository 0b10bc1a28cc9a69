// One open room: its timeline (with scroll-back through history), the composer, typing
// and presence, read markers, editing and deleting, and the members panel.
//
// Messages come from three places, all in seq order: the cache of the last visit or the
// newest history page (REST), then the realtime socket, which resumes right after the last
// seq shown and delivers each later message once (the SDK fills any hole first). Older
// pages are prepended on scroll.

import { ConnectionLostError } from '../sdk/errors.js';
import { newId } from '../sdk/realtime.js';
import { loadMessages, saveMessages } from './cache.js';
import { avatar, h, icon, replace } from './dom.js';
import { dayOf, describeError, statusWord, timeOf, typingLine, withMentions } from './text.js';

const PAGE = 50;
const GROUP_MS = 5 * 60 * 1000;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_IDLE_MS = 4000;
const TYPING_SHOWN_MS = 6000;
const MAX_BODY = 4000;

/** @typedef {import('../sdk/types.js').Message} Message */

/**
 * @typedef {object} Pending
 * @property {string} body
 * @property {HTMLElement} node
 */

export class RoomView {
  /**
   * @param {import('./app.js').App} app
   * @param {import('./app.js').RoomEntry} entry
   */
  constructor(app, entry) {
    this.app = app;
    this.entry = entry;
    this.roomId = entry.room.id;
    this.realtime = /** @type {import('../sdk/realtime.js').RealtimeClient} */ (app.realtime);
    /** @type {Message[]} ascending seq, without holes */
    this.messages = [];
    /** @type {Map<number, HTMLElement>} */
    this.nodes = new Map();
    /** @type {Map<string, Pending>} by clientMsgId */
    this.pending = new Map();
    this.hasOlder = false;
    this.loadingOlder = false;
    /** @type {{seq: number, draft: string} | null} */
    this.editing = null;
    this.readSent = 0;
    /** @type {Map<string, import('../sdk/types.js').Member>} */
    this.members = new Map();
    /** @type {Map<string, ReturnType<typeof setTimeout>>} */
    this.typers = new Map();
    this.typingSentAt = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.typingIdle = null;
    this.membersOpen = window.matchMedia('(min-width: 1101px)').matches;
    this.closed = false;

    this.header = h('header', { class: 'room-head' });
    this.banner = h('div', { class: 'banner offline', hidden: true });
    this.callBanner = h('div', { class: 'banner', hidden: true });
    this.list = h('div', { class: 'messages' });
    this.pendingBox = h('div', { class: 'pending' });
    this.top = h('div', { class: 'timeline-start' });
    this.timeline = h('div', { class: 'timeline', role: 'log', 'aria-label': 'Messages', tabindex: 0 }, this.top, this.list, this.pendingBox);
    this.typingBox = h('div', { class: 'typing', 'aria-live': 'polite' });
    this.input = h('textarea', {
      class: 'textarea',
      rows: 1,
      placeholder: 'Write a message…',
      'aria-label': 'Message',
      maxLength: MAX_BODY * 2,
      oninput: () => this.onInput(),
      onkeydown: (/** @type {KeyboardEvent} */ event) => {
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.send();
        }
      },
    });
    this.sendButton = h('button', { class: 'btn primary', type: 'submit', 'aria-label': 'Send' }, icon('send'));
    this.composer = h(
      'form',
      {
        class: 'composer',
        onsubmit: (/** @type {Event} */ event) => {
          event.preventDefault();
          this.send();
        },
      },
      this.input,
      this.sendButton,
    );
    this.membersPanel = h('aside', { class: 'members', 'aria-label': 'Members', hidden: !this.membersOpen });
    this.column = h('section', { class: 'room-column' }, this.header, this.banner, this.callBanner, this.timeline, this.typingBox, this.composer);
    this.element = h('div', { class: 'room-view' }, this.column);
    this._observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) void this.loadOlder();
    }, { root: this.timeline, rootMargin: '200px 0px 0px 0px' });
    this._observer.observe(this.top);
    this._onScroll = () => this.maybeMarkRead();
    this.timeline.addEventListener('scroll', this._onScroll, { passive: true });
    this._onVisible = () => this.maybeMarkRead();
    document.addEventListener('visibilitychange', this._onVisible);
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._saveTimer = null;
    // A reload resumes from what was shown, so it must be stored before the page goes.
    this._onPageHide = () => this.save();
    window.addEventListener('pagehide', this._onPageHide);
    this.renderHeader();
    this.renderCallBanner();
    this.renderTop();
    this.showConnection(this.realtime.state);
  }

  // --- opening and closing --------------------------------------------------------------

  async open() {
    const me = /** @type {import('../sdk/types.js').User} */ (this.app.me);
    void this.loadMembers();
    const cached = loadMessages(me.id, this.roomId);
    const newest = this.entry.room.lastSeq;
    // A cache far behind would mean a long replay; the newest page is quicker then.
    const usable = cached.length > 0 && newest - cached[cached.length - 1].seq <= 200;
    try {
      if (usable) {
        this.messages = cached;
        this.hasOlder = cached[0].seq > 1;
      } else {
        const page = await this.app.api.history(this.roomId, { limit: PAGE });
        if (this.closed) return;
        this.messages = page.messages;
        this.hasOlder = page.hasMore;
      }
    } catch (error) {
      this.app.toast(describeError(error), true);
    }
    this.renderAll({ toBottom: true });
    const lastSeq = this.messages.at(-1)?.seq ?? 0;
    try {
      await this.realtime.join(this.roomId, { lastSeq });
    } catch (error) {
      if (!this.closed && !(error instanceof ConnectionLostError)) this.app.toast(describeError(error), true);
      return;
    }
    if (this.closed) return;
    this.maybeMarkRead();
    // Edits and deletions of what was cached happened unseen: refresh their state.
    if (usable) void this.refreshWindow();
  }

  async refreshWindow() {
    try {
      const first = this.messages[0]?.seq;
      if (first === undefined) return;
      const page = await this.app.api.history(this.roomId, { after: first - 1, limit: 200 });
      for (const message of page.messages) {
        const held = this.find(message.seq);
        if (held && (held.editedAt !== message.editedAt || held.deletedAt !== message.deletedAt)) this.onEdited(message);
      }
    } catch {
      // The cached state stays; live edits still arrive.
    }
  }

  save() {
    if (this._saveTimer !== null) clearTimeout(this._saveTimer);
    this._saveTimer = null;
    const me = this.app.me;
    if (me) saveMessages(me.id, this.roomId, this.messages);
  }

  saveSoon() {
    this._saveTimer ??= setTimeout(() => this.save(), 500);
  }

  close() {
    if (this.closed) return;
    this.save();
    this.closed = true;
    this._observer.disconnect();
    document.removeEventListener('visibilitychange', this._onVisible);
    window.removeEventListener('pagehide', this._onPageHide);
    for (const timer of this.typers.values()) clearTimeout(timer);
    this.stopTyping();
    void this.realtime.leave(this.roomId);
  }

  // --- header, banners and members --------------------------------------------------------

  renderHeader() {
    const room = this.entry.room;
    const online = [...this.members.keys()].filter((id) => (this.app.presence.get(id) ?? 'offline') !== 'offline').length;
    const count = this.members.size;
    const sub = [room.topic, count ? `${count} member${count === 1 ? '' : 's'} · ${online} online` : ''].filter(Boolean).join(' · ');
    const kindIcon = room.kind === 'public' ? 'hash' : room.kind === 'private' ? 'lock' : 'user';
    replace(
      this.header,
      h('a', { class: 'icon-btn back', href: '#/', 'aria-label': 'Back to rooms' }, icon('back')),
      h('div', { class: 'title' }, h('h1', null, icon(kindIcon), ' ', this.app.roomName(this.roomId)), h('div', { class: 'sub' }, sub || (room.kind === 'public' ? 'Public room' : 'Private room'))),
      h(
        'button',
        { class: 'icon-btn', type: 'button', title: 'Start a video call', 'aria-label': 'Start a video call', onclick: () => void this.app.startCall(this.roomId, this.app.liveCalls.get(this.roomId)?.callId ?? null) },
        icon('video'),
      ),
      h(
        'button',
        { class: `icon-btn${this.membersOpen ? ' on' : ''}`, type: 'button', title: 'Members', 'aria-label': 'Members', 'aria-pressed': String(this.membersOpen), onclick: () => this.toggleMembers() },
        icon('users'),
      ),
    );
    const archived = room.archivedAt !== null;
    this.input.disabled = archived;
    this.sendButton.disabled = archived;
    this.input.placeholder = archived ? 'This room is archived: it is read-only.' : `Message ${room.kind === 'direct' ? this.app.roomName(this.roomId) : `#${room.name}`}`;
  }

  toggleMembers() {
    this.membersOpen = !this.membersOpen;
    this.membersPanel.hidden = !this.membersOpen;
    if (this.membersOpen && !this.membersPanel.isConnected) this.element.append(this.membersPanel);
    this.renderHeader();
  }

  /** @param {import('../sdk/realtime.js').ConnectionState} state */
  showConnection(state) {
    if (state === 'open' || state === 'idle' || state === 'connecting') {
      this.banner.hidden = true;
      return;
    }
    this.banner.hidden = false;
    if (state === 'reconnecting') replace(this.banner, h('span', { class: 'grow' }, 'Connection lost. Reconnecting… Messages you send will go out when it is back.'));
    else {
      replace(
        this.banner,
        h('span', { class: 'grow' }, 'You are disconnected.'),
        h('button', { class: 'btn', type: 'button', onclick: () => location.reload() }, 'Reconnect'),
      );
    }
  }

  renderCallBanner() {
    const live = this.app.liveCalls.get(this.roomId);
    const inIt = this.app.call !== null && this.app.call.roomId === this.roomId;
    if (!live || inIt) {
      this.callBanner.hidden = true;
      return;
    }
    const names = live.participants.map((p) => this.app.nameOf(p.userId));
    this.callBanner.hidden = false;
    replace(
      this.callBanner,
      icon('video'),
      h('span', { class: 'grow' }, `A call is going on${names.length ? ` with ${names.join(', ')}` : ''}.`),
      h('button', { class: 'btn primary', type: 'button', onclick: () => void this.app.startCall(this.roomId, live.callId) }, 'Join call'),
    );
  }

  async loadMembers() {
    try {
      const members = await this.app.api.members(this.roomId);
      if (this.closed) return;
      this.members = new Map(members.map((m) => [m.userId, m]));
      for (const member of members) this.app.rememberUser(member.userId, member.username, member.displayName);
      this.renderMembers();
      this.refreshNames();
    } catch {
      // The panel stays as it was.
    }
  }

  renderMembers() {
    if (this.closed) return;
    this.renderHeader();
    if (this.membersOpen && !this.membersPanel.isConnected) this.element.append(this.membersPanel);
    const rank = { online: 0, away: 1, dnd: 2, offline: 3 };
    const members = [...this.members.values()].sort((a, b) => {
      const sa = this.app.presence.get(a.userId) ?? 'offline';
      const sb = this.app.presence.get(b.userId) ?? 'offline';
      return rank[sa] - rank[sb] || (a.displayName || a.username).localeCompare(b.displayName || b.username);
    });
    const me = this.app.me?.id;
    replace(
      this.membersPanel,
      h('div', { class: 'section-title first' }, 'Members'),
      h(
        'div',
        { class: 'members-list' },
        members.map((member) => {
          const status = this.app.presence.get(member.userId) ?? 'offline';
          const name = member.displayName || member.username;
          return h(
            'div',
            { class: `member ${status}`, dataset: { userId: member.userId, status } },
            avatar({ id: member.userId, name, status, small: true }),
            h('span', { class: 'name', title: `${name} (@${member.username}) · ${statusWord(status)}` }, name, member.userId === me ? ' (you)' : ''),
            member.role !== 'member' ? h('span', { class: 'role' }, member.role) : null,
            member.userId !== me && this.entry.room.kind !== 'direct'
              ? h(
                  'button',
                  { class: 'icon-btn', type: 'button', title: `Message ${name}`, 'aria-label': `Message ${name}`, onclick: () => void this.directMessage(member.userId) },
                  icon('chat'),
                )
              : null,
          );
        }),
      ),
    );
  }

  /** @param {string} userId */
  async directMessage(userId) {
    try {
      const result = await this.app.api.request('POST', '/v1/rooms/direct', { body: { userId } });
      await this.app.loadRooms();
      this.app.goTo(result.room.id);
    } catch (error) {
      this.app.toast(describeError(error), true);
    }
  }

  refreshNames() {
    if (this.closed) return;
    for (const [seq, node] of this.nodes) {
      const message = this.find(seq);
      if (!message) continue;
      const name = this.app.nameOf(message.senderId);
      const author = node.querySelector('.author');
      if (author) author.textContent = name;
      node.querySelector('.avatar')?.replaceWith(avatar({ id: message.senderId, name }));
    }
    this.renderTyping();
  }

  // --- the timeline ---------------------------------------------------------------------

  /** @param {number} seq */
  find(seq) {
    const first = this.messages[0]?.seq;
    if (first === undefined) return undefined;
    const message = this.messages[seq - first];
    return message?.seq === seq ? message : undefined;
  }

  atBottom() {
    const t = this.timeline;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 48;
  }

  scrollToBottom() {
    this.timeline.scrollTop = this.timeline.scrollHeight;
  }

  renderTop() {
    if (this.hasOlder) {
      replace(this.top, this.loadingOlder ? 'Loading earlier messages…' : h('button', { class: 'btn ghost', type: 'button', onclick: () => void this.loadOlder() }, 'Load earlier messages'));
    } else {
      const room = this.entry.room;
      replace(this.top, room.kind === 'direct' ? 'This is the start of your conversation.' : `This is the start of ${room.kind === 'public' ? '#' : ''}${room.name}.`);
    }
  }

  /** @param {{toBottom?: boolean}} [options] */
  renderAll({ toBottom = false } = {}) {
    const t = this.timeline;
    const fromBottom = t.scrollHeight - t.scrollTop;
    this.nodes.clear();
    const fragment = document.createDocumentFragment();
    /** @type {Message | undefined} */
    let previous;
    for (const message of this.messages) {
      if (!previous || dayOf(previous.createdAt) !== dayOf(message.createdAt)) fragment.append(h('div', { class: 'day' }, dayOf(message.createdAt)));
      const node = this.messageNode(message, previous);
      this.nodes.set(message.seq, node);
      fragment.append(node);
      previous = message;
    }
    this.list.replaceChildren(fragment);
    this.renderTop();
    if (toBottom) this.scrollToBottom();
    else t.scrollTop = t.scrollHeight - fromBottom;
  }

  /**
   * @param {Message} message
   * @param {Message | undefined} previous
   */
  messageNode(message, previous) {
    const me = this.app.me?.id;
    const own = message.senderId === me;
    const deleted = Boolean(message.deletedAt);
    const grouped =
      previous !== undefined &&
      previous.senderId === message.senderId &&
      !previous.deletedAt &&
      new Date(message.createdAt).getTime() - new Date(previous.createdAt).getTime() < GROUP_MS &&
      dayOf(previous.createdAt) === dayOf(message.createdAt);
    const name = this.app.nameOf(message.senderId);
    const canDelete = !deleted && (own || this.entry.myRole === 'owner' || this.entry.myRole === 'admin');
    const editing = this.editing?.seq === message.seq && own && !deleted;
    const text = deleted
      ? h('p', { class: 'text' }, 'This message was deleted.')
      : h('p', { class: 'text' }, withMentions(message.body), message.editedAt ? h('span', { class: 'edited', title: `Edited ${timeOf(message.editedAt)}` }, '(edited)') : null);
    const actions = h('div', { class: 'msg-actions' });
    if (!deleted && own) {
      actions.append(h('button', { class: 'icon-btn', type: 'button', title: 'Edit', 'aria-label': 'Edit message', onclick: () => this.startEdit(message.seq) }, icon('edit')));
    }
    if (canDelete) {
      actions.append(h('button', { class: 'icon-btn', type: 'button', title: 'Delete', 'aria-label': 'Delete message', onclick: () => this.confirmDelete(message, actions) }, icon('trash')));
    }
    return h(
      'article',
      {
        class: `msg${own ? ' own' : ''}${deleted ? ' deleted' : ''}${grouped ? ' grouped' : ''}`,
        dataset: { seq: String(message.seq), messageId: message.id },
      },
      avatar({ id: message.senderId, name }),
      h(
        'div',
        { class: 'msg-main' },
        grouped ? null : h('div', { class: 'meta' }, h('span', { class: 'author' }, name), h('time', { datetime: message.createdAt, title: new Date(message.createdAt).toLocaleString() }, timeOf(message.createdAt))),
        editing ? this.editBox(message) : h('div', { class: 'bubble' }, text),
      ),
      editing ? null : actions,
    );
  }

  /** @param {Message} message */
  onMessage(message) {
    if (this.closed) return;
    const pending = this.pending.get(message.clientMsgId);
    if (pending && message.senderId === this.app.me?.id) {
      pending.node.remove();
      this.pending.delete(message.clientMsgId);
    }
    const last = this.messages.at(-1);
    if (last !== undefined && message.seq <= last.seq) {
      if (this.find(message.seq)) this.onEdited(message);
      return;
    }
    const stick = this.atBottom() || message.senderId === this.app.me?.id;
    if (last !== undefined && message.seq !== last.seq + 1) {
      // Only the SDK's gate feeds this, so a jump means the page we started from was older
      // than the resume point; start the view over from what is known to be contiguous.
      this.messages = [message];
      this.hasOlder = message.seq > 1;
      this.renderAll({ toBottom: true });
      return;
    }
    this.messages.push(message);
    this.entry.room.lastSeq = Math.max(this.entry.room.lastSeq, message.seq);
    if (!last || dayOf(last.createdAt) !== dayOf(message.createdAt)) this.list.append(h('div', { class: 'day' }, dayOf(message.createdAt)));
    const node = this.messageNode(message, last);
    this.nodes.set(message.seq, node);
    this.list.append(node);
    if (this.messages.length === 1) this.renderTop();
    if (this.typers.has(message.senderId)) this.onTyping(message.senderId, false);
    if (stick) this.scrollToBottom();
    this.maybeMarkRead();
    this.saveSoon();
  }

  /** @param {Message} message */
  onEdited(message) {
    const index = this.messages.findIndex((m) => m.seq === message.seq);
    if (index < 0) return;
    this.messages[index] = message;
    this.saveSoon();
    const node = this.nodes.get(message.seq);
    if (node) {
      const fresh = this.messageNode(message, this.messages[index - 1]);
      node.replaceWith(fresh);
      this.nodes.set(message.seq, fresh);
    }
  }

  /** @param {string} messageId @param {number} seq */
  onDeleted(messageId, seq) {
    const held = this.find(seq);
    if (!held || held.id !== messageId) return;
    if (this.editing?.seq === seq) this.editing = null;
    this.onEdited({ ...held, body: '', deletedAt: new Date().toISOString() });
  }

  /** What was shown is not this room's history any more: show its newest page instead. */
  async onReset() {
    this.messages = [];
    this.renderAll({ toBottom: true });
    try {
      const page = await this.app.api.history(this.roomId, { limit: PAGE });
      if (this.closed) return;
      const first = this.messages[0]?.seq;
      const older = page.messages.filter((m) => first === undefined || m.seq < first);
      // Live messages may have arrived meanwhile; join the two only where they meet.
      if (first === undefined || older.at(-1)?.seq === first - 1) {
        this.messages = [...older, ...this.messages];
        this.hasOlder = page.hasMore;
        this.renderAll({ toBottom: true });
      }
    } catch (error) {
      this.app.toast(describeError(error), true);
    }
  }

  async loadOlder() {
    const first = this.messages[0];
    if (!this.hasOlder || this.loadingOlder || first === undefined) return;
    this.loadingOlder = true;
    this.renderTop();
    try {
      const page = await this.app.api.history(this.roomId, { before: first.seq, limit: PAGE });
      if (this.closed || this.messages[0] !== first) return;
      const older = page.messages.filter((m) => m.seq < first.seq);
      this.messages = [...older, ...this.messages];
      this.hasOlder = page.hasMore && older.length > 0;
    } catch (error) {
      this.app.toast(describeError(error), true);
    } finally {
      this.loadingOlder = false;
    }
    this.renderAll();
  }

  // --- edit and delete ------------------------------------------------------------------

  /** @param {number} seq */
  startEdit(seq) {
    const message = this.find(seq);
    if (!message) return;
    this.editing = { seq, draft: message.body };
    this.onEdited(message);
    const box = this.nodes.get(seq)?.querySelector('textarea');
    box?.focus();
    box?.setSelectionRange(box.value.length, box.value.length);
  }

  /** @param {Message} message */
  editBox(message) {
    const editing = /** @type {{seq: number, draft: string}} */ (this.editing);
    const area = h('textarea', {
      class: 'textarea',
      value: editing.draft,
      'aria-label': 'Edit message',
      rows: 2,
      oninput: () => {
        editing.draft = area.value;
      },
      onkeydown: (/** @type {KeyboardEvent} */ event) => {
        if (event.key === 'Escape') cancel();
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          void save();
        }
      },
    });
    const cancel = () => {
      this.editing = null;
      this.onEdited(message);
    };
    const save = async () => {
      const body = area.value.trim();
      if (!body) return;
      if (body === message.body) return cancel();
      area.disabled = true;
      try {
        const updated = await this.realtime.editMessage(this.roomId, message.id, body);
        this.editing = null;
        this.onEdited(updated);
      } catch (error) {
        area.disabled = false;
        this.app.toast(describeError(error), true);
      }
    };
    return h(
      'div',
      { class: 'edit-box' },
      area,
      h(
        'div',
        { class: 'row' },
        h('button', { class: 'btn primary', type: 'button', onclick: () => void save() }, 'Save'),
        h('button', { class: 'btn ghost', type: 'button', onclick: cancel }, 'Cancel'),
        h('span', null, 'Enter to save · Esc to cancel'),
      ),
    );
  }

  /**
   * @param {Message} message
   * @param {HTMLElement} actions
   */
  confirmDelete(message, actions) {
    const restore = [...actions.childNodes];
    replace(
      actions,
      h('span', { class: 'confirm-text' }, 'Delete?'),
      h(
        'button',
        {
          class: 'btn danger small',
          type: 'button',
          onclick: async () => {
            try {
              await this.realtime.deleteMessage(this.roomId, message.id);
              this.onDeleted(message.id, message.seq);
            } catch (error) {
              this.app.toast(describeError(error), true);
              replace(actions, ...restore);
            }
          },
        },
        'Delete',
      ),
      h('button', { class: 'btn ghost small', type: 'button', onclick: () => replace(actions, ...restore) }, 'Keep'),
    );
  }

  // --- sending ----------------------------------------------------------------------------

  send() {
    const body = this.input.value.trim();
    if (!body) return;
    if ([...body].length > MAX_BODY) {
      this.app.toast('Messages are at most 4000 characters.', true);
      return;
    }
    this.input.value = '';
    this.autoGrow();
    this.stopTyping();
    this.post(body, newId());
  }

  /** @param {string} body @param {string} clientMsgId */
  post(body, clientMsgId) {
    const me = /** @type {import('../sdk/types.js').User} */ (this.app.me);
    const node = h(
      'article',
      { class: 'msg own pending', dataset: { clientMsgId } },
      avatar({ id: me.id, name: me.displayName || me.username }),
      h('div', { class: 'msg-main' }, h('div', { class: 'meta' }, h('span', { class: 'author' }, me.displayName || me.username), h('time', null, 'sending…')), h('div', { class: 'bubble' }, h('p', { class: 'text' }, body))),
    );
    this.pending.set(clientMsgId, { body, node });
    this.pendingBox.append(node);
    this.scrollToBottom();
    this.realtime.sendMessage(this.roomId, body, { clientMsgId }).catch((error) => {
      if (!this.pending.has(clientMsgId)) return;
      node.classList.add('failed');
      const reason = describeError(error);
      replace(
        /** @type {HTMLElement} */ (node.querySelector('.meta time')),
        h('span', null, `Not sent: ${reason} `),
        h('button', { class: 'btn ghost small', type: 'button', onclick: () => { node.remove(); this.pending.delete(clientMsgId); this.post(body, clientMsgId); } }, 'Retry'),
        h('button', { class: 'btn ghost small', type: 'button', onclick: () => { node.remove(); this.pending.delete(clientMsgId); } }, 'Discard'),
      );
    });
  }

  autoGrow() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight + 2, 160)}px`;
  }

  onInput() {
    this.autoGrow();
    if (!this.input.value.trim()) {
      this.stopTyping();
      return;
    }
    const now = Date.now();
    if (now - this.typingSentAt > TYPING_SEND_EVERY_MS) {
      this.typingSentAt = now;
      this.realtime.typing(this.roomId, true).catch(() => {});
    }
    if (this.typingIdle !== null) clearTimeout(this.typingIdle);
    this.typingIdle = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  stopTyping() {
    if (this.typingIdle !== null) clearTimeout(this.typingIdle);
    this.typingIdle = null;
    if (this.typingSentAt === 0) return;
    this.typingSentAt = 0;
    this.realtime.typing(this.roomId, false).catch(() => {});
  }

  // --- typing, reading ----------------------------------------------------------------------

  /** @param {string} userId @param {boolean} active */
  onTyping(userId, active) {
    const timer = this.typers.get(userId);
    if (timer !== undefined) clearTimeout(timer);
    this.typers.delete(userId);
    if (active) this.typers.set(userId, setTimeout(() => this.onTyping(userId, false), TYPING_SHOWN_MS));
    this.renderTyping();
  }

  renderTyping() {
    const names = [...this.typers.keys()].map((id) => this.app.nameOf(id));
    if (names.length === 0) replace(this.typingBox);
    else replace(this.typingBox, h('span', { class: 'dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')), typingLine(names));
  }

  maybeMarkRead() {
    const last = this.messages.at(-1);
    if (this.closed || last === undefined || last.seq <= this.readSent) return;
    if (document.visibilityState !== 'visible' || !this.atBottom() || this.realtime.state !== 'open') return;
    this.readSent = last.seq;
    this.entry.room.lastSeq = Math.max(this.entry.room.lastSeq, last.seq);
    this.realtime
      .markRead(this.roomId, last.seq)
      .then((marker) => {
        this.entry.unread = marker.unreadCount;
        this.app.renderRooms();
      })
      .catch(() => {
        this.readSent = 0;
      });
  }

}
