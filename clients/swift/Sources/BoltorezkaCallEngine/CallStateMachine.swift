import Foundation

import BoltorezkaCoreModels

/// This side's view of the call it is in.
public struct CallSnapshot: Sendable, Hashable {
    public var callId: CallID
    public var roomId: RoomID
    /// `ringing` (started, waiting for someone else) → `active` → `ended`.
    public var status: CallStatus
    public var mode: CallMode
    public var participants: [CallParticipantInfo]
    /// This connection's participant.
    public var me: ParticipantID
    /// STUN/TURN servers for `RTCPeerConnection`, from the join's ack.
    public var iceServers: [IceServer]
    /// The reason of the last `call.state`, if it gave one.
    public var reason: CallStateReason?

    /// Everyone but this side.
    public var others: [CallParticipantInfo] { participants.filter { $0.participantId != me } }

    public func participant(_ id: ParticipantID) -> CallParticipantInfo? {
        participants.first { $0.participantId == id }
    }
}

/// What the app's media layer (WebRTC) should do, or what it should show. Values only: the
/// engine never touches media.
public enum CallEvent: Sendable, Hashable {
    /// The call changed (participants, status, mode); show it.
    case updated(CallSnapshot)
    case participantJoined(CallParticipantInfo)
    case participantLeft(ParticipantID)
    /// A participant's socket (or, with the SFU, its media) dropped or came back.
    case participantConnectionChanged(CallParticipantInfo)
    /// Peer-to-peer: create a connection to each of these and send it an offer (whoever
    /// joins offers to everyone already connected).
    case offer(to: [ParticipantID])
    /// SFU: create the one connection to the SFU and send it an offer (`to` nil).
    case offerToSFU
    /// Apply a remote description and, for an offer, answer it. `from` is nil when the SFU
    /// sent it.
    case remoteOffer(from: ParticipantID?, sdp: String, iceRestart: Bool)
    case remoteAnswer(from: ParticipantID?, sdp: String, iceRestart: Bool)
    /// Add a remote candidate; nil marks the end of the peer's candidates.
    case remoteCandidate(from: ParticipantID?, candidate: IceCandidate?)
    /// Renegotiate with an ICE restart: the call moved to another server node, or this
    /// side reconnected. `everyone` false: only the connections where this side is the
    /// impolite one, so both ends of a pair do not restart at once.
    case restartIce(everyone: Bool)
    /// The call moved from peer-to-peer to the SFU: close the peer connections.
    case modeChanged(CallMode)
    /// The SFU lost this side's media: close its connection and offer from a new one.
    case recreateSFUConnection
    /// Someone started a call in a room this user belongs to, and this side is not in it.
    case incoming(CallStatePayload)
    /// The call is over for this side.
    case ended(reason: String?)
}

/// The call lifecycle as this side sees it, as a pure state machine: feed it acks and
/// server messages, act on the ``CallEvent``s it returns.
public struct CallStateMachine: Sendable {
    public enum Phase: Sendable, Hashable {
        case idle
        case inCall(CallSnapshot)
        case ended(callId: CallID, reason: String?)
    }

    public private(set) var phase: Phase = .idle
    /// Live calls seen in rooms, by room (from `call.state` to every member).
    public private(set) var liveCalls: [RoomID: CallStatePayload] = [:]

    public init() {}

    public var snapshot: CallSnapshot? {
        if case .inCall(let snapshot) = phase { return snapshot }
        return nil
    }

    /// The ack of `call.start` or `call.join` (a rejoin after a reconnect too).
    public mutating func joined(_ result: CallJoinResult) -> [CallEvent] {
        let rejoin = snapshot?.callId == result.call.callId && snapshot?.me == result.participantId
        let snapshot = CallSnapshot(
            callId: result.call.callId, roomId: result.call.roomId, status: result.call.state, mode: result.call.mode,
            participants: result.call.participants, me: result.participantId, iceServers: result.iceServers,
            reason: result.call.reason)
        phase = .inCall(snapshot)
        liveCalls[snapshot.roomId] = result.call
        var events: [CallEvent] = [.updated(snapshot)]
        if rejoin {
            events.append(.restartIce(everyone: true))
        } else if snapshot.mode == .sfu {
            events.append(.offerToSFU)
        } else {
            let peers = snapshot.others.filter(\.connected).map(\.participantId)
            if !peers.isEmpty { events.append(.offer(to: peers)) }
        }
        if result.call.state == .ended { events += finish(snapshot.callId, reason: result.call.reason?.rawValue) }
        return events
    }

