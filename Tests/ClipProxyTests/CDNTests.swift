import Foundation
import Testing
import TestSupport

/// nginx configured from conf/cdn/nginx-proxy-cache.conf in front of clipproxy nodes (the embedded
/// default on the fixtures). What reaches a node is counted from its own log: clipproxy writes one
/// `[ClipProxy] clip` line per clip it answers (not for JSON errors; those are counted from
/// nginx's access log, whose `upstream=` field names the node asked, `-` when none was).
@Suite("CDN: nginx proxy_cache from conf/cdn in front of clipproxy")
struct CDNTests {
    static let episodeA = "685ba776e4f9ec2f0756267a"
    static let episodeB = "685ba776e4f9ec2f0756267b"
    static let episodeC = "685ba776e4f9ec2f0756267c"

    @Test("A second GET, HEAD, single/suffix/multiple ranges and conditionals are cache hits: clipproxy serves the clip once")
    func oneOriginRequestPerClip() throws {
        let work = try TemporaryDirectory("cdn")
        defer { work.remove() }
        let origin = try EmbeddedServer(work: work).start()
        defer { origin.stop() }
        let cdn = try NginxProxyCache.start(upstreams: [hostAndPort(origin.baseURL)])
        defer { cdn.stop() }
        let expected = try trimmed(CatalogFixture.sourceKey(Self.episodeA), startMs: 12_345)
        let n = expected.count
        let url = "\(cdn.endpoint)/clips/\(Self.episodeA)/12345"
        let diagnostics = { "nginx access log:\n\(cdn.accessLog)\nclipproxy log:\n\(origin.log.suffix(3000))" }

        // (a) cold: nginx asks clipproxy and stores the clip.
        let first = try fetch(url)
        #expect(first.status == 200)
        #expect(first.headers["x-cache-status"] == "MISS")
        #expect(first.headers["content-length"] == String(n))
        #expect(first.headers["cache-control"] == "public, max-age=31536000, immutable")
        #expect(sameBytes(first.body, expected), "the clip through nginx = clipproxy trim")
        let etag = try #require(first.headers["etag"])
        #expect(etag.hasPrefix("\"") && etag.hasSuffix("\""), "a strong ETag passed through: \(etag)")

        // (b) the same GET again.
        let second = try fetch(url)
        #expect(second.status == 200 && second.headers["x-cache-status"] == "HIT")
        #expect(second.headers["etag"] == etag && second.headers["content-length"] == String(n))
        #expect(sameBytes(second.body, expected))

        // (c) a single range, cut by nginx from the stored clip.
        let range = try fetch(url, headers: [("Range", "bytes=1000-1999")])
        #expect(range.status == 206 && range.headers["x-cache-status"] == "HIT")
        #expect(range.headers["content-range"] == "bytes 1000-1999/\(n)")
        #expect(range.headers["content-length"] == "1000")
        #expect(sameBytes(range.body, expected[1000..<2000]))

        // (d) suffix, open-ended and multiple ranges, HEAD, conditionals, unsatisfiable range.
        let suffix = try fetch(url, headers: [("Range", "bytes=-500")])
        #expect(suffix.status == 206 && suffix.headers["x-cache-status"] == "HIT")
        #expect(suffix.headers["content-range"] == "bytes \(n - 500)-\(n - 1)/\(n)")
        #expect(sameBytes(suffix.body, expected[(n - 500)...]))

        let openEnded = try fetch(url, headers: [("Range", "bytes=\(n - 100)-")])
        #expect(openEnded.status == 206 && openEnded.headers["x-cache-status"] == "HIT")
        #expect(openEnded.headers["content-range"] == "bytes \(n - 100)-\(n - 1)/\(n)")
        #expect(sameBytes(openEnded.body, expected[(n - 100)...]))

        let multi = try fetch(url, headers: [("Range", "bytes=0-99,2000-2099,-50")])
        #expect(multi.status == 206 && multi.headers["x-cache-status"] == "HIT")
        let contentType = multi.headers["content-type"] ?? ""
        #expect(contentType.hasPrefix("multipart/byteranges; boundary="), "\(contentType)")
        let parts = try byteRangeParts(multi.body, contentType: contentType)
        #expect(parts.map { "\($0.first)-\($0.last)/\($0.total)" } == ["0-99/\(n)", "2000-2099/\(n)", "\(n - 50)-\(n - 1)/\(n)"])
        for part in parts {
            #expect(sameBytes(part.bytes, expected[part.first...part.last]), "part \(part.first)-\(part.last)")
        }

        let head = try fetch(url, method: "HEAD")
        #expect(head.status == 200 && head.headers["x-cache-status"] == "HIT")
        #expect(head.headers["content-length"] == String(n) && head.body.isEmpty)

        let notModified = try fetch(url, headers: [("If-None-Match", etag)])
        #expect(notModified.status == 304 && notModified.headers["x-cache-status"] == "HIT" && notModified.body.isEmpty)
        #expect(notModified.headers["etag"] == etag)

        let ifRangeMatches = try fetch(url, headers: [("Range", "bytes=10-19"), ("If-Range", etag)])
        #expect(ifRangeMatches.status == 206 && ifRangeMatches.headers["x-cache-status"] == "HIT")
        #expect(sameBytes(ifRangeMatches.body, expected[10..<20]))

        let ifRangeStale = try fetch(url, headers: [("Range", "bytes=10-19"), ("If-Range", "\"some-other-version\"")])
        #expect(ifRangeStale.status == 200 && ifRangeStale.headers["x-cache-status"] == "HIT", "If-Range mismatch: the whole clip")
        #expect(sameBytes(ifRangeStale.body, expected))

        let unsatisfiable = try fetch(url, headers: [("Range", "bytes=\(n)-")])
        #expect(unsatisfiable.status == 416 && unsatisfiable.headers["x-cache-status"] == "HIT")
        #expect(unsatisfiable.headers["content-range"] == "bytes */\(n)")

        // Counted at the origin: one request for the clip, a plain GET answered 200 (nginx does not
        // forward Range), and nothing else reached clipproxy.
        let requests = originRequests(origin.log, episode: Self.episodeA, startMs: 12_345)
        #expect(requests.count == 1, "clipproxy saw \(requests.count) requests for the clip, expected 1\n\(diagnostics())")
        #expect(requests.allSatisfy { $0.contains(" http.status=200 ") }, "\(requests)")
        #expect(originRequests(origin.log).count == 1, "\(diagnostics())")
        let accessLog = cdn.accessLog(lines: 11)
        #expect(accessLog.split(separator: "\n").count == 11, "nginx logged the 11 requests above\n\(accessLog)")
        #expect(upstreamRequests(accessLog) == 1, "\(diagnostics())")
    }

