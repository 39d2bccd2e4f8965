import Foundation
import Support

/// A clip being written to the local store: a temporary file plus a running SHA-256.
/// Nothing is visible to readers until `ClipStore.commit` has fsynced it, renamed it into place
/// and recorded it. Dropped without a commit (an error, a client gone), it removes its file.
public final class BlobFill: @unchecked Sendable {
    public let key: ClipKey
    public let temporaryPath: String
    /// When the fill began: the clip's creation time (and so its Last-Modified) from its first
    /// response on, so the date does not move when the finished clip is committed.
    /// Set before the fill is committed when the clip is a copy of one made earlier.
    public var startedMs: Int64
    private var descriptor: Int32
    private var hasher = SHA256Hasher()
    public private(set) var byteCount: Int64 = 0
    private var finished = false

    init(key: ClipKey, temporaryPath: String, startedMs: Int64) throws {
        self.startedMs = startedMs
        let fd = try Posix.createExclusive(temporaryPath)
        self.key = key
        self.temporaryPath = temporaryPath
        descriptor = fd
    }

    /// Appends bytes. `@unchecked Sendable`: one fill is written by one task at a time.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard !finished else { throw IndexError.state("write after the fill ended") }
        try Posix.writeAll(descriptor, bytes, path: temporaryPath)
        hasher.update(bytes)
        byteCount += Int64(bytes.count)
    }

    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    /// fsyncs and closes the file; returns its digest. Used by `ClipStore.commit`.
    func seal() throws -> [UInt8] {
        guard !finished else { throw IndexError.state("fill already ended") }
        finished = true
        defer { close(descriptor); descriptor = -1 }
        try Posix.fsync(descriptor, path: temporaryPath)
        return hasher.finalize()
    }

    /// Gives up: closes and removes the temporary file.
    public func abort() {
        if descriptor >= 0 { close(descriptor); descriptor = -1 }
        finished = true
        unlink(temporaryPath)
    }

    deinit {
        if descriptor >= 0 { close(descriptor) }
        if !committed { unlink(temporaryPath) }
    }

    var committed = false
}

public enum IndexError: Error, CustomStringConvertible, Sendable {
    case io(String, Int32)
    case state(String)

    public var description: String {
        switch self {
        case .io(let what, let code): "\(what): \(String(cString: strerror(code)))"
        case .state(let what): "clip store misuse: \(what)"
        }
    }
}
