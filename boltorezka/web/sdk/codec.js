// The envelope codec of the realtime protocol (protocol/README.md), as the server's
// boltorezka/realtime/protocol.py defines it. Outgoing requests are checked here with the
// server's own rules, so a bad request fails at once with the code the server would have
// answered, instead of after a round trip; protocol/vectors pins both sides to one
// behaviour, and test/codec.test.js runs every vector through this file.
//
// One difference is inherent to JSON.parse: `1.0` and `1e3` arrive as the integers 1 and
// 1000, so a frame the server refuses for a float where an integer belongs passes here.
// This codec never writes such frames, so it only matters when decoding foreign text.

import { ProtocolError } from './errors.js';

export const PROTOCOL_VERSION = 1;
export const SUPPORTED_VERSIONS = Object.freeze([1]);
export const MAX_SAFE_INTEGER = Number.MAX_SAFE_INTEGER; // 2^53 - 1, the protocol's bound
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024;

export const FRAME_TOO_LARGE = 'frame_too_large';
export const MALFORMED_JSON = 'malformed_json';
export const UNSUPPORTED_VERSION = 'unsupported_version';
export const UNKNOWN_TYPE = 'unknown_type';
export const MISSING_REQUEST_ID = 'missing_request_id';
export const VALIDATION_FAILED = 'validation_failed';

const REQUEST_ID_MAX = 64;

/**
 * @typedef {{kind: 'string', min?: number, max: number}
 *   | {kind: 'uuid'}
 *   | {kind: 'int', min: number, max: number}
 *   | {kind: 'bool'}
 *   | {kind: 'enum', values: readonly string[]}
 *   | {kind: 'object', fields: Record<string, FieldSpec>}} FieldType
 */

/**
 * `required`: must be present. `nullable`: null is a value (kept). Otherwise an optional
 * field without `default` treats null as absent, and one with a `default` refuses null;
 * either way the canonical form leaves out absent fields and fields equal to their default.
 * @typedef {{type: FieldType, required?: boolean, nullable?: boolean, default?: string | boolean}} FieldSpec
 */

/** @type {FieldType} */
const UUID = { kind: 'uuid' };
/** @type {FieldType} */
const SEQ = { kind: 'int', min: 0, max: MAX_SAFE_INTEGER };
/** @type {FieldType} */
const TOKEN = { kind: 'string', min: 1, max: 4096 };
/** @type {FieldType} */
const SDP = { kind: 'string', min: 1, max: 60000 };

/** @param {FieldType} type @returns {FieldSpec} */
const req = (type) => ({ type, required: true });
/** @param {FieldType} type @returns {FieldSpec} */
const opt = (type) => ({ type });

/** @type {Record<string, FieldSpec>} */
const ROOM = { roomId: req(UUID) };
/** @type {Record<string, FieldSpec>} */
const CALL = { callId: req(UUID) };
/** @type {Record<string, FieldSpec>} */
const SDP_PAYLOAD = {
  callId: req(UUID),
  sdp: req(SDP),
  to: opt(UUID),
  iceRestart: { type: { kind: 'bool' }, default: false },
};

/**
 * Every client→server message type and its payload fields.
 * @type {Readonly<Record<string, Record<string, FieldSpec>>>}
 */
