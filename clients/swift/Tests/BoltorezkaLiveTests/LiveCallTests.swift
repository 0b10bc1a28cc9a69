import Foundation
import XCTest

import BoltorezkaCallEngine
import BoltorezkaCoreModels
import BoltorezkaNetworking
import BoltorezkaRealtime
import BoltorezkaTestSupport

/// A call between two realtime clients through a real server: start, join, and an offer,
/// an answer and candidates relayed as values (no media: that is the app's WebRTC).
final class LiveCallTests: XCTestCase {
    func testCallStartJoinAndOfferRelay() async throws {
        let (aliceAPI, _) = try await LiveServer.user("calla")
        let (bobAPI, bobUser) = try await LiveServer.user("callb")
        let room = try await aliceAPI.createRoom(name: "Swift call").room.id
        try await aliceAPI.addMember(bobUser.id, to: room)
        let aliceClient = LiveServer.realtime(aliceAPI)
        let bobClient = LiveServer.realtime(bobAPI)
        let alice = CallEngine(signaling: aliceClient)
        let bob = CallEngine(signaling: bobClient)
        await alice.attach()
        await bob.attach()
        let aliceEvents = EventLog(await alice.events())
        let bobEvents = EventLog(await bob.events())
        try await aliceClient.connect()
        try await bobClient.connect()

        let started = try await alice.start(in: room, mode: .p2p)
        XCTAssertEqual(started.status, .ringing)
        XCTAssertEqual(started.mode, .p2p)
        XCTAssertEqual(started.participants.map(\.participantId), [started.me])
        XCTAssertEqual(started.roomId, room)

        let incoming = try await bobEvents.first("incoming") { event -> CallStatePayload? in
            if case .incoming(let call) = event { return call }
            return nil
        }
        XCTAssertEqual(incoming.callId, started.callId)
        let joined = try await bob.join(incoming.callId)
        XCTAssertEqual(joined.status, .active)
        XCTAssertEqual(Set(joined.participants.map(\.participantId)), [started.me, joined.me])
        // The joiner offers to everyone already connected.
        let offerTo = try await bobEvents.first("offer") { event -> [ParticipantID]? in
            if case .offer(let to) = event { return to }
            return nil
        }
        XCTAssertEqual(offerTo, [started.me])
        let bobJoined = try await aliceEvents.first("participantJoined") { event -> ParticipantID? in
            if case .participantJoined(let participant) = event { return participant.participantId }
            return nil
        }
        XCTAssertEqual(bobJoined, joined.me)
        let aliceSnapshot = await alice.snapshot
        XCTAssertEqual(aliceSnapshot?.status, .active)

        let offerSDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=bob\r\nt=0 0\r\n"
        try await bob.sendOffer(offerSDP, to: started.me)
        let offer = try await aliceEvents.first("remoteOffer") { event -> (ParticipantID?, String)? in
            if case .remoteOffer(let from, let sdp, _) = event { return (from, sdp) }
            return nil
        }
        XCTAssertEqual(offer.0, joined.me)
        XCTAssertEqual(offer.1, offerSDP)

        let answerSDP = "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=alice\r\nt=0 0\r\n"
        try await alice.sendAnswer(answerSDP, to: joined.me)
        let answer = try await bobEvents.first("remoteAnswer") { event -> String? in
            if case .remoteAnswer(let from, let sdp, _) = event, from == started.me { return sdp }
            return nil
        }
        XCTAssertEqual(answer, answerSDP)

        let candidate = IceCandidate(
            candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", sdpMid: "0", sdpMLineIndex: 0)
        try await bob.sendCandidate(candidate, to: started.me)
        try await bob.sendCandidate(nil, to: started.me)
        let candidates = try await aliceEvents.wait(for: "two candidates") { events -> [IceCandidate?]? in
            let found = events.compactMap { event -> IceCandidate?? in
                if case .remoteCandidate(let from, let candidate) = event, from == joined.me { return .some(candidate) }
                return nil
            }
            return found.count == 2 ? found : nil
        }
        XCTAssertEqual(candidates, [candidate, nil])
        try await bob.reportSetup(.connected, candidateType: .host)

        try await bob.leave()
        let left = try await aliceEvents.first("participantLeft") { event -> ParticipantID? in
            if case .participantLeft(let id) = event { return id }
            return nil
        }
        XCTAssertEqual(left, joined.me)
        try await alice.end()
        try await aliceEvents.first("ended") { event -> Bool? in
            if case .ended = event { return true }
            return nil
        }
        // The server's call.state (reason `ended_by_user`) may come before the end's ack.
        let phase = await alice.phase
        guard case .ended(let endedCall, _) = phase else { return XCTFail("\(phase)") }
        XCTAssertEqual(endedCall, started.callId)
        let bobPhase = await bob.phase
        guard case .ended = bobPhase else { return XCTFail("\(bobPhase)") }
        await aliceClient.close()
        await bobClient.close()
    }
}
