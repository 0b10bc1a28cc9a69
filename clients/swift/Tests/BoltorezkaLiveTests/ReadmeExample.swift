import Foundation

import BoltorezkaCallEngine
import BoltorezkaCoreModels
import BoltorezkaNetworking
import BoltorezkaRealtime

/// What the README's example leaves to the app.
protocol ExampleWebRTC: Sendable {
    func offer(to peer: ParticipantID) async -> String
    func answer(_ sdp: String, from peer: ParticipantID?) async -> String
    func apply(answer sdp: String, from peer: ParticipantID?) async
    func add(_ candidate: IceCandidate?, from peer: ParticipantID?) async
    func closeAll() async
}

/// The README's example, compiled with the tests so that it keeps compiling (never run).
func readmeExample(password: String, storedLastSeq: Int64?, webrtc: some ExampleWebRTC, show: @escaping @Sendable (ChatMessage) -> Void)
    async throws
{
    let api = BoltorezkaAPI(baseURL: URL(string: "https://chat.example.org")!,
                            session: AuthSession(onChange: { pair in /* store it in the Keychain */ }),
                            deviceName: "iPhone")
    try await api.login(username: "alice", password: password)
    let room = try await api.rooms().first!.room.id

    let client = RealtimeClient(url: api.realtimeURL, tokenProvider: api.accessToken(for:))
    let events = await client.events()          // subscribe before connecting to miss nothing
    try await client.connect()
    try await client.join(room, lastSeq: storedLastSeq)   // replays what you missed, in order
    try await client.send("Hello from Swift", to: room)

    Task {
        for await event in events {
            if case .server(.chatMessage(let payload)) = event { show(payload.message) }
        }
    }

    // A call: the engine says what to do, your WebRTC layer does it.
    let calls = CallEngine(signaling: client)
    await calls.attach()
    Task {
        for await event in await calls.events() {
            switch event {
            case .offer(let peers): for peer in peers { try await calls.sendOffer(await webrtc.offer(to: peer), to: peer) }
            case .remoteOffer(let from, let sdp, _): try await calls.sendAnswer(await webrtc.answer(sdp, from: from), to: from)
            case .remoteAnswer(let from, let sdp, _): await webrtc.apply(answer: sdp, from: from)
            case .remoteCandidate(let from, let candidate): await webrtc.add(candidate, from: from)
            case .ended: await webrtc.closeAll()
            default: break
            }
        }
    }
    let call = try await calls.start(in: room)   // or calls.join(callId) for an incoming one
    // call.iceServers configures RTCPeerConnection; trickle with calls.sendCandidate(_:to:).
    _ = call
}
