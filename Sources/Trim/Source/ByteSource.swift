import Foundation
import Support
import Synchronization

/// Random access to the bytes of a source (a local file, an S3 object). Every read is a bounded
/// byte range, so probing and indexing never need the whole source.
public protocol ByteSource: Sendable {
    /// Total size in bytes.
    var size: Int64 { get }
    /// Up to `count` bytes from `offset` (fewer only at the end of the source).
    func read(offset: Int64, count: Int) throws -> [UInt8]
    /// Delivers bytes `[range.lowerBound, range.upperBound)` in order, in chunks, as they arrive.
    func stream(_ range: Range<Int64>, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws
}

extension ByteSource {
    /// Default streaming: bounded reads of 256 KiB.
    public func stream(_ range: Range<Int64>, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws {
        var offset = range.lowerBound
        while offset < range.upperBound {
            let chunk = try read(offset: offset, count: Int(min(256 << 10, range.upperBound - offset)))
            guard !chunk.isEmpty else { throw TrimError.truncatedSource(offset: offset, expected: range.upperBound) }
            try chunk.withUnsafeBytes(consume)
            offset += Int64(chunk.count)
        }
    }
}

/// A local file read with pread(2), safe from any number of threads at once.
public final class FileByteSource: ByteSource {
    private let descriptor: Int32
    public let size: Int64
    public let path: String

    public init(path: String) throws {
        let fd = Posix.openForReading(path)
        guard fd >= 0 else { throw TrimError.sourceUnavailable("cannot open \(path): \(String(cString: strerror(errno)))") }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw TrimError.sourceUnavailable("\(path) is not a regular file")
        }
        descriptor = fd
        size = Int64(info.st_size)
        self.path = path
        identity = Posix.fileIdentity(info)
    }

    /// The file's stand-in ETag (`Posix.fileIdentity`) when it was opened.
    public let identity: String

    deinit { close(descriptor) }

    public func read(offset: Int64, count: Int) throws -> [UInt8] {
        guard offset >= 0, count >= 0 else { throw TrimError.sourceUnavailable("invalid read at \(offset)") }
        let wanted = Int(max(0, min(Int64(count), size - offset)))
        guard wanted > 0 else { return [] }
        var buffer = [UInt8](repeating: 0, count: wanted)
        let filled: Int
        do {
            // Fewer bytes only if the file shrank under us.
            filled = try buffer.withUnsafeMutableBytes { raw in
                try Posix.readFully(descriptor, into: raw.baseAddress!, count: wanted, at: offset, path: path)
            }
        } catch {
            throw TrimError.sourceUnavailable("read of \(path) failed: \(error)")
        }
        if filled < wanted { buffer.removeLast(wanted - filled) }
        return buffer
    }
}

/// Wraps a source and counts what is read through it: the measure of a frugal trim.
public final class CountingByteSource: ByteSource {
    public let base: any ByteSource
    private let bytes = Atomic<Int64>(0)
    private let requests = Atomic<Int>(0)
    private let log = Mutex<[Range<Int64>]>([])

    public init(_ base: any ByteSource) { self.base = base }

    public var size: Int64 { base.size }
    /// Bytes delivered so far.
    public var bytesRead: Int64 { bytes.load(ordering: .relaxed) }
    /// Read or stream calls so far.
    public var readCount: Int { requests.load(ordering: .relaxed) }
    /// Every range requested, in order.
    public var ranges: [Range<Int64>] { log.withLock { $0 } }

    public func read(offset: Int64, count: Int) throws -> [UInt8] {
        let result = try base.read(offset: offset, count: count)
        note(offset..<(offset + Int64(result.count)))
        return result
    }

    public func stream(_ range: Range<Int64>, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws {
        var delivered: Int64 = 0
        defer { note(range.lowerBound..<(range.lowerBound + delivered)) }
        try base.stream(range) { chunk in
            delivered += Int64(chunk.count)
            try consume(chunk)
        }
    }

    private func note(_ range: Range<Int64>) {
        bytes.add(Int64(range.count), ordering: .relaxed)
        requests.add(1, ordering: .relaxed)
        log.withLock { $0.append(range) }
    }
}

/// Serves repeated reads of a source's first and last bytes from memory. Probing looks at the
/// same head (libavformat's identification, then the frame index) and tail (ID3v1/APE, the last
/// frame) several times; with this each is read once.
public final class HeadTailCachedSource: ByteSource {
    public let base: any ByteSource
    private let headLength: Int
    private let tailLength: Int
    private let cache = Mutex<(head: [UInt8]?, tail: [UInt8]?)>((nil, nil))

    public init(_ base: any ByteSource, headBytes: Int = 32 << 10, tailBytes: Int = 4 << 10) {
        self.base = base
        headLength = Int(min(Int64(headBytes), base.size))
        tailLength = Int(min(Int64(tailBytes), base.size))
    }

    public var size: Int64 { base.size }

    public func read(offset: Int64, count: Int) throws -> [UInt8] {
        let end = min(size, offset + Int64(count))
        guard offset >= 0, offset < end else { return try base.read(offset: offset, count: count) }
        if end <= Int64(headLength) {
            let head = try cached(\.head) { try base.read(offset: 0, count: headLength) }
            return Array(head[Int(offset)..<Int(end)])
        }
        let tailStart = size - Int64(tailLength)
        if offset >= tailStart {
            let tail = try cached(\.tail) { try base.read(offset: tailStart, count: tailLength) }
            return Array(tail[Int(offset - tailStart)..<Int(end - tailStart)])
        }
        return try base.read(offset: offset, count: count)
    }

    public func stream(_ range: Range<Int64>, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws {
        try base.stream(range, consume)
    }

    private func cached(_ slot: WritableKeyPath<(head: [UInt8]?, tail: [UInt8]?), [UInt8]?>,
                        load: () throws -> [UInt8]) throws -> [UInt8] {
        if let hit = cache.withLock({ $0[keyPath: slot] }) { return hit }
        let bytes = try load()
        cache.withLock { $0[keyPath: slot] = bytes }
        return bytes
    }
}
