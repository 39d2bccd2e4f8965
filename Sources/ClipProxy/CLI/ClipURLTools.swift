import Foundation
import Support
import Upstream

/// `clipproxy sign` and `clipproxy warm`: tools that work with a running server's `/clips` URLs.
enum ClipURLTools {
    /// Prints `path` (a `/clips/...` path with optional query) signed with `signing.key`.
    static func sign(_ pathAndQuery: String, expiresIn: Int64, baseURL: String?, _ configuration: Configuration) throws {
        guard let signer = URLSigner(key: configuration.signingKey, previousKey: configuration.signingPreviousKey) else {
            throw ToolError("signing.key is not set (CLIPPROXY_SIGNING_KEY or --config): there is nothing to sign with")
        }
        if let query = pathAndQuery.split(separator: "?", maxSplits: 1).dropFirst().first, URLSigner.parameters(String(query)) == nil {
            throw ToolError("the query has a bad percent-escape: \(query)")
        }
        guard (1...(10 * 365 * 86_400)).contains(expiresIn) else { throw ToolError("--expires-in must be 1 to 315360000 seconds, got \(expiresIn)") }
        print((baseURL ?? "") + signedPath(pathAndQuery, signer: signer, expiresAt: Int64(Date().timeIntervalSince1970) + expiresIn))
    }

    static func signedPath(_ pathAndQuery: String, signer: URLSigner, expiresAt: Int64) -> String {
        let parts = pathAndQuery.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(parts[0])
        let parameters = (parts.count > 1 ? URLSigner.parameters(String(parts[1])) : nil) ?? []
        return path + "?" + signer.signedQuery(path: path, parameters: parameters.filter { $0.0 != "exp" && $0.0 != "sig" }, expiresAt: expiresAt)
    }

    /// The running server's base URL from the configuration (a wildcard host means this machine).
    static func localServer(_ configuration: Configuration) -> String {
        let host = configuration.httpHost == "0.0.0.0" ? "127.0.0.1" : configuration.httpHost
        return "http://\(host):\(configuration.httpPort)"
    }

    /// `/clips/<episode>/<start>[?duration_ms=N]`, signed for five minutes when `signer` is given
    /// (long enough for the request it is made for, no longer).
    static func clipPath(_ episodeId: String, startMs: Int64, durationMs: Int64?, signer: URLSigner?) -> String {
        let path = ClipLinks.path(episodeId: episodeId, startMs: startMs) + (durationMs.map { "?duration_ms=\($0)" } ?? "")
        guard let signer else { return path }
        return signedPath(path, signer: signer, expiresAt: Int64(Date().timeIntervalSince1970) + 300)
    }

    /// Requests each clip from the running server so it is cut and cached (L1 and L2) before
    /// listeners ask. Going through the server keeps one process in charge of the store and shares
    /// its coalescing. Exits non-zero if any clip fails, after trying all of them.
    static func warm(episodeId: String, starts: [Int64], durationMs: Int64?, server: String?, _ configuration: Configuration) throws {
        guard !starts.isEmpty else { throw ToolError("give at least one START_MS") }
        let base = server ?? localServer(configuration)
        let signer = URLSigner(key: configuration.signingKey, previousKey: configuration.signingPreviousKey)
        let transfer = CurlTransfer()
        var failures = 0
        for start in starts {
            let path = clipPath(episodeId, startMs: start, durationMs: durationMs, signer: signer)
            let began = ContinuousClock.now
            do {
                let fetch = try ClipFetch.get(base + path, with: transfer)
                let ms = (ContinuousClock.now - began).wholeMilliseconds
                if fetch.status == 200 {
                    print("warm \(episodeId) \(start): \(fetch.bytes) bytes, \(fetch.tier ?? "?"), \(ms) ms")
                } else {
                    failures += 1
                    print("warm \(episodeId) \(start): HTTP \(fetch.status) \(fetch.text)")
                }
            } catch {
                failures += 1
                print("warm \(episodeId) \(start): \(error) (is `clipproxy serve` running at \(base)?)")
            }
        }
        if failures > 0 { throw ToolError("\(failures) of \(starts.count) clips could not be warmed") }
    }
}
