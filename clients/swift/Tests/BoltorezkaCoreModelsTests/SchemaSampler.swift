import Foundation

import BoltorezkaCoreModels

/// Sample instances of JSON Schema definitions: `full` sets every property (the non-null
/// branch of every `anyOf`), otherwise only the required ones. A Swift model that decodes
/// the full sample and encodes it back unchanged knows every field the contract has; one
/// that decodes the minimal sample requires nothing the contract makes optional.
struct SchemaSampler {
    let definitions: [String: JSONValue]

    init(definitions: JSONValue?) {
        self.definitions = definitions?.objectValue ?? [:]
    }

    func definition(_ name: String) -> JSONValue? { definitions[name] }

    func resolve(_ node: JSONValue) -> JSONValue {
        if case .string(let ref)? = node["$ref"], let name = ref.split(separator: "/").last,
            let target = definitions[String(name)]
        {
            return resolve(target)
        }
        return node
    }

    /// The non-null branch of a nullable property, or the property itself.
    func nonNull(_ node: JSONValue) -> JSONValue {
        let resolved = resolve(node)
        if case .array(let branches)? = resolved["anyOf"] {
            if let branch = branches.first(where: { $0["type"] != .string("null") }) { return resolve(branch) }
        }
        return resolved
    }

    func sample(_ node: JSONValue, full: Bool) -> JSONValue {
        let schema = nonNull(node)
        if case .array(let values)? = schema["enum"], let first = values.first { return first }
        switch schema["type"]?.stringValue {
        case "object":
            guard case .object(let properties)? = schema["properties"] else {
                if let extra = schema["additionalProperties"], extra.objectValue != nil {
                    return .object(["k": sample(extra, full: full)])
                }
                return .object(["k": "v"])
            }
            let required = Set(schema["required"]?.arrayValue?.compactMap(\.stringValue) ?? [])
            var out: [String: JSONValue] = [:]
            for (key, property) in properties where full || required.contains(key) {
                out[key] = sample(property, full: full)
            }
            return .object(out)
        case "array":
            return full ? .array([sample(schema["items"] ?? .object([:]), full: full)]) : .array([])
        case "string":
            switch schema["format"]?.stringValue {
            case "uuid": return "0b5e3c1a-7d2f-4c8e-9a61-3f2d8e4b5c71"
            case "date-time": return "2026-12-01T10:00:00.123456Z"
            default:
                let length = max(1, Int(schema["minLength"]?.intValue ?? 1))
                return .string(String(repeating: "x", count: length))
            }
        case "integer":
            let low = schema["minimum"]?.intValue ?? 1
            return .int(max(low, 1))
        case "number": return .double(2.5)
        case "boolean": return .bool(true)
        default:
            return .object(["any": 1])  // `{}`: any JSON value
        }
    }

    /// Every enumeration under a definition's properties, as (property path, values); values
    /// that are not strings appear as their JSON text.
    func enumerations(in name: String) -> [(String, [String])] {
        guard let schema = definitions[name] else { return [] }
        return enumerations(schema, at: name)
    }

    private func enumerations(_ node: JSONValue, at path: String) -> [(String, [String])] {
        let schema = nonNull(node)
        if case .array(let values)? = schema["enum"] {
            // A number (the envelope's `v`) as its JSON text, so no value is dropped.
            return [(path, values.map { $0.stringValue ?? $0.serialized() })]
        }
        guard case .object(let properties)? = schema["properties"] else { return [] }
        return properties.keys.sorted().flatMap { key -> [(String, [String])] in
            let property = properties[key]!
            // Only what the definition itself holds; referenced definitions are checked apart.
            if property["$ref"] != nil { return [] }
            return enumerations(property, at: "\(path).\(key)")
        }
    }
}
