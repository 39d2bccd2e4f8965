import Foundation
import Testing
import TestSupport
@testable import ClipProxy
@testable import Trim
@testable import Upstream

/// A peaks document as a test reads it back.
struct ParsedPeaks {
    let version: Int, channels: Int, sampleRate: Int, samplesPerPixel: Int, bits: Int, length: Int
    let data: [Int]

    init(_ body: [UInt8]) throws {
        let json = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any], "\(String(decoding: body, as: UTF8.self))")
        #expect(Set(json.keys) == ["version", "channels", "sample_rate", "samples_per_pixel", "bits", "length", "data"])
        version = try #require(json["version"] as? Int)
        channels = try #require(json["channels"] as? Int)
        sampleRate = try #require(json["sample_rate"] as? Int)
        samplesPerPixel = try #require(json["samples_per_pixel"] as? Int)
        bits = try #require(json["bits"] as? Int)
        length = try #require(json["length"] as? Int)
        data = try #require(json["data"] as? [Int])
    }
}

enum PeaksOracle {
    /// The plan of a fixture clip: its exact sample count and rate, worked out from the source.
    static func plan(_ sourceKey: String, startMs: Int64, durationMs: Int64 = 30_000) throws -> ClipPlan {
        let source = try FileByteSource(path: Fixtures.directory.appendingPathComponent("source/\(sourceKey)").path)
        return try ClipPlan.plan(try FrameIndexBuilder.build(source), .init(startMs: startMs, durationMs: durationMs))
    }

    /// ffmpeg's mono decode of `mp3` (its own resampler mixes the channels down).
    static func decode(_ mp3: [UInt8], sampleRate: Int) throws -> [Int16] {
        let folder = try TemporaryDirectory("peaks-oracle")
        defer { folder.remove() }
        let path = folder.path + "/clip.mp3"
        try Data(mp3).write(to: URL(fileURLWithPath: path))
        let pcm = try FFmpegOracle.decode(path, channels: 1, sampleRate: sampleRate)
        #expect(pcm.stderr.isEmpty, "ffmpeg complained: \(pcm.stderr)")
        return pcm.samples
    }

    /// Min and max per block, worked out here from ffmpeg's samples, scaled to `bits`.
    static func peaks(_ samples: [Int16], samplesPerPixel: Int, bits: Int) -> [Int] {
        stride(from: 0, to: samples.count, by: samplesPerPixel).flatMap { start -> [Int] in
            let block = samples[start..<min(samples.count, start + samplesPerPixel)]
            let (low, high) = (Int(block.min()!), Int(block.max()!))
            return bits == 8 ? [low / 256, high / 256] : [low, high]
        }
    }

    /// The episode of each fixture source the tests use: stereo 44.1 kHz CBR, stereo VBR, MPEG-2 mono.
    static let sources: [(episode: String, sourceKey: String)] = try! FullStackTests.Episode.all()
        .filter { ["685ba776e4f9ec2f0756267a", "685ba776e4f9ec2f0756267b", "685ba776e4f9ec2f0756267c"].contains($0._id) }
        .map { ($0._id, $0.source_key!) }
}

/// Counts of what the server did, from its log.
func occurrences(_ text: String, in log: String) -> Int { log.components(separatedBy: text).count - 1 }

@Suite("Peaks: decoding a clip's own bytes")
struct PeaksDecodeTests {
    @Test("libavcodec through libavformat drops the clip's encoder delay and padding: exactly the planned samples, as ffmpeg",
          arguments: [(0, Int64(0)), (0, 50_000), (1, 12_345), (2, 7_000)])
    func exactSampleCount(source: Int, startMs: Int64) throws {
        let (_, sourceKey) = PeaksOracle.sources[source]
        let plan = try PeaksOracle.plan(sourceKey, startMs: startMs)
        let mp3 = try trimmed(sourceKey, startMs: startMs)
        let peaks = try WaveformPeaks.of(mp3: MemoryByteSource(mp3), samplesPerPixel: 32, bits: 16)
        let reference = try PeaksOracle.decode(mp3, sampleRate: plan.sampleRate)
        #expect(peaks.sampleCount == plan.sampleCount, "decoded \(peaks.sampleCount), planned \(plan.sampleCount)")
        #expect(Int64(reference.count) == plan.sampleCount, "ffmpeg decodes \(reference.count)")
        #expect(peaks.sampleRate == plan.sampleRate)
        #expect(peaks.length == (reference.count + 31) / 32)
    }

