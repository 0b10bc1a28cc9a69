import Foundation

// Server → client payloads (protocol/README.md, "Server → client"; protocol/schemas/server.json).
// Decoding ignores unknown fields, and unknown message types become `.unknown`, as the
// protocol requires of clients. Timestamps stay RFC 3339 strings (see ``Timestamp``).

public struct Limits: Codable, Sendable, Hashable {
    /// The largest frame, in UTF-8 bytes.
    public var maxFrameBytes: Int
    public var maxPayloadBytes: Int?
    /// Rate limits by name (for example `chat.send`), per second.
    public var rates: [String: Double]
    public init(maxFrameBytes: Int, maxPayloadBytes: Int? = nil, rates: [String: Double] = [:]) {
        self.maxFrameBytes = maxFrameBytes
        self.maxPayloadBytes = maxPayloadBytes
        self.rates = rates
    }
}

public struct CapabilitiesPayload: Codable, Sendable, Hashable {
    public var protocolVersions: [Int]
    public var features: [String]
    public var limits: Limits
    public var heartbeatIntervalMs: Int
    public var nodeId: String
    public var sessionId: String
    /// How long a resume stays possible (the refresh-token lifetime).
    public var resumeWindowSeconds: Int
    public init(
        protocolVersions: [Int] = [1], features: [String] = [], limits: Limits, heartbeatIntervalMs: Int,
        nodeId: String, sessionId: String, resumeWindowSeconds: Int
    ) {
        self.protocolVersions = protocolVersions
        self.features = features
        self.limits = limits
        self.heartbeatIntervalMs = heartbeatIntervalMs
        self.nodeId = nodeId
        self.sessionId = sessionId
        self.resumeWindowSeconds = resumeWindowSeconds
    }
}

/// Why a request failed. `code` is stable; `message` is for humans.
public struct NackPayload: Codable, Sendable, Hashable {
    public var code: String
    public var message: String
    public var retryable: Bool
    public var retryAfterMs: Int?
    /// Code-specific facts, such as the `callId` of the live call behind `call_already_live`.
    public var details: [String: JSONValue]?
    public init(
        code: String, message: String, retryable: Bool, retryAfterMs: Int? = nil,
        details: [String: JSONValue]? = nil
    ) {
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retryAfterMs = retryAfterMs
        self.details = details
    }

    enum CodingKeys: String, CodingKey { case code, message, retryable, retryAfterMs, details }

    // The server always sends every field but `details`; `retryAfterMs` as null.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(code, forKey: .code)
        try container.encode(message, forKey: .message)
        try container.encode(retryable, forKey: .retryable)
        if let retryAfterMs {
            try container.encode(retryAfterMs, forKey: .retryAfterMs)
        } else {
            try container.encodeNil(forKey: .retryAfterMs)
        }
        try container.encodeIfPresent(details, forKey: .details)
    }
}

public struct ErrorPayload: Codable, Sendable, Hashable {
    public var code: String
    public var message: String
    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

public struct PongPayload: Codable, Sendable, Hashable {
    public var ts: Int64?
    public init(ts: Int64? = nil) { self.ts = ts }
}

public struct AuthExpiringPayload: Codable, Sendable, Hashable {
    /// Unix seconds; send `auth.refresh` before then.
    public var expiresAt: Int64
    public init(expiresAt: Int64) { self.expiresAt = expiresAt }
}

public struct DrainingPayload: Codable, Sendable, Hashable {
    public var reconnectAfterMs: Int
    public init(reconnectAfterMs: Int) { self.reconnectAfterMs = reconnectAfterMs }
}

public struct PresenceMember: Codable, Sendable, Hashable {
    public var userId: UserID
    public var status: PresenceStatus
    public init(userId: UserID, status: PresenceStatus) {
        self.userId = userId
        self.status = status
    }
}

public struct RoomPresencePayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var members: [PresenceMember]
    public init(roomId: RoomID, members: [PresenceMember]) {
        self.roomId = roomId
        self.members = members
    }
}

public struct MemberPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var userId: UserID
    public init(roomId: RoomID, userId: UserID) {
        self.roomId = roomId
        self.userId = userId
    }
}

