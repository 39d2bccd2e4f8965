import Foundation

/// A failed system call: which call, on what, and errno, so callers can tell a full disk
/// (`ENOSPC`) from a missing file (`ENOENT`) without parsing text.
public struct SystemCallError: Error, CustomStringConvertible, Sendable, Equatable {
    public let call: String
    public let path: String
    public let code: Int32

    public init(_ call: String, _ path: String, code: Int32) {
        self.call = call
        self.path = path
        self.code = code
    }

    public var description: String { "\(call) \(path) failed: \(String(cString: strerror(code)))" }
}

/// The file system calls of the stores, in one place: each retries EINTR and throws
/// `SystemCallError` with errno, so every caller handles failures alike.
public enum Posix {
    /// Runs `call` until it does not fail with EINTR; returns its result (negative: failed, errno set).
    @inline(__always)
    static func retryingInterrupts<T: BinaryInteger>(_ call: () -> T) -> T {
        while true {
            let result = call()
            if result >= 0 || errno != EINTR { return result }
        }
    }

    /// A read-only descriptor of `path`, or -1 (errno set) when it cannot be opened.
    public static func openForReading(_ path: String) -> Int32 {
        open(path, O_RDONLY)
    }

    /// `open(2)` with close-on-exec and EINTR retried; -1 (errno set) on failure.
    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644) -> Int32 {
        retryingInterrupts { Foundation.open(path, flags | O_CLOEXEC, mode) }
    }

    /// A new file at `path`, opened for writing; fails if it exists (a temporary file of our own).
    public static func createExclusive(_ path: String) throws -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL)
        guard fd >= 0 else { throw SystemCallError("create", path, code: errno) }
        return fd
    }

    /// Writes all of `bytes` at the descriptor's position.
    public static func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = retryingInterrupts { write(descriptor, bytes.baseAddress! + done, bytes.count - done) }
            guard n >= 0 else { throw SystemCallError("write", path, code: errno) }
            done += n
        }
    }

    /// Reads up to `count` bytes at `offset` into `buffer`; fewer only at the end of the file.
    public static func readFully(_ descriptor: Int32, into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int64, path: String) throws -> Int {
        var filled = 0
        while filled < count {
            let n = retryingInterrupts { pread(descriptor, buffer + filled, count - filled, off_t(offset) + off_t(filled)) }
            guard n >= 0 else { throw SystemCallError("pread", path, code: errno) }
            if n == 0 { break }
            filled += n
        }
        return filled
    }

    public static func fsync(_ descriptor: Int32, path: String) throws {
        guard retryingInterrupts({ Foundation.fsync(descriptor) }) == 0 else { throw SystemCallError("fsync", path, code: errno) }
    }

    public static func fsyncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw SystemCallError("open", path, code: errno) }
        defer { close(fd) }
        try fsync(fd, path: path)
    }

    public static func rename(_ from: String, to: String) throws {
        guard retryingInterrupts({ Foundation.rename(from, to) }) == 0 else { throw SystemCallError("rename", "\(from) to \(to)", code: errno) }
    }

    /// Removes a file; false when there was none (so a remove can be counted), throws on any other failure.
    @discardableResult
    public static func removeFile(_ path: String) throws -> Bool {
        if unlink(path) == 0 { return true }
        guard errno == ENOENT else { throw SystemCallError("unlink", path, code: errno) }
        return false
    }

    /// Sets a file's access and modification times to `ms` (milliseconds since 1970).
    public static func setFileTimes(_ path: String, ms: Int64) throws {
        let time = timespec(tv_sec: Int(ms / 1000), tv_nsec: Int(ms % 1000) * 1_000_000)
        guard utimensat(AT_FDCWD, path, [time, time], 0) == 0 else { throw SystemCallError("utimensat", path, code: errno) }
    }

    /// What stands in for an ETag of a file: size, modification time and inode change whenever
    /// the file is replaced or rewritten.
    public static func fileIdentity(_ info: stat) -> String {
        "file-\(info.st_size)-\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)-\(info.st_ino)"
    }

    /// `mkdir -p`: creates `path` and its missing parents.
    public static func makeDirectories(_ path: String) throws {
        if mkdir(path, 0o755) == 0 || errno == EEXIST { return }
        let code = errno
        guard code == ENOENT else { throw SystemCallError("mkdir", path, code: code) }
        let parent = (path as NSString).deletingLastPathComponent
        guard !parent.isEmpty, parent != path else { throw SystemCallError("mkdir", path, code: code) }
        try makeDirectories(parent)
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else { throw SystemCallError("mkdir", path, code: errno) }
    }
}
