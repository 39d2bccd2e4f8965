import Support

/// A clip's content-addressed key: 64 lowercase hex digits (SHA-256 of what identifies the clip).
public struct ClipKey: Hashable, Sendable, CustomStringConvertible {
    public let hex: String

    /// Nil unless `hex` is exactly 64 lowercase hex digits (keys become file names).
    public init?(hex: String) {
        guard hex.utf8.count == 64, hex.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else { return nil }
        self.hex = hex
    }

    /// The key for an arbitrary identity string (its SHA-256).
    public init(identity: String) {
        hex = Digest.sha256(Array(identity.utf8)).hexString
    }

    public var description: String { hex }
    var bytes: [UInt8] { Array(hex.utf8) }
}

/// What the index knows about one stored clip.
public struct ClipRecord: Sendable, Equatable {
    /// 2 added `episodeId`; version 1 records still decode (without it).
    static let formatVersion: UInt8 = 2

    public var byteCount: Int64
    /// SHA-256 of the clip's bytes, computed while it was written.
    public var digest: [UInt8]
    /// Where the clip lives in the second tier (its clip-bucket key or clip-directory path), once copied there.
    public var secondTierLocation: String?
    public var createdMs: Int64
    public var lastAccessMs: Int64
    /// The episode the clip was cut from, so `purge` can find its clips; nil in version 1 records.
    public var episodeId: String?

    public init(byteCount: Int64, digest: [UInt8], secondTierLocation: String?, createdMs: Int64, lastAccessMs: Int64, episodeId: String? = nil) {
        self.byteCount = byteCount
        self.digest = digest
        self.secondTierLocation = secondTierLocation
        self.createdMs = createdMs
        self.lastAccessMs = lastAccessMs
        self.episodeId = episodeId
    }

    func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.u8(Self.formatVersion)
        w.i64(byteCount)
        w.bytes(digest)
        w.u8(secondTierLocation == nil ? 0 : 1)
        if let secondTierLocation { w.string(secondTierLocation) }
        w.i64(createdMs)
        w.i64(lastAccessMs)
        w.u8(episodeId == nil ? 0 : 1)
        if let episodeId { w.string(episodeId) }
        return w.data
    }

    init(decoding bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        let version = try r.u8()
        guard version == 1 || version == Self.formatVersion else {
            throw RecordDecodingError("clip record version \(version), expected 1 or \(Self.formatVersion)")
        }
        byteCount = try r.i64()
        digest = try r.bytes(32)
        secondTierLocation = try r.u8() == 1 ? try r.string() : nil
        createdMs = try r.i64()
        lastAccessMs = try r.i64()
        let hasEpisode = version >= 2 ? try r.u8() == 1 : false
        episodeId = hasEpisode ? try r.string() : nil
        guard r.remaining == 0, byteCount >= 0 else { throw RecordDecodingError("clip record has trailing or invalid data") }
    }
}

/// An episode resolved through the catalog, cached with an expiry so the catalog is not asked
/// on every request.
public struct EpisodeRecord: Sendable, Equatable {
    static let formatVersion: UInt8 = 1

    public var guid: String
    public var feedSlug: String
    /// Where the source MP3 is: a bucket key, or a path under the source directory.
    public var sourceKey: String
    public var etag: String
    public var size: Int64
    public var expiresMs: Int64

    public init(guid: String, feedSlug: String, sourceKey: String, etag: String, size: Int64, expiresMs: Int64) {
        self.guid = guid
        self.feedSlug = feedSlug
        self.sourceKey = sourceKey
        self.etag = etag
        self.size = size
        self.expiresMs = expiresMs
    }

    func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.u8(Self.formatVersion)
        w.string(guid); w.string(feedSlug); w.string(sourceKey); w.string(etag)
        w.i64(size); w.i64(expiresMs)
        return w.data
    }

    init(decoding bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        let version = try r.u8()
        guard version == Self.formatVersion else { throw RecordDecodingError("episode record version \(version), expected \(Self.formatVersion)") }
        guid = try r.string(); feedSlug = try r.string(); sourceKey = try r.string(); etag = try r.string()
        size = try r.i64(); expiresMs = try r.i64()
        guard r.remaining == 0 else { throw RecordDecodingError("episode record has trailing data") }
    }
}