    @Test("20 simultaneous requests for a cold clip make one request to clipproxy (proxy_cache_lock)")
    func concurrentMissesCoalesce() throws {
        let work = try TemporaryDirectory("cdn-lock")
        defer { work.remove() }
        let origin = try EmbeddedServer(work: work).start()
        defer { origin.stop() }
        let cdn = try NginxProxyCache.start(upstreams: [hostAndPort(origin.baseURL)])
        defer { cdn.stop() }
        let expected = try trimmed(CatalogFixture.sourceKey(Self.episodeB), startMs: 2000)

        let responses = try simultaneousGETs("/clips/\(Self.episodeB)/2000", port: cdn.port, count: 20)
        #expect(responses.count == 20)
        for (i, response) in responses.enumerated() {
            #expect(response.status == 200, "response \(i)")
            #expect(sameBytes(response.body, expected), "response \(i): \(response.body.count) bytes")
        }
        let statuses = responses.map { $0.header("X-Cache-Status") ?? "none" }
        #expect(statuses.filter { $0 == "MISS" }.count == 1, "one request went to clipproxy, the others waited for it: \(statuses)")
        #expect(statuses.filter { $0 == "HIT" }.count == 19, "\(statuses)")

        let requests = originRequests(origin.log, episode: Self.episodeB, startMs: 2000)
        #expect(requests.count == 1, "clipproxy saw \(requests.count) requests for the clip, expected 1\nnginx access log:\n\(cdn.accessLog)")
        #expect(upstreamRequests(cdn.accessLog(lines: 20)) == 1, "\(cdn.accessLog)")
    }

