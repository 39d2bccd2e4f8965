import Foundation
import Testing
import TestSupport

/// Issue 22, part 1: `?snap=pause` moves a clip's start into a pause within [start - 500 ms,
/// start + 250 ms] and its end into one within [end - 250 ms, end + 750 ms], names the exact
/// window in `Content-Location`, and is then that exact clip in every way.
@Suite("Snap to pauses: clips start and end between words", .serialized)
struct SnapToPausesTests {
    static let speechId = "snap-speech-0001"
    static let chirpId = "snap-chirp-00001"

    /// A catalog and source directory holding the generated speech and chirp episodes only,
    /// served with the embedded default (files, directories).
    struct Library {
        let work: TemporaryDirectory
        let speech: SpeechFixture.Episode
        let chirp: SpeechFixture.Episode

        init() throws {
            work = try TemporaryDirectory("snap")
            speech = try SpeechFixture.speech.get()
            chirp = try SpeechFixture.chirp.get()
            try FileManager.default.createDirectory(atPath: work.path + "/catalog", withIntermediateDirectories: true)
            var metadata = "", chunks = ""
            for (number, (guid, feed, file, title)) in [(speechId, "pause-radio", speech.mp3, "Sailors and Clocks"),
                                                       (chirpId, "sweep-music", chirp.mp3, "A Long Sweep")].enumerated() {
                let folder = "\(work.path)/source/\(feed)/\(guid)/audio"
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                try FileManager.default.copyItem(atPath: file, toPath: "\(folder)/2025-02-0\(number + 1)-episode_\(guid.prefix(8))_audio.mp3")
                metadata += "{\"_id\":{\"$oid\":\"6a000000000000000000000\(number)\"},\"guid\":\"\(guid)\",\"podcast_name\":\"\(feed)\","
                    + "\"episode_title\":\"\(title)\",\"published_date\":{\"$date\":\"2025-02-0\(number + 1)T10:00:00.000Z\"},\"duration_ms\":60000}\n"
                chunks += "{\"_id\":{\"$oid\":\"6b000000000000000000000\(number)\"},\"episode_id\":\"\(guid)\",\"feed_slug\":\"\(feed)\","
                    + "\"chunk_index\":0,\"start_time\":0.0,\"end_time\":15.0,\"text\":\"\(title)\"}\n"
            }
            try metadata.write(toFile: work.path + "/catalog/episode_metadata.json", atomically: true, encoding: .utf8)
            try chunks.write(toFile: work.path + "/catalog/transcript_chunks_768d.json", atomically: true, encoding: .utf8)
        }

        var environment: [String: String] {
            ["CLIPPROXY_CACHE_DIR": work.path + "/cache", "CLIPPROXY_SECOND_TIER_DIR": work.path + "/l2",
             "CLIPPROXY_CATALOG_KIND": "file", "CLIPPROXY_CATALOG_DIR": work.path + "/catalog",
             "CLIPPROXY_SOURCE_KIND": "dir", "CLIPPROXY_SOURCE_DIR": work.path + "/source"]
        }
    }

    /// A server on a new `Library`, both gone when `body` returns.
    static func serving(_ body: (Library, ClipProxyProcess) throws -> Void) throws {
        let library = try Library()
        defer { library.work.remove() }
        let server = try ClipProxyProcess(environment: library.environment)
        defer { server.stop() }
        try body(library, server)
    }

    /// The window a `Content-Location: /clips/<id>/<start>?duration_ms=<d>` names.
    static func window(_ location: String?) -> (startMs: Int64, durationMs: Int64)? {
        guard let location, let url = URLComponents(string: location),
              let start = url.path.split(separator: "/").last.flatMap({ Int64($0) }),
              let duration = url.queryItems?.first(where: { $0.name == "duration_ms" })?.value.flatMap({ Int64($0) }) else { return nil }
        return (start, duration)
    }

