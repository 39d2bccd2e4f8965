import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Upstream

/// What the routes of a clip's documents (`.vtt` captions, `.json` peaks) share with each other
/// and with the clip: validation of the start with its suffix, entity-tag preconditions, the
/// response headers (strong ETag, the clip's Cache-Control and CORS) and the clip's JSON errors.
extension ClipRoutes {
    /// A document request: the signature of its own path, the clip's validation, then `answer`;
    /// whatever fails becomes the clip's JSON error. `what` names the document in the log.
    func serveDocument(_ request: Request, _ context: ClipRequestContext, suffix: String, what: String,
                       _ answer: (ClipRequest) async throws -> Response) async -> Response {
        var clipRequest: ClipRequest?
        do {
            try checkSignature(path: request.uri.path, query: request.uri.query)
            let wanted = try validate(request, context, suffix: suffix)
            clipRequest = wanted
            return try await answer(wanted)
        } catch {
            return documentFailure(error, request, clipRequest, what: what)
        }
    }

    /// The clip's validation on the start without `suffix` (so `5.mp3.vtt` is refused too).
    func validate(_ request: Request, _ context: ClipRequestContext, suffix: String) throws -> ClipRequest {
        let start = (context.parameters.get("start") ?? "").dropLast(suffix.count)
        let badStart = HTTPProblem(.badRequest, "invalid_start_ms",
                                   "start_ms must be a non-negative integer number of milliseconds followed by \(suffix)")
        do {
            let clipRequest = try validate(episode: context.parameters.get("episode") ?? "", start: String(start), query: request.uri.query)
            guard !start.hasSuffix(".mp3") else { throw badStart }
            return clipRequest
        } catch let problem as HTTPProblem where problem.error == "invalid_start_ms" {
            throw badStart
        }
    }

    /// If-None-Match and If-Match against a document's strong ETag, as RFC 9110 says. Entity tags
    /// only: documents carry no Last-Modified and are never sent in ranges.
    func entityTagOutcome(_ request: Request, etag: String) -> ByteRangeResponse.PreconditionOutcome {
        var conditions = ByteRangeResponse.RequestConditions(method: request.method, fields: request.headers)
        conditions.range = nil
        conditions.ifModifiedSince = nil
        conditions.ifUnmodifiedSince = nil
        let unused = Date(timeIntervalSince1970: 0)
        return ByteRangeResponse.evaluatePreconditions(conditions, for: .init(length: 0, etag: etag, lastModified: unused, contentType: ""))
    }

    /// 200 with `body` (headers only for HEAD), 304 or 412, counted in the response metrics.
    /// `body` is only read for `.proceed`.
    func documentResponse(_ request: Request, _ outcome: ByteRangeResponse.PreconditionOutcome, etag: String,
                          contentType: String, body: () -> ByteBuffer) -> Response {
        var headers = HTTPFields()
        headers[.eTag] = etag
        headers[.cacheControl] = "public, max-age=31536000, immutable"
        let status: HTTPResponse.Status
        var content = ByteBuffer()
        switch outcome {
        case .notModified: status = .notModified
        case .preconditionFailed:
            status = .preconditionFailed
            headers[.contentLength] = "0"
        case .proceed:
            status = .ok
            content = body()
            headers[.contentType] = contentType
            headers[.contentLength] = String(content.readableBytes)
        }
        pipeline.metrics.response(status: Int(status.code))
        let sent = status == .ok && request.method == .get ? ResponseBody(byteBuffer: content) : ResponseBody()
        return Response(status: status, headers: headers, body: sent)
    }

    /// The JSON error the clip would get, counted and logged as the clip route does; `what`
    /// names the document in the warning (`captions`, `peaks`).
    private func documentFailure(_ error: any Error, _ request: Request, _ clipRequest: ClipRequest?, what: String) -> Response {
        let problem = HTTPProblem(error)
        pipeline.metrics.response(status: Int(problem.status.code))
        if case CatalogError.unavailable = error { pipeline.metrics.upstreamErrors["catalog"]?.increment() }
        if problem.status.code >= 500 {
            pipeline.logger.warning("\(what) request failed", metadata: [
                "episode.id": "\(clipRequest?.episodeId ?? "")", "clip.start_ms": "\(clipRequest?.startMs ?? -1)",
                "http.status": "\(problem.status.code)", "error": "\(error)"])
        }
        return problem.response()
    }
}
