// Dialogs: a new room, browsing public rooms, settings.

import { h, icon } from './dom.js';
import { describeError } from './text.js';

/**
 * A modal <dialog> that removes itself when closed.
 * @param {string} title
 * @param {(close: () => void) => (Node | string | null)[]} body
 */
function modal(title, body) {
  const dialog = h('dialog', { 'aria-label': title });
  const close = () => dialog.close();
  dialog.append(h('div', { class: 'dialog-body' }, h('h2', null, title), ...body(close)));
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/** @param {import('./app.js').App} app */
export function createRoomDialog(app) {
  const error = h('p', { class: 'error-text', role: 'alert', hidden: true });
  const name = h('input', { class: 'input', id: 'room-name', required: true, maxLength: 100, placeholder: 'general', autocomplete: 'off' });
  const topic = h('input', { class: 'input', id: 'room-topic', maxLength: 500, placeholder: 'What is this room about?', autocomplete: 'off' });
  const choice = (/** @type {string} */ value, /** @type {string} */ label, /** @type {string} */ hint, /** @type {boolean} */ checked) =>
    h('label', { class: 'choice' }, h('input', { type: 'radio', name: 'kind', value, checked }), h('span', null, h('strong', null, label), h('small', null, hint)));
  const submit = h('button', { class: 'btn primary', type: 'submit' }, 'Create room');
  modal('New room', (close) => [
    h(
      'form',
      {
        onsubmit: async (/** @type {SubmitEvent} */ event) => {
          event.preventDefault();
          const form = /** @type {HTMLFormElement} */ (event.target);
          const kind = /** @type {'public' | 'private'} */ (new FormData(form).get('kind') ?? 'public');
          submit.disabled = true;
          error.hidden = true;
          try {
            const room = await app.api.createRoom({ name: name.value.trim(), topic: topic.value.trim(), kind });
            await app.loadRooms();
            close();
            app.goTo(room.id);
          } catch (failure) {
            error.textContent = describeError(failure);
            error.hidden = false;
            submit.disabled = false;
          }
        },
      },
      error,
      h('div', { class: 'field' }, h('label', { for: 'room-name' }, 'Name'), name),
      h('div', { class: 'field' }, h('label', { for: 'room-topic' }, 'Topic ', h('span', { class: 'hint' }, '(optional)')), topic),
      choice('public', 'Public', 'Anyone on this server can find it and join.', true),
      choice('private', 'Private', 'Only people who are added can see it.', false),
      h('div', { class: 'dialog-actions' }, h('button', { class: 'btn ghost', type: 'button', onclick: close }, 'Cancel'), submit),
    ),
  ]);
  name.focus();
}

/** @param {import('./app.js').App} app */
export function browseRoomsDialog(app) {
  const results = h('div', { class: 'result-list', role: 'list' });
  const search = h('input', { class: 'input', type: 'search', placeholder: 'Search public rooms', 'aria-label': 'Search public rooms', autocomplete: 'off' });
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    try {
      const page = await app.api.publicRooms({ q: search.value.trim() });
      if (mine !== generation) return;
      results.replaceChildren();
      if (page.rooms.length === 0) results.append(h('p', { class: 'empty-note' }, search.value ? 'No public room matches that.' : 'There are no public rooms yet. Create the first one!'));
      for (const room of page.rooms) {
        const joined = app.rooms.has(room.id);
        const button = h('button', { class: joined ? 'btn' : 'btn primary', type: 'button' }, joined ? 'Open' : 'Join');
        button.addEventListener('click', async () => {
          button.disabled = true;
          try {
            if (!joined) await app.api.joinRoom(room.id);
            await app.loadRooms();
            dialog.close();
            app.goTo(room.id);
          } catch (error) {
            button.disabled = false;
            app.toast(describeError(error), true);
          }
        });
        results.append(
          h('div', { class: 'result', role: 'listitem' }, icon('hash'), h('div', { class: 'grow' }, h('strong', null, room.name), h('small', null, room.topic || 'No topic')), button),
        );
      }
    } catch (error) {
      results.replaceChildren(h('p', { class: 'error-text' }, describeError(error)));
    }
  };
  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(load, 250);
  });
  const dialog = modal('Public rooms', (close) => [search, results, h('div', { class: 'dialog-actions' }, h('button', { class: 'btn', type: 'button', onclick: close }, 'Close'))]);
  void load();
  search.focus();
}

/** @param {import('./app.js').App} app */
export function settingsDialog(app) {
  const relay = h('input', { type: 'checkbox', id: 'relay-only', checked: app.relayOnly });
  relay.addEventListener('change', () => {
    app.relayOnly = relay.checked;
  });
  const me = app.me;
  modal('Settings', (close) => [
    me ? h('p', { class: 'muted-line' }, `Signed in as @${me.username}.`) : null,
    h(
      'label',
      { class: 'choice', for: 'relay-only' },
      relay,
      h('span', null, h('strong', null, 'Relay calls through the server'), h('small', null, 'Hides your network address from the people you call. Uses the TURN relay, which can add a little delay. Applies to the next call.')),
    ),
    passwordForm(app),
    h('div', { class: 'dialog-actions' }, h('button', { class: 'btn primary', type: 'button', onclick: close }, 'Done')),
  ]);
}

/**
 * Change the password; the server signs every other device out.
 * @param {import('./app.js').App} app
 */
function passwordForm(app) {
  const status = h('p', { class: 'muted-line', role: 'status', hidden: true });
  const current = h('input', { class: 'input', id: 'current-password', type: 'password', required: true, maxLength: 256, autocomplete: 'current-password' });
  const fresh = h('input', { class: 'input', id: 'new-password', type: 'password', required: true, minLength: 8, maxLength: 256, autocomplete: 'new-password' });
  const submit = h('button', { class: 'btn', type: 'submit' }, 'Change password');
  return h(
    'form',
    {
      onsubmit: async (/** @type {SubmitEvent} */ event) => {
        event.preventDefault();
        submit.disabled = true;
        status.hidden = true;
        try {
          const { sessionsRevoked } = await app.api.changePassword({ currentPassword: current.value, newPassword: fresh.value });
          status.textContent = sessionsRevoked ? `Password changed. ${sessionsRevoked} other device(s) were signed out.` : 'Password changed.';
          current.value = '';
          fresh.value = '';
        } catch (failure) {
          status.textContent = describeError(failure);
        }
        status.hidden = false;
        submit.disabled = false;
      },
    },
    h('h3', null, 'Password'),
    status,
    h('div', { class: 'field' }, h('label', { for: 'current-password' }, 'Current password'), current),
    h('div', { class: 'field' }, h('label', { for: 'new-password' }, 'New password ', h('span', { class: 'hint' }, '(at least 8 characters)')), fresh),
    h('div', { class: 'dialog-actions' }, submit),
  );
}
