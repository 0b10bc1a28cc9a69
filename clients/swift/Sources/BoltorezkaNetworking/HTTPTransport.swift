import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

import BoltorezkaCoreModels

/// Sends one HTTP request. The API client goes through this, so tests (and apps with their
/// own networking stack) can put something else under it.
public protocol HTTPTransport: Sendable {
    func send(_ request: URLRequest) async throws -> (Data, HTTPURLResponse)
}

/// ``HTTPTransport`` on a `URLSession`.
public struct URLSessionTransport: HTTPTransport {
    public let session: URLSession

    public init(session: URLSession = URLSession(configuration: .ephemeral)) {
        self.session = session
    }

    public func send(_ request: URLRequest) async throws -> (Data, HTTPURLResponse) {
        let (data, response) = try await session.data(for: request)
        guard let http = response as? HTTPURLResponse else {
            throw APIError.transport("not an HTTP response")
        }
        return (data, http)
    }
}

/// A REST failure.
public enum APIError: Error, Sendable, CustomStringConvertible {
    /// The server answered with problem JSON; `code` is stable, `detail` is for humans.
    case problem(Problem)
    /// A non-2xx answer without problem JSON (a proxy in between, typically).
    case unexpectedStatus(Int, body: String)
    /// The request did not complete (no network, timeout, TLS).
    case transport(String)
    /// A 2xx answer this client could not read.
    case decoding(String)
    /// There are no tokens to call an authenticated endpoint with: sign in first (or again,
    /// after the session was revoked or its refresh token reused).
    case notSignedIn

    /// The problem's stable code, when the server sent one.
    public var code: ProblemCode? {
        if case .problem(let problem) = self { return problem.code }
        return nil
    }

    public var status: Int? {
        switch self {
        case .problem(let problem): problem.status
        case .unexpectedStatus(let status, _): status
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .problem(let problem): "\(problem)"
        case .unexpectedStatus(let status, let body): "HTTP \(status): \(body.prefix(200))"
        case .transport(let reason): "transport: \(reason)"
        case .decoding(let reason): "decoding: \(reason)"
        case .notSignedIn: "not signed in"
        }
    }
}