    /// This side left or ended the call (the ack of `call.leave` or `call.end`).
    public mutating func left(_ result: CallLeaveResult) -> [CallEvent] {
        guard let snapshot, snapshot.callId == result.callId else { return [] }
        return finish(snapshot.callId, reason: "left")
    }

    /// Rejoining after a reconnect failed: the call is gone for this side.
    public mutating func lost(reason: String) -> [CallEvent] {
        guard let snapshot else { return [] }
        return finish(snapshot.callId, reason: reason)
    }

    /// A server message; those about other calls or nothing call-related return nothing.
    public mutating func received(_ message: ServerMessage) -> [CallEvent] {
        switch message {
        case .callState(let payload):
            return callState(payload)
        case .rtcOffer(let p) where p.callId == snapshot?.callId:
            return [.remoteOffer(from: p.from, sdp: p.sdp, iceRestart: p.iceRestart)]
        case .rtcAnswer(let p) where p.callId == snapshot?.callId:
            return [.remoteAnswer(from: p.from, sdp: p.sdp, iceRestart: p.iceRestart)]
        case .rtcIce(let p) where p.callId == snapshot?.callId:
            return [.remoteCandidate(from: p.from, candidate: p.candidate == nil ? nil : p.iceCandidate)]
        case .roomDeleted(let p):
            liveCalls[p.roomId] = nil
            if let snapshot, snapshot.roomId == p.roomId { return finish(snapshot.callId, reason: "room_deleted") }
            return []
        default:
            return []
        }
    }

    /// Perfect negotiation: the side with the smaller participant id is impolite and wins
    /// an offer collision; both ends agree without a message.
    public func isPolite(towards other: ParticipantID) -> Bool {
        guard let me = snapshot?.me else { return true }
        return me > other
    }

    private mutating func callState(_ payload: CallStatePayload) -> [CallEvent] {
        if payload.state == .ended {
            liveCalls[payload.roomId] = nil
        } else {
            liveCalls[payload.roomId] = payload
        }
        guard var snapshot, snapshot.callId == payload.callId else {
            if payload.state == .ringing, snapshot == nil { return [.incoming(payload)] }
            return []
        }
        var events: [CallEvent] = []
        let before = Dictionary(uniqueKeysWithValues: snapshot.participants.map { ($0.participantId, $0) })
        let after = Dictionary(uniqueKeysWithValues: payload.participants.map { ($0.participantId, $0) })
        for participant in payload.participants where participant.participantId != snapshot.me {
            if let old = before[participant.participantId] {
                if old.connected != participant.connected { events.append(.participantConnectionChanged(participant)) }
            } else {
                events.append(.participantJoined(participant))
            }
        }
        for id in before.keys.sorted() where after[id] == nil && id != snapshot.me {
            events.append(.participantLeft(id))
        }
        let modeChanged = snapshot.mode != payload.mode
        snapshot.status = payload.state
        snapshot.mode = payload.mode
        snapshot.participants = payload.participants
        snapshot.reason = payload.reason
        phase = .inCall(snapshot)
        events.insert(.updated(snapshot), at: 0)
        if modeChanged {
            events.append(.modeChanged(payload.mode))
            if payload.mode == .sfu { events.append(.offerToSFU) }
        }
        let meNow = after[snapshot.me]
        switch payload.reason {
        case .hostChanged?:
            events.append(.restartIce(everyone: true))
        case .mediaLost? where payload.mode == .sfu && meNow?.connected == false:
            events.append(.recreateSFUConnection)
        default:
            break
        }
        if payload.state == .ended {
            events += finish(snapshot.callId, reason: payload.reason?.rawValue ?? "ended")
        } else if meNow == nil, before[snapshot.me] != nil {
            // Removed by the server (the grace period ran out while this side was away).
            events += finish(snapshot.callId, reason: "removed")
        }
        return events
    }

    private mutating func finish(_ callId: CallID, reason: String?) -> [CallEvent] {
        phase = .ended(callId: callId, reason: reason)
        return [.ended(reason: reason)]
    }
}
