import Foundation

// REST `/v1` bodies and responses (protocol/openapi.json, components.schemas). Responses
// decode leniently (unknown fields ignored); request bodies encode only what the server
// accepts, since it refuses unknown fields.

public struct User: Codable, Sendable, Hashable, Identifiable {
    public var id: UserID
    public var username: String
    public var displayName: String
    public var bio: String
    public var avatarUrl: String?
    public var createdAt: String
}

public struct TokenPair: Codable, Sendable, Hashable {
    public var accessToken: String
    /// Opaque; each refresh rotates it, and presenting a used one again revokes the session.
    public var refreshToken: String
    public var tokenType: String
    /// Seconds the access token lives.
    public var expiresIn: Int
    /// Unix seconds.
    public var accessTokenExpiresAt: Int64
    public var sessionId: SessionID
    public var user: User

    public init(
        accessToken: String, refreshToken: String, tokenType: String = "Bearer", expiresIn: Int,
        accessTokenExpiresAt: Int64, sessionId: SessionID, user: User
    ) {
        self.accessToken = accessToken
        self.refreshToken = refreshToken
        self.tokenType = tokenType
        self.expiresIn = expiresIn
        self.accessTokenExpiresAt = accessTokenExpiresAt
        self.sessionId = sessionId
        self.user = user
    }

    enum CodingKeys: String, CodingKey {
        case accessToken, refreshToken, tokenType, expiresIn, accessTokenExpiresAt, sessionId, user
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        accessToken = try container.decode(String.self, forKey: .accessToken)
        refreshToken = try container.decode(String.self, forKey: .refreshToken)
        tokenType = try container.decodeIfPresent(String.self, forKey: .tokenType) ?? "Bearer"
        expiresIn = try container.decode(Int.self, forKey: .expiresIn)
        accessTokenExpiresAt = try container.decode(Int64.self, forKey: .accessTokenExpiresAt)
        sessionId = try container.decode(SessionID.self, forKey: .sessionId)
        user = try container.decode(User.self, forKey: .user)
    }
}

public struct SessionInfo: Codable, Sendable, Hashable, Identifiable {
    public var id: SessionID
    public var userId: UserID
    public var deviceName: String
    public var userAgent: String
    public var ip: String
    public var createdAt: String
    public var lastUsedAt: String
    public var expiresAt: String
    public var revokedAt: String?
    /// The session of the token that asked.
    public var current: Bool
}

public struct SessionList: Codable, Sendable, Hashable {
    public var sessions: [SessionInfo]
}

public struct Room: Codable, Sendable, Hashable, Identifiable {
    public var id: RoomID
    public var kind: RoomKind
    public var name: String
    public var topic: String
    public var createdBy: UserID?
    /// The seq of the room's newest message (0 when it has none).
    public var lastSeq: Int64
    public var createdAt: String
    public var updatedAt: String
    public var archivedAt: String?
}

public struct RoomSummary: Codable, Sendable, Hashable {
    public var room: Room
    public var myRole: MemberRole
    public var lastReadSeq: Int64
    public var unreadCount: Int64
}

public struct RoomList: Codable, Sendable, Hashable {
    public var rooms: [RoomSummary]
}

public struct RoomView: Codable, Sendable, Hashable {
    public var room: Room
    /// Nil when the caller is not a member (a public room seen from outside).
    public var myRole: MemberRole?
    public var memberCount: Int
}

public struct PublicRoomPage: Codable, Sendable, Hashable {
    public var rooms: [Room]
    /// Pass back as `cursor` for the next page; nil on the last page.
    public var nextCursor: String?
}

public struct Member: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var userId: UserID
    public var role: MemberRole
    public var joinedAt: String
    public var lastReadSeq: Int64
    public var username: String
    public var displayName: String
}

public struct MemberList: Codable, Sendable, Hashable {
    public var members: [Member]
}

