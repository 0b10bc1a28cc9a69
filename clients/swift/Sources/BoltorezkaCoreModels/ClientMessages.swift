import Foundation

// Client → server payloads (protocol/README.md, "Client → server"; protocol/schemas/client.json).
// Each encodes to the canonical form of protocol/vectors: absent optionals and fields equal
// to their default are left out, ids are lowercase.

/// The presence a client may set; `offline` is derived by the server and cannot be set.
public enum SettablePresence: String, Codable, Sendable, CaseIterable {
    case online, away, dnd
}

/// The mode asked for in `call.start`; `auto` starts peer-to-peer and moves to the SFU when
/// the call grows.
public enum CallStartMode: String, Codable, Sendable, CaseIterable {
    case auto, p2p, sfu
}

/// How establishing media went, for `call.telemetry`.
public enum TelemetryOutcome: String, Codable, Sendable, CaseIterable {
    /// ICE connected.
    case connected
    /// The first remote frame was decoded (ICE alone is not media).
    case media
    case failed
}

/// The type of the selected local ICE candidate.
public enum CandidateType: String, Codable, Sendable, CaseIterable {
    case host, srflx, prflx, relay
}

public struct TokenPayload: Codable, Sendable, Hashable {
    public var token: String
    public init(token: String) { self.token = token }
}

public struct PingPayload: Codable, Sendable, Hashable {
    public var ts: Int64?
    public init(ts: Int64? = nil) { self.ts = ts }
}

public struct RoomJoinPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    /// Resume delivery after this seq; `0` is a real value, not "absent".
    public var lastSeq: Int64?
    public init(roomId: RoomID, lastSeq: Int64? = nil) {
        self.roomId = roomId
        self.lastSeq = lastSeq
    }
}

public struct RoomPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public init(roomId: RoomID) { self.roomId = roomId }
}

public struct PresenceSetPayload: Codable, Sendable, Hashable {
    public var status: SettablePresence
    public init(status: SettablePresence) { self.status = status }
}

public struct ChatSendPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    /// The idempotency key: resending it never posts twice.
    public var clientMsgId: String
    public var body: String
    public var replyTo: MessageID?
    public init(roomId: RoomID, clientMsgId: String, body: String, replyTo: MessageID? = nil) {
        self.roomId = roomId
        self.clientMsgId = clientMsgId
        self.body = body
        self.replyTo = replyTo
    }
}

public struct ChatEditPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var messageId: MessageID
    public var body: String
    public init(roomId: RoomID, messageId: MessageID, body: String) {
        self.roomId = roomId
        self.messageId = messageId
        self.body = body
    }
}

public struct ChatDeletePayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var messageId: MessageID
    public init(roomId: RoomID, messageId: MessageID) {
        self.roomId = roomId
        self.messageId = messageId
    }
}

public struct ChatReadPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var seq: Int64
    public init(roomId: RoomID, seq: Int64) {
        self.roomId = roomId
        self.seq = seq
    }
}

public struct ChatHistoryPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    /// Exclusive upper bound.
    public var before: Int64?
    /// Exclusive lower bound; with it the page is the oldest messages after it.
    public var after: Int64?
    /// 1...200; the server's default (50) when absent.
    public var limit: Int?
    public init(roomId: RoomID, before: Int64? = nil, after: Int64? = nil, limit: Int? = nil) {
        self.roomId = roomId
        self.before = before
        self.after = after
        self.limit = limit
    }
}

public struct CallStartPayload: Codable, Sendable, Hashable {
    public var roomId: RoomID
    public var mode: CallStartMode
    public init(roomId: RoomID, mode: CallStartMode = .auto) {
        self.roomId = roomId
        self.mode = mode
    }

    enum CodingKeys: String, CodingKey { case roomId, mode }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        roomId = try container.decode(RoomID.self, forKey: .roomId)
        mode = try container.decodeIfPresent(CallStartMode.self, forKey: .mode) ?? .auto
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(roomId, forKey: .roomId)
        if mode != .auto { try container.encode(mode, forKey: .mode) }
    }
}

public struct CallPayload: Codable, Sendable, Hashable {
    public var callId: CallID
    public init(callId: CallID) { self.callId = callId }
}