/// A ban or a mute in a room (`member.banned`, `member.muted`).
public struct MemberSanctionPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var userId: UserID
    /// RFC 3339; nil: until a moderator lifts it.
    public var expiresAt: String?
    public init(roomId: RoomID, userId: UserID, expiresAt: String? = nil) {
        self.roomId = roomId
        self.userId = userId
        self.expiresAt = expiresAt
    }

    enum CodingKeys: String, CodingKey { case roomId, userId, expiresAt }

    // As the server writes it: a sanction until lifted has `expiresAt` null, not absent.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(roomId, forKey: .roomId)
        try container.encode(userId, forKey: .userId)
        try container.encode(expiresAt, forKey: .expiresAt)
    }
}

public struct PresenceChangedPayload: Codable, Sendable, Hashable {
    public var userId: UserID
    public var status: PresenceStatus
    public init(userId: UserID, status: PresenceStatus) {
        self.userId = userId
        self.status = status
    }
}

public struct TypingPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var userId: UserID
    public var active: Bool
    public init(roomId: RoomID, userId: UserID, active: Bool) {
        self.roomId = roomId
        self.userId = userId
        self.active = active
    }
}

/// A stored chat message: the realtime `message` object and the REST `Message` alike.
/// Deleted messages keep their seq, with an empty `body` and `deletedAt` set.
public struct ChatMessage: Codable, Sendable, Hashable, Identifiable {
    public var id: MessageID
    public var roomId: RoomID
    public var seq: Int64
    public var senderId: UserID
    public var clientMsgId: String
    public var body: String
    public var replyTo: MessageID?
    public var createdAt: String
    public var editedAt: String?
    public var deletedAt: String?

    public init(
        id: MessageID, roomId: RoomID, seq: Int64, senderId: UserID, clientMsgId: String, body: String,
        replyTo: MessageID? = nil, createdAt: String, editedAt: String? = nil, deletedAt: String? = nil
    ) {
        self.id = id
        self.roomId = roomId
        self.seq = seq
        self.senderId = senderId
        self.clientMsgId = clientMsgId
        self.body = body
        self.replyTo = replyTo
        self.createdAt = createdAt
        self.editedAt = editedAt
        self.deletedAt = deletedAt
    }

    public var isDeleted: Bool { deletedAt != nil }

    enum CodingKeys: String, CodingKey {
        case id, roomId, seq, senderId, clientMsgId, body, replyTo, createdAt, editedAt, deletedAt
    }

    // As the server writes it: unset `replyTo`, `editedAt` and `deletedAt` as null.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(roomId, forKey: .roomId)
        try container.encode(seq, forKey: .seq)
        try container.encode(senderId, forKey: .senderId)
        try container.encode(clientMsgId, forKey: .clientMsgId)
        try container.encode(body, forKey: .body)
        try container.encode(replyTo, forKey: .replyTo)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(editedAt, forKey: .editedAt)
        try container.encode(deletedAt, forKey: .deletedAt)
    }
}

public struct ChatMessagePayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var message: ChatMessage
    public init(roomId: RoomID, message: ChatMessage) {
        self.roomId = roomId
        self.message = message
    }
}

public struct ChatDeletedPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var messageId: MessageID
    public var seq: Int64
    public init(roomId: RoomID, messageId: MessageID, seq: Int64) {
        self.roomId = roomId
        self.messageId = messageId
        self.seq = seq
    }
}

public struct ChatReadReceiptPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var userId: UserID
    public var seq: Int64
    public init(roomId: RoomID, userId: UserID, seq: Int64) {
        self.roomId = roomId
        self.userId = userId
        self.seq = seq
    }
}

public struct NotificationPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var kind: NotificationKind
    public var unreadCount: Int64
    public var seq: Int64
    public var messageId: MessageID?
    public init(
        roomId: RoomID, kind: NotificationKind, unreadCount: Int64, seq: Int64, messageId: MessageID? = nil
    ) {
        self.roomId = roomId
        self.kind = kind
        self.unreadCount = unreadCount
        self.seq = seq
        self.messageId = messageId
    }
}

/// A room's current name, topic and state (`room.updated`).
public struct RoomInfo: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var kind: RoomKind
    public var name: String
    public var topic: String
    public var archived: Bool
    public init(roomId: RoomID, kind: RoomKind, name: String, topic: String, archived: Bool) {
        self.roomId = roomId
        self.kind = kind
        self.name = name
        self.topic = topic
        self.archived = archived
    }
}

public struct RoomDeletedPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public init(roomId: RoomID) { self.roomId = roomId }
}

