import Foundation

import BoltorezkaCoreModels

/// The realtime WebSocket client (protocol/README.md).
///
/// It authenticates in the first request, tracks every request until its `ack` or `nack`
/// (with a timeout), sends `ping` as a heartbeat, swaps in a fresh access token before the
/// current one expires (`auth.refresh`), and delivers each joined room's messages in seq
/// order exactly once, filling holes from history. After an unexpected close it reconnects
/// with exponential backoff and full jitter, authenticates again and resumes every joined
/// room from its last seq; `server.draining` moves it to another node the same way.
///
/// ```swift
/// let client = RealtimeClient(url: api.realtimeURL, tokenProvider: api.accessToken(for:))
/// let events = await client.events()
/// try await client.connect()
/// try await client.join(roomID)
/// ```
public actor RealtimeClient {
    public nonisolated let url: URL
    public nonisolated let configuration: RealtimeConfiguration
    private let tokenProvider: TokenProvider
    private let connector: any WebSocketConnector

    public private(set) var state: ConnectionState = .idle
    /// The last `server.capabilities`.
    public private(set) var capabilities: CapabilitiesPayload?
    /// The last successful `auth` (its `expiresAt` and `iceServers` follow `auth.refresh`).
    public private(set) var authResult: AuthResult?
    /// How many times a lost connection was replaced.
    public private(set) var reconnectCount = 0
    /// How many holes were filled from history.
    public private(set) var gapsFilled = 0

    private struct Live {
        let generation: Int
        let connection: any WebSocketConnection
        let outbound: AsyncStream<String>.Continuation
        var capabilities: CapabilitiesPayload
        var tasks: [Task<Void, Never>] = []
        var refreshTask: Task<Void, Never>?
        var authenticated = false
        var refreshing = false
        var lastReceived = ContinuousClock.now
    }

    private struct Pending {
        let type: String
        let continuation: CheckedContinuation<JSONValue, any Error>
        let timer: Task<Void, Never>
    }

    private var live: Live?
    private var generation = 0
    private var pending: [String: Pending] = [:]
    private var requestCounter = 0
    private var rooms: [RoomID: RoomSequencer] = [:]
    private var subscribers: [UUID: AsyncStream<RealtimeEvent>.Continuation] = [:]
    private var waiters: [UUID: CheckedContinuation<Void, any Error>] = [:]
    private var wantsConnection = false
    private var opening: Task<AuthResult, any Error>?
    private var reconnectTask: Task<Void, Never>?
    private var nextTokenReason: TokenRequestReason = .connect
    /// Set by `server.draining`: the first reconnect waits this (jittered) instead of backoff.
    private var drainDelay: Duration?

    public init(
        url: URL, configuration: RealtimeConfiguration = RealtimeConfiguration(),
        connector: any WebSocketConnector = URLSessionWebSocketConnector(),
        tokenProvider: @escaping TokenProvider
    ) {
        // URLSession opens a WebSocket only for ws/wss; an http(s) URL would never connect.
        var components = URLComponents(url: url, resolvingAgainstBaseURL: false)
        switch components?.scheme {
        case "http": components?.scheme = "ws"
        case "https": components?.scheme = "wss"
        default: break
        }
        self.url = components?.url ?? url
        self.configuration = configuration
        self.connector = connector
        self.tokenProvider = tokenProvider
    }

    // MARK: - Events

    /// A new stream of everything the client reports, from now on. Each call makes its
    /// own stream, so several consumers each see every event; subscribe before
    /// ``connect()`` to miss nothing. With `keepingNewest`, a consumer that falls behind
    /// loses the oldest unread events instead of buffering without bound.
    public func events(keepingNewest limit: Int? = nil) -> AsyncStream<RealtimeEvent> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: RealtimeEvent.self, bufferingPolicy: limit.map { .bufferingNewest($0) } ?? .unbounded)
        let id = UUID()
        subscribers[id] = continuation
        continuation.onTermination = { [weak self] _ in
            Task { await self?.unsubscribe(id) }
        }
        return stream
    }

    private func unsubscribe(_ id: UUID) { subscribers[id] = nil }

    private func emit(_ event: RealtimeEvent) {
        for continuation in subscribers.values { continuation.yield(event) }
    }

    private func setState(_ new: ConnectionState) {
        state = new
        emit(.state(new))
        switch new {
        case .connected: resolveWaiters(with: nil)
        case .closed: resolveWaiters(with: RealtimeError.closed)
        default: break
        }
    }

    // MARK: - Lifecycle

    /// Open the socket, authenticate and resume the rooms already joined; return the auth
    /// result. A failure here is thrown, not retried; once connected, lost connections are
    /// replaced automatically. After ``pause()`` this resumes.
    @discardableResult
    public func connect() async throws -> AuthResult {
        if let live, live.authenticated, let authResult { return authResult }
        if let opening { return try await opening.value }
        reconnectTask?.cancel()
        reconnectTask = nil
        wantsConnection = true
        let task = Task { try await self.open(attempt: 0) }
        opening = task
        defer { opening = nil }
        do {
            return try await task.value
        } catch {
            if live == nil {
                wantsConnection = false
                setState(.closed(nil, reason: "\(error)"))
            }
            throw error
        }
    }

    /// Close the socket but keep the joined rooms and their seqs (an app going to the
    /// background, say); ``connect()`` resumes them.
    public func pause() async {
        wantsConnection = false
        reconnectTask?.cancel()
        reconnectTask = nil
        if let live {
            await live.connection.close(code: .normal, reason: "")
            teardown(live.generation, closed: WebSocketClosed(code: .normal, reason: "paused"))
        }
        setState(.paused)
    }

    /// End the session: close the socket, forget the rooms, finish every event stream.
    public func close() async {
        wantsConnection = false
        reconnectTask?.cancel()
        reconnectTask = nil
        if let live {
            await live.connection.close(code: .normal, reason: "")
            teardown(live.generation, closed: WebSocketClosed(code: .normal, reason: "closed by the client"))
        }
        rooms.removeAll()
        setState(.closed(.normal, reason: "closed by the client"))
        for continuation in subscribers.values { continuation.finish() }
        subscribers.removeAll()
    }

    /// Wait until the client is connected (now or after a reconnect).
    public func waitUntilConnected(timeout: Duration = .seconds(30)) async throws {
        // The socket, not `state`: a lost socket is gone before the state says so.
        if live?.authenticated == true { return }
        if case .closed = state { throw RealtimeError.closed }
        let id = UUID()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            waiters[id] = continuation
            Task { [weak self] in
                try? await Task.sleep(for: timeout)
                await self?.expireWaiter(id)
            }
        }
    }

    private func expireWaiter(_ id: UUID) {
        waiters.removeValue(forKey: id)?.resume(throwing: RealtimeError.notConnected)
    }

    private func resolveWaiters(with error: (any Error)?) {
        let all = waiters.values
        waiters.removeAll()
        for waiter in all {
            if let error { waiter.resume(throwing: error) } else { waiter.resume() }
        }
    }

    private func open(attempt: Int) async throws -> AuthResult {
        generation += 1
        let gen = generation
        setState(.connecting(attempt: attempt))
        let connection = try await connector.connect(to: url, headers: configuration.headers)
        let first: WebSocketMessage
        do {
            first = try await withTimeout(configuration.connectTimeout, onTimeout: { connection.abort() }) {
                try await connection.receive()
            }
        } catch {
            connection.abort()
            throw error
        }
        guard case .text(let text) = first, case .capabilities(let capabilities)? = try? ServerMessage.decode(text)
        else {
            connection.abort()
            throw RealtimeError.unexpected("the server did not open with server.capabilities")
        }
        guard wantsConnection, gen == generation else {
            connection.abort()
            throw RealtimeError.closed
        }
        let (stream, outbound) = AsyncStream.makeStream(of: String.self)
        var fresh = Live(generation: gen, connection: connection, outbound: outbound, capabilities: capabilities)
        // One writer per socket keeps frames in the order the requests were made.
        fresh.tasks.append(
            Task { [weak self] in
                for await text in stream {
                    do {
                        try await connection.send(text)
                    } catch {
                        connection.abort()
                        await self?.connectionEnded(gen, error)
                        return
                    }
                }
            })
        fresh.tasks.append(
            Task { [weak self] in
                while true {
                    let message: WebSocketMessage
                    do {
                        message = try await connection.receive()
                    } catch {
                        await self?.connectionEnded(gen, error)
                        return
                    }
                    guard let self else {
                        connection.abort()
                        return
                    }
                    await self.received(message, generation: gen)
                }
            })
        live = fresh
        self.capabilities = capabilities
        do {
            let token = try await tokenProvider(nextTokenReason)
            let auth: AuthResult = try await perform(.auth(TokenPayload(token: token)), requireAuth: false)
            guard gen == generation, live != nil else { throw RealtimeError.closed }
            nextTokenReason = .connect
            live?.authenticated = true
            authResult = auth
            startHeartbeat(gen, capabilities)
            scheduleRefresh(gen, expiresAt: auth.expiresAt)
            setState(.connected(auth))
            await resumeRooms(gen)
            return auth
        } catch {
            teardown(gen, closed: WebSocketClosed(reason: "\(error)"))
            switch error {
            case RealtimeError.nack(_, let nack) where ["invalid_token", "token_expired"].contains(nack.code):
                nextTokenReason = .rejected
            // A stack that drops the frames before a close (FoundationNetworking does) loses
            // the auth's nack; the close (4001, 4003) still says the token was refused.
            case RealtimeError.connectionLost(let closed) where closed.code?.policy == .refreshThenReconnect:
                nextTokenReason = .rejected
            default:
                break
            }
            throw error
        }
    }

    private func resumeRooms(_ gen: Int) async {
        for room in rooms.keys.sorted() {
            guard gen == generation, rooms[room] != nil else { continue }
            rooms[room]?.reset()
            let lastSeq = rooms[room]?.lastSeq
            do {
                let result: RoomJoinResult = try await perform(
                    .roomJoin(RoomJoinPayload(roomId: room, lastSeq: lastSeq)),
                    timeout: lastSeq == nil ? nil : configuration.resumeTimeout)
                acknowledgeJoin(room, result, generation: gen)
                emit(.resumed(result))
            } catch RealtimeError.nack(_, let nack) where ["room_not_found", "not_a_member"].contains(nack.code) {
                rooms[room] = nil
                emit(.problem("room \(room) could not be resumed: \(nack.code)"))
            } catch {
                emit(.problem("room \(room) could not be resumed: \(error)"))
                return  // the connection is gone; the next one resumes again
            }
        }
    }

    /// Tear down the connection's state; pending requests fail with `closed`.
    private func teardown(_ gen: Int, closed: WebSocketClosed) {
        guard let current = live, current.generation == gen else { return }
        live = nil
        current.outbound.finish()
        current.refreshTask?.cancel()
        for task in current.tasks { task.cancel() }
        current.connection.abort()
        let failed = pending
        pending.removeAll()
        for request in failed.values {
            request.timer.cancel()
            request.continuation.resume(throwing: RealtimeError.connectionLost(closed))
        }
        for room in rooms.keys { rooms[room]?.fetchFailed() }
    }

    private func connectionEnded(_ gen: Int, _ error: any Error) {
        guard let current = live, current.generation == gen else { return }
        let closed = (error as? WebSocketClosed) ?? WebSocketClosed(reason: "\(error)")
        let wasAuthenticated = current.authenticated
        teardown(gen, closed: closed)
        // A socket lost before its auth succeeded is the opener's failure to report.
        guard wasAuthenticated, wantsConnection else { return }
        switch closed.code?.policy ?? .reconnect {
        case .stop:
            wantsConnection = false
            setState(.closed(closed.code, reason: closed.reason))
        case .refreshThenReconnect:
            nextTokenReason = .rejected
            startReconnecting(lastClose: closed.code)
        case .reconnect:
            startReconnecting(lastClose: closed.code)
        }
    }

    private func startReconnecting(lastClose: CloseCode?) {
        guard reconnectTask == nil else { return }
        reconnectTask = Task { [weak self] in await self?.reconnectLoop(lastClose: lastClose) }
    }

    private func reconnectLoop(lastClose: CloseCode?) async {
        defer { reconnectTask = nil }
        var failures = 0
        while wantsConnection, !Task.isCancelled {
            if let limit = configuration.maxReconnectAttempts, failures >= limit {
                wantsConnection = false
                setState(.closed(lastClose, reason: "gave up after \(failures) reconnect attempts"))
                return
            }
            let delay: Duration
            if let drain = drainDelay {
                delay = .milliseconds(Int64(drain.seconds * 1000 * Double.random(in: 0..<1)))
                drainDelay = nil
            } else {
                delay = configuration.backoff.delay(attempt: failures)
            }
            setState(.waitingToReconnect(attempt: failures + 1, delay: delay, lastClose: lastClose))
            try? await Task.sleep(for: delay)
            guard wantsConnection, !Task.isCancelled else { return }
            do {
                _ = try await open(attempt: failures + 1)
                reconnectCount += 1
                // Lost again while resuming: go round once more.
                if live?.authenticated == true { return }
            } catch let error as SessionEndedError {
                wantsConnection = false
                setState(.closed(nil, reason: error.description))
                return
            } catch RealtimeError.nack(_, let nack) where ["session_revoked", "unauthenticated"].contains(nack.code) {
                wantsConnection = false
                setState(.closed(.authFailed, reason: nack.code))
                return
            } catch RealtimeError.connectionLost(let closed) where closed.code?.policy == .stop {
                wantsConnection = false
                setState(.closed(closed.code, reason: closed.reason))
                return
            } catch {
                emit(.problem("reconnect attempt \(failures + 1) failed: \(error)"))
            }
            failures += 1
        }
    }

    // MARK: - Frames in

    private func received(_ message: WebSocketMessage, generation gen: Int) {
        guard let current = live, current.generation == gen else { return }
        live?.lastReceived = .now
        guard case .text(let text) = message else {
            emit(.problem("ignored a binary frame"))
            return
        }
        let decoded: ServerMessage
        do {
            decoded = try ServerMessage.decode(text)
        } catch {
            emit(.problem("\(error)"))
            return
        }
        switch decoded {
        case .ack(let requestId, let result):
            answer(requestId, with: .success(result))
        case .nack(let requestId, let payload):
            if let requestId {
                let type = pending[requestId]?.type ?? "request"
                answer(requestId, with: .failure(RealtimeError.nack(type: type, payload)))
            } else {
                emit(.problem("the server could not read a frame of ours: \(payload.code): \(payload.message)"))
            }
        case .chatMessage(let payload) where rooms[payload.roomId] != nil:
            guard var sequencer = rooms[payload.roomId] else { return }
            let step = sequencer.receive(payload)
            rooms[payload.roomId] = sequencer
            apply(step, room: payload.roomId, generation: gen)
        case .authExpiring:
            emit(.server(decoded))
            Task { await self.refreshInBackground(gen) }
        case .draining(let payload):
            emit(.server(decoded))
            scheduleHandover(gen, within: .milliseconds(payload.reconnectAfterMs))
        case .memberLeft(let payload) where payload.userId == authResult?.userId:
            // Removed or banned: the server has ended this room's subscription, and a resume
            // would be refused.
            rooms[payload.roomId] = nil
            emit(.server(decoded))
        case .capabilities(let capabilities):
            live?.capabilities = capabilities
            self.capabilities = capabilities
            emit(.server(decoded))
        default:
            emit(.server(decoded))
        }
    }

    private func answer(_ requestId: String, with result: Result<JSONValue, any Error>) {
        guard let request = pending.removeValue(forKey: requestId) else { return }
        request.timer.cancel()
        request.continuation.resume(with: result)
    }

    private func apply(_ step: RoomSequencer.Step, room: RoomID, generation gen: Int) {
        for message in step.deliver { emit(.server(.chatMessage(message))) }
        if let fetch = step.fetch {
            Task { await self.fillGap(room, fetch, generation: gen) }
        }
    }

    private func fillGap(_ room: RoomID, _ fetch: RoomSequencer.Fetch, generation gen: Int) async {
        do {
            let page: ChatHistoryResult = try await perform(
                .chatHistory(
                    ChatHistoryPayload(
                        roomId: room, before: fetch.before, after: fetch.after, limit: configuration.gapFillPageSize)))
            guard gen == generation, var sequencer = rooms[room] else { return }
            let step = sequencer.filled(page.messages, roomId: room, hasMore: page.hasMore)
            rooms[room] = sequencer
            gapsFilled += 1
            apply(step, room: room, generation: gen)
            emit(.gapFilled(roomId: room, after: fetch.after, before: fetch.before, count: page.messages.count))
        } catch {
            if gen == generation { rooms[room]?.fetchFailed() }
            emit(.problem("filling \(room) after \(fetch.after) failed: \(error)"))
        }
    }

    private func acknowledgeJoin(_ room: RoomID, _ result: RoomJoinResult, generation gen: Int) {
        guard var sequencer = rooms[room] else { return }
        let step = sequencer.acknowledge(joinedAt: result.lastSeq)
        rooms[room] = sequencer
        apply(step, room: room, generation: gen)
    }

    private func scheduleHandover(_ gen: Int, within window: Duration) {
        drainDelay = window
        let delay = Duration.milliseconds(Int64(window.seconds * 1000 * Double.random(in: 0..<1)))
        Task { [weak self] in
            try? await Task.sleep(for: delay)
            await self?.handOver(gen)
        }
    }

    /// The node is draining: leave it before it closes, for a node the balancer picks.
    private func handOver(_ gen: Int) async {
        guard let current = live, current.generation == gen, wantsConnection else { return }
        drainDelay = nil
        await current.connection.close(code: .goingAway, reason: "server draining")
        connectionEnded(gen, WebSocketClosed(code: .serviceRestart, reason: "server draining"))
    }

    // MARK: - Heartbeat and token refresh

    private func startHeartbeat(_ gen: Int, _ capabilities: CapabilitiesPayload) {
        let interval =
            configuration.heartbeatInterval ?? .milliseconds(max(500, capabilities.heartbeatIntervalMs / 2))
        let timeout = max(configuration.requestTimeout, interval)
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard !Task.isCancelled, let self else { return }
                await self.beat(gen, timeout: timeout)
            }
        }
        live?.tasks.append(task)
    }

    private func beat(_ gen: Int, timeout: Duration) async {
        guard let current = live, current.generation == gen, current.authenticated else { return }
        do {
            let _: PingResult = try await perform(.ping(PingPayload(ts: Self.nowMs())), timeout: timeout)
        } catch RealtimeError.timeout {
            // The server answers requests one at a time, so a ping can wait behind a long
            // replay; frames still arriving mean the socket is alive.
            guard let now = live, now.generation == gen, ContinuousClock.now - now.lastReceived >= timeout else {
                return
            }
            emit(.problem("heartbeat: nothing received in \(timeout), reconnecting"))
            current.connection.abort()
        } catch {}
    }

    private func scheduleRefresh(_ gen: Int, expiresAt: Int64) {
        live?.refreshTask?.cancel()
        let remaining = Double(expiresAt) - Date().timeIntervalSince1970
        let lead = min(configuration.refreshMargin.seconds, remaining / 2)
        let wait = max(0, remaining - lead)
        live?.refreshTask = Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(Int64(wait * 1000)))
            guard !Task.isCancelled else { return }
            await self?.refreshInBackground(gen)
        }
    }

    private func refreshInBackground(_ gen: Int) async {
        guard let current = live, current.generation == gen, current.authenticated, !current.refreshing else { return }
        live?.refreshing = true
        defer { if live?.generation == gen { live?.refreshing = false } }
        do {
            _ = try await refreshAuth()
        } catch {
            // The server closes with 4003 at expiry; the reconnect then asks for a new token.
            emit(.problem("token refresh failed: \(error)"))
        }
    }

    /// Swap a fresh access token (from the token provider) into the live socket.
    @discardableResult
    public func refreshAuth() async throws -> AuthRefreshResult {
        guard let current = live, current.authenticated else { throw RealtimeError.notConnected }
        let gen = current.generation
        let token = try await tokenProvider(.expiring)
        let result: AuthRefreshResult = try await perform(.authRefresh(TokenPayload(token: token)))
        if live?.generation == gen {
            authResult?.expiresAt = result.expiresAt
            // The newest TURN credentials win; an older server's refresh carries none, and
            // then the ones from `auth` still stand.
            if !result.iceServers.isEmpty { authResult?.iceServers = result.iceServers }
            scheduleRefresh(gen, expiresAt: result.expiresAt)
        }
        emit(.tokenRefreshed(expiresAt: result.expiresAt))
        return result
    }

    // MARK: - Requests

    /// Send any request and wait for its ack's `result`; a `nack` throws
    /// ``RealtimeError/nack(type:_:)``.
    public func request(_ request: ClientRequest, timeout: Duration? = nil) async throws -> JSONValue {
        try await send(request, requireAuth: request.type != "ping", timeout: timeout)
    }

    private func perform<Result: Decodable & Sendable>(
        _ request: ClientRequest, requireAuth: Bool = true, timeout: Duration? = nil
    ) async throws -> Result {
        let value = try await send(request, requireAuth: requireAuth, timeout: timeout)
        if let empty = EmptyResult() as? Result { return empty }
        do {
            return try value.decode(Result.self)
        } catch {
            throw RealtimeError.unexpected("the \(request.type) ack did not decode: \(error)")
        }
    }

    private func send(_ request: ClientRequest, requireAuth: Bool, timeout: Duration?) async throws -> JSONValue {
        guard let current = live, current.authenticated || !requireAuth else { throw RealtimeError.notConnected }
        requestCounter += 1
        let requestId = "r\(requestCounter)"
        let text: String
        do {
            text = try ClientFrameCodec.encode(
                request, requestId: requestId, maxFrameBytes: current.capabilities.limits.maxFrameBytes)
        } catch {
            throw RealtimeError.invalidRequest(error)
        }
        let limit = timeout ?? configuration.requestTimeout
        let type = request.type
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<JSONValue, any Error>) in
            let timer = Task { [weak self] in
                try? await Task.sleep(for: limit)
                guard !Task.isCancelled else { return }
                await self?.expire(requestId)
            }
            pending[requestId] = Pending(type: type, continuation: continuation, timer: timer)
            current.outbound.yield(text)
        }
    }

    private func expire(_ requestId: String) {
        guard let request = pending.removeValue(forKey: requestId) else { return }
        request.continuation.resume(throwing: RealtimeError.timeout(type: request.type, requestId: requestId))
    }

    // MARK: - Rooms and chat

    /// The rooms joined on this client (resumed after every reconnect).
    public var joinedRooms: [RoomID] { rooms.keys.sorted() }

    /// The highest seq delivered for a room with nothing missing below it.
    public func lastSeq(in room: RoomID) -> Int64? { rooms[room]?.lastSeq }

    /// Subscribe to a room's events. With `lastSeq` (from your own store), the messages
    /// after it are replayed first; without, delivery starts at the room's newest message
    /// (load older ones with ``history(in:before:after:limit:)``).
    @discardableResult
    public func join(_ room: RoomID, lastSeq: Int64? = nil) async throws -> RoomJoinResult {
        let existed = rooms[room] != nil
        if !existed { rooms[room] = RoomSequencer(lastSeq: lastSeq) }
        let from = existed ? rooms[room]?.lastSeq : lastSeq
        do {
            let result: RoomJoinResult = try await perform(
                .roomJoin(RoomJoinPayload(roomId: room, lastSeq: from)),
                timeout: from == nil ? nil : configuration.resumeTimeout)
            acknowledgeJoin(room, result, generation: generation)
            return result
        } catch {
            if !existed { rooms[room] = nil }
            throw error
        }
    }

    @discardableResult
    public func leave(_ room: RoomID) async throws -> RoomLeaveResult {
        rooms[room] = nil
        return try await perform(.roomLeave(RoomPayload(roomId: room)))
    }

    /// Post a message. Retried (with the same `clientMsgId`, so never posted twice) across
    /// reconnects, timeouts and retryable nacks such as `rate_limited`.
    @discardableResult
    public func send(
        _ body: String, to room: RoomID, replyTo: MessageID? = nil,
        clientMsgId: String = UUID().uuidString.lowercased(), attempts: Int = 5
    ) async throws -> ChatSendResult {
        let request = ClientRequest.chatSend(
            ChatSendPayload(roomId: room, clientMsgId: clientMsgId, body: body, replyTo: replyTo))
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await perform(request)
            } catch let error as RealtimeError {
                guard attempt < attempts else { throw error }
                switch error {
                case .connectionLost, .notConnected, .timeout:
                    try await waitUntilConnected()
                case .nack(_, let nack) where nack.retryable:
                    try await Task.sleep(for: .milliseconds(nack.retryAfterMs ?? 200 * attempt))
                default:
                    throw error
                }
            }
        }
    }

    @discardableResult
    public func edit(_ message: MessageID, in room: RoomID, body: String) async throws -> ChatMessage {
        let result: ChatEditResult = try await perform(
            .chatEdit(ChatEditPayload(roomId: room, messageId: message, body: body)))
        return result.message
    }

    @discardableResult
    public func delete(_ message: MessageID, in room: RoomID) async throws -> ChatDeleteResult {
        try await perform(.chatDelete(ChatDeletePayload(roomId: room, messageId: message)))
    }

    /// Everything up to and including `seq` has been read.
    @discardableResult
    public func markRead(_ room: RoomID, upTo seq: Int64) async throws -> ReadMarker {
        try await perform(.chatRead(ChatReadPayload(roomId: room, seq: seq)))
    }

    public func history(in room: RoomID, before: Int64? = nil, after: Int64? = nil, limit: Int? = nil) async throws
        -> ChatHistoryResult
    {
        try await perform(.chatHistory(ChatHistoryPayload(roomId: room, before: before, after: after, limit: limit)))
    }

    public func setTyping(_ active: Bool, in room: RoomID) async throws {
        let payload = RoomPayload(roomId: room)
        let _: EmptyResult = try await perform(active ? .typingStart(payload) : .typingStop(payload))
    }

    @discardableResult
    public func setPresence(_ status: SettablePresence) async throws -> PresenceSetResult {
        try await perform(.presenceSet(PresenceSetPayload(status: status)))
    }

    /// A round trip; allowed before `auth`.
    public func ping() async throws -> PingResult {
        try await perform(.ping(PingPayload(ts: Self.nowMs())), requireAuth: false)
    }

    // MARK: - Calls (signaling only; BoltorezkaCallEngine keeps the state)

    public func startCall(in room: RoomID, mode: CallStartMode = .auto) async throws -> CallJoinResult {
        try await perform(.callStart(CallStartPayload(roomId: room, mode: mode)))
    }

    public func joinCall(_ call: CallID) async throws -> CallJoinResult {
        try await perform(.callJoin(CallPayload(callId: call)))
    }

    @discardableResult
    public func leaveCall(_ call: CallID) async throws -> CallLeaveResult {
        try await perform(.callLeave(CallPayload(callId: call)))
    }

    @discardableResult
    public func endCall(_ call: CallID) async throws -> CallLeaveResult {
        try await perform(.callEnd(CallPayload(callId: call)))
    }

    /// Relay an offer to participant `to`, or to the SFU when `to` is nil.
    public func sendOffer(_ sdp: String, in call: CallID, to: ParticipantID?, iceRestart: Bool = false) async throws {
        let _: EmptyResult = try await perform(
            .rtcOffer(RtcSdpPayload(callId: call, sdp: sdp, to: to, iceRestart: iceRestart)))
    }

    public func sendAnswer(_ sdp: String, in call: CallID, to: ParticipantID?, iceRestart: Bool = false) async throws {
        let _: EmptyResult = try await perform(
            .rtcAnswer(RtcSdpPayload(callId: call, sdp: sdp, to: to, iceRestart: iceRestart)))
    }

    /// Relay an ICE candidate; nil marks the end of candidates.
    public func sendCandidate(_ candidate: IceCandidate?, in call: CallID, to: ParticipantID?) async throws {
        let _: EmptyResult = try await perform(.rtcIce(RtcIcePayload(callId: call, candidate: candidate, to: to)))
    }

    public func sendTelemetry(_ report: CallTelemetryPayload) async throws {
        let _: EmptyResult = try await perform(.callTelemetry(report))
    }

    // MARK: - Testing

    /// Drop the socket as a network failure would (no close frame); the client reconnects.
    func dropConnection() {
        live?.connection.abort()
    }

    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}

/// Run `operation`, or call `onTimeout` and throw once `limit` passes (`onTimeout` must make
/// the operation return, since the group waits for it).
func withTimeout<T: Sendable>(
    _ limit: Duration, onTimeout: @escaping @Sendable () -> Void, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw RealtimeError.closed }
        if let value = first { return value }
        onTimeout()
        throw RealtimeError.timeout(type: "server.capabilities", requestId: "")
    }
}
