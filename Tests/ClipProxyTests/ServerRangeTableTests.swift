import Foundation
import Testing
import TestSupport
@testable import ClipProxy

// Issue 6, acceptance 2: a real `clipproxy serve` (embedded default) and nginx 1.22 serving the
// same clip bytes answer a table of request shapes with the same status, Content-Range,
// Content-Length and body, for a cached clip and for cold ones.
//
// Deliberate differences, all allowed by RFC 9110 (and listed in the printed table):
// - 412 and 416 responses: nginx sends its HTML error page, clipproxy `Content-Length: 0` and no
//   body (RFC 9110 15.5.13/15.5.17 put no requirement on the content of an error response). Their
//   Content-Range (`bytes */N` for 416) must still be the same.
// - Multipart boundaries are random alphanumerics (nginx: a 20-digit counter) of the same length,
//   so Content-Length is the same; the parts are compared one by one (headers and bytes).
// - ETag values differ (clipproxy's is derived from the clip key, nginx's from mtime and size), so
//   every conditional is built per server from that server's own validators.
// - Two shapes where nginx departs from RFC 9110 and clipproxy follows the RFC (see
//   ByteRangeResponse): If-Modified-Since is ignored when If-None-Match is present (RFC 9110
//   13.1.3), and an empty list element in Range is ignored (RFC 9110 5.6.1). Those rows check both
//   servers' documented statuses instead of equality.
// - Accept-Ranges: clipproxy sends it on 206 as well (nginx only on 200); not compared.

/// What a server says about one clip, from which each server's conditional headers are built.
struct ClipValidators {
    let etag: String
    let lastModified: Date
    let length: Int
}

/// One request shape of the table: the header fields it sends (built from the receiving server's
/// validators), the status RFC 9110 asks for, and, for a deliberate difference, nginx's status.
struct ServerRangeShape: Sendable {
    let name: String
    let method: String
    let status: Int
    /// nginx's status where clipproxy deliberately differs (documented above).
    let nginxStatus: Int?
    /// True when a header carries the exact Last-Modified (only predictable for a cold clip
    /// within one second, see `ServerRangeTableTests.coldRequest`).
    let exactDate: Bool
    let fields: @Sendable (ClipValidators) -> [(name: String, value: String)]

    static func get(_ name: String, _ status: Int, nginx: Int? = nil, exactDate: Bool = false,
                    _ fields: @escaping @Sendable (ClipValidators) -> [(String, String)] = { _ in [] }) -> ServerRangeShape {
        ServerRangeShape(name: name, method: "GET", status: status, nginxStatus: nginx, exactDate: exactDate,
                         fields: { v in fields(v).map { (name: $0.0, value: $0.1) } })
    }

    static func head(_ name: String, _ status: Int,
                     _ fields: @escaping @Sendable (ClipValidators) -> [(String, String)] = { _ in [] }) -> ServerRangeShape {
        ServerRangeShape(name: name, method: "HEAD", status: status, nginxStatus: nil, exactDate: false,
                         fields: { v in fields(v).map { (name: $0.0, value: $0.1) } })
    }
}

/// IMF-fixdate (RFC 9110 5.6.7), written here independently of the server's own formatter.
private func imfFormatter() -> DateFormatter {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "GMT")
    formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
    return formatter
}

func imfFixdate(_ date: Date) -> String { imfFormatter().string(from: date) }
func parseImfFixdate(_ text: String) -> Date? { imfFormatter().date(from: text) }

enum ServerRangeTable {
    static let day: TimeInterval = 86_400

    static func lm(_ v: ClipValidators, _ offset: TimeInterval = 0) -> String { imfFixdate(v.lastModified.addingTimeInterval(offset)) }

