import Foundation
import Testing
import TestSupport
@testable import ClipProxy
@testable import Upstream

/// The old API's answer, decoded strictly: a field with another JSON type fails to decode.
struct AudioClipAnswer: Decodable {
    let clip_url: String
    let expires_at: String
    let cache_hit: Bool
    let episode_id: String
    let start_time_ms: Int
    let duration_ms: Int
    let generation_time_ms: Int
    let proxy_url: String
}

func decodeAnswer(_ body: [UInt8]) throws -> AudioClipAnswer { try JSONDecoder().decode(AudioClipAnswer.self, from: Data(body)) }

func jsonObject(_ body: [UInt8]) -> [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:] }

@Suite("JSON pre-sign API: the old endpoint, against moto and the MongoDB wire server")
struct AudioClipsAPITests {
    @Test("Fields and types of the old API; clip_url and proxy_url download the /clips bytes; second call is a cache hit")
    func answers() async throws {
        let work = try TemporaryDirectory("api")
        defer { work.remove() }
        try await withTestServer(try TestServer.s3()) { s3 in
            try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
                _ = try FullStackTests.seedBucket(s3)
                let bucket = try ClipBucketTests().clipBucketClient(s3)
                _ = try bucket.createBucket(ClipBucketTests.clipBucket)
                let server = try ClipProxyProcess(environment: FullStackTests.environment(s3: s3, mongo: mongo, work: work))
                defer { server.stop() }
                let expected = try trimmed(ServerTests.sourceKey, startMs: 4_000)
                let api = "\(server.baseURL)/api/v1/audio_clips/\(ServerTests.episode)"

                let before = Date()
                let first = try fetch("\(api)?start_time_ms=4000")
                #expect(first.status == 200, "\(String(decoding: first.body, as: UTF8.self))")
                #expect(first.headers["content-type"] == "application/json")
                let answer = try decodeAnswer(first.body)
                #expect(answer.cache_hit == false)
                #expect(answer.episode_id == ServerTests.episode && answer.start_time_ms == 4000 && answer.duration_ms == 30_000)
                #expect(answer.generation_time_ms >= 0 && answer.generation_time_ms < 30_000)
                // The old field order, then proxy_url.
                let text = String(decoding: first.body, as: UTF8.self)
                let order = ["clip_url", "expires_at", "cache_hit", "episode_id", "start_time_ms", "duration_ms", "generation_time_ms", "proxy_url"]
                let positions = order.compactMap { text.range(of: "\"\($0)\"")?.lowerBound }
                #expect(positions.count == order.count && positions == positions.sorted(), "\(text)")
                // expires_at: ISO 8601 UTC, presign.expires_s (86400) from now.
                let expires = try #require(ISO8601DateFormatter().date(from: answer.expires_at), "\(answer.expires_at)")
                #expect(answer.expires_at.hasSuffix("Z"))
                #expect(abs(expires.timeIntervalSince(before) - 86_400) < 30)
                // clip_url is a SigV4 pre-signed GET of the clip bucket object under the seed layout.
                #expect(answer.clip_url.contains("/\(ClipBucketTests.clipBucket)/the-daily-tones/0e983347-7815-4b33-8a7e-2b1c9f0e1a11/4000-34000.mp3?"))
                #expect(answer.clip_url.contains("X-Amz-Expires=86400") && answer.clip_url.contains("X-Amz-Signature="))
                let downloaded = try fetch(answer.clip_url)
                #expect(downloaded.status == 200 && sameBytes(downloaded.body, expected), "clip_url downloads the clip")
                let proxied = try fetch(answer.proxy_url)
                #expect(proxied.status == 200 && sameBytes(proxied.body, expected), "proxy_url serves the same bytes")
                #expect(proxied.headers["x-clip-tier"] == "l1_hit")

                let second = try decodeAnswer(try fetch("\(api)?start_time_ms=4000&duration_ms=30000").body)
                #expect(second.cache_hit == true)
                #expect(server.log.components(separatedBy: "fill started").count - 1 == 1, "one cut for all of it")

                // A clip first cut by /clips is a cache hit for the API, with no second cut.
                _ = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/9000?duration_ms=15000")
                #expect(server.waitForLog("fill finished", count: 2))
                let shared = try decodeAnswer(try fetch("\(api)?start_time_ms=9000&duration_ms=15000").body)
                #expect(shared.cache_hit == true && shared.duration_ms == 15_000)
                #expect(shared.clip_url.contains("/9000-24000.mp3?"))
                #expect(sameBytes(try fetch(shared.clip_url).body, try trimmed(ServerTests.sourceKey, startMs: 9_000, durationMs: 15_000)))
                #expect(server.log.components(separatedBy: "fill started").count - 1 == 2)
            }
        }
    }

    @Test("snap=pause: the answer's start_time_ms and duration_ms are the window /clips snaps to, then the window asked; proxy_url plays it; snap=foo is 400")
    func snapped() throws {
        try SnapToPausesTests.serving { _, server in
            let (episode, asked) = (SnapToPausesTests.speechId, (startMs: Int64(31_234), durationMs: Int64(10_000)))
            let api = "\(server.baseURL)/api/v1/audio_clips/\(episode)?start_time_ms=\(asked.startMs)&duration_ms=\(asked.durationMs)"
            let response = try fetch(api + "&snap=pause")
            #expect(response.status == 200, "\(String(decoding: response.body, as: UTF8.self))")
            let answer = try decodeAnswer(response.body)
            let fields = jsonObject(response.body)
            #expect(fields["snap"] as? String == "pause")
            #expect(fields["requested_start_time_ms"] as? Int == Int(asked.startMs) && fields["requested_duration_ms"] as? Int == Int(asked.durationMs))

            let clip = try fetch("\(server.baseURL)/clips/\(episode)/\(asked.startMs)?snap=pause&duration_ms=\(asked.durationMs)")
            let window = try #require(SnapToPausesTests.window(clip.headers["content-location"]))
            #expect(window != asked, "the fixture must move this window")
            #expect((Int64(answer.start_time_ms), Int64(answer.duration_ms)) == window, "the API chose \(answer.start_time_ms)+\(answer.duration_ms), /clips \(window)")
            let proxied = try fetch(answer.proxy_url)
            #expect(proxied.status == 200 && proxied.headers["etag"] == clip.headers["etag"] && sameBytes(proxied.body, clip.body),
                    "proxy_url \(answer.proxy_url) is the snapped clip")

            // Without snap: the window asked, and the old fields only.
            let exact = try fetch(api)
            #expect(try decodeAnswer(exact.body).start_time_ms == Int(asked.startMs) && jsonObject(exact.body).count == 8)
            for bad in ["snap=foo", "snap=", "snap=pause&snap=pause"] {
                let refused = try fetch(api + "&" + bad)
                #expect(refused.status == 400 && jsonObject(refused.body)["error"] as? String == "invalid_snap", "\(bad): \(refused.status)")
            }
        }
    }

    @Test("The hand-written JSON is valid JSON for any text")
    func answerJSON() throws {
        let awkward = "a\"b\\c\u{01}\té/ü\u{1F600}"
        let answer = AudioClipsAPI.Answer(clipURL: awkward, expiresAt: "2026-01-01T00:00:00Z", cacheHit: true, episodeId: awkward,
                                          startTimeMs: 1, durationMs: 2, generationTimeMs: 3, proxyURL: "p")
        let decoded = try decodeAnswer(Array(answer.json.utf8))
        #expect(decoded.clip_url == awkward && decoded.episode_id == awkward && decoded.cache_hit && decoded.generation_time_ms == 3)
    }

    @Test("Validation as the old FastAPI service: 400 for values out of range, 422 for missing or non-integer parameters")
    func validation() throws {
        let work = try TemporaryDirectory("api-validation")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let api = "\(server.baseURL)/api/v1/audio_clips/\(ServerTests.episode)"
        let cases: [(query: String, status: Int)] = [
            ("", 422), ("duration_ms=30000", 422), ("start_time_ms=", 422), ("start_time_ms=abc", 422),
            ("start_time_ms=1.5", 422), ("start_time_ms=1e3", 422), ("start_time_ms=99999999999999999999", 422),
            ("start_time_ms=0&duration_ms=x", 422), ("start_time_ms=0&duration_ms=2.0", 422),
            ("start_time_ms=-1", 400), ("start_time_ms=0&duration_ms=0", 400), ("start_time_ms=0&duration_ms=-5", 400),
            ("start_time_ms=0&duration_ms=60001", 400),
            ("start_time_ms=0&duration_ms=60000", 200), ("start_time_ms=0", 200), ("start_time_ms=+1000", 200),
            ("start_time_ms=999999999", 422),  // past the end of the episode
        ]
        for (query, status) in cases {
            let response = try fetch("\(api)?\(query)")
            #expect(response.status == status, "\(query): \(response.status) \(String(decoding: response.body, as: UTF8.self))")
            let json = jsonObject(response.body)
            #expect(json["detail"] != nil || status == 200, "\(query): a detail field")
            if status == 422 && query != "start_time_ms=999999999" {
                let detail = json["detail"] as? [[String: Any]]
                #expect((detail?.first?["loc"] as? [String])?.first == "query", "\(query): FastAPI's validation error list")
            }
        }
        let unknown = try fetch("\(server.baseURL)/api/v1/audio_clips/ffffffffffffffffffffffff?start_time_ms=0")
        #expect(unknown.status == 404 && jsonObject(unknown.body)["detail"] != nil)
        // Without S3 the clip URL is the proxy's own.
        let embedded = try decodeAnswer(try fetch("\(api)?start_time_ms=0").body)
        #expect(embedded.clip_url == embedded.proxy_url && embedded.cache_hit)
        #expect(embedded.proxy_url == "\(server.baseURL)/clips/\(ServerTests.episode)/0")
    }
}