export const CLIENT_MESSAGES = Object.freeze({
  auth: { token: req(TOKEN) },
  'auth.refresh': { token: req(TOKEN) },
  ping: { ts: opt({ kind: 'int', min: 0, max: MAX_SAFE_INTEGER }) },
  'room.join': { roomId: req(UUID), lastSeq: opt(SEQ) },
  'room.leave': ROOM,
  'presence.set': { status: req({ kind: 'enum', values: ['online', 'away', 'dnd'] }) },
  'typing.start': ROOM,
  'typing.stop': ROOM,
  'chat.send': {
    roomId: req(UUID),
    clientMsgId: req({ kind: 'string', min: 1, max: 64 }),
    body: req({ kind: 'string', min: 1, max: 4000 }),
    replyTo: opt(UUID),
  },
  'chat.edit': {
    roomId: req(UUID),
    messageId: req(UUID),
    body: req({ kind: 'string', min: 1, max: 4000 }),
  },
  'chat.delete': { roomId: req(UUID), messageId: req(UUID) },
  'chat.read': { roomId: req(UUID), seq: req(SEQ) },
  'chat.history': {
    roomId: req(UUID),
    before: opt(SEQ),
    after: opt(SEQ),
    limit: opt({ kind: 'int', min: 1, max: 200 }),
  },
  'call.start': {
    roomId: req(UUID),
    mode: { type: { kind: 'enum', values: ['p2p', 'sfu', 'auto'] }, default: 'auto' },
  },
  'call.join': CALL,
  'call.leave': CALL,
  'call.end': CALL,
  'rtc.offer': SDP_PAYLOAD,
  'rtc.answer': SDP_PAYLOAD,
  'rtc.ice': {
    callId: req(UUID),
    candidate: {
      type: {
        kind: 'object',
        fields: {
          candidate: req({ kind: 'string', max: 2048 }),
          sdpMid: opt({ kind: 'string', max: 64 }),
          sdpMLineIndex: opt({ kind: 'int', min: 0, max: 1024 }),
          usernameFragment: opt({ kind: 'string', max: 256 }),
        },
      },
      required: true,
      nullable: true,
    },
    to: opt(UUID),
  },
  'call.telemetry': {
    callId: req(UUID),
    outcome: req({ kind: 'enum', values: ['connected', 'media', 'failed'] }),
    setupMs: opt({ kind: 'int', min: 0, max: 600000 }),
    iceFailed: { type: { kind: 'bool' }, default: false },
    candidateType: opt({ kind: 'enum', values: ['host', 'srflx', 'prflx', 'relay'] }),
  },
});

/** Types whose payload may be left out of the frame (it then decodes as `{}`). */
const PAYLOAD_OPTIONAL = new Set(['ping']);

/** Every server→client message type this SDK knows; others are ignored, as they must be. */
export const SERVER_TYPES = Object.freeze(
  new Set([
    'server.capabilities',
    'ack',
    'nack',
    'error',
    'pong',
    'auth.expiring',
    'server.draining',
    'room.presence',
    'member.joined',
    'member.left',
    'member.banned',
    'member.muted',
    'member.unmuted',
    'presence.changed',
    'typing',
    'chat.message',
    'chat.edited',
    'chat.deleted',
    'chat.read',
    'notification',
    'room.updated',
    'room.deleted',
    'call.state',
    'rtc.offer',
    'rtc.answer',
    'rtc.ice',
  ]),
);

const UUID_HYPHENATED = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const UUID_HEX = /^[0-9a-f]{32}$/i;
const encoder = new TextEncoder();

/** @param {string} text */
export function utf8Length(text) {
  return encoder.encode(text).length;
}

