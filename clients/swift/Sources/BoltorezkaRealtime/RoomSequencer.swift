import Foundation

import BoltorezkaCoreModels

/// In-order, exactly-once delivery of one room's `chat.message` frames, with hole
/// detection. Pure: the realtime client feeds it frames and history pages and does what it
/// returns.
///
/// It keeps the highest seq held with no hole below it (`lastSeq`). A frame at or below it
/// is a duplicate (a replay after a resume can overlap what arrived live) and is dropped;
/// the next seq is delivered, with whatever was buffered after it; a frame further ahead
/// is buffered, and the hole below it is fetched with `chat.history`.
public struct RoomSequencer: Sendable {
    /// A history range to fetch: seqs strictly between `after` and `before`.
    public struct Fetch: Sendable, Hashable {
        public let after: Int64
        public let before: Int64
    }

    public struct Step: Sendable {
        /// Messages to deliver now, in seq order.
        public var deliver: [ChatMessagePayload] = []
        /// A hole to fetch, when one needs fetching (at most one fetch runs at a time).
        public var fetch: Fetch?
    }

    /// The highest seq held with nothing missing below it; nil until the room's join is
    /// acknowledged (a join without `lastSeq` learns the starting point from its ack).
    public private(set) var lastSeq: Int64?
    private var buffer: [Int64: ChatMessagePayload] = [:]
    /// The fetch in flight, if any.
    public private(set) var fetching: Fetch?

    public init(lastSeq: Int64? = nil) { self.lastSeq = lastSeq }

    /// Messages buffered above a hole.
    public var bufferedCount: Int { buffer.count }

    /// A `chat.message` arrived.
    public mutating func receive(_ message: ChatMessagePayload) -> Step {
        let seq = message.message.seq
        guard let last = lastSeq else {
            buffer[seq] = message  // not anchored yet: the join's ack says where to start
            return Step()
        }
        if seq <= last || buffer[seq] != nil { return Step() }
        buffer[seq] = message
        return settle()
    }

    /// The join's ack arrived: `ackLastSeq` is the last seq the server replayed (or the
    /// room's newest, for a join without `lastSeq`).
    public mutating func acknowledge(joinedAt ackLastSeq: Int64) -> Step {
        if lastSeq == nil {
            lastSeq = ackLastSeq
            buffer = buffer.filter { $0.key > ackLastSeq }
        } else if let last = lastSeq, ackLastSeq > last, fetching == nil {
            // The replay said it went further than what arrived: fetch the difference.
            fetching = Fetch(after: last, before: ackLastSeq + 1)
            var step = settle()
            step.fetch = fetching
            return step
        }
        return settle()
    }

    /// A page of the fetched hole arrived (`chat.history` with the fetch's bounds).
    public mutating func filled(_ messages: [ChatMessage], roomId: RoomID, hasMore: Bool) -> Step {
        let asked = fetching
        fetching = nil
        for message in messages where message.seq > (lastSeq ?? Int64.min) {
            buffer[message.seq] = ChatMessagePayload(roomId: roomId, message: message)
        }
        var step = settle(fetchHoles: false)
        guard let last = lastSeq, let lowest = buffer.keys.min(), lowest > last + 1 else { return step }
        if let asked, last + 1 < asked.before {
            // Part of the asked range is still missing.
            if hasMore && !messages.isEmpty {
                fetching = Fetch(after: last, before: min(lowest, asked.before))
                step.fetch = fetching
                return step
            }
            // The server holds nothing more there (seqs are gapless, so this should not
            // happen): move past it rather than stall the room forever.
            lastSeq = min(lowest, asked.before) - 1
            let more = settle()
            step.deliver += more.deliver
            step.fetch = more.fetch
            return step
        }
        fetching = Fetch(after: last, before: lowest)
        step.fetch = fetching
        return step
    }

    /// The fetch failed (the connection dropped): the resume's replay will bring the hole.
    public mutating func fetchFailed() { fetching = nil }

    /// A new connection: the resume replays everything after `lastSeq` again, so what is
    /// buffered above a hole will come back in order.
    public mutating func reset() {
        buffer.removeAll()
        fetching = nil
    }

    private mutating func settle(fetchHoles: Bool = true) -> Step {
        var step = Step()
        guard var last = lastSeq else { return step }
        while let next = buffer.removeValue(forKey: last + 1) {
            step.deliver.append(next)
            last += 1
        }
        lastSeq = last
        buffer = buffer.filter { $0.key > last }
        if fetchHoles, fetching == nil, let lowest = buffer.keys.min(), lowest > last + 1 {
            fetching = Fetch(after: last, before: lowest)
            step.fetch = fetching
        }
        return step
    }
}
