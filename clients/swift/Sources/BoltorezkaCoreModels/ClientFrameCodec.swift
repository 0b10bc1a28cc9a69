import Foundation

/// A stable frame-error code (protocol/README.md, "Frame errors").
public struct FrameErrorCode: OpenStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let frameTooLarge: Self = "frame_too_large"
    public static let malformedJSON: Self = "malformed_json"
    public static let unsupportedVersion: Self = "unsupported_version"
    public static let unknownType: Self = "unknown_type"
    public static let missingRequestID: Self = "missing_request_id"
    public static let validationFailed: Self = "validation_failed"
    public static let knownValues: [Self] = [
        .frameTooLarge, .malformedJSON, .unsupportedVersion, .unknownType, .missingRequestID,
        .validationFailed,
    ]
}

/// A frame the server would refuse, with the `code` and `requestId` its `nack` would carry.
public struct ProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    public let code: FrameErrorCode
    public let message: String
    public let requestId: String?

    public init(code: FrameErrorCode, message: String, requestId: String? = nil) {
        self.code = code
        self.message = message
        self.requestId = requestId
    }

    public var description: String { "\(code): \(message)" }
}

/// One client → server frame as the server decodes it.
public struct DecodedClientFrame: Sendable, Hashable {
    public let v: Int
    public let requestId: String
    public let request: ClientRequest
    /// The payload in canonical form: absent and null optionals and defaults left out,
    /// UUIDs lowercase.
    public let payload: JSONValue

    public var type: String { request.type }
}

/// The envelope codec for client → server frames, with the server's own rules
/// (boltorezka/realtime/protocol.py): a request this client sends is checked before it
/// leaves, so a bad one fails at once with the code the server would have answered instead
/// of after a round trip. protocol/vectors pins both sides to one behaviour.
public enum ClientFrameCodec {
    public static let protocolVersion = 1
    public static let supportedVersions: [Int64] = [1]
    public static let defaultMaxFrameBytes = 64 * 1024
    public static let maxSafeInteger: Int64 = 9_007_199_254_740_991  // 2^53 − 1
    static let requestIdMax = 64

    /// Decode one client → server text frame exactly as the server would, or throw the
    /// error its `nack` would carry.
    public static func decode(_ text: String, maxFrameBytes: Int = defaultMaxFrameBytes) throws(ProtocolError)
        -> DecodedClientFrame
    {
        if text.utf8.count > maxFrameBytes {
            throw ProtocolError(code: .frameTooLarge, message: "frame exceeds \(maxFrameBytes) bytes")
        }
        let frame: JSONValue
        do {
            frame = try JSONValue.parse(text)
        } catch {
            throw ProtocolError(code: .malformedJSON, message: "frame is not valid JSON: \(error)")
        }
        return try checkEnvelope(frame)
    }

    /// Check a request and encode it as one frame's text.
    public static func encode(
        _ request: ClientRequest, requestId: String, maxFrameBytes: Int = defaultMaxFrameBytes
    ) throws(ProtocolError) -> String {
        let payload: JSONValue
        do {
            payload = try request.payloadValue()
        } catch {
            throw ProtocolError(
                code: .validationFailed, message: "payload could not be encoded: \(error)", requestId: requestId)
        }
        let checked = try checkEnvelope(
            .object([
                "v": .int(Int64(protocolVersion)), "type": .string(request.type),
                "requestId": .string(requestId), "payload": payload,
            ]))
        var text = "{\"v\":\(protocolVersion),\"type\":"
        JSONText.writeString(checked.type, to: &text)
        text += ",\"requestId\":"
        JSONText.writeString(checked.requestId, to: &text)
        text += ",\"payload\":"
        JSONText.write(checked.payload, to: &text)
        text += "}"
        if text.utf8.count > maxFrameBytes {
            throw ProtocolError(
                code: .frameTooLarge, message: "frame exceeds \(maxFrameBytes) bytes", requestId: requestId)
        }
        return text
    }

