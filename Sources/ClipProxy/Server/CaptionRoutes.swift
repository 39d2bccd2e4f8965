import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Support
import Upstream

/// `GET|HEAD /clips/<episode_id>/<start_ms>.vtt`: the clip's transcript as WebVTT captions, timed
/// on the clip's own audio. The router hands `12345.vtt` to `ClipRoutes` as the start; it passes
/// such requests here. Ids, `duration_ms`, URL signing (the `.vtt` path is signed as it is), CORS
/// and errors are the clip's; preflight is the clip route's.
struct CaptionRoutes: Sendable {
    static let suffix = ".vtt"
    let clips: ClipRoutes
    var pipeline: ClipPipeline { clips.pipeline }

    static func wantsCaptions(_ start: String?) -> Bool { start?.hasSuffix(suffix) == true }

    func serve(_ request: Request, _ context: ClipRequestContext) async throws -> Response {
        var clipRequest: ClipRequest?
        do {
            try clips.checkSignature(path: request.uri.path, query: request.uri.query)
            let wanted = try validate(request, context)
            clipRequest = wanted
            // The plan (resolve, index, plan: no clip byte is read) says where the clip really
            // starts and how long it is; a changed source is resolved again as for the clip.
            let clip = try await pipeline.withCurrentSource(wanted) { $0 }
            let captions = ClipCaptions(clip: clip, chunks: try await pipeline.transcript(of: clip.episode))
            return respond(request, captions, clip)
        } catch {
            return failure(error, request, clipRequest)
        }
    }

    /// The clip's validation on the start without `.vtt` (so `5.mp3.vtt` is refused too).
    private func validate(_ request: Request, _ context: ClipRequestContext) throws -> ClipRequest {
        let start = (context.parameters.get("start") ?? "").dropLast(Self.suffix.count)
        do {
            let clipRequest = try clips.validate(episode: context.parameters.get("episode") ?? "", start: String(start), query: request.uri.query)
            guard !start.hasSuffix(".mp3") else { throw Self.badStart }
            return clipRequest
        } catch let problem as HTTPProblem where problem.error == "invalid_start_ms" {
            throw Self.badStart
        }
    }

    private static let badStart = HTTPProblem(.badRequest, "invalid_start_ms",
                                              "start_ms must be a non-negative integer number of milliseconds followed by .vtt")

    /// 200 with the captions (headers only for HEAD), or 304 / 412 from If-None-Match / If-Match
    /// against the captions' ETag, as RFC 9110 says.
    private func respond(_ request: Request, _ captions: ClipCaptions, _ clip: PreparedClip) -> Response {
        var conditions = ByteRangeResponse.RequestConditions(
            method: request.method.rawValue, headers: request.headers.map { ($0.name.canonicalName, $0.value) })
        // Entity tags only: captions carry no Last-Modified and are never sent in ranges.
        conditions.range = nil
        conditions.ifModifiedSince = nil
        conditions.ifUnmodifiedSince = nil
        let unused = Date(timeIntervalSince1970: 0)
        let outcome = ByteRangeResponse.evaluatePreconditions(conditions, for: .init(
            length: Int64(captions.body.readableBytes), etag: captions.etag, lastModified: unused, contentType: WebVTT.contentType))

        var headers = HTTPFields()
        headers[.eTag] = captions.etag
        headers[.cacheControl] = "public, max-age=31536000, immutable"
        let status: HTTPResponse.Status
        switch outcome {
        case .notModified: status = .notModified
        case .preconditionFailed:
            status = .preconditionFailed
            headers[.contentLength] = "0"
        case .proceed:
            status = .ok
            headers[.contentType] = WebVTT.contentType
            headers[.contentLength] = String(captions.body.readableBytes)
        }
        pipeline.metrics.response(status: Int(status.code))
        pipeline.logger.info("captions", metadata: ["episode.id": "\(clip.request.episodeId)", "clip.start_ms": "\(clip.request.startMs)",
                                                     "clip.key": "\(clip.key)", "captions.cues": "\(captions.cueCount)",
                                                     "http.status": "\(status.code)"])
        let body = status == .ok && request.method == .get ? ResponseBody(byteBuffer: captions.body) : ResponseBody()
        return Response(status: status, headers: headers, body: body)
    }

    /// The JSON error the clip would get, counted and logged as the clip route does.
    private func failure(_ error: any Error, _ request: Request, _ clipRequest: ClipRequest?) -> Response {
        let problem = HTTPProblem(error)
        pipeline.metrics.response(status: Int(problem.status.code))
        if case CatalogError.unavailable = error { pipeline.metrics.upstreamErrors["catalog"]?.increment() }
        if problem.status.code >= 500 {
            pipeline.logger.warning("captions request failed", metadata: [
                "episode.id": "\(clipRequest?.episodeId ?? "")", "clip.start_ms": "\(clipRequest?.startMs ?? -1)",
                "http.status": "\(problem.status.code)", "error": "\(error)"])
        }
        return problem.response()
    }
}

/// A clip's captions, ready to send: the WebVTT bytes and their strong ETag.
struct ClipCaptions: Sendable {
    let body: ByteBuffer
    let etag: String
    let cueCount: Int

    init(clip: PreparedClip, chunks: [TranscriptChunk]) {
        let cues = CaptionCues.cues(chunks, startSample: clip.plan.startSample, sampleCount: clip.plan.sampleCount,
                                    sampleRate: clip.plan.sampleRate)
        let text = WebVTT.document(cues)
        body = ByteBuffer(string: text)
        // Cue text never holds "-->" (`>` is escaped), so this counts the cues written.
        cueCount = text.components(separatedBy: " --> ").count - 1
        // The clip key names the audio window (same on every node); the text's hash changes the
        // tag whenever the transcript does.
        etag = "\"\(clip.key.hex.prefix(16))-\(Digest.sha256(Array(text.utf8)).hexString.prefix(16))\""
    }
}