    @Test("A Range request as the first request gets its 206 and stores the whole clip; errors are not cached")
    func coldRangeFillsTheCache() throws {
        let work = try TemporaryDirectory("cdn-range")
        defer { work.remove() }
        let origin = try EmbeddedServer(work: work).start()
        defer { origin.stop() }
        let cdn = try NginxProxyCache.start(upstreams: [hostAndPort(origin.baseURL)])
        defer { cdn.stop() }
        let expected = try trimmed(CatalogFixture.sourceKey(Self.episodeC), startMs: 3000)
        let url = "\(cdn.endpoint)/clips/\(Self.episodeC)/3000"

        let range = try fetch(url, headers: [("Range", "bytes=1000-1999")])
        #expect(range.status == 206 && range.headers["x-cache-status"] == "MISS")
        #expect(range.headers["content-range"] == "bytes 1000-1999/\(expected.count)")
        #expect(sameBytes(range.body, expected[1000..<2000]))
        let full = try fetch(url)
        #expect(full.status == 200 && full.headers["x-cache-status"] == "HIT")
        #expect(sameBytes(full.body, expected))
        let again = try fetch(url, headers: [("Range", "bytes=-1000")])
        #expect(again.status == 206 && again.headers["x-cache-status"] == "HIT")
        #expect(sameBytes(again.body, expected.suffix(1000)))

        let requests = originRequests(origin.log, episode: Self.episodeC, startMs: 3000)
        #expect(requests.count == 1, "\(requests)\n\(cdn.accessLog)")
        #expect(requests.allSatisfy { $0.contains(" http.status=200 ") }, "nginx asked for the whole clip, not the range: \(requests)")

        // clipproxy's errors carry no-store: each one goes back to clipproxy.
        let missing = "/clips/ffffffffffffffffffffffff/0"
        for attempt in 1...2 {
            let response = try fetch(cdn.endpoint + missing)
            #expect(response.status == 404 && response.headers["x-cache-status"] == "MISS", "attempt \(attempt)")
            #expect(response.headers["content-type"] == "application/json")
        }
        #expect(upstreamRequests(cdn.accessLog(lines: 5), path: missing) == 2, "\(cdn.accessLog)")
    }

    /// A node killed in the middle of a clip (issue 24): the CDN has sent the head and part of the
    /// body, so that client's response stays cut; what matters is that nginx keeps no entry made of
    /// the part it got. (nginx drops the temporary file of a cacheable response whose upstream closed
    /// before Content-Length bytes; conf/cdn relies on it and on clipproxy's exact Content-Length.)
    @Test("An origin that dies in the middle of a clip leaves nothing in the cache: the next request is a MISS with the whole clip, then HITs")
    func originCutMidBodyIsNotStored() throws {
        let work = try TemporaryDirectory("cdn-cut")
        defer { work.remove() }
        let origin = try EmbeddedServer(work: work).start()
        defer { origin.stop() }
        // The first origin response is reset after 20 000 body bytes; every later one passes.
        let cutter = try TestServer.faultProxy(address: hostAndPort(origin.baseURL), plan: ["reset:20000"])
        defer { cutter.stop() }
        let cdn = try NginxProxyCache.start(upstreams: ["\(cutter.host):\(cutter.port)"])
        defer { cdn.stop() }
        let expected = try trimmed(CatalogFixture.sourceKey(Self.episodeA), startMs: 7000)
        #expect(expected.count > 40_000, "the clip must be longer than the part the origin sends")
        let path = "/clips/\(Self.episodeA)/7000"

        var received = 0
        let request = Array("GET \(path) HTTP/1.1\r\nHost: cdn\r\nConnection: close\r\n\r\n".utf8)
        let raw = try? RawHTTPClient.exchange(request, host: cdn.host, port: cdn.port, timeout: 20) { received = $0 }
        if let raw, let head = raw.firstRange(of: Array("\r\n\r\n".utf8)) {
            let headText = String(decoding: raw[..<head.lowerBound], as: UTF8.self).lowercased()
            #expect(headText.contains("content-length: \(expected.count)"), "\(headText)")
            #expect(raw.count - head.upperBound < expected.count, "the first response cannot be whole: the origin sent 20 000 bytes")
        }
        #expect(received < expected.count, "received \(received) bytes")
        let cut = try FaultProxyRequest.decodeLog(try fetch("http://\(cutter.host):\(cutter.port)/__proxy/log").body)
        #expect(cut.first?.mode == "reset:20000" && cut.first?.bytes == 20_000, "\(cut)")

        let second = try fetch(cdn.endpoint + path)
        #expect(second.status == 200 && second.headers["x-cache-status"] == "MISS", "nothing was stored: \(second.headers)\n\(cdn.accessLog)")
        #expect(sameBytes(second.body, expected), "\(second.body.count) bytes")
        let third = try fetch(cdn.endpoint + path)
        #expect(third.status == 200 && third.headers["x-cache-status"] == "HIT")
        #expect(sameBytes(third.body, expected), "\(third.body.count) bytes")

        // One entry on disk, and it ends with the whole clip (nginx's header, key and head come first).
        let files = (FileManager.default.enumerator(at: cdn.cacheDirectory, includingPropertiesForKeys: nil)?
            .compactMap { $0 as? URL } ?? []).filter { !$0.hasDirectoryPath }
        #expect(files.count == 1, "\(files.map(\.path))")
        for file in files {
            let stored = try [UInt8](Data(contentsOf: file))
            #expect(stored.count > expected.count && sameBytes(stored.suffix(expected.count), expected), "\(file.path): \(stored.count) bytes")
        }
    }

