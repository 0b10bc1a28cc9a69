import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

import BoltorezkaCoreModels

/// The REST API (`/v1`, protocol/openapi.json) with async/await.
///
/// Authenticated calls carry the session's access token; one that is about to expire is
/// refreshed first, and a call answered 401 is retried once after a refresh (shared by every
/// caller, see ``AuthSession``). Failures are ``APIError``s; the server's problem JSON comes
/// back as ``APIError/problem(_:)`` with its stable `code`.
public final class BoltorezkaAPI: Sendable {
    public let baseURL: URL
    public let session: AuthSession
    let transport: any HTTPTransport
    let deviceName: String
    let userAgent: String?
    /// Refresh an access token this many seconds before it expires.
    let refreshMargin: TimeInterval

    public init(
        baseURL: URL, session: AuthSession = AuthSession(), transport: any HTTPTransport = URLSessionTransport(),
        deviceName: String = "", userAgent: String? = "BoltorezkaSwift/0.1", refreshMargin: TimeInterval = 30
    ) {
        self.baseURL = baseURL
        self.session = session
        self.transport = transport
        self.deviceName = deviceName
        self.userAgent = userAgent
        self.refreshMargin = refreshMargin
    }

    /// The realtime endpoint on the same host: `ws(s)://host/v1/ws`.
    public var realtimeURL: URL {
        var components = URLComponents(url: baseURL, resolvingAgainstBaseURL: false)!
        components.scheme = components.scheme == "https" ? "wss" : "ws"
        components.path = components.path.hasSuffix("/") ? components.path + "v1/ws" : components.path + "/v1/ws"
        return components.url!
    }

    /// An access token for the realtime client (a ``TokenProvider``): the current one for a
    /// new connection, a freshly refreshed one when the server warned or refused.
    /// Throws ``SessionEndedError`` once there is no session to refresh (signed out, or the
    /// refresh token was refused), so the realtime client stops reconnecting.
    public func accessToken(for reason: TokenRequestReason) async throws -> String {
        do {
            if reason.needsFreshToken {
                let stale = await session.tokens?.accessToken
                return try await session.refreshed(replacing: stale, using: refreshCall).accessToken
            }
            return try await session.accessToken(margin: refreshMargin, refresh: refreshCall)
        } catch APIError.notSignedIn {
            throw SessionEndedError("not signed in")
        } catch let error as APIError where error.status == 401 {
            throw SessionEndedError("\(error)")
        }
    }

    // MARK: - Auth

    /// Create an account and sign in on this device.
    @discardableResult
    public func register(username: String, password: String, displayName: String? = nil) async throws
        -> TokenPair
    {
        let body = RegisterBody(
            username: username, password: password, displayName: displayName, deviceName: deviceName)
        let pair: TokenPair = try await call("POST", "/v1/auth/register", body: body, authenticated: false)
        await session.store(pair)
        return pair
    }

    @discardableResult
    public func login(username: String, password: String) async throws -> TokenPair {
        let body = LoginBody(username: username, password: password, deviceName: deviceName)
        let pair: TokenPair = try await call("POST", "/v1/auth/login", body: body, authenticated: false)
        await session.store(pair)
        return pair
    }

    /// Rotate the refresh token now (normally automatic).
    @discardableResult
    public func refresh() async throws -> TokenPair {
        let stale = await session.tokens?.accessToken
        return try await session.refreshed(replacing: stale, using: refreshCall)
    }

    /// End this device's session; its sockets close with 4004.
    public func logout() async throws {
        let _: EmptyResult = try await call("POST", "/v1/auth/logout")
        await session.store(nil)
    }

    /// Set a new password with the one-time token an operator issued; then sign in with it.
    public func resetPassword(token: String, newPassword: String) async throws {
        let _: EmptyResult = try await call(
            "POST", "/v1/auth/password-reset", body: PasswordResetBody(token: token, newPassword: newPassword),
            authenticated: false)
    }

    public func sessions() async throws -> [SessionInfo] {
        let list: SessionList = try await call("GET", "/v1/auth/sessions")
        return list.sessions
    }

    public func revokeSession(_ id: SessionID) async throws {
        let _: EmptyResult = try await call("DELETE", "/v1/auth/sessions/\(id)")
    }

    // MARK: - Users

    public func me() async throws -> User { try await call("GET", "/v1/me") }

    public func updateProfile(_ change: ProfileBody) async throws -> User {
        try await call("PATCH", "/v1/me", body: change)
    }

