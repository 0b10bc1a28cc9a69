import Foundation

import BoltorezkaCoreModels
import BoltorezkaRealtime

/// What the call engine needs from the realtime connection; ``RealtimeClient`` has it all.
public protocol CallSignaling: Sendable {
    func events(keepingNewest limit: Int?) async -> AsyncStream<RealtimeEvent>
    func startCall(in room: RoomID, mode: CallStartMode) async throws -> CallJoinResult
    func joinCall(_ call: CallID) async throws -> CallJoinResult
    func leaveCall(_ call: CallID) async throws -> CallLeaveResult
    func endCall(_ call: CallID) async throws -> CallLeaveResult
    func sendOffer(_ sdp: String, in call: CallID, to: ParticipantID?, iceRestart: Bool) async throws
    func sendAnswer(_ sdp: String, in call: CallID, to: ParticipantID?, iceRestart: Bool) async throws
    func sendCandidate(_ candidate: IceCandidate?, in call: CallID, to: ParticipantID?) async throws
    func sendTelemetry(_ report: CallTelemetryPayload) async throws
}

extension RealtimeClient: CallSignaling {}

public enum CallEngineError: Error, Sendable, Hashable {
    /// There is no call to do that in.
    case notInCall
    /// This side is in a call already; leave it first.
    case alreadyInCall(CallID)
}

/// One side of a call, media-agnostic: it keeps the call's state from the server's
/// messages, relays SDP and ICE as values, and tells the app's WebRTC layer what to do
/// through ``events()``. The app creates the `RTCPeerConnection`s itself.
///
/// After the realtime socket reconnects it joins the call again (within the server's
/// grace period the participant id stays the same) and asks for an ICE restart.
public actor CallEngine {
    private let signaling: any CallSignaling
    private var machine = CallStateMachine()
    private var subscribers: [UUID: AsyncStream<CallEvent>.Continuation] = [:]
    private var pump: Task<Void, Never>?
    private var joinedAt: ContinuousClock.Instant?
    private var wasDisconnected = false

    public init(signaling: any CallSignaling) {
        self.signaling = signaling
    }

    /// Start following the realtime client's events; call once, before starting or joining.
    public func attach() async {
        guard pump == nil else { return }
        let stream = await signaling.events(keepingNewest: nil)
        pump = Task { [weak self] in
            for await event in stream {
                guard let self else { return }
                await self.handle(event)
            }
        }
    }

    /// Stop following the realtime client and finish the event streams.
    public func detach() {
        pump?.cancel()
        pump = nil
        for continuation in subscribers.values { continuation.finish() }
        subscribers.removeAll()
    }

    /// A new stream of call events, from now on.
    public func events() -> AsyncStream<CallEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: CallEvent.self)
        let id = UUID()
        subscribers[id] = continuation
        continuation.onTermination = { [weak self] _ in
            Task { await self?.unsubscribe(id) }
        }
        return stream
    }

    private func unsubscribe(_ id: UUID) { subscribers[id] = nil }

    private func emit(_ events: [CallEvent]) {
        for event in events {
            for continuation in subscribers.values { continuation.yield(event) }
        }
    }

    public var snapshot: CallSnapshot? { machine.snapshot }
    public var phase: CallStateMachine.Phase { machine.phase }
    /// Calls live in the rooms this side has heard about (to offer "join").
    public var liveCalls: [RoomID: CallStatePayload] { machine.liveCalls }

    public func isPolite(towards other: ParticipantID) -> Bool { machine.isPolite(towards: other) }

    // MARK: - Actions

    @discardableResult
    public func start(in room: RoomID, mode: CallStartMode = .auto) async throws -> CallSnapshot {
        if let current = machine.snapshot { throw CallEngineError.alreadyInCall(current.callId) }
        let result = try await signaling.startCall(in: room, mode: mode)
        return entered(result)
    }

    @discardableResult
    public func join(_ call: CallID) async throws -> CallSnapshot {
        if let current = machine.snapshot, current.callId != call { throw CallEngineError.alreadyInCall(current.callId) }
        let result = try await signaling.joinCall(call)
        return entered(result)
    }

    public func leave() async throws {
        guard let current = machine.snapshot else { throw CallEngineError.notInCall }
        let result = try await signaling.leaveCall(current.callId)
        emit(machine.left(result))
    }

    /// End the call for everyone (participants and room admins may).
    public func end() async throws {
        guard let current = machine.snapshot else { throw CallEngineError.notInCall }
        let result = try await signaling.endCall(current.callId)
        emit(machine.left(result))
    }

    /// Send an offer to participant `to`, or to the SFU when `to` is nil.
    public func sendOffer(_ sdp: String, to: ParticipantID?, iceRestart: Bool = false) async throws {
        try await signaling.sendOffer(sdp, in: try currentCall(), to: to, iceRestart: iceRestart)
    }

    public func sendAnswer(_ sdp: String, to: ParticipantID?, iceRestart: Bool = false) async throws {
        try await signaling.sendAnswer(sdp, in: try currentCall(), to: to, iceRestart: iceRestart)
    }

    /// Trickle a local candidate; nil marks the end of candidates.
    public func sendCandidate(_ candidate: IceCandidate?, to: ParticipantID?) async throws {
        try await signaling.sendCandidate(candidate, in: try currentCall(), to: to)
    }

    /// Report how media setup went; `setupMs` defaults to the time since joining.
    public func reportSetup(
        _ outcome: TelemetryOutcome, setupMs: Int? = nil, iceFailed: Bool = false, candidateType: CandidateType? = nil
    ) async throws {
        let call = try currentCall()
        let elapsed = joinedAt.map { Int((ContinuousClock.now - $0).seconds * 1000) }
        let report = CallTelemetryPayload(
            callId: call, outcome: outcome, setupMs: (setupMs ?? elapsed).map { min(max($0, 0), 600_000) },
            iceFailed: iceFailed, candidateType: candidateType)
        try await signaling.sendTelemetry(report)
    }

    private func currentCall() throws -> CallID {
        guard let current = machine.snapshot else { throw CallEngineError.notInCall }
        return current.callId
    }

    private func entered(_ result: CallJoinResult) -> CallSnapshot {
        joinedAt = .now
        emit(machine.joined(result))
        return machine.snapshot
            ?? CallSnapshot(
                callId: result.call.callId, roomId: result.call.roomId, status: result.call.state,
                mode: result.call.mode, participants: result.call.participants, me: result.participantId,
                iceServers: result.iceServers)
    }

    // MARK: - Realtime events

    /// Feed one realtime event (``attach()`` does this for every event).
    public func handle(_ event: RealtimeEvent) async {
        switch event {
        case .server(let message):
            emit(machine.received(message))
        case .state(let state):
            switch state {
            case .waitingToReconnect, .connecting:
                wasDisconnected = true
            case .connected:
                guard wasDisconnected else { return }
                wasDisconnected = false
                await rejoin()
            case .closed:
                if machine.snapshot != nil { emit(machine.lost(reason: "connection_closed")) }
            default:
                break
            }
        default:
            break
        }
    }

    private func rejoin() async {
        guard let current = machine.snapshot else { return }
        do {
            let result = try await signaling.joinCall(current.callId)
            emit(machine.joined(result))
        } catch RealtimeError.nack(_, let nack) {
            emit(machine.lost(reason: nack.code))
        } catch {
            // The socket went again; the next reconnect retries.
            wasDisconnected = true
        }
    }
}
