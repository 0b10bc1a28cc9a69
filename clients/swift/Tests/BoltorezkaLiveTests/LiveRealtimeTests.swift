import Foundation
import XCTest

import BoltorezkaCoreModels
@testable import BoltorezkaNetworking
@testable import BoltorezkaRealtime
import BoltorezkaTestSupport

/// Two realtime clients against a real `boltorezka serve`.
final class LiveRealtimeTests: XCTestCase {
    struct Pair {
        let alice: BoltorezkaAPI
        let bob: BoltorezkaAPI
        let aliceUser: User
        let bobUser: User
        let room: RoomID
    }

    /// Two new users and a private room they are both members of.
    func pair(_ label: String) async throws -> Pair {
        let (alice, aliceUser) = try await LiveServer.user("\(label)a")
        let (bob, bobUser) = try await LiveServer.user("\(label)b")
        let room = try await alice.createRoom(name: "Swift \(label)").room.id
        try await alice.addMember(bobUser.id, to: room)
        return Pair(alice: alice, bob: bob, aliceUser: aliceUser, bobUser: bobUser, room: room)
    }

    func waitForSeqs(_ log: EventLog<RealtimeEvent>, _ room: RoomID, count: Int, timeout: Duration = .seconds(20))
        async throws
    {
        try await log.wait(for: "\(count) messages", timeout: timeout) { _ in
            log.seqs(in: room).count >= count ? true : nil
        }
    }

