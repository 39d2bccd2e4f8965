import Foundation
import Support
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

    /// The source as resolved: a read of another version (re-uploaded since) fails with
    /// `SourceChangedError` (a file) or S3's `.objectChanged` (If-Match), never mixes versions.
    func open(_ episode: ResolvedEpisode) throws -> any ByteSource {
        switch kind {
        case .directory(let root):
            let file = try FileByteSource(path: "\(root)/\(episode.sourceKey)")
            guard file.identity == episode.etag else { throw SourceChangedError(sourceKey: episode.sourceKey) }
            return file
        case .s3(let client, let bucket):
            return S3ByteSource(client: client, bucket: bucket, key: episode.sourceKey, size: episode.size, etag: episode.etag)
        }
    }
}

/// The shared second tier (L2): the S3 clip bucket, or a clip directory without S3. Clips are
/// stored under the configured key template (the old system's layout by default) with the clip
/// key beside them, so an object that merely has the right name (an old clip) is never served.
protocol ClipTier: Sendable {
    /// Where the clip lives in this tier, e.g. its bucket key.
    func location(_ clip: PreparedClip) -> String
    /// The stored copy as exactly `plan.byteCount` bytes, or nil when absent or not this clip.
    func find(_ clip: PreparedClip) throws -> StoredClip?
    /// Stores a finished clip created (first cut) at `createdMs`.
    func store(_ clip: PreparedClip, contents: ClipContents, createdMs: Int64) throws
    /// A URL a client can download the stored clip from directly, or nil when the tier has none
    /// (a local directory: then clients use the proxy's own URL).
    func presignedURL(_ clip: PreparedClip, expires: Int, now: Date) throws -> String?
    /// A source's serialized frame index shared through this tier, so a node that has never seen
    /// the episode can plan (and find the clip here) without reading the source. nil when absent.
    func frameIndex(source identity: String) throws -> [UInt8]?
    /// Shares a source's serialized frame index (replacing an older one).
    func storeFrameIndex(_ bytes: [UInt8], source identity: String) throws
    /// Removes the clip stored at `location` (purge); true when there was one.
    func remove(_ location: String) throws -> Bool
    /// The locations of the clips stored under `prefix` (a path relative to the tier's root).
    func locations(under prefix: String) throws -> [String]
    /// Removes a source's shared frame index (purge); nothing when there is none.
    func removeFrameIndex(source identity: String) throws
}

/// A clip found in the second tier, with the time it was first cut: every copy of a clip keeps
/// that time as its Last-Modified, so validators never change with the tier or node that answers.
struct StoredClip: Sendable {
    let bytes: any ByteSource
    let createdMs: Int64?
}

/// A finished clip to copy into the second tier: the local store's file, or the bytes of a fill
/// that the local store could not keep (a full disk).
enum ClipContents: Sendable {
    case file(String)
    case bytes([UInt8])
}

/// Where shared frame indexes live in the second tier: beside the clips, under a prefix of their
/// own, named by a hash of the source identity (bucket, key and ETag), so a replaced source
/// never finds the old index.
enum SharedFrameIndex {
    static let prefix = "_clipproxy/frame-index/"
    static func name(_ identity: String) -> String {
        prefix + Digest.sha256(Array(identity.utf8)).hexString + ".cpfi"
    }
}

extension ClipTier {
    func relativePath(_ clip: PreparedClip, template: String) -> String {
        ClipKeyTemplate.expand(template, episode: clip.episode, startMs: clip.request.startMs,
                               endMs: clip.request.startMs + clip.request.durationMs)
    }
}

/// A directory laid out like the clip bucket, for the embedded default (or a shared mount).
struct ClipDirectoryTier: ClipTier {
    let root: String
    let template: String

    func location(_ clip: PreparedClip) -> String { "\(root)/\(relativePath(clip, template: template))" }

    func find(_ clip: PreparedClip) throws -> StoredClip? {
        let path = location(clip)
        var info = stat()
        guard stat(path, &info) == 0, Int64(info.st_size) == clip.plan.byteCount,
              (try? String(contentsOfFile: path + ".key", encoding: .utf8)) == clip.key.hex else { return nil }
        let modifiedMs = Int64(info.st_mtim.tv_sec) * 1000 + Int64(info.st_mtim.tv_nsec) / 1_000_000
        return StoredClip(bytes: try FileByteSource(path: path), createdMs: modifiedMs)
    }

    /// Copies a finished clip in (temporary name, then rename: readers never see a partial file);
    /// the file's modification time is the clip's creation time.
    func store(_ clip: PreparedClip, contents: ClipContents, createdMs: Int64) throws {
        let path = location(clip)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let temporary = path + ".partial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        switch contents {
        // Read, not copyItem: `file` may be a /proc/self/fd link, which copyItem copies as a link.
        case .file(let file): try Data(contentsOf: URL(fileURLWithPath: file)).write(to: URL(fileURLWithPath: temporary))
        case .bytes(let bytes): try Data(bytes).write(to: URL(fileURLWithPath: temporary))
        }
        do {
            try Posix.setFileTimes(temporary, ms: createdMs)
            try clip.key.hex.write(toFile: path + ".key", atomically: true, encoding: .utf8)
            try Posix.rename(temporary, to: path)
        } catch {
            _ = try? Posix.removeFile(temporary)
            throw error
        }
    }

    func presignedURL(_ clip: PreparedClip, expires: Int, now: Date) throws -> String? { nil }

    func remove(_ location: String) throws -> Bool {
        try Posix.removeFile(location + ".key")
        return try Posix.removeFile(location)
    }

    func locations(under prefix: String) throws -> [String] {
        // Paths spelled exactly as `location(_:)` spells them, so listings and lookups compare equal.
        let folder = prefix.hasSuffix("/") ? prefix : prefix + "/"
        let directory = "\(root)/\(folder)"
        guard let walker = FileManager.default.enumerator(atPath: directory) else { return [] }
        var found: [String] = []
        while let relative = walker.nextObject() as? String {
            let path = directory + relative
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, !relative.hasSuffix(".key"),
                  !relative.contains(".partial-") else { continue }
            found.append(path)
        }
        return found
    }

    func removeFrameIndex(source identity: String) throws {
        try Posix.removeFile("\(root)/\(SharedFrameIndex.name(identity))")
    }

    func frameIndex(source identity: String) throws -> [UInt8]? {
        FileManager.default.contents(atPath: "\(root)/\(SharedFrameIndex.name(identity))").map { [UInt8]($0) }
    }

    func storeFrameIndex(_ bytes: [UInt8], source identity: String) throws {
        let path = "\(root)/\(SharedFrameIndex.name(identity))"
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}

