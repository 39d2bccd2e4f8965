import Foundation
import Hummingbird
import Logging
import NIOCore

/// Where the admin endpoints listen (`admin.listen`): a Unix domain socket, or a TCP port on a
/// loopback address. Never the public port, and never an address other machines can reach: the
/// socket's file mode (or the loopback interface) is the access control, as with Varnish's
/// management socket or Envoy's admin port.
enum AdminAddress: Equatable, Sendable, CustomStringConvertible {
    case unixSocket(path: String)
    case loopback(host: String, port: Int)

    /// The default: `admin.sock` in the cache directory, one per instance, so several nodes on
    /// one host never share it and every command that reads the same configuration finds it.
    static func defaultSocket(cacheDir: String) -> AdminAddress {
        .unixSocket(path: (cacheDir.hasSuffix("/") ? cacheDir : cacheDir + "/") + "admin.sock")
    }

    /// `unix:PATH` or a path (anything with a `/`); otherwise `HOST:PORT` or `[V6]:PORT` with a
    /// loopback host.
    static func parse(_ text: String) throws -> AdminAddress {
        let value = text.trimmingCharacters(in: .whitespaces)
        if value.hasPrefix("unix:") || value.contains("/") {
            let path = value.hasPrefix("unix:") ? String(value.dropFirst(5)) : value
            // sun_path holds 108 bytes with the terminating NUL.
            guard !path.isEmpty, path.utf8.count <= 107 else {
                throw ConfigurationError("admin.listen: a Unix socket path must be 1 to 107 bytes long, got \(path.utf8.count): choose a shorter path")
            }
            return .unixSocket(path: path)
        }
        let host: Substring, portText: Substring
        if value.hasPrefix("["), let close = value.firstIndex(of: "]") {
            host = value[value.index(after: value.startIndex)..<close]
            portText = value[close...].dropFirst().drop { $0 == ":" }
        } else if let colon = value.lastIndex(of: ":") {
            host = value[..<colon]
            portText = value[value.index(after: colon)...]
        } else {
            throw ConfigurationError("admin.listen must be a Unix socket path (unix:/run/clipproxy/admin.sock) or a loopback HOST:PORT (127.0.0.1:9901), got \(text)")
        }
        guard let port = Int(portText), (0...65535).contains(port) else {
            throw ConfigurationError("admin.listen: the port must be 0 to 65535, got \(portText)")
        }
        guard isLoopback(String(host)) else {
            throw ConfigurationError("admin.listen: \(host) is not a loopback address; the admin endpoints must not be reachable from other machines (use 127.0.0.1, ::1 or a Unix socket)")
        }
        return .loopback(host: String(host), port: port)
    }

    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    var bindAddress: BindAddress {
        switch self {
        case .unixSocket(let path): .unixDomainSocket(path: path)
        case .loopback(let host, let port): .hostname(host, port: port)
        }
    }

    var description: String {
        switch self {
        case .unixSocket(let path): "unix:\(path)"
        case .loopback(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }
}

/// The admin listener's Unix socket file: a stale one left by a killed process is replaced, a
/// live one (another instance with the same `admin.listen`) or a file that is no socket stops the
/// start; the socket is made owner-only once bound and removed at shutdown.
struct AdminSocketFile: Sendable {
    let path: String

    enum Claim { case free, stale }

    /// Checks what is at `path` before binding, and removes a stale socket.
    func claim(logger: Logger) throws -> Claim {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            guard errno == ENOENT else { throw ConfigurationError("admin.listen: cannot inspect \(path): \(String(cString: strerror(errno)))") }
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty {
                do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750]) } catch {
                    throw ConfigurationError("admin.listen: cannot create the socket's directory \(directory): \(error.localizedDescription)")
                }
            }
            return .free
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw ConfigurationError("admin.listen: \(path) exists and is not a socket; remove it or choose another admin.listen")
        }
        switch Self.connectResult(path) {
        case 0:
            throw ConfigurationError("admin.listen: another process is serving on \(path) (a clipproxy with the same admin.listen or cache.dir?); stop it or give this one its own")
        case ECONNREFUSED, ENOENT:
            guard unlink(path) == 0 || errno == ENOENT else {
                throw ConfigurationError("admin.listen: cannot remove the stale socket \(path): \(String(cString: strerror(errno)))")
            }
            logger.notice("stale admin socket removed", metadata: ["admin.listen": "\(path)"])
            return .stale
        case let code:
            throw ConfigurationError("admin.listen: cannot check \(path): \(String(cString: strerror(code)))")
        }
    }

    /// Owner-only (0600) right after binding: the socket is created with the process's umask.
    func restrict() throws {
        guard chmod(path, 0o600) == 0 else {
            throw ConfigurationError("admin.listen: cannot make \(path) owner-only: \(String(cString: strerror(errno)))")
        }
    }

    /// Removes the socket if it is still a socket (another instance may have replaced it if this one was stuck).
    func remove(logger: Logger) {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else { return }
        if unlink(path) != 0 && errno != ENOENT {
            logger.warning("admin socket not removed", metadata: ["admin.listen": "\(path)", "error": "\(String(cString: strerror(errno)))"])
        }
    }

    /// 0 when something accepts connections at `path`, else the errno of the attempt.
    static func connectResult(_ path: String) -> Int32 {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return errno }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: path.utf8.prefix(buffer.count - 1))
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return result == 0 ? 0 : errno
    }
}
