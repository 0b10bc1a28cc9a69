import Foundation
import XCTest

import BoltorezkaCoreModels
@testable import BoltorezkaRealtime
import BoltorezkaTestSupport

/// Hands out tokens and remembers why each was asked for.
actor TokenBox {
    private(set) var reasons: [TokenRequestReason] = []
    private var counter = 0
    var failWith: (any Error)?

    func token(_ reason: TokenRequestReason) throws -> String {
        reasons.append(reason)
        if let failWith { throw failWith }
        counter += 1
        return "token-\(counter)"
    }

    func fail(with error: any Error) { failWith = error }
}

let roomA = RoomID("0b5e3c1a-7d2f-4c8e-9a61-3f2d8e4b5c71")!
let sender = UserID("9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d")!

func message(_ seq: Int64, in room: RoomID = roomA, body: String? = nil) -> ChatMessage {
    ChatMessage(
        id: MessageID(UUID()), roomId: room, seq: seq, senderId: sender, clientMsgId: "c\(seq)",
        body: body ?? "m\(seq)", createdAt: "2026-12-01T10:00:00Z")
}

func chat(_ seq: Int64, in room: RoomID = roomA) -> ServerMessage {
    .chatMessage(ChatMessagePayload(roomId: room, message: message(seq, in: room)))
}

/// The realtime client against a scripted fake server: every exchange is checked frame by
/// frame (each client frame passes the server's own codec rules).
final class RealtimeClientTests: XCTestCase {
    var connector: FakeConnector!
    var tokens: TokenBox!

    override func setUp() {
        connector = FakeConnector()
        tokens = TokenBox()
    }

    func makeClient(_ tune: (inout RealtimeConfiguration) -> Void = { _ in }) -> RealtimeClient {
        var configuration = RealtimeConfiguration()
        configuration.backoff = Backoff(initial: .milliseconds(20), maximum: .milliseconds(100))
        configuration.requestTimeout = .seconds(2)
        tune(&configuration)
        let tokens = self.tokens!
        return RealtimeClient(
            url: URL(string: "ws://fake/v1/ws")!, configuration: configuration, connector: connector,
            tokenProvider: { try await tokens.token($0) })
    }

    /// Connect and answer the auth; returns the socket.
    func connected(_ client: RealtimeClient) async throws -> FakeSocket {
        async let auth = client.connect()
        let socket = try await connector.nextSocket()
        try await socket.acceptAuth()
        _ = try await auth
        return socket
    }

    func joined(_ client: RealtimeClient, _ socket: FakeSocket, room: RoomID = roomA, lastSeq: Int64 = 0) async throws {
        async let result = client.join(room)
        let frame = try await socket.expect("room.join")
        socket.ack(frame, RoomJoinResult(roomId: room, lastSeq: lastSeq, replayed: 0))
        _ = try await result
    }

    func testAuthIsTheFirstRequest() async throws {
        let client = makeClient()
        async let auth = client.connect()
        let socket = try await connector.nextSocket()
        let first = try await socket.nextFrame()
        XCTAssertEqual(first.type, "auth")
        XCTAssertEqual(first.request, .auth(TokenPayload(token: "token-1")))
        socket.ack(first, AuthResult(userId: sender, sessionId: .random(), expiresAt: 4_000_000_000))
        let result = try await auth
        XCTAssertEqual(result.userId, sender)
        let state = await client.state
        XCTAssertTrue(state.isConnected)
        let reasons = await tokens.reasons
        XCTAssertEqual(reasons, [.connect])
        await client.close()
    }

    func testFailedAuthIsThrownAndNotRetried() async throws {
        let client = makeClient()
        async let auth = client.connect()
        let socket = try await connector.nextSocket()
        socket.nack(try await socket.expect("auth"), code: "invalid_token")
        socket.serverClose(.authFailed)
        do {
            _ = try await auth
            XCTFail("connected")
        } catch RealtimeError.nack(let type, let nack) {
            XCTAssertEqual(type, "auth")
            XCTAssertEqual(nack.code, "invalid_token")
        }
        try await Task.sleep(for: .milliseconds(200))
        XCTAssertEqual(connector.connects, 1)
    }

