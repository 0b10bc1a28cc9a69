import Foundation
import XCTest

@testable import BoltorezkaCoreModels

final class JSONValueTests: XCTestCase {
    func testIntegersFloatsAndBooleansStayApart() throws {
        XCTAssertEqual(try JSONValue.parse("[1, 1.0, 1e3, true, -0, 9007199254740993]"),
                       [.int(1), .double(1), .double(1000), .bool(true), .int(0), .int(9_007_199_254_740_993)])
        // Past Int64: still a number, never an integer this client holds.
        XCTAssertEqual(try JSONValue.parse("18446744073709551616"), .double(18_446_744_073_709_551_616))
    }

    func testStringsKeepCodePointsAndEscapes() throws {
        let parsed = try JSONValue.parse(#""a\r\nb\u0000\ud83d\ude42é""#)
        XCTAssertEqual(parsed.stringValue?.unicodeScalars.count, 7)
        XCTAssertEqual(try JSONValue.parse(parsed.serialized()), parsed)
        XCTAssertThrowsError(try JSONValue.parse(#""\ud83d""#), "an unpaired surrogate")
        XCTAssertThrowsError(try JSONValue.parse("\"tab\there\""), "a raw control character")
    }

    func testMalformedTextIsRefused() {
        for text in ["", "{", "{\"a\":1} x", "[1,]", "{\"a\" 1}", "01", "nul", "\"open"] {
            XCTAssertThrowsError(try JSONValue.parse(text), text)
        }
        XCTAssertThrowsError(try JSONValue.parse(String(repeating: "[", count: 600) + String(repeating: "]", count: 600)))
    }

    func testCodableRoundTrip() throws {
        let value: JSONValue = ["a": [1, 2.5, "x", nil, true], "b": ["c": "d"]]
        XCTAssertEqual(try JSONValue.encode(value), value)
        XCTAssertEqual(try value.decode(JSONValue.self), value)
    }
}