public struct MessagePage: Codable, Sendable, Hashable {
    /// Ascending seq.
    public var messages: [ChatMessage]
    /// Whether more messages lie beyond the page in the direction of paging.
    public var hasMore: Bool
}

public struct SearchPage: Codable, Sendable, Hashable {
    public var messages: [ChatMessage]
    public var nextCursor: String?
}

public struct TurnCredentials: Codable, Sendable, Hashable {
    public var username: String
    public var password: String
    public var ttl: Int
    public var expiresAt: Int64
    public var uris: [String]
    /// The same credentials as `RTCPeerConnection` configuration entries.
    public var iceServers: [IceServer]
}

/// `POST /v1/me/password`: the other device sessions were signed out.
public struct PasswordChanged: Codable, Sendable, Hashable {
    public var sessionsRevoked: Int
}

/// A user kept out of a room.
public struct Ban: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var userId: UserID
    public var bannedBy: UserID?
    public var reason: String
    public var createdAt: String
    /// Nil: until lifted.
    public var expiresAt: String?
}

public struct BanList: Codable, Sendable, Hashable {
    /// The bans in force, newest first.
    public var bans: [Ban]
}

/// A member who may read but not post, edit or start calls.
public struct Mute: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var userId: UserID
    public var mutedBy: UserID?
    public var reason: String
    public var createdAt: String
    /// Nil: until lifted.
    public var expiresAt: String?
}

public struct MuteList: Codable, Sendable, Hashable {
    /// The mutes in force, newest first.
    public var mutes: [Mute]
}

/// A member's report of a message, with the message as it was when reported.
public struct Report: Codable, Sendable, Hashable, Identifiable {
    public var id: ReportID
    public var roomId: RoomID
    public var messageId: MessageID
    public var reporterId: UserID
    public var senderId: UserID
    public var messageSeq: Int64
    /// The body when reported, kept even if the message is edited or deleted later.
    public var messageBody: String
    public var reason: String
    public var createdAt: String
    public var resolvedBy: UserID?
    /// Nil while the report is open.
    public var resolvedAt: String?
    public var resolution: ReportResolution?
    public var resolutionNote: String?

    public var isOpen: Bool { resolvedAt == nil }
}

public struct ReportPage: Codable, Sendable, Hashable {
    /// Newest first.
    public var reports: [Report]
    /// Pass back as `cursor` for the next page; nil on the last page.
    public var nextCursor: String?
}

/// Which reports `GET /v1/rooms/{roomId}/reports` lists.
public enum ReportStatusFilter: String, Codable, Sendable, CaseIterable {
    case open, resolved, all
}

