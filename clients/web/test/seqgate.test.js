// SeqGate on its own: in-order exactly-once delivery, holes reported once, overlaps of
// live frames, resume replays and history pages.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SeqGate } from '../src/sdk/seqgate.js';

/** @param {number} seq */
const m = (seq) => ({ seq, body: `m${seq}` });
/** @param {{deliver: {seq: number}[]}} result */
const seqs = (result) => result.deliver.map((x) => x.seq);

test('in order: each message is delivered at once, duplicates never', () => {
  const gate = new SeqGate(0);
  assert.deepEqual(seqs(gate.push(m(1))), [1]);
  assert.deepEqual(seqs(gate.push(m(2))), [2]);
  assert.deepEqual(seqs(gate.push(m(2))), []);
  assert.deepEqual(seqs(gate.push(m(1))), []);
  assert.equal(gate.lastSeq, 2);
});

test('a message that overtakes another waits for it, and the hole is reported once', () => {
  const gate = new SeqGate(3);
  const first = gate.push(m(6));
  assert.deepEqual(seqs(first), []);
  assert.deepEqual(first.gap, { after: 3, before: 6 });
  const second = gate.push(m(8));
  assert.equal(second.gap, null, 'one fetch at a time');
  assert.deepEqual(seqs(gate.push(m(4))), [4]);
  assert.equal(gate.pending, 2);
  const filled = gate.fill([m(5), m(4), m(7)]);
  assert.deepEqual(seqs(filled), [5, 6, 7, 8]);
  assert.equal(filled.gap, null);
  assert.equal(gate.lastSeq, 8);
  assert.equal(gate.pending, 0);
});

test('a fill that leaves a hole reports the rest', () => {
  const gate = new SeqGate(0);
  assert.deepEqual(gate.push(m(5)).gap, { after: 0, before: 5 });
  const partial = gate.fill([m(1), m(2)]);
  assert.deepEqual(seqs(partial), [1, 2]);
  assert.deepEqual(partial.gap, { after: 2, before: 5 });
  assert.deepEqual(seqs(gate.fill([m(3), m(4)])), [3, 4, 5]);
});

test('a replay that closes the hole first makes the late fill a no-op', () => {
  const gate = new SeqGate(10);
  assert.deepEqual(gate.push(m(13)).gap, { after: 10, before: 13 });
  assert.deepEqual(seqs(gate.push(m(11))), [11]);
  assert.deepEqual(seqs(gate.push(m(12))), [12, 13]);
  assert.equal(gate.gap, null);
  const late = gate.fill([m(11), m(12)]);
  assert.deepEqual(seqs(late), []);
  assert.equal(late.gap, null);
});

test('before the base is known everything is held; the join ack releases what is newer', () => {
  const gate = new SeqGate(null);
  assert.deepEqual(seqs(gate.push(m(7))), []);
  assert.deepEqual(seqs(gate.push(m(6))), []);
  const released = gate.advanceTo(6);
  assert.deepEqual(seqs(released), [7]);
  assert.equal(gate.lastSeq, 7);
});

test('a join ack past what was delivered reports the hole up to it', () => {
  const gate = new SeqGate(2);
  const result = gate.advanceTo(5);
  assert.deepEqual(result.gap, { after: 2, before: 6 });
  assert.deepEqual(seqs(gate.fill([m(3), m(4), m(5)])), [3, 4, 5]);
  assert.deepEqual(gate.advanceTo(5), { deliver: [], gap: null });
});

test('retryGap reports the same hole again after a failed fetch', () => {
  const gate = new SeqGate(0);
  assert.deepEqual(gate.push(m(3)).gap, { after: 0, before: 3 });
  assert.equal(gate.push(m(4)).gap, null);
  assert.deepEqual(gate.retryGap(), { after: 0, before: 3 });
});

test('random arrival orders with repeats always deliver 1..n once, in order', () => {
  let seed = 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  for (let round = 0; round < 200; round += 1) {
    const n = 1 + Math.floor(random() * 30);
    const arrivals = [];
    for (let seq = 1; seq <= n; seq += 1) {
      arrivals.push(seq);
      if (random() < 0.3) arrivals.push(1 + Math.floor(random() * n));
    }
    for (let i = arrivals.length - 1; i > 0; i -= 1) {
      const j = Math.floor(random() * (i + 1));
      [arrivals[i], arrivals[j]] = [arrivals[j], arrivals[i]];
    }
    const gate = new SeqGate(0);
    /** @type {number[]} */
    const delivered = [];
    /** @type {{after: number, before: number} | null} */
    let gap = null;
    for (const seq of arrivals) {
      const result = gate.push(m(seq));
      delivered.push(...seqs(result));
      gap = result.gap ?? gap;
      if (gap !== null && random() < 0.5) {
        const { after, before } = gap;
        const page = [];
        for (let s = after + 1; s < before; s += 1) page.push(m(s));
        const filled = gate.fill(page);
        delivered.push(...seqs(filled));
        gap = filled.gap;
      }
    }
    while (gate.pending > 0) {
      const hole = gate.gap ?? gate.retryGap();
      assert.ok(hole, 'messages are held only behind a reported hole');
      const page = [];
      for (let s = hole.after + 1; s < hole.before; s += 1) page.push(m(s));
      delivered.push(...seqs(gate.fill(page)));
    }
    assert.deepEqual(delivered, Array.from({ length: n }, (_, i) => i + 1), `round ${round}: ${arrivals}`);
  }
});