public struct CallParticipantInfo: Codable, Sendable, Hashable {
    public var participantId: ParticipantID
    public var userId: UserID
    /// False while the participant's socket (or, in `sfu` mode, its media) is gone.
    public var connected: Bool
    public init(participantId: ParticipantID, userId: UserID, connected: Bool = true) {
        self.participantId = participantId
        self.userId = userId
        self.connected = connected
    }

    enum CodingKeys: String, CodingKey { case participantId, userId, connected }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        participantId = try container.decode(ParticipantID.self, forKey: .participantId)
        userId = try container.decode(UserID.self, forKey: .userId)
        connected = try container.decodeIfPresent(Bool.self, forKey: .connected) ?? true
    }
}

/// A call's state after a change (`call.state`, and the `call` of a join's ack).
public struct CallStatePayload: Codable, Sendable, Hashable {
    public var callId: CallID
    public var roomId: RoomID
    public var state: CallStatus
    public var mode: CallMode
    public var participants: [CallParticipantInfo]
    public var reason: CallStateReason?
    public init(
        callId: CallID, roomId: RoomID, state: CallStatus, mode: CallMode,
        participants: [CallParticipantInfo], reason: CallStateReason? = nil
    ) {
        self.callId = callId
        self.roomId = roomId
        self.state = state
        self.mode = mode
        self.participants = participants
        self.reason = reason
    }
}

/// An offer or answer from participant `from` (nil when the SFU sent it).
public struct RelayedSdpPayload: Codable, Sendable, Hashable {
    public var callId: CallID
    public var sdp: String
    public var from: ParticipantID?
    public var iceRestart: Bool
    public init(callId: CallID, sdp: String, from: ParticipantID? = nil, iceRestart: Bool = false) {
        self.callId = callId
        self.sdp = sdp
        self.from = from
        self.iceRestart = iceRestart
    }

    enum CodingKeys: String, CodingKey { case callId, sdp, from, iceRestart }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        callId = try container.decode(CallID.self, forKey: .callId)
        sdp = try container.decode(String.self, forKey: .sdp)
        from = try container.decodeIfPresent(ParticipantID.self, forKey: .from)
        iceRestart = try container.decodeIfPresent(Bool.self, forKey: .iceRestart) ?? false
    }

    // As the server writes it: `from` null when the SFU sent it, `iceRestart` always.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(callId, forKey: .callId)
        try container.encode(sdp, forKey: .sdp)
        try container.encode(from, forKey: .from)
        try container.encode(iceRestart, forKey: .iceRestart)
    }
}

/// An ICE candidate from participant `from` (nil when the SFU sent it); `candidate` nil
/// marks the end of candidates. The candidate stays a JSON object as the peer sent it.
public struct RelayedIcePayload: Codable, Sendable, Hashable {
    public var callId: CallID
    public var candidate: [String: JSONValue]?
    public var from: ParticipantID?
    public init(callId: CallID, candidate: [String: JSONValue]?, from: ParticipantID? = nil) {
        self.callId = callId
        self.candidate = candidate
        self.from = from
    }

    /// The candidate as the typed value WebRTC takes, when it has the `candidate` line.
    public var iceCandidate: IceCandidate? {
        guard let candidate, case .string(let line)? = candidate["candidate"] else { return nil }
        return IceCandidate(
            candidate: line, sdpMid: candidate["sdpMid"]?.stringValue,
            sdpMLineIndex: candidate["sdpMLineIndex"]?.intValue.map { Int($0) },
            usernameFragment: candidate["usernameFragment"]?.stringValue)
    }

    enum CodingKeys: String, CodingKey { case callId, candidate, from }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(callId, forKey: .callId)
        try container.encode(candidate, forKey: .candidate)
        try container.encodeIfPresent(from, forKey: .from)
    }
}

