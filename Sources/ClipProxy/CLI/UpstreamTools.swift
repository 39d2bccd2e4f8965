import Foundation
import Upstream

/// `clipproxy resolve` and `clipproxy s3 presign`, configured like `serve`.
enum UpstreamTools {
    static func resolve(_ episodeId: String, _ configuration: Configuration) throws {
        let catalog = try Upstreams.catalog(configuration)
        let (lister, _) = try Upstreams.sources(configuration)
        let resolved = try SourceLocator(catalog: catalog, lister: lister).resolve(episodeId)
        var output: [String: Any] = [
            "episode_id": resolved.episodeId, "guid": resolved.guid, "feed_slug": resolved.feedSlug,
            "source_key": resolved.sourceKey, "etag": resolved.etag, "size": resolved.size,
            "source": configuration.sourceKind == "s3" ? "s3://\(configuration.s3SourceBucket)" : configuration.sourceDir,
        ]
        if !resolved.alsoMatched.isEmpty { output["also_matched"] = resolved.alsoMatched }
        try TrimTool.printJSON(output)
    }

    static func presign(_ url: String, expires: Int, now: String?, _ configuration: Configuration) throws {
        guard url.hasPrefix("s3://"), let slash = url.dropFirst(5).firstIndex(of: "/") else {
            throw ToolError("expected s3://BUCKET/KEY, got \(url)")
        }
        let bucket = String(url.dropFirst(5)[..<slash])
        let key = String(url.dropFirst(5)[url.dropFirst(5).index(after: slash)...])
        guard !bucket.isEmpty, !key.isEmpty else { throw ToolError("expected s3://BUCKET/KEY, got \(url)") }
        var date = Date()
        if let now {
            let formatter = ISO8601DateFormatter()
            guard let parsed = formatter.date(from: now) else { throw ToolError("--now must be ISO 8601, e.g. 2013-05-24T00:00:00Z; got \(now)") }
            date = parsed
        }
        let client = try Upstreams.s3Client(configuration)
        print(try client.presignedGetURL(bucket: bucket, key: key, expires: expires, now: date))
    }
}
