import Foundation
import Testing
import TestSupport
@testable import ClipProxy

@Suite("Stored clips by sendfile: descriptor ownership, no leaks")
struct SendFileTests {
    @Test("Clients that hang up during stored transfers leave no descriptor open in the server")
    func noDescriptorLeaks() throws {
        let work = try TemporaryDirectory("sendfile")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let url = "\(server.baseURL)/clips/\(ServerTests.episode)/3000"
        let expected = try trimmed(ServerTests.sourceKey, startMs: 3_000)
        #expect(sameBytes(try fetch(url).body, expected))
        #expect(server.waitForLog("fill finished"))
        let stored = try fetch(url, headers: [("Range", "bytes=1000-")])
        #expect(stored.headers["x-clip-tier"] == "l1_hit" && sameBytes(stored.body, Array(expected[1000...])))
        let port = Int(server.baseURL.split(separator: ":").last!)!
        let descriptors = { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.process.processIdentifier)/fd").count) ?? -1 }
        let before = descriptors()
        let fastBefore = try fastPathResponses(server)
        for _ in 0..<40 {
            // Read the head and a little of the body, then hang up.
            let fd = try RawHTTPClient.connect(port: port)
            let request = Array("GET /clips/\(ServerTests.episode)/3000 HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            var buffer = [UInt8](repeating: 0, count: 2000)
            _ = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
        var after = descriptors()
        for _ in 0..<50 where after > before {
            usleep(100_000)
            after = descriptors()
        }
        #expect(before > 0 && after <= before, "descriptors before \(before), after \(after)")
        #expect(try fastPathResponses(server) - fastBefore == 40, "the hung-up transfers were fast-path responses")

        // Pipelined requests nobody reads, then a hang-up: the fast path holds a few answers in
        // flight per connection (the rest wait for the router), and all of them let go.
        for _ in 0..<10 {
            let fd = try slowReaderSocket(port: port)
            writeAll(fd, String(repeating: "GET /clips/\(ServerTests.episode)/3000 HTTP/1.1\r\nHost: x\r\n\r\n", count: 30))
            _ = readSlowly(fd, limit: 3000)
            close(fd)
        }
        // Multipart answers of 100 ranges each, pipelined and never read: on the fast path one
        // descriptor per answer (not per range) and at most 8 answers per connection; the router
        // reads and writes multipart ranges instead of a sendfile per range.
        let ranges = (0..<100).map { "\($0 * 10)-\($0 * 10 + 4)" }.joined(separator: ",")
        let holders = try (0..<5).map { _ in
            let fd = try slowReaderSocket(port: port)
            writeAll(fd, String(repeating: "GET /clips/\(ServerTests.episode)/3000 HTTP/1.1\r\nHost: x\r\nRange: bytes=\(ranges)\r\n\r\n", count: 20))
            return fd
        }
        usleep(500_000)
        let held = descriptors()
        #expect(held < before + 5 * 20, "5 connections with 20 unread multipart answers each hold \(held - before) descriptors")
        holders.forEach { close($0) }
        after = descriptors()
        for _ in 0..<50 where after > before {
            usleep(100_000)
            after = descriptors()
        }
        #expect(after <= before, "after pipelined hang-ups: descriptors before \(before), after \(after)")
        #expect(sameBytes(try fetch(url).body, expected), "still serving exact bytes")
    }
}