    @Test("Two nodes behind consistent hashing: each clip reaches one node once, and the same node again through an empty cache")
    func twoNodes() throws {
        let workA = try TemporaryDirectory("cdn-node-a")
        let workB = try TemporaryDirectory("cdn-node-b")
        defer { workA.remove(); workB.remove() }
        let nodes = [try EmbeddedServer(work: workA).start(), try EmbeddedServer(work: workB).start()]
        defer { nodes.forEach { $0.stop() } }
        let upstreams = nodes.map { hostAndPort($0.baseURL) }
        let starts = (0..<16).map { $0 * 2000 }
        let requestsPerNode = { (start: Int) in nodes.map { originRequests($0.log, episode: Self.episodeA, startMs: start) } }

        let cdn = try NginxProxyCache.start(upstreams: upstreams)
        defer { cdn.stop() }
        for start in starts {
            let url = "\(cdn.endpoint)/clips/\(Self.episodeA)/\(start)"
            let first = try fetch(url)
            let second = try fetch(url, headers: [("Range", "bytes=0-999")])
            #expect(first.status == 200 && first.headers["x-cache-status"] == "MISS", "start \(start)")
            #expect(second.status == 206 && second.headers["x-cache-status"] == "HIT", "start \(start)")
            #expect(sameBytes(second.body, first.body.prefix(1000)), "start \(start)")
        }
        var owner: [Int: Int] = [:]  // start_ms -> index of the node that served it
        for start in starts {
            let counts = requestsPerNode(start).map(\.count)
            #expect(counts.reduce(0, +) == 1, "start \(start): requests per node \(counts)")
            owner[start] = counts.firstIndex(of: 1)
        }
        let spread = (0..<nodes.count).map { node in owner.values.filter { $0 == node }.count }
        #expect(spread.allSatisfy { $0 > 0 }, "16 clips spread over both nodes: \(spread)")

        // A second nginx with an empty cache and the same nodes: the hash sends every clip back to
        // the node that already has it, which serves it from its local disk. (In reverse order, so
        // that round-robin, which a fresh nginx restarts from the same node, cannot pass by luck.)
        let fresh = try NginxProxyCache.start(upstreams: upstreams)
        defer { fresh.stop() }
        for start in starts.reversed() {
            let response = try fetch("\(fresh.endpoint)/clips/\(Self.episodeA)/\(start)")
            #expect(response.status == 200 && response.headers["x-cache-status"] == "MISS", "start \(start)")
            let lines = requestsPerNode(start)
            guard let node = owner[start] else { continue }
            #expect(lines[node].count == 2 && lines[1 - node].isEmpty, "start \(start): same node again, saw \(lines.map(\.count))")
            #expect(lines[node].last?.contains(" clip.tier=l1_hit ") == true, "start \(start): \(lines[node])")
        }
    }
}

// MARK: - Helpers

/// `host:port` of a base URL such as `http://127.0.0.1:8080`.
private func hostAndPort(_ baseURL: String) -> String {
    String(baseURL.dropFirst("http://".count)).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
}

/// clipproxy's log lines for the /clips responses it sent, optionally for one clip URL only.
/// The metadata is written sorted by key, space-separated, before `[ClipProxy] clip`.
private func originRequests(_ log: String, episode: String? = nil, startMs: Int? = nil) -> [Substring] {
    log.split(separator: "\n").filter { line in
        line.hasSuffix("[ClipProxy] clip")
            && (episode.map { line.contains(" episode.id=\($0) ") } ?? true)
            && (startMs.map { line.contains(" clip.start_ms=\($0) ") } ?? true)
    }
}