    /// Deterministic "arbitrary" times: a linear congruential sequence.
    static func arbitrary(_ count: Int, in range: ClosedRange<Int64>, seed: UInt64) -> [Int64] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return range.lowerBound + Int64((state >> 33) % UInt64(range.count))
        }
    }

    @Test("Speech: 48 windows at arbitrary times start and end inside pauses wherever the search holds one, each equal to clipproxy trim at the reported window")
    func speech() throws {
        try Self.serving { library, server in try Self.speech(library, server) }
    }

    static func speech(_ library: Library, _ server: ClipProxyProcess) throws {
        let episode = library.speech
        // A pause the search must find: at least 80 ms of silence wholly inside the interval.
        func holdsPause(_ from: Int64, _ to: Int64) -> Bool {
            episode.pauses.contains { $0.durationMs >= 80 && $0.startMs >= Double(from) && $0.endMs <= Double(to) }
        }
        func inPause(_ ms: Int64) -> Bool { episode.pauses.contains { $0.contains(Double(ms)) } }
        let starts = Self.arbitrary(48, in: 600...(episode.durationMs - 20_000), seed: 22)
        let durations = Self.arbitrary(48, in: 4_000...18_000, seed: 7)
        var checked = 0, moved = 0
        for (startMs, durationMs) in zip(starts, durations) {
            let url = "\(server.baseURL)/clips/\(speechId)/\(startMs)?snap=pause&duration_ms=\(durationMs)"
            let response = try fetch(url)
            let what = "snap of \(startMs)+\(durationMs)"
            guard response.status == 200, let window = Self.window(response.headers["content-location"]) else {
                Issue.record("\(what): \(response.status), Content-Location \(response.headers["content-location"] ?? "none")")
                continue
            }
            let (endMs, snappedEnd) = (startMs + durationMs, window.startMs + window.durationMs)
            #expect((startMs - 500...startMs + 250).contains(window.startMs), "\(what): start moved to \(window.startMs)")
            #expect((endMs - 250...endMs + 750).contains(snappedEnd), "\(what): end moved to \(snappedEnd)")
            if holdsPause(startMs - 500, startMs + 250) {
                checked += 1
                #expect(inPause(window.startMs), "\(what): start \(window.startMs) ms is in no pause; pauses near: \(episode.pauses.filter { abs($0.startMs - Double(startMs)) < 1000 })")
            }
            if holdsPause(endMs - 250, endMs + 750) {
                checked += 1
                #expect(inPause(snappedEnd), "\(what): end \(snappedEnd) ms is in no pause; pauses near: \(episode.pauses.filter { abs($0.startMs - Double(endMs)) < 1000 })")
            }
            if window != (startMs, durationMs) { moved += 1 }
            let expected = try trimFile(episode.mp3, startMs: Int(window.startMs), durationMs: Int(window.durationMs))
            #expect(sameBytes(response.body, expected), "\(what): \(response.body.count) bytes that are not clipproxy trim's \(expected.count) at \(window)")
            let exact = try fetch(server.baseURL + response.headers["content-location"]!)
            #expect(exact.headers["etag"] == response.headers["etag"] && sameBytes(exact.body, response.body),
                    "\(what): \(response.headers["content-location"]!) is not the same representation")
        }
        #expect(checked >= 40, "only \(checked) boundaries had a pause in reach: the fixture does not test enough")
        #expect(moved >= 40, "only \(moved) of 48 windows moved")
    }

    @Test("Music (a chirp): the window stays as asked")
    func music() throws {
        try Self.serving { library, server in
            for startMs in Self.arbitrary(6, in: 600...50_000, seed: 3) {
                let response = try fetch("\(server.baseURL)/clips/\(Self.chirpId)/\(startMs)?snap=pause&duration_ms=20000")
                #expect(response.status == 200)
                #expect(response.headers["content-location"] == "/clips/\(Self.chirpId)/\(startMs)?duration_ms=20000")
                let expected = try trimFile(library.chirp.mp3, startMs: Int(startMs), durationMs: 20_000)
                #expect(sameBytes(response.body, expected), "chirp at \(startMs)")
            }
        }
    }

    @Test("A snapped clip is a clip: Range on a cold one, HEAD, conditionals, the fast path, coalescing; snap=foo is 400")
    func representation() throws {
        try Self.serving { library, server in try Self.representation(library, server) }
    }

    static func representation(_ library: Library, _ server: ClipProxyProcess) throws {
        let url = "\(server.baseURL)/clips/\(Self.speechId)/31234?snap=pause"
        let part = try fetch(url, headers: [("Range", "bytes=1000-1999")])
        #expect(part.status == 206 && part.headers["x-clip-tier"] == "part" && part.body.count == 1000)
        let window = try #require(Self.window(part.headers["content-location"]))
        let expected = try trimFile(library.speech.mp3, startMs: Int(window.startMs), durationMs: Int(window.durationMs))
        #expect(sameBytes(part.body, expected[1000..<2000]))
        #expect(part.headers["content-range"] == "bytes 1000-1999/\(expected.count)")

        let head = try fetch(url, method: "HEAD")
        #expect(head.status == 200 && head.headers["content-length"] == String(expected.count) && head.headers["content-location"] == part.headers["content-location"])
        let whole = try fetch(url)
        #expect(whole.status == 200 && sameBytes(whole.body, expected))
        #expect(server.waitForLog("fill finished"))
        let etag = try #require(whole.headers["etag"])
        let again = try fetch(url)
        #expect(again.headers["x-clip-tier"] == "l1_hit" && again.headers["content-location"] == part.headers["content-location"])
        let notModified = try fetch(url, headers: [("If-None-Match", etag)])
        #expect(notModified.status == 304 && notModified.headers["content-location"] == part.headers["content-location"])
        #expect(server.log.components(separatedBy: "clip boundaries snapped to pauses").count - 1 == 1, "one choice for every request of the window")

        // 20 at once for a cold snapped window: one choice, one fill.
        let cold = "\(server.baseURL)/clips/\(Self.speechId)/52222?snap=pause&duration_ms=10000"
        var arguments = ["--silent", "--parallel", "--parallel-immediate", "--parallel-max", "20"]
        for i in 0..<20 { arguments += ["-o", library.work.path + "/out\(i).mp3", cold] }
        #expect(try FFmpegOracle.run("/usr/bin/curl", arguments).status == 0)
        let bodies = try (0..<20).map { try [UInt8](Data(contentsOf: URL(fileURLWithPath: library.work.path + "/out\($0).mp3"))) }
        #expect(bodies.allSatisfy { sameBytes($0, bodies[0]) } && !bodies[0].isEmpty)
        #expect(server.log.components(separatedBy: "clip boundaries snapped to pauses").count - 1 == 2)
        #expect(server.log.components(separatedBy: "fill started").count - 1 == 2)

        for bad in ["snap=foo", "snap=", "snap=pause&snap=pause"] {
            let refused = try fetch("\(server.baseURL)/clips/\(Self.speechId)/1000?\(bad)")
            #expect(refused.status == 400 && String(decoding: refused.body, as: UTF8.self).contains("\"invalid_snap\""), "\(bad): \(refused.status)")
        }
    }

    @Test("Captions (.vtt) and peaks (.json) with snap=pause describe the window /clips snaps to: the exact window's documents, not the asked one's")
    func documents() throws {
        try Self.serving { _, server in
            // Inside the fixture's one transcript chunk (0-15 s), so the cue's times depend on the window.
            let (startMs, durationMs): (Int64, Int64) = (4_321, 8_000)
            let asked = "\(server.baseURL)/clips/\(Self.speechId)/\(startMs)"
            let clip = try fetch(asked + "?snap=pause&duration_ms=\(durationMs)")
            let window = try #require(Self.window(clip.headers["content-location"]))
            #expect(window != (startMs, durationMs), "the fixture must move this window")
            let exact = "\(server.baseURL)/clips/\(Self.speechId)/\(window.startMs)"
            for suffix in [".vtt", ".json"] {
                let snapped = try fetch(asked + suffix + "?snap=pause&duration_ms=\(durationMs)")
                let ofWindow = try fetch(exact + suffix + "?duration_ms=\(window.durationMs)")
                let unsnapped = try fetch(asked + suffix + "?duration_ms=\(durationMs)")
                #expect(snapped.status == 200 && ofWindow.status == 200, "\(suffix): \(snapped.status) \(ofWindow.status)")
                #expect(sameBytes(snapped.body, ofWindow.body) && snapped.headers["etag"] == ofWindow.headers["etag"],
                        "\(suffix) of the snapped request is the exact window's: \(String(decoding: snapped.body.prefix(300), as: UTF8.self))")
                #expect(!sameBytes(snapped.body, unsnapped.body), "\(suffix) is not the asked window's")
            }
        }
    }

    @Test("A restart keeps the choice: the snapped window is read from the local store, not decoded again")
    func keptAcrossRestarts() throws {
        let library = try Library()
        defer { library.work.remove() }
        var server = try ClipProxyProcess(environment: library.environment)
        let url = "/clips/\(Self.speechId)/44444?snap=pause&duration_ms=8000"
        let first = try fetch(server.baseURL + url)
        #expect(server.log.contains("clip boundaries snapped to pauses"))
        #expect(server.waitForLog("fill finished"))
        #expect(server.stop() == 0)
        server = try ClipProxyProcess(environment: library.environment)
        defer { server.stop() }
        let second = try fetch(server.baseURL + url)
        #expect(second.headers["content-location"] == first.headers["content-location"] && second.headers["x-clip-tier"] == "l1_hit")
        #expect(!server.log.contains("clip boundaries snapped to pauses"))
    }
}
