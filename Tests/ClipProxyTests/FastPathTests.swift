import Foundation
import Testing
import TestSupport
@testable import ClipProxy

/// How many responses the stored-clip fast path has sent (`clipproxy_fast_path_responses_total`).
func fastPathResponses(_ server: ClipProxyProcess) throws -> Int {
    let text = try metricsText(server)
    let name = "clipproxy_fast_path_responses_total"
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + " ") }),
          let value = Double(line.split(separator: " ").last ?? "") else {
        throw TestSetupError("no \(name) in /metrics")
    }
    return Int(value)
}

/// Splits the bytes of several pipelined responses, in order; `methods` are the requests' methods
/// (a HEAD response has no body whatever its Content-Length says).
func pipelinedResponses(_ raw: [UInt8], methods: [String]) throws -> [RawHTTPResponse] {
    var responses: [RawHTTPResponse] = []
    var cursor = raw.startIndex
    let separator: [UInt8] = [13, 10, 13, 10]
    for method in methods {
        guard let headEnd = raw[cursor...].firstRange(of: separator)?.upperBound else {
            throw TestSetupError("response \(responses.count + 1) of \(methods.count) missing (\(raw.count - cursor) bytes left)")
        }
        let head = try RawHTTPClient.parse(Array(raw[cursor..<headEnd]), method: "HEAD")
        let status = head.status
        let length = (method == "HEAD" || status == 304) ? 0 : Int(head.header("Content-Length") ?? "0") ?? 0
        guard headEnd + length <= raw.endIndex else { throw TestSetupError("response \(responses.count + 1): body cut short") }
        responses.append(RawHTTPResponse(status: head.status, reason: head.reason, headers: head.headers,
                                         body: Array(raw[headEnd..<(headEnd + length)])))
        cursor = headEnd + length
    }
    guard cursor == raw.endIndex else { throw TestSetupError("\(raw.endIndex - cursor) bytes after the last response") }
    return responses
}

/// A connection with a small receive buffer, so the server's writes queue up when the client
/// reads slowly (loopback buffers otherwise swallow a whole clip).
func slowReaderSocket(port: Int, receiveBuffer: Int32 = 4096) throws -> Int32 {
    try RawHTTPClient.connect(port: port, timeout: 20, receiveBuffer: receiveBuffer)
}

func writeAll(_ fd: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    var sent = 0
    while sent < bytes.count {
        let n = bytes[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return }
        sent += n
    }
}

/// Reads until the bytes hold exactly the responses to `methods` (or the peer closes).
func readResponses(_ fd: Int32, methods: [String]) throws -> [RawHTTPResponse] {
    var raw: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 64 << 10)
    while true {
        if let responses = try? pipelinedResponses(raw, methods: methods) { return responses }
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { return try pipelinedResponses(raw, methods: methods) }
        raw += buffer[..<n]
    }
}

/// Reads up to `limit` bytes (until the peer closes, an error, or the limit); `pause` between reads.
func readSlowly(_ fd: Int32, limit: Int = .max, chunk: Int = 4096, pause: useconds_t = 0) -> [UInt8] {
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: chunk)
    while received.count < limit {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, limit - received.count)) }
        if n <= 0 { break }
        received += buffer[..<n]
        if pause > 0 { usleep(pause) }
    }
    return received
}

@Suite("Stored clips answered below the router (the fast path)")
struct FastPathTests {
    static let episode = ServerTests.episode
    static let hot: Int64 = 2_000
    static let cold: Int64 = 9_000

    /// A server with the clip at `hot` stored and prepared (so the fast path can answer it).
    static func withWarmServer(_ label: String, environment: [String: String] = [:],
                               _ body: (ClipProxyProcess, Int, [UInt8]) throws -> Void) throws {
        let work = try TemporaryDirectory(label)
        defer { work.remove() }
        let server = try ClipProxyProcess(environment: EmbeddedServer(work: work).environment.merging(environment) { $1 })
        defer { server.stop() }
        let expected = try trimmed(ServerTests.sourceKey, startMs: hot)
        let port = try ServerRangeTableTests.port(of: server.baseURL)
        let first = try RawHTTPClient.send(method: "GET", path: "/clips/\(episode)/\(hot)", port: port)
        #expect(first.status == 200 && sameBytes(first.body, expected))
        #expect(server.waitForLog("fill finished"))
        try body(server, port, expected)
    }

