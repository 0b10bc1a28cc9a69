// Reconnect delays: exponential backoff with full jitter (a uniformly random delay up to
// the exponential ceiling), so clients that lost a node together do not return together.

/**
 * @param {number} attempt 0 for the first retry
 * @param {{initialMs?: number, maxMs?: number, random?: () => number}} [options]
 * @returns {number} milliseconds to wait
 */
export function backoffDelay(attempt, { initialMs = 250, maxMs = 10_000, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return random() * ceiling;
}