/// A stable problem code (`ProblemCode` in openapi.json); codes this version does not know
/// still decode.
public struct ProblemCode: OpenStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    /// 409: the account was deleted.
    public static let accountDeleted: Self = "account_deleted"
    /// 403: the server's operators disabled this account (sign-in and refresh refused).
    public static let accountDisabled: Self = "account_disabled"
    public static let alreadyMember: Self = "already_member"
    public static let alreadyReported: Self = "already_reported"
    /// 403: the caller is banned from this room.
    public static let banned: Self = "banned"
    public static let directRoomImmutable: Self = "direct_room_immutable"
    public static let forbidden: Self = "forbidden"
    /// 431: the request's header fields are too large.
    public static let headersTooLarge: Self = "headers_too_large"
    public static let idempotencyConflict: Self = "idempotency_conflict"
    public static let internalError: Self = "internal_error"
    public static let invalidCredentials: Self = "invalid_credentials"
    public static let invalidRefreshToken: Self = "invalid_refresh_token"
    public static let invalidResetToken: Self = "invalid_reset_token"
    public static let invalidToken: Self = "invalid_token"
    public static let malformedJSON: Self = "malformed_json"
    /// 400: the request could not be read (bad framing or encoding).
    public static let malformedRequest: Self = "malformed_request"
    public static let messageDeleted: Self = "message_deleted"
    public static let messageNotFound: Self = "message_not_found"
    public static let methodNotAllowed: Self = "method_not_allowed"
    /// 403: the caller is muted in this room: reading works, posting and editing do not.
    public static let muted: Self = "muted"
    public static let nodeNotFound: Self = "node_not_found"
    public static let notAMember: Self = "not_a_member"
    public static let notBanned: Self = "not_banned"
    public static let notMuted: Self = "not_muted"
    public static let originRejected: Self = "origin_rejected"
    /// 409: operators cannot disable their own account or change their own server role.
    public static let ownAccount: Self = "own_account"
    public static let ownerMustTransfer: Self = "owner_must_transfer"
    public static let payloadTooLarge: Self = "payload_too_large"
    public static let rateLimited: Self = "rate_limited"
    public static let refreshTokenReused: Self = "refresh_token_reused"
    public static let reportNotFound: Self = "report_not_found"
    public static let reportResolved: Self = "report_resolved"
    /// 408: the request head did not arrive in time.
    public static let requestTimeout: Self = "request_timeout"
    public static let resetTokenExpired: Self = "reset_token_expired"
    public static let resetTokenUsed: Self = "reset_token_used"
    public static let roomArchived: Self = "room_archived"
    public static let roomNotFound: Self = "room_not_found"
    public static let routeNotFound: Self = "route_not_found"
    /// 403: an operators' route (`/v1/admin`), for server admins and moderators.
    public static let serverRoleRequired: Self = "server_role_required"
    public static let sessionNotFound: Self = "session_not_found"
    public static let sessionRevoked: Self = "session_revoked"
    public static let tokenExpired: Self = "token_expired"
    /// 429: this address holds as many WebSockets as the node allows.
    public static let tooManyConnections: Self = "too_many_connections"
    public static let tooManyWebhooks: Self = "too_many_webhooks"
    public static let turnNotConfigured: Self = "turn_not_configured"
    public static let unauthenticated: Self = "unauthenticated"
    public static let unavailable: Self = "unavailable"
    public static let unsupportedMediaType: Self = "unsupported_media_type"
    public static let upgradeRequired: Self = "upgrade_required"
    /// 414: the request target is too long.
    public static let uriTooLong: Self = "uri_too_long"
    /// 409: the user is banned from the room; lift the ban before adding them.
    public static let userBanned: Self = "user_banned"
    /// 404: the user deleted their account; their messages remain, with their `senderId`.
    public static let userDeleted: Self = "user_deleted"
    public static let userNotFound: Self = "user_not_found"
    public static let usernameTaken: Self = "username_taken"
    public static let validationFailed: Self = "validation_failed"
    public static let webhookNotFound: Self = "webhook_not_found"
    /// 403: the current password given to change the password or delete the account is wrong.
    public static let wrongPassword: Self = "wrong_password"
    public static let knownValues: [Self] = [
        .accountDeleted, .accountDisabled, .alreadyMember, .alreadyReported, .banned, .directRoomImmutable,
        .forbidden, .headersTooLarge, .idempotencyConflict, .internalError, .invalidCredentials,
        .invalidRefreshToken, .invalidResetToken, .invalidToken, .malformedJSON, .malformedRequest, .messageDeleted,
        .messageNotFound, .methodNotAllowed, .muted, .nodeNotFound, .notAMember, .notBanned, .notMuted,
        .originRejected, .ownAccount, .ownerMustTransfer, .payloadTooLarge, .rateLimited, .refreshTokenReused,
        .reportNotFound, .reportResolved, .requestTimeout, .resetTokenExpired, .resetTokenUsed, .roomArchived,
        .roomNotFound, .routeNotFound, .serverRoleRequired, .sessionNotFound, .sessionRevoked, .tokenExpired,
        .tooManyConnections, .tooManyWebhooks, .turnNotConfigured, .unauthenticated, .unavailable,
        .unsupportedMediaType, .upgradeRequired, .uriTooLong, .userBanned, .userDeleted, .userNotFound,
        .usernameTaken, .validationFailed, .webhookNotFound, .wrongPassword,
    ]
}

