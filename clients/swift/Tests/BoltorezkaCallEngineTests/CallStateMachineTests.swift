import Foundation
import XCTest

@testable import BoltorezkaCallEngine
import BoltorezkaCoreModels

let room = RoomID("0b5e3c1a-7d2f-4c8e-9a61-3f2d8e4b5c71")!
let callId = CallID("5d1f0c9e-2b7a-4e3c-8f61-9a0b1c2d3e4f")!
let alice = CallParticipantInfo(participantId: ParticipantID("11111111-1111-4111-8111-111111111111")!, userId: .random())
let bob = CallParticipantInfo(participantId: ParticipantID("22222222-2222-4222-8222-222222222222")!, userId: .random())
let carol = CallParticipantInfo(participantId: ParticipantID("33333333-3333-4333-8333-333333333333")!, userId: .random())

func state(
    _ status: CallStatus, _ participants: [CallParticipantInfo], mode: CallMode = .p2p, reason: CallStateReason? = nil
) -> CallStatePayload {
    CallStatePayload(callId: callId, roomId: room, state: status, mode: mode, participants: participants, reason: reason)
}

final class CallStateMachineTests: XCTestCase {
    func testRingingThenActiveThenEnded() {
        var machine = CallStateMachine()
        let started = machine.joined(CallJoinResult(call: state(.ringing, [alice]), participantId: alice.participantId))
        XCTAssertEqual(started, [.updated(machine.snapshot!)], "nobody to offer to yet")
        XCTAssertEqual(machine.snapshot?.status, .ringing)
        let active = machine.received(.callState(state(.active, [alice, bob])))
        XCTAssertEqual(machine.snapshot?.status, .active)
        XCTAssertTrue(active.contains(.participantJoined(bob)))
        let left = machine.received(.callState(state(.active, [alice])))
        XCTAssertTrue(left.contains(.participantLeft(bob.participantId)))
        let ended = machine.received(.callState(state(.ended, [])))
        XCTAssertEqual(ended.last, .ended(reason: "ended"))
        XCTAssertEqual(machine.phase, .ended(callId: callId, reason: "ended"))
        XCTAssertNil(machine.snapshot)
    }

    func testTheJoinerOffersToEveryConnectedParticipant() {
        var machine = CallStateMachine()
        var away = carol
        away.connected = false
        let events = machine.joined(
            CallJoinResult(call: state(.active, [alice, away, bob]), participantId: bob.participantId))
        XCTAssertEqual(events.last, .offer(to: [alice.participantId]))
        XCTAssertEqual(machine.snapshot?.others.map(\.participantId), [alice.participantId, carol.participantId])
    }

    func testSFUCallsOfferToTheSFU() {
        var machine = CallStateMachine()
        let events = machine.joined(
            CallJoinResult(call: state(.active, [alice, bob], mode: .sfu), participantId: bob.participantId))
        XCTAssertEqual(events.last, .offerToSFU)
    }

    func testRelayedSignalingBecomesEventsForThisCallOnly() {
        var machine = CallStateMachine()
        _ = machine.joined(CallJoinResult(call: state(.active, [alice, bob]), participantId: alice.participantId))
        XCTAssertEqual(
            machine.received(.rtcOffer(RelayedSdpPayload(callId: callId, sdp: "v=0", from: bob.participantId))),
            [.remoteOffer(from: bob.participantId, sdp: "v=0", iceRestart: false)])
        XCTAssertEqual(
            machine.received(
                .rtcIce(RelayedIcePayload(callId: callId, candidate: ["candidate": "c1", "sdpMLineIndex": 0], from: bob.participantId))),
            [.remoteCandidate(from: bob.participantId, candidate: IceCandidate(candidate: "c1", sdpMLineIndex: 0))])
        XCTAssertEqual(
            machine.received(.rtcIce(RelayedIcePayload(callId: callId, candidate: nil, from: bob.participantId))),
            [.remoteCandidate(from: bob.participantId, candidate: nil)])
        XCTAssertEqual(machine.received(.rtcAnswer(RelayedSdpPayload(callId: .random(), sdp: "v=0"))), [])
    }

    func testHostChangeRestartsIceAndModeChangeMovesToTheSFU() {
        var machine = CallStateMachine()
        _ = machine.joined(CallJoinResult(call: state(.active, [alice, bob]), participantId: alice.participantId))
        XCTAssertTrue(
            machine.received(.callState(state(.active, [alice, bob], reason: .hostChanged)))
                .contains(.restartIce(everyone: true)))
        let moved = machine.received(.callState(state(.active, [alice, bob, carol], mode: .sfu)))
        XCTAssertTrue(moved.contains(.modeChanged(.sfu)))
        XCTAssertEqual(moved.last, .offerToSFU)
        var me = alice
        me.connected = false
        XCTAssertTrue(
            machine.received(.callState(state(.active, [me, bob, carol], mode: .sfu, reason: .mediaLost)))
                .contains(.recreateSFUConnection))
    }

    func testARejoinKeepingTheParticipantRestartsIce() {
        var machine = CallStateMachine()
        let result = CallJoinResult(call: state(.active, [alice, bob]), participantId: alice.participantId)
        _ = machine.joined(result)
        XCTAssertEqual(machine.joined(result).last, .restartIce(everyone: true))
    }

    func testTheSmallerIdIsImpolite() {
        var machine = CallStateMachine()
        _ = machine.joined(CallJoinResult(call: state(.active, [alice, bob]), participantId: alice.participantId))
        XCTAssertFalse(machine.isPolite(towards: bob.participantId))
        var other = CallStateMachine()
        _ = other.joined(CallJoinResult(call: state(.active, [alice, bob]), participantId: bob.participantId))
        XCTAssertTrue(other.isPolite(towards: alice.participantId))
    }

    func testACallInAnotherRoomIsAnnouncedAsIncoming() {
        var machine = CallStateMachine()
        let ringing = state(.ringing, [alice])
        XCTAssertEqual(machine.received(.callState(ringing)), [.incoming(ringing)])
        XCTAssertEqual(machine.liveCalls[room], ringing)
        XCTAssertEqual(machine.received(.callState(state(.ended, []))), [])
        XCTAssertNil(machine.liveCalls[room])
    }
}
