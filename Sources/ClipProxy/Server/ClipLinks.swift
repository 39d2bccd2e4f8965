import Foundation
import Hummingbird

/// The URLs of a clip and of its captions and peaks as a client uses them: absolute (on
/// `http.public_url`, else on the host the request came to) and signed when URL signing is on,
/// valid for `presign.expires_s`.
struct ClipLinks: Sendable {
    let base: String
    let signer: URLSigner?
    let expiresAt: Int64

    init(request: Request, configuration: Configuration, signer: URLSigner?, now: Date) {
        base = configuration.httpPublicURL.isEmpty
            ? "http://\(request.head.authority ?? "\(configuration.httpHost):\(configuration.httpPort)")"
            : configuration.httpPublicURL
        self.signer = signer
        expiresAt = Int64(now.timeIntervalSince1970) + Int64(configuration.presignExpiresS)
    }

    /// `/clips/<episode>/<start><suffix>` (suffix `""`, `.vtt` or `.json`) with `parameters`.
    func url(episodeId: String, startMs: Int64, suffix: String = "", parameters: [(String, String)] = []) -> String {
        let path = Self.path(episodeId: episodeId, startMs: startMs, suffix: suffix)
        if let signer { return base + path + "?" + signer.signedQuery(path: path, parameters: parameters, expiresAt: expiresAt) }
        let query = parameters.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
        return base + path + (query.isEmpty ? "" : "?" + query)
    }

    /// `/clips/<episode, percent-encoded>/<start><suffix>`, as every tool and API writes it.
    static func path(episodeId: String, startMs: Int64, suffix: String = "") -> String {
        "/clips/\(URLSigner.encode(episodeId))/\(startMs)\(suffix)"
    }

    /// `clip_url`, `captions_url`, `peaks_url` and `download_url` of the default-length clip from
    /// `startMs`, all with `snap=pause` (the window moves to the nearest pauses, and the captions,
    /// peaks and download describe that same window): what a dashboard needs to play and keep it.
    func player(episodeId: String, startMs: Int64) -> [String: String] {
        let snapped = [("snap", "pause")]
        return ["clip_url": url(episodeId: episodeId, startMs: startMs, parameters: snapped),
                "captions_url": url(episodeId: episodeId, startMs: startMs, suffix: CaptionRoutes.suffix, parameters: snapped),
                "peaks_url": url(episodeId: episodeId, startMs: startMs, suffix: PeaksRoutes.suffix, parameters: snapped),
                "download_url": url(episodeId: episodeId, startMs: startMs, parameters: snapped + [("download", "1")])]
    }
}