/// An offer or answer for participant `to`, or for the SFU when `to` is nil.
public struct RtcSdpPayload: Codable, Sendable, Hashable {
    public var callId: CallID
    public var sdp: String
    public var to: ParticipantID?
    public var iceRestart: Bool
    public init(callId: CallID, sdp: String, to: ParticipantID? = nil, iceRestart: Bool = false) {
        self.callId = callId
        self.sdp = sdp
        self.to = to
        self.iceRestart = iceRestart
    }

    enum CodingKeys: String, CodingKey { case callId, sdp, to, iceRestart }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        callId = try container.decode(CallID.self, forKey: .callId)
        sdp = try container.decode(String.self, forKey: .sdp)
        to = try container.decodeIfPresent(ParticipantID.self, forKey: .to)
        iceRestart = try container.decodeIfPresent(Bool.self, forKey: .iceRestart) ?? false
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(callId, forKey: .callId)
        try container.encode(sdp, forKey: .sdp)
        try container.encodeIfPresent(to, forKey: .to)
        if iceRestart { try container.encode(true, forKey: .iceRestart) }
    }
}

/// An RTCIceCandidate as browsers (and WebRTC.framework) serialise it.
public struct IceCandidate: Codable, Sendable, Hashable {
    public var candidate: String
    public var sdpMid: String?
    public var sdpMLineIndex: Int?
    public var usernameFragment: String?
    public init(
        candidate: String, sdpMid: String? = nil, sdpMLineIndex: Int? = nil,
        usernameFragment: String? = nil
    ) {
        self.candidate = candidate
        self.sdpMid = sdpMid
        self.sdpMLineIndex = sdpMLineIndex
        self.usernameFragment = usernameFragment
    }
}

/// A trickled ICE candidate; `candidate` nil marks the end of candidates.
public struct RtcIcePayload: Codable, Sendable, Hashable {
    public var callId: CallID
    public var candidate: IceCandidate?
    public var to: ParticipantID?
    public init(callId: CallID, candidate: IceCandidate?, to: ParticipantID? = nil) {
        self.callId = callId
        self.candidate = candidate
        self.to = to
    }

    enum CodingKeys: String, CodingKey { case callId, candidate, to }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        callId = try container.decode(CallID.self, forKey: .callId)
        // Required but nullable: null is the end-of-candidates marker, absence is an error.
        guard container.contains(.candidate) else {
            throw DecodingError.keyNotFound(
                CodingKeys.candidate, .init(codingPath: container.codingPath, debugDescription: "required"))
        }
        candidate = try container.decodeIfPresent(IceCandidate.self, forKey: .candidate)
        to = try container.decodeIfPresent(ParticipantID.self, forKey: .to)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(callId, forKey: .callId)
        if let candidate {
            try container.encode(candidate, forKey: .candidate)
        } else {
            try container.encodeNil(forKey: .candidate)
        }
        try container.encodeIfPresent(to, forKey: .to)
    }
}

public struct CallTelemetryPayload: Codable, Sendable, Hashable {
    public var callId: CallID
    public var outcome: TelemetryOutcome
    /// Milliseconds from joining to the outcome (0...600000).
    public var setupMs: Int?
    public var iceFailed: Bool
    public var candidateType: CandidateType?
    public init(
        callId: CallID, outcome: TelemetryOutcome, setupMs: Int? = nil, iceFailed: Bool = false,
        candidateType: CandidateType? = nil
    ) {
        self.callId = callId
        self.outcome = outcome
        self.setupMs = setupMs
        self.iceFailed = iceFailed
        self.candidateType = candidateType
    }

    enum CodingKeys: String, CodingKey { case callId, outcome, setupMs, iceFailed, candidateType }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        callId = try container.decode(CallID.self, forKey: .callId)
        outcome = try container.decode(TelemetryOutcome.self, forKey: .outcome)
        setupMs = try container.decodeIfPresent(Int.self, forKey: .setupMs)
        iceFailed = try container.decodeIfPresent(Bool.self, forKey: .iceFailed) ?? false
        candidateType = try container.decodeIfPresent(CandidateType.self, forKey: .candidateType)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(callId, forKey: .callId)
        try container.encode(outcome, forKey: .outcome)
        try container.encodeIfPresent(setupMs, forKey: .setupMs)
        if iceFailed { try container.encode(true, forKey: .iceFailed) }
        try container.encodeIfPresent(candidateType, forKey: .candidateType)
    }
}

