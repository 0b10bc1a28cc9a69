import Foundation
import XCTest

import BoltorezkaCoreModels
@testable import BoltorezkaNetworking

/// The REST client against a real `boltorezka serve`.
final class LiveRESTTests: XCTestCase {
    func testRegisterLoginAndProblemsCarryTheirCode() async throws {
        let base = try LiveServer.url()
        let name = LiveServer.username("reg")
        let phone = BoltorezkaAPI(baseURL: base, deviceName: "phone")
        let registered = try await phone.register(username: name, password: LiveServer.password, displayName: "Reg")
        XCTAssertEqual(registered.user.username, name)
        XCTAssertEqual(registered.user.displayName, "Reg")
        let laptop = BoltorezkaAPI(baseURL: base, deviceName: "laptop")
        let pair = try await laptop.login(username: name, password: LiveServer.password)
        XCTAssertEqual(pair.user.id, registered.user.id)
        XCTAssertNotEqual(pair.sessionId, registered.sessionId)
        let sessions = try await phone.sessions()
        XCTAssertEqual(Set(sessions.map(\.deviceName)), ["phone", "laptop"])
        XCTAssertEqual(sessions.first(where: \.current)?.id, registered.sessionId)
        let me = try await laptop.me()
        XCTAssertEqual(me.id, registered.user.id)

        do {
            try await BoltorezkaAPI(baseURL: base).login(username: name, password: "not the password")
            XCTFail("signed in with a wrong password")
        } catch let error as APIError {
            XCTAssertEqual(error.code, .invalidCredentials)
            XCTAssertEqual(error.status, 401)
        }
        do {
            try await BoltorezkaAPI(baseURL: base).register(username: name, password: LiveServer.password)
            XCTFail("registered a taken name")
        } catch let error as APIError {
            XCTAssertEqual(error.code, .usernameTaken)
        }
        do {
            _ = try await BoltorezkaAPI(baseURL: base).me()
            XCTFail("answered without a session")
        } catch APIError.notSignedIn {}

        try await laptop.logout()
        let isSignedIn = await laptop.session.isSignedIn
        XCTAssertFalse(isSignedIn)
        let remaining = try await phone.sessions()
        XCTAssertEqual(remaining.filter { $0.revokedAt == nil }.map(\.deviceName), ["phone"])
    }