    static let shapes: [ServerRangeShape] = [
        // Single ranges of every form.
        .get("no Range", 200),
        .get("bytes=0-", 206) { _ in [("Range", "bytes=0-")] },
        .get("first byte 0-0", 206) { _ in [("Range", "bytes=0-0")] },
        .get("Safari's first request: a probe bytes=0-1", 206) { _ in [("Range", "bytes=0-1")] },
        .get("bytes=100-1999", 206) { _ in [("Range", "bytes=100-1999")] },
        .get("open N/2-", 206) { v in [("Range", "bytes=\(v.length / 2)-")] },
        .get("suffix -500", 206) { _ in [("Range", "bytes=-500")] },
        .get("suffix longer than the clip", 206) { v in [("Range", "bytes=-\(v.length + 1000)")] },
        .get("last-pos past the end", 206) { v in [("Range", "bytes=\(v.length - 100)-\(v.length + 5000)")] },
        .get("last byte N-1-", 206) { v in [("Range", "bytes=\(v.length - 1)-")] },
        .get("Chromium's seek bytes=N/3- with If-Range ETag", 206) { v in [("Range", "bytes=\(v.length / 3)-"), ("If-Range", v.etag)] },
        // Several ranges.
        .get("multipart 0-99,1000-1099,-100", 206) { _ in [("Range", "bytes=0-99,1000-1099,-100")] },
        .get("multipart in request order 5000-5099,0-99", 206) { _ in [("Range", "bytes=5000-5099,0-99")] },
        .get("multipart overlapping within the length 0-999,500-1499", 206) { _ in [("Range", "bytes=0-999,500-1499")] },
        .get("overlapping adding up past the length 0-,0-", 200) { _ in [("Range", "bytes=0-,0-")] },
        .get("overlapping halves adding up past the length", 200) { v in [("Range", "bytes=0-\(v.length / 2 + 10),\(v.length / 2)-")] },
        .get("one of two satisfiable (single part)", 206) { v in [("Range", "bytes=0-99,\(v.length + 10)-\(v.length + 20)")] },
        // Unsatisfiable, invalid, ignored.
        .get("first-pos = length N-", 416) { v in [("Range", "bytes=\(v.length)-")] },
        .get("beyond the end", 416) { v in [("Range", "bytes=\(v.length + 100)-\(v.length + 200)")] },
        .get("suffix -0", 416) { _ in [("Range", "bytes=-0")] },
        .get("reversed 9-5", 416) { _ in [("Range", "bytes=9-5")] },
        .get("garbage bytes=abc", 416) { _ in [("Range", "bytes=abc")] },
        .get("unknown unit items=0-5 (ignored)", 200) { _ in [("Range", "items=0-5")] },
        .get("nothing after bytes= (ignored)", 200) { _ in [("Range", "bytes=")] },
        .get("129 ranges, over max_ranges (ignored)", 200) { _ in
            [("Range", "bytes=" + (0..<129).map { "\($0 * 3)-\($0 * 3)" }.joined(separator: ","))]
        },
        // If-Range.
        .get("If-Range own ETag + 100-199", 206) { v in [("Range", "bytes=100-199"), ("If-Range", v.etag)] },
        .get("If-Range other ETag + 100-199", 200) { _ in [("Range", "bytes=100-199"), ("If-Range", "\"other\"")] },
        .get("If-Range weak own ETag + 100-199", 200) { v in [("Range", "bytes=100-199"), ("If-Range", "W/" + v.etag)] },
        .get("If-Range = Last-Modified + 100-199", 206, exactDate: true) { v in [("Range", "bytes=100-199"), ("If-Range", lm(v))] },
        .get("If-Range 1 s after Last-Modified", 200, exactDate: true) { v in [("Range", "bytes=100-199"), ("If-Range", lm(v, 1))] },
        .get("If-Range a day before Last-Modified", 200) { v in [("Range", "bytes=100-199"), ("If-Range", lm(v, -day))] },
        .get("If-Range own ETag + unsatisfiable", 416) { v in [("Range", "bytes=\(v.length)-"), ("If-Range", v.etag)] },
        .get("If-Range own ETag + multipart", 206) { v in [("Range", "bytes=0-9,20-29"), ("If-Range", v.etag)] },
        // If-None-Match and If-Match.
        .get("If-None-Match own ETag", 304) { v in [("If-None-Match", v.etag)] },
        .get("If-None-Match *", 304) { _ in [("If-None-Match", "*")] },
        .get("If-None-Match other", 200) { _ in [("If-None-Match", "\"other\"")] },
        .get("If-None-Match own + Range", 304) { v in [("If-None-Match", v.etag), ("Range", "bytes=100-199")] },
        .get("If-Match own ETag", 200) { v in [("If-Match", v.etag)] },
        .get("If-Match other", 412) { _ in [("If-Match", "\"other\"")] },
        .get("If-Match own + Range", 206) { v in [("If-Match", v.etag), ("Range", "bytes=100-199")] },
        .get("If-Match other + Range", 412) { _ in [("If-Match", "\"other\""), ("Range", "bytes=100-199")] },
        // Dates.
        .get("If-Modified-Since = Last-Modified", 304, exactDate: true) { v in [("If-Modified-Since", lm(v))] },
        .get("If-Modified-Since a day before", 200) { v in [("If-Modified-Since", lm(v, -day))] },
        .get("If-Modified-Since a day after", 304) { v in [("If-Modified-Since", lm(v, day))] },
        .get("If-Modified-Since a day before + Range", 206) { v in [("If-Modified-Since", lm(v, -day)), ("Range", "bytes=100-199")] },
        .get("If-Unmodified-Since a day before", 412) { v in [("If-Unmodified-Since", lm(v, -day))] },
        .get("If-Unmodified-Since = Last-Modified", 200, exactDate: true) { v in [("If-Unmodified-Since", lm(v))] },
        .get("If-Unmodified-Since a day after + Range", 206) { v in [("If-Unmodified-Since", lm(v, day)), ("Range", "bytes=100-199")] },
        // HEAD.
        .head("HEAD", 200),
        .head("HEAD + 100-199", 206) { _ in [("Range", "bytes=100-199")] },
        .head("HEAD + multipart", 206) { _ in [("Range", "bytes=0-99,1000-1099,-100")] },
        .head("HEAD + If-None-Match own", 304) { v in [("If-None-Match", v.etag)] },
        .head("HEAD + unsatisfiable", 416) { v in [("Range", "bytes=\(v.length)-")] },
        .head("HEAD + If-Range other + Range", 200) { _ in [("Range", "bytes=100-199"), ("If-Range", "\"other\"")] },
        // Deliberate differences (RFC 9110 over nginx 1.22).
        .get("If-None-Match own + If-Modified-Since a day before (IMS ignored, RFC 9110 13.1.3)", 304, nginx: 200) { v in
            [("If-None-Match", v.etag), ("If-Modified-Since", lm(v, -day))]
        },
        .get("empty list element 0-1,,5-6 (RFC 9110 5.6.1)", 206, nginx: 416) { _ in [("Range", "bytes=0-1,,5-6")] },
    ]
}