    func testAnswersAreMatchedByRequestId() async throws {
        let client = makeClient()
        let socket = try await connected(client)
        async let presence = client.setPresence(.away)
        async let history = client.history(in: roomA, limit: 5)
        let first = try await socket.nextFrame()
        let second = try await socket.nextFrame()
        XCTAssertNotEqual(first.requestId, second.requestId)
        // Answered in the other order, and one of them refused.
        for frame in [second, first] {
            if frame.type == "presence.set" {
                socket.ack(frame, PresenceSetResult(status: .away))
            } else {
                socket.nack(frame, code: "not_a_member")
            }
        }
        let status = try await presence.status
        XCTAssertEqual(status, .away)
        do {
            _ = try await history
            XCTFail("history answered")
        } catch let error as RealtimeError {
            XCTAssertEqual(error.code, "not_a_member")
        }
        await client.close()
    }

    func testUnansweredRequestTimesOut() async throws {
        let client = makeClient { $0.requestTimeout = .milliseconds(200) }
        let socket = try await connected(client)
        do {
            try await client.setTyping(true, in: roomA)
            XCTFail("answered")
        } catch RealtimeError.timeout(let type, _) {
            XCTAssertEqual(type, "typing.start")
        }
        _ = socket
        await client.close()
    }

    func testInvalidRequestFailsBeforeItIsSent() async throws {
        let client = makeClient()
        let socket = try await connected(client)
        do {
            try await client.send("", to: roomA)
            XCTFail("sent")
        } catch RealtimeError.invalidRequest(let error) {
            XCTAssertEqual(error.code, .validationFailed)
        }
        _ = socket
        await client.close()
    }

    func testMessagesArriveInOrderOnceAndHolesAreFilledFromHistory() async throws {
        let client = makeClient()
        let log = EventLog(await client.events())
        let socket = try await connected(client)
        try await joined(client, socket)
        socket.push(chat(1))
        socket.push(chat(4))
        let fill = try await socket.expect("chat.history")
        XCTAssertEqual(
            fill.request, .chatHistory(ChatHistoryPayload(roomId: roomA, before: 4, after: 1, limit: 200)))
        socket.push(chat(5))  // arrives while the hole is being filled
        socket.ack(fill, ChatHistoryResult(roomId: roomA, messages: [message(2), message(3)], hasMore: false))
        socket.push(chat(3))  // a duplicate
        socket.push(chat(6))
        try await log.wait(for: "seq 6") { $0.compactMap(\.chatMessage).last?.message.seq == 6 ? true : nil }
        XCTAssertEqual(log.seqs(in: roomA), [1, 2, 3, 4, 5, 6])
        let lastSeq = await client.lastSeq(in: roomA)
        XCTAssertEqual(lastSeq, 6)
        let gaps = await client.gapsFilled
        XCTAssertEqual(gaps, 1)
        await client.close()
    }

    func testReconnectResumesEveryRoomFromItsLastSeq() async throws {
        let client = makeClient()
        let log = EventLog(await client.events())
        let first = try await connected(client)
        try await joined(client, first)
        for seq: Int64 in 1...3 { first.push(chat(seq)) }
        try await log.wait(for: "seq 3") { $0.compactMap(\.chatMessage).count == 3 ? true : nil }
        first.drop()
        let second = try await connector.nextSocket()
        try await second.acceptAuth()
        let join = try await second.expect("room.join")
        XCTAssertEqual(join.request, .roomJoin(RoomJoinPayload(roomId: roomA, lastSeq: 3)))
        // The replay overlaps what arrived before the drop (3); the client drops the copy.
        for seq: Int64 in 3...5 { second.push(chat(seq)) }
        second.ack(join, RoomJoinResult(roomId: roomA, lastSeq: 5, replayed: 3))
        let resumed = try await log.first("resumed") { event -> RoomJoinResult? in
            if case .resumed(let result) = event { return result }
            return nil
        }
        XCTAssertEqual(resumed.lastSeq, 5)
        second.push(chat(6))
        try await log.wait(for: "seq 6") { $0.compactMap(\.chatMessage).last?.message.seq == 6 ? true : nil }
        XCTAssertEqual(log.seqs(in: roomA), [1, 2, 3, 4, 5, 6])
        let reconnects = await client.reconnectCount
        XCTAssertEqual(reconnects, 1)
        await client.close()
    }

    func testBackoffRetriesRefusedConnections() async throws {
        let client = makeClient()
        let log = EventLog(await client.events())
        let first = try await connected(client)
        connector.refuse(next: 3)
        first.serverClose(.tryAgainLater)
        let second = try await connector.nextSocket()
        try await second.acceptAuth()
        try await log.wait(for: "connected again") { events in
            events.compactMap(\.connectionState).filter(\.isConnected).count == 2 ? true : nil
        }
        XCTAssertEqual(connector.connects, 5)
        let waits = log.events.compactMap(\.connectionState).compactMap { state -> Int? in
            if case .waitingToReconnect(let attempt, _, _) = state { return attempt }
            return nil
        }
        XCTAssertEqual(waits, [1, 2, 3, 4])
        await client.close()
    }

