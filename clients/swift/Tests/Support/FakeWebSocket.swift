import Foundation

import BoltorezkaCoreModels
import BoltorezkaRealtime

/// A queue one task pops and others push, with cancellable waits.
public final class AsyncQueue<Element: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Element] = []
    private var waiters: [(UUID, CheckedContinuation<Element?, Never>)] = []
    private var finished = false

    public init() {}

    public func push(_ item: Element) {
        let waiter: CheckedContinuation<Element?, Never>? = lock.withLock {
            if finished { return nil }
            if !waiters.isEmpty { return waiters.removeFirst().1 }
            items.append(item)
            return nil
        }
        waiter?.resume(returning: item)
    }

    public func finish() {
        let all = lock.withLock {
            finished = true
            defer { waiters.removeAll() }
            return waiters.map(\.1)
        }
        for waiter in all { waiter.resume(returning: nil) }
    }

    /// The next item; nil once finished and drained, or when the waiting task is cancelled.
    public func pop() async -> Element? {
        let id = UUID()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Element?, Never>) in
                let ready: Element?? = lock.withLock {
                    if !items.isEmpty { return .some(items.removeFirst()) }
                    if finished || Task.isCancelled { return .some(nil) }
                    waiters.append((id, continuation))
                    return .none
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let waiter = lock.withLock { () -> CheckedContinuation<Element?, Never>? in
                guard let index = waiters.firstIndex(where: { $0.0 == id }) else { return nil }
                return waiters.remove(at: index).1
            }
            waiter?.resume(returning: nil)
        }
    }
}

public struct FakeServerTimeout: Error, CustomStringConvertible {
    public let waitingFor: String
    public var description: String { "timed out waiting for \(waitingFor)" }
}

/// One socket of the fake server: the test plays the server's side.
public final class FakeSocket: WebSocketConnection, @unchecked Sendable {
    private enum Inbound: Sendable {
        case frame(WebSocketMessage)
        case closed(WebSocketClosed)
    }

    private let toClient = AsyncQueue<Inbound>()
    private let toServer = AsyncQueue<String>()
    private let lock = NSLock()
    private var _closedByClient: CloseCode?
    private var _aborted = false

    public init() {}

    /// The close code the client closed with, if it did.
    public var closedByClient: CloseCode? { lock.withLock { _closedByClient } }
    public var aborted: Bool { lock.withLock { _aborted } }

    // MARK: The client's side

    public func send(_ text: String) async throws {
        if lock.withLock({ _aborted || _closedByClient != nil }) { throw WebSocketClosed(reason: "closed") }
        toServer.push(text)
    }

    public func receive() async throws -> WebSocketMessage {
        switch await toClient.pop() {
        case .frame(let message)?: return message
        case .closed(let closed)?: throw closed
        case nil: throw WebSocketClosed(reason: "aborted")
        }
    }

    public func close(code: CloseCode, reason: String) async {
        lock.withLock { _closedByClient = code }
        toClient.push(.closed(WebSocketClosed(code: code, reason: reason)))
        toServer.finish()
    }

    public func abort() {
        lock.withLock { _aborted = true }
        toClient.finish()
        toServer.finish()
    }

    // MARK: The server's side

    public func push(_ message: ServerMessage) {
        // Encoding a ServerMessage cannot fail: every payload is plain data.
        toClient.push(.frame(.text(try! message.encodedText())))
    }

    public func push(text: String) { toClient.push(.frame(.text(text))) }

    /// Close from the server's side with a close frame.
    public func serverClose(_ code: CloseCode, reason: String = "") {
        toClient.push(.closed(WebSocketClosed(code: code, reason: reason)))
        toServer.finish()
    }

    /// Drop the connection from the server's side without a close frame.
    public func drop() {
        toClient.push(.closed(WebSocketClosed(reason: "dropped")))
        toServer.finish()
    }

