import Foundation

/// One foreground, single-process nginx (Debian's /usr/sbin/nginx) living entirely in its own
/// temporary directory (config, pid, logs, temp and cache paths): no root needed, nothing left
/// behind. `NginxServer` (the HTTP oracle) and `NginxProxyCache` (the CDN) configure it.
final class NginxProcess: @unchecked Sendable {
    static let executable = URL(fileURLWithPath: "/usr/sbin/nginx")

    let port: Int
    let directory: TemporaryDirectory
    private let process: Process
    private let lock = NSLock()
    private var stopped = false

    private init(port: Int, directory: TemporaryDirectory, process: Process) {
        self.port = port
        self.directory = directory
        self.process = process
    }

    /// Writes the configuration (`writeConfig` must create `nginx.conf` in the directory for the
    /// given port), starts nginx and waits until it accepts connections. A port found free can be
    /// taken before nginx binds it, so that case is retried with another port.
    static func launch(label: String, timeout: TimeInterval,
                       writeConfig: (_ directory: TemporaryDirectory, _ port: Int) throws -> Void) throws -> NginxProcess {
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw TestSetupError("nginx is not installed (\(executable.path) is missing): run `make test`, or `apt-get install -y nginx`")
        }
        var lastFailure = ""
        for _ in 0..<3 {
            let directory = try TemporaryDirectory(label)
            let d = directory.path
            let port = try freeLoopbackPort()
            try writeConfig(directory, port)
            _ = FileManager.default.createFile(atPath: d + "/stderr.log", contents: nil)
            let output = try FileHandle(forWritingTo: URL(fileURLWithPath: d + "/stderr.log"))

            let process = Process()
            process.executableURL = executable
            process.arguments = ["-p", d + "/", "-c", d + "/nginx.conf", "-e", d + "/error.log"]
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = output
            process.standardError = output
            try process.run()

            let nginx = NginxProcess(port: port, directory: directory, process: process)
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline {
                if acceptsConnections(port: port) { return nginx }
                usleep(20_000)
            }
            lastFailure = nginx.log
            nginx.stop()
            if !lastFailure.contains("Address already in use") { break }
        }
        throw TestSetupError("nginx (\(label)) did not start within \(Int(timeout)) s:\n\(lastFailure.suffix(4000))")
    }

    /// Stops nginx and removes its directory.
    ///
    /// With SIGKILL, not SIGTERM: a process started from a Dispatch or Swift Concurrency thread
    /// inherits that thread's signal mask, which blocks SIGTERM, SIGINT and SIGQUIT, and nginx in
    /// single-process mode never unblocks them, so a SIGTERM is never delivered. Nothing is lost:
    /// nginx writes its logs unbuffered and keeps all its state in the temporary directory.
    func stop() {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped else { return }
        stopped = true
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        directory.remove()
    }

    var isRunning: Bool { process.isRunning }

    /// nginx's error log and anything it printed, for failure messages.
    var log: String {
        ["error.log", "stderr.log"].compactMap {
            try? String(contentsOf: directory.url.appendingPathComponent($0), encoding: .utf8)
        }.joined(separator: "\n")
    }

    deinit { stop() }

    private static func acceptsConnections(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
