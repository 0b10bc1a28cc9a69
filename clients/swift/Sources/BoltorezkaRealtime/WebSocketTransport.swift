import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

import BoltorezkaCoreModels

/// One frame received from the socket.
public enum WebSocketMessage: Sendable, Hashable {
    case text(String)
    case binary(Data)
}

/// The socket closed (or never opened). `code` is nil when no close frame arrived: the
/// network dropped, the handshake failed, or the connection was aborted.
public struct WebSocketClosed: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: CloseCode?
    public var reason: String
    /// The HTTP status of a refused handshake (403, 429, 503), when there was one.
    public var handshakeStatus: Int?

    public init(code: CloseCode? = nil, reason: String = "", handshakeStatus: Int? = nil) {
        self.code = code
        self.reason = reason
        self.handshakeStatus = handshakeStatus
    }

    public var description: String {
        if let handshakeStatus { return "handshake refused with HTTP \(handshakeStatus) \(reason)" }
        return "closed \(code.map(String.init(describing:)) ?? "without a close frame") \(reason)"
    }
}

/// An open WebSocket. The realtime client sends from one task and receives from another.
public protocol WebSocketConnection: Sendable {
    func send(_ text: String) async throws
    /// The next frame; throws ``WebSocketClosed`` once the socket is closed.
    func receive() async throws -> WebSocketMessage
    /// Close with a close frame.
    func close(code: CloseCode, reason: String) async
    /// Drop the connection at once, without a close frame; a pending `receive` fails.
    func abort()
}

/// Opens WebSockets. ``URLSessionWebSocketConnector`` is the default; tests put a fake here.
public protocol WebSocketConnector: Sendable {
    func connect(to url: URL, headers: [String: String]) async throws -> any WebSocketConnection
}

/// ``WebSocketConnector`` on `URLSessionWebSocketTask` (Foundation on Apple platforms,
/// FoundationNetworking on Linux).
public final class URLSessionWebSocketConnector: WebSocketConnector {
    private let session: URLSession
    private let maximumMessageSize: Int

    /// - Parameter maximumMessageSize: frames larger than this fail the socket; a page of
    ///   200 messages of 4000 characters can pass 1 MB, `URLSessionWebSocketTask`'s default.
    public init(configuration: URLSessionConfiguration = .default, maximumMessageSize: Int = 16 << 20) {
        session = URLSession(configuration: configuration)
        self.maximumMessageSize = maximumMessageSize
    }

    deinit { session.invalidateAndCancel() }

    public func connect(to url: URL, headers: [String: String]) async throws -> any WebSocketConnection {
        var request = URLRequest(url: url)
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        #if canImport(FoundationNetworking)
            // FoundationNetworking 6.0.3 sends `Connection: keep-alive` on the handshake, which
            // RFC 6455 servers (aiohttp among them) refuse; Apple's stack sets it right, and
            // reserves the header, so only Linux gets it set here.
            request.setValue("Upgrade", forHTTPHeaderField: "Connection")
        #endif
        let task = session.webSocketTask(with: request)
        task.maximumMessageSize = maximumMessageSize
        task.resume()
        return URLSessionWebSocketConnection(task: task)
    }
}

/// `URLSessionWebSocketTask` is thread-safe but not marked `Sendable` everywhere.
final class URLSessionWebSocketConnection: WebSocketConnection, @unchecked Sendable {
    let task: URLSessionWebSocketTask

    init(task: URLSessionWebSocketTask) { self.task = task }

    func send(_ text: String) async throws {
        try await task.send(.string(text))
    }

    func receive() async throws -> WebSocketMessage {
        do {
            let message = try await withTaskCancellationHandler {
                try await task.receive()
            } onCancel: { [task] in
                task.cancel()
            }
            switch message {
            case .string(let text): return .text(text)
            case .data(let data): return .binary(data)
            @unknown default: return .binary(Data())
            }
        } catch {
            throw closed(after: error)
        }
    }

    func close(code: CloseCode, reason: String) async {
        let closeCode = URLSessionWebSocketTask.CloseCode(rawValue: code.rawValue) ?? .normalClosure
        task.cancel(with: closeCode, reason: Data(reason.utf8))
    }

    func abort() { task.cancel() }

    private func closed(after error: any Error) -> WebSocketClosed {
        let raw = task.closeCode.rawValue
        let reason = task.closeReason.map { String(decoding: $0, as: UTF8.self) } ?? ""
        if raw != URLSessionWebSocketTask.CloseCode.invalid.rawValue {
            // FoundationNetworking 6.0.3 turns every code its enum lacks (all of 4000-4999)
            // into 1003, keeping the reason; the server's reason names the real code.
            return WebSocketClosed(code: CloseCode(reason: reason) ?? CloseCode(rawValue: raw), reason: reason)
        }
        if let response = task.response as? HTTPURLResponse, response.statusCode != 101 {
            return WebSocketClosed(reason: "\(error)", handshakeStatus: response.statusCode)
        }
        return WebSocketClosed(reason: "\(error)")
    }
}
