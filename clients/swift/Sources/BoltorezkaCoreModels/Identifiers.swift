import Foundation

/// What an identifier names; the phantom type of ``Identifier``.
public protocol IdentifierKind: Sendable {}

public enum RoomKindTag: IdentifierKind {}
public enum UserKindTag: IdentifierKind {}
public enum MessageKindTag: IdentifierKind {}
public enum SessionKindTag: IdentifierKind {}
public enum CallKindTag: IdentifierKind {}
public enum ParticipantKindTag: IdentifierKind {}
public enum ReportKindTag: IdentifierKind {}

/// A UUID naming one kind of thing, so a user id cannot be passed where a room id belongs.
/// On the wire it is the lowercase canonical form the protocol sends; uppercase input is
/// accepted, as the server accepts it.
public struct Identifier<Kind: IdentifierKind>: Hashable, Sendable, Comparable,
    CustomStringConvertible, Codable
{
    public let uuid: UUID

    public init(_ uuid: UUID) { self.uuid = uuid }

    public init?(_ string: String) {
        guard let uuid = UUID(uuidString: string) else { return nil }
        self.uuid = uuid
    }

    /// A fresh random identifier (for tests and fakes; the server makes the real ones).
    public static func random() -> Self { Self(UUID()) }

    /// The wire form: lowercase, hyphenated.
    public var string: String { uuid.uuidString.lowercased() }
    public var description: String { string }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.string < rhs.string }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let uuid = UUID(uuidString: text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "Invalid UUID: \(text)")
        }
        self.uuid = uuid
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(string)
    }
}

public typealias RoomID = Identifier<RoomKindTag>
public typealias UserID = Identifier<UserKindTag>
public typealias MessageID = Identifier<MessageKindTag>
public typealias SessionID = Identifier<SessionKindTag>
public typealias CallID = Identifier<CallKindTag>
public typealias ParticipantID = Identifier<ParticipantKindTag>
public typealias ReportID = Identifier<ReportKindTag>

/// A string-valued enumeration the server may extend: values this version does not know
/// decode instead of failing the whole frame (the protocol lets the server add fields and
/// message types without a version bump, and a new status or reason is the same kind of
/// change). Compare with the static members: `status == .online`.
public protocol OpenStringEnum: RawRepresentable, Hashable, Sendable, Codable,
    ExpressibleByStringLiteral, CustomStringConvertible where RawValue == String
{
    init(rawValue: String)
    /// The values this version of the client knows.
    static var knownValues: [Self] { get }
}

extension OpenStringEnum {
    public init(stringLiteral value: String) { self.init(rawValue: value) }
    public var description: String { rawValue }
    public var isKnown: Bool { Self.knownValues.contains(self) }
}

/// A user's presence as the server reports it (`offline` is derived by the server).
public struct PresenceStatus: OpenStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let online: Self = "online"
    public static let away: Self = "away"
    public static let dnd: Self = "dnd"
    public static let offline: Self = "offline"
    public static let knownValues: [Self] = [.online, .away, .dnd, .offline]
}

/// The state of a call on the server: `ringing` → `active` → `ended`.
public struct CallStatus: OpenStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let ringing: Self = "ringing"
    public static let active: Self = "active"
    public static let ended: Self = "ended"
    public static let knownValues: [Self] = [.ringing, .active, .ended]
}

/// How a call's media flows: a peer-to-peer mesh or through the server's SFU.
public struct CallMode: OpenStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let p2p: Self = "p2p"
    public static let sfu: Self = "sfu"
    public static let knownValues: [Self] = [.p2p, .sfu]
}

/// Why a `call.state` was sent, when the server says.
public struct CallStateReason: OpenStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    /// Another node took the call over: rejoin if shown disconnected, restart ICE.
    public static let hostChanged: Self = "host_changed"
    /// The SFU lost a participant's media connection (`sfu` mode).
    public static let mediaLost: Self = "media_lost"
    public static let mediaRestored: Self = "media_restored"
    public static let knownValues: [Self] = [.hostChanged, .mediaLost, .mediaRestored]
}

public struct NotificationKind: OpenStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let unread: Self = "unread"
    public static let mention: Self = "mention"
    public static let knownValues: [Self] = [.unread, .mention]
}

public struct RoomKind: OpenStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let `public`: Self = "public"
    public static let `private`: Self = "private"
    public static let direct: Self = "direct"
    public static let knownValues: [Self] = [.public, .private, .direct]
}

public struct MemberRole: OpenStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let owner: Self = "owner"
    public static let admin: Self = "admin"
    public static let member: Self = "member"
    public static let knownValues: [Self] = [.owner, .admin, .member]
}

/// How a moderator closed a report.
public struct ReportResolution: OpenStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    /// Acted on (the message deleted, its sender muted or banned).
    public static let actioned: Self = "actioned"
    /// Nothing to act on.
    public static let dismissed: Self = "dismissed"
    public static let knownValues: [Self] = [.actioned, .dismissed]
}