/// Requests nginx passed to a node, from its access log (`upstream=-` when it asked none).
private func upstreamRequests(_ accessLog: String, path: String? = nil) -> Int {
    accessLog.split(separator: "\n").filter { line in
        !line.contains(" upstream=- ") && (path.map { line.contains(" \($0) ") } ?? true)
    }.count
}

/// The episodes of the generated catalog and where their source audio is.
private enum CatalogFixture {
    struct Episode: Decodable {
        let id: String
        let sourceKey: String?  // null for catalog entries without source audio
        enum CodingKeys: String, CodingKey {
            case id = "_id"
            case sourceKey = "source_key"
        }
    }

    static func sourceKey(_ episodeId: String) throws -> String {
        let file = try RepoPaths.require(Fixtures.directory.appendingPathComponent("episodes.json"), hint: "run `make fixtures`")
        let episodes = try JSONDecoder().decode([Episode].self, from: Data(contentsOf: file))
        guard let key = episodes.first(where: { $0.id == episodeId })?.sourceKey else {
            throw TestSetupError("episode \(episodeId) with source audio is not in \(file.path): run `make fixtures`")
        }
        return key
    }
}

/// One part of a multipart/byteranges body.
private struct ByteRangePart {
    let first: Int
    let last: Int
    let total: Int
    let bytes: ArraySlice<UInt8>
}

/// Splits a multipart/byteranges body. Each part's bytes are taken by the length its Content-Range
/// states, so audio bytes that happen to look like a delimiter cannot cut a part short.
private func byteRangeParts(_ body: [UInt8], contentType: String) throws -> [ByteRangePart] {
    guard let boundary = contentType.firstMatch(of: /boundary="?([^";]+)"?/)?.1 else {
        throw TestSetupError("no boundary in \(contentType)")
    }
    let delimiter = Array("--\(boundary)".utf8)
    let crlf: [UInt8] = [13, 10]
    guard var i = firstIndex(of: delimiter, in: body, from: 0) else { throw TestSetupError("no delimiter in the body") }
    var parts: [ByteRangePart] = []
    while true {
        i += delimiter.count
        if body[i...].starts(with: Array("--".utf8)) { return parts }  // close delimiter
        guard body[i...].starts(with: crlf), let headerEnd = firstIndex(of: crlf + crlf, in: body, from: i + 2) else {
            throw TestSetupError("malformed part at byte \(i)")
        }
        let headers = String(decoding: body[(i + 2)..<headerEnd], as: UTF8.self)
        guard let match = headers.firstMatch(of: /(?i)content-range: *bytes (\d+)-(\d+)\/(\d+)/),
              let first = Int(match.1), let last = Int(match.2), let total = Int(match.3) else {
            throw TestSetupError("part without a Content-Range: \(headers)")
        }
        let start = headerEnd + 4
        let end = start + (last - first + 1)
        guard end <= body.count else { throw TestSetupError("part \(first)-\(last) is truncated") }
        parts.append(ByteRangePart(first: first, last: last, total: total, bytes: body[start..<end]))
        guard body[end...].starts(with: crlf + delimiter) else { throw TestSetupError("no delimiter after part \(first)-\(last)") }
        i = end + 2
    }
}

private func firstIndex(of needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
    guard needle.count <= haystack.count else { return nil }
    var i = start
    while i + needle.count <= haystack.count {
        if haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
        i += 1
    }
    return nil
}

/// `count` identical GETs at once: every connection is opened first and the requests are then
/// written back to back, so all of them are inside nginx before a node can answer the first.
/// Responses are read afterwards, one connection after the other (nginx does not block on a slow
/// reader), and parsed by RawHTTPClient.
private func simultaneousGETs(_ path: String, port: Int, count: Int, timeout: TimeInterval = 30) throws -> [RawHTTPResponse] {
    var sockets: [Int32] = []
    defer { sockets.forEach { close($0) } }
    for _ in 0..<count { sockets.append(try RawHTTPClient.connect(port: port, timeout: timeout)) }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8)
    for fd in sockets {
        let n = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n == request.count else { throw TestSetupError("short write of the request: \(n), errno \(errno)") }
    }
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    return try sockets.map { fd in
        var raw: [UInt8] = []
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            guard n > 0 else { throw TestSetupError("read failed (errno \(errno)) after \(raw.count) bytes") }
            raw += buffer[..<n]
        }
        return try RawHTTPClient.parse(raw, method: "GET")
    }
}
