import Foundation
import Hummingbird
import NIOCore

/// The request context of every route, public and admin. It carries no peer address on
/// purpose: no request is granted more because of where it seems to come from (behind a local
/// proxy every request comes from 127.0.0.1).
typealias ClipRequestContext = BasicRequestContext

/// Operator endpoints, served only on the admin listener (`admin.listen`, see `AdminListener`),
/// never on the public port: a purge is destructive, and URL signing guards only `/clips`.
struct AdminRoutes: Sendable {
    let pipeline: ClipPipeline

    func register(on router: Router<ClipRequestContext>) {
        router.post("/admin/purge/:episode") { request, context in try await self.purge(request, context) }
    }

    /// `POST /admin/purge/{episode_id}[?second_tier=1]`: forget the episode now (see `ClipPipeline.purge`).
    func purge(_ request: Request, _ context: ClipRequestContext) async throws -> Response {
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
}
