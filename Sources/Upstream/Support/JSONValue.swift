import Foundation

/// A parsed JSON value that can cross concurrency domains (Foundation's `Any` trees cannot).
public enum JSONValue: Sendable, Equatable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(parsing data: Data) throws {
        self = try JSONDecoder().decode(JSONValue.self, from: data)
    }

    public init(parsing text: String) throws {
        try self.init(parsing: Data(text.utf8))
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// An integer from a plain number or from Extended JSON's `{"$numberInt"|"$numberLong": "…"}`.
    public var integerValue: Int64? {
        switch self {
        case .number(let d): return d == d.rounded() && abs(d) < 9.0e15 ? Int64(d) : nil
        case .object(let o):
            if let s = (o["$numberInt"] ?? o["$numberLong"])?.stringValue { return Int64(s) }
            return nil
        default: return nil
        }
    }

    /// A finite number from a plain number or from Extended JSON's `$numberDouble`, `$numberInt`
    /// or `$numberLong` (canonical Extended JSON wraps every number).
    public var doubleValue: Double? {
        let number: Double?
        switch self {
        case .number(let d): number = d
        case .object(let o): number = (o["$numberDouble"] ?? o["$numberInt"] ?? o["$numberLong"])?.stringValue.flatMap(Double.init)
        default: number = nil
        }
        return number.flatMap { $0.isFinite ? $0 : nil }
    }

    /// The hex string of an Extended JSON ObjectId (`{"$oid": "…"}`).
    public var objectIdHex: String? {
        self["$oid"]?.stringValue
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        // Order matters: JSONDecoder refuses to read a number as Bool, so Bool goes first.
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}
