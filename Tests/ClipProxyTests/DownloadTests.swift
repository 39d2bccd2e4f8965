import Foundation
import Testing
import TestSupport

/// Issue 22, part 2: `?download=1` is the clip as a file a person keeps: an ID3v2.4 tag in front
/// (title with the clip's times, podcast, date, length, the clip's URL, the source's cover), the
/// untagged clip's bytes after it, a name in `Content-Disposition`, a representation of its own.
@Suite("Downloads: clips that carry their name and tags", .serialized)
struct DownloadTests {
    static let covered = "685ba776e4f9ec2f0756267d"   // Tagged and Covered, "Cover Art Special", 2024-02-29, with an APIC
    static let plain = "685ba776e4f9ec2f0756267a"     // The Daily Tones, "Clocks That Disagree", no cover

    /// The size of the ID3v2 tag at the start of `bytes` (header included), or 0.
    static func tagLength(_ bytes: [UInt8]) -> Int {
        guard bytes.count >= 10, bytes[0..<3].elementsEqual("ID3".utf8) else { return 0 }
        return 10 + bytes[6..<10].reduce(0) { $0 << 7 | Int($1) }
    }

    /// ffprobe's format tags and stream types of `bytes` written to a file.
    static func probe(_ bytes: [UInt8], in work: TemporaryDirectory) throws -> (tags: [String: String], streams: [String]) {
        let path = work.path + "/download-\(UUID().uuidString).mp3"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let result = try FFmpegOracle.run("/usr/bin/ffprobe", ["-v", "error", "-show_entries", "format_tags:stream=codec_type", "-of", "json", path])
        let json = try #require(try JSONSerialization.jsonObject(with: result.stdout) as? [String: Any])
        let tags = (json["format"] as? [String: Any])?["tags"] as? [String: String] ?? [:]
        let streams = (json["streams"] as? [[String: Any]] ?? []).compactMap { $0["codec_type"] as? String }
        return (tags, streams)
    }

    @Test("A download: ffprobe reads title, artist, album and date; the cover is attached; after the tag, exactly the untagged clip; named by Content-Disposition")
    func taggedFile() throws {
        let work = try TemporaryDirectory("download")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let url = "\(server.baseURL)/clips/\(Self.covered)/12000?duration_ms=20000"
        let download = try fetch(url + "&download=1")
        #expect(download.status == 200 && download.headers["content-type"] == "audio/mpeg")
        #expect(download.headers["content-length"] == String(download.body.count))
        #expect(download.headers["content-disposition"] == "attachment; filename=\"Tagged and Covered - Cover Art Special (0.12-0.32).mp3\"; "
                + "filename*=UTF-8''Tagged%20and%20Covered%20-%20Cover%20Art%20Special%20%280.12-0.32%29.mp3")
        let untagged = try fetch(url)
        let tag = Self.tagLength(download.body)
        #expect(tag > 0 && download.body[3] == 4, "an ID3v2.4 tag in front")
        #expect(sameBytes(download.body[tag...], untagged.body), "after the tag: the untagged clip, its Info/LAME frame first")
        #expect(download.headers["etag"] != nil && download.headers["etag"] != untagged.headers["etag"], "a representation of its own")

        let probed = try Self.probe(download.body, in: work)
        #expect(probed.tags["title"] == "Cover Art Special (0:12-0:32)")
        #expect(probed.tags["artist"] == "Tagged and Covered" && probed.tags["album"] == "Tagged and Covered")
        #expect(probed.tags["date"] == "2024-02-29")
        #expect(probed.tags["comment"]?.hasSuffix("/clips/\(Self.covered)/12000?duration_ms=20000") == true, "comment: \(probed.tags["comment"] ?? "none")")
        #expect(probed.tags["TLEN"] == "20000" || probed.tags["TLEN"] == nil)
        #expect(probed.streams == ["audio", "video"], "the cover is attached: \(probed.streams)")

        let bare = try fetch("\(server.baseURL)/clips/\(Self.plain)/3000?duration_ms=5000&download=1")
        let bareProbe = try Self.probe(bare.body, in: work)
        #expect(bareProbe.tags["title"] == "Clocks That Disagree (0:03-0:08)" && bareProbe.tags["artist"] == "The Daily Tones")
        #expect(bareProbe.streams == ["audio"], "no cover where the source has none")
    }

    @Test("Range, HEAD and conditionals on a download, a snapped download's Content-Location, download=2 is 400")
    func representation() throws {
        let work = try TemporaryDirectory("download-ranges")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let url = "\(server.baseURL)/clips/\(Self.covered)/30000?download=1"
        let whole = try fetch(url)
        let tag = Self.tagLength(whole.body)
        let etag = try #require(whole.headers["etag"])
        for (first, last) in [(0, 99), (tag - 10, tag + 9), (tag + 500, tag + 4999), (whole.body.count - 100, whole.body.count - 1)] {
            let part = try fetch(url, headers: [("Range", "bytes=\(first)-\(last)")])
            #expect(part.status == 206 && part.headers["content-range"] == "bytes \(first)-\(last)/\(whole.body.count)")
            #expect(sameBytes(part.body, whole.body[first...last]), "bytes \(first)-\(last)")
        }
        let head = try fetch(url, method: "HEAD")
        #expect(head.headers["content-length"] == String(whole.body.count) && head.headers["content-disposition"] == whole.headers["content-disposition"])
        #expect(try fetch(url, headers: [("If-None-Match", etag)]).status == 304)
        #expect(try fetch(url, headers: [("If-Range", etag), ("Range", "bytes=5-9")]).status == 206)

        let snapped = try fetch(url + "&snap=pause")
        let location = try #require(snapped.headers["content-location"])
        #expect(location.hasSuffix("&download=1"), "\(location)")
        let exact = try fetch(server.baseURL + location)
        #expect(exact.headers["etag"] == snapped.headers["etag"] && sameBytes(exact.body, snapped.body))

        for bad in ["download=2", "download=", "download=1&download=1"] {
            let refused = try fetch("\(server.baseURL)/clips/\(Self.covered)/1000?\(bad)")
            #expect(refused.status == 400 && String(decoding: refused.body, as: UTF8.self).contains("\"invalid_download\""), "\(bad): \(refused.status)")
        }
    }
}
