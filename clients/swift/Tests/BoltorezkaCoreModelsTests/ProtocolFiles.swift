import Foundation
import XCTest

import BoltorezkaCoreModels

/// The repository's contract files (protocol/), read at test time so that a change there
/// that the Swift models cannot follow fails these tests.
enum ProtocolFiles {
    /// `BOLTOREZKA_PROTOCOL_DIR` (ci.sh sets it), else the folder beside clients/swift.
    static var directory: URL {
        if let given = ProcessInfo.processInfo.environment["BOLTOREZKA_PROTOCOL_DIR"], !given.isEmpty {
            return URL(fileURLWithPath: given)
        }
        return URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // BoltorezkaCoreModelsTests
            .deletingLastPathComponent()  // Tests
            .deletingLastPathComponent()  // swift
            .deletingLastPathComponent()  // clients
            .deletingLastPathComponent()  // repository
            .appendingPathComponent("protocol")
    }

    static func json(_ relative: String) throws -> JSONValue {
        let url = directory.appendingPathComponent(relative)
        let data = try Data(contentsOf: url.resolvingSymlinksInPath())
        return try JSONValue.parse(data)
    }
}

extension JSONValue {
    /// Member `key` of an object, failing the test when it is missing.
    func at(_ key: String, file: StaticString = #filePath, line: UInt = #line) throws -> JSONValue {
        try XCTUnwrap(self[key], "missing \(key)", file: file, line: line)
    }

    /// Numbers compared by value (the encoder may write 5.0 where the sample had 5).
    func sameValue(as other: JSONValue) -> Bool {
        switch (self, other) {
        case (.int(let a), .double(let b)), (.double(let b), .int(let a)): return Double(a) == b
        case (.array(let a), .array(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.sameValue(as: $1) }
        case (.object(let a), .object(let b)):
            return a.keys.sorted() == b.keys.sorted() && a.allSatisfy { key, value in value.sameValue(as: b[key]!) }
        default: return self == other
        }
    }
}