@Suite("Signed /clips URLs")
struct SignedURLTests {
    static let key = "current-signing-key-0123456789"
    static let previous = "previous-signing-key-9876543210"

    @Test("Canonical form: escapes that decode alike sign alike; parameter order does not matter")
    func canonical() throws {
        let signer = try #require(URLSigner(key: Self.key, previousKey: ""))
        let query = signer.signedQuery(path: "/clips/substack:12345/1000", parameters: [("duration_ms", "5000")], expiresAt: 2_000_000_000)
        #expect(signer.verify(path: "/clips/substack%3A12345/1000", rawQuery: query, now: 0) == .valid)
        let reordered = query.split(separator: "&").reversed().joined(separator: "&")
        #expect(signer.verify(path: "/clips/substack:12345/1000", rawQuery: reordered, now: 0) == .valid)
        #expect(signer.verify(path: "/clips/substack:12345/1001", rawQuery: query, now: 0) == .mismatch)
        #expect(signer.verify(path: "/clips/substack:12345/1000", rawQuery: query + "&extra=1", now: 0) == .mismatch)
        #expect(signer.verify(path: "/clips/substack:12345/1000", rawQuery: query, now: 2_000_000_001) == .expired)
        #expect(signer.verify(path: "/clips/x/1", rawQuery: nil, now: 0) == .missing)
        #expect(signer.verify(path: "/clips/x/1", rawQuery: "exp=1&sig=zz", now: 0) != .valid)
        #expect(signer.verify(path: "/clips/x/1", rawQuery: "exp=1&exp=2&sig=" + String(repeating: "0", count: 64), now: 0) != .valid)
        #expect(URLSigner(key: "", previousKey: "") == nil, "no key: signing off")
    }