    static func request(_ method: String, _ start: Int64, _ fields: [String] = []) -> String {
        "\(method) /clips/\(episode)/\(start) HTTP/1.1\r\nHost: test\r\n" + fields.map { $0 + "\r\n" }.joined() + "\r\n"
    }

    @Test("Request targets are split as the router splits them; any other shape is left to the router")
    func targets() {
        let target = ClipTarget("/clips/685ba776e4f9ec2f0756267a/5000.mp3?duration_ms=20000&exp=1&sig=ab")
        #expect(target?.path == "/clips/685ba776e4f9ec2f0756267a/5000.mp3")
        #expect(target?.episode == "685ba776e4f9ec2f0756267a" && target?.start == "5000.mp3")
        #expect(target?.query == "duration_ms=20000&exp=1&sig=ab")
        let guid = ClipTarget("/clips/urn%3Auuid%3Aabc/0?")
        #expect(guid?.episode == "urn%3Auuid%3Aabc" && guid?.start == "0" && guid?.query == "")
        #expect(ClipTarget("/clips/e/1?a=/b/c")?.query == "a=/b/c", "slashes in the query are the query's")
        // Read as the router reads them (Hummingbird's URI): an absolute-form target by its path,
        // a fragment dropped from the query, a '#' in the path kept (validation then refuses it).
        #expect(ClipTarget("http://host/clips/e/1?q=1")?.path == "/clips/e/1" && ClipTarget("http://host/clips/e/1?q=1")?.query == "q=1")
        #expect(ClipTarget("/clips/e/1?a#b")?.query == "a")
        #expect(ClipTarget("/clips/e/1#x")?.start == "1#x")
        for other in ["/clips/e", "/clips/e/", "/clips//1", "/clips/e/1/", "/clips/e/1/2",
                      "/clip/e/1", "/Clips/e/1", "/clips/e//1", ""] {
            #expect(ClipTarget(other) == nil, "\(other)")
        }
    }

    @Test("Pipelined hits and misses on one connection come back in order, each from the right path")
    func pipelining() throws {
        try Self.withWarmServer("fastpath-pipeline") { server, port, expected in
            let etag = try #require(RawHTTPClient.send(method: "HEAD", path: "/clips/\(Self.episode)/\(Self.hot)", port: port).header("ETag"))
            let coldExpected = try trimmed(ServerTests.sourceKey, startMs: Self.cold)
            let fd = try slowReaderSocket(port: port, receiveBuffer: 1 << 20)
            defer { close(fd) }

            // One write: four hits the fast path can answer, then a miss for the router; every
            // request after the miss must wait for it, so the router answers those too.
            let first: [(String, String)] = [
                ("GET", Self.request("GET", Self.hot)),
                ("HEAD", Self.request("HEAD", Self.hot)),
                ("GET", Self.request("GET", Self.hot, ["If-None-Match: \(etag)"])),
                ("GET", Self.request("GET", Self.hot, ["Range: bytes=100-199"])),
                ("GET", Self.request("GET", Self.cold)),
                ("GET", Self.request("GET", Self.hot, ["Range: bytes=-500"])),
                ("HEAD", Self.request("HEAD", Self.hot)),
            ]
            let fastBefore = try fastPathResponses(server)
            writeAll(fd, first.map(\.1).joined())
            let responses = try readResponses(fd, methods: first.map(\.0))
            #expect(responses.map(\.status) == [200, 200, 304, 206, 200, 206, 200])
            #expect(responses.map { $0.header("X-Clip-Tier") ?? "-" } == ["l1_hit", "l1_hit", "l1_hit", "l1_hit", "fill", "l1_hit", "l1_hit"])
            #expect(sameBytes(responses[0].body, expected))
            #expect(responses[1].body.isEmpty && responses[1].header("Content-Length") == String(expected.count))
            #expect(sameBytes(responses[3].body, Array(expected[100..<200])))
            #expect(sameBytes(responses[4].body, coldExpected), "the miss between the hits is exact")
            #expect(sameBytes(responses[5].body, Array(expected.suffix(500))))
            #expect(try fastPathResponses(server) - fastBefore == 4, "the four hits before the miss, and none after it")

            // Once the router has answered everything, the next hits on the connection are fast again.
            writeAll(fd, Self.request("GET", Self.hot, ["Range: bytes=0-9"]) + Self.request("GET", Self.hot, ["Connection: close"]))
            let rest = try pipelinedResponses(readSlowly(fd), methods: ["GET", "GET"])
            #expect(rest.map(\.status) == [206, 200])
            #expect(sameBytes(rest[0].body, Array(expected[0..<10])) && sameBytes(rest[1].body, expected))
            #expect(try fastPathResponses(server) - fastBefore == 6, "both answered by the fast path; the connection closed after the second")

            // A request pipelined behind a fast answer with `Connection: close` is not answered,
            // and the server closes the connection (its state handler counted that request).
            let late = try RawHTTPClient.connect(port: port)
            defer { close(late) }
            writeAll(late, Self.request("GET", Self.hot, ["Connection: close"]) + Self.request("GET", Self.hot))
            let only = try readResponses(late, methods: ["GET"])
            #expect(only.first.map { sameBytes($0.body, expected) } == true)
            #expect(readSlowly(late).isEmpty, "nothing after the close, then end of stream")
        }
    }

