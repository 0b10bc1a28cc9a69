import Foundation

import BoltorezkaCoreModels

/// The signed-in state: the current token pair and the one refresh in flight.
///
/// Refresh tokens rotate: each refresh answers with a new pair and spends the old refresh
/// token, and presenting a spent one again revokes the session (reuse detection). So
/// concurrent callers that all see an expired access token must share one refresh, never
/// send one each; this actor makes them wait for the same one.
public actor AuthSession {
    public private(set) var tokens: TokenPair?
    private var inFlight: Task<TokenPair, any Error>?
    private let onChange: (@Sendable (TokenPair?) async -> Void)?
    private let clock: @Sendable () -> Date

    /// - Parameters:
    ///   - tokens: a pair stored from an earlier run (from the Keychain, for example).
    ///   - onChange: called with every new pair, and with nil when the session ends; store
    ///     the pair there, since the old refresh token is spent once a new pair arrives.
    public init(
        tokens: TokenPair? = nil, onChange: (@Sendable (TokenPair?) async -> Void)? = nil,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.tokens = tokens
        self.onChange = onChange
        self.clock = clock
    }

    public var isSignedIn: Bool { tokens != nil }

    func store(_ pair: TokenPair?) async {
        tokens = pair
        await onChange?(pair)
    }

    /// The current access token, refreshed first when it expires within `margin` seconds.
    func accessToken(
        margin: TimeInterval, refresh: @escaping @Sendable (String) async throws -> TokenPair
    ) async throws -> String {
        guard let pair = tokens else { throw APIError.notSignedIn }
        if Double(pair.accessTokenExpiresAt) - clock().timeIntervalSince1970 > margin {
            return pair.accessToken
        }
        return try await refreshed(replacing: pair.accessToken, using: refresh).accessToken
    }

    /// A pair newer than the one holding `stale`: the one another caller already got, the
    /// one in flight, or a new one.
    func refreshed(
        replacing stale: String?, using refresh: @escaping @Sendable (String) async throws -> TokenPair
    ) async throws -> TokenPair {
        if let inFlight { return try await inFlight.value }
        guard let current = tokens else { throw APIError.notSignedIn }
        if let stale, current.accessToken != stale { return current }
        let task = Task { try await refresh(current.refreshToken) }
        inFlight = task
        defer { inFlight = nil }
        do {
            let pair = try await task.value
            await store(pair)
            return pair
        } catch let error as APIError {
            // A refresh token the server refused will never work again: the session is over.
            if let status = error.status, status == 401 {
                await store(nil)
            }
            throw error
        }
    }
}
