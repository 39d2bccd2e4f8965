import Foundation
import Trim
import Upstream

/// Opens the source audio of a resolved episode as byte-range reads.
struct SourceOpener: Sendable {
    enum Kind: Sendable {
        case directory(String)
        case s3(S3Client, bucket: String)
    }
    let kind: Kind

    /// What identifies the source's content: where it is and its ETag.
    func identity(of episode: ResolvedEpisode) -> String {
        switch kind {
        case .directory: "dir:\(episode.sourceKey)#\(episode.etag)"
        case .s3(_, let bucket): "s3:\(bucket)/\(episode.sourceKey)#\(episode.etag)"
        }
    }

    func open(_ episode: ResolvedEpisode) throws -> any ByteSource {
        switch kind {
        case .directory(let root): try FileByteSource(path: "\(root)/\(episode.sourceKey)")
        case .s3(let client, let bucket): S3ByteSource(client: client, bucket: bucket, key: episode.sourceKey, size: episode.size)
        }
    }
}

/// The second tier when there is no S3 clip bucket: a directory laid out like the clip bucket
/// (`s3.clip_key_template`), shared by nodes that mount it.
struct ClipDirectoryTier: Sendable {
    let root: String
    let template: String

    func relativePath(_ clip: PreparedClip) -> String {
        ClipKeyTemplate.expand(template, episode: clip.episode, startMs: clip.request.startMs,
                               endMs: clip.request.startMs + clip.request.durationMs)
    }

    /// The stored copy, if present and of the planned length (anything else is ignored).
    func find(_ clip: PreparedClip) throws -> String? {
        let path = "\(root)/\(relativePath(clip))"
        var info = stat()
        guard stat(path, &info) == 0, Int64(info.st_size) == clip.plan.byteCount else { return nil }
        // The template names a window, not content: the side file names the exact clip key.
        guard (try? String(contentsOfFile: path + ".key", encoding: .utf8)) == clip.key.hex else { return nil }
        return path
    }

    /// Copies a finished clip in (temporary name, then rename: readers never see a partial file).
    func store(_ clip: PreparedClip, from file: String) throws {
        let path = "\(root)/\(relativePath(clip))"
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let temporary = path + ".partial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.removeItem(atPath: temporary)
        try FileManager.default.copyItem(atPath: file, toPath: temporary)
        try clip.key.hex.write(toFile: path + ".key", atomically: true, encoding: .utf8)
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw ConfigurationError("cannot write \(path) (errno \(errno))")
        }
    }
}

/// `{feed_slug}/{guid}/{start_ms}-{end_ms}.mp3`, the old system's clip layout.
enum ClipKeyTemplate {
    static func expand(_ template: String, episode: ResolvedEpisode, startMs: Int64, endMs: Int64) -> String {
        template
            .replacingOccurrences(of: "{feed_slug}", with: episode.feedSlug)
            .replacingOccurrences(of: "{guid}", with: episode.guid)
            .replacingOccurrences(of: "{episode_id}", with: episode.episodeId)
            .replacingOccurrences(of: "{start_ms}", with: String(startMs))
            .replacingOccurrences(of: "{end_ms}", with: String(endMs))
    }
}
