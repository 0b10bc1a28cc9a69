// The newest messages of each open room, kept in sessionStorage, so that a reload shows
// them at once and resumes from their last seq: the room.join replay then brings exactly
// what was missed, instead of the page starting over from the latest history page.

const KEEP = 100;

/**
 * @param {string} userId
 * @param {string} roomId
 */
function key(userId, roomId) {
  return `boltorezka.room.${userId}.${roomId}`;
}

/**
 * Messages held for a room, ascending seq and without holes, or [] if none.
 * @param {string} userId
 * @param {string} roomId
 * @returns {import('../sdk/types.js').Message[]}
 */
export function loadMessages(userId, roomId) {
  try {
    const parsed = JSON.parse(sessionStorage.getItem(key(userId, roomId)) ?? '[]');
    if (!Array.isArray(parsed)) return [];
    for (let i = 1; i < parsed.length; i += 1) if (parsed[i].seq !== parsed[i - 1].seq + 1) return [];
    return parsed;
  } catch {
    return [];
  }
}

/**
 * @param {string} userId
 * @param {string} roomId
 * @param {import('../sdk/types.js').Message[]} messages ascending seq
 */
export function saveMessages(userId, roomId, messages) {
  try {
    // Only a run without holes may seed a resume; keep the newest contiguous stretch.
    let start = messages.length - 1;
    while (start > 0 && messages.length - start < KEEP && messages[start - 1].seq === messages[start].seq - 1) start -= 1;
    sessionStorage.setItem(key(userId, roomId), JSON.stringify(messages.slice(Math.max(0, start))));
  } catch {
    // Storage full or disabled: reloads then start from history, which is fine.
  }
}

/** @param {string} userId @param {string} roomId */
export function forgetMessages(userId, roomId) {
  try {
    sessionStorage.removeItem(key(userId, roomId));
  } catch {
    // Nothing to forget.
  }
}
