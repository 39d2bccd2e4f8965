/// Little-endian binary records: what the index stores is compact, versioned and cheap to decode.
public struct ByteWriter: Sendable {
    public private(set) var data: [UInt8] = []
    public init() {}
    public mutating func u8(_ v: UInt8) { data.append(v) }
    public mutating func u16(_ v: UInt16) { data.append(UInt8(v & 0xFF)); data.append(UInt8(v >> 8)) }
    public mutating func u32(_ v: UInt32) { for s in stride(from: 0, to: 32, by: 8) { data.append(UInt8((v >> UInt32(s)) & 0xFF)) } }
    public mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    public mutating func u64(_ v: UInt64) { for s in stride(from: 0, to: 64, by: 8) { data.append(UInt8((v >> UInt64(s)) & 0xFF)) } }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func bytes(_ b: [UInt8]) { data.append(contentsOf: b) }
    /// A length-prefixed UTF-8 string (u32 length).
    public mutating func string(_ s: String) { let b = Array(s.utf8); u32(UInt32(b.count)); bytes(b) }
}

/// Reads what `ByteWriter` wrote. Every read checks bounds: a short or garbled record is a
/// `RecordDecodingError`, never a crash.
public struct ByteReader {
    public let data: [UInt8]
    public private(set) var position = 0
    public init(_ data: [UInt8]) { self.data = data }
    public var remaining: Int { data.count - position }

    public mutating func bytes(_ n: Int) throws(RecordDecodingError) -> [UInt8] {
        guard n >= 0, n <= remaining else { throw RecordDecodingError("record ends early (wanted \(n) bytes, \(remaining) left)") }
        defer { position += n }
        return Array(data[position..<(position + n)])
    }
    public mutating func u8() throws(RecordDecodingError) -> UInt8 { try bytes(1)[0] }
    public mutating func u16() throws(RecordDecodingError) -> UInt16 { let b = try bytes(2); return UInt16(b[0]) | UInt16(b[1]) << 8 }
    public mutating func u32() throws(RecordDecodingError) -> UInt32 { try bytes(4).reversed().reduce(0) { $0 << 8 | UInt32($1) } }
    public mutating func i32() throws(RecordDecodingError) -> Int32 { Int32(bitPattern: try u32()) }
    public mutating func u64() throws(RecordDecodingError) -> UInt64 { try bytes(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }
    public mutating func i64() throws(RecordDecodingError) -> Int64 { Int64(bitPattern: try u64()) }
    public mutating func string(maxLength: Int = 4096) throws(RecordDecodingError) -> String {
        let n = Int(try u32())
        guard n <= maxLength else { throw RecordDecodingError("string of \(n) bytes exceeds \(maxLength)") }
        return String(decoding: try bytes(n), as: UTF8.self)
    }
}

public struct RecordDecodingError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
