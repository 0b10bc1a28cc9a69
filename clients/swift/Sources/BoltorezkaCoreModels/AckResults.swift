import Foundation

// The `result` of each request's `ack` (protocol/README.md, "Requests and answers";
// `x-ackResults` in protocol/schemas/server.json). Requests whose ack carries `null`
// (typing, rtc.*, call.telemetry) decode as ``EmptyResult``.

/// A STUN or TURN server for `RTCPeerConnection` (`iceServers`).
public struct IceServer: Codable, Sendable, Hashable {
    public var urls: [String]
    public var username: String?
    public var credential: String?
    public init(urls: [String], username: String? = nil, credential: String? = nil) {
        self.urls = urls
        self.username = username
        self.credential = credential
    }

    enum CodingKeys: String, CodingKey { case urls, username, credential }

    // WebRTC allows `urls` to be one string; accept it as a list of one.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let one = try? container.decode(String.self, forKey: .urls) {
            urls = [one]
        } else {
            urls = try container.decode([String].self, forKey: .urls)
        }
        username = try container.decodeIfPresent(String.self, forKey: .username)
        credential = try container.decodeIfPresent(String.self, forKey: .credential)
    }
}

/// The ack of a request whose result is `null`.
public struct EmptyResult: Decodable, Sendable, Hashable {
    public init() {}
    public init(from decoder: any Decoder) throws {}
}

public struct AuthResult: Codable, Sendable, Hashable {
    public var userId: UserID
    public var sessionId: SessionID
    /// When the access token expires, Unix seconds.
    public var expiresAt: Int64
    /// STUN/TURN servers with TURN credentials for this user; empty when none are configured.
    public var iceServers: [IceServer]
    public init(userId: UserID, sessionId: SessionID, expiresAt: Int64, iceServers: [IceServer] = []) {
        self.userId = userId
        self.sessionId = sessionId
        self.expiresAt = expiresAt
        self.iceServers = iceServers
    }

    enum CodingKeys: String, CodingKey { case userId, sessionId, expiresAt, iceServers }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        userId = try container.decode(UserID.self, forKey: .userId)
        sessionId = try container.decode(SessionID.self, forKey: .sessionId)
        expiresAt = try container.decode(Int64.self, forKey: .expiresAt)
        iceServers = try container.decodeIfPresent([IceServer].self, forKey: .iceServers) ?? []
    }
}

public struct AuthRefreshResult: Codable, Sendable, Hashable {
    /// When the new access token expires, Unix seconds.
    public var expiresAt: Int64
    /// Fresh STUN/TURN servers, as in ``AuthResult``; empty from a server that sends none.
    public var iceServers: [IceServer]
    public init(expiresAt: Int64, iceServers: [IceServer] = []) {
        self.expiresAt = expiresAt
        self.iceServers = iceServers
    }

    enum CodingKeys: String, CodingKey { case expiresAt, iceServers }

    // Servers before the typed contract answered with `expiresAt` alone.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        expiresAt = try container.decode(Int64.self, forKey: .expiresAt)
        iceServers = try container.decodeIfPresent([IceServer].self, forKey: .iceServers) ?? []
    }
}

public struct PingResult: Codable, Sendable, Hashable {
    /// The request's `ts`, echoed.
    public var ts: Int64?
    /// The server's clock, Unix milliseconds.
    public var serverTime: Int64
    public init(ts: Int64?, serverTime: Int64) {
        self.ts = ts
        self.serverTime = serverTime
    }
}

public struct RoomJoinResult: Codable, Sendable, Hashable {
    public var roomId: RoomID
    /// The seq of the last replayed message (the request's `lastSeq` if nothing was newer;
    /// the room's newest seq for a join without `lastSeq`).
    public var lastSeq: Int64
    /// How many messages were replayed before this ack.
    public var replayed: Int
    public init(roomId: RoomID, lastSeq: Int64, replayed: Int) {
        self.roomId = roomId
        self.lastSeq = lastSeq
        self.replayed = replayed
    }
}

public struct RoomLeaveResult: Codable, Sendable, Hashable {
    public var roomId: RoomID
    /// False if the room was not joined on this connection.
    public var left: Bool
    public init(roomId: RoomID, left: Bool) {
        self.roomId = roomId
        self.left = left
    }
}

public struct PresenceSetResult: Codable, Sendable, Hashable {
    public var status: PresenceStatus
    public init(status: PresenceStatus) { self.status = status }
}

public struct ChatSendResult: Codable, Sendable, Hashable {
    public var messageId: MessageID
    public var seq: Int64
    public var createdAt: String
    /// True when this `clientMsgId` was already stored and the stored message is the answer.
    public var duplicate: Bool
    public init(messageId: MessageID, seq: Int64, createdAt: String, duplicate: Bool) {
        self.messageId = messageId
        self.seq = seq
        self.createdAt = createdAt
        self.duplicate = duplicate
    }
}

public struct ChatEditResult: Codable, Sendable, Hashable {
    public var message: ChatMessage
    public init(message: ChatMessage) { self.message = message }
}

public struct ChatDeleteResult: Codable, Sendable, Hashable {
    public var messageId: MessageID
    public var seq: Int64
    public init(messageId: MessageID, seq: Int64) {
        self.messageId = messageId
        self.seq = seq
    }
}

/// A read position (the `chat.read` ack and `PUT /v1/rooms/{roomId}/read` alike).
public struct ReadMarker: Codable, Sendable, Hashable {
    public var roomId: RoomID
    /// The stored read position; it never moves backwards.
    public var seq: Int64
    public var unreadCount: Int64
    public init(roomId: RoomID, seq: Int64, unreadCount: Int64) {
        self.roomId = roomId
        self.seq = seq
        self.unreadCount = unreadCount
    }
}

public struct ChatHistoryResult: Codable, Sendable, Hashable {
    public var roomId: RoomID
    /// Ascending seq.
    public var messages: [ChatMessage]
    /// Whether more messages lie beyond the page in the direction of paging.
    public var hasMore: Bool
    public init(roomId: RoomID, messages: [ChatMessage], hasMore: Bool) {
        self.roomId = roomId
        self.messages = messages
        self.hasMore = hasMore
    }
}

/// The ack of `call.start` and `call.join`.
public struct CallJoinResult: Codable, Sendable, Hashable {
    public var call: CallStatePayload
    /// This connection's participant in the call.
    public var participantId: ParticipantID
    public var iceServers: [IceServer]
    public init(call: CallStatePayload, participantId: ParticipantID, iceServers: [IceServer] = []) {
        self.call = call
        self.participantId = participantId
        self.iceServers = iceServers
    }
}

/// The ack of `call.leave` and `call.end`.
public struct CallLeaveResult: Codable, Sendable, Hashable {
    public var callId: CallID
    public var state: CallStatus
    public init(callId: CallID, state: CallStatus) {
        self.callId = callId
        self.state = state
    }
}
