import Foundation

/// What a client should do after the socket closed with a code.
public enum ReconnectPolicy: Sendable, Hashable {
    /// Reconnect with backoff and resume every room.
    case reconnect
    /// Get a fresh access token first, then reconnect.
    case refreshThenReconnect
    /// Do not reconnect (logout, revoked session, rejected origin, a client bug).
    case stop
}

/// A WebSocket close code the server uses (protocol/README.md, "Close codes").
public struct CloseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let normal = CloseCode(rawValue: 1000)
    public static let goingAway = CloseCode(rawValue: 1001)
    public static let protocolError = CloseCode(rawValue: 1002)
    /// No close frame arrived: the network dropped, or the server's heartbeat gave up.
    public static let abnormal = CloseCode(rawValue: 1006)
    public static let serviceRestart = CloseCode(rawValue: 1012)
    public static let tryAgainLater = CloseCode(rawValue: 1013)
    public static let authFailed = CloseCode(rawValue: 4001)
    public static let authTimeout = CloseCode(rawValue: 4002)
    public static let sessionExpired = CloseCode(rawValue: 4003)
    public static let sessionRevoked = CloseCode(rawValue: 4004)
    public static let originRejected = CloseCode(rawValue: 4005)
    public static let policyViolationBudget = CloseCode(rawValue: 4008)
    public static let slowConsumerResume = CloseCode(rawValue: 4009)
    public static let heartbeatTimeout = CloseCode(rawValue: 4010)
    public static let rateLimitedConnect = CloseCode(rawValue: 4029)
    public static let tooManyConnections = CloseCode(rawValue: 4030)

    public var description: String { String(rawValue) }

    /// Every code the server closes with, by the name it sends as the close reason.
    public static let byName: [String: CloseCode] = [
        "normal": .normal, "going_away": .goingAway, "protocol_error": .protocolError,
        "service_restart": .serviceRestart, "try_again_later": .tryAgainLater, "auth_failed": .authFailed,
        "auth_timeout": .authTimeout, "session_expired": .sessionExpired, "session_revoked": .sessionRevoked,
        "origin_rejected": .originRejected, "policy_violation_budget": .policyViolationBudget,
        "slow_consumer_resume": .slowConsumerResume, "heartbeat_timeout": .heartbeatTimeout,
        "rate_limited_connect": .rateLimitedConnect, "too_many_connections": .tooManyConnections,
    ]

    /// The code a close reason names: the server's reason is the code's lowercase name
    /// (`session_revoked`), which survives a WebSocket stack that loses the code itself.
    public init?(reason: String) {
        guard let code = Self.byName[reason] else { return nil }
        self = code
    }

    /// The protocol's advice for this code. 4008 means this client sent broken frames; it
    /// is reconnected with backoff, as the protocol allows, and the bug reported.
    public var policy: ReconnectPolicy {
        switch self {
        case .normal, .sessionRevoked, .originRejected, .protocolError: .stop
        case .authFailed, .sessionExpired: .refreshThenReconnect
        default: .reconnect
        }
    }
}

/// Why the realtime client asks for an access token.
public enum TokenRequestReason: Sendable, Hashable {
    /// To authenticate a new connection; a cached, unexpired token will do.
    case connect
    /// The server said the token is about to expire (`auth.expiring`), or the client's own
    /// timer did: a new token is needed.
    case expiring
    /// The server rejected the token (close 4001 or 4003): a new token is needed.
    case rejected

    /// Whether a token the caller already holds will not do.
    public var needsFreshToken: Bool { self != .connect }
}

/// Where the realtime client gets access tokens (for example
/// `BoltorezkaNetworking.BoltorezkaAPI.accessToken(for:)`).
public typealias TokenProvider = @Sendable (TokenRequestReason) async throws -> String

/// Thrown by a ``TokenProvider`` when there is no session to get a token for (signed out,
/// refresh token refused): the realtime client stops reconnecting instead of retrying.
public struct SessionEndedError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "session ended: \(reason)" }
}