    /// Change the password; this device stays signed in, every other one is signed out.
    @discardableResult
    public func changePassword(from current: String, to new: String) async throws -> PasswordChanged {
        try await call(
            "POST", "/v1/me/password", body: ChangePasswordBody(currentPassword: current, newPassword: new))
    }

    /// Delete the account (`owner_must_transfer` while it owns a room). Messages stay; every
    /// session ends, this one included.
    public func deleteAccount(password: String) async throws {
        let _: EmptyResult = try await call("DELETE", "/v1/me", body: DeleteAccountBody(password: password))
        await session.store(nil)
    }

    public func user(_ id: UserID) async throws -> User { try await call("GET", "/v1/users/\(id)") }

    /// The user with exactly this username, compared case-insensitively; `user_not_found` when nobody has it.
    public func user(named username: String) async throws -> User {
        try await call("GET", "/v1/users", query: ["username": username])
    }

    // MARK: - Rooms

    /// The caller's rooms, with their read positions and unread counts.
    public func rooms() async throws -> [RoomSummary] {
        let list: RoomList = try await call("GET", "/v1/rooms")
        return list.rooms
    }

    public func createRoom(name: String, kind: NewRoomKind = .private, topic: String = "") async throws -> RoomView {
        try await call("POST", "/v1/rooms", body: CreateRoomBody(name: name, kind: kind, topic: topic))
    }

    /// The direct room with another user, made on first use.
    public func directRoom(with user: UserID) async throws -> RoomView {
        try await call("POST", "/v1/rooms/direct", body: DirectRoomBody(userId: user))
    }

    public func room(_ id: RoomID) async throws -> RoomView { try await call("GET", "/v1/rooms/\(id)") }

    public func updateRoom(_ id: RoomID, name: String? = nil, topic: String? = nil) async throws -> RoomView {
        try await call("PATCH", "/v1/rooms/\(id)", body: UpdateRoomBody(name: name, topic: topic))
    }

    public func deleteRoom(_ id: RoomID) async throws {
        let _: EmptyResult = try await call("DELETE", "/v1/rooms/\(id)")
    }

    public func archiveRoom(_ id: RoomID) async throws -> RoomView {
        try await call("POST", "/v1/rooms/\(id)/archive")
    }

    public func unarchiveRoom(_ id: RoomID) async throws -> RoomView {
        try await call("POST", "/v1/rooms/\(id)/unarchive")
    }

    /// One page of public rooms; pass `nextCursor` back for the next.
    public func publicRooms(matching query: String? = nil, limit: Int? = nil, cursor: String? = nil) async throws
        -> PublicRoomPage
    {
        try await call("GET", "/v1/rooms/public", query: ["q": query, "limit": limit.map(String.init), "cursor": cursor])
    }

    /// Become a member of a public room.
    @discardableResult
    public func joinRoom(_ id: RoomID) async throws -> Member { try await call("POST", "/v1/rooms/\(id)/join") }

    public func leaveRoom(_ id: RoomID) async throws {
        let _: EmptyResult = try await call("POST", "/v1/rooms/\(id)/leave")
    }

    public func transferOwnership(of room: RoomID, to user: UserID) async throws -> [Member] {
        let list: MemberList = try await call("POST", "/v1/rooms/\(room)/transfer", body: TransferBody(userId: user))
        return list.members
    }

    // MARK: - Members

    public func members(of room: RoomID) async throws -> [Member] {
        let list: MemberList = try await call("GET", "/v1/rooms/\(room)/members")
        return list.members
    }

    @discardableResult
    public func addMember(_ user: UserID, to room: RoomID, role: AssignableRole = .member) async throws -> Member {
        try await call("POST", "/v1/rooms/\(room)/members", body: AddMemberBody(userId: user, role: role))
    }

    public func removeMember(_ user: UserID, from room: RoomID) async throws {
        let _: EmptyResult = try await call("DELETE", "/v1/rooms/\(room)/members/\(user)")
    }

    public func changeRole(of user: UserID, in room: RoomID, to role: AssignableRole) async throws -> Member {
        try await call("PATCH", "/v1/rooms/\(room)/members/\(user)", body: ChangeRoleBody(role: role))
    }

    // MARK: - Moderation (room owners and admins, server moderators)

    public func bans(in room: RoomID) async throws -> [Ban] {
        let list: BanList = try await call("GET", "/v1/rooms/\(room)/bans")
        return list.bans
    }

