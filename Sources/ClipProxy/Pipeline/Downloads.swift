import Foundation
import Index
import Support
import Synchronization
import Trim
import Upstream

/// `download=1`: the clip as a file a person keeps. Its bytes are an ID3v2.4 tag (episode title
/// with the clip's times, podcast, date, length, the clip's URL, the source's own cover art of
/// at most 256 KiB) followed by the clip exactly as served, whose Info/LAME frame then comes
/// right after the tag. It is a representation of its own: its ETag names the clip key and the
/// tag, and Range applies to the tagged bytes. Only the tag is made here; the clip comes from
/// the tiers as always.
struct ClipDownload: Sendable {
    let tag: [UInt8]
    let filename: String

    static let maxCoverBytes = 256 << 10

    /// The ETag: 32 hex digits of the SHA-256 of the clip key and the tag.
    func etag(of clip: PreparedClip) -> String {
        "\"\(ClipKey(identity: "download.v1|\(clip.key.hex)|\(Digest.sha256(tag).hexString)").hex.prefix(32))\""
    }

    /// The tagged file as RFC 9110 sees it: the tag's length more than the clip.
    func representation(of clip: PreparedClip, createdMs: Int64) -> ByteRangeResponse.Representation {
        let plain = clip.representation(createdMs: createdMs)
        return ByteRangeResponse.Representation(length: Int64(tag.count) + plain.length, etag: etag(of: clip),
                                                lastModified: plain.lastModified, contentType: plain.contentType)
    }

    /// `attachment` with an ASCII `filename` and the UTF-8 one as RFC 8187 `filename*`.
    var contentDisposition: String {
        let ascii = String(filename.unicodeScalars.map { $0.isASCII && $0 != "\\" && $0 != "\"" ? Character($0) : "_" })
        return "attachment; filename=\"\(ascii)\"; filename*=UTF-8''\(Self.rfc8187(filename))"
    }

    /// `<podcast> - <episode title> (m.ss-m.ss).mp3`, or without the podcast when the catalog has
    /// none; characters file systems refuse (`/ \ : * ? " < > |`, controls) become `_`.
    static func filename(podcast: String?, title: String, window: ClipRequest) -> String {
        let times = "(" + clock(window.startMs, ".") + "-" + clock(window.startMs + window.durationMs, ".") + ")"
        let name = [podcast, "\(title) \(times)"].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: " - ")
        let unsafe = Set("/\\:*?\"<>|".unicodeScalars)
        return String(name.unicodeScalars.map { unsafe.contains($0) || $0.value < 0x20 || $0.value == 0x7F ? "_" : Character($0) }) + ".mp3"
    }

    /// `m:ss` (or `m.ss`) of a time in ms, whole seconds.
    static func clock(_ ms: Int64, _ separator: String) -> String {
        let seconds = ms / 1000
        return "\(seconds / 60)\(separator)\(String(format: "%02d", seconds % 60))"
    }

    /// RFC 8187 `value-chars`: UTF-8 bytes, every one outside `attr-char` percent-encoded.
    static func rfc8187(_ text: String) -> String {
        let attrChars = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~".utf8)
        return text.utf8.map { attrChars.contains($0) ? String(UnicodeScalar($0)) : String(format: "%%%02X", $0) }.joined()
    }
}

extension ClipPipeline {
    /// The download of `clip`, whose tag comments `clipURL`: names and date from the catalog and
    /// the cover from the source's head, each left out when it cannot be had (a missing field,
    /// a catalog outage, no cover), never an error.
    func download(of clip: PreparedClip, clipURL: String) async throws -> ClipDownload {
        let summary = try? await blocking { [catalog = locator.catalog, guid = clip.episode.guid] in try catalog.episodeSummary(guid: guid) }
        let cover = await cover(of: clip)
        let title = (summary?.episodeTitle).flatMap { $0.isEmpty ? nil : $0 } ?? clip.request.episodeId
        let podcast = (summary?.podcastName).flatMap { $0.isEmpty ? nil : $0 }
        let window = clip.request
        var tag = ID3Tag()
        tag.texts = [("TIT2", "\(title) (\(ClipDownload.clock(window.startMs, ":"))-\(ClipDownload.clock(window.startMs + window.durationMs, ":")))")]
        if let podcast { tag.texts += [("TPE1", podcast), ("TALB", podcast)] }
        if let date = summary?.publishedDate { tag.texts.append(("TDRC", String(date.prefix(10)))) }
        tag.texts.append(("TLEN", String(clip.plan.durationMs)))
        tag.comment = clipURL
        tag.picture = cover
        return ClipDownload(tag: tag.bytes, filename: ClipDownload.filename(podcast: podcast, title: title, window: window))
    }

    /// The source's own front cover (its first APIC) when it is at most 256 KiB: one read of the
    /// source's head, which holds its ID3 tag. nil when there is none or the read fails.
    private func cover(of clip: PreparedClip) async -> ID3Tag.Picture? {
        guard let index = try? await indexes.index(of: clip.episode, identity: clip.sourceIdentity, coveringMs: 0), index.audioStart >= 10 else { return nil }
        let headBytes = Int(min(index.audioStart, Int64(ClipDownload.maxCoverBytes + (64 << 10))))
        guard let head = try? await blocking({ [self] in try indexes.openSource(clip.episode, identity: clip.sourceIdentity).read(offset: 0, count: headBytes) }),
              let picture = ID3Tag.picture(inHead: head), picture.data.count <= ClipDownload.maxCoverBytes else { return nil }
        return picture
    }
}