    @Test("JSON is audiowaveform's: keys in its order, one channel, the last block shorter")
    func json() {
        var blocks = PeakBlocks(samplesPerPixel: 3)
        [Int16(5), -7, 2, 300, -300].withUnsafeBufferPointer { blocks.add($0) }
        let pairs = blocks.finish()
        #expect(pairs == [-7, 5, -300, 300])
        let peaks = WaveformPeaks(sampleRate: 44100, samplesPerPixel: 3, bits: 8, data: pairs.map { WaveformPeaks.scale($0, to: 8) }, sampleCount: 5)
        #expect(peaks.json == #"{"version":2,"channels":1,"sample_rate":44100,"samples_per_pixel":3,"bits":8,"length":2,"data":[0,0,-1,1]}"#)
        #expect(WaveformPeaks.scale(.min, to: 8) == -128 && WaveformPeaks.scale(.max, to: 8) == 127)
    }
}

@Suite("Peaks: GET /clips/<episode>/<start>.json against the embedded default")
struct PeaksServerTests {
    @Test("Defaults: audiowaveform fields, length = ⌈samples / 256⌉, the clip's headers")
    func fieldsAndLength() throws {
        let work = try TemporaryDirectory("peaks-fields")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let plan = try PeaksOracle.plan(ServerTests.sourceKey, startMs: 12_345)
        let url = "\(server.baseURL)/clips/\(ServerTests.episode)/12345.json"
        let response = try fetch(url)
        #expect(response.status == 200, "\(String(decoding: response.body, as: UTF8.self))")
        #expect(response.headers["content-type"] == "application/json")
        #expect(response.headers["content-length"] == String(response.body.count))
        #expect(response.headers["cache-control"] == "public, max-age=31536000, immutable")
        #expect(response.headers["access-control-allow-origin"] == "*")
        let peaks = try ParsedPeaks(response.body)
        #expect(peaks.version == 2 && peaks.channels == 1 && peaks.samplesPerPixel == 256 && peaks.bits == 8)
        #expect(peaks.sampleRate == plan.sampleRate)
        #expect(peaks.length == Int((plan.sampleCount + 255) / 256))
        #expect(peaks.data.count == 2 * peaks.length)
        #expect(peaks.data.allSatisfy { (-128...127).contains($0) })
        #expect(peaks.data.contains { abs($0) > 20 }, "the fixture is audible, not silence")

        let clip = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/12345", method: "HEAD")
        let etag = try #require(response.headers["etag"])
        #expect(etag.wholeMatch(of: /"[0-9a-f]{16}-[0-9a-f]{16}"/) != nil, "\(etag)")
        #expect(etag.prefix(17) == (clip.headers["etag"] ?? "").prefix(17), "derived from the clip key")
        let head = try fetch(url, method: "HEAD")
        #expect(head.status == 200 && head.body.isEmpty && head.headers["content-length"] == String(response.body.count))
        #expect(head.headers["etag"] == etag)
    }