/// One part of a multipart/byteranges body: its header fields and its bytes.
struct ByteRangesPart: Equatable {
    var fields: [String: String] = [:]
    var bytes: [UInt8] = []
}

/// Reads a multipart/byteranges body part by part, each part's length taken from its
/// Content-Range (so bytes that look like a boundary inside the audio cannot confuse it).
func byteRangesParts(_ body: [UInt8], contentType: String?) throws -> [ByteRangesPart] {
    guard let contentType, let marker = contentType.range(of: "boundary=") else {
        throw TestSetupError("not multipart/byteranges: \(contentType ?? "no Content-Type")")
    }
    let dashBoundary = Array("--\(contentType[marker.upperBound...])".utf8)
    let crlf: [UInt8] = [13, 10]
    var cursor = body.startIndex
    func take(_ expected: [UInt8]) -> Bool {
        guard body[cursor...].starts(with: expected) else { return false }
        cursor += expected.count
        return true
    }
    func line() throws -> String {
        guard let end = body[cursor...].firstRange(of: crlf) else { throw TestSetupError("multipart: unterminated line at \(cursor)") }
        defer { cursor = end.upperBound }
        return String(decoding: body[cursor..<end.lowerBound], as: UTF8.self)
    }
    var parts: [ByteRangesPart] = []
    while true {
        guard take(crlf), take(dashBoundary) else { throw TestSetupError("multipart: no boundary at byte \(cursor)") }
        if take(Array("--".utf8)) {
            guard take(crlf), cursor == body.endIndex else { throw TestSetupError("multipart: bytes after the closing boundary") }
            return parts
        }
        guard take(crlf) else { throw TestSetupError("multipart: no CRLF after the boundary") }
        var part = ByteRangesPart()
        while case let header = try line(), !header.isEmpty {
            let pair = header.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2 else { throw TestSetupError("multipart: bad part header \(header)") }
            part.fields[pair[0].lowercased()] = pair[1]
        }
        let numbers = (part.fields["content-range"] ?? "").split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        guard numbers.count == 3, numbers[1] >= numbers[0], cursor + numbers[1] - numbers[0] < body.endIndex else {
            throw TestSetupError("multipart: bad Content-Range in \(part.fields)")
        }
        let count = numbers[1] - numbers[0] + 1
        part.bytes = Array(body[cursor..<(cursor + count)])
        cursor += count
        parts.append(part)
    }
}

@Suite("clipproxy serve against nginx: Range and conditional requests end to end")
struct ServerRangeTableTests {
    static let episode = ServerTests.episode
    static let sourceKey = ServerTests.sourceKey
    static let cachedStart: Int64 = 250
    /// Cold clips: every shape (and every retry) gets a start of its own, so its clip was never
    /// asked for; 600 ms apart lands on different frames and gives different clip keys.
    static func coldStart(_ slot: Int) -> Int64 { 500 + Int64(slot) * 600 }
    static let coldSlots = 70   // up to 41.9 s: still a whole 30 s window of the 72 s episode

    /// One row of the comparison: both responses, and what was found wrong.
    struct Row {
        let shape: ServerRangeShape
        let ours: RawHTTPResponse
        let theirs: RawHTTPResponse
        var failures: [String] = []
        var notes: [String] = []
    }

