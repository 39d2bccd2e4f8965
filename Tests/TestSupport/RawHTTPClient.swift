import Foundation

/// One HTTP/1.1 response exactly as it came off the wire.
public struct RawHTTPResponse: Sendable {
    public let status: Int
    public let reason: String
    /// Header fields in order, names as sent.
    public let headers: [(name: String, value: String)]
    /// The body after de-chunking; empty for HEAD, 1xx, 204 and 304.
    public let body: [UInt8]

    public init(status: Int, reason: String, headers: [(name: String, value: String)], body: [UInt8]) {
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
    }

    /// The first field with this name (case-insensitive), nil when absent.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// Every field with this name (case-insensitive), in order.
    public func headers(named name: String) -> [String] {
        headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }
}

/// A deliberately small HTTP/1.1 client over a plain TCP socket: it sends exactly the header fields
/// it is given (byte for byte, tabs and odd spacing included), asks the server to close the
/// connection, and reads the whole response. Enough to compare servers' Range behaviour without
/// URLSession or libcurl rewriting anything.
public enum RawHTTPClient {
    public static func send(method: String, path: String, headers: [(name: String, value: String)] = [],
                            host: String = "127.0.0.1", port: Int, timeout: TimeInterval = 10) throws -> RawHTTPResponse {
        var request = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        let raw = try exchange(Array(request.utf8), host: host, port: port, timeout: timeout)
        return try parse(raw, method: method)
    }

    /// A TCP connection to `host:port` with read and write timeouts; `receiveBuffer` (bytes) makes
    /// the kernel's receive buffer small, so a slow reader really holds the sender back.
    public static func connect(host: String = "127.0.0.1", port: Int, timeout: TimeInterval = 10, receiveBuffer: Int32? = nil) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSetupError("socket() failed: errno \(errno)") }
        var wait = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - floor(timeout)) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr(host)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw TestSetupError("connect to \(host):\(port) failed: errno \(errno)")
        }
        return fd
    }

    /// Writes `request` and reads until the server closes the connection; `progress` hears the
    /// number of bytes received each time it grows.
    public static func exchange(_ request: [UInt8], host: String, port: Int, timeout: TimeInterval,
                                progress: ((Int) -> Void)? = nil) throws -> [UInt8] {
        let fd = try connect(host: host, port: port, timeout: timeout)
        defer { close(fd) }

        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw TestSetupError("write to \(host):\(port) failed: errno \(errno)") }
            sent += n
        }

        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            guard n > 0 else {
                throw TestSetupError("read from \(host):\(port) failed (errno \(errno)) after \(response.count) bytes")
            }
            response += buffer[..<n]
            progress?(response.count)
        }
        return response
    }

    /// Splits a complete response into status, header fields and body, checking the body's framing.
    public static func parse(_ raw: [UInt8], method: String) throws -> RawHTTPResponse {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = raw.indices.first(where: { raw[$0...].starts(with: separator) }) else {
            throw TestSetupError("response has no end of header: \(String(decoding: raw.prefix(200), as: UTF8.self))")
        }
        let lines = String(decoding: raw[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusLine = lines[0].split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]) else {
            throw TestSetupError("bad status line: \(lines[0])")
        }
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { throw TestSetupError("bad header line: \(line)") }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        let response = RawHTTPResponse(status: status, reason: statusLine.count > 2 ? String(statusLine[2]) : "",
                                       headers: headers, body: [])
        var body = Array(raw[(end + 4)...])

        let bodiless = method == "HEAD" || status / 100 == 1 || status == 204 || status == 304
        if bodiless {
            guard body.isEmpty else { throw TestSetupError("\(status) response to \(method) has \(body.count) body bytes") }
        } else if response.header("Transfer-Encoding")?.lowercased().contains("chunked") == true {
            body = try dechunk(body)
        } else if let length = response.header("Content-Length") {
            guard Int(length) == body.count else {
                throw TestSetupError("Content-Length \(length) but the connection closed after \(body.count) body bytes")
            }
        }
        return RawHTTPResponse(status: status, reason: response.reason, headers: headers, body: body)
    }

    private static func dechunk(_ data: [UInt8]) throws -> [UInt8] {
        var body: [UInt8] = []
        var i = 0
        while true {
            guard let lineEnd = data[i...].indices.first(where: { data[$0...].starts(with: [13, 10]) }) else {
                throw TestSetupError("chunked body: no chunk size line")
            }
            let sizeText = String(decoding: data[i..<lineEnd], as: UTF8.self).split(separator: ";")[0]
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else {
                throw TestSetupError("chunked body: bad chunk size \(sizeText)")
            }
            i = lineEnd + 2
            if size == 0 { return body }
            guard i + size + 2 <= data.count else { throw TestSetupError("chunked body: truncated chunk") }
            body += data[i..<(i + size)]
            i += size + 2
        }
    }
}

/// How a raw conversation ended.
public enum RawConversationEnd: String, Sendable {
    /// The server closed the connection (FIN or reset).
    case closed
    /// The server sent nothing for the idle bound and kept the connection open.
    case open
}

extension RawHTTPClient {
    /// Sends `writes` on one connection, each as its own write `pause` seconds after the one before
    /// (so a request split across them reaches the server in pieces), reading all the while; then
    /// reads until the server closes the connection, or sends nothing for `idle` seconds, or
    /// `limit` seconds have passed since the connection opened. Returns every byte received and how
    /// it ended. A write the server refuses (it closed already) ends the writing, not the reading.
    public static func converse(_ writes: [[UInt8]], port: Int, host: String = "127.0.0.1", pause: TimeInterval = 0.05,
                                idle: TimeInterval = 1.5, limit: TimeInterval = 20) throws -> (bytes: [UInt8], end: RawConversationEnd) {
        let fd = try connect(host: host, port: port, timeout: limit)
        defer { close(fd) }
        let opened = Date()
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var closed = false
        /// Reads what arrives within `seconds`; false once the peer has closed.
        func drain(for seconds: TimeInterval) -> Bool {
            let until = Date().addingTimeInterval(seconds)
            while true {
                let left = until.timeIntervalSinceNow
                if left <= 0 { return true }
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, Int32(left * 1000) + 1) > 0 else { return true }
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { return false }
                received += buffer[..<n]
            }
        }
        writing: for (number, chunk) in writes.enumerated() {
            if number > 0, !drain(for: pause) { closed = true; break }
            var sent = 0
            while sent < chunk.count {
                // MSG_NOSIGNAL: a write to a connection the server closed fails instead of raising SIGPIPE.
                let n = chunk[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { break writing }
                sent += n
            }
        }
        while !closed {
            let before = received.count
            closed = !drain(for: min(idle, max(0, limit - Date().timeIntervalSince(opened))))
            if received.count == before || Date().timeIntervalSince(opened) >= limit { break }
        }
        return (received, closed ? .closed : .open)
    }
}