    @Test("Signed mode: a valid URL plays, any changed byte or an expired exp gives 403, both rotation keys work, snap is signed")
    func signedServer() throws {
        let work = try TemporaryDirectory("signed")
        defer { work.remove() }
        var environment = EmbeddedServer(work: work).environment
        environment["CLIPPROXY_SIGNING_KEY"] = Self.key
        environment["CLIPPROXY_SIGNING_PREVIOUS_KEY"] = Self.previous
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }
        let path = "/clips/\(ServerTests.episode)/2000?duration_ms=10000"
        let expected = try trimmed(ServerTests.sourceKey, startMs: 2_000, durationMs: 10_000)

        let unsigned = try fetch(server.baseURL + path)
        #expect(unsigned.status == 403 && jsonObject(unsigned.body)["error"] as? String == "signature_required")
        #expect(unsigned.headers["content-type"] == "application/json")

        // `clipproxy sign` with the server's configuration.
        let signedRun = try runClipProxy(["sign", path, "--expires-in", "600"], environment: ProcessInfo.processInfo.environment.merging(environment) { $1 })
        #expect(signedRun.status == 0, "\(signedRun.stderr)")
        let signed = signedRun.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let ok = try fetch(server.baseURL + signed)
        #expect(ok.status == 200 && sameBytes(ok.body, expected), "\(signed)")
        let ranged = try fetch(server.baseURL + signed, headers: [("Range", "bytes=100-199")])
        #expect(ranged.status == 206 && sameBytes(ranged.body, Array(expected[100..<200])))