/// One server → client frame.
public enum ServerMessage: Sendable, Hashable {
    case capabilities(CapabilitiesPayload)
    case ack(requestId: String, result: JSONValue)
    /// `requestId` is nil when the server could not read it from the frame.
    case nack(requestId: String?, NackPayload)
    case error(ErrorPayload)
    case pong(PongPayload)
    case authExpiring(AuthExpiringPayload)
    case draining(DrainingPayload)
    case roomPresence(RoomPresencePayload)
    case memberJoined(MemberPayload)
    /// Sent before the banned user's `member.left`, to them as well.
    case memberBanned(MemberSanctionPayload)
    /// The member still reads, but `chat.send`, `chat.edit` and `call.start` answer `muted`.
    case memberMuted(MemberSanctionPayload)
    case memberUnmuted(MemberPayload)
    case memberLeft(MemberPayload)
    case presenceChanged(PresenceChangedPayload)
    case typing(TypingPayload)
    case chatMessage(ChatMessagePayload)
    case chatEdited(ChatMessagePayload)
    case chatDeleted(ChatDeletedPayload)
    case chatRead(ChatReadReceiptPayload)
    case notification(NotificationPayload)
    case roomUpdated(RoomInfo)
    case roomDeleted(RoomDeletedPayload)
    case callState(CallStatePayload)
    case rtcOffer(RelayedSdpPayload)
    case rtcAnswer(RelayedSdpPayload)
    case rtcIce(RelayedIcePayload)
    /// A type this version does not know; clients must ignore it, and may look at it.
    case unknown(type: String, payload: JSONValue)

    /// Every server → client type this version knows.
    public static let knownTypes: [String] = [
        "server.capabilities", "ack", "nack", "error", "pong", "auth.expiring", "server.draining",
        "room.presence", "member.joined", "member.left", "member.banned", "member.muted", "member.unmuted",
        "presence.changed", "typing", "chat.message", "chat.edited", "chat.deleted", "chat.read", "notification",
        "room.updated", "room.deleted", "call.state", "rtc.offer", "rtc.answer", "rtc.ice",
    ]

    public var type: String {
        switch self {
        case .capabilities: "server.capabilities"
        case .ack: "ack"
        case .nack: "nack"
        case .error: "error"
        case .pong: "pong"
        case .authExpiring: "auth.expiring"
        case .draining: "server.draining"
        case .roomPresence: "room.presence"
        case .memberJoined: "member.joined"
        case .memberLeft: "member.left"
        case .memberBanned: "member.banned"
        case .memberMuted: "member.muted"
        case .memberUnmuted: "member.unmuted"
        case .presenceChanged: "presence.changed"
        case .typing: "typing"
        case .chatMessage: "chat.message"
        case .chatEdited: "chat.edited"
        case .chatDeleted: "chat.deleted"
        case .chatRead: "chat.read"
        case .notification: "notification"
        case .roomUpdated: "room.updated"
        case .roomDeleted: "room.deleted"
        case .callState: "call.state"
        case .rtcOffer: "rtc.offer"
        case .rtcAnswer: "rtc.answer"
        case .rtcIce: "rtc.ice"
        case .unknown(let type, _): type
        }
    }

    /// The room an event is about, when it is about one.
    public var roomId: RoomID? {
        switch self {
        case .roomPresence(let p): p.roomId
        case .memberJoined(let p), .memberLeft(let p), .memberUnmuted(let p): p.roomId
        case .memberBanned(let p), .memberMuted(let p): p.roomId
        case .typing(let p): p.roomId
        case .chatMessage(let p), .chatEdited(let p): p.roomId
        case .chatDeleted(let p): p.roomId
        case .chatRead(let p): p.roomId
        case .notification(let p): p.roomId
        case .roomUpdated(let p): p.roomId
        case .roomDeleted(let p): p.roomId
        case .callState(let p): p.roomId
        default: nil
        }
    }
}

public struct ServerFrameError: Error, Sendable, CustomStringConvertible {
    /// The frame's `type`, when it could be read.
    public let type: String?
    public let reason: String
    public var description: String { "undecodable \(type ?? "frame"): \(reason)" }
}