    func testRoomsMembersHistorySearchAndReadMarkers() async throws {
        let (alice, _) = try await LiveServer.user("alice")
        let (bob, bobUser) = try await LiveServer.user("bob")
        let (carol, _) = try await LiveServer.user("carol")
        let view = try await alice.createRoom(name: "Swift REST", topic: "paging")
        let room = view.room.id
        XCTAssertEqual(view.myRole, .owner)
        XCTAssertEqual(view.room.kind, .private)
        try await alice.addMember(bobUser.id, to: room)
        let members = try await bob.members(of: room)
        XCTAssertEqual(Set(members.map(\.role)), [.owner, .member])

        var posted: [ChatMessage] = []
        for index in 1...7 {
            let author = index.isMultiple(of: 2) ? bob : alice
            posted.append(try await author.postMessage(index == 5 ? "the needle \(index)" : "hay \(index)", in: room))
        }
        XCTAssertEqual(posted.map(\.seq), Array(1...7))
        // The same clientMsgId again is the stored message, not a new one.
        let again = try await alice.postMessage("hay 1", in: room, clientMsgId: posted[0].clientMsgId)
        XCTAssertEqual(again.id, posted[0].id)

        let newest = try await bob.messages(in: room, limit: 3)
        XCTAssertEqual(newest.messages.map(\.seq), [5, 6, 7])
        XCTAssertTrue(newest.hasMore)
        let older = try await bob.messages(in: room, before: 5, limit: 3)
        XCTAssertEqual(older.messages.map(\.seq), [2, 3, 4])
        let forward = try await bob.messages(in: room, after: 5)
        XCTAssertEqual(forward.messages.map(\.seq), [6, 7])
        XCTAssertFalse(forward.hasMore)
        var streamed: [Int64] = []
        for try await message in bob.allMessages(in: room, pageSize: 2) { streamed.append(message.seq) }
        XCTAssertEqual(streamed, Array(1...7))

        let found = try await bob.search("needle", in: room)
        XCTAssertEqual(found.messages.map(\.seq), [5])

        // Posting moves the poster's read position to the post (Bob's last was seq 6), and
        // a read position never moves back.
        let unmoved = try await bob.markRead(room, upTo: 3)
        XCTAssertEqual(unmoved.seq, 6)
        XCTAssertEqual(unmoved.unreadCount, 1)
        let marker = try await bob.markRead(room, upTo: 7)
        XCTAssertEqual(marker.seq, 7)
        XCTAssertEqual(marker.unreadCount, 0)
        let summary = try await bob.rooms().first { $0.room.id == room }
        XCTAssertEqual(summary?.lastReadSeq, 7)
        XCTAssertEqual(summary?.unreadCount, 0)
        XCTAssertEqual(summary?.myRole, .member)

        let edited = try await alice.editMessage(posted[0].id, in: room, body: "hay, edited")
        XCTAssertNotNil(edited.editedAt)
        let deleted = try await alice.deleteMessage(posted[2].id, in: room)
        XCTAssertTrue(deleted.isDeleted)
        XCTAssertEqual(deleted.body, "")

        do {
            _ = try await carol.messages(in: room)
            XCTFail("an outsider read a private room")
        } catch let error as APIError {
            XCTAssertEqual(error.code, .roomNotFound)
        }
        do {
            _ = try await bob.postMessage("", in: room)
            XCTFail("posted an empty body")
        } catch let error as APIError {
            XCTAssertEqual(error.code, .validationFailed)
            // Body errors name the field in `detail` only; `field` is set for path and
            // query parameters (boltorezka/api/http.py).
            if case .problem(let problem) = error { XCTAssertTrue(problem.detail.contains("body"), problem.detail) }
        }
    }

    func testTurnCredentialsOrTurnNotConfigured() async throws {
        let (api, me) = try await LiveServer.user("turn")
        do {
            let credentials = try await api.turnCredentials()
            XCTAssertTrue(credentials.username.hasSuffix(me.id.string))
            XCTAssertFalse(credentials.iceServers.isEmpty)
        } catch let error as APIError {
            // ci.sh runs the server without coturn.
            XCTAssertEqual(error.code, .turnNotConfigured)
            XCTAssertEqual(error.status, 503)
        }
    }