/// An `application/problem+json` body (RFC 9457), as every REST error is answered.
public struct Problem: Codable, Sendable, Hashable, CustomStringConvertible {
    public var type: String
    public var title: String
    public var status: Int
    public var detail: String
    public var code: ProblemCode
    public var retryable: Bool
    public var requestId: String
    /// With `validation_failed`: the offending field or parameter.
    public var field: String?
    /// With `rate_limited`: wait at least this long.
    public var retryAfterMs: Int?

    public init(
        type: String? = nil, title: String, status: Int, detail: String, code: ProblemCode, retryable: Bool,
        requestId: String, field: String? = nil, retryAfterMs: Int? = nil
    ) {
        self.type = type ?? "urn:boltorezka:problem:\(code.rawValue)"
        self.title = title
        self.status = status
        self.detail = detail
        self.code = code
        self.retryable = retryable
        self.requestId = requestId
        self.field = field
        self.retryAfterMs = retryAfterMs
    }

    public var description: String { "\(status) \(code): \(detail)" }
}

// MARK: - Request bodies

public struct RegisterBody: Codable, Sendable, Hashable {
    public var username: String
    public var password: String
    public var displayName: String?
    public var deviceName: String
    public init(username: String, password: String, displayName: String? = nil, deviceName: String = "") {
        self.username = username
        self.password = password
        self.displayName = displayName
        self.deviceName = deviceName
    }
}

public struct LoginBody: Codable, Sendable, Hashable {
    public var username: String
    public var password: String
    public var deviceName: String
    public init(username: String, password: String, deviceName: String = "") {
        self.username = username
        self.password = password
        self.deviceName = deviceName
    }
}

public struct RefreshBody: Codable, Sendable, Hashable {
    public var refreshToken: String
    public init(refreshToken: String) { self.refreshToken = refreshToken }
}

/// `PATCH /v1/me`: nil fields stay as they are.
public struct ProfileBody: Codable, Sendable, Hashable {
    /// How to change the avatar: leave it, clear it, or set a new URL.
    public enum AvatarChange: Sendable, Hashable {
        case unchanged, clear
        case set(String)
    }

    public var displayName: String?
    public var bio: String?
    public var avatar: AvatarChange

    public init(displayName: String? = nil, bio: String? = nil, avatar: AvatarChange = .unchanged) {
        self.displayName = displayName
        self.bio = bio
        self.avatar = avatar
    }

    enum CodingKeys: String, CodingKey { case displayName, bio, avatarUrl }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        displayName = try container.decodeIfPresent(String.self, forKey: .displayName)
        bio = try container.decodeIfPresent(String.self, forKey: .bio)
        if !container.contains(.avatarUrl) {
            avatar = .unchanged
        } else if let url = try container.decodeIfPresent(String.self, forKey: .avatarUrl) {
            avatar = .set(url)
        } else {
            avatar = .clear
        }
    }

    // An explicit null clears the avatar; absence leaves it (boltorezka/api/bodies.py).
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(displayName, forKey: .displayName)
        try container.encodeIfPresent(bio, forKey: .bio)
        switch avatar {
        case .unchanged: break
        case .clear: try container.encodeNil(forKey: .avatarUrl)
        case .set(let url): try container.encode(url, forKey: .avatarUrl)
        }
    }
}

/// The kinds of room `POST /v1/rooms` makes (direct rooms come from `POST /v1/rooms/direct`).
public enum NewRoomKind: String, Codable, Sendable, CaseIterable {
    case `private`, `public`
}

public struct CreateRoomBody: Codable, Sendable, Hashable {
    public var name: String
    public var kind: NewRoomKind
    public var topic: String
    public init(name: String, kind: NewRoomKind = .private, topic: String = "") {
        self.name = name
        self.kind = kind
        self.topic = topic
    }
}