    @Test("Peaks equal min/max per block of ffmpeg's decode of the clip the server serves (±1), sample count exact",
          arguments: [(0, Int64(12_345), 100), (0, 50_000, 256), (1, 3_000, 441), (2, 20_000, 32)])
    func matchesFFmpeg(source: Int, startMs: Int64, samplesPerPixel: Int) throws {
        let (episode, sourceKey) = PeaksOracle.sources[source]
        let work = try TemporaryDirectory("peaks-ffmpeg")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let plan = try PeaksOracle.plan(sourceKey, startMs: startMs)
        let clip = try fetch("\(server.baseURL)/clips/\(episode)/\(startMs)")
        #expect(clip.status == 200)
        let samples = try PeaksOracle.decode(clip.body, sampleRate: plan.sampleRate)
        #expect(Int64(samples.count) == plan.sampleCount)
        for bits in [8, 16] {
            let response = try fetch("\(server.baseURL)/clips/\(episode)/\(startMs).json?samples_per_pixel=\(samplesPerPixel)&bits=\(bits)")
            #expect(response.status == 200)
            let peaks = try ParsedPeaks(response.body)
            let expected = PeaksOracle.peaks(samples, samplesPerPixel: samplesPerPixel, bits: bits)
            #expect(peaks.samplesPerPixel == samplesPerPixel && peaks.bits == bits)
            #expect(peaks.length == (samples.count + samplesPerPixel - 1) / samplesPerPixel)
            #expect(peaks.data.count == expected.count)
            let worst = zip(peaks.data, expected).map { abs($0 - $1) }.max() ?? .max
            #expect(worst <= 1, "bits \(bits): largest difference from ffmpeg \(worst)")
        }
    }

    @Test("8 bits are the 16-bit peaks divided by 256; 16 bits use the full range")
    func bitDepths() throws {
        let work = try TemporaryDirectory("peaks-bits")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let base = "\(server.baseURL)/clips/\(ServerTests.episode)/0.json?samples_per_pixel=512"
        let eight = try ParsedPeaks(try fetch(base).body)
        let sixteen = try ParsedPeaks(try fetch(base + "&bits=16").body)
        #expect(eight.bits == 8 && sixteen.bits == 16 && eight.length == sixteen.length)
        #expect(eight.data == sixteen.data.map { $0 / 256 })
        #expect(sixteen.data.allSatisfy { (-32768...32767).contains($0) })
        #expect(sixteen.data.contains { abs($0) > 1000 }, "16-bit values are not 8-bit ones")
        #expect(eight.data.allSatisfy { (-128...127).contains($0) })
    }

    @Test("Concurrent requests for cold peaks: one fill, one decode; a restarted node with an empty store reads them from the clip directory")
    func madeOnce() throws {
        let work = try TemporaryDirectory("peaks-once")
        defer { work.remove() }
        let config = EmbeddedServer(work: work)
        var server = try config.start()
        let url = "\(server.baseURL)/clips/\(ServerTests.episode)/40000.json?duration_ms=20000"
        let bodies = try parallelGets(url, count: 40, in: work.path)
        let first = bodies[0]
        #expect(try ParsedPeaks(first).length > 0)
        #expect(bodies.allSatisfy { $0 == first }, "every response has the same peaks")
        #expect(occurrences("peaks computed", in: server.log) == 1, "one decode for 40 requests")
        #expect(occurrences("fill started", in: server.log) == 1, "one fill for 40 requests")
        #expect(server.waitForLog("peaks copied to the second tier"))
        let folder = work.path + "/l2/the-daily-tones/0e983347-7815-4b33-8a7e-2b1c9f0e1a11"
        let stored = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("40000-60000.mp3.peaks-256-8-") }
        #expect(stored.count == 1, "beside the clip: \(stored)")
        // Again on the same node: from the local store.
        #expect(try fetch(url).body == first)
        #expect(occurrences("peaks computed", in: server.log) == 1)

