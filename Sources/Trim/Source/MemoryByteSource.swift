/// Bytes already in memory as a source: a cached object, a request body, a clip being re-indexed,
/// or a test input. Immutable, so safe from any number of threads at once.
///
/// Reads follow the `ByteSource` contract exactly as `FileByteSource` does: a read past the end
/// returns the bytes that exist (possibly none) and a negative offset or count is a typed error.
public final class MemoryByteSource: ByteSource {
    /// The source's bytes.
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var size: Int64 { Int64(bytes.count) }

    public func read(offset: Int64, count: Int) throws -> [UInt8] {
        guard offset >= 0, count >= 0 else { throw TrimError.sourceUnavailable("invalid read at \(offset)") }
        guard offset < size else { return [] }
        let start = Int(offset)
        return Array(bytes[start..<(start + min(count, bytes.count - start))])
    }

    /// Streams straight from the array, in chunks of at most 256 KiB like the default.
    public func stream(_ range: Range<Int64>, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard range.lowerBound >= 0 else { throw TrimError.sourceUnavailable("invalid read at \(range.lowerBound)") }
        guard range.upperBound <= size else { throw TrimError.truncatedSource(offset: size, expected: range.upperBound) }
        let chunk = 256 << 10
        try bytes.withUnsafeBytes { all in
            var offset = Int(range.lowerBound)
            let end = Int(range.upperBound)
            while offset < end {
                let next = min(end, offset + chunk)
                try consume(UnsafeRawBufferPointer(rebasing: all[offset..<next]))
                offset = next
            }
        }
    }
}
