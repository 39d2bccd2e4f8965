import HTTPTypes
import NIOCore
import Testing
@testable import ClipProxy

/// `WireRequest` takes only plain requests whose end NIO's parser (llhttp) finds in the same
/// place; everything else must come back `.unusual` (or `.incomplete` for a prefix).
@Suite("Plain requests read from the wire")
struct WireRequestTests {
    static let path = "/clips/685ba776e4f9ec2f0756267a/5000"

    static func parse(_ text: String, maxBytes: Int = 8192) -> WireRequest.Parsed {
        WireRequest.parse(ByteBuffer(string: text), maxBytes: maxBytes)
    }

    @Test("A plain GET or HEAD: method, target, fields, authority, length, Connection: close")
    func plain() throws {
        let text = "GET \(Self.path)?duration_ms=20000 HTTP/1.1\r\nHost: clips.example\r\nRange:  bytes=0-99\r\nIf-None-Match: \"abc\"\r\n\r\n"
        guard case .request(let wire) = Self.parse(text + "GET /next") else { Issue.record("not a request"); return }
        #expect(wire.length == text.utf8.count)
        #expect(wire.request.method == .get && wire.request.path == Self.path + "?duration_ms=20000")
        #expect(wire.request.authority == "clips.example" && wire.request.headerFields[HTTPField.Name("Host")!] == nil)
        #expect(wire.request.headerFields[.range] == "bytes=0-99", "whitespace before the value is not part of it")
        #expect(wire.request.headerFields[.ifNoneMatch] == "\"abc\"" && !wire.closes)
        guard case .request(let head) = Self.parse("HEAD \(Self.path) HTTP/1.1\r\nconnection: Close\r\n\r\n") else { Issue.record("HEAD"); return }
        #expect(head.request.method == .head && head.closes)
        guard case .request(let bare) = Self.parse("GET \(Self.path) HTTP/1.1\r\n\r\n") else { Issue.record("no fields"); return }
        #expect(bare.request.authority == nil && bare.request.headerFields.isEmpty)
    }

    @Test("Every prefix of a plain request is incomplete; a prefix as long as the limit is unusual")
    func prefixes() {
        let text = "GET \(Self.path) HTTP/1.1\r\nHost: a\r\nRange: bytes=1-2\r\n\r\n"
        for count in 0..<text.utf8.count {
            let prefix = String(decoding: Array(text.utf8)[..<count], as: UTF8.self)
            if case .incomplete = Self.parse(prefix) { continue }
            Issue.record("prefix of \(count) bytes")
        }
        let almost = String(decoding: Array(text.utf8).dropLast(2), as: UTF8.self)
        #expect(isUnusual(Self.parse(almost, maxBytes: almost.utf8.count)))
        if case .request = Self.parse(text, maxBytes: text.utf8.count) {} else { Issue.record("a request exactly as long as the limit") }
        #expect(isUnusual(Self.parse("GET \(Self.path) HTTP/1.1\r\nX: " + String(repeating: "a", count: 9000))))
    }

    @Test("Anything but a plain request is left to NIO's parser")
    func unusual() {
        let fields = "Host: a\r\n"
        let cases = [
            "POST \(Self.path) HTTP/1.1\r\n\(fields)\r\n",
            "OPTIONS \(Self.path) HTTP/1.1\r\n\(fields)\r\n",
            "get \(Self.path) HTTP/1.1\r\n\(fields)\r\n",
            "GET \(Self.path) HTTP/1.0\r\n\(fields)\r\n",
            "GET \(Self.path) HTTP/2.0\r\n\(fields)\r\n",
            "GET /healthz HTTP/1.1\r\n\(fields)\r\n",
            "GET http://a\(Self.path) HTTP/1.1\r\n\(fields)\r\n",
            "GET  \(Self.path) HTTP/1.1\r\n\(fields)\r\n",
            "GET \(Self.path)  HTTP/1.1\r\n\(fields)\r\n",
            "GET \(Self.path)\u{7F} HTTP/1.1\r\n\(fields)\r\n",
            "GET \(Self.path)é HTTP/1.1\r\n\(fields)\r\n",
            "GET \(Self.path) HTTP/1.1\n\(fields)\r\n",
            "GET \(Self.path) HTTP/1.1\r\nHost: a\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\n: a\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\nNo colon\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\nX: a\u{01}b\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\nX: caf\u{E9}\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\nOrigin: https://dashboard.example \r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\nRange: bytes=0-1\t\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello",
            "GET \(Self.path) HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n",
            "GET \(Self.path) HTTP/1.1\r\n" + String(repeating: "X: y\r\n", count: 65) + "\r\n",
        ]
        for text in cases {
            #expect(isUnusual(Self.parse(text)), "\(text.debugDescription)")
        }
    }

    @Test("Whole requests with no body (any method or target) end on a boundary; what follows them is told apart")
    func wholePrefix() {
        let one = "GET \(Self.path) HTTP/1.1\r\nHost: a\r\n\r\n"
        let health = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
        let purge = "POST /admin/purge/x HTTP/1.1\r\nHost: a\r\n\r\n"
        func split(_ text: String) -> (Int, Bool, String) {
            let (length, closes, rest) = WireRequest.wholePrefix(ByteBuffer(string: text), maxBytes: 8192)
            let kind = switch rest { case nil: "end"; case .incomplete?: "incomplete"; case .unusual?: "unusual"; case .request?: "request" }
            return (length, closes, kind)
        }
        #expect(split(one + health + purge) == (one.utf8.count + health.utf8.count + purge.utf8.count, false, "end"))
        #expect(split(one + "GET /clips/x") == (one.utf8.count, false, "incomplete"))
        #expect(split(one + "GET /healthz HTTP/1.1\r\nHo") == (one.utf8.count, false, "incomplete"))
        let withBody = "POST /admin/purge/x HTTP/1.1\r\nContent-Length: 16\r\n\r\n" + one.prefix(16)
        #expect(split(one + withBody) == (one.utf8.count, false, "unusual"), "a body is NIO's to find the end of")
        #expect(split(one + "GET \(Self.path) HTTP/1.1\r\nConnection: close\r\n\r\n" + one).1, "a Connection: close among them")
        #expect(split("GET * HTTP/1.1\r\n\r\n").2 == "unusual" && split("BAD\u{01} / HTTP/1.1\r\n\r\n").2 == "unusual")
    }

    func isUnusual(_ parsed: WireRequest.Parsed) -> Bool {
        if case .unusual = parsed { true } else { false }
    }
}