    /// The checks in the server's order; the first failure wins.
    static func checkEnvelope(_ frame: JSONValue) throws(ProtocolError) -> DecodedClientFrame {
        guard case .object(let envelope) = frame else {
            throw ProtocolError(code: .malformedJSON, message: "frame must be a JSON object")
        }
        let rawRequestId = envelope["requestId"]
        let requestId = readableRequestId(rawRequestId)
        guard case .int(let v) = envelope["v"], supportedVersions.contains(v) else {
            throw ProtocolError(
                code: .unsupportedVersion, message: "`v` must be one of \(supportedVersions)",
                requestId: requestId)
        }
        guard case .string(let type) = envelope["type"], let fields = clientMessages[type] else {
            let what = envelope["type"].map { String($0.serialized().prefix(100)) } ?? "missing"
            throw ProtocolError(code: .unknownType, message: "unknown message type: \(what)", requestId: requestId)
        }
        if rawRequestId == nil || rawRequestId == .null {
            throw ProtocolError(code: .missingRequestID, message: "`requestId` is required")
        }
        guard let requestId else {
            throw ProtocolError(
                code: .validationFailed, message: "`requestId` must be a string of 1..\(requestIdMax) characters")
        }
        let raw: JSONValue
        if let given = envelope["payload"] {
            raw = given
        } else if payloadOptional.contains(type) {
            raw = .object([:])
        } else {
            throw ProtocolError(
                code: .validationFailed, message: "Object missing required field `payload`", requestId: requestId)
        }
        let payload: JSONValue
        do {
            payload = try checkObject(fields, raw, at: "$.payload")
        } catch {
            throw ProtocolError(code: .validationFailed, message: error.message, requestId: requestId)
        }
        // PostgreSQL text cannot hold U+0000, so the server refuses it in any decoded string.
        if hasNul(.string(requestId)) || hasNul(payload) {
            throw ProtocolError(
                code: .validationFailed, message: "strings must not contain the NUL character (U+0000)",
                requestId: requestId)
        }
        let request: ClientRequest
        do {
            request = try ClientRequest.make(type: type, payload: payload)
        } catch {
            // The field table and the Swift types disagree: a bug here, reported as the
            // server would report the field.
            throw ProtocolError(code: .validationFailed, message: "\(error)", requestId: requestId)
        }
        return DecodedClientFrame(v: Int(v), requestId: requestId, request: request, payload: payload)
    }

    static func readableRequestId(_ raw: JSONValue?) -> String? {
        guard case .string(let text) = raw else { return nil }
        let length = text.unicodeScalars.count
        return length >= 1 && length <= requestIdMax ? text : nil
    }

    static func hasNul(_ value: JSONValue) -> Bool {
        switch value {
        case .string(let text): text.unicodeScalars.contains("\u{0}")
        case .array(let items): items.contains(where: hasNul)
        case .object(let members): members.contains { $0.key.unicodeScalars.contains("\u{0}") || hasNul($0.value) }
        default: false
        }
    }

    // MARK: - The field table

    /// The type of one payload field.
    public indirect enum FieldType: Sendable, Hashable {
        /// Lengths count Unicode code points, as the server does (not UTF-16 units).
        case string(min: Int?, max: Int)
        case uuid
        case int(min: Int64, max: Int64)
        case bool
        case enumeration([String])
        case object([String: FieldSpec])
    }

    /// One payload field. `required`: must be present. `nullable`: null is a value (kept).
    /// Otherwise an optional field without a default treats null as absent, and one with a
    /// default refuses null; either way the canonical form leaves out absent fields and
    /// fields equal to their default.
    public struct FieldSpec: Sendable, Hashable {
        public let type: FieldType
        public let required: Bool
        public let nullable: Bool
        public let defaultValue: JSONValue?

        static func req(_ type: FieldType) -> FieldSpec {
            FieldSpec(type: type, required: true, nullable: false, defaultValue: nil)
        }
        static func opt(_ type: FieldType) -> FieldSpec {
            FieldSpec(type: type, required: false, nullable: false, defaultValue: nil)
        }
        static func withDefault(_ type: FieldType, _ value: JSONValue) -> FieldSpec {
            FieldSpec(type: type, required: false, nullable: false, defaultValue: value)
        }
    }

    static let seq = FieldType.int(min: 0, max: maxSafeInteger)
    static let token = FieldType.string(min: 1, max: 4096)
    static let sdp = FieldType.string(min: 1, max: 60000)
    static let body = FieldType.string(min: 1, max: 4000)
    static let room: [String: FieldSpec] = ["roomId": .req(.uuid)]
    static let call: [String: FieldSpec] = ["callId": .req(.uuid)]
    static let sdpPayload: [String: FieldSpec] = [
        "callId": .req(.uuid), "sdp": .req(sdp), "to": .opt(.uuid),
        "iceRestart": .withDefault(.bool, false),
    ]

    /// Every client → server message type and its payload fields.
    public static let clientMessages: [String: [String: FieldSpec]] = [
        "auth": ["token": .req(token)],
        "auth.refresh": ["token": .req(token)],
        "ping": ["ts": .opt(.int(min: 0, max: maxSafeInteger))],
        "room.join": ["roomId": .req(.uuid), "lastSeq": .opt(seq)],
        "room.leave": room,
        "presence.set": ["status": .req(.enumeration(SettablePresence.allCases.map(\.rawValue)))],
        "typing.start": room,
        "typing.stop": room,
        "chat.send": [
            "roomId": .req(.uuid), "clientMsgId": .req(.string(min: 1, max: 64)), "body": .req(body),
            "replyTo": .opt(.uuid),
        ],
        "chat.edit": ["roomId": .req(.uuid), "messageId": .req(.uuid), "body": .req(body)],
        "chat.delete": ["roomId": .req(.uuid), "messageId": .req(.uuid)],
        "chat.read": ["roomId": .req(.uuid), "seq": .req(seq)],
        "chat.history": [
            "roomId": .req(.uuid), "before": .opt(seq), "after": .opt(seq),
            "limit": .opt(.int(min: 1, max: 200)),
        ],
        "call.start": [
            "roomId": .req(.uuid),
            "mode": .withDefault(.enumeration(CallStartMode.allCases.map(\.rawValue)), "auto"),
        ],
        "call.join": call,
        "call.leave": call,
        "call.end": call,
        "rtc.offer": sdpPayload,
        "rtc.answer": sdpPayload,
        "rtc.ice": [
            "callId": .req(.uuid),
            "candidate": FieldSpec(
                type: .object([
                    "candidate": .req(.string(min: nil, max: 2048)),
                    "sdpMid": .opt(.string(min: nil, max: 64)),
                    "sdpMLineIndex": .opt(.int(min: 0, max: 1024)),
                    "usernameFragment": .opt(.string(min: nil, max: 256)),
                ]), required: true, nullable: true, defaultValue: nil),
            "to": .opt(.uuid),
        ],
        "call.telemetry": [
            "callId": .req(.uuid),
            "outcome": .req(.enumeration(TelemetryOutcome.allCases.map(\.rawValue))),
            "setupMs": .opt(.int(min: 0, max: 600_000)),
            "iceFailed": .withDefault(.bool, false),
            "candidateType": .opt(.enumeration(CandidateType.allCases.map(\.rawValue))),
        ],
    ]

