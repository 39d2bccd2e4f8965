import Foundation
import Testing
import TestSupport
@testable import ClipProxy

/// One request shape: what is sent, and the status both servers must answer with. `nginxStatus`
/// is set only where we deliberately follow RFC 9110 and nginx 1.22 does not (documented on
/// `ByteRangeResponse`); the test then checks that nginx still does what the documentation says.
/// In header values `$ETAG` stands for the served file's own entity tag, read from nginx.
struct RangeShape: Sendable, CustomTestStringConvertible {
    let name: String
    let method: String
    let headers: [(name: String, value: String)]
    let status: Int
    let nginxStatus: Int?
    let file: String

    var testDescription: String { name }
    var isDeviation: Bool { nginxStatus != nil }

    func headers(etag: String) -> [(name: String, value: String)] {
        headers.map { ($0.name, $0.value.replacingOccurrences(of: "$ETAG", with: etag)) }
    }
}

/// The served file and the date nginx reports as its Last-Modified (the file's mtime).
enum RangeFixture {
    static let clip = "clip.mp3"
    static let empty = "empty.mp3"
    static let length = 51_234
    static let lastModified = Date(timeIntervalSince1970: 1_709_296_496)   // Fri, 01 Mar 2024 12:34:56 GMT
    static let lm = "Fri, 01 Mar 2024 12:34:56 GMT"

