// In-order, exactly-once delivery of one room's messages, whatever order and however many
// times they arrive: live frames, a resume replay after a reconnect, and pages fetched to
// fill a hole can overlap freely. Pure (no I/O, no timers), so test/seqgate.test.js drives
// it directly. The server numbers each room's messages 1, 2, 3, … with no holes (a deleted
// message keeps its number), which is what makes a hole detectable at all.

/**
 * @template {{seq: number}} M
 * @typedef {object} GateResult
 * @property {M[]} deliver messages to hand to the application now, in seq order
 * @property {{after: number, before: number} | null} gap a hole to fetch (both bounds
 *   exclusive), reported once until {@link SeqGate#fill} or {@link SeqGate#retryGap}
 */

/** @template {{seq: number}} M */
export class SeqGate {
  /** @param {number | null} [lastSeq] the highest seq already held with nothing missing below it; null: not known yet */
  constructor(lastSeq = null) {
    /** @type {number | null} */
    this._last = lastSeq;
    /** @type {Map<number, M>} */
    this._held = new Map();
    /** @type {{after: number, before: number} | null} */
    this._gap = null;
  }

  /** The highest seq delivered with nothing missing below it (null before the base is known). */
  get lastSeq() {
    return this._last;
  }

  /** How many messages wait for a hole below them to be filled. */
  get pending() {
    return this._held.size;
  }

  /** The hole being filled, if any. */
  get gap() {
    return this._gap;
  }

  /**
   * Set the base when it becomes known (the `room.join` ack without `lastSeq`), or learn
   * that the room reached `seq` (a join ack's `lastSeq`): what is held is released, and a
   * hole up to `seq` is reported.
   * @param {number} seq
   * @returns {GateResult<M>}
   */
  advanceTo(seq) {
    if (this._last === null) {
      this._last = seq;
      for (const held of this._held.keys()) if (held <= seq) this._held.delete(held);
      return this._release();
    }
    if (seq <= this._last) return { deliver: [], gap: null };
    const deliver = this._drain();
    const gap = this._reportGap(seq + 1);
    return { deliver, gap };
  }

  /**
   * One message, from any source.
   * @param {M} message
   * @returns {GateResult<M>}
   */
  push(message) {
    if (!this._hold(message)) return { deliver: [], gap: null };
    return this._last === null ? { deliver: [], gap: null } : this._release();
  }

  /**
   * Messages fetched for a hole (any order, overlaps allowed). Clears the reported hole;
   * if one remains, it is reported again.
   * @param {Iterable<M>} messages
   * @returns {GateResult<M>}
   */
  fill(messages) {
    for (const message of messages) this._hold(message);
    this._gap = null;
    return this._last === null ? { deliver: [], gap: null } : this._release();
  }

  /** Report the current hole again (after a failed fetch). @returns {{after: number, before: number} | null} */
  retryGap() {
    this._gap = null;
    return this._last === null ? null : this._reportGap(null);
  }

  /** @param {M} message @returns {boolean} whether it was new */
  _hold(message) {
    const seq = message.seq;
    if (!Number.isSafeInteger(seq) || seq < 1) return false;
    if (this._last !== null && seq <= this._last) return false;
    if (this._held.has(seq)) return false;
    this._held.set(seq, message);
    return true;
  }

  /** @returns {M[]} */
  _drain() {
    /** @type {M[]} */
    const out = [];
    if (this._last === null) return out;
    for (;;) {
      const next = this._held.get(this._last + 1);
      if (next === undefined) break;
      this._held.delete(this._last + 1);
      this._last += 1;
      out.push(next);
    }
    return out;
  }

  /** @returns {GateResult<M>} */
  _release() {
    const deliver = this._drain();
    if (this._gap !== null && this._last !== null && this._last >= this._gap.before - 1) this._gap = null;
    return { deliver, gap: this._reportGap(null) };
  }

  /**
   * @param {number | null} before the upper bound known from outside (a join ack), or
   *   null to use the lowest held seq
   */
  _reportGap(before) {
    if (this._gap !== null || this._last === null) return null;
    let upper = before;
    for (const seq of this._held.keys()) if (upper === null || seq < upper) upper = seq;
    if (upper === null || upper <= this._last + 1) return null;
    this._gap = { after: this._last, before: upper };
    return this._gap;
  }
}
