import Foundation
import Upstream

/// The bytes of a feed named on the command line: a local file, or an http(s) URL.
enum FeedSource {
    /// Larger than any real feed (big ones are a few MB); stops a wrong URL from filling memory.
    static let maxBytes = 64 << 20

    static func isURL(_ pathOrURL: String) -> Bool {
        let lower = pathOrURL.lowercased()
        return lower.hasPrefix("http://") || lower.hasPrefix("https://")
    }

    static func load(_ pathOrURL: String) throws -> Data {
        if isURL(pathOrURL) { return try download(pathOrURL, redirectsLeft: 5) }
        guard FileManager.default.fileExists(atPath: pathOrURL) else {
            throw ToolError("the feed file \(pathOrURL) does not exist (give a file path or an http(s) URL)")
        }
        do {
            return try Data(contentsOf: URL(fileURLWithPath: pathOrURL))
        } catch {
            throw ToolError("cannot read the feed file \(pathOrURL): \(error.localizedDescription)")
        }
    }

    /// A GET that follows redirects itself (feeds move between hosts often; the libcurl wrapper
    /// does not follow them, on purpose, for S3).
    private static func download(_ url: String, redirectsLeft: Int) throws -> Data {
        var body = Data()
        let head: HTTPResponseHead
        do {
            head = try CurlTransfer().perform(HTTPRequest(method: "GET", url: url),
                                              timeouts: TransferTimeouts(connect: .seconds(10), lowSpeedWindow: .seconds(30))) { chunk in
                body.append(contentsOf: chunk)
                return body.count <= maxBytes
            }
        } catch let error as TransferError where error.kind == .aborted && body.count > maxBytes {
            throw ToolError("the feed at \(url) is larger than \(maxBytes >> 20) MB: is it a feed?")
        } catch {
            throw ToolError("cannot download the feed \(url): \(error)")
        }
        if [301, 302, 303, 307, 308].contains(head.status), let location = head.header("Location") {
            guard redirectsLeft > 0 else { throw ToolError("the feed \(url) redirects too many times") }
            guard let next = URL(string: location, relativeTo: URL(string: url))?.absoluteString, isURL(next) else {
                throw ToolError("the feed \(url) redirects to \(location), which is not an http(s) URL")
            }
            return try download(next, redirectsLeft: redirectsLeft - 1)
        }
        guard head.status == 200 else {
            throw ToolError("cannot download the feed \(url): HTTP \(head.status) (check the URL)")
        }
        return body
    }
}
