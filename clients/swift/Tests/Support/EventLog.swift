import Foundation

import BoltorezkaCoreModels
import BoltorezkaRealtime

public struct WaitTimeout: Error, CustomStringConvertible {
    public let what: String
    public var description: String { "timed out waiting for \(what)" }
}

/// Everything an async stream delivered, kept for the test to look at and wait on.
public final class EventLog<Event: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var _events: [Event] = []
    private var task: Task<Void, Never>?

    public init(_ stream: AsyncStream<Event>) {
        task = Task { [weak self] in
            for await event in stream {
                guard let self else { return }
                self.lock.withLock { self._events.append(event) }
            }
        }
    }

    deinit { task?.cancel() }

    public var events: [Event] { lock.withLock { _events } }

    /// Wait until `condition` holds over everything received so far.
    @discardableResult
    public func wait<T>(
        for what: String, timeout: Duration = .seconds(10), _ condition: @escaping ([Event]) -> T?
    ) async throws -> T {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let found = condition(events) { return found }
            if ContinuousClock.now >= deadline { throw WaitTimeout(what: what) }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Wait for the first event `match` picks, returning what it picked.
    @discardableResult
    public func first<T>(_ what: String, timeout: Duration = .seconds(10), _ match: @escaping (Event) -> T?) async throws
        -> T
    {
        try await wait(for: what, timeout: timeout) { events in events.lazy.compactMap(match).first }
    }
}

extension RealtimeEvent {
    /// The chat message of a `chat.message` event.
    public var chatMessage: ChatMessagePayload? {
        if case .server(.chatMessage(let payload)) = self { return payload }
        return nil
    }

    public var serverMessage: ServerMessage? {
        if case .server(let message) = self { return message }
        return nil
    }

    public var connectionState: ConnectionState? {
        if case .state(let state) = self { return state }
        return nil
    }
}

extension EventLog where Event == RealtimeEvent {
    /// The seqs of a room's `chat.message` events, in arrival order.
    public func seqs(in room: RoomID) -> [Int64] {
        events.compactMap(\.chatMessage).filter { $0.roomId == room }.map(\.message.seq)
    }

    public func bodies(in room: RoomID) -> [String] {
        events.compactMap(\.chatMessage).filter { $0.roomId == room }.map(\.message.body)
    }
}
