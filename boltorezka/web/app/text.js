// What the app says: errors in words instead of codes, times, names, and mentions.

import { h } from './dom.js';

/** @type {Record<string, string>} */
const BY_CODE = {
  invalid_credentials: 'That username and password do not match.',
  username_taken: 'That username is taken. Try another one.',
  rate_limited: 'Too many attempts in a short time. Wait a moment and try again.',
  room_not_found: 'That room does not exist, or you cannot see it.',
  not_a_member: 'Join the room first.',
  room_archived: 'This room is archived, so it is read-only.',
  already_member: 'You are already in that room.',
  forbidden: 'You are not allowed to do that.',
  message_not_found: 'That message is gone.',
  message_deleted: 'That message was deleted.',
  idempotency_conflict: 'That message clashed with another one. Try sending it again.',
  session_revoked: 'You were signed out on this device.',
  invalid_refresh_token: 'Your session has ended. Please sign in again.',
  refresh_token_reused: 'Your session has ended. Please sign in again.',
  unauthenticated: 'Please sign in again.',
  token_expired: 'Your sign-in expired. Please sign in again.',
  invalid_token: 'Please sign in again.',
  call_not_found: 'That call has ended.',
  call_already_live: 'A call is already going on in this room.',
  invalid_call_transition: 'That call is over.',
  not_in_call: 'You are not in that call.',
  call_host_unavailable: 'The call could not be reached just now. Try again.',
  sfu_unavailable: 'Group calls are not available right now.',
  too_many_connections: 'You have too many tabs or devices connected. Close one and try again.',
  turn_not_configured: 'Calls through the relay are not set up on this server.',
  internal_error: 'Something went wrong on the server. Try again in a moment.',
  unavailable: 'The server is busy or restarting. Try again in a moment.',
  network_error: 'The server cannot be reached. Check your connection.',
  timeout: 'The server did not answer in time. Try again.',
  connection_lost: 'You are offline right now. Try again when the connection is back.',
  frame_too_large: 'That is too long to send.',
};

/** @type {Record<string, string>} */
const BY_FIELD = {
  username: 'Usernames are 3 to 32 characters: letters, digits, dots, dashes or underscores.',
  password: 'Passwords need at least 8 characters.',
  displayName: 'Display names are at most 64 characters.',
  name: 'Room names are 1 to 100 characters.',
  topic: 'Topics are at most 500 characters.',
  body: 'Messages are 1 to 4000 characters.',
};

/**
 * One sentence for the user about any error the SDK or the browser raised.
 * @param {unknown} error
 * @returns {string}
 */
export function describeError(error) {
  if (error && typeof error === 'object') {
    const { code, field, retryAfterMs, name, detail } = /** @type {any} */ (error);
    if (code === 'validation_failed') {
      // Problems name the field in `field`, or at least in the detail's "at `$.name`".
      const named = typeof field === 'string' ? field : /at `\$\.(?:payload\.)?(\w+)`/.exec(String(detail ?? ''))?.[1];
      if (named && BY_FIELD[named]) return BY_FIELD[named];
      return 'Some of that is not valid. Check it and try again.';
    }
    if (code === 'rate_limited' && typeof retryAfterMs === 'number' && retryAfterMs > 1500) {
      return `Too many attempts. Try again in ${Math.ceil(retryAfterMs / 1000)} seconds.`;
    }
    if (typeof code === 'string' && BY_CODE[code]) return BY_CODE[code];
    if (name === 'NotAllowedError') return 'The browser blocked the camera and microphone. Allow them in the site settings to join with video.';
    if (name === 'NotFoundError' || name === 'OverconstrainedError') return 'No camera or microphone was found.';
    if (name === 'NotReadableError') return 'The camera or microphone is in use by another app.';
    if (name === 'SecurityError') return 'Calls need a secure page (https or localhost).';
  }
  return 'Something went wrong. Try again.';
}

/** @param {string} iso */
export function timeOf(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** @param {string} iso */
export function dayOf(iso) {
  const date = new Date(iso);
  const today = new Date();
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (date.toDateString() === today.toDateString()) return 'Today';
  if (date.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return date.toLocaleDateString([], { weekday: 'long', month: 'long', day: 'numeric', year: date.getFullYear() === today.getFullYear() ? undefined : 'numeric' });
}

/** @param {string[]} names */
export function typingLine(names) {
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return 'Several people are typing…';
}

const MENTION = /(^|[^\w@])@([A-Za-z0-9_.-]+)/g;

/**
 * Message text with @mentions highlighted.
 * @param {string} body
 * @returns {(Node | string)[]}
 */
export function withMentions(body) {
  /** @type {(Node | string)[]} */
  const out = [];
  let last = 0;
  for (const match of body.matchAll(MENTION)) {
    const start = (match.index ?? 0) + match[1].length;
    if (start > last) out.push(body.slice(last, start));
    out.push(h('span', { class: 'mention-text' }, `@${match[2]}`));
    last = start + match[2].length + 1;
  }
  if (last < body.length) out.push(body.slice(last));
  return out;
}

/** @param {string} status */
export function statusWord(status) {
  return { online: 'Online', away: 'Away', dnd: 'Do not disturb', offline: 'Offline' }[status] ?? status;
}