        #expect(server.stop() == 0)
        try FileManager.default.removeItem(atPath: work.path + "/cache")
        server = try config.start()
        defer { server.stop() }
        let again = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/40000.json?duration_ms=20000")
        #expect(again.status == 200 && again.body == first)
        #expect(server.log.contains("peaks from the second tier"))
        #expect(!server.log.contains("peaks computed") && !server.log.contains("fill started"), "nothing decoded or cut")
    }

    @Test("A purge removes the peaks from the local store and the clip directory")
    func purge() throws {
        let work = try TemporaryDirectory("peaks-purge")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let url = "\(server.baseURL)/clips/\(ServerTests.episode)/1000.json"
        #expect(try fetch(url).status == 200)
        #expect(server.waitForLog("peaks copied to the second tier"))
        let folder = work.path + "/l2/the-daily-tones/0e983347-7815-4b33-8a7e-2b1c9f0e1a11"
        let peaksFiles = { try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.contains(".peaks-") } }
        #expect(try peaksFiles().count == 1)
        #expect(try adminFetch(server, "/admin/purge/\(ServerTests.episode)?second_tier=1").status == 200)
        #expect(try peaksFiles().isEmpty)
        #expect(try fetch(url).status == 200)
        #expect(occurrences("peaks computed", in: server.log) == 2, "computed again after the purge")
    }

    static let errors = clipDocumentProblems(".json") + [
        ("/clips/685ba776e4f9ec2f0756267a/0.json?samples_per_pixel=31", 400, "invalid_samples_per_pixel"),
        ("/clips/685ba776e4f9ec2f0756267a/0.json?samples_per_pixel=65537", 400, "invalid_samples_per_pixel"),
        ("/clips/685ba776e4f9ec2f0756267a/0.json?samples_per_pixel=-256", 400, "invalid_samples_per_pixel"),
        ("/clips/685ba776e4f9ec2f0756267a/0.json?samples_per_pixel=256&samples_per_pixel=512", 400, "invalid_samples_per_pixel"),
        ("/clips/685ba776e4f9ec2f0756267a/0.json?bits=12", 400, "invalid_bits"),
        ("/clips/685ba776e4f9ec2f0756267a/0.json?bits=%2B8", 400, "invalid_bits"),
        ("/clips/ffffffffffffffffffffffff/0.json?bits=7", 400, "invalid_bits"),
    ]

    @Test("Errors are the clip's JSON problems with CORS; preflight answers like the clip's")
    func errors() throws {
        let work = try TemporaryDirectory("peaks-errors")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        try expectClipProblems(server.baseURL, Self.errors)
        try expectClipPreflight("\(server.baseURL)/clips/\(ServerTests.episode)/0.json")
    }

    @Test("ETag: If-None-Match gives 304 without cutting or decoding; If-Match a mismatch 412; the same tag on another node")
    func etagAndConditionals() throws {
        let path = "/clips/\(ServerTests.episode)/12345.json?bits=16"
        let work = try TemporaryDirectory("peaks-etag")
        defer { work.remove() }
        let etag = try {
            let server = try EmbeddedServer(work: work).start()
            defer { server.stop() }
            let etag = try expectEntityTagConditionals(server.baseURL + path)
            // Another shape of the same clip is another document.
            #expect(try fetch(server.baseURL + path.replacingOccurrences(of: "bits=16", with: "bits=8")).headers["etag"] != etag)
            return etag
        }()
        let fresh = try TemporaryDirectory("peaks-etag-fresh")
        defer { fresh.remove() }
        let server = try EmbeddedServer(work: fresh).start()
        defer { server.stop() }
        let revalidated = try fetch(server.baseURL + path, headers: [("If-None-Match", etag)])
        #expect(revalidated.status == 304, "a node that never saw the clip gives the same tag")
        #expect(!server.log.contains("fill started") && !server.log.contains("peaks computed"), "a 304 reads no audio")
    }

    @Test("With URL signing on, the .json path needs its own signature")
    func signedURLs() throws {
        let key = ["CLIPPROXY_SIGNING_KEY": "peaks-test-signing-key-0123456789"]
        let environment = ProcessInfo.processInfo.environment.merging(key) { $1 }
        func signed(_ path: String) throws -> String { try signedPath(path, environment: environment) }
        let work = try TemporaryDirectory("peaks-signed")
        defer { work.remove() }
        let server = try ClipProxyProcess(environment: EmbeddedServer(work: work).environment.merging(key) { $1 })
        defer { server.stop() }
        let peaks = "/clips/\(ServerTests.episode)/5000.json"
        let unsigned = try fetch(server.baseURL + peaks)
        #expect(unsigned.status == 403 && String(decoding: unsigned.body, as: UTF8.self).contains("signature_required"))
        let good = try fetch(server.baseURL + (try signed(peaks)))
        #expect(good.status == 200)
        #expect(try ParsedPeaks(good.body).length > 0)
        let clipQuery = try signed("/clips/\(ServerTests.episode)/5000").split(separator: "?", maxSplits: 1)[1]
        let borrowed = try fetch("\(server.baseURL)\(peaks)?\(clipQuery)")
        #expect(borrowed.status == 403 && String(decoding: borrowed.body, as: UTF8.self).contains("signature_invalid"))
    }
}