    /// Compares one shape's responses; returns the row with its failures (empty when equal).
    static func compare(_ shape: ServerRangeShape, ours: RawHTTPResponse, theirs: RawHTTPResponse) -> Row {
        var row = Row(shape: shape, ours: ours, theirs: theirs)
        func check(_ ok: Bool, _ what: @autoclosure () -> String) { if !ok { row.failures.append(what()) } }
        check(ours.status == shape.status, "clipproxy status \(ours.status), RFC 9110 wants \(shape.status)")
        if let nginxStatus = shape.nginxStatus {
            check(theirs.status == nginxStatus, "nginx status \(theirs.status), documented as \(nginxStatus)")
            row.notes.append("deliberate: nginx \(nginxStatus), clipproxy follows RFC 9110")
            return row
        }
        check(ours.status == theirs.status, "status: clipproxy \(ours.status), nginx \(theirs.status)")
        check(ours.header("Content-Range") == theirs.header("Content-Range"),
              "Content-Range: clipproxy \(ours.header("Content-Range") ?? "-"), nginx \(theirs.header("Content-Range") ?? "-")")
        switch ours.status {
        case 412, 416:
            // Error content is free (RFC 9110 15.5): nginx's HTML page against our empty body.
            check(ours.header("Content-Length") == "0" && ours.body.isEmpty, "error response with a body")
            row.notes.append("deliberate: empty body, nginx \(theirs.header("Content-Length") ?? "?") bytes of HTML")
        case 304:
            check(ours.header("Content-Length") == theirs.header("Content-Length"),
                  "304 Content-Length: clipproxy \(ours.header("Content-Length") ?? "-"), nginx \(theirs.header("Content-Length") ?? "-")")
            check(ours.header("ETag") != nil && ours.header("Last-Modified") != nil, "304 without validators")
        default:
            check(ours.header("Content-Length") == theirs.header("Content-Length"),
                  "Content-Length: clipproxy \(ours.header("Content-Length") ?? "-"), nginx \(theirs.header("Content-Length") ?? "-")")
            let multipart = theirs.header("Content-Type")?.hasPrefix("multipart/byteranges") == true
            check(multipart == (ours.header("Content-Type")?.hasPrefix("multipart/byteranges") == true),
                  "Content-Type: clipproxy \(ours.header("Content-Type") ?? "-"), nginx \(theirs.header("Content-Type") ?? "-")")
            if !multipart {
                check(ours.header("Content-Type") == theirs.header("Content-Type"), "Content-Type differs")
                check(sameBytes(ours.body, theirs.body), "body: clipproxy \(ours.body.count) bytes, nginx \(theirs.body.count), not equal")
            } else if shape.method == "GET" {
                do {
                    let a = try byteRangesParts(ours.body, contentType: ours.header("Content-Type"))
                    let b = try byteRangesParts(theirs.body, contentType: theirs.header("Content-Type"))
                    check(a.count == b.count && a.count > 1, "multipart: \(a.count) parts, nginx \(b.count)")
                    check(a == b, "multipart parts differ (headers or bytes)")
                    row.notes.append("\(a.count) parts equal, boundaries differ")
                } catch {
                    row.failures.append("multipart: \(error)")
                }
            }
        }
        return row
    }

    static func tableLine(_ row: Row) -> String {
        let ours = row.ours, theirs = row.theirs
        let verdict = row.failures.isEmpty ? "same" : "DIFFERENT: " + row.failures.joined(separator: "; ")
        return "| \(row.shape.method) \(row.shape.name) | \(theirs.status) | \(ours.status) | \(ours.header("Content-Range") ?? "") "
            + "| \(ours.header("Content-Length") ?? "") | \(theirs.header("Content-Length") ?? "") | \(verdict)"
            + (row.notes.isEmpty ? "" : " (\(row.notes.joined(separator: "; ")))") + " |"
    }

    static func port(of baseURL: String) throws -> Int {
        guard let text = baseURL.split(separator: ":").last, let port = Int(text) else { throw TestSetupError("no port in \(baseURL)") }
        return port
    }

    /// nginx's validators for a file it serves.
    static func validators(nginx: NginxServer, file: String) throws -> ClipValidators {
        let head = try RawHTTPClient.send(method: "HEAD", path: "/\(file)", port: nginx.port)
        guard head.status == 200, let etag = head.header("ETag"), let lm = head.header("Last-Modified").flatMap(parseImfFixdate),
              let length = head.header("Content-Length").flatMap({ Int($0) }) else {
            throw TestSetupError("nginx HEAD /\(file): \(head.status) \(head.headers)")
        }
        return ClipValidators(etag: etag, lastModified: lm, length: length)
    }

    static func writeServed(_ bytes: [UInt8], to root: URL, file: String, modified: Date) throws {
        let url = root.appendingPathComponent(file)
        try Data(bytes).write(to: url)
        try FileManager.default.setAttributes([.modificationDate: modified], ofItemAtPath: url.path)
    }