    /// Deterministic noise (xorshift), so every byte range has different content.
    static let bytes: [UInt8] = {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        return (0..<length).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state >> 24)
        }
    }()

    /// 1-byte ranges 0-0, 2-2, 4-4, ...
    static func oneByteRanges(_ count: Int) -> String {
        "bytes=" + (0..<count).map { "\($0 * 2)-\($0 * 2)" }.joined(separator: ",")
    }

    static func get(_ name: String, _ headers: [(String, String)], _ status: Int, nginx: Int? = nil,
                    file: String = clip) -> RangeShape {
        RangeShape(name: name, method: "GET", headers: headers.map { (name: $0.0, value: $0.1) }, status: status,
                   nginxStatus: nginx, file: file)
    }

    static func head(_ name: String, _ headers: [(String, String)], _ status: Int, file: String = clip) -> RangeShape {
        RangeShape(name: name, method: "HEAD", headers: headers.map { (name: $0.0, value: $0.1) }, status: status,
                   nginxStatus: nil, file: file)
    }

    static let shapes: [RangeShape] = [
        // Single ranges of every form (length 51234, last byte 51233).
        get("no Range", [], 200),
        get("bytes=0- (whole file as a range)", [("Range", "bytes=0-")], 206),
        get("bytes=5-9", [("Range", "bytes=5-9")], 206),
        get("suffix bytes=-5", [("Range", "bytes=-5")], 206),
        get("bytes=15-100", [("Range", "bytes=15-100")], 206),
        get("last-pos past the end 51000-60000", [("Range", "bytes=51000-60000")], 206),
        get("suffix longer than the file -100000", [("Range", "bytes=-100000")], 206),
        get("first byte 0-0", [("Range", "bytes=0-0")], 206),
        get("last byte 51233-", [("Range", "bytes=51233-")], 206),
        get("unit case BYTES=0-4", [("Range", "BYTES=0-4")], 206),
        // Unsatisfiable and invalid.
        get("suffix -0", [("Range", "bytes=-0")], 416),
        get("first-pos = length 51234-", [("Range", "bytes=51234-")], 416),
        get("beyond the end 60000-70000", [("Range", "bytes=60000-70000")], 416),
        get("reversed 9-5", [("Range", "bytes=9-5")], 416),
        get("garbage bytes=abc", [("Range", "bytes=abc")], 416),
        get("no dash bytes=5", [("Range", "bytes=5")], 416),
        get("double dash bytes=--5", [("Range", "bytes=--5")], 416),
        get("space inside suffix bytes=- 5", [("Range", "bytes=- 5")], 416),
        get("missing comma 0-4 5-9", [("Range", "bytes=0-4 5-9")], 416),
        get("only a comma bytes=,", [("Range", "bytes=,")], 416),
        get("all unsatisfiable 60000-,70000-", [("Range", "bytes=60000-,70000-")], 416),
        get("garbage after good ranges 0-,0-,abc", [("Range", "bytes=0-,0-,abc")], 416),
        // Ignored: the whole file.
        get("unknown unit items=0-5", [("Range", "items=0-5")], 200),
        get("nothing after bytes=", [("Range", "bytes=")], 200),
        get("space before = (bytes =0-4)", [("Range", "bytes =0-4")], 200),
        get("overlap adding up past the length 0-,0-", [("Range", "bytes=0-,0-")], 200),
        get("0-30000,20000- add up past the length", [("Range", "bytes=0-30000,20000-")], 200),
        get("129 ranges (max_ranges 128)", [("Range", oneByteRanges(129))], 200),
        // Several ranges.
        get("multipart 0-4,10-14,-3", [("Range", "bytes=0-4,10-14,-3")], 206),
        get("multipart keeps request order 10-14,0-4", [("Range", "bytes=10-14,0-4")], 206),
        get("multipart overlapping within length 0-9,5-14", [("Range", "bytes=0-9,5-14")], 206),
        get("multipart with spaces", [("Range", "bytes= 0 - 4 , 10 - 14 ")], 206),
        get("128 ranges", [("Range", oneByteRanges(128))], 206),
        get("one of two satisfiable 0-4,60000-70000 (single part)", [("Range", "bytes=0-4,60000-70000")], 206),
        get("reversed dropped 9-5,0-1 (single part)", [("Range", "bytes=9-5,0-1")], 206),
        // Deliberate differences (RFC 9110 list and number syntax).
        get("empty list element 0-1,,5-6", [("Range", "bytes=0-1,,5-6")], 206, nginx: 416),
        get("trailing comma 0-4,", [("Range", "bytes=0-4,")], 206, nginx: 416),
        get("HTAB as OWS 0-4,<TAB>10-14", [("Range", "bytes=0-4,\t10-14")], 206, nginx: 416),
        get("last-pos beyond Int64 0-99999999999999999999", [("Range", "bytes=0-99999999999999999999")], 206, nginx: 416),
        // If-Range.
        get("If-Range own ETag + 5-9", [("Range", "bytes=5-9"), ("If-Range", "$ETAG")], 206),
        get("If-Range other ETag + 5-9", [("Range", "bytes=5-9"), ("If-Range", "\"other\"")], 200),
        get("If-Range weak own ETag + 5-9", [("Range", "bytes=5-9"), ("If-Range", "W/$ETAG")], 200),
        get("If-Range = Last-Modified + 5-9", [("Range", "bytes=5-9"), ("If-Range", lm)], 206),
        get("If-Range 1 s after Last-Modified", [("Range", "bytes=5-9"), ("If-Range", "Fri, 01 Mar 2024 12:34:57 GMT")], 200),
        get("If-Range garbage", [("Range", "bytes=5-9"), ("If-Range", "yesterday")], 200),
        get("If-Range own ETag + unsatisfiable", [("Range", "bytes=60000-"), ("If-Range", "$ETAG")], 416),
        get("If-Range other ETag + unsatisfiable", [("Range", "bytes=60000-"), ("If-Range", "\"other\"")], 200),
        get("If-Range own ETag + multipart", [("Range", "bytes=0-4,10-14"), ("If-Range", "$ETAG")], 206),
        // If-None-Match (weak comparison).
        get("If-None-Match own ETag", [("If-None-Match", "$ETAG")], 304),
        get("If-None-Match other", [("If-None-Match", "\"other\"")], 200),
        get("If-None-Match *", [("If-None-Match", "*")], 304),
        get("If-None-Match weak own ETag", [("If-None-Match", "W/$ETAG")], 304),
        get("If-None-Match list with own ETag", [("If-None-Match", "\"a\", $ETAG")], 304),
        get("If-None-Match match + Range", [("If-None-Match", "$ETAG"), ("Range", "bytes=5-9")], 304),
        get("If-None-Match other + Range", [("If-None-Match", "\"other\""), ("Range", "bytes=5-9")], 206),
        // If-Match (strong comparison).
        get("If-Match own ETag", [("If-Match", "$ETAG")], 200),
        get("If-Match other", [("If-Match", "\"other\"")], 412),
        get("If-Match *", [("If-Match", "*")], 200),
        get("If-Match weak own ETag", [("If-Match", "W/$ETAG")], 412),
        get("If-Match list with own ETag", [("If-Match", "\"a\" , $ETAG")], 200),
        get("If-Match own + Range", [("If-Match", "$ETAG"), ("Range", "bytes=5-9")], 206),
        get("If-Match other + Range", [("If-Match", "\"other\""), ("Range", "bytes=5-9")], 412),
        get("If-Match other + If-None-Match own", [("If-Match", "\"other\""), ("If-None-Match", "$ETAG")], 412),
        // If-Modified-Since (nginx with `if_modified_since before`).
        get("If-Modified-Since = Last-Modified", [("If-Modified-Since", lm)], 304),
        get("If-Modified-Since a day before", [("If-Modified-Since", "Thu, 29 Feb 2024 12:34:56 GMT")], 200),
        get("If-Modified-Since a day after", [("If-Modified-Since", "Sat, 02 Mar 2024 12:34:56 GMT")], 304),
        get("If-Modified-Since RFC 850 form", [("If-Modified-Since", "Friday, 01-Mar-24 12:34:56 GMT")], 304),
        get("If-Modified-Since asctime form", [("If-Modified-Since", "Fri Mar  1 12:34:56 2024")], 304),
        get("If-Modified-Since garbage", [("If-Modified-Since", "not a date")], 200),
        get("If-Modified-Since = LM + Range", [("If-Modified-Since", lm), ("Range", "bytes=5-9")], 304),
        get("If-Modified-Since before + Range", [("If-Modified-Since", "Thu, 29 Feb 2024 12:34:56 GMT"), ("Range", "bytes=5-9")], 206),
        get("If-None-Match other + If-Modified-Since = LM", [("If-None-Match", "\"other\""), ("If-Modified-Since", lm)], 200),
        get("If-None-Match own + If-Modified-Since before (IMS ignored)",
            [("If-None-Match", "$ETAG"), ("If-Modified-Since", "Thu, 29 Feb 2024 12:34:56 GMT")], 304, nginx: 200),
        // If-Unmodified-Since.
        get("If-Unmodified-Since a day before", [("If-Unmodified-Since", "Thu, 29 Feb 2024 12:34:56 GMT")], 412),
        get("If-Unmodified-Since = Last-Modified", [("If-Unmodified-Since", lm)], 200),
        get("If-Unmodified-Since after + Range", [("If-Unmodified-Since", "Sat, 02 Mar 2024 12:34:56 GMT"), ("Range", "bytes=5-9")], 206),
        get("If-Unmodified-Since garbage (ignored)", [("If-Unmodified-Since", "garbage")], 200, nginx: 412),
        get("If-Match own + If-Unmodified-Since before (IUS ignored)",
            [("If-Match", "$ETAG"), ("If-Unmodified-Since", "Thu, 29 Feb 2024 12:34:56 GMT")], 200, nginx: 412),
        // HEAD.
        head("HEAD", [], 200),
        head("HEAD + 5-9", [("Range", "bytes=5-9")], 206),
        head("HEAD + multipart", [("Range", "bytes=0-4,10-14,-3")], 206),
        head("HEAD + If-None-Match own", [("If-None-Match", "$ETAG")], 304),
        head("HEAD + -0", [("Range", "bytes=-0")], 416),
        head("HEAD + If-Range other + Range", [("Range", "bytes=5-9"), ("If-Range", "\"other\"")], 200),
        head("HEAD + If-Match other", [("If-Match", "\"other\"")], 412),
        // A zero-length file.
        get("empty file", [], 200, file: empty),
        get("empty file bytes=0-", [("Range", "bytes=0-")], 200, file: empty),
        get("empty file bytes=-5", [("Range", "bytes=-5")], 200, file: empty),
        get("empty file bytes=5-", [("Range", "bytes=5-")], 416, file: empty),
        get("empty file If-None-Match own", [("If-None-Match", "$ETAG")], 304, file: empty),
    ]
}