    /// The client's next frame, decoded with the server's rules: a frame the server would
    /// refuse fails the test here.
    public func nextFrame(timeout: Duration = .seconds(5)) async throws -> DecodedClientFrame {
        let text: String? = try await withThrowingTaskGroup(of: String?.self) { group in
            group.addTask { await self.toServer.pop() }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw FakeServerTimeout(waitingFor: "a client frame")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
        guard let text else { throw WebSocketClosed(reason: "the client closed the socket") }
        return try ClientFrameCodec.decode(text)
    }

    /// The client's next frame of `type`, answering pings on the way.
    public func expect(_ type: String, timeout: Duration = .seconds(5)) async throws -> DecodedClientFrame {
        while true {
            let frame = try await nextFrame(timeout: timeout)
            if frame.type == type { return frame }
            if frame.type == "ping" {
                ack(frame, PingResult(ts: nil, serverTime: 0))
                continue
            }
            throw FakeServerTimeout(waitingFor: "\(type), got \(frame.type)")
        }
    }

    public func ack<Result: Encodable>(_ frame: DecodedClientFrame, _ result: Result) {
        push(.ack(requestId: frame.requestId, result: try! JSONValue.encode(result)))
    }

    public func ackNull(_ frame: DecodedClientFrame) { push(.ack(requestId: frame.requestId, result: .null)) }

    public func nack(_ frame: DecodedClientFrame, code: String, retryable: Bool = false, retryAfterMs: Int? = nil) {
        push(
            .nack(
                requestId: frame.requestId,
                NackPayload(code: code, message: code, retryable: retryable, retryAfterMs: retryAfterMs)))
    }

    /// Answer the client's `auth`; returns the token it sent.
    @discardableResult
    public func acceptAuth(
        userId: UserID = UserID("9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d")!, expiresIn seconds: Int64 = 3600
    ) async throws -> String {
        let frame = try await expect("auth")
        guard case .auth(let payload) = frame.request else { throw FakeServerTimeout(waitingFor: "auth") }
        ack(
            frame,
            AuthResult(
                userId: userId, sessionId: SessionID("5f0c2a9e-1b3d-4e7f-8a2c-6d9e0f1a2b3c")!,
                expiresAt: Int64(Date().timeIntervalSince1970) + seconds))
        return payload.token
    }
}

/// A connector whose sockets the test serves. Each socket opens with `server.capabilities`.
public final class FakeConnector: WebSocketConnector, @unchecked Sendable {
    private let sockets = AsyncQueue<FakeSocket>()
    private let lock = NSLock()
    private var _connects = 0
    private var _refusals = 0
    public var heartbeatIntervalMs: Int

    public init(heartbeatIntervalMs: Int = 600_000) {
        self.heartbeatIntervalMs = heartbeatIntervalMs
    }

    /// How many sockets the client has asked for.
    public var connects: Int { lock.withLock { _connects } }

    /// Refuse the next `count` connection attempts, as a draining node does.
    public func refuse(next count: Int) { lock.withLock { _refusals = count } }

    public func connect(to url: URL, headers: [String: String]) async throws -> any WebSocketConnection {
        let refused = lock.withLock {
            _connects += 1
            if _refusals > 0 {
                _refusals -= 1
                return true
            }
            return false
        }
        if refused { throw WebSocketClosed(reason: "refused", handshakeStatus: 503) }
        let socket = FakeSocket()
        socket.push(
            .capabilities(
                CapabilitiesPayload(
                    limits: Limits(maxFrameBytes: 65536, rates: ["chat.send": 5]),
                    heartbeatIntervalMs: heartbeatIntervalMs, nodeId: "fake", sessionId: UUID().uuidString,
                    resumeWindowSeconds: 86400)))
        sockets.push(socket)
        return socket
    }

    /// The next socket the client opens.
    public func nextSocket(timeout: Duration = .seconds(5)) async throws -> FakeSocket {
        let socket: FakeSocket? = try await withThrowingTaskGroup(of: FakeSocket?.self) { group in
            group.addTask { await self.sockets.pop() }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw FakeServerTimeout(waitingFor: "a connection")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
        guard let socket else { throw FakeServerTimeout(waitingFor: "a connection") }
        return socket
    }
}