    @Test("A fast-path response carries exactly the route's header fields")
    func sameHeadersAsTheRoute() throws {
        try Self.withWarmServer("fastpath-headers") { server, port, expected in
            let etag = try #require(RawHTTPClient.send(method: "HEAD", path: "/clips/\(Self.episode)/\(Self.hot)", port: port).header("ETag"))
            let shapes: [(String, [String])] = [
                ("GET", []), ("HEAD", []), ("GET", ["Range: bytes=10-20"]), ("GET", ["Range: bytes=0-0,-1"]),
                ("GET", ["If-None-Match: \(etag)"]), ("GET", ["If-Match: \"other\""]), ("GET", ["Range: bytes=99999999-"]),
                ("GET", ["Origin: https://dashboard.example"]),
            ]
            for (index, (method, fields)) in shapes.enumerated() {
                // The fast path and the route, on one server: switched off per server, the two
                // would have different Last-Modified times; the route answers the same request
                // when it arrives behind a miss on the same connection.
                let fd = try slowReaderSocket(port: port, receiveBuffer: 1 << 20)
                defer { close(fd) }
                let fastBefore = try fastPathResponses(server)
                let missStart = Self.cold + Int64(index + 1) * 500   // a clip of its own: a miss
                writeAll(fd, Self.request(method, Self.hot, fields) + Self.request("GET", missStart)
                         + Self.request(method, Self.hot, fields + ["Connection: close"]))
                let three = try pipelinedResponses(readSlowly(fd), methods: [method, "GET", method])
                #expect(try fastPathResponses(server) - fastBefore == 1, "\(method) \(fields): only the first went the fast path")
                let (fast, routed) = (three[0], three[2])
                func comparable(_ response: RawHTTPResponse) -> [String] {
                    response.headers.compactMap { field in
                        let name = field.name.lowercased()
                        if name == "date" || name == "connection" { return nil }
                        // Multipart boundaries are random per response.
                        if name == "content-type", field.value.hasPrefix("multipart/byteranges") { return "content-type: multipart/byteranges" }
                        return "\(name): \(field.value)"
                    }
                }
                #expect(comparable(fast) == comparable(routed), "\(method) \(fields)")
                #expect(fast.status == routed.status && fast.body.count == routed.body.count, "\(method) \(fields)")
                if fast.status == 200 && method == "GET" { #expect(sameBytes(fast.body, expected)) }
            }
        }
    }

    @Test("Signed URLs: valid ones take the fast path; missing, bad or expired signatures get the route's 403")
    func signedURLs() throws {
        let work = try TemporaryDirectory("fastpath-signing")
        defer { work.remove() }
        let environment = EmbeddedServer(work: work).environment.merging(["CLIPPROXY_SIGNING_KEY": "fast-path-test-key"]) { $1 }
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }
        let port = try ServerRangeTableTests.port(of: server.baseURL)
        do {
            let signer = try #require(URLSigner(key: "fast-path-test-key", previousKey: ""))
            let path = "/clips/\(Self.episode)/\(Self.hot)"
            let now = Int64(Date().timeIntervalSince1970)
            let valid = path + "?" + signer.signedQuery(path: path, parameters: [], expiresAt: now + 600)
            let cold = try RawHTTPClient.send(method: "GET", path: valid, port: port)
            #expect(cold.status == 200)
            #expect(server.waitForLog("fill finished"))
            let fastBefore = try fastPathResponses(server)
            let hit = try RawHTTPClient.send(method: "GET", path: valid, port: port)
            #expect(hit.status == 200 && hit.header("X-Clip-Tier") == "l1_hit")
            #expect(try fastPathResponses(server) == fastBefore + 1)
            let expired = path + "?" + signer.signedQuery(path: path, parameters: [], expiresAt: now - 10)
            let tampered = valid.replacingOccurrences(of: "exp=", with: "exp=1")
            for target in [path, expired, tampered] {
                let refused = try RawHTTPClient.send(method: "GET", path: target, port: port)
                #expect(refused.status == 403, "\(target)")
                #expect(refused.header("Content-Type") == "application/json")
            }
            #expect(try fastPathResponses(server) == fastBefore + 1, "refusals come from the route")
        }
    }