    /// Types whose payload may be left out of the frame (it then decodes as `{}`).
    static let payloadOptional: Set<String> = ["ping"]

    struct FieldError: Error {
        let message: String
    }

    static func describe(_ value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool: "bool"
        case .int: "int"
        case .double: "float"
        case .string: "str"
        case .array: "array"
        case .object: "object"
        }
    }

    static func checkValue(_ type: FieldType, _ value: JSONValue, at path: String) throws(FieldError) -> JSONValue {
        switch type {
        case .string(let min, let max):
            guard case .string(let text) = value else {
                throw FieldError(message: "Expected `str`, got `\(describe(value))` - at `\(path)`")
            }
            let length = text.unicodeScalars.count
            if let min, length < min {
                throw FieldError(message: "Expected `str` of length >= \(min) - at `\(path)`")
            }
            if length > max { throw FieldError(message: "Expected `str` of length <= \(max) - at `\(path)`") }
            return value
        case .uuid:
            guard case .string(let text) = value else {
                throw FieldError(message: "Expected `uuid`, got `\(describe(value))` - at `\(path)`")
            }
            guard let canonical = canonicalUUID(text) else {
                throw FieldError(message: "Invalid UUID - at `\(path)`")
            }
            return .string(canonical)
        case .int(let min, let max):
            guard case .int(let number) = value else {
                throw FieldError(message: "Expected `int`, got `\(describe(value))` - at `\(path)`")
            }
            if number < min { throw FieldError(message: "Expected `int` >= \(min) - at `\(path)`") }
            if number > max { throw FieldError(message: "Expected `int` <= \(max) - at `\(path)`") }
            return value
        case .bool:
            guard case .bool = value else {
                throw FieldError(message: "Expected `bool`, got `\(describe(value))` - at `\(path)`")
            }
            return value
        case .enumeration(let values):
            guard case .string(let text) = value else {
                throw FieldError(message: "Expected `str`, got `\(describe(value))` - at `\(path)`")
            }
            guard values.contains(text) else {
                let listed = values.map { "'\($0)'" }.joined(separator: ", ")
                throw FieldError(message: "Expected one of \(listed) - at `\(path)`")
            }
            return value
        case .object(let fields):
            return try checkObject(fields, value, at: path)
        }
    }

    static func checkObject(_ fields: [String: FieldSpec], _ value: JSONValue, at path: String) throws(FieldError)
        -> JSONValue
    {
        guard case .object(let members) = value else {
            throw FieldError(message: "Expected `object`, got `\(describe(value))` - at `\(path)`")
        }
        for key in members.keys.sorted() where fields[key] == nil {
            throw FieldError(message: "Object contains unknown field `\(key)` - at `\(path)`")
        }
        var out: [String: JSONValue] = [:]
        for key in fields.keys.sorted() {
            let spec = fields[key]!
            guard let item = members[key] else {
                if spec.required {
                    throw FieldError(message: "Object missing required field `\(key)` - at `\(path)`")
                }
                continue
            }
            if item == .null {
                if spec.nullable {
                    out[key] = .null
                    continue
                }
                if !spec.required && spec.defaultValue == nil { continue }
            }
            let checked = try checkValue(spec.type, item, at: "\(path).\(key)")
            if let fallback = spec.defaultValue, checked == fallback { continue }
            out[key] = checked
        }
        return .object(out)
    }

    /// The canonical form of a UUID the server accepts: hyphenated or 32 hex digits, any case.
    static func canonicalUUID(_ text: String) -> String? {
        let hex = text.lowercased()
        let digits: Substring
        if hex.utf8.count == 36 {
            let parts = hex.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.map(\.count) == [8, 4, 4, 4, 12] else { return nil }
            digits = Substring(parts.joined())
        } else if hex.utf8.count == 32 {
            digits = Substring(hex)
        } else {
            return nil
        }
        guard digits.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
            return nil
        }
        let d = Array(digits)
        return String(d[0..<8]) + "-" + String(d[8..<12]) + "-" + String(d[12..<16]) + "-"
            + String(d[16..<20]) + "-" + String(d[20..<32])
    }
}