/// The body a ByteRangeResponse describes, made from the representation's bytes.
private func render(_ response: ByteRangeResponse, _ content: [UInt8]) -> [UInt8] {
    var body: [UInt8] = []
    for part in response.parts {
        switch part {
        case .literal(let bytes): body += bytes
        case .bytes(let range): body += content[Int(range.lowerBound)..<Int(range.upperBound)]
        }
    }
    return body
}

/// One part of a multipart/byteranges body.
private struct BodyPart {
    let contentType: String?
    let contentRange: String?
    let bytes: [UInt8]
}

/// Parses a multipart/byteranges body strictly by nginx's framing: every part is CRLF `--boundary`
/// CRLF, header lines, CRLF, then exactly as many bytes as its Content-Range says; then CRLF
/// `--boundary--` CRLF ends the body.
private func multipartParts(_ body: [UInt8], contentType: String) throws -> [BodyPart] {
    let prefix = "multipart/byteranges; boundary="
    guard contentType.hasPrefix(prefix) else { throw TestSetupError("not multipart: \(contentType)") }
    let boundary = String(contentType.dropFirst(prefix.count))
    let delimiter = Array("\r\n--\(boundary)".utf8)
    var i = 0
    var parts: [BodyPart] = []
    func expect(_ bytes: [UInt8], _ what: String) throws {
        guard body[i...].starts(with: bytes) else { throw TestSetupError("multipart: expected \(what) at byte \(i)") }
        i += bytes.count
    }
    while true {
        try expect(delimiter, "a boundary")
        if body[i...].starts(with: Array("--\r\n".utf8)) {
            guard i + 4 == body.count else { throw TestSetupError("multipart: \(body.count - i - 4) bytes after the closing boundary") }
            return parts
        }
        try expect([13, 10], "CRLF after the boundary")
        var fields: [String: String] = [:]
        while !body[i...].starts(with: [13, 10]) {
            guard let end = body[i...].indices.first(where: { body[$0...].starts(with: [13, 10]) }) else {
                throw TestSetupError("multipart: unterminated part header")
            }
            let line = String(decoding: body[i..<end], as: UTF8.self)
            guard let colon = line.firstIndex(of: ":") else { throw TestSetupError("multipart: bad header \(line)") }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            i = end + 2
        }
        i += 2
        guard let range = fields["content-range"], let dash = range.firstIndex(of: "-"), let slash = range.firstIndex(of: "/"),
              let first = Int(range[range.index(range.startIndex, offsetBy: 6)..<dash]),
              let last = Int(range[range.index(after: dash)..<slash]), last >= first, i + last - first + 1 <= body.count else {
            throw TestSetupError("multipart: bad or missing Content-Range in \(fields)")
        }
        parts.append(BodyPart(contentType: fields["content-type"], contentRange: range, bytes: Array(body[i...(i + last - first)])))
        i += last - first + 1
    }
}