    static func report(_ title: String, _ rows: [Row]) {
        let same = rows.filter { $0.failures.isEmpty }.count
        print("\n\(title): \(same) of \(rows.count) shapes as nginx (deliberate RFC-allowed differences in parentheses)")
        print("| shape | nginx | clipproxy | Content-Range | Content-Length (clipproxy) | Content-Length (nginx) | verdict |")
        for row in rows { print(tableLine(row)) }
    }

    /// Runs `body` with a `clipproxy serve` of its own (embedded default, fresh cache and clip
    /// directory) and its port; stops the server and removes its directories afterwards.
    static func withServer(_ label: String, environment: [String: String] = [:], _ body: (ClipProxyProcess, Int) throws -> Void) throws {
        let work = try TemporaryDirectory(label)
        defer { work.remove() }
        let server = try ClipProxyProcess(environment: EmbeddedServer(work: work).environment.merging(environment) { $1 })
        defer { server.stop() }
        try body(server, try port(of: server.baseURL))
    }

    /// nginx as the oracle: RFC 9110's If-Modified-Since rule and clipproxy's range limit.
    static func startNginx(serving root: URL) throws -> NginxServer {
        try NginxServer.start(serving: root, httpDirectives: [
            "if_modified_since before;", "max_ranges \(ByteRangeResponse.defaultMaxRanges);",
        ])
    }

    /// Which part of clipproxy answers a stored clip.
    enum Answerer: String, CaseIterable, CustomTestStringConvertible {
        /// The stored-clip send path (`StoredClipFastPath`, sendfile).
        case fast
        /// The router, reading the stored file (`http.fast_path: false`).
        case route
        var testDescription: String { rawValue }
        var environment: [String: String] { ["CLIPPROXY_HTTP_FAST_PATH": String(self == .fast)] }
    }

    /// Run twice: answered by each part that can answer a stored clip. Each row checks which one
    /// answered, through the fast path's counter.
    @Test("A cached clip: every shape answers as nginx serving the same bytes", arguments: Answerer.allCases)
    func cachedClip(answerer: Answerer) throws {
        try Self.withServer("range-table-cached", environment: answerer.environment) { server, port in
            let path = "/clips/\(Self.episode)/\(Self.cachedStart)"
            let expected = try trimmed(Self.sourceKey, startMs: Self.cachedStart)
            let first = try RawHTTPClient.send(method: "GET", path: path, port: port)
            #expect(first.status == 200 && first.header("X-Clip-Tier") == "fill")
            #expect(sameBytes(first.body, expected), "the cold fill gives `clipproxy trim`'s bytes")
            #expect(server.waitForLog("fill finished"))
            let rows = try Self.table(path: path, served: expected, port: port) { shape, validators in
                let fastBefore = try fastPathResponses(server)
                let ours = try RawHTTPClient.send(method: shape.method, path: path, headers: shape.fields(validators), port: port)
                let answeredBy: Answerer = try fastPathResponses(server) > fastBefore ? .fast : .route
                return (ours, answeredBy == answerer ? [] : ["answered by \(answeredBy), not \(answerer)"])
            }
            Self.report("Cached clip (\(expected.count) bytes, answered by: \(answerer))", rows)
            for row in rows where !row.failures.isEmpty {
                Issue.record(Comment(rawValue: "\(row.shape.method) \(row.shape.name): \(row.failures.joined(separator: "; "))"))
            }
            #expect(ServerRangeTable.shapes.count >= 25)
        }
    }

    /// Every shape sent to clipproxy (by `send`, which may add failures of its own) and to nginx
    /// serving `served` (what clipproxy served at `path`, now stored) with clipproxy's
    /// Last-Modified; each server's conditionals are built from its own validators.
    static func table(path: String, served: [UInt8], port: Int,
                      send: (ServerRangeShape, ClipValidators) throws -> (RawHTTPResponse, [String])) throws -> [Row] {
        let head = try RawHTTPClient.send(method: "HEAD", path: path, port: port)
        #expect(head.header("X-Clip-Tier") == "l1_hit")
        let etag = try #require(head.header("ETag"))
        let lastModified = try #require(head.header("Last-Modified").flatMap(parseImfFixdate))
        let ourValidators = ClipValidators(etag: etag, lastModified: lastModified, length: served.count)

        let root = try TemporaryDirectory("range-table-nginx")
        defer { root.remove() }
        try writeServed(served, to: root.url, file: "clip.mp3", modified: lastModified)
        let nginx = try startNginx(serving: root.url)
        defer { nginx.stop() }
        let theirValidators = try validators(nginx: nginx, file: "clip.mp3")
        #expect(theirValidators.lastModified == lastModified && theirValidators.length == served.count)

        return try ServerRangeTable.shapes.map { shape in
            let (ours, failures) = try send(shape, ourValidators)
            let theirs = try RawHTTPClient.send(method: shape.method, path: "/clip.mp3", headers: shape.fields(theirValidators), port: nginx.port)
            var row = compare(shape, ours: ours, theirs: theirs)
            if ours.header("X-Clip-Tier") != "l1_hit" { row.failures.append("served from \(ours.header("X-Clip-Tier") ?? "-"), not L1") }
            row.failures += failures
            return row
        }
    }