/// Every client → server request, each with its payload.
public enum ClientRequest: Sendable, Hashable {
    case auth(TokenPayload)
    case authRefresh(TokenPayload)
    case ping(PingPayload)
    case roomJoin(RoomJoinPayload)
    case roomLeave(RoomPayload)
    case presenceSet(PresenceSetPayload)
    case typingStart(RoomPayload)
    case typingStop(RoomPayload)
    case chatSend(ChatSendPayload)
    case chatEdit(ChatEditPayload)
    case chatDelete(ChatDeletePayload)
    case chatRead(ChatReadPayload)
    case chatHistory(ChatHistoryPayload)
    case callStart(CallStartPayload)
    case callJoin(CallPayload)
    case callLeave(CallPayload)
    case callEnd(CallPayload)
    case rtcOffer(RtcSdpPayload)
    case rtcAnswer(RtcSdpPayload)
    case rtcIce(RtcIcePayload)
    case callTelemetry(CallTelemetryPayload)

    /// The envelope `type`.
    public var type: String {
        switch self {
        case .auth: "auth"
        case .authRefresh: "auth.refresh"
        case .ping: "ping"
        case .roomJoin: "room.join"
        case .roomLeave: "room.leave"
        case .presenceSet: "presence.set"
        case .typingStart: "typing.start"
        case .typingStop: "typing.stop"
        case .chatSend: "chat.send"
        case .chatEdit: "chat.edit"
        case .chatDelete: "chat.delete"
        case .chatRead: "chat.read"
        case .chatHistory: "chat.history"
        case .callStart: "call.start"
        case .callJoin: "call.join"
        case .callLeave: "call.leave"
        case .callEnd: "call.end"
        case .rtcOffer: "rtc.offer"
        case .rtcAnswer: "rtc.answer"
        case .rtcIce: "rtc.ice"
        case .callTelemetry: "call.telemetry"
        }
    }

    /// The payload in canonical form, as the encoder writes it.
    public func payloadValue() throws -> JSONValue {
        switch self {
        case .auth(let p), .authRefresh(let p): try JSONValue.encode(p)
        case .ping(let p): try JSONValue.encode(p)
        case .roomJoin(let p): try JSONValue.encode(p)
        case .roomLeave(let p), .typingStart(let p), .typingStop(let p): try JSONValue.encode(p)
        case .presenceSet(let p): try JSONValue.encode(p)
        case .chatSend(let p): try JSONValue.encode(p)
        case .chatEdit(let p): try JSONValue.encode(p)
        case .chatDelete(let p): try JSONValue.encode(p)
        case .chatRead(let p): try JSONValue.encode(p)
        case .chatHistory(let p): try JSONValue.encode(p)
        case .callStart(let p): try JSONValue.encode(p)
        case .callJoin(let p), .callLeave(let p), .callEnd(let p): try JSONValue.encode(p)
        case .rtcOffer(let p), .rtcAnswer(let p): try JSONValue.encode(p)
        case .rtcIce(let p): try JSONValue.encode(p)
        case .callTelemetry(let p): try JSONValue.encode(p)
        }
    }

    /// The typed request for an envelope `type` and a payload already checked by
    /// ``ClientFrameCodec``.
    public static func make(type: String, payload: JSONValue) throws -> ClientRequest {
        switch type {
        case "auth": .auth(try payload.decode())
        case "auth.refresh": .authRefresh(try payload.decode())
        case "ping": .ping(try payload.decode())
        case "room.join": .roomJoin(try payload.decode())
        case "room.leave": .roomLeave(try payload.decode())
        case "presence.set": .presenceSet(try payload.decode())
        case "typing.start": .typingStart(try payload.decode())
        case "typing.stop": .typingStop(try payload.decode())
        case "chat.send": .chatSend(try payload.decode())
        case "chat.edit": .chatEdit(try payload.decode())
        case "chat.delete": .chatDelete(try payload.decode())
        case "chat.read": .chatRead(try payload.decode())
        case "chat.history": .chatHistory(try payload.decode())
        case "call.start": .callStart(try payload.decode())
        case "call.join": .callJoin(try payload.decode())
        case "call.leave": .callLeave(try payload.decode())
        case "call.end": .callEnd(try payload.decode())
        case "rtc.offer": .rtcOffer(try payload.decode())
        case "rtc.answer": .rtcAnswer(try payload.decode())
        case "rtc.ice": .rtcIce(try payload.decode())
        case "call.telemetry": .callTelemetry(try payload.decode())
        default:
            throw ProtocolError(code: .unknownType, message: "unknown message type: \(type)")
        }
    }
}