    func testTwoClientsChatInOrder() async throws {
        let setup = try await pair("chat")
        let alice = LiveServer.realtime(setup.alice)
        let bob = LiveServer.realtime(setup.bob)
        let aliceLog = EventLog(await alice.events())
        let bobLog = EventLog(await bob.events())
        let auth = try await alice.connect()
        XCTAssertEqual(auth.userId, setup.aliceUser.id)
        try await bob.connect()
        let joined = try await alice.join(setup.room)
        XCTAssertEqual(joined.lastSeq, 0)
        try await bob.join(setup.room)
        // Each presence snapshot follows its join.
        try await bobLog.first("room.presence") { event -> Bool? in
            if case .server(.roomPresence(let presence)) = event, presence.roomId == setup.room { return true }
            return nil
        }
        // Alice sends in order; Bob sends concurrently.
        let fromBob = Task {
            try await withThrowingTaskGroup(of: ChatSendResult.self) { group in
                for index in 1...6 { group.addTask { try await bob.send("bob \(index)", to: setup.room) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
        }
        var fromAlice: [ChatSendResult] = []
        for index in 1...6 { fromAlice.append(try await alice.send("alice \(index)", to: setup.room)) }
        let bobResults = try await fromBob.value
        XCTAssertEqual(Set((fromAlice + bobResults).map(\.seq)), Set(1...12))
        XCTAssertEqual(fromAlice.map(\.seq), fromAlice.map(\.seq).sorted(), "one sender's messages keep their order")
        for log in [aliceLog, bobLog] {
            try await waitForSeqs(log, setup.room, count: 12)
            XCTAssertEqual(log.seqs(in: setup.room), Array(1...12), "in seq order, each once")
        }
        XCTAssertEqual(Set(aliceLog.bodies(in: setup.room)), Set((1...6).flatMap { ["alice \($0)", "bob \($0)"] }))
        // Typing and read receipts go through as well.
        try await alice.setTyping(true, in: setup.room)
        try await bobLog.first("typing") { event -> Bool? in
            if case .server(.typing(let typing)) = event, typing.userId == setup.aliceUser.id, typing.active {
                return true
            }
            return nil
        }
        let marker = try await bob.markRead(setup.room, upTo: 12)
        XCTAssertEqual(marker.unreadCount, 0)
        let history = try await bob.history(in: setup.room, before: 5)
        XCTAssertEqual(history.messages.map(\.seq), [1, 2, 3, 4])
        await alice.close()
        await bob.close()
    }

    func testDroppedConnectionResumesWithNothingMissingOrDoubled() async throws {
        let setup = try await pair("drop")
        // The reconnect waits at its token request until Bob has posted, so those posts can
        // only reach Alice through the resume.
        let gate = Gate()
        let alice = RealtimeClient(
            url: setup.alice.realtimeURL,
            tokenProvider: { reason in
                await gate.pass()
                return try await setup.alice.accessToken(for: reason)
            })
        let bob = LiveServer.realtime(setup.bob)
        let log = EventLog(await alice.events())
        try await alice.connect()
        try await bob.connect()
        try await alice.join(setup.room)
        for index in 1...3 { try await bob.send("before \(index)", to: setup.room) }
        try await waitForSeqs(log, setup.room, count: 3)

        await gate.close()
        await alice.dropConnection()
        for index in 1...5 { try await bob.send("meanwhile \(index)", to: setup.room) }
        await gate.open()
        let resumed = try await log.first("resumed", timeout: .seconds(20)) { event -> RoomJoinResult? in
            if case .resumed(let result) = event { return result }
            return nil
        }
        XCTAssertEqual(resumed.roomId, setup.room)
        XCTAssertEqual(resumed.replayed, 5)
        XCTAssertEqual(resumed.lastSeq, 8)
        for index in 1...2 { try await bob.send("after \(index)", to: setup.room) }
        try await waitForSeqs(log, setup.room, count: 10)
        try await Task.sleep(for: .milliseconds(300))  // room for a doubled frame to show up
        XCTAssertEqual(log.seqs(in: setup.room), Array(1...10))
        XCTAssertEqual(
            log.bodies(in: setup.room),
            (1...3).map { "before \($0)" } + (1...5).map { "meanwhile \($0)" } + (1...2).map { "after \($0)" })
        let reconnects = await alice.reconnectCount
        XCTAssertEqual(reconnects, 1)
        let lastSeq = await alice.lastSeq(in: setup.room)
        XCTAssertEqual(lastSeq, 10)
        await alice.close()
        await bob.close()
    }

    func testPausedClientReplaysWhatWasPostedMeanwhile() async throws {
        let setup = try await pair("pause")
        let alice = LiveServer.realtime(setup.alice)
        let log = EventLog(await alice.events())
        try await alice.connect()
        try await alice.join(setup.room)
        try await alice.send("one", to: setup.room)
        try await waitForSeqs(log, setup.room, count: 1)
        await alice.pause()
        for body in ["two", "three", "four"] { _ = try await setup.bob.postMessage(body, in: setup.room) }
        try await alice.connect()
        let resumed = try await log.first("resumed") { event -> RoomJoinResult? in
            if case .resumed(let result) = event { return result }
            return nil
        }
        XCTAssertEqual(resumed.replayed, 3, "the messages posted while paused came as the replay")
        XCTAssertEqual(resumed.lastSeq, 4)
        try await waitForSeqs(log, setup.room, count: 4)
        XCTAssertEqual(log.bodies(in: setup.room), ["one", "two", "three", "four"])
        await alice.close()
    }

    /// ci.sh runs the server with 60 s access tokens and `auth.expiring` 50 s ahead, so the
    /// warning comes 10 s after auth.
    func testTokenRefreshOnALiveSocket() async throws {
        let setup = try await pair("token")
        let alice = LiveServer.realtime(setup.alice)
        let log = EventLog(await alice.events())
        let auth = try await alice.connect()
        try await alice.join(setup.room)
        let refreshTokenBefore = await setup.alice.session.tokens?.refreshToken

        // Asked for: a new token from the REST session, swapped in on the same socket.
        let manual = try await alice.refreshAuth()
        XCTAssertGreaterThanOrEqual(manual.expiresAt, auth.expiresAt)
        let refreshTokenAfter = await setup.alice.session.tokens?.refreshToken
        XCTAssertNotEqual(refreshTokenAfter, refreshTokenBefore, "the refresh went through REST and rotated")

        // Warned: the server's auth.expiring, answered with auth.refresh on its own.
        let warned = try await log.first("auth.expiring", timeout: .seconds(40)) { event -> Int64? in
            if case .server(.authExpiring(let payload)) = event { return payload.expiresAt }
            return nil
        }
        let refreshed = try await log.wait(for: "a refresh after the warning", timeout: .seconds(20)) { events in
            events.compactMap { event -> Int64? in
                if case .tokenRefreshed(let at) = event, at > warned { return at }
                return nil
            }.first
        }
        XCTAssertGreaterThan(refreshed, warned)
        // Still the same socket, still working.
        let reconnects = await alice.reconnectCount
        XCTAssertEqual(reconnects, 0)
        try await alice.send("after the refresh", to: setup.room)
        try await waitForSeqs(log, setup.room, count: 1)
        await alice.close()
    }

    func testRejectedTokenFailsTheConnect() async throws {
        let url = BoltorezkaAPI(baseURL: try LiveServer.url()).realtimeURL
        let client = RealtimeClient(url: url, tokenProvider: { _ in "not-a-token" })
        do {
            try await client.connect()
            XCTFail("connected with a bad token")
        } catch RealtimeError.nack(_, let nack) {
            XCTAssertEqual(nack.code, "invalid_token")
        } catch RealtimeError.connectionLost(let closed) {
            // FoundationNetworking drops the nack that comes right before the close.
            XCTAssertEqual(closed.code, .authFailed)
        }
        let state = await client.state
        guard case .closed = state else { return XCTFail("\(state)") }
    }

    func testLogoutClosesTheSocketAndTheClientStops() async throws {
        let setup = try await pair("logout")
        let alice = LiveServer.realtime(setup.alice)
        let log = EventLog(await alice.events())
        try await alice.connect()
        try await setup.alice.logout()
        let closed = try await log.first("closed", timeout: .seconds(20)) { event -> String? in
            if case .state(.closed(let code, let reason)) = event { return "\(code.map(String.init(describing:)) ?? "nil") \(reason)" }
            return nil
        }
        // 4004 even on Linux, where FoundationNetworking reports 1003: the reason names it.
        XCTAssertEqual(closed, "4004 session_revoked")
        let state = await alice.state
        guard case .closed = state else { return XCTFail("\(state)") }
    }

    func testABannedUserHearsTheBanThenLeavesTheRoom() async throws {
        let setup = try await pair("ban")
        let bob = LiveServer.realtime(setup.bob)
        let log = EventLog(await bob.events())
        try await bob.connect()
        try await bob.join(setup.room)
        try await setup.alice.ban(setup.bobUser.id, from: setup.room, forSeconds: 3600)
        try await log.first("member.left") { event -> Bool? in
            if case .server(.memberLeft(let left)) = event, left.userId == setup.bobUser.id { return true }
            return nil
        }
        let messages = log.events.compactMap(\.serverMessage)
        let order = messages.map(\.type).filter { $0 == "member.banned" || $0 == "member.left" }
        XCTAssertEqual(order, ["member.banned", "member.left"])
        let banned = messages.compactMap { message -> MemberSanctionPayload? in
            if case .memberBanned(let payload) = message { return payload }
            return nil
        }
        XCTAssertEqual(banned.first?.userId, setup.bobUser.id)
        XCTAssertNotNil(banned.first?.expiresAt)
        let rooms = await bob.joinedRooms
        XCTAssertEqual(rooms, [])
        await bob.close()
    }
}