    /// 401 → one refresh (rotating the refresh token) → the request again, for every
    /// caller at once.
    func testRejectedAccessTokenIsRefreshedOnceAndRetried() async throws {
        let transport = CountingTransport()
        let (api, me) = try await LiveServer.user("refresh", transport: transport)
        let stored = await api.session.tokens
        let before = try XCTUnwrap(stored)
        var broken = before
        broken.accessToken = "not-a-valid-token"
        await api.session.store(broken)
        let answers = try await withThrowingTaskGroup(of: User.self) { group in
            for _ in 0..<5 { group.addTask { try await api.me() } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        XCTAssertEqual(answers.map(\.id), Array(repeating: me.id, count: 5))
        XCTAssertEqual(transport.count("POST /v1/auth/refresh"), 1, "one refresh for every caller")
        let rotated = await api.session.tokens
        let after = try XCTUnwrap(rotated)
        XCTAssertNotEqual(after.refreshToken, before.refreshToken, "the refresh token rotated")
        XCTAssertNotEqual(after.accessToken, broken.accessToken)
        XCTAssertEqual(after.sessionId, before.sessionId)
        let meAgain = try await api.me()
        XCTAssertEqual(meAgain.id, me.id)
    }

    func testAccountSelfServiceAndLookupByUsername() async throws {
        let base = try LiveServer.url()
        let (phone, me) = try await LiveServer.user("acct")
        let found = try await phone.user(named: me.username.uppercased())
        XCTAssertEqual(found.id, me.id)
        let laptop = BoltorezkaAPI(baseURL: base, deviceName: "laptop")
        try await laptop.login(username: me.username, password: LiveServer.password)
        do {
            try await phone.changePassword(from: "not the password", to: "a new long password")
            XCTFail("changed the password without the current one")
        } catch let error as APIError {
            XCTAssertEqual(error.code, .wrongPassword)
        }
        let changed = try await phone.changePassword(from: LiveServer.password, to: "a new long password")
        XCTAssertEqual(changed.sessionsRevoked, 1, "the laptop is signed out, the phone is not")
        _ = try await phone.me()
        try await BoltorezkaAPI(baseURL: base).login(username: me.username, password: "a new long password")

        try await phone.deleteAccount(password: "a new long password")
        let isSignedIn = await phone.session.isSignedIn
        XCTAssertFalse(isSignedIn)
        let (other, _) = try await LiveServer.user("acctx")
        do {
            _ = try await other.user(me.id)
            XCTFail("a deleted user still answers")
        } catch let error as APIError {
            XCTAssertEqual(error.code, .userDeleted)
        }
        do {
            _ = try await other.user(named: me.username)
            XCTFail("a deleted user's name still answers")
        } catch let error as APIError {
            XCTAssertEqual(error.code, .userNotFound)
        }
    }

    func testModerationBansMutesAndReports() async throws {
        let (alice, _) = try await LiveServer.user("mod")
        let (bob, bobUser) = try await LiveServer.user("modb")
        let (carol, carolUser) = try await LiveServer.user("modc")
        let room = try await alice.createRoom(name: "Swift moderation").room.id
        try await alice.addMember(bobUser.id, to: room)
        try await alice.addMember(carolUser.id, to: room)

        let rude = try await carol.postMessage("something rude", in: room)
        let report = try await bob.report(rude.id, in: room, reason: "rude")
        XCTAssertTrue(report.isOpen)
        XCTAssertEqual(report.messageBody, "something rude")
        let open = try await alice.reports(in: room)
        XCTAssertEqual(open.reports.map(\.id), [report.id])
        let resolved = try await alice.resolveReport(report.id, in: room, as: .actioned, note: "muted")
        XCTAssertEqual(resolved.resolution, .actioned)
        let stillOpen = try await alice.reports(in: room, status: .open)
        XCTAssertEqual(stillOpen.reports, [])

        let mute = try await alice.mute(carolUser.id, in: room, forSeconds: 600, reason: "cool off")
        XCTAssertNotNil(mute.expiresAt)
        do {
            _ = try await carol.postMessage("again", in: room)
            XCTFail("a muted member posted")
        } catch let error as APIError {
            XCTAssertEqual(error.code, .muted)
        }
        let mutes = try await alice.mutes(in: room)
        XCTAssertEqual(mutes.map(\.userId), [carolUser.id])
        try await alice.unmute(carolUser.id, in: room)
        _ = try await carol.postMessage("sorry", in: room)

        let ban = try await alice.ban(carolUser.id, from: room, reason: "again")
        XCTAssertNil(ban.expiresAt, "until lifted")
        let bans = try await alice.bans(in: room)
        XCTAssertEqual(bans.map(\.userId), [carolUser.id])
        let members = try await alice.members(of: room)
        XCTAssertFalse(members.contains { $0.userId == carolUser.id }, "a ban ends the membership")
        do {
            try await alice.addMember(carolUser.id, to: room)
            XCTFail("added a banned user")
        } catch let error as APIError {
            XCTAssertEqual(error.code, .userBanned)
        }
        try await alice.unban(carolUser.id, from: room)
        try await alice.addMember(carolUser.id, to: room)
    }
}