/** Lengths count Unicode code points, as the server does (not UTF-16 units). @param {string} text */
function codePoints(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

/** @param {unknown} value @returns {value is Record<string, unknown>} */
function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** @param {unknown} value */
function describe(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'int' : 'float';
  if (typeof value === 'string') return 'str';
  return typeof value;
}

/** @param {unknown} value @returns {boolean} */
function hasNul(value) {
  if (typeof value === 'string') return value.includes('\u0000');
  if (Array.isArray(value)) return value.some(hasNul);
  if (isObject(value)) return Object.entries(value).some(([k, v]) => hasNul(k) || hasNul(v));
  return false;
}

class FieldError extends Error {}

/**
 * @param {FieldType} type
 * @param {unknown} value
 * @param {string} at
 * @returns {unknown} the canonical value
 */
function checkValue(type, value, at) {
  switch (type.kind) {
    case 'string': {
      if (typeof value !== 'string') throw new FieldError(`Expected \`str\`, got \`${describe(value)}\` - at \`${at}\``);
      const length = codePoints(value);
      if (type.min !== undefined && length < type.min) {
        throw new FieldError(`Expected \`str\` of length >= ${type.min} - at \`${at}\``);
      }
      if (length > type.max) throw new FieldError(`Expected \`str\` of length <= ${type.max} - at \`${at}\``);
      return value;
    }
    case 'uuid': {
      if (typeof value !== 'string') throw new FieldError(`Expected \`uuid\`, got \`${describe(value)}\` - at \`${at}\``);
      if (UUID_HYPHENATED.test(value)) return value.toLowerCase();
      if (UUID_HEX.test(value)) {
        const hex = value.toLowerCase();
        return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
      }
      throw new FieldError(`Invalid UUID - at \`${at}\``);
    }
    case 'int': {
      if (typeof value !== 'number' || !Number.isInteger(value)) {
        throw new FieldError(`Expected \`int\`, got \`${describe(value)}\` - at \`${at}\``);
      }
      if (value < type.min) throw new FieldError(`Expected \`int\` >= ${type.min} - at \`${at}\``);
      if (value > type.max) throw new FieldError(`Expected \`int\` <= ${type.max} - at \`${at}\``);
      return value;
    }
    case 'bool':
      if (typeof value !== 'boolean') throw new FieldError(`Expected \`bool\`, got \`${describe(value)}\` - at \`${at}\``);
      return value;
    case 'enum':
      if (typeof value !== 'string') throw new FieldError(`Expected \`str\`, got \`${describe(value)}\` - at \`${at}\``);
      if (!type.values.includes(value)) {
        throw new FieldError(`Expected one of ${type.values.map((v) => `'${v}'`).join(', ')} - at \`${at}\``);
      }
      return value;
    case 'object':
      return checkObject(type.fields, value, at);
    default:
      throw new FieldError(`unsupported field type - at \`${at}\``);
  }
}

/**
 * @param {Record<string, FieldSpec>} fields
 * @param {unknown} value
 * @param {string} at
 * @returns {Record<string, unknown>}
 */
function checkObject(fields, value, at) {
  if (!isObject(value)) throw new FieldError(`Expected \`object\`, got \`${describe(value)}\` - at \`${at}\``);
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const key of Object.keys(value)) {
    if (!Object.hasOwn(fields, key)) throw new FieldError(`Object contains unknown field \`${key}\` - at \`${at}\``);
  }
  for (const [key, spec] of Object.entries(fields)) {
    const present = Object.hasOwn(value, key);
    const item = value[key];
    if (!present) {
      if (spec.required) throw new FieldError(`Object missing required field \`${key}\` - at \`${at}\``);
      continue;
    }
    if (item === null) {
      if (spec.nullable) {
        out[key] = null;
        continue;
      }
      if (!spec.required && spec.default === undefined) continue;
    }
    const checked = checkValue(spec.type, item, `${at}.${key}`);
    if (spec.default !== undefined && checked === spec.default) continue;
    out[key] = checked;
  }
  return out;
}

/**
 * @param {unknown} raw
 * @returns {string | null} the requestId when it is a valid one
 */
function readableRequestId(raw) {
  return typeof raw === 'string' && raw.length >= 1 && codePoints(raw) <= REQUEST_ID_MAX ? raw : null;
}

/**
 * @typedef {object} ClientMessage
 * @property {string} type
 * @property {string} requestId
 * @property {Record<string, unknown>} payload canonical: absent and null optionals and
 *   defaults left out, UUIDs lowercase
 * @property {number} [v]
 */

/**
 * Check an envelope that has been parsed already, in the server's order of checks.
 * @param {unknown} frame
 * @returns {ClientMessage & {v: number}}
 */
