import Foundation
import XCTest

@testable import BoltorezkaCoreModels

/// The Swift models against the committed contract: protocol/schemas (WebSocket),
/// protocol/openapi.json (REST) and the ack-result table of protocol/README.md. A field, a
/// message type or an enumeration value added there and not here fails one of these.
final class ContractTests: XCTestCase {
    /// The schemas' pattern for free text: no U+0000 (PostgreSQL text cannot hold it).
    static let noNUL = "^[^\\u0000]*$"

    // MARK: - Client → server

    func testFieldTableMatchesTheClientSchema() throws {
        let schema = try ProtocolFiles.json("schemas/client.json")
        let sampler = SchemaSampler(definitions: schema["$defs"])
        let mapping = try XCTUnwrap(schema.at("discriminator").at("mapping").objectValue)
        XCTAssertEqual(Set(mapping.keys), Set(ClientFrameCodec.clientMessages.keys), "client message types")
        for (type, ref) in mapping {
            let envelope = sampler.resolve(ref.stringValue.map { .object(["$ref": .string($0)]) } ?? .null)
            let payload = sampler.resolve(try envelope.at("properties").at("payload"))
            let fields = try XCTUnwrap(ClientFrameCodec.clientMessages[type])
            try assertFields(fields, match: payload, sampler: sampler, at: type)
        }
    }

