// Shapes of what the server sends, as JSDoc types for `tsc --checkJs`. The authoritative
// definitions are protocol/schemas/*.json and protocol/openapi.json; these name only the
// fields the SDK and the app read. Clients must ignore fields they do not know.

/**
 * @typedef {object} Problem
 * @property {string} code
 * @property {string} [title]
 * @property {string} [detail]
 * @property {number} [status]
 * @property {string} [field]
 * @property {boolean} [retryable]
 * @property {number} [retryAfterMs]
 * @property {string} [requestId]
 */

/**
 * @typedef {object} User
 * @property {string} id
 * @property {string} username
 * @property {string} displayName
 * @property {string} [bio]
 * @property {string | null} [avatarUrl]
 */

/**
 * @typedef {object} TokenPair
 * @property {string} accessToken
 * @property {string} refreshToken
 * @property {number} accessTokenExpiresAt Unix seconds
 * @property {string} sessionId
 * @property {User} user
 */

/**
 * @typedef {'public' | 'private' | 'direct'} RoomKind
 */

/**
 * @typedef {object} Room
 * @property {string} id
 * @property {RoomKind} kind
 * @property {string} name
 * @property {string} topic
 * @property {number} lastSeq
 * @property {string | null} archivedAt
 */

/**
 * @typedef {object} RoomSummary
 * @property {Room} room
 * @property {string} myRole
 * @property {number} lastReadSeq
 * @property {number} unreadCount
 */

/**
 * @typedef {object} Member
 * @property {string} roomId
 * @property {string} userId
 * @property {'owner' | 'admin' | 'member'} role
 * @property {string} username
 * @property {string} displayName
 * @property {number} lastReadSeq
 */

/**
 * @typedef {object} Message
 * @property {string} id
 * @property {string} roomId
 * @property {number} seq
 * @property {string} senderId
 * @property {string} clientMsgId
 * @property {string} body
 * @property {string | null} [replyTo]
 * @property {string} createdAt RFC 3339
 * @property {string | null} [editedAt]
 * @property {string | null} [deletedAt]
 */

/**
 * @typedef {object} MessagePage
 * @property {Message[]} messages ascending seq
 * @property {boolean} hasMore
 */

/**
 * @typedef {object} IceServer
 * @property {string[] | string} urls
 * @property {string | null} [username]
 * @property {string | null} [credential]
 */

/**
 * @typedef {object} Capabilities
 * @property {number[]} protocolVersions
 * @property {string[]} features
 * @property {{maxFrameBytes: number, maxPayloadBytes?: number, rates: Record<string, number>}} limits
 * @property {number} heartbeatIntervalMs
 * @property {string} nodeId
 * @property {string} sessionId
 * @property {number} resumeWindowSeconds
 */

/**
 * @typedef {object} AuthResult
 * @property {string} userId
 * @property {string} sessionId
 * @property {number} expiresAt
 * @property {IceServer[]} iceServers
 */

/**
 * @typedef {object} NackPayload
 * @property {string} code
 * @property {string} message
 * @property {boolean} retryable
 * @property {number | null} retryAfterMs
 * @property {Record<string, unknown> | null} [details]
 */

/**
 * @typedef {'online' | 'away' | 'dnd'} PresenceStatus
 * @typedef {PresenceStatus | 'offline'} ObservedPresence
 */

/**
 * @typedef {object} CallParticipant
 * @property {string} participantId
 * @property {string} userId
 * @property {boolean} connected
 */

/**
 * @typedef {object} CallState
 * @property {string} callId
 * @property {string} roomId
 * @property {'ringing' | 'active' | 'ended'} state
 * @property {'p2p' | 'sfu'} mode
 * @property {CallParticipant[]} participants
 * @property {string} [reason]
 */

/**
 * @typedef {object} CallJoined
 * @property {CallState} call
 * @property {string} participantId
 * @property {IceServer[]} iceServers
 */

/**
 * @typedef {object} SendResult
 * @property {string} messageId
 * @property {number} seq
 * @property {string} createdAt
 * @property {boolean} duplicate
 */

/**
 * @typedef {object} Envelope
 * @property {string} type
 * @property {string | null} requestId
 * @property {any} payload
 */

export {};