    /// Ban a user from a room, ending their membership; without `seconds`, until lifted.
    /// Banning again replaces the ban.
    @discardableResult
    public func ban(_ user: UserID, from room: RoomID, forSeconds seconds: Int? = nil, reason: String = "")
        async throws -> Ban
    {
        try await call(
            "PUT", "/v1/rooms/\(room)/bans/\(user)", body: BanBody(durationSeconds: seconds, reason: reason))
    }

    public func unban(_ user: UserID, from room: RoomID) async throws {
        let _: EmptyResult = try await call("DELETE", "/v1/rooms/\(room)/bans/\(user)")
    }

    public func mutes(in room: RoomID) async throws -> [Mute] {
        let list: MuteList = try await call("GET", "/v1/rooms/\(room)/mutes")
        return list.mutes
    }

    /// Mute a member: they still read, but cannot post, edit or start calls; without
    /// `seconds`, until lifted.
    @discardableResult
    public func mute(_ user: UserID, in room: RoomID, forSeconds seconds: Int? = nil, reason: String = "")
        async throws -> Mute
    {
        try await call(
            "PUT", "/v1/rooms/\(room)/mutes/\(user)", body: MuteBody(durationSeconds: seconds, reason: reason))
    }

    public func unmute(_ user: UserID, in room: RoomID) async throws {
        let _: EmptyResult = try await call("DELETE", "/v1/rooms/\(room)/mutes/\(user)")
    }

    /// Report someone else's message to the room's moderators (any member may).
    @discardableResult
    public func report(_ message: MessageID, in room: RoomID, reason: String) async throws -> Report {
        try await call("POST", "/v1/rooms/\(room)/reports", body: ReportBody(messageId: message, reason: reason))
    }

    /// One page of a room's reports, newest first; pass `nextCursor` back for the next.
    public func reports(
        in room: RoomID, status: ReportStatusFilter? = nil, limit: Int? = nil, cursor: String? = nil
    ) async throws -> ReportPage {
        try await call(
            "GET", "/v1/rooms/\(room)/reports",
            query: ["status": status?.rawValue, "limit": limit.map(String.init), "cursor": cursor])
    }

    @discardableResult
    public func resolveReport(_ report: ReportID, in room: RoomID, as resolution: ReportResolution, note: String? = nil)
        async throws -> Report
    {
        try await call(
            "POST", "/v1/rooms/\(room)/reports/\(report)/resolve", body: ResolveBody(resolution: resolution, note: note))
    }

    // MARK: - Messages

    /// One page of history, ascending seq: with `after`, the oldest messages after it;
    /// otherwise the newest below `before` (or the newest of all).
    public func messages(in room: RoomID, before: Int64? = nil, after: Int64? = nil, limit: Int? = nil)
        async throws -> MessagePage
    {
        try await call(
            "GET", "/v1/rooms/\(room)/messages",
            query: ["before": before.map(String.init), "after": after.map(String.init), "limit": limit.map(String.init)])
    }

