import Foundation
import XCTest

import BoltorezkaCoreModels
@testable import BoltorezkaRealtime

final class RoomSequencerTests: XCTestCase {
    func payload(_ seq: Int64) -> ChatMessagePayload { ChatMessagePayload(roomId: roomA, message: message(seq)) }

    func testDeliversInOrderAndDropsDuplicates() {
        var sequencer = RoomSequencer(lastSeq: 0)
        XCTAssertEqual(sequencer.receive(payload(1)).deliver.map(\.message.seq), [1])
        XCTAssertEqual(sequencer.receive(payload(1)).deliver.count, 0)
        XCTAssertEqual(sequencer.receive(payload(2)).deliver.map(\.message.seq), [2])
        XCTAssertEqual(sequencer.lastSeq, 2)
    }

    func testAHoleIsFetchedOnceAndFilled() {
        var sequencer = RoomSequencer(lastSeq: 1)
        let step = sequencer.receive(payload(5))
        XCTAssertTrue(step.deliver.isEmpty)
        XCTAssertEqual(step.fetch, RoomSequencer.Fetch(after: 1, before: 5))
        XCTAssertNil(sequencer.receive(payload(7)).fetch, "one fetch at a time")
        let filled = sequencer.filled([message(2), message(3), message(4)], roomId: roomA, hasMore: false)
        XCTAssertEqual(filled.deliver.map(\.message.seq), [2, 3, 4, 5])
        XCTAssertEqual(filled.fetch, RoomSequencer.Fetch(after: 5, before: 7), "the next hole")
        XCTAssertEqual(sequencer.filled([message(6)], roomId: roomA, hasMore: false).deliver.map(\.message.seq), [6, 7])
        XCTAssertEqual(sequencer.bufferedCount, 0)
    }

    func testALongHoleIsFetchedPageByPage() {
        var sequencer = RoomSequencer(lastSeq: 0)
        XCTAssertEqual(sequencer.receive(payload(5)).fetch, RoomSequencer.Fetch(after: 0, before: 5))
        let first = sequencer.filled([message(1), message(2)], roomId: roomA, hasMore: true)
        XCTAssertEqual(first.deliver.map(\.message.seq), [1, 2])
        XCTAssertEqual(first.fetch, RoomSequencer.Fetch(after: 2, before: 5))
        XCTAssertEqual(
            sequencer.filled([message(3), message(4)], roomId: roomA, hasMore: false).deliver.map(\.message.seq),
            [3, 4, 5])
    }

    func testAnEmptyAnswerDoesNotStallTheRoom() {
        var sequencer = RoomSequencer(lastSeq: 0)
        _ = sequencer.receive(payload(3))
        let step = sequencer.filled([], roomId: roomA, hasMore: false)
        XCTAssertEqual(step.deliver.map(\.message.seq), [3])
        XCTAssertNil(step.fetch)
    }

    func testAJoinWithoutLastSeqStartsAtItsAck() {
        var sequencer = RoomSequencer()
        XCTAssertTrue(sequencer.receive(payload(9)).deliver.isEmpty)
        XCTAssertTrue(sequencer.receive(payload(11)).deliver.isEmpty)
        let step = sequencer.acknowledge(joinedAt: 10)
        XCTAssertEqual(step.deliver.map(\.message.seq), [11])
        XCTAssertEqual(sequencer.lastSeq, 11)
    }

    func testAResetForgetsWhatTheResumeWillReplay() {
        var sequencer = RoomSequencer(lastSeq: 2)
        _ = sequencer.receive(payload(4))
        sequencer.reset()
        XCTAssertEqual(sequencer.bufferedCount, 0)
        XCTAssertNil(sequencer.fetching)
        XCTAssertEqual(sequencer.lastSeq, 2)
    }
}

final class BackoffTests: XCTestCase {
    func testCeilingDoublesUpToTheMaximum() {
        let backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        XCTAssertEqual((0..<6).map { backoff.ceiling(attempt: $0) },
                       [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)])
        XCTAssertEqual(backoff.ceiling(attempt: 500), .seconds(1))
    }

    func testFullJitterSpansZeroToTheCeiling() {
        let backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(10))
        XCTAssertEqual(backoff.delay(attempt: 3, unit: 0), .zero)
        XCTAssertEqual(backoff.delay(attempt: 3, unit: 0.5), .milliseconds(400))
        for _ in 0..<200 {
            let delay = backoff.delay(attempt: 2)
            XCTAssertTrue(delay >= .zero && delay <= .milliseconds(400))
        }
        let spread = Set((0..<50).map { _ in backoff.delay(attempt: 4) })
        XCTAssertGreaterThan(spread.count, 10, "jittered, not fixed")
    }
}