    func testDrainingMovesToANewConnection() async throws {
        let client = makeClient()
        let first = try await connected(client)
        try await joined(client, first, lastSeq: 7)
        first.push(.draining(DrainingPayload(reconnectAfterMs: 50)))
        let second = try await connector.nextSocket()
        try await second.acceptAuth()
        let join = try await second.expect("room.join")
        XCTAssertEqual(join.request, .roomJoin(RoomJoinPayload(roomId: roomA, lastSeq: 7)))
        second.ack(join, RoomJoinResult(roomId: roomA, lastSeq: 7, replayed: 0))
        XCTAssertEqual(first.closedByClient, .goingAway)
        await client.close()
    }

    func testAuthExpiringSwapsInAFreshTokenOnTheLiveSocket() async throws {
        let client = makeClient()
        let log = EventLog(await client.events())
        let socket = try await connected(client)
        socket.push(.authExpiring(AuthExpiringPayload(expiresAt: Int64(Date().timeIntervalSince1970) + 30)))
        let refresh = try await socket.expect("auth.refresh")
        XCTAssertEqual(refresh.request, .authRefresh(TokenPayload(token: "token-2")))
        let fresh = [IceServer(urls: ["turn:turn.test:3478"], username: "4000000000:u", credential: "c")]
        socket.ack(refresh, AuthRefreshResult(expiresAt: 4_000_000_000, iceServers: fresh))
        let expiresAt = try await log.first("tokenRefreshed") { event -> Int64? in
            if case .tokenRefreshed(let at) = event { return at }
            return nil
        }
        XCTAssertEqual(expiresAt, 4_000_000_000)
        let reasons = await tokens.reasons
        XCTAssertEqual(reasons, [.connect, .expiring])
        let auth = await client.authResult
        XCTAssertEqual(auth?.expiresAt, 4_000_000_000)
        XCTAssertEqual(auth?.iceServers, fresh)
        await client.close()
    }

    func testTokenIsRefreshedBeforeExpiryWithoutAWarning() async throws {
        let client = makeClient { $0.refreshMargin = .seconds(30) }
        async let auth = client.connect()
        let socket = try await connector.nextSocket()
        try await socket.acceptAuth(expiresIn: 1)  // the timer fires at half the remaining time
        _ = try await auth
        let refresh = try await socket.expect("auth.refresh", timeout: .seconds(3))
        socket.ack(refresh, AuthRefreshResult(expiresAt: 4_000_000_000))
        await client.close()
    }

    func testSessionExpiredReconnectsWithAFreshToken() async throws {
        let client = makeClient()
        let first = try await connected(client)
        first.serverClose(.sessionExpired)
        let second = try await connector.nextSocket()
        let token = try await second.acceptAuth()
        XCTAssertEqual(token, "token-2")
        let reasons = await tokens.reasons
        XCTAssertEqual(reasons, [.connect, .rejected])
        await client.close()
    }

    func testRevokedSessionStopsReconnecting() async throws {
        let client = makeClient()
        let log = EventLog(await client.events())
        let socket = try await connected(client)
        socket.serverClose(.sessionRevoked)
        let closed = try await log.first("closed") { event -> CloseCode?? in
            if case .state(.closed(let code, _)) = event { return .some(code) }
            return nil
        }
        XCTAssertEqual(closed, .sessionRevoked)
        try await Task.sleep(for: .milliseconds(200))
        XCTAssertEqual(connector.connects, 1)
        do {
            try await client.waitUntilConnected(timeout: .milliseconds(100))
            XCTFail("connected")
        } catch RealtimeError.closed {}
    }

    func testEndedSessionStopsReconnecting() async throws {
        let client = makeClient()
        let log = EventLog(await client.events())
        let socket = try await connected(client)
        await tokens.fail(with: SessionEndedError("signed out"))
        socket.drop()
        try await log.first("closed") { event -> Bool? in
            if case .state(.closed) = event { return true }
            return nil
        }
        XCTAssertEqual(connector.connects, 2)
    }

    func testUnansweredHeartbeatReplacesTheSocket() async throws {
        let client = makeClient {
            $0.heartbeatInterval = .milliseconds(100)
            $0.requestTimeout = .milliseconds(200)
        }
        let first = try await connected(client)
        let ping = try await first.nextFrame()
        XCTAssertEqual(ping.type, "ping")
        // No answer: the client gives up on this socket and opens another.
        let second = try await connector.nextSocket()
        try await second.acceptAuth()
        XCTAssertTrue(first.aborted)
        await client.close()
    }