    /// The representations issue 22 added: a snapped clip, and a download (tag in front).
    enum Representation: String, CaseIterable, CustomTestStringConvertible {
        case snapped = "snap=pause", download = "snap=pause&download=1"
        var testDescription: String { rawValue }
    }

    /// On generated speech (`SnapToPausesTests.Library`), at a window the search moves.
    @Test("A snapped clip and a download: every shape answers as nginx serving the bytes clipproxy served", arguments: Representation.allCases)
    func newRepresentations(representation: Representation) throws {
        let library = try SnapToPausesTests.Library()
        defer { library.work.remove() }
        let server = try ClipProxyProcess(environment: library.environment)
        defer { server.stop() }
        let port = try Self.port(of: server.baseURL)
        let path = "/clips/\(SnapToPausesTests.speechId)/31234?duration_ms=10000&\(representation.rawValue)"
        let first = try RawHTTPClient.send(method: "GET", path: path, port: port)
        #expect(first.status == 200 && first.header("X-Clip-Tier") == "fill")
        let window = try #require(SnapToPausesTests.window(first.header("Content-Location")))
        #expect(window != (31_234, 10_000), "the window moved")
        #expect(server.waitForLog("fill finished"))
        let rows = try Self.table(path: path, served: first.body, port: port) { shape, validators in
            (try RawHTTPClient.send(method: shape.method, path: path, headers: shape.fields(validators), port: port), [])
        }
        Self.report("\(representation) clip (\(first.body.count) bytes, window \(window))", rows)
        for row in rows where !row.failures.isEmpty {
            Issue.record(Comment(rawValue: "\(row.shape.method) \(row.shape.name): \(row.failures.joined(separator: "; "))"))
        }
        #expect(rows.count >= 25)
    }

    /// Waits for the start of the next second and returns it: a cold clip's Last-Modified is the
    /// second its response is made, so a request sent early in a second can name it exactly.
    static func startOfNextSecond() -> Date {
        let now = Date().timeIntervalSince1970
        let next = floor(now) + 1
        usleep(useconds_t((next - now + 0.01) * 1_000_000))
        return Date(timeIntervalSince1970: next)
    }

    /// A clip is one immutable representation (one strong ETag), so its Last-Modified must not
    /// move: a client or CDN that revalidates with the Last-Modified of the cold response must get
    /// 304 (If-Modified-Since) and 206 (If-Range) from the stored clip, as nginx would. A fill that
    /// crosses a second boundary shows whether the cold response and the stored record agree, so
    /// every cold request here is sent a few milliseconds before a second turns.
    @Test("A clip's Last-Modified is the same in its cold response and once it is stored")
    func lastModifiedStable() throws {
        try Self.withServer("range-table-lm") { server, port in
            var lines: [String] = []
            for (i, lead) in [0.015, 0.012, 0.010, 0.008, 0.006, 0.004].enumerated() {
                let path = "/clips/\(Self.episode)/\(Self.coldStart(i) + 50)"
                let now = Date().timeIntervalSince1970
                usleep(useconds_t((floor(now) + 1 - lead - now) * 1_000_000))
                let cold = try RawHTTPClient.send(method: "GET", path: path, port: port)
                #expect(cold.status == 200 && cold.header("X-Clip-Tier") == "fill")
                #expect(server.waitForLog("fill finished", count: i + 1))
                let coldLM = try #require(cold.header("Last-Modified"))
                let stored = try RawHTTPClient.send(method: "HEAD", path: path, port: port)
                let revalidated = try RawHTTPClient.send(method: "GET", path: path, headers: [("If-Modified-Since", coldLM)], port: port)
                let resumed = try RawHTTPClient.send(method: "GET", path: path, headers: [("Range", "bytes=100-199"), ("If-Range", coldLM)],
                                                     port: port)
                lines.append("cold \(coldLM) → stored \(stored.header("Last-Modified") ?? "-") (\(stored.header("X-Clip-Tier") ?? "-")); "
                             + "If-Modified-Since cold LM → \(revalidated.status), If-Range cold LM → \(resumed.status)")
                #expect(stored.header("Last-Modified") == coldLM, "Last-Modified moved from \(coldLM) to \(stored.header("Last-Modified") ?? "-")")
                #expect(revalidated.status == 304, "If-Modified-Since with the cold response's Last-Modified")
                #expect(resumed.status == 206, "If-Range with the cold response's Last-Modified")
            }
            print("Last-Modified, cold fill vs stored clip (requests sent 4-15 ms before a second turns):\n  "
                  + lines.joined(separator: "\n  "))
        }
    }

