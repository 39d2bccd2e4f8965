/// A stretch of a source's bytes held in memory, standing in for the whole source (same size):
/// reads inside the stretch are answered from it, and a read outside it is an error, never a
/// second trip to the source. For work that must cost exactly the one read that fetched them.
public struct HeldBytesSource: ByteSource {
    public let size: Int64
    public let start: Int64
    public let bytes: [UInt8]

    public init(size: Int64, start: Int64, bytes: [UInt8]) {
        self.size = size
        self.start = start
        self.bytes = bytes
    }

    private var end: Int64 { start + Int64(bytes.count) }

    public func read(offset: Int64, count: Int) throws -> [UInt8] {
        let upper = min(size, offset + Int64(max(0, count)))
        guard offset >= start, upper <= end, count >= 0 else {
            throw TrimError.sourceUnavailable("bytes \(offset)..<\(upper) are outside the \(start)..<\(end) held in memory")
        }
        guard offset < upper else { return [] }
        return Array(bytes[Int(offset - start)..<Int(upper - start)])
    }
}