@Suite("Peaks: MongoDB catalog (wire server), S3 source and clip bucket (moto)")
struct PeaksFullStackTests {
    @Test("Cold peaks over S3: one fill, one decode for concurrent requests; the peaks object lands beside the clip; a second node reads it")
    func clipBucket() async throws {
        let work = try TemporaryDirectory("peaks-s3")
        defer { work.remove() }
        try await withTestServer(try TestServer.s3()) { s3 in
            try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
                _ = try FullStackTests.seedBucket(s3)
                let client = try ClipBucketTests().clipBucketClient(s3)
                _ = try client.createBucket(ClipBucketTests.clipBucket)
                let environment = FullStackTests.environment(s3: s3, mongo: mongo, work: work)
                let server = try ClipProxyProcess(environment: environment)
                defer { server.stop() }
                let url = "\(server.baseURL)/clips/\(ServerTests.episode)/7000.json?samples_per_pixel=1024&bits=16"
                let bodies = try parallelGets(url, count: 20, in: work.path)
                let first = bodies[0]
                let parsed = try ParsedPeaks(first)
                #expect(parsed.samplesPerPixel == 1024 && parsed.bits == 16)
                let plan = try PeaksOracle.plan(ServerTests.sourceKey, startMs: 7_000)
                #expect(parsed.length == Int((plan.sampleCount + 1023) / 1024))
                #expect(bodies.allSatisfy { $0 == first }, "every response has the same peaks")
                #expect(occurrences("peaks computed", in: server.log) == 1)
                #expect(occurrences("fill started", in: server.log) == 1)
                #expect(server.waitForLog("peaks copied to the second tier"))
                let folder = "the-daily-tones/0e983347-7815-4b33-8a7e-2b1c9f0e1a11/"
                let objects = try client.listObjectsV2(bucket: ClipBucketTests.clipBucket, prefix: folder).map(\.key)
                let peaksKey = try #require(objects.first { $0.hasPrefix(folder + "7000-37000.mp3.peaks-1024-16-") }, "\(objects)")
                var stored: [UInt8] = []
                _ = try client.getObject(bucket: ClipBucketTests.clipBucket, key: peaksKey) { stored.append(contentsOf: $0) }
                #expect(stored == first)

                // A second node with a store of its own: from the bucket, no cut, no decode.
                let otherWork = try TemporaryDirectory("peaks-s3-second")
                defer { otherWork.remove() }
                let second = try ClipProxyProcess(environment: FullStackTests.environment(s3: s3, mongo: mongo, work: otherWork))
                defer { second.stop() }
                let fromBucket = try fetch(url)
                #expect(fromBucket.body == first)
                let other = try fetch(url.replacingOccurrences(of: server.baseURL, with: second.baseURL))
                #expect(other.status == 200 && other.body == first)
                #expect(second.log.contains("peaks from the second tier"))
                #expect(!second.log.contains("peaks computed") && !second.log.contains("fill started"))
            }
        }
    }
}