    @Test("SIGTERM while a slow client reads a fast-path response: every byte arrives, then the server exits")
    func gracefulShutdown() throws {
        let work = try TemporaryDirectory("fastpath-shutdown")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { _ = server.stop() }
        let expected = try trimmed(ServerTests.sourceKey, startMs: Self.hot)
        let port = try ServerRangeTableTests.port(of: server.baseURL)
        _ = try RawHTTPClient.send(method: "GET", path: "/clips/\(Self.episode)/\(Self.hot)", port: port)
        #expect(server.waitForLog("fill finished"))
        let fastBefore = try fastPathResponses(server)
        let fd = try slowReaderSocket(port: port)
        defer { close(fd) }
        writeAll(fd, Self.request("GET", Self.hot))
        var received = readSlowly(fd, limit: 8192)
        #expect(try fastPathResponses(server) == fastBefore + 1, "answered by the fast path")
        // Most of the clip is still queued in the server: a small receive buffer, a slow reader.
        kill(server.process.processIdentifier, SIGTERM)
        usleep(300_000)
        received += readSlowly(fd, chunk: 16 << 10, pause: 2_000)
        let response = try pipelinedResponses(received, methods: ["GET"])
        #expect(response.first?.status == 200)
        #expect(sameBytes(response.first?.body ?? [], expected), "got \(response.first?.body.count ?? 0) of \(expected.count) bytes")
        server.process.waitUntilExit()
        #expect(server.process.terminationStatus == 0)
    }

    @Test("A busy connection answered by the fast path is not closed as idle; an idle one is")
    func busyConnectionsStayOpen() throws {
        // Idle timeout 2 s: requests every 0.1 s for 3 s on one connection, every one answered by
        // the fast path; the connection-state handler in front of it sees each request.
        try Self.withWarmServer("fastpath-idle", environment: ["CLIPPROXY_HTTP_IDLE_TIMEOUT_S": "2"]) { server, port, expected in
            let fd = try RawHTTPClient.connect(port: port)
            defer { close(fd) }
            let fastBefore = try fastPathResponses(server)
            let rounds = 30
            for round in 0..<rounds {
                writeAll(fd, Self.request("GET", Self.hot, ["Range: bytes=0-9"]))
                let response = try readResponses(fd, methods: ["GET"])
                #expect(response.first?.status == 206, "round \(round)")
                usleep(100_000)
            }
            let fast = try fastPathResponses(server) - fastBefore
            #expect(fast == rounds, "fast-path answers: \(fast) of \(rounds)")
            // Left idle, it is closed after the timeout.
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let start = Date()
            var byte: UInt8 = 0
            #expect(read(fd, &byte, 1) == 0, "end of stream")
            #expect(Date().timeIntervalSince(start) > 1.5 && Date().timeIntervalSince(start) < 4.5, "closed after \(Date().timeIntervalSince(start)) s")
        }
    }
}

@Suite("Unexpected errors")
struct UnexpectedErrorTests {
    struct Internal: Error, CustomStringConvertible {
        var description: String { "open /var/lib/clipproxy/secret/path failed" }
    }

    @Test("An unmapped error answers a bare 500 with a request id; the details stay in the log")
    func bare500() throws {
        let problem = HTTPProblem(Internal())
        #expect(problem.status == .internalServerError && problem.error == "internal_error")
        let id = try #require(problem.requestId)
        #expect(id.count == 16 && id.allSatisfy(\.isHexDigit))
        #expect(!problem.detail.contains("secret") && problem.detail.contains(id))
        let response = problem.response()
        #expect(response.headers[.contentType] == "application/json")
        #expect(HTTPProblem(Internal()).requestId != id, "a new id each time")
    }
}
