import Foundation

/// A small tmpfs for tests that need a disk that really fills up (ENOSPC from the kernel, not a
/// simulated error). Needs `mount` to be permitted (root or CAP_SYS_ADMIN); `isAllowed` says
/// whether it is, so a test can be skipped with a reason instead of passing vacuously.
public final class TmpfsMount: @unchecked Sendable {
    public let path: String
    private let lock = NSLock()
    private var mounted = false

    /// Mounts a tmpfs of `size` (mount's syntax: `1m`, `512k`) on `path`, creating the directory.
    public init(path: String, size: String) throws {
        self.path = path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let result = try Self.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size),mode=0755", "tmpfs", path])
        guard result.status == 0 else {
            throw TestSetupError("mount -t tmpfs -o size=\(size) on \(path) failed (exit \(result.status)): \(result.output)")
        }
        mounted = true
    }

    /// Changes the size in place (`mount -o remount,size=`); the files stay.
    public func resize(_ size: String) throws {
        let result = try Self.run("/bin/mount", ["-o", "remount,size=\(size)", path])
        guard result.status == 0 else { throw TestSetupError("remount of \(path) to \(size) failed: \(result.output)") }
    }

    /// Bytes an unprivileged writer can still allocate on the mount.
    public var availableBytes: Int64 {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return -1 }
        return Int64(info.f_bavail) * Int64(info.f_frsize)
    }

    /// Unmounts (lazily if something still holds a file open there). Safe to call twice.
    public func unmount() {
        lock.lock()
        defer { lock.unlock() }
        guard mounted else { return }
        mounted = false
        if (try? Self.run("/bin/umount", [path]))?.status != 0 {
            _ = try? Self.run("/bin/umount", ["-l", path])
        }
    }

    deinit { unmount() }

    /// Whether this process may mount a tmpfs, and if not, why (probed once with a 64 KiB mount).
    public static let probe: (allowed: Bool, reason: String) = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tmpfs-probe-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let mount = try TmpfsMount(path: dir, size: "64k")
            mount.unmount()
            return (true, "")
        } catch {
            return (false, "\(error)")
        }
    }()

    public static var isAllowed: Bool { probe.allowed }

    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}

extension TestServer {
    /// scripts/fault_proxy.py with two more modes, `403` (AccessDenied) and `404` (NoSuchKey), for
    /// refusals S3 gives before any byte. The script is imported unchanged and its table of canned
    /// errors extended, so every other mode and the control endpoints behave exactly as documented there.
    public static func refusingFaultProxy(target: TestServer) throws -> TestServer {
        let code = """
        import sys
        sys.path.insert(0, sys.argv.pop(1))
        import fault_proxy
        fault_proxy.ERRORS["403"] = (403, "Forbidden", "AccessDenied", "Access Denied")
        fault_proxy.ERRORS["404"] = (404, "Not Found", "NoSuchKey", "The specified key does not exist.")
        sys.exit(fault_proxy.main())
        """
        return try start(name: "fault-proxy-refusals", executable: RepoPaths.python, arguments: [
            "-c", code, RepoPaths.scripts.path, "--target", "\(target.host):\(target.port)", "--default", "pass",
        ])
    }

    /// The MongoDB wire server again on a given port (to bring a stopped catalog back where the
    /// client still points).
    public static func mongo(dataDirectory: URL, port: Int) throws -> TestServer {
        try start(name: "mongo-wire", executable: RepoPaths.python, arguments: [
            RepoPaths.scripts.appendingPathComponent("mongo_wire_server.py").path, "--dir", dataDirectory.path, "--port", String(port),
        ])
    }
}

/// Prometheus text: the sum of the samples of `name` whose labels include every pair in `labels`;
/// nil when no such series is exposed.
public func prometheusValue(_ text: String, _ name: String, labels: [String: String] = [:]) -> Double? {
    var total: Double?
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
        let series = line[..<space]
        let seriesName = series.firstIndex(of: "{").map { series[..<$0] } ?? series
        guard seriesName == name else { continue }
        let wanted = labels.allSatisfy { series.contains("\($0.key)=\"\($0.value)\"") }
        if wanted { total = (total ?? 0) + value }
    }
    return total
}
