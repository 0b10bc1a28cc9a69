import Foundation

import BoltorezkaCoreModels

/// How the realtime client paces itself.
public struct RealtimeConfiguration: Sendable {
    /// How long a request waits for its `ack` or `nack`.
    public var requestTimeout: Duration = .seconds(10)
    /// How long a `room.join` with `lastSeq` waits: its ack follows the whole replay, which
    /// the server paces to how fast this client reads.
    public var resumeTimeout: Duration = .seconds(120)
    /// How long opening a socket and reading `server.capabilities` may take.
    public var connectTimeout: Duration = .seconds(10)
    /// Reconnect delays (exponential, full jitter).
    public var backoff = Backoff()
    /// Give up after this many failed reconnect attempts in a row; nil: never.
    public var maxReconnectAttempts: Int? = nil
    /// How often to send `ping`; nil: half the server's `heartbeatIntervalMs`. A ping
    /// unanswered within the request timeout (or this interval, if longer), with nothing
    /// else received meanwhile, drops the socket.
    public var heartbeatInterval: Duration? = nil
    /// Refresh the access token this long before it expires, if `auth.expiring` has not
    /// come first.
    public var refreshMargin: Duration = .seconds(30)
    /// `chat.history` page size when filling a hole (the protocol allows up to 200).
    public var gapFillPageSize: Int = 200
    /// Extra handshake headers (an `Origin` for a server that checks one, for example).
    public var headers: [String: String] = [:]

    public init() {}
}

/// Where the connection stands.
public enum ConnectionState: Sendable, Hashable {
    case idle
    case connecting(attempt: Int)
    /// Authenticated; rooms are being resumed or are live.
    case connected(AuthResult)
    /// Disconnected; the next attempt starts after `delay`.
    case waitingToReconnect(attempt: Int, delay: Duration, lastClose: CloseCode?)
    /// ``RealtimeClient/pause()`` closed the socket; ``RealtimeClient/connect()`` resumes.
    case paused
    /// Finished: ``RealtimeClient/close()``, a close code after which reconnecting cannot help
    /// (4004 revoked, 1000 logout), the token provider said the session ended, or the
    /// reconnect attempts ran out.
    case closed(CloseCode?, reason: String)

    public var isConnected: Bool {
        if case .connected = self { return true }
        return false
    }
}

/// What the realtime client reports.
public enum RealtimeEvent: Sendable {
    /// A server frame (every type but `ack` and `nack`, which answer requests). A room's
    /// `chat.message` frames come in seq order, each once, holes filled from history.
    case server(ServerMessage)
    case state(ConnectionState)
    /// A room was joined again after a reconnect; `replayed` messages came before this.
    case resumed(RoomJoinResult)
    /// A hole in a room's seqs was filled from history with `count` messages.
    case gapFilled(roomId: RoomID, after: Int64, before: Int64, count: Int)
    /// The access token was swapped on the live socket (`auth.refresh`); the fresh ICE
    /// servers that came with it are in ``RealtimeClient/authResult``.
    case tokenRefreshed(expiresAt: Int64)
    /// Something went wrong that the client survives: a frame it could not decode, a nack
    /// without a requestId (a bug report about this client's encoder), a failed refresh,
    /// a room that could not be resumed.
    case problem(String)
}

public enum RealtimeError: Error, Sendable, CustomStringConvertible {
    /// There is no authenticated connection right now.
    case notConnected
    /// No answer within the request timeout.
    case timeout(type: String, requestId: String)
    /// The socket closed before the answer came.
    case connectionLost(WebSocketClosed)
    /// The server answered with `nack`; `payload.code` is stable.
    case nack(type: String, NackPayload)
    /// The request breaks the protocol's rules; it was not sent.
    case invalidRequest(ProtocolError)
    /// The server said something this client cannot follow.
    case unexpected(String)
    /// The client was closed, or gave up reconnecting.
    case closed

    /// The nack code, when the server sent one.
    public var code: String? {
        if case .nack(_, let payload) = self { return payload.code }
        return nil
    }

    public var description: String {
        switch self {
        case .notConnected: "not connected"
        case .timeout(let type, let id): "\(type) \(id) got no answer"
        case .connectionLost(let closed): "connection lost: \(closed)"
        case .nack(let type, let payload): "\(type) refused: \(payload.code): \(payload.message)"
        case .invalidRequest(let error): "invalid request: \(error)"
        case .unexpected(let what): "unexpected: \(what)"
        case .closed: "closed"
        }
    }
}
