import Foundation
import XCTest

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

import BoltorezkaCoreModels
@testable import BoltorezkaNetworking
@testable import BoltorezkaRealtime

/// The server the live tests run against: `BOLTOREZKA_SWIFT_SERVER_URL`, which
/// clients/swift/ci.sh sets to the `boltorezka serve` it starts (60 s access tokens,
/// `auth.expiring` 50 s ahead). Without it the live tests skip.
enum LiveServer {
    static let variable = "BOLTOREZKA_SWIFT_SERVER_URL"

    static func url() throws -> URL {
        guard let text = ProcessInfo.processInfo.environment[variable], let url = URL(string: text) else {
            throw XCTSkip("\(variable) is not set; clients/swift/ci.sh starts a server and sets it")
        }
        return url
    }

    /// A username no other test (or earlier run) has: 3..32 of `[A-Za-z0-9_.-]`.
    static func username(_ prefix: String) -> String {
        "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())"
    }

    static let password = "correct horse battery staple"

    /// A new account, signed in on a device of its own.
    static func user(_ prefix: String, transport: any HTTPTransport = URLSessionTransport()) async throws
        -> (api: BoltorezkaAPI, me: User)
    {
        let api = BoltorezkaAPI(baseURL: try url(), transport: transport, deviceName: "swift-\(prefix)")
        let pair = try await api.register(username: username(prefix), password: password, displayName: prefix)
        return (api, pair.user)
    }

    /// A realtime client on `api`'s session.
    static func realtime(_ api: BoltorezkaAPI, _ tune: (inout RealtimeConfiguration) -> Void = { _ in })
        -> RealtimeClient
    {
        var configuration = RealtimeConfiguration()
        tune(&configuration)
        return RealtimeClient(
            url: api.realtimeURL, configuration: configuration,
            tokenProvider: { reason in try await api.accessToken(for: reason) })
    }
}

/// Counts the requests that go through it, by method and path.
final class CountingTransport: HTTPTransport, @unchecked Sendable {
    private let inner = URLSessionTransport()
    private let lock = NSLock()
    private var counts: [String: Int] = [:]

    func send(_ request: URLRequest) async throws -> (Data, HTTPURLResponse) {
        let key = "\(request.httpMethod ?? "GET") \(request.url?.path ?? "")"
        lock.withLock { counts[key, default: 0] += 1 }
        return try await inner.send(request)
    }

    func count(_ key: String) -> Int { lock.withLock { counts[key] ?? 0 } }
}

/// Holds whoever passes while closed, until it opens again.
actor Gate {
    private var isOpen = true
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func close() { isOpen = false }

    func open() {
        isOpen = true
        let all = waiting
        waiting.removeAll()
        for waiter in all { waiter.resume() }
    }

    func pass() async {
        if isOpen { return }
        await withCheckedContinuation { waiting.append($0) }
    }
}
