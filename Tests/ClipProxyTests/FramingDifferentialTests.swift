import Foundation
import Testing
import TestSupport

/// Issue 21, acceptance 1: the same raw byte sequences, sent to clipproxy with the stored-clip
/// shortcuts on (`http.fast_path: true`, `http.fast_path_wire` at its default) and off (every
/// request through llhttp and the router), must get the same bytes back. Both servers run on
/// copies of one cache directory in which the clips are already stored, and each has just
/// answered them once, so the shortcuts engage on the hits. Only the binary, its configuration
/// and HTTP are used: the server's internals are not.
@Suite("Framing: stored-clip shortcuts on and off answer the same bytes")
struct FramingDifferentialTests {
    static let episode = ServerTests.episode
    /// The clips every case asks for: a short one (most cases) and a whole 30 s one.
    static let clip = "/clips/\(episode)/2000?duration_ms=4000"
    static let longClip = "/clips/\(episode)/2000"

    /// One case: what is written (each element its own write) and a pause between the writes.
    struct Case: Sendable {
        let name: String
        let writes: [[UInt8]]
        var pause: TimeInterval = 0.05
    }

    /// A request head: request line, `Host`, the given fields, blank line.
    static func request(_ method: String = "GET", _ target: String = clip, _ fields: [String] = [], version: String = "HTTP/1.1") -> String {
        "\(method) \(target) \(version)\r\nHost: clips.test\r\n" + fields.map { $0 + "\r\n" }.joined() + "\r\n"
    }

    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
    /// A case written in one piece.
    static func whole(_ name: String, _ text: String) -> Case { Case(name: name, writes: [bytes(text)]) }
    /// A case whose first request carries `fields`, followed (same write) by a plain request.
    static func thenPlain(_ name: String, _ fields: [String], method: String = "GET", version: String = "HTTP/1.1") -> Case {
        whole(name, request(method, clip, fields, version: version) + request())
    }