    /// Safari's first request for media is a probe, `Range: bytes=0-1`: on a cold clip that is a
    /// part read from the source, and the whole clip is cut by the next request. Both are the
    /// same representation, so the probe's Last-Modified must hold for the stored clip too.
    @Test("A cold clip first asked for in part (Safari's probe) keeps the probe's Last-Modified")
    func lastModifiedAfterAProbe() throws {
        try Self.withServer("range-table-probe") { server, port in
            let path = "/clips/\(Self.episode)/\(Self.coldStart(Self.coldSlots - 1) + 25)"
            _ = Self.startOfNextSecond()
            let probe = try RawHTTPClient.send(method: "GET", path: path, headers: [("Range", "bytes=0-1")], port: port)
            #expect(probe.status == 206 && probe.header("X-Clip-Tier") == "part")
            let probeLM = try #require(probe.header("Last-Modified"))
            usleep(1_200_000)  // the whole clip is cut in a later second
            let whole = try RawHTTPClient.send(method: "GET", path: path, port: port)
            #expect(whole.status == 200 && whole.header("X-Clip-Tier") == "fill")
            #expect(whole.header("Last-Modified") == probeLM, "cut at \(whole.header("Last-Modified") ?? "-"), probed at \(probeLM)")
            #expect(server.waitForLog("fill finished"))
            let revalidated = try RawHTTPClient.send(method: "GET", path: path, headers: [("If-Modified-Since", probeLM)], port: port)
            let resumed = try RawHTTPClient.send(method: "GET", path: path, headers: [("Range", "bytes=100-199"), ("If-Range", probeLM)], port: port)
            #expect(revalidated.status == 304 && resumed.status == 206)
        }
    }

    /// The same holds when the local store is lost and the clip comes back from the second tier
    /// (the clip directory here, the S3 clip bucket in production, and so also on another node):
    /// it is still the same representation with the same strong ETag, so a cache revalidating
    /// with the Last-Modified it got before must get 304, and If-Range with it must get 206.
    @Test("A clip's Last-Modified is the same when it is served again from the second tier")
    func lastModifiedSurvivesSecondTier() throws {
        let work = try TemporaryDirectory("range-table-lm-l2")
        defer { work.remove() }
        let config = EmbeddedServer(work: work)
        let path = "/clips/\(Self.episode)/\(Self.coldStart(20) + 70)"
        var server = try config.start()
        let cold = try RawHTTPClient.send(method: "GET", path: path, port: try Self.port(of: server.baseURL))
        #expect(cold.status == 200 && cold.header("X-Clip-Tier") == "fill")
        #expect(server.waitForLog("second tier copy finished"))
        server.stop()
        try FileManager.default.removeItem(atPath: work.path + "/cache")
        usleep(1_100_000)   // a Last-Modified taken anew would now differ
        server = try config.start()
        defer { server.stop() }
        let port = try Self.port(of: server.baseURL)
        let coldLM = try #require(cold.header("Last-Modified"))
        let again = try RawHTTPClient.send(method: "GET", path: path, port: port)
        #expect(again.header("X-Clip-Tier") == "l2_hit" && sameBytes(again.body, cold.body))
        #expect(again.header("ETag") == cold.header("ETag"))
        #expect(server.waitForLog("local copy from the second tier finished"))
        let stored = try RawHTTPClient.send(method: "HEAD", path: path, port: port)
        let revalidated = try RawHTTPClient.send(method: "GET", path: path, headers: [("If-Modified-Since", coldLM)], port: port)
        let resumed = try RawHTTPClient.send(method: "GET", path: path, headers: [("Range", "bytes=100-199"), ("If-Range", coldLM)], port: port)
        print("Last-Modified after the local store was lost: filled \(coldLM), from the second tier \(again.header("Last-Modified") ?? "-"), "
              + "stored again \(stored.header("Last-Modified") ?? "-"); If-Modified-Since → \(revalidated.status), If-Range → \(resumed.status)")
        #expect(again.header("Last-Modified") == coldLM, "served from the second tier")
        #expect(stored.header("Last-Modified") == coldLM, "copied back into the local store")
        #expect(revalidated.status == 304, "If-Modified-Since with the first Last-Modified")
        #expect(resumed.status == 206, "If-Range with the first Last-Modified")
    }

