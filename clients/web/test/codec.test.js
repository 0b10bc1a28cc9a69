// The language-neutral vectors in protocol/vectors, run through the web SDK's codec: the
// same files the server's tests/test_protocol_vectors.py runs, so both sides agree.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import {
  CLIENT_MESSAGES,
  SERVER_TYPES,
  decodeClientFrame,
  decodeServerFrame,
  encodeClientMessage,
} from '../src/sdk/codec.js';
import { ProtocolError } from '../src/sdk/errors.js';

/** @param {string} relative */
function load(relative) {
  return JSON.parse(readFileSync(new URL(`../../../protocol/${relative}`, import.meta.url), 'utf8'));
}

const VALID = load('vectors/valid.json');
const INVALID = load('vectors/invalid.json');
const CLIENT_SCHEMA = load('schemas/client.json');
const SERVER_SCHEMA = load('schemas/server.json');

describe('valid vectors decode to their canonical form and re-encode to it', () => {
  for (const vector of VALID.cases) {
    test(vector.name, () => {
      const options = { maxFrameBytes: VALID.maxFrameBytes };
      const decoded = decodeClientFrame(JSON.stringify(vector.frame), options);
      assert.deepEqual(
        { type: decoded.type, requestId: decoded.requestId, payload: decoded.payload },
        vector.decoded,
      );
      assert.equal(decoded.v, vector.frame.v);
      const encoded = encodeClientMessage(vector.decoded, options);
      const again = decodeClientFrame(encoded, options);
      assert.deepEqual({ type: again.type, requestId: again.requestId, payload: again.payload }, vector.decoded);
      assert.deepEqual(JSON.parse(encoded).payload, vector.decoded.payload, 'the encoder writes the canonical form');
    });
  }
});

describe('invalid vectors fail with the code and requestId of the nack', () => {
  for (const vector of INVALID.cases) {
    test(vector.name, () => {
      assert.throws(
        () => decodeClientFrame(vector.frame, { maxFrameBytes: INVALID.maxFrameBytes }),
        (error) => {
          assert.ok(error instanceof ProtocolError, String(error));
          assert.deepEqual({ code: error.code, requestId: error.requestId }, { code: vector.code, requestId: vector.requestId });
          return true;
        },
      );
    });
  }
});

test('every client type has a valid vector, and every frame error code an invalid one', () => {
  assert.deepEqual(new Set(VALID.cases.map((/** @type {any} */ c) => c.decoded.type)), new Set(Object.keys(CLIENT_MESSAGES)));
  assert.deepEqual(
    new Set(INVALID.cases.map((/** @type {any} */ c) => c.code)),
    new Set(['frame_too_large', 'malformed_json', 'unsupported_version', 'unknown_type', 'missing_request_id', 'validation_failed']),
  );
});

/**
 * @param {any} schema
 * @param {any} node
 * @returns {any}
 */
function resolve(schema, node) {
  if (node.$ref) return resolve(schema, schema.$defs[node.$ref.split('/').at(-1)]);
  return node;
}

/** The non-null alternative of a nullable property. @param {any} schema @param {any} node */
function nonNull(schema, node) {
  const resolved = resolve(schema, node);
  if (!resolved.anyOf) return resolved;
  return resolve(schema, resolved.anyOf.find((/** @type {any} */ branch) => branch.type !== 'null'));
}

/**
 * Compare one payload's field table with its JSON Schema: names, which are required,
 * defaults, and the limits of every field.
 * @param {any} schema
 * @param {any} objectSchema
 * @param {Record<string, import('../src/sdk/codec.js').FieldSpec>} fields
 * @param {string} where
 */
function assertFieldsMatch(schema, objectSchema, fields, where) {
  assert.deepEqual(Object.keys(fields).sort(), Object.keys(objectSchema.properties).sort(), `${where}: field names`);
  assert.deepEqual(
    Object.keys(fields).filter((k) => fields[k].required).sort(),
    [...(objectSchema.required ?? [])].sort(),
    `${where}: required fields`,
  );
  for (const [name, spec] of Object.entries(fields)) {
    const property = objectSchema.properties[name];
    const at = `${where}.${name}`;
    const nullable = Boolean(resolve(schema, property).anyOf?.some((/** @type {any} */ b) => b.type === 'null'));
    assert.equal(Boolean(spec.nullable) || (!spec.required && spec.default === undefined), nullable, `${at}: nullability`);
    assert.equal(spec.default, property.default ?? undefined, `${at}: default`);
    const target = nonNull(schema, property);
    const type = spec.type;
    switch (type.kind) {
      case 'string':
        assert.equal(target.type, 'string', at);
        assert.equal(type.max, target.maxLength, `${at}: maxLength`);
        assert.equal(type.min, target.minLength, `${at}: minLength`);
        break;
      case 'uuid':
        assert.equal(target.format, 'uuid', at);
        break;
      case 'int':
        assert.equal(target.type, 'integer', at);
        assert.equal(type.min, target.minimum, `${at}: minimum`);
        assert.equal(type.max, target.maximum, `${at}: maximum`);
        break;
      case 'bool':
        assert.equal(target.type, 'boolean', at);
        break;
      case 'enum':
        assert.deepEqual([...type.values].sort(), [...target.enum].sort(), `${at}: enum`);
        break;
      case 'object':
        assertFieldsMatch(schema, target, type.fields, at);
        break;
      default:
        assert.fail(`${at}: unknown kind`);
    }
  }
}

test('the field tables match the generated JSON Schemas (names, limits, defaults)', () => {
  const mapping = CLIENT_SCHEMA.discriminator.mapping;
  assert.deepEqual(new Set(Object.keys(mapping)), new Set(Object.keys(CLIENT_MESSAGES)));
  for (const [type, ref] of Object.entries(mapping)) {
    const envelope = resolve(CLIENT_SCHEMA, { $ref: ref });
    const payload = resolve(CLIENT_SCHEMA, envelope.properties.payload);
    assertFieldsMatch(CLIENT_SCHEMA, payload, CLIENT_MESSAGES[type], type);
    assert.equal(envelope.properties.requestId.maxLength, 64);
  }
});

test('the SDK knows every server message type', () => {
  assert.deepEqual(new Set(Object.keys(SERVER_SCHEMA.discriminator.mapping)), SERVER_TYPES);
});

test('an oversized request is refused before it is sent', () => {
  assert.throws(
    () => encodeClientMessage({ type: 'chat.send', requestId: 'r1', payload: { roomId: '0b5e3c1a-7d2f-4c8e-9a61-3f2d8e4b5c71', clientMsgId: 'c', body: 'é'.repeat(4000) } }, { maxFrameBytes: 4096 }),
    (error) => error instanceof ProtocolError && error.code === 'frame_too_large' && error.requestId === 'r1',
  );
});

test('server frames: unknown types and fields are tolerated, v defaults to 1', () => {
  const frame = decodeServerFrame('{"type":"chat.typo","payload":{"x":1},"extra":true}');
  assert.equal(frame.known, false);
  const ack = decodeServerFrame('{"v":1,"type":"ack","requestId":"r1","payload":{"result":null,"new":1}}');
  assert.deepEqual(ack, { type: 'ack', requestId: 'r1', payload: { result: null, new: 1 }, known: true });
  assert.throws(() => decodeServerFrame('{"v":2,"type":"ack"}'), (e) => e instanceof ProtocolError && e.code === 'unsupported_version');
  assert.throws(() => decodeServerFrame('[]'), (e) => e instanceof ProtocolError && e.code === 'malformed_json');
});