@Suite("Range and conditional requests: ByteRangeResponse against nginx 1.22")
struct RangeSemanticsTests {
    static let maxRangesDirective = "max_ranges \(ByteRangeResponse.defaultMaxRanges);"

    /// Writes the fixture files with a fixed mtime and serves them with nginx.
    func withServedFixture(_ body: (NginxServer, TemporaryDirectory) async throws -> Void) async throws {
        let root = try TemporaryDirectory("range-oracle")
        defer { root.remove() }
        for (name, content) in [(RangeFixture.clip, RangeFixture.bytes), (RangeFixture.empty, [])] {
            let url = root.url.appendingPathComponent(name)
            try Data(content).write(to: url)
            try FileManager.default.setAttributes([.modificationDate: RangeFixture.lastModified], ofItemAtPath: url.path)
        }
        // `if_modified_since before` is RFC 9110's rule (nginx's default is an exact match only).
        try await withNginx(serving: root.url, httpDirectives: ["if_modified_since before;", Self.maxRangesDirective]) {
            try await body($0, root)
        }
    }

    @Test("Every request shape: same status, Content-Range, Content-Length and bytes as nginx")
    func matchesNginx() async throws {
        try await withServedFixture { nginx, _ in
            // The representations, with nginx's own validators so conditionals compare like with like.
            var representations: [String: ByteRangeResponse.Representation] = [:]
            var contents: [String: [UInt8]] = [:]
            for (file, content) in [(RangeFixture.clip, RangeFixture.bytes), (RangeFixture.empty, [UInt8]())] {
                let head = try RawHTTPClient.send(method: "HEAD", path: "/\(file)", port: nginx.port)
                let etag = try #require(head.header("ETag"))
                let lastModified = try #require(head.header("Last-Modified"))
                #expect(lastModified == RangeFixture.lm)
                let date = try #require(ByteRangeResponse.HTTPDate.parse(lastModified))
                #expect(date == RangeFixture.lastModified)
                #expect(head.header("Content-Length") == String(content.count))
                representations[file] = .init(length: Int64(content.count), etag: etag, lastModified: date, contentType: "audio/mpeg")
                contents[file] = content
            }

            var table: [String] = []
            for shape in RangeFixture.shapes {
                let representation = try #require(representations[shape.file])
                let content = try #require(contents[shape.file])
                let headers = shape.headers(etag: representation.etag)
                let theirs = try RawHTTPClient.send(method: shape.method, path: "/\(shape.file)", headers: headers, port: nginx.port)
                // Multipart: use nginx's boundary so the bodies must be identical byte for byte.
                let theirBoundary = theirs.header("Content-Type")
                    .flatMap { $0.hasPrefix("multipart/byteranges; boundary=") ? String($0.dropFirst(31)) : nil }
                let request = ByteRangeResponse.RequestConditions(method: shape.method, headers: headers)
                let ours = ByteRangeResponse.decide(request, for: representation, boundary: theirBoundary)
                let ourBody = render(ours, content)
                table.append("| \(shape.name) | \(theirs.status) | \(ours.status) | \(ours.header("Content-Range") ?? "") | \(ours.header("Content-Length") ?? "") |")

                let row = Comment(rawValue: "\(shape.name): nginx \(theirs.status) \(theirs.headers), ours \(ours.status) \(ours.headers)")
                #expect(ours.status == shape.status, row)
                #expect(theirs.status == (shape.nginxStatus ?? shape.status), row)
                checkInvariants(ours, request: request, representation: representation, row)
                if shape.isDeviation { continue }

                #expect(ours.header("Content-Range") == theirs.header("Content-Range"), row)
                switch ours.status {
                case 412, 416:
                    // nginx sends its HTML error page; we send no body.
                    #expect(ours.header("Content-Length") == "0" && ourBody.isEmpty, row)
                    #expect(theirs.header("Content-Type") == "text/html", row)
                default:
                    #expect(ours.header("Content-Length") == theirs.header("Content-Length"), row)
                    #expect(sameBytes(ourBody, theirs.body), row)
                }
                if [200, 206, 304].contains(ours.status) {
                    #expect(ours.header("ETag") == theirs.header("ETag"), row)
                    #expect(ours.header("Last-Modified") == theirs.header("Last-Modified"), row)
                }
                if [200, 206].contains(ours.status) {
                    #expect(ours.header("Content-Type") == theirs.header("Content-Type"), row)
                    #expect(ours.header("Accept-Ranges") == "bytes", row)   // nginx only sends it with 200
                    if ours.status == 200 { #expect(theirs.header("Accept-Ranges") == "bytes", row) }
                }
                if let theirBoundary {
                    let contentType = try #require(ours.header("Content-Type"))
                    if shape.method == "GET" {
                        do {
                            let ourParts = try multipartParts(ourBody, contentType: contentType)
                            let theirParts = try multipartParts(theirs.body, contentType: contentType)
                            #expect(ourParts.count == theirParts.count && ourParts.count > 1, row)
                            for (a, b) in zip(ourParts, theirParts) {
                                #expect(a.contentType == b.contentType && a.contentRange == b.contentRange, row)
                                #expect(sameBytes(a.bytes, b.bytes), row)
                            }
                        } catch {
                            Issue.record(error, row)   // and go on with the next shape
                        }
                    }
                    // Our own random boundary is as long as nginx's: the same Content-Length.
                    let random = ByteRangeResponse.decide(request, for: representation)
                    #expect(random.header("Content-Length") == theirs.header("Content-Length"), row)
                    #expect(random.header("Content-Type") != contentType && !theirBoundary.isEmpty, row)
                }
            }
            if ProcessInfo.processInfo.environment["RANGE_SEMANTICS_TABLE"] != nil {
                print((["| shape | nginx | ours | Content-Range | Content-Length |"] + table).joined(separator: "\n"))
            }
            #expect(RangeFixture.shapes.count >= 25)
        }
    }

    /// What must hold for any response, whatever the request.
    func checkInvariants(_ response: ByteRangeResponse, request: ByteRangeResponse.RequestConditions,
                         representation: ByteRangeResponse.Representation, _ row: Comment) {
        let length = representation.length
        for case .bytes(let range) in response.parts {
            #expect(range.lowerBound >= 0 && range.upperBound <= length && !range.isEmpty, row)
        }
        switch response.status {
        case 200, 206:
            if request.method == "HEAD" {
                #expect(response.parts.isEmpty, row)
                var get = request
                get.method = "GET"
                let boundary = response.header("Content-Type")?.components(separatedBy: "boundary=").dropFirst().first
                let full = ByteRangeResponse.decide(get, for: representation, boundary: boundary)
                #expect(full.status == response.status && full.headers.elementsEqual(response.headers, by: { $0.name == $1.name && $0.value == $1.value }), row)
            } else {
                #expect(response.header("Content-Length") == String(response.bodyLength), row)
            }
            #expect(response.header("ETag") == representation.etag && response.header("Accept-Ranges") == "bytes", row)
            if response.status == 206, response.header("Content-Range") == nil {
                // Multipart: literal framing around each range, ending with the closing boundary.
                #expect(response.header("Content-Type")?.hasPrefix("multipart/byteranges; boundary=") == true, row)
                if request.method == "GET" {
                    for (index, part) in response.parts.enumerated() {
                        if case .literal = part { #expect(index % 2 == 0, row) } else { #expect(index % 2 == 1, row) }
                    }
                    #expect(response.parts.count % 2 == 1 && response.parts.count >= 5, row)
                }
            }
        case 304:
            #expect(response.parts.isEmpty && response.header("Content-Length") == nil, row)
            #expect(response.header("ETag") == representation.etag && response.header("Last-Modified") != nil, row)
        case 412:
            #expect(response.parts.isEmpty && response.header("Content-Length") == "0", row)
        case 416:
            #expect(response.parts.isEmpty && response.header("Content-Length") == "0", row)
            #expect(response.header("Content-Range") == "bytes */\(length)", row)
        default:
            Issue.record("unexpected status \(response.status)")
        }
    }

    @Test("HEAD mirrors GET for every shape; GET bodies add up to Content-Length", arguments: RangeFixture.shapes)
    func invariants(_ shape: RangeShape) throws {
        let etag = "\"65e1cb70-c822\""
        let length: Int64 = shape.file == RangeFixture.clip ? Int64(RangeFixture.length) : 0
        let representation = ByteRangeResponse.Representation(length: length, etag: etag, lastModified: RangeFixture.lastModified,
                                                              contentType: "audio/mpeg")
        for method in ["GET", "HEAD"] {
            let request = ByteRangeResponse.RequestConditions(method: method, headers: shape.headers(etag: etag))
            let response = ByteRangeResponse.decide(request, for: representation)
            #expect(response.status == shape.status)
            checkInvariants(response, request: request, representation: representation, Comment(rawValue: "\(method) \(shape.name)"))
        }
    }

    @Test("Range parsing: limits, saturation and the zero-length representation")
    func rangeParsing() {
        typealias R = ByteRangeResponse
        #expect(R.parseRange("bytes=0-0,2-2", length: 10, maxRanges: 2) == .satisfiable([0..<1, 2..<3]))
        #expect(R.parseRange("bytes=0-0,2-2,4-4", length: 10, maxRanges: 2) == .ignore)
        #expect(R.parseRange("bytes=0-0", length: 10, maxRanges: 0) == .ignore)
        #expect(R.parseRange("bytes=99999999999999999999-", length: 10) == .unsatisfiable)
        #expect(R.parseRange("bytes=-99999999999999999999", length: 10) == .satisfiable([0..<10]))
        #expect(R.parseRange("bytes=0-", length: 0) == .ignore)
        #expect(R.parseRange("bytes=0-9", length: 10) == .satisfiable([0..<10]))
        #expect(R.parseRange("  bytes=1-2\t", length: 10) == .satisfiable([1..<3]))
        #expect(R.contentRange(5..<10, length: 20) == "bytes 5-9/20")
        let boundary = R.makeBoundary()
        #expect(boundary.count == 20 && boundary.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) })
        #expect(boundary != R.makeBoundary())
    }

    @Test("HTTP-dates: the three formats, validation and IMF-fixdate output")
    func httpDates() {
        typealias D = ByteRangeResponse.HTTPDate
        let now = Date(timeIntervalSince1970: 1_780_000_000)    // 2026
        let expected: Int64 = 784_111_777                       // Sun, 06 Nov 1994 08:49:37 GMT
        #expect(D.parseSeconds("Sun, 06 Nov 1994 08:49:37 GMT", now: now) == expected)
        #expect(D.parseSeconds("Sunday, 06-Nov-94 08:49:37 GMT", now: now) == expected)
        #expect(D.parseSeconds("Sun Nov  6 08:49:37 1994", now: now) == expected)
        #expect(D.parseSeconds("Thursday, 01-Jan-70 00:00:00 GMT", now: now) == Int64(3_155_760_000))   // 2070: within 50 years
        #expect(D.parseSeconds("Thu, 29 Feb 2024 00:00:00 GMT", now: now) != nil)
        for invalid in ["Fri, 30 Feb 2024 00:00:00 GMT", "Thu, 01 Mar 2024 24:00:00 GMT", "Thu, 1 Mar 2024 00:00:00 GMT",
                        "Thu, 01 mar 2024 00:00:00 GMT", "Thu, 01 Mar 2024 00:00:00 +0100", "", "garbage", "Thu, 01 Mar 2024"] {
            #expect(D.parseSeconds(invalid, now: now) == nil, "\(invalid)")
        }
        #expect(D.format(Date(timeIntervalSince1970: TimeInterval(expected) + 0.9)) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(D.format(Date(timeIntervalSince1970: 0)) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(D.format(RangeFixture.lastModified) == RangeFixture.lm)
        #expect(D.format(Date(timeIntervalSince1970: 951_782_400)) == "Tue, 29 Feb 2000 00:00:00 GMT")
    }
}
