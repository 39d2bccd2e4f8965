import Foundation
import Support

/// An object in a bucket (or a file in a directory laid out like one).
public struct StoredObject: Sendable, Equatable {
    public let key: String
    public let size: Int64
    /// S3's ETag (quotes removed), or a stand-in for files that changes when the file changes.
    public let etag: String

    public init(key: String, size: Int64, etag: String) {
        self.key = key
        self.size = size
        self.etag = etag
    }
}

/// Lists objects under a prefix: the S3 source bucket or a local directory.
public protocol ObjectLister: Sendable {
    func list(prefix: String) throws -> [StoredObject]
}

/// Where an episode's source MP3 is, with what identifies its content.
public struct ResolvedEpisode: Sendable, Equatable {
    public let episodeId: String
    public let guid: String
    public let feedSlug: String
    public let sourceKey: String
    public let etag: String
    public let size: Int64
    /// Other objects that also matched (when more than one did), for the log.
    public let alsoMatched: [String]

    public init(episodeId: String, guid: String, feedSlug: String, sourceKey: String, etag: String, size: Int64, alsoMatched: [String] = []) {
        self.episodeId = episodeId
        self.guid = guid
        self.feedSlug = feedSlug
        self.sourceKey = sourceKey
        self.etag = etag
        self.size = size
        self.alsoMatched = alsoMatched
    }
}

/// Finds an episode's source audio: the one object under `<feed_slug>/<guid>/audio/` whose name
/// ends `_<guid[:8]>_audio.mp3`.
///
/// When several match, the greatest key wins: names start with the publication date, so that is
/// the newest upload. The others are reported in `alsoMatched` so the caller can log them.
public struct SourceLocator: Sendable {
    public let catalog: any EpisodeCatalog
    let lister: any ObjectLister

    public init(catalog: any EpisodeCatalog, lister: any ObjectLister) {
        self.catalog = catalog
        self.lister = lister
    }

    public func resolve(_ episodeId: String) throws -> ResolvedEpisode {
        let entry = try catalog.resolve(episodeId)
        let prefix = "\(entry.feedSlug)/\(entry.guid)/audio/"
        let suffix = "_\(entry.guid.prefix(8))_audio.mp3"
        let matches = try lister.list(prefix: prefix)
            .filter { $0.key.hasPrefix(prefix) && $0.key.hasSuffix(suffix) && !$0.key.dropFirst(prefix.count).contains("/") }
            .sorted { $0.key > $1.key }
        guard let chosen = matches.first else {
            throw CatalogError.notFound("no source audio under \(prefix) ending \(suffix)")
        }
        return ResolvedEpisode(episodeId: episodeId, guid: entry.guid, feedSlug: entry.feedSlug, sourceKey: chosen.key,
                               etag: chosen.etag, size: chosen.size, alsoMatched: matches.dropFirst().map(\.key))
    }
}

/// A directory laid out like the source bucket.
public struct DirectoryLister: ObjectLister {
    public let root: String
    public init(root: String) { self.root = root }

    public func list(prefix: String) throws -> [StoredObject] {
        // Keys come from catalog data: refuse anything that would step outside the root.
        guard !prefix.split(separator: "/").contains(where: { $0 == ".." || $0 == "." }) else { return [] }
        let base = (root as NSString).appendingPathComponent(prefix)
        let directory = prefix.hasSuffix("/") ? base : (base as NSString).deletingLastPathComponent
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var out: [StoredObject] = []
        for name in names.sorted() {
            let path = (directory as NSString).appendingPathComponent(name)
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            let key = String(path.dropFirst(root.count).drop { $0 == "/" })
            guard key.hasPrefix(prefix) else { continue }
            // Files have no ETag: size, modification time and inode change whenever the file does.
            let etag = Posix.fileIdentity(info)
            out.append(StoredObject(key: key, size: Int64(info.st_size), etag: etag))
        }
        return out
    }
}