function checkEnvelope(frame) {
  if (!isObject(frame)) throw new ProtocolError(MALFORMED_JSON, 'frame must be a JSON object');
  const requestId = readableRequestId(frame.requestId);
  const v = frame.v;
  if (typeof v !== 'number' || !Number.isInteger(v) || !SUPPORTED_VERSIONS.includes(v)) {
    throw new ProtocolError(UNSUPPORTED_VERSION, `\`v\` must be one of [${SUPPORTED_VERSIONS.join(', ')}]`, requestId);
  }
  const type = frame.type;
  if (typeof type !== 'string' || !Object.hasOwn(CLIENT_MESSAGES, type)) {
    const what = type === undefined || type === null ? 'missing' : JSON.stringify(type).slice(0, 100);
    throw new ProtocolError(UNKNOWN_TYPE, `unknown message type: ${what}`, requestId);
  }
  if (frame.requestId === undefined || frame.requestId === null) {
    throw new ProtocolError(MISSING_REQUEST_ID, '`requestId` is required');
  }
  if (requestId === null) {
    throw new ProtocolError(VALIDATION_FAILED, `\`requestId\` must be a string of 1..${REQUEST_ID_MAX} characters`);
  }
  const raw = !Object.hasOwn(frame, 'payload') && PAYLOAD_OPTIONAL.has(type) ? {} : frame.payload;
  if (raw === undefined) {
    throw new ProtocolError(VALIDATION_FAILED, 'Object missing required field `payload`', requestId);
  }
  let payload;
  try {
    payload = checkObject(CLIENT_MESSAGES[type], raw, '$.payload');
  } catch (error) {
    if (error instanceof FieldError) throw new ProtocolError(VALIDATION_FAILED, error.message, requestId);
    throw error;
  }
  // PostgreSQL text cannot hold U+0000, so the server refuses it in any decoded string.
  if (hasNul(requestId) || hasNul(payload)) {
    throw new ProtocolError(VALIDATION_FAILED, 'strings must not contain the NUL character (U+0000)', requestId);
  }
  return { v, type, requestId, payload };
}

/**
 * Decode one client→server text frame exactly as the server would, or throw
 * {@link ProtocolError} with the code and requestId its `nack` would carry.
 * @param {string} text
 * @param {{maxFrameBytes?: number}} [options]
 * @returns {ClientMessage & {v: number}}
 */
export function decodeClientFrame(text, { maxFrameBytes = DEFAULT_MAX_FRAME_BYTES } = {}) {
  if (text.length > maxFrameBytes || utf8Length(text) > maxFrameBytes) {
    throw new ProtocolError(FRAME_TOO_LARGE, `frame exceeds ${maxFrameBytes} bytes`);
  }
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    throw new ProtocolError(MALFORMED_JSON, 'frame is not valid JSON');
  }
  return checkEnvelope(frame);
}

/**
 * Check a request and encode it as the text of one frame; throws {@link ProtocolError}
 * for anything the server would refuse, including a frame over `maxFrameBytes`.
 * @param {{type: string, requestId: string, payload?: Record<string, unknown>}} message
 * @param {{maxFrameBytes?: number}} [options]
 * @returns {string}
 */
export function encodeClientMessage(message, { maxFrameBytes = DEFAULT_MAX_FRAME_BYTES } = {}) {
  const checked = checkEnvelope({
    v: PROTOCOL_VERSION,
    type: message.type,
    requestId: message.requestId,
    payload: message.payload ?? {},
  });
  const text = JSON.stringify({
    v: PROTOCOL_VERSION,
    type: checked.type,
    requestId: checked.requestId,
    payload: checked.payload,
  });
  if (utf8Length(text) > maxFrameBytes) {
    throw new ProtocolError(FRAME_TOO_LARGE, `frame exceeds ${maxFrameBytes} bytes`, checked.requestId);
  }
  return text;
}

/**
 * @typedef {object} ServerFrame
 * @property {string} type
 * @property {string | null} requestId
 * @property {any} payload
 * @property {boolean} known whether this SDK knows the type (unknown ones are ignored)
 */

/**
 * Decode one server→client frame leniently: unknown payload fields are kept (and ignored
 * by readers), unknown types come back with `known: false`.
 * @param {string} text
 * @returns {ServerFrame}
 */
export function decodeServerFrame(text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    throw new ProtocolError(MALFORMED_JSON, 'frame is not valid JSON');
  }
  if (!isObject(frame)) throw new ProtocolError(MALFORMED_JSON, 'frame must be a JSON object');
  const v = frame.v ?? PROTOCOL_VERSION;
  if (typeof v !== 'number' || !SUPPORTED_VERSIONS.includes(v)) {
    throw new ProtocolError(UNSUPPORTED_VERSION, `unsupported protocol version ${JSON.stringify(v)}`);
  }
  if (typeof frame.type !== 'string') throw new ProtocolError(UNKNOWN_TYPE, 'frame has no type');
  const requestId = typeof frame.requestId === 'string' ? frame.requestId : null;
  const payload = isObject(frame.payload) ? frame.payload : {};
  return { type: frame.type, requestId, payload, known: SERVER_TYPES.has(frame.type) };
}