    @Test("Cold clips: every shape is the first request for its clip and answers as nginx")
    func coldClips() throws {
        // The probe server tells each cold clip's ETag and length (the clip key, so the same on
        // every node); the cold server has its own cache and clip directory and sees each clip once.
        try Self.withServer("range-table-probe") { _, probePort in
            try Self.withServer("range-table-cold") { cold, coldPort in
                try Self.compareCold(probePort: probePort, cold: cold, coldPort: coldPort)
            }
        }
    }

    static func compareCold(probePort: Int, cold: ClipProxyProcess, coldPort: Int) throws {
        let root = try TemporaryDirectory("range-table-nginx-cold")
        defer { root.remove() }
        let nginxModified = Date(timeIntervalSince1970: floor(Date().timeIntervalSince1970) - 3600)
        var etags: [Int64: String] = [:], lengths: [Int64: Int] = [:]
        for slot in 0..<coldSlots {
            let start = coldStart(slot)
            let bytes = try trimmed(sourceKey, startMs: start)
            try writeServed(bytes, to: root.url, file: "clip-\(start).mp3", modified: nginxModified)
            let head = try RawHTTPClient.send(method: "HEAD", path: "/clips/\(episode)/\(start)", port: probePort)
            etags[start] = try #require(head.header("ETag"))
            lengths[start] = bytes.count
            #expect(head.header("Content-Length") == String(bytes.count), "probe length of \(start)")
        }
        #expect(Set(etags.values).count == coldSlots, "every cold start is a clip of its own")
        let nginx = try startNginx(serving: root.url)
        defer { nginx.stop() }

        var slot = 0, retries = 0, fills = 0
        var rows: [Row] = []
        for shape in ServerRangeTable.shapes {
            var attempt = 0
            while true {
                guard slot < coldSlots else { throw TestSetupError("out of cold clips after \(retries) retries") }
                let start = coldStart(slot)
                slot += 1
                let length = try #require(lengths[start]), etag = try #require(etags[start])
                let theirValidators = try validators(nginx: nginx, file: "clip-\(start).mp3")
                // A cold clip's Last-Modified is the moment of its response; for exact-date shapes
                // send early in a fresh second and check afterwards that the guess held.
                let sentAt = shape.exactDate ? startOfNextSecond() : Date(timeIntervalSince1970: floor(Date().timeIntervalSince1970))
                let ourValidators = ClipValidators(etag: etag, lastModified: sentAt, length: length)
                let ours = try RawHTTPClient.send(method: shape.method, path: "/clips/\(episode)/\(start)",
                                                  headers: shape.fields(ourValidators), port: coldPort)
                let ourDate = ours.header("Last-Modified").flatMap(parseImfFixdate)
                if shape.exactDate && ourDate != sentAt && attempt < 2 {
                    attempt += 1
                    retries += 1
                    continue   // the second turned over between request and response: another clip
                }
                let theirs = try RawHTTPClient.send(method: shape.method, path: "/clip-\(start).mp3",
                                                    headers: shape.fields(theirValidators), port: nginx.port)
                var row = compare(shape, ours: ours, theirs: theirs)
                // Cold: a fill, or (a GET with Range whose answer is not the whole clip: a part, 416,
                // 304, 412) a part read from the source alone, or no read at all.
                let tier = ours.header("X-Clip-Tier")
                let hasRange = shape.fields(ourValidators).contains { $0.name.lowercased() == "range" }
                let whole = ours.status == 200 || (ours.status == 206 && Int(ours.header("Content-Length") ?? "") == length)
                let multipart = ours.header("Content-Type")?.hasPrefix("multipart/") == true
                let strictPart = shape.method == "GET" && hasRange && !whole && !multipart
                if tier == "fill" { fills += 1 }
                if tier != (strictPart ? "part" : "fill") {
                    row.failures.append("not cold: \(tier ?? "-")")
                }
                if let ourETag = ours.header("ETag"), ourETag != etag { row.failures.append("ETag \(ourETag), the probe server's \(etag)") }
                if shape.exactDate && ourDate != sentAt {
                    row.failures.append("Last-Modified \(ours.header("Last-Modified") ?? "-") is not the second the request was sent")
                }
                rows.append(row)
                break
            }
        }
        report("Cold clips (each shape the first request of its clip; \(retries) exact-date retries)", rows)
        for row in rows where !row.failures.isEmpty {
            Issue.record(Comment(rawValue: "cold \(row.shape.method) \(row.shape.name): \(row.failures.joined(separator: "; "))"))
        }
        #expect(cold.waitForLog("fill finished", count: fills, timeout: 30), "every cold fill finished")
        #expect(fills < rows.count, "strict Range requests on cold clips are answered from the bytes behind them")
    }
}