    func testAPingStuckBehindTrafficKeepsTheSocket() async throws {
        let client = makeClient {
            $0.heartbeatInterval = .milliseconds(100)
            $0.requestTimeout = .milliseconds(200)
        }
        let socket = try await connected(client)
        // Pings go unanswered (as behind a long replay) while other frames keep coming.
        for _ in 0..<12 {
            socket.push(.typing(TypingPayload(roomId: roomA, userId: sender, active: true)))
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTAssertFalse(socket.aborted)
        XCTAssertEqual(connector.connects, 1)
        await client.close()
    }

    func testSendIsRetriedAcrossAReconnectWithTheSameClientMsgId() async throws {
        let client = makeClient()
        let first = try await connected(client)
        async let sent = client.send("hello", to: roomA)
        let attempt = try await first.expect("chat.send")
        first.drop()
        let second = try await connector.nextSocket()
        try await second.acceptAuth()
        let retry = try await second.expect("chat.send")
        XCTAssertEqual(retry.request, attempt.request)
        second.ack(retry, ChatSendResult(messageId: .random(), seq: 1, createdAt: "t", duplicate: true))
        let result = try await sent
        XCTAssertTrue(result.duplicate)
        await client.close()
    }

    func testUnknownServerTypesReachTheEventStream() async throws {
        let client = makeClient()
        let log = EventLog(await client.events())
        let socket = try await connected(client)
        socket.push(text: #"{"v":1,"type":"future.thing","payload":{"x":1}}"#)
        socket.push(text: #"{"v":1,"type":"typing","payload":{"roomId":"nope"}}"#)
        socket.push(.memberJoined(MemberPayload(roomId: roomA, userId: sender)))
        try await log.first("member.joined") { event -> Bool? in
            if case .server(.memberJoined) = event { return true }
            return nil
        }
        let unknown = log.events.compactMap(\.serverMessage).first { $0.type == "future.thing" }
        XCTAssertEqual(unknown, .unknown(type: "future.thing", payload: ["x": 1]))
        XCTAssertTrue(
            log.events.contains { event in
                if case .problem(let what) = event { return what.contains("typing") }
                return false
            })
        await client.close()
    }

    func testABanIsShownAndItsMemberLeftEndsTheRoomForThisUser() async throws {
        let client = makeClient()
        let log = EventLog(await client.events())
        let socket = try await connected(client)
        try await joined(client, socket)
        let other = UserID.random()
        socket.push(.memberLeft(MemberPayload(roomId: roomA, userId: other)))
        socket.push(.memberMuted(MemberSanctionPayload(roomId: roomA, userId: other, expiresAt: nil)))
        try await log.first("member.muted") { event -> Bool? in
            if case .server(.memberMuted) = event { return true }
            return nil
        }
        var rooms = await client.joinedRooms
        XCTAssertEqual(rooms, [roomA], "another member leaving changes nothing here")
        socket.push(.memberBanned(MemberSanctionPayload(roomId: roomA, userId: sender, expiresAt: "2026-12-02T10:00:00Z")))
        socket.push(.memberLeft(MemberPayload(roomId: roomA, userId: sender)))
        try await log.first("own member.left") { event -> Bool? in
            if case .server(.memberLeft(let left)) = event, left.userId == sender { return true }
            return nil
        }
        XCTAssertEqual(
            log.events.compactMap(\.serverMessage).map(\.type).filter { $0.hasPrefix("member.") },
            ["member.left", "member.muted", "member.banned", "member.left"])
        rooms = await client.joinedRooms
        XCTAssertEqual(rooms, [], "a room this user was removed from is not resumed")
        await client.close()
    }

    func testPauseKeepsRoomsAndConnectResumesThem() async throws {
        let client = makeClient()
        let first = try await connected(client)
        try await joined(client, first, lastSeq: 2)
        await client.pause()
        XCTAssertEqual(first.closedByClient, .normal)
        async let again = client.connect()
        let second = try await connector.nextSocket()
        try await second.acceptAuth()
        let join = try await second.expect("room.join")
        XCTAssertEqual(join.request, .roomJoin(RoomJoinPayload(roomId: roomA, lastSeq: 2)))
        second.ack(join, RoomJoinResult(roomId: roomA, lastSeq: 2, replayed: 0))
        _ = try await again
        await client.close()
    }
}