    private func assertFields(
        _ fields: [String: ClientFrameCodec.FieldSpec], match object: JSONValue, sampler: SchemaSampler, at path: String
    ) throws {
        let properties = try XCTUnwrap(object.at("properties").objectValue, path)
        XCTAssertEqual(Set(fields.keys), Set(properties.keys), "\(path): field names")
        let required = Set(object["required"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        XCTAssertEqual(Set(fields.filter(\.value.required).keys), required, "\(path): required fields")
        XCTAssertEqual(object["additionalProperties"], .bool(false), "\(path): client payloads are strict")
        for (name, spec) in fields {
            let at = "\(path).\(name)"
            let property = try XCTUnwrap(properties[name], at)
            let resolved = sampler.resolve(property)
            let nullable = resolved["anyOf"]?.arrayValue?.contains { $0["type"] == .string("null") } ?? false
            XCTAssertEqual(spec.nullable || (!spec.required && spec.defaultValue == nil), nullable, "\(at): nullability")
            // A null default is "no default" (JSONValue's nil literal would be .null, hence spelled out).
            let documentedDefault: JSONValue? = property["default"] == .null ? Optional.none : property["default"]
            XCTAssertEqual(spec.defaultValue, documentedDefault, "\(at): default")
            let target = sampler.nonNull(property)
            switch spec.type {
            case .string(let min, let max):
                XCTAssertEqual(target["type"], "string", at)
                XCTAssertEqual(target["minLength"]?.intValue, min.map(Int64.init), "\(at): minLength")
                XCTAssertEqual(target["maxLength"]?.intValue, Int64(max), "\(at): maxLength")
                // What the codec refuses in every string, whatever its field.
                XCTAssertEqual(target["pattern"], .string(Self.noNUL), "\(at): pattern")
            case .uuid:
                XCTAssertEqual(target["format"], "uuid", at)
            case .int(let min, let max):
                XCTAssertEqual(target["type"], "integer", at)
                XCTAssertEqual(target["minimum"]?.intValue, min, "\(at): minimum")
                XCTAssertEqual(target["maximum"]?.intValue, max, "\(at): maximum")
            case .bool:
                XCTAssertEqual(target["type"], "boolean", at)
            case .enumeration(let values):
                XCTAssertEqual(
                    Set(values), Set(target["enum"]?.arrayValue?.compactMap(\.stringValue) ?? []), "\(at): values")
            case .object(let nested):
                try assertFields(nested, match: target, sampler: sampler, at: at)
            }
        }
    }

    // MARK: - Server → client

    func testEveryServerMessageTypeDecodesWithEveryField() throws {
        let schema = try ProtocolFiles.json("schemas/server.json")
        let sampler = SchemaSampler(definitions: schema["$defs"])
        let mapping = try XCTUnwrap(schema.at("discriminator").at("mapping").objectValue)
        XCTAssertEqual(Set(mapping.keys), Set(ServerMessage.knownTypes), "server message types")
        for type in mapping.keys.sorted() {
            let envelope = sampler.resolve(.object(["$ref": mapping[type]!]))
            for full in [true, false] {
                let sample = sampler.sample(envelope, full: full)
                let label = "\(type) (\(full ? "every field" : "required fields only"))"
                let message: ServerMessage
                do {
                    message = try ServerMessage.decode(sample.serialized())
                } catch {
                    XCTFail("\(label): \(error)")
                    continue
                }
                XCTAssertEqual(message.type, type, label)
                if case .unknown = message { XCTFail("\(label): decoded as unknown") }
                guard full else { continue }
                // Nothing the contract sends is lost: the model writes back what it read.
                let written = try JSONValue.parse(message.encodedText())
                XCTAssertTrue(
                    (written["payload"] ?? .null).sameValue(as: sample["payload"] ?? .null),
                    "\(label): wrote \(written["payload"]?.serialized() ?? "nothing") for \(sample["payload"]?.serialized() ?? "")")
            }
        }
    }

    func testUnknownServerTypesAndFieldsAreTolerated() throws {
        let unknown = try ServerMessage.decode(#"{"v":1,"type":"room.exploded","payload":{"roomId":"x"}}"#)
        XCTAssertEqual(unknown, .unknown(type: "room.exploded", payload: ["roomId": "x"]))
        let extra = try ServerMessage.decode(
            #"{"v":1,"type":"typing","traceparent":"00","payload":{"roomId":"0b5e3c1a-7d2f-4c8e-9a61-3f2d8e4b5c71","userId":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d","active":true,"color":"red"}}"#
        )
        guard case .typing(let typing) = extra else { return XCTFail("\(extra)") }
        XCTAssertTrue(typing.active)
        let status = try ServerMessage.decode(
            #"{"v":1,"type":"presence.changed","payload":{"userId":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d","status":"invisible"}}"#
        )
        guard case .presenceChanged(let changed) = status else { return XCTFail("\(status)") }
        XCTAssertEqual(changed.status.rawValue, "invisible")
        XCTAssertFalse(changed.status.isKnown)
    }

    /// Every enumeration the server sends, against the values the Swift types know (they
    /// decode unknown values too, but a value added to the contract should be named here).
    func testServerEnumerationsAreKnown() throws {
        let schema = try ProtocolFiles.json("schemas/server.json")
        let sampler = SchemaSampler(definitions: schema["$defs"])
        var known: [String: [String]] = [
            "PresenceMember.status": PresenceStatus.knownValues.map(\.rawValue),
            "PresenceChangedPayload.status": PresenceStatus.knownValues.map(\.rawValue),
            "CallStatePayload.state": CallStatus.knownValues.map(\.rawValue),
            "CallStatePayload.mode": CallMode.knownValues.map(\.rawValue),
            "NotificationPayload.kind": NotificationKind.knownValues.map(\.rawValue),
            "RoomInfo.kind": RoomKind.knownValues.map(\.rawValue),
            "CallLeftResult.state": CallStatus.knownValues.map(\.rawValue),
            // The ack echoes the status that was set, so only the settable ones.
            "PresenceSetResult.status": SettablePresence.allCases.map(\.rawValue),
        ]
        // Every envelope's `v`: the protocol versions this package speaks.
        let mapping = try XCTUnwrap(schema.at("discriminator").at("mapping").objectValue)
        for ref in mapping.values {
            let envelope = try XCTUnwrap(ref.stringValue?.split(separator: "/").last)
            known["\(envelope).v"] = ClientFrameCodec.supportedVersions.map(String.init)
        }
        var seen: Set<String> = []
        for name in sampler.definitions.keys.sorted() {
            for (path, values) in sampler.enumerations(in: name) where !path.hasSuffix(".type") {
                seen.insert(path)
                let swift = try XCTUnwrap(known[path], "\(path) is an enumeration the Swift models do not list")
                XCTAssertEqual(Set(values), Set(swift), path)
            }
        }
        XCTAssertEqual(seen, Set(known.keys))
    }

    // MARK: - REST

    private func openAPI() throws -> (JSONValue, SchemaSampler) {
        let document = try ProtocolFiles.json("openapi.json")
        return (document, SchemaSampler(definitions: try document.at("components").at("schemas")))
    }

    private func checkResponse<T: Codable>(_ type: T.Type, _ name: String, _ sampler: SchemaSampler) throws {
        try checkRoundTrip(type, name, sampler)
    }

    /// A definition's full sample decodes and encodes back unchanged; its minimal one decodes.
    private func checkRoundTrip<T: Codable>(_ type: T.Type, _ name: String, _ sampler: SchemaSampler) throws {
        let schema = try XCTUnwrap(sampler.definition(name), name)
        let full = sampler.sample(schema, full: true)
        do {
            let value = try full.decode(T.self)
            let written = try JSONValue.encode(value)
            XCTAssertTrue(written.sameValue(as: full), "\(name): wrote \(written.serialized()) for \(full.serialized())")
        } catch {
            XCTFail("\(name) (every field): \(error)")
        }
        XCTAssertNoThrow(try sampler.sample(schema, full: false).decode(T.self), "\(name) (required fields only)")
    }

    func testRESTResponsesDecodeWithEveryField() throws {
        let (_, sampler) = try openAPI()
        try checkResponse(User.self, "User", sampler)
        try checkResponse(TokenPair.self, "TokenPair", sampler)
        try checkResponse(SessionInfo.self, "SessionInfo", sampler)
        try checkResponse(SessionList.self, "SessionList", sampler)
        try checkResponse(Room.self, "Room", sampler)
        try checkResponse(RoomSummary.self, "RoomSummary", sampler)
        try checkResponse(RoomList.self, "RoomList", sampler)
        try checkResponse(RoomView.self, "RoomView", sampler)
        try checkResponse(PublicRoomPage.self, "PublicRoomPage", sampler)
        try checkResponse(Member.self, "Member", sampler)
        try checkResponse(MemberList.self, "MemberList", sampler)
        try checkResponse(ChatMessage.self, "Message", sampler)
        try checkResponse(MessagePage.self, "MessagePage", sampler)
        try checkResponse(SearchPage.self, "SearchPage", sampler)
        try checkResponse(ReadMarker.self, "ReadMarker", sampler)
        try checkResponse(IceServer.self, "IceServer", sampler)
        try checkResponse(TurnCredentials.self, "TurnCredentials", sampler)
        try checkResponse(Problem.self, "Problem", sampler)
        try checkResponse(PasswordChanged.self, "PasswordChanged", sampler)
        try checkResponse(Ban.self, "Ban", sampler)
        try checkResponse(BanList.self, "BanList", sampler)
        try checkResponse(Mute.self, "Mute", sampler)
        try checkResponse(MuteList.self, "MuteList", sampler)
        try checkResponse(Report.self, "Report", sampler)
        try checkResponse(ReportPage.self, "ReportPage", sampler)
    }

    /// The operators' API (`/v1/admin`), for operators' tools rather than an end-user app,
    /// which this package does not model.
    static let operatorOnly: Set<String> = [
        "Health", "Readiness", "AdminUser", "UserPage", "AdminRoom", "RoomPage", "AuditEntry", "AuditPage",
        "NodeInfo", "NodeList", "DrainAccepted", "SessionsRevoked", "PasswordResetIssued", "WebhookEndpoint",
        "WebhookList", "CreatedWebhook", "CreateUserBody", "SetRoleBody", "CreateWebhookBody",
    ]

    /// Request bodies write exactly the fields the server accepts (it refuses unknown ones).
    func testRESTBodiesWriteTheContractsFields() throws {
        let (_, sampler) = try openAPI()
        let user = UserID.random()
        let bodies: [(String, any Encodable, any Encodable)] = [
            ("RegisterBody", RegisterBody(username: "u", password: "p", displayName: "d", deviceName: "x"),
             RegisterBody(username: "u", password: "p")),
            ("LoginBody", LoginBody(username: "u", password: "p", deviceName: "x"), LoginBody(username: "u", password: "p")),
            ("RefreshBody", RefreshBody(refreshToken: "t"), RefreshBody(refreshToken: "t")),
            ("ProfileBody", ProfileBody(displayName: "d", bio: "b", avatar: .set("https://x.test/a.png")), ProfileBody()),
            ("CreateRoomBody", CreateRoomBody(name: "n", kind: .public, topic: "t"), CreateRoomBody(name: "n")),
            ("UpdateRoomBody", UpdateRoomBody(name: "n", topic: "t"), UpdateRoomBody()),
            ("DirectRoomBody", DirectRoomBody(userId: user), DirectRoomBody(userId: user)),
            ("AddMemberBody", AddMemberBody(userId: user, role: .admin), AddMemberBody(userId: user)),
            ("ChangeRoleBody", ChangeRoleBody(role: .admin), ChangeRoleBody(role: .member)),
            ("TransferBody", TransferBody(userId: user), TransferBody(userId: user)),
            ("PostMessageBody", PostMessageBody(clientMsgId: "c", body: "b", replyTo: .random()),
             PostMessageBody(clientMsgId: "c", body: "b")),
            ("EditMessageBody", EditMessageBody(body: "b"), EditMessageBody(body: "b")),
            ("ReadMarkerBody", ReadMarkerBody(seq: 3), ReadMarkerBody(seq: 3)),
            ("ChangePasswordBody", ChangePasswordBody(currentPassword: "p", newPassword: "q"),
             ChangePasswordBody(currentPassword: "p", newPassword: "q")),
            ("DeleteAccountBody", DeleteAccountBody(password: "p"), DeleteAccountBody(password: "p")),
            ("PasswordResetBody", PasswordResetBody(token: "t", newPassword: "q"),
             PasswordResetBody(token: "t", newPassword: "q")),
            ("BanBody", BanBody(durationSeconds: 60, reason: "r"), BanBody()),
            ("MuteBody", MuteBody(durationSeconds: 60, reason: "r"), MuteBody()),
            ("ReportBody", ReportBody(messageId: .random(), reason: "r"), ReportBody(messageId: .random(), reason: "r")),
            ("ResolveBody", ResolveBody(resolution: .dismissed, note: "n"), ResolveBody(resolution: .actioned)),
        ]
        let operatorBodies = Self.operatorOnly.filter { $0.hasSuffix("Body") }
        XCTAssertTrue(operatorBodies.isSubset(of: Set(sampler.definitions.keys)), "operator-only bodies exist")
        let documented = Set(sampler.definitions.keys.filter { $0.hasSuffix("Body") }).subtracting(operatorBodies)
        XCTAssertEqual(Set(bodies.map(\.0)), documented, "request bodies")
        for (name, everything, minimal) in bodies {
            let schema = try XCTUnwrap(sampler.definition(name))
            let properties = Set(try XCTUnwrap(schema.at("properties").objectValue).keys)
            let required = Set(schema["required"]?.arrayValue?.compactMap(\.stringValue) ?? [])
            let full = try XCTUnwrap(JSONValue.encode(everything).objectValue)
            XCTAssertEqual(Set(full.keys), properties, "\(name): every field")
            let least = try XCTUnwrap(JSONValue.encode(minimal).objectValue)
            XCTAssertTrue(required.isSubset(of: Set(least.keys)), "\(name): required fields")
            XCTAssertTrue(Set(least.keys).isSubset(of: properties), name)
        }
    }

    func testProblemCodesAreKnown() throws {
        let (_, sampler) = try openAPI()
        let codes = try XCTUnwrap(sampler.definition("ProblemCode")?["enum"]?.arrayValue).compactMap(\.stringValue)
        XCTAssertEqual(Set(codes), Set(ProblemCode.knownValues.map(\.rawValue)))
    }

    /// Every component schema is modelled, or listed here as one a client has no use for.
    func testEveryRESTSchemaIsAccountedFor() throws {
        let (_, sampler) = try openAPI()
        let modelled: Set<String> = [
            "User", "TokenPair", "SessionInfo", "SessionList", "Room", "RoomSummary", "RoomList", "RoomView",
            "PublicRoomPage", "Member", "MemberList", "Message", "MessagePage", "SearchPage", "ReadMarker",
            "IceServer", "TurnCredentials", "Problem", "ProblemCode", "PasswordChanged", "Ban", "BanList", "Mute",
            "MuteList", "Report", "ReportPage",
        ]
        // Bodies are checked field by field in testRESTBodiesWriteTheContractsFields.
        let bodies = Set(sampler.definitions.keys.filter { $0.hasSuffix("Body") }).subtracting(Self.operatorOnly)
        XCTAssertTrue(modelled.isDisjoint(with: Self.operatorOnly))
        XCTAssertEqual(Set(sampler.definitions.keys), modelled.union(Self.operatorOnly).union(bodies))
    }

    // MARK: - Ack results (protocol/README.md, "Requests and answers")

    /// Each request's ack result type against its definition in `x-ackResults`; nil: the
    /// ack carries null.
    func testAckResultsDecodeWithEveryFieldOfTheirSchema() throws {
        let schema = try ProtocolFiles.json("schemas/server.json")
        let sampler = SchemaSampler(definitions: schema["$defs"])
        let table = try XCTUnwrap(schema.at("x-ackResults").objectValue)
        XCTAssertEqual(Set(table.keys), Set(ClientFrameCodec.clientMessages.keys), "every request has an ack result")
        let results: [String: (any Codable.Type)?] = [
            "auth": AuthResult.self, "auth.refresh": AuthRefreshResult.self, "ping": PingResult.self,
            "room.join": RoomJoinResult.self, "room.leave": RoomLeaveResult.self,
            "presence.set": PresenceSetResult.self, "typing.start": nil, "typing.stop": nil,
            "chat.send": ChatSendResult.self, "chat.edit": ChatEditResult.self, "chat.delete": ChatDeleteResult.self,
            "chat.read": ReadMarker.self, "chat.history": ChatHistoryResult.self,
            "call.start": CallJoinResult.self, "call.join": CallJoinResult.self,
            "call.leave": CallLeaveResult.self, "call.end": CallLeaveResult.self,
            "rtc.offer": nil, "rtc.answer": nil, "rtc.ice": nil, "call.telemetry": nil,
        ]
        XCTAssertEqual(Set(results.keys), Set(table.keys), "ack results")
        for request in table.keys.sorted() {
            let entry = try XCTUnwrap(table[request])
            guard let type = results[request] ?? nil else {
                XCTAssertEqual(entry, ["type": "null"], "\(request): the ack carries null")
                continue
            }
            let ref = try XCTUnwrap(entry["$ref"]?.stringValue, "\(request): a result, not null")
            let name = String(try XCTUnwrap(ref.split(separator: "/").last))
            try checkRoundTrip(type, name, sampler)
        }
    }

    func testAckResultsMatchTheREADMETable() throws {
        let readme = try String(
            contentsOf: ProtocolFiles.directory.appendingPathComponent("README.md"), encoding: .utf8)
        let room = RoomID.random()
        let message = ChatMessage(
            id: .random(), roomId: room, seq: 1, senderId: .random(), clientMsgId: "c", body: "b", createdAt: "t")
        let call = CallStatePayload(callId: .random(), roomId: room, state: .active, mode: .p2p, participants: [])
        // One sample of each typed result; `nil`: the ack carries null.
        let results: [String: (any Encodable)?] = [
            "auth": AuthResult(userId: .random(), sessionId: .random(), expiresAt: 1),
            "auth.refresh": AuthRefreshResult(expiresAt: 1, iceServers: []),
            "ping": PingResult(ts: 1, serverTime: 2),
            "room.join": RoomJoinResult(roomId: room, lastSeq: 1, replayed: 0),
            "room.leave": RoomLeaveResult(roomId: room, left: true),
            "presence.set": PresenceSetResult(status: .online),
            "typing.start": nil, "typing.stop": nil,
            "chat.send": ChatSendResult(messageId: .random(), seq: 1, createdAt: "t", duplicate: false),
            "chat.edit": ChatEditResult(message: message),
            "chat.delete": ChatDeleteResult(messageId: .random(), seq: 1),
            "chat.read": ReadMarker(roomId: room, seq: 1, unreadCount: 0),
            "chat.history": ChatHistoryResult(roomId: room, messages: [], hasMore: false),
            "call.start": CallJoinResult(call: call, participantId: .random()),
            "call.leave": CallLeaveResult(callId: call.callId, state: .ended),
            "call.end": CallLeaveResult(callId: call.callId, state: .ended),
            "rtc.offer, rtc.answer, rtc.ice": nil,
            "call.telemetry": nil,
        ]
        var rows: [String: String] = [:]
        for line in readme.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard cells.count > 3 else { continue }
            let request = cells[1].replacingOccurrences(of: "`", with: "")
            if ClientFrameCodec.clientMessages[request] != nil || request.contains(",") { rows[request] = cells[2] }
        }
        for (request, sample) in results {
            let cell = try XCTUnwrap(rows[request], "README has no row for \(request)")
            guard let sample else {
                XCTAssertTrue(cell.hasPrefix("`null`"), "\(request): README says \(cell)")
                continue
            }
            let keys = Set(try XCTUnwrap(JSONValue.encode(sample).objectValue).keys)
            let documented = documentedKeys(cell)
            XCTAssertEqual(keys, documented, "\(request): README says \(cell)")
        }
        XCTAssertTrue(rows["call.join"]?.contains("as `call.start`") ?? false, "call.join answers as call.start")
    }

    /// The close-code table: every code with the name the server sends as its reason.
    func testCloseCodesMatchTheREADMETable() throws {
        let readme = try String(
            contentsOf: ProtocolFiles.directory.appendingPathComponent("README.md"), encoding: .utf8)
        var documented: [String: Int] = [:]
        for line in readme.split(separator: "\n") where line.hasPrefix("| ") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 2, let code = Int(cells[0]), cells[1].hasPrefix("`") else { continue }
            documented[cells[1].replacingOccurrences(of: "`", with: "").lowercased()] = code
        }
        XCTAssertFalse(documented.isEmpty)
        XCTAssertEqual(documented, CloseCode.byName.mapValues(\.rawValue))
    }

    /// The quoted names in the first `{…}` of a README cell: `{"a", "b": <…>}` → a, b.
    private func documentedKeys(_ cell: String) -> Set<String> {
        guard let open = cell.firstIndex(of: "{"), let close = cell[open...].firstIndex(of: "}") else { return [] }
        let parts = cell[cell.index(after: open)..<close].split(separator: "\"", omittingEmptySubsequences: false)
        return Set(stride(from: 1, to: parts.count, by: 2).map { String(parts[$0]) })
    }
}
