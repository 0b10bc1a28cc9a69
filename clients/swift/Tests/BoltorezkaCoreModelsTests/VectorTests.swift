import Foundation
import XCTest

@testable import BoltorezkaCoreModels

/// protocol/vectors, the language-neutral codec vectors the server, the Python and web
/// clients run too: valid frames decode to their canonical form and re-encode to it,
/// invalid ones fail with the code and requestId of the server's nack.
final class VectorTests: XCTestCase {
    func testValidVectorsDecodeToTheirCanonicalFormAndReEncode() throws {
        let file = try ProtocolFiles.json("vectors/valid.json")
        let maxFrameBytes = Int(try XCTUnwrap(file.at("maxFrameBytes").intValue))
        let cases = try XCTUnwrap(file.at("cases").arrayValue)
        XCTAssertFalse(cases.isEmpty)
        for vector in cases {
            let name = try XCTUnwrap(vector.at("name").stringValue)
            let frame = try vector.at("frame")
            let expected = try vector.at("decoded")
            let decoded: DecodedClientFrame
            do {
                decoded = try ClientFrameCodec.decode(frame.serialized(), maxFrameBytes: maxFrameBytes)
            } catch {
                XCTFail("\(name): refused: \(error)")
                continue
            }
            XCTAssertEqual(decoded.type, expected["type"]?.stringValue, name)
            XCTAssertEqual(decoded.requestId, expected["requestId"]?.stringValue, name)
            XCTAssertEqual(decoded.payload, expected["payload"], name)
            XCTAssertEqual(Int64(decoded.v), frame["v"]?.intValue, name)
            // The typed request writes exactly the canonical payload.
            XCTAssertEqual(try decoded.request.payloadValue(), expected["payload"], "\(name): typed payload")
            // Encoding writes the canonical form, and it decodes to the same request.
            let text = try ClientFrameCodec.encode(
                decoded.request, requestId: decoded.requestId, maxFrameBytes: maxFrameBytes)
            let written = try JSONValue.parse(text)
            XCTAssertEqual(written["payload"], expected["payload"], "\(name): encoded payload")
            XCTAssertEqual(written["type"], expected["type"], name)
            XCTAssertEqual(written["v"], .int(1), name)
            let again = try ClientFrameCodec.decode(text, maxFrameBytes: maxFrameBytes)
            XCTAssertEqual(again.request, decoded.request, "\(name): round trip")
        }
    }

    func testInvalidVectorsFailWithTheCodeAndRequestIdOfTheNack() throws {
        let file = try ProtocolFiles.json("vectors/invalid.json")
        let maxFrameBytes = Int(try XCTUnwrap(file.at("maxFrameBytes").intValue))
        let cases = try XCTUnwrap(file.at("cases").arrayValue)
        XCTAssertFalse(cases.isEmpty)
        for vector in cases {
            let name = try XCTUnwrap(vector.at("name").stringValue)
            let frame = try XCTUnwrap(vector.at("frame").stringValue, name)
            let code = try XCTUnwrap(vector.at("code").stringValue, name)
            let requestId = try vector.at("requestId").stringValue
            do {
                let decoded = try ClientFrameCodec.decode(frame, maxFrameBytes: maxFrameBytes)
                XCTFail("\(name): accepted as \(decoded.type)")
            } catch {
                XCTAssertEqual(error.code.rawValue, code, "\(name): \(error.message)")
                XCTAssertEqual(error.requestId, requestId, name)
            }
        }
    }

    func testEveryClientTypeHasAValidVectorAndEveryFrameErrorAnInvalidOne() throws {
        let valid = try XCTUnwrap(ProtocolFiles.json("vectors/valid.json").at("cases").arrayValue)
        let invalid = try XCTUnwrap(ProtocolFiles.json("vectors/invalid.json").at("cases").arrayValue)
        XCTAssertEqual(
            Set(valid.compactMap { $0["decoded"]?["type"]?.stringValue }), Set(ClientFrameCodec.clientMessages.keys))
        XCTAssertEqual(
            Set(invalid.compactMap { $0["code"]?.stringValue }), Set(FrameErrorCode.knownValues.map(\.rawValue)))
    }

    func testEncoderRefusesWhatTheServerWouldRefuse() throws {
        let room = RoomID.random()
        XCTAssertThrowsError(
            try ClientFrameCodec.encode(
                .chatSend(ChatSendPayload(roomId: room, clientMsgId: "c", body: "")), requestId: "r1")
        ) { error in
            XCTAssertEqual((error as? ProtocolError)?.code, .validationFailed)
            XCTAssertEqual((error as? ProtocolError)?.requestId, "r1")
        }
        XCTAssertThrowsError(
            try ClientFrameCodec.encode(
                .chatSend(ChatSendPayload(roomId: room, clientMsgId: "c", body: "a\u{0}b")), requestId: "r2"))
        XCTAssertThrowsError(
            try ClientFrameCodec.encode(
                .chatSend(ChatSendPayload(roomId: room, clientMsgId: "c", body: String(repeating: "x", count: 4000))),
                requestId: "r3", maxFrameBytes: 1000)
        ) { error in
            XCTAssertEqual((error as? ProtocolError)?.code, .frameTooLarge)
        }
        // 4000 code points pass even when they are 16000 UTF-8 bytes.
        XCTAssertNoThrow(
            try ClientFrameCodec.encode(
                .chatSend(ChatSendPayload(roomId: room, clientMsgId: "c", body: String(repeating: "🙂", count: 4000))),
                requestId: "r4"))
    }
}
