import Foundation
import Hummingbird
import NIOCore

/// The request context of every route: Hummingbird's basic context plus the peer's address,
/// which the admin endpoints check.
struct ClipRequestContext: RequestContext, RemoteAddressRequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// Operator endpoints, answered only to clients on the same machine (`clipproxy purge` runs
/// there): a purge is destructive, and URL signing guards only `/clips`.
struct AdminRoutes: Sendable {
    let pipeline: ClipPipeline

    func register(on router: Router<ClipRequestContext>) {
        router.post("/admin/purge/:episode") { request, context in try await self.purge(request, context) }
    }

    /// `POST /admin/purge/{episode_id}[?second_tier=1]`: forget the episode now (see `ClipPipeline.purge`).
    func purge(_ request: Request, _ context: ClipRequestContext) async throws -> Response {
        guard Self.isLoopback(context.remoteAddress) else {
            return HTTPProblem(.forbidden, "admin_loopback_only", "admin endpoints answer only clients on the server's own machine; run `clipproxy purge` there").response()
        }
        let episodeId: String
        do {
            episodeId = try ClipRoutes.episodeId(context.parameters.get("episode") ?? "")
        } catch let problem as HTTPProblem {
            return problem.response()
        }
        let flag = request.uri.queryParameters.get("second_tier") ?? "0"
        guard ["0", "1", "true", "false"].contains(flag) else {
            return HTTPProblem(.badRequest, "invalid_second_tier", "second_tier must be 1 or 0").response()
        }
        do {
            let report = try await pipeline.purge(episodeId, secondTier: flag == "1" || flag == "true")
            let body = #"{"episode_id":\#(AudioClipsAPI.Answer.quoted(episodeId)),"clips_removed":\#(report.clipsRemoved),"second_tier_removed":\#(report.secondTierRemoved)}"#
            return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
        } catch {
            pipeline.logger.error("purge failed", metadata: ["episode.id": "\(episodeId)", "error": "\(error)"])
            return HTTPProblem(error).response()
        }
    }

    static func isLoopback(_ address: SocketAddress?) -> Bool {
        switch address {
        case .v4(let v4)?: v4.address.sin_addr.s_addr.bigEndian >> 24 == 127
        case .v6?: address?.ipAddress == "::1" || address?.ipAddress?.hasPrefix("::ffff:127.") == true
        case .unixDomainSocket?: true
        default: false
        }
    }
}
