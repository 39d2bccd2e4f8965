import Foundation
import Index
import Upstream

/// What a clip's waveform peaks are asked with: block size and bit depth. Together with the clip
/// key they name one peaks document.
struct PeaksShape: Sendable, Hashable {
    var samplesPerPixel: Int
    var bits: Int

    /// Bump when the computation changes: new keys, new ETags, nothing old is served.
    static let version = "peaks.v1"

    /// The local store's key for these peaks of `clip` (content-addressed like the clip's).
    func key(of clip: PreparedClip) -> ClipKey {
        ClipKey(identity: "\(Self.version)|\(clip.key.hex)|\(samplesPerPixel)|\(bits)")
    }

    /// Beside the clip in the second tier, so a purge of the episode's folder takes them too. The
    /// name carries part of the peaks key: a same-named clip of another source version (or an
    /// older engine) never finds these.
    func location(of clip: PreparedClip, in tier: any ClipTier) -> String {
        "\(tier.location(clip)).peaks-\(samplesPerPixel)-\(bits)-\(key(of: clip).hex.prefix(16)).json"
    }
}

/// A second tier that can keep small objects derived from a clip (its peaks) at a location of
/// their own. Both tiers can; the protocol keeps `ClipTier` itself unchanged.
protocol DerivedObjectTier: ClipTier {
    /// The object's bytes, or nil when there is none.
    func derivedObject(at location: String) throws -> [UInt8]?
    func storeDerivedObject(_ bytes: [UInt8], at location: String, contentType: String) throws
}

extension ClipDirectoryTier: DerivedObjectTier {
    func derivedObject(at location: String) throws -> [UInt8]? {
        FileManager.default.contents(atPath: location).map { [UInt8]($0) }
    }

    /// Written whole under a temporary name and renamed: readers never see part of it.
    func storeDerivedObject(_ bytes: [UInt8], at location: String, contentType: String) throws {
        try FileManager.default.createDirectory(atPath: (location as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: location), options: .atomic)
    }
}

extension S3ClipTier: DerivedObjectTier {
    func derivedObject(at location: String) throws -> [UInt8]? {
        var bytes: [UInt8] = []
        do {
            _ = try client.getObject(bucket: bucket, key: location) { bytes.append(contentsOf: $0) }
        } catch let error as S3Error where error.kind == .notFound {
            return nil
        }
        return bytes
    }

    func storeDerivedObject(_ bytes: [UInt8], at location: String, contentType: String) throws {
        _ = try client.putObject(bucket: bucket, key: location, body: bytes, contentType: contentType)
    }
}