/// The S3 clip bucket; the clip key travels as `x-amz-meta-clip-key`.
struct S3ClipTier: ClipTier {
    let client: S3Client
    let bucket: String
    let template: String

    func location(_ clip: PreparedClip) -> String { relativePath(clip, template: template) }

    func find(_ clip: PreparedClip) throws -> StoredClip? {
        let key = location(clip)
        let head: S3ObjectHead
        do { head = try client.headObject(bucket: bucket, key: key) } catch let error as S3Error where error.kind == .notFound { return nil }
        guard head.size == clip.plan.byteCount, head.metadata["clip-key"] == clip.key.hex else { return nil }
        return StoredClip(bytes: S3ByteSource(client: client, bucket: bucket, key: key, size: head.size),
                          createdMs: head.metadata["clip-created-ms"].flatMap { Int64($0) })
    }

    func store(_ clip: PreparedClip, contents: ClipContents, createdMs: Int64) throws {
        let metadata = ["clip-key": clip.key.hex, "clip-created-ms": String(createdMs)]
        switch contents {
        case .file(let file):
            try client.putObject(bucket: bucket, key: location(clip), fileAt: file, contentType: "audio/mpeg", metadata: metadata)
        case .bytes(let bytes):
            _ = try client.putObject(bucket: bucket, key: location(clip), body: bytes, contentType: "audio/mpeg", metadata: metadata)
        }
    }

    func presignedURL(_ clip: PreparedClip, expires: Int, now: Date) throws -> String? {
        try client.presignedGetURL(bucket: bucket, key: location(clip), expires: expires, now: now)
    }

    func remove(_ location: String) throws -> Bool { try client.deleteObject(bucket: bucket, key: location) }

    func locations(under prefix: String) throws -> [String] {
        try client.listObjectsV2(bucket: bucket, prefix: prefix).map(\.key)
    }

    func removeFrameIndex(source identity: String) throws {
        try client.deleteObject(bucket: bucket, key: SharedFrameIndex.name(identity))
    }

    func frameIndex(source identity: String) throws -> [UInt8]? {
        var bytes: [UInt8] = []
        do {
            try client.getObject(bucket: bucket, key: SharedFrameIndex.name(identity)) { bytes.append(contentsOf: $0) }
        } catch let error as S3Error where error.kind == .notFound {
            return nil
        }
        return bytes
    }

    func storeFrameIndex(_ bytes: [UInt8], source identity: String) throws {
        _ = try client.putObject(bucket: bucket, key: SharedFrameIndex.name(identity), body: bytes, contentType: "application/octet-stream")
    }
}

/// `{feed_slug}/{guid}/{start_ms}-{end_ms}.mp3`, the old system's clip layout.
enum ClipKeyTemplate {
    /// The folder every clip of `episode` is stored under: the template up to the last `/` before
    /// its first per-clip placeholder. nil when that folder does not name the episode (a template
    /// such as `{start_ms}/{guid}.mp3`), since listing it would find other episodes' clips.
    /// A catalog value as it goes into a location: guids come from feeds, so a `.` or `..`
    /// segment (`a/../../etc`) is escaped, and no location leaves the clip directory's root.
    /// Any other value (slashes included) is kept as is, as the old system's keys have it.
    static func noDotSegments(_ value: String) -> String {
        guard value.contains(".") else { return value }
        return value.split(separator: "/", omittingEmptySubsequences: false).map { segment in
            segment == "." ? "%2E" : segment == ".." ? "%2E%2E" : String(segment)
        }.joined(separator: "/")
    }

    static func episodePrefix(_ template: String, episode: ResolvedEpisode) -> String? {
        let firstPerClip = ["{start_ms}", "{end_ms}"].compactMap { template.range(of: $0)?.lowerBound }.min() ?? template.endIndex
        guard let slash = template[..<firstPerClip].lastIndex(of: "/") else { return nil }
        let folder = String(template[...slash])
        guard folder.contains("{guid}") || folder.contains("{episode_id}") else { return nil }
        return expand(folder, episode: episode, startMs: 0, endMs: 0)
    }

    static func expand(_ template: String, episode: ResolvedEpisode, startMs: Int64, endMs: Int64) -> String {
        template
            .replacingOccurrences(of: "{feed_slug}", with: noDotSegments(episode.feedSlug))
            .replacingOccurrences(of: "{guid}", with: noDotSegments(episode.guid))
            .replacingOccurrences(of: "{episode_id}", with: noDotSegments(episode.episodeId))
            .replacingOccurrences(of: "{start_ms}", with: String(startMs))
            .replacingOccurrences(of: "{end_ms}", with: String(endMs))
    }
}