    /// Every message after `seq`, oldest first, fetched page by page as the sequence is read.
    public func allMessages(in room: RoomID, after seq: Int64 = 0, pageSize: Int = 200)
        -> AsyncThrowingStream<ChatMessage, any Error>
    {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    var cursor = seq
                    while true {
                        let page = try await self.messages(in: room, after: cursor, limit: pageSize)
                        for message in page.messages { continuation.yield(message) }
                        guard page.hasMore, let last = page.messages.last else { break }
                        cursor = last.seq
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Post a message; the same `clientMsgId` never posts twice (a retry gets the stored one).
    public func postMessage(
        _ body: String, in room: RoomID, clientMsgId: String = UUID().uuidString.lowercased(), replyTo: MessageID? = nil
    ) async throws -> ChatMessage {
        try await call(
            "POST", "/v1/rooms/\(room)/messages",
            body: PostMessageBody(clientMsgId: clientMsgId, body: body, replyTo: replyTo))
    }

    public func editMessage(_ id: MessageID, in room: RoomID, body: String) async throws -> ChatMessage {
        try await call("PATCH", "/v1/rooms/\(room)/messages/\(id)", body: EditMessageBody(body: body))
    }

    @discardableResult
    public func deleteMessage(_ id: MessageID, in room: RoomID) async throws -> ChatMessage {
        try await call("DELETE", "/v1/rooms/\(room)/messages/\(id)")
    }

    /// Full-text search over the caller's rooms (or one room); pass `nextCursor` back for
    /// the next page.
    public func search(_ text: String, in room: RoomID? = nil, limit: Int? = nil, cursor: String? = nil) async throws
        -> SearchPage
    {
        try await call(
            "GET", "/v1/messages/search",
            query: ["q": text, "roomId": room?.string, "limit": limit.map(String.init), "cursor": cursor])
    }

    /// Everything up to and including `seq` has been read; the position never moves back.
    @discardableResult
    public func markRead(_ room: RoomID, upTo seq: Int64) async throws -> ReadMarker {
        try await call("PUT", "/v1/rooms/\(room)/read", body: ReadMarkerBody(seq: seq))
    }

    // MARK: - Calls

    /// Short-lived TURN credentials for this user (`turn_not_configured` when there is no TURN).
    public func turnCredentials() async throws -> TurnCredentials { try await call("GET", "/v1/turn/credentials") }

    // MARK: - Plumbing

    private struct NoBody: Encodable {}

    private var refreshCall: @Sendable (String) async throws -> TokenPair {
        { [self] refreshToken in
            // A refresh retried after a lost answer gets the same pair, so a transport failure
            // is safe to retry once with the same refresh token.
            do {
                return try await self.call(
                    "POST", "/v1/auth/refresh", body: RefreshBody(refreshToken: refreshToken), authenticated: false)
            } catch APIError.transport {
                return try await self.call(
                    "POST", "/v1/auth/refresh", body: RefreshBody(refreshToken: refreshToken), authenticated: false)
            }
        }
    }

    func call<Response: Decodable>(
        _ method: String, _ path: String, query: [String: String?] = [:], authenticated: Bool = true
    ) async throws -> Response {
        try await call(method, path, query: query, body: Optional<NoBody>.none, authenticated: authenticated)
    }

    func call<Body: Encodable, Response: Decodable>(
        _ method: String, _ path: String, query: [String: String?] = [:], body: Body?, authenticated: Bool = true
    ) async throws -> Response {
        let payload = try body.map { try JSONEncoder().encode($0) }
        var token: String?
        if authenticated {
            token = try await session.accessToken(margin: refreshMargin, refresh: refreshCall)
        }
        var (data, response) = try await perform(method, path, query: query, body: payload, token: token)
        if authenticated, response.statusCode == 401 {
            // The token expired early, its session was re-checked, or the clock is off: one
            // refresh (shared with every other caller), then one retry.
            let pair = try await session.refreshed(replacing: token, using: refreshCall)
            (data, response) = try await perform(method, path, query: query, body: payload, token: pair.accessToken)
        }
        return try decode(Response.self, data: data, response: response)
    }

    private func perform(_ method: String, _ path: String, query: [String: String?], body: Data?, token: String?)
        async throws -> (Data, HTTPURLResponse)
    {
        var components = URLComponents(url: baseURL, resolvingAgainstBaseURL: false)!
        let prefix = components.path.hasSuffix("/") ? String(components.path.dropLast()) : components.path
        components.percentEncodedPath = prefix + path
        let items = query.compactMap { key, value in value.map { URLQueryItem(name: key, value: $0) } }
        if !items.isEmpty {
            components.queryItems = items.sorted { $0.name < $1.name }
            // `+` is a space to the server's form decoder; URLComponents leaves it as is.
            components.percentEncodedQuery = components.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
        }
        guard let url = components.url else { throw APIError.transport("bad URL for \(path)") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        if let userAgent { request.setValue(userAgent, forHTTPHeaderField: "User-Agent") }
        if let body {
            request.httpBody = body
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        do {
            return try await transport.send(request)
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError.transport("\(error)")
        }
    }

    private func decode<Response: Decodable>(_: Response.Type, data: Data, response: HTTPURLResponse) throws
        -> Response
    {
        guard (200..<300).contains(response.statusCode) else {
            if let problem = try? JSONDecoder().decode(Problem.self, from: data) {
                throw APIError.problem(problem)
            }
            throw APIError.unexpectedStatus(response.statusCode, body: String(decoding: data, as: UTF8.self))
        }
        if Response.self == EmptyResult.self || data.isEmpty {
            if let empty = EmptyResult() as? Response { return empty }
        }
        do {
            return try JSONDecoder().decode(Response.self, from: data)
        } catch {
            throw APIError.decoding("\(Response.self): \(error)")
        }
    }
}