    static let cases: [Case] = {
        let plain = request()
        var cases: [Case] = [
            // Pipelining.
            whole("pipelined GET, HEAD, GET", plain + request("HEAD") + plain),
            whole("pipelined: 10 GETs (more answers than may be in flight at once)", String(repeating: plain, count: 10)),
            whole("pipelined: hit, /healthz, hit, unknown path, hit",
                  plain + request("GET", "/healthz") + plain + request("GET", "/nowhere") + plain),
            whole("pipelined: Range, suffix Range, If-None-Match *, multi-range, unsatisfiable Range, If-Range mismatch",
                  request("GET", clip, ["Range: bytes=0-99"]) + request("GET", clip, ["Range: bytes=-500"])
                  + request("GET", clip, ["If-None-Match: *"]) + request("GET", clip, ["Range: bytes=0-9,20-29"])
                  + request("GET", clip, ["Range: bytes=999999-"]) + request("GET", clip, ["Range: bytes=0-9", "If-Range: \"nope\""])),
            whole("pipelined: the 30 s clip twice, then HEAD", request("GET", longClip) + request("GET", longClip) + request("HEAD", longClip)),
            whole("pipelined: a miss-shaped bad request between hits (bad start)", plain + request("GET", "/clips/\(episode)/abc") + plain),
            whole("pipelined: POST to a clip between hits", plain + request("POST", clip, ["Content-Length: 0"]) + plain),
            whole("pipelined: OPTIONS preflight between hits",
                  plain + request("OPTIONS", clip, ["Origin: https://dash.test", "Access-Control-Request-Method: GET",
                                                     "Access-Control-Request-Headers: range"]) + plain),

            // Connection and Proxy-Connection, each followed by a plain request in the same write.
            thenPlain("Connection: close", ["Connection: close"]),
            thenPlain("Connection: Close", ["Connection: Close"]),
            thenPlain("Connection: CLOSE", ["Connection: CLOSE"]),
            thenPlain("Connection:close (no space)", ["Connection:close"]),
            thenPlain("Connection: close with trailing whitespace", ["Connection: \tclose \t"]),
            thenPlain("Connection: keep-alive", ["Connection: keep-alive"]),
            thenPlain("Connection: Keep-Alive", ["Connection: Keep-Alive"]),
            thenPlain("Connection: keep-alive, close", ["Connection: keep-alive, close"]),
            thenPlain("Connection: close, keep-alive", ["Connection: close, keep-alive"]),
            thenPlain("Connection: close,close", ["Connection: close,close"]),
            thenPlain("Connection: upgrade", ["Connection: upgrade"]),
            thenPlain("Connection: Upgrade, close", ["Connection: Upgrade, close"]),
            thenPlain("Connection: te, foo", ["Connection: te, foo"]),
            thenPlain("Connection: (empty)", ["Connection:"]),
            thenPlain("two Connection fields: keep-alive, then close", ["Connection: keep-alive", "Connection: close"]),
            thenPlain("two Connection fields: close, then keep-alive", ["Connection: close", "Connection: keep-alive"]),
            thenPlain("connection: close (lower-case name)", ["connection: close"]),
            thenPlain("Proxy-Connection: close", ["Proxy-Connection: close"]),
            thenPlain("Proxy-Connection: Close", ["Proxy-Connection: Close"]),
            thenPlain("Proxy-Connection: keep-alive", ["Proxy-Connection: keep-alive"]),
            thenPlain("Proxy-Connection: close beside Connection: keep-alive", ["Connection: keep-alive", "Proxy-Connection: close"]),
            thenPlain("Connection: close on HEAD", ["Connection: close"], method: "HEAD"),
            thenPlain("Connection: close on a Range request", ["Range: bytes=10-19", "Connection: close"]),
            thenPlain("Keep-Alive: timeout=5 with Connection: Keep-Alive", ["Connection: Keep-Alive", "Keep-Alive: timeout=5"]),

            // Bodies on GET, then another request.
            whole("GET with Content-Length: 5 and its body", request("GET", clip, ["Content-Length: 5"]) + "hello" + plain),
            thenPlain("GET with Content-Length: 0", ["Content-Length: 0"]),
            whole("GET with a chunked body", request("GET", clip, ["Transfer-Encoding: chunked"]) + "5\r\nhello\r\n0\r\n\r\n" + plain),
            whole("GET with a chunked body, an extension and a trailer",
                  request("GET", clip, ["Transfer-Encoding: chunked"]) + "5;x=y\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n" + plain),
            whole("GET with Content-Length and Transfer-Encoding: chunked",
                  request("GET", clip, ["Content-Length: 4", "Transfer-Encoding: chunked"]) + "5\r\nhello\r\n0\r\n\r\n" + plain),
            whole("GET with two different Content-Lengths", request("GET", clip, ["Content-Length: 5", "Content-Length: 6"]) + "hello!" + plain),
            whole("GET with Transfer-Encoding: gzip, chunked",
                  request("GET", clip, ["Transfer-Encoding: gzip, chunked"]) + "5\r\nhello\r\n0\r\n\r\n" + plain),
            whole("GET with a bad chunk size", request("GET", clip, ["Transfer-Encoding: chunked"]) + "zz\r\nhello\r\n0\r\n\r\n" + plain),
            whole("HEAD with Content-Length: 3 and its body", request("HEAD", clip, ["Content-Length: 3"]) + "abc" + plain),

            // Field syntax.
            thenPlain("obs-fold in an unrelated field", ["X-Folded: a", " b"]),
            thenPlain("obs-fold in Connection", ["Connection: keep-alive", " close"]),
            thenPlain("obs-fold in Range", ["Range: bytes=0-", "\t99"]),
            whole("bare LF line endings", "GET \(clip) HTTP/1.1\nHost: clips.test\n\n" + plain),
            whole("bare LF after one field", "GET \(clip) HTTP/1.1\r\nHost: clips.test\nX-A: b\r\n\r\n" + plain),
            whole("bare LF ending the head", "GET \(clip) HTTP/1.1\r\nHost: clips.test\r\n\n" + plain),
            thenPlain("bare CR inside a field value", ["X-A: a\rb"]),
            thenPlain("bare CR ending a field", ["X-A: a\r"]),
            thenPlain("NUL inside a field value", ["X-A: a\u{0}b"]),
            thenPlain("NUL inside a field name", ["X-\u{0}A: b"]),
            whole("NUL inside the target", request("GET", "/clips/\(episode)/20\u{0}00") + plain),
            thenPlain("control byte 0x01 inside a field value", ["X-A: a\u{1}b"]),
            thenPlain("space before the colon", ["Range : bytes=0-9"]),
            thenPlain("a field line without a colon", ["NoColonHere"]),
            thenPlain("an empty field name", [": value"]),
            whole("CRLF before the request line", "\r\n" + plain + plain),
            thenPlain("two Host fields", ["Host: other.test"]),
            whole("HTTP/1.1 without Host", "GET \(clip) HTTP/1.1\r\n\r\n" + plain),
            whole("lower-case method", request("get") + plain),
            whole("tab between method and target", "GET\t\(clip) HTTP/1.1\r\nHost: clips.test\r\n\r\n" + plain),
            whole("two spaces between method and target", "GET  \(clip) HTTP/1.1\r\nHost: clips.test\r\n\r\n" + plain),

            // Request targets.
            whole("absolute-form target, same host", request("GET", "http://clips.test\(clip)") + plain),
            whole("absolute-form target, another host", request("GET", "http://elsewhere.test:8080\(clip)") + plain),
            whole("absolute-form https target", request("GET", "https://clips.test\(clip)") + plain),
            whole("asterisk-form GET *", request("GET", "*") + plain),
            whole("authority-form CONNECT", request("CONNECT", "clips.test:443") + plain),
            whole("target with a fragment", request("GET", clip + "#frag") + plain),
            whole("target with a dot segment", request("GET", "/clips/x/../\(episode)/2000?duration_ms=4000") + plain),
            whole("target with a percent-encoded start", request("GET", "/clips/\(episode)/%32000?duration_ms=4000") + plain),

            // HTTP versions.
            thenPlain("HTTP/1.0 without keep-alive", [], version: "HTTP/1.0"),
            thenPlain("HTTP/1.0 with Connection: keep-alive", ["Connection: keep-alive"], version: "HTTP/1.0"),
            thenPlain("HTTP/1.0 HEAD with Connection: keep-alive", ["Connection: keep-alive"], method: "HEAD", version: "HTTP/1.0"),
            thenPlain("HTTP/1.0 Range with Connection: Keep-Alive", ["Range: bytes=0-9", "Connection: Keep-Alive"], version: "HTTP/1.0"),
            whole("no version (HTTP/0.9 shape)", "GET \(clip)\r\n\r\n" + plain),
            thenPlain("HTTP/2.0 in the request line", [], version: "HTTP/2.0"),
            thenPlain("HTTP/1.2 in the request line", [], version: "HTTP/1.2"),
            thenPlain("http/1.1 in lower case", [], version: "http/1.1"),

            // Expect and Upgrade.
            thenPlain("Expect: 100-continue without a body", ["Expect: 100-continue"]),
            whole("Expect: 100-continue with Content-Length: 5, body sent at once",
                  request("GET", clip, ["Expect: 100-continue", "Content-Length: 5"]) + "hello" + plain),
            thenPlain("Expect: something-else", ["Expect: something-else"]),
            thenPlain("Upgrade: websocket with Connection: Upgrade",
                      ["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]),
            thenPlain("Upgrade: h2c with HTTP2-Settings", ["Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"]),
            thenPlain("Upgrade without Connection: Upgrade", ["Upgrade: websocket"]),
            whole("HTTP/2 connection preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + plain),

            // Oversized parts.
            thenPlain("one field of 20 000 bytes (over http.max_header_bytes)", ["X-Big: " + String(repeating: "a", count: 20_000)]),
            whole("a target of 5 000 bytes (over http.max_uri_bytes)", request("GET", clip + "&pad=" + String(repeating: "p", count: 5_000)) + plain),
            thenPlain("80 000 bytes of fields (over the parser's own limit)",
                      (0..<40).map { "X-Pad-\($0): " + String(repeating: "b", count: 2_000) }),
            thenPlain("200 small fields", (0..<200).map { "X-F\($0): v" }),
        ]
        // Requests just under, at and just over 8 192 bytes (the longest one the wire path reads).
        for total in [8_191, 8_192, 8_193] {
            let bare = request("GET", clip, ["X-Pad: "])
            cases.append(whole("a request of \(total) bytes", request("GET", clip, ["X-Pad: " + String(repeating: "c", count: total - bare.utf8.count)]) + plain))
        }
        // Requests split across TCP writes.
        let split = Array(plain.utf8)
        let closing = Array(request("GET", clip, ["Connection: close"]).utf8)
        cases += [
            Case(name: "split: the request line in three writes", writes: [Array(split[..<3]), Array(split[3..<20]), Array(split[20...])]),
            Case(name: "split: between CR and LF of the blank line", writes: [Array(split.dropLast(1)), Array(split.suffix(1))]),
            Case(name: "split: inside a field name", writes: [Array(split[..<(split.count - 10)]), Array(split.suffix(10))]),
            Case(name: "split: one request and half of the next, then the rest",
                 writes: [split + Array(split[..<25]), Array(split[25...]) + split]),
            Case(name: "split: a Connection: close request in two writes, then a plain one",
                 writes: [Array(closing[..<40]), Array(closing[40...]) + split]),
            Case(name: "split: a chunked GET body across writes",
                 writes: [bytes(request("GET", clip, ["Transfer-Encoding: chunked"]) + "5\r\nhe"), bytes("llo\r\n0\r\n\r\n" + plain)]),
            Case(name: "split: a Range request byte by byte", writes: Array(request("GET", clip, ["Range: bytes=5-14"]).utf8).map { [$0] }, pause: 0.005),
            Case(name: "split: three plain requests, one write each", writes: [split, split, split]),
            Case(name: "split: obs-fold arriving in a later write",
                 writes: [bytes("GET \(clip) HTTP/1.1\r\nHost: clips.test\r\nX-A: a\r\n"), bytes(" b\r\n\r\n" + plain)]),
        ]
        return cases
    }()

    @Test("Raw request sequences get identical bytes back with http.fast_path on and off")
    func differential() throws {
        let work = try TemporaryDirectory("framing-differential")
        defer { work.remove() }
        // Store the clips once, then give each server its own copy of the cache: the same stored
        // bytes and validators (Last-Modified is the time of the cut) for both.
        let seedDirectory = work.url.appendingPathComponent("seed")
        let seed = try ClipProxyProcess(environment: Self.environment(work, in: seedDirectory))
        defer { seed.stop() }
        for target in [Self.clip, Self.longClip] {
            let first = try RawHTTPClient.send(method: "GET", path: target, port: ServerRangeTableTests.port(of: seed.baseURL))
            try #require(first.status == 200, "seeding \(target): \(first.status)")
        }
        try #require(seed.waitForLog("fill finished", count: 2, timeout: 15), "the seed server did not store both clips")
        #expect(seed.stop() == 0)
        let fastOn = try Self.start(work, copyOf: seedDirectory, to: "on", fastPath: true)
        defer { fastOn.stop() }
        let fastOff = try Self.start(work, copyOf: seedDirectory, to: "off", fastPath: false)
        defer { fastOff.stop() }
        let ports = try [fastOn, fastOff].map { try ServerRangeTableTests.port(of: $0.baseURL) }
        let shortcutsBefore = try metricsText(fastOn)

        var firstDiffering: [Case] = []
        for start in stride(from: 0, to: Self.cases.count, by: 16) {
            let batch = Array(Self.cases[start..<min(start + 16, Self.cases.count)])
            for (c, (on, off)) in zip(batch, try Self.run(batch, ports: ports, idle: 1.5)) where !on.matches(off) {
                firstDiffering.append(c)
            }
        }
        // A slow answer (a loaded machine) can miss the idle bound on one side only: a difference
        // counts once it shows again, all of them sent once more with a bound long enough for any answer.
        var differing: [String] = [], settledOnRetry: [String] = []
        for (c, (on, off)) in zip(firstDiffering, firstDiffering.isEmpty ? [] : try Self.run(firstDiffering, ports: ports, idle: 5)) {
            guard !on.matches(off) else {
                settledOnRetry.append(c.name)
                continue
            }
            let phrasesOnly = on.end == off.end
                && Transcript.normalise(on.bytes, reasonPhrases: true) == Transcript.normalise(off.bytes, reasonPhrases: true)
            differing.append(c.name + (phrasesOnly ? " (reason phrases only)" : ""))
            Issue.record(Comment(rawValue: Self.report(c, on: on, off: off)))
        }
        if !settledOnRetry.isEmpty { print("framing differential: answered alike on a second run with a longer idle bound: \(settledOnRetry)") }
        print("framing differential: \(Self.cases.count) cases, \(differing.count) answered differently\(differing.isEmpty ? "" : ":\n  " + differing.joined(separator: "\n  "))")

        // The comparison means something only if the shortcuts answered some of the cases (checked
        // while the server still counts them in this metric).
        let metric = "clipproxy_fast_path_responses_total"
        if let before = prometheusValue(shortcutsBefore, metric), let after = prometheusValue(try metricsText(fastOn), metric) {
            #expect(after > before, "the fast path answered none of the cases (\(metric) stayed at \(after))")
        }
        #expect(prometheusValue(try metricsText(fastOff), metric) ?? 0 == 0, "the server with http.fast_path: false used the fast path")
    }

    /// Each case sent to both servers at once (one connection each), after both answered the
    /// clips once more through their routers: the shortcuts answer clips prepared within the last
    /// minute, whatever time the cases before took. Transcripts in case order, (on, off).
    static func run(_ cases: [Case], ports: [Int], idle: TimeInterval) throws -> [(Transcript, Transcript)] {
        for port in ports {
            for target in [clip, longClip] {
                let warm = try RawHTTPClient.send(method: "GET", path: target, port: port)
                try #require(warm.status == 200 && warm.header("X-Clip-Tier") == "l1_hit",
                             "warming \(target) on port \(port): \(warm.status) \(warm.header("X-Clip-Tier") ?? "-")")
            }
        }
        let jobs: [@Sendable () -> Transcript] = cases.flatMap { c in
            ports.map { port in { @Sendable in Transcript(c, port: port, idle: idle) } }
        }
        let transcripts = onThreads(jobs)
        return cases.indices.map { (transcripts[2 * $0], transcripts[2 * $0 + 1]) }
    }

    /// The embedded default with its cache and clip directory in `directory`.
    static func environment(_ work: TemporaryDirectory, in directory: URL) -> [String: String] {
        var environment = EmbeddedServer(work: work).environment
        environment["CLIPPROXY_CACHE_DIR"] = directory.path + "/cache"
        environment["CLIPPROXY_SECOND_TIER_DIR"] = directory.path + "/l2"
        return environment
    }

    /// A server on a copy of `seed` (cache and clip directory) made under `work`.
    static func start(_ work: TemporaryDirectory, copyOf seed: URL, to name: String, fastPath: Bool) throws -> ClipProxyProcess {
        let directory = work.url.appendingPathComponent(name)
        let copy = try BoundedProcess.run("/bin/cp", ["-a", seed.path, directory.path], limit: 30)
        guard copy.status == 0 else { throw TestSetupError("cp -a \(seed.path): \(copy.stderr)") }
        var environment = environment(work, in: directory)
        environment["CLIPPROXY_HTTP_FAST_PATH"] = fastPath ? "true" : "false"
        return try ClipProxyProcess(environment: environment)
    }

    /// A case's full answer from one server.
    struct Transcript: Sendable {
        let bytes: [UInt8]
        let end: String
        /// `bytes` with what must differ between two servers replaced: every `Date` field's value
        /// (each server stamps its own clock), and each multipart/byteranges boundary, in its
        /// Content-Type and in the body (each response draws a random one; RFC 9110 14.6 asks
        /// only that it not occur in the parts).
        let normalised: [UInt8]

        init(_ c: Case, port: Int, idle: TimeInterval) {
            do {
                let (bytes, end) = try RawHTTPClient.converse(c.writes, port: port, pause: c.pause, idle: idle, limit: 20)
                self.bytes = bytes
                self.end = end.rawValue
            } catch {
                bytes = []
                end = "no connection: \(error)"
            }
            normalised = Self.normalise(bytes)
        }

        func matches(_ other: Transcript) -> Bool { normalised == other.normalised && end == other.end }

        static func normalise(_ raw: [UInt8], reasonPhrases: Bool = false) -> [UInt8] {
            var out = replacingFieldValues(raw, after: "\r\nDate: ", with: "<date>")
            let boundaryMarker = Array("multipart/byteranges; boundary=".utf8)
            var from = out.startIndex
            while let found = out[from...].firstRange(of: boundaryMarker) {
                let end = out[found.upperBound...].prefix(100).firstIndex(of: 13) ?? found.upperBound
                let boundary = Array(out[found.upperBound..<end])
                guard !boundary.isEmpty else { from = found.upperBound; continue }
                out = Array(out[..<found.upperBound]) + replacing(Array(out[found.upperBound...]), boundary, with: Array("<boundary>".utf8))
                from = found.upperBound
            }
            // Only for the summary's diagnosis, never for the verdict.
            if reasonPhrases { out = replacingFieldValues(out, after: "HTTP/1.1 ", keeping: 3, with: " <reason>") }
            return out
        }

        /// `raw` with the rest of each line that starts with `marker` (up to 64 bytes, to its CR),
        /// but for its first `keeping` bytes, replaced by `placeholder`.
        static func replacingFieldValues(_ raw: [UInt8], after marker: String, keeping: Int = 0, with placeholder: String) -> [UInt8] {
            let marker = Array(marker.utf8)
            var out: [UInt8] = []
            out.reserveCapacity(raw.count)
            var i = 0
            while i < raw.count {
                if raw[i] == marker[0], raw[i...].starts(with: marker),
                   let end = raw[(i + marker.count)...].prefix(64).firstIndex(of: 13), end >= i + marker.count + keeping {
                    out += raw[i..<(i + marker.count + keeping)] + Array(placeholder.utf8)
                    i = end
                } else {
                    out.append(raw[i])
                    i += 1
                }
            }
            return out
        }

        static func replacing(_ raw: [UInt8], _ token: [UInt8], with replacement: [UInt8]) -> [UInt8] {
            var out: [UInt8] = []
            var rest = raw[...]
            while let found = rest.firstRange(of: token) {
                out += rest[..<found.lowerBound] + replacement
                rest = rest[found.upperBound...]
            }
            return out + rest
        }

        /// The responses as lines for a reader: each head as sent (Date normalised), each body as
        /// its length and a digest.
        var lines: [String] {
            var lines: [String] = []
            let raw = normalised
            var cursor = 0, responses = 0
            let blank: [UInt8] = [13, 10, 13, 10]
            while cursor < raw.count {
                guard raw[cursor...].starts(with: Array("HTTP/".utf8)), let headEnd = raw[cursor...].firstRange(of: blank)?.upperBound else {
                    lines.append("[\(raw.count - cursor) bytes that do not start a response: \(Self.escaped(raw[cursor...].prefix(80)))]")
                    break
                }
                let head = String(decoding: raw[cursor..<(headEnd - 4)], as: UTF8.self).components(separatedBy: "\r\n")
                // Numbered, so that the diff lines up responses by their place in the stream.
                responses += 1
                lines.append("── response \(responses) ──")
                lines += head
                let fields = head.dropFirst().map { $0.lowercased() }
                let length = fields.first { $0.hasPrefix("content-length:") }.flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) }
                var bodyEnd = headEnd
                if raw[headEnd...].starts(with: Array("HTTP/1.".utf8)) || headEnd == raw.count {
                    bodyEnd = headEnd  // HEAD, 1xx, 304: no body
                } else if fields.contains(where: { $0.hasPrefix("transfer-encoding:") && $0.contains("chunked") }) {
                    bodyEnd = raw[headEnd...].firstRange(of: Array("\r\n0\r\n\r\n".utf8))?.upperBound ?? raw.count
                } else {
                    bodyEnd = min(raw.count, headEnd + (length ?? raw.count))
                }
                lines.append("[body: \(bodyEnd - headEnd) bytes, digest \(Self.digest(raw[headEnd..<bodyEnd]))]")
                cursor = bodyEnd
            }
            lines.append("[connection \(end) after \(bytes.count) bytes]")
            return lines
        }

        static func digest(_ bytes: ArraySlice<UInt8>) -> String {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            return String(hash, radix: 16)
        }

        static func escaped<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
            bytes.map { byte in
                switch byte {
                case 13: "\\r"
                case 10: "\\n"
                case 9: "\\t"
                case 32...126: String(UnicodeScalar(byte))
                default: String(format: "\\x%02x", byte)
                }
            }.joined()
        }
    }

    /// The case, what was sent, and the two answers line by line: `-` only with the fast path on,
    /// `+` only with it off, `=` in both.
    static func report(_ c: Case, on: Transcript, off: Transcript) -> String {
        let sent = c.writes.map { Transcript.escaped($0.count > 300 ? Array($0.prefix(300)) + Array("…".utf8) : $0) }
        var text = "case \"\(c.name)\" answered differently (- http.fast_path: true, + http.fast_path: false)\n"
        text += "sent (\(c.writes.count) write\(c.writes.count == 1 ? "" : "s")): " + sent.joined(separator: " ‖ ") + "\n"
        let a = on.lines, b = off.lines
        let changes = b.difference(from: a)
        var removed = Set<Int>(), inserted = Set<Int>()
        for change in changes {
            switch change {
            case .remove(let offset, _, _): removed.insert(offset)
            case .insert(let offset, _, _): inserted.insert(offset)
            }
        }
        // Walk both line lists in step: common lines once, removals from `a`, insertions from `b`.
        var i = 0, j = 0
        while i < a.count || j < b.count {
            if i < a.count, removed.contains(i) {
                text += "- \(a[i])\n"
                i += 1
            } else if j < b.count, inserted.contains(j) {
                text += "+ \(b[j])\n"
                j += 1
            } else {
                if i < a.count { text += "= \(a[i])\n" }
                i += 1
                j += 1
            }
        }
        return text
    }
}
