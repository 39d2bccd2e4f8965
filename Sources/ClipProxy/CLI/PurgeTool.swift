import Foundation
import Support
import Upstream

/// `clipproxy purge`: asks each node's admin listener to forget an episode, and reports per node.
enum PurgeTool {
    static func run(episodeId: String, secondTier: Bool, admins: [String], _ configuration: Configuration) throws {
        let nodes = admins.isEmpty ? [configuration.adminAddress] : try admins.map { text in
            do { return try AdminAddress.parse(text) } catch let error as ConfigurationError {
                throw ToolError("--admin \(text): \(error.description.replacingOccurrences(of: "configuration: admin.listen", with: "admin listener"))")
            }
        }
        // Every node is asked, even after one fails: a takedown must reach all that can be reached.
        // With --second-tier each node also deletes from the shared tier; after the first, the
        // others find little or nothing there, which costs a listing each.
        var failed = 0
        for node in nodes {
            do { print("\(node) \(try purge(episodeId: episodeId, secondTier: secondTier, at: node))") } catch {
                print("\(node) error: \(error.description)")
                failed += 1
            }
        }
        if failed > 0 {
            throw ToolError("purge \(episodeId): \(failed) of \(nodes.count) node\(nodes.count == 1 ? "" : "s") failed (see above); run it again for those")
        }
    }

    /// `POST /admin/purge/<episode>` on one admin listener; its JSON answer.
    static func purge(episodeId: String, secondTier: Bool, at admin: AdminAddress) throws(ToolError) -> String {
        let path = "/admin/purge/\(URLSigner.encode(episodeId))" + (secondTier ? "?second_tier=1" : "")
        var request: HTTPRequest
        switch admin {
        case .unixSocket(let socketPath):
            try checkReachable(socketPath)
            request = HTTPRequest(method: "POST", url: "http://localhost" + path)
            request.unixSocketPath = socketPath
        case .loopback:
            request = HTTPRequest(method: "POST", url: "http://\(admin)" + path)
        }
        var body: [UInt8] = []
        let head: HTTPResponseHead
        do {
            head = try CurlTransfer().perform(request, timeouts: TransferTimeouts(connect: .seconds(5), lowSpeedWindow: .seconds(60))) { chunk in
                body += chunk
                return true
            }
        } catch {
            throw ToolError("\(error) (is `clipproxy serve` running with admin.listen \(admin)?)")
        }
        let text = String(decoding: body, as: UTF8.self)
        guard head.status == 200 else { throw ToolError("HTTP \(head.status) \(text)") }
        return text
    }

    /// A missing socket or one this user may not open, said plainly (libcurl only says it could not connect).
    static func checkReachable(_ socketPath: String) throws(ToolError) {
        let denied = ToolError("permission denied on the admin socket \(socketPath): it is owner-only; run purge as the user clipproxy serve runs as (or root)")
        guard access(socketPath, F_OK) == 0 else {
            if errno == EACCES { throw denied }  // a directory on the way is closed to this user
            throw ToolError("no admin socket at \(socketPath) (\(String(cString: strerror(errno)))): is `clipproxy serve` running with this configuration? Its admin.listen says where the socket is")
        }
        guard access(socketPath, R_OK | W_OK) == 0 else { throw denied }
    }
}