        // Change one byte of each part: episode id, start, duration, exp, sig.
        let tampered = [
            signed.replacingOccurrences(of: "685ba776e4f9ec2f0756267a", with: "685ba776e4f9ec2f0756267b"),
            signed.replacingOccurrences(of: "/2000?", with: "/2001?"),
            signed.replacingOccurrences(of: "duration_ms=10000", with: "duration_ms=10001"),
            signed.replacingOccurrences(of: "exp=1", with: "exp=2"),
            { var s = signed; let last = s.removeLast(); s.append(last == "0" ? "1" : "0"); return s }(),
            signed.replacingOccurrences(of: "&sig=", with: "&x=1&sig="),
        ]
        for url in tampered {
            #expect(url != signed)
            let response = try fetch(server.baseURL + url)
            #expect(response.status == 403, "\(url)")
            #expect(jsonObject(response.body)["error"] as? String == "signature_invalid", "\(url)")
        }

        // An escaped parameter name signs as its decoded name, and is served as it too: the signed
        // 10 s window, never the default 30 s.
        let escapedName = signed.replacingOccurrences(of: "duration_ms=", with: "duration%5Fms=")
        let escaped = try fetch(server.baseURL + escapedName)
        #expect(escaped.status == 200 && sameBytes(escaped.body, expected), "\(escapedName): \(escaped.body.count) bytes")

        let now = Int64(Date().timeIntervalSince1970)
        let current = try #require(URLSigner(key: Self.key, previousKey: ""))
        let expired = ClipURLTools.signedPath(path, signer: current, expiresAt: now - 5)
        let expiredResponse = try fetch(server.baseURL + expired)
        #expect(expiredResponse.status == 403 && jsonObject(expiredResponse.body)["error"] as? String == "signature_expired")

        let old = try #require(URLSigner(key: Self.previous, previousKey: ""))
        let byPrevious = try fetch(server.baseURL + ClipURLTools.signedPath(path, signer: old, expiresAt: now + 60))
        #expect(byPrevious.status == 200 && sameBytes(byPrevious.body, expected), "the rotation key is still accepted")
        let stranger = try #require(URLSigner(key: "some-other-key-that-is-long", previousKey: ""))
        #expect(try fetch(server.baseURL + ClipURLTools.signedPath(path, signer: stranger, expiresAt: now + 60)).status == 403)

        // The signature covers snap: a signed snapped URL plays (and names its window in a signed
        // Content-Location); the same signature with snap taken off, or put on, is refused.
        let snappedPath = ClipURLTools.signedPath(path + "&snap=pause", signer: current, expiresAt: now + 600)
        let snapped = try fetch(server.baseURL + snappedPath)
        #expect(snapped.status == 200, "\(snappedPath): \(snapped.status)")
        let location = try #require(snapped.headers["content-location"])
        let exactWindow = try fetch(server.baseURL + location)
        #expect(location.contains("&sig=") && exactWindow.status == 200 && sameBytes(exactWindow.body, snapped.body), "\(location)")
        func query(_ url: String, _ change: ([Substring]) -> [Substring]) -> String {
            let parts = url.split(separator: "?", maxSplits: 1)
            return parts[0] + "?" + change(parts[1].split(separator: "&")).joined(separator: "&")
        }
        let snapRemoved = query(snappedPath) { $0.filter { $0 != "snap=pause" } }
        let snapAdded = query(ClipURLTools.signedPath(path, signer: current, expiresAt: now + 600)) { ["snap=pause"] + $0 }
        #expect(!snapRemoved.contains("snap") && snapAdded.contains("snap=pause"))
        for url in [snapRemoved, snapAdded] {
            let response = try fetch(server.baseURL + url)
            #expect(response.status == 403 && jsonObject(response.body)["error"] as? String == "signature_invalid", "\(url): \(response.status)")
        }

        // The JSON API hands out signed proxy URLs that play.
        let answer = try decodeAnswer(try fetch("\(server.baseURL)/api/v1/audio_clips/\(ServerTests.episode)?start_time_ms=2000&duration_ms=10000").body)
        #expect(answer.proxy_url.contains("exp=") && answer.proxy_url.contains("sig="))
        let viaAnswer = try fetch(answer.proxy_url)
        #expect(viaAnswer.status == 200 && sameBytes(viaAnswer.body, expected))
        // Health endpoints stay open.
        #expect(try fetch(server.baseURL + "/healthz").status == 200)
    }
}
