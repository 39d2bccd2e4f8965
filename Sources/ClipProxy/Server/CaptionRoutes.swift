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
        await clips.serveDocument(request, context, suffix: Self.suffix, what: "captions") { wanted in
            // The plan (resolve, index, plan: no clip byte is read) says where the clip really
            // starts and how long it is; a changed source is resolved again as for the clip.
            let clip = try await pipeline.withCurrentSource(wanted) { $0 }
            let captions = ClipCaptions(clip: clip, chunks: try await pipeline.transcript(of: clip.episode))
            return respond(request, captions, clip)
        }
    }

    /// 200 with the captions (headers only for HEAD), or 304 / 412 from If-None-Match / If-Match
    /// against the captions' ETag, as RFC 9110 says.
    private func respond(_ request: Request, _ captions: ClipCaptions, _ clip: PreparedClip) -> Response {
        let outcome = clips.entityTagOutcome(request, etag: captions.etag)
        let response = clips.documentResponse(request, outcome, etag: captions.etag, contentType: WebVTT.contentType) { captions.body }
        pipeline.logger.info("captions", metadata: ["episode.id": "\(clip.request.episodeId)", "clip.start_ms": "\(clip.request.startMs)",
                                                     "clip.key": "\(clip.key)", "captions.cues": "\(captions.cueCount)",
                                                     "http.status": "\(response.status.code)"])
        return response
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