public struct UpdateRoomBody: Codable, Sendable, Hashable {
    public var name: String?
    public var topic: String?
    public init(name: String? = nil, topic: String? = nil) {
        self.name = name
        self.topic = topic
    }
}

public struct DirectRoomBody: Codable, Sendable, Hashable {
    public var userId: UserID
    public init(userId: UserID) { self.userId = userId }
}

/// The roles a member can be given (ownership moves with a transfer).
public enum AssignableRole: String, Codable, Sendable, CaseIterable {
    case admin, member
}

public struct AddMemberBody: Codable, Sendable, Hashable {
    public var userId: UserID
    public var role: AssignableRole
    public init(userId: UserID, role: AssignableRole = .member) {
        self.userId = userId
        self.role = role
    }
}

public struct ChangeRoleBody: Codable, Sendable, Hashable {
    public var role: AssignableRole
    public init(role: AssignableRole) { self.role = role }
}

public struct TransferBody: Codable, Sendable, Hashable {
    public var userId: UserID
    public init(userId: UserID) { self.userId = userId }
}

public struct PostMessageBody: Codable, Sendable, Hashable {
    public var clientMsgId: String
    public var body: String
    public var replyTo: MessageID?
    public init(clientMsgId: String, body: String, replyTo: MessageID? = nil) {
        self.clientMsgId = clientMsgId
        self.body = body
        self.replyTo = replyTo
    }
}

public struct EditMessageBody: Codable, Sendable, Hashable {
    public var body: String
    public init(body: String) { self.body = body }
}

public struct ReadMarkerBody: Codable, Sendable, Hashable {
    public var seq: Int64
    public init(seq: Int64) { self.seq = seq }
}

/// `POST /v1/me/password`; every other device session is signed out.
public struct ChangePasswordBody: Codable, Sendable, Hashable {
    public var currentPassword: String
    public var newPassword: String
    public init(currentPassword: String, newPassword: String) {
        self.currentPassword = currentPassword
        self.newPassword = newPassword
    }
}

/// `DELETE /v1/me`: the password again, since nothing undoes it.
public struct DeleteAccountBody: Codable, Sendable, Hashable {
    public var password: String
    public init(password: String) { self.password = password }
}

/// `POST /v1/auth/password-reset`, with the one-time token an operator issued.
public struct PasswordResetBody: Codable, Sendable, Hashable {
    public var token: String
    public var newPassword: String
    public init(token: String, newPassword: String) {
        self.token = token
        self.newPassword = newPassword
    }
}

/// `PUT /v1/rooms/{roomId}/bans/{userId}`; without a duration the ban lasts until lifted.
public struct BanBody: Codable, Sendable, Hashable {
    public var durationSeconds: Int?
    public var reason: String
    public init(durationSeconds: Int? = nil, reason: String = "") {
        self.durationSeconds = durationSeconds
        self.reason = reason
    }
}

/// `PUT /v1/rooms/{roomId}/mutes/{userId}`; without a duration the mute lasts until lifted.
public struct MuteBody: Codable, Sendable, Hashable {
    public var durationSeconds: Int?
    public var reason: String
    public init(durationSeconds: Int? = nil, reason: String = "") {
        self.durationSeconds = durationSeconds
        self.reason = reason
    }
}

/// `POST /v1/rooms/{roomId}/reports`: someone else's message, for the room's moderators.
public struct ReportBody: Codable, Sendable, Hashable {
    public var messageId: MessageID
    public var reason: String
    public init(messageId: MessageID, reason: String) {
        self.messageId = messageId
        self.reason = reason
    }
}

public struct ResolveBody: Codable, Sendable, Hashable {
    public var resolution: ReportResolution
    public var note: String?
    public init(resolution: ReportResolution, note: String? = nil) {
        self.resolution = resolution
        self.note = note
    }
}