extension ServerMessage: Codable {
    enum CodingKeys: String, CodingKey { case v, type, requestId, payload }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let type = try container.decode(String.self, forKey: .type)
        func payload<T: Decodable>(_: T.Type = T.self) throws -> T {
            try container.decode(T.self, forKey: .payload)
        }
        switch type {
        case "server.capabilities": self = .capabilities(try payload())
        case "ack":
            let requestId = try container.decode(String.self, forKey: .requestId)
            let body = try container.decodeIfPresent([String: JSONValue].self, forKey: .payload) ?? [:]
            self = .ack(requestId: requestId, result: body["result"] ?? .null)
        case "nack":
            self = .nack(requestId: try container.decodeIfPresent(String.self, forKey: .requestId), try payload())
        case "error": self = .error(try payload())
        case "pong": self = .pong(try container.decodeIfPresent(PongPayload.self, forKey: .payload) ?? PongPayload())
        case "auth.expiring": self = .authExpiring(try payload())
        case "server.draining": self = .draining(try payload())
        case "room.presence": self = .roomPresence(try payload())
        case "member.joined": self = .memberJoined(try payload())
        case "member.left": self = .memberLeft(try payload())
        case "member.banned": self = .memberBanned(try payload())
        case "member.muted": self = .memberMuted(try payload())
        case "member.unmuted": self = .memberUnmuted(try payload())
        case "presence.changed": self = .presenceChanged(try payload())
        case "typing": self = .typing(try payload())
        case "chat.message": self = .chatMessage(try payload())
        case "chat.edited": self = .chatEdited(try payload())
        case "chat.deleted": self = .chatDeleted(try payload())
        case "chat.read": self = .chatRead(try payload())
        case "notification": self = .notification(try payload())
        case "room.updated": self = .roomUpdated(try payload())
        case "room.deleted": self = .roomDeleted(try payload())
        case "call.state": self = .callState(try payload())
        case "rtc.offer": self = .rtcOffer(try payload())
        case "rtc.answer": self = .rtcAnswer(try payload())
        case "rtc.ice": self = .rtcIce(try payload())
        default:
            self = .unknown(
                type: type, payload: try container.decodeIfPresent(JSONValue.self, forKey: .payload) ?? .null)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(1, forKey: .v)
        try container.encode(type, forKey: .type)
        switch self {
        case .capabilities(let p): try container.encode(p, forKey: .payload)
        case .ack(let requestId, let result):
            try container.encode(requestId, forKey: .requestId)
            try container.encode(["result": result], forKey: .payload)
        case .nack(let requestId, let p):
            try container.encode(requestId, forKey: .requestId)
            try container.encode(p, forKey: .payload)
        case .error(let p): try container.encode(p, forKey: .payload)
        case .pong(let p): try container.encode(p, forKey: .payload)
        case .authExpiring(let p): try container.encode(p, forKey: .payload)
        case .draining(let p): try container.encode(p, forKey: .payload)
        case .roomPresence(let p): try container.encode(p, forKey: .payload)
        case .memberJoined(let p), .memberLeft(let p), .memberUnmuted(let p): try container.encode(p, forKey: .payload)
        case .memberBanned(let p), .memberMuted(let p): try container.encode(p, forKey: .payload)
        case .presenceChanged(let p): try container.encode(p, forKey: .payload)
        case .typing(let p): try container.encode(p, forKey: .payload)
        case .chatMessage(let p), .chatEdited(let p): try container.encode(p, forKey: .payload)
        case .chatDeleted(let p): try container.encode(p, forKey: .payload)
        case .chatRead(let p): try container.encode(p, forKey: .payload)
        case .notification(let p): try container.encode(p, forKey: .payload)
        case .roomUpdated(let p): try container.encode(p, forKey: .payload)
        case .roomDeleted(let p): try container.encode(p, forKey: .payload)
        case .callState(let p): try container.encode(p, forKey: .payload)
        case .rtcOffer(let p), .rtcAnswer(let p): try container.encode(p, forKey: .payload)
        case .rtcIce(let p): try container.encode(p, forKey: .payload)
        case .unknown(_, let payload): try container.encode(payload, forKey: .payload)
        }
    }

    /// Decode one server → client text frame leniently.
    public static func decode(_ text: String) throws(ServerFrameError) -> ServerMessage {
        do {
            return try JSONDecoder().decode(ServerMessage.self, from: Data(text.utf8))
        } catch {
            let type = (try? JSONValue.parse(text))?["type"]?.stringValue
            throw ServerFrameError(type: type, reason: "\(error)")
        }
    }

    /// The frame's JSON text.
    public func encodedText() throws -> String {
        String(decoding: try JSONEncoder().encode(self), as: UTF8.self)
    }
}

/// RFC 3339 timestamps as the server writes them (`2026-12-01T10:00:00.123456Z`).
public enum Timestamp {
    /// The instant a timestamp names, or nil when it is not RFC 3339.
    public static func date(_ text: String) -> Date? {
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = fractional.date(from: text) { return date }
        let whole = ISO8601DateFormatter()
        whole.formatOptions = [.withInternetDateTime]
        return whole.date(from: text)
    }
}
