import Foundation
import Hummingbird
import NIOCore
import Trim

/// `GET|HEAD /clips/<episode_id>/<start_ms>.json[?samples_per_pixel=S&bits=8|16]`: the clip's
/// waveform peaks in audiowaveform's JSON format, from the clip's own bytes (`Peaks.swift`). The
/// router hands `12345.json` to `ClipRoutes` as the start; it passes such requests here. Ids,
/// `duration_ms`, URL signing (the `.json` path is signed as it is), CORS, Cache-Control and
/// errors are the clip's; preflight is the clip route's.
struct PeaksRoutes: Sendable {
    static let suffix = ".json"
    static let contentType = "application/json"
    static let defaultShape = PeaksShape(samplesPerPixel: 256, bits: 8)
    let clips: ClipRoutes
    var pipeline: ClipPipeline { clips.pipeline }

    static func wantsPeaks(_ start: String?) -> Bool { start?.hasSuffix(suffix) == true }

    func serve(_ request: Request, _ context: ClipRequestContext) async throws -> Response {
        await clips.serveDocument(request, context, suffix: Self.suffix, what: "peaks") { wanted in
            let shape = try Self.shape(request.uri.query)
            return try await pipeline.withCurrentSource(wanted) { clip in try await respond(request, clip, shape) }
        }
    }

    /// The ETag names the clip and the shape, so it is known before any byte is read: 304 and 412
    /// answer without opening the clip or decoding it.
    private func respond(_ request: Request, _ clip: PreparedClip, _ shape: PeaksShape) async throws -> Response {
        let etag = "\"\(clip.key.hex.prefix(16))-\(shape.key(of: clip).hex.prefix(16))\""
        let outcome = clips.entityTagOutcome(request, etag: etag)
        let peaks = outcome == .proceed ? try await pipeline.peaks(of: clip, shape) : []
        let response = clips.documentResponse(request, outcome, etag: etag, contentType: Self.contentType) { ByteBuffer(bytes: peaks) }
        pipeline.logger.info("peaks", metadata: ["episode.id": "\(clip.request.episodeId)", "clip.start_ms": "\(clip.request.startMs)",
                                                  "clip.key": "\(clip.key)", "peaks.samples_per_pixel": "\(shape.samplesPerPixel)",
                                                  "peaks.bits": "\(shape.bits)", "http.status": "\(response.status.code)"])
        return response
    }

    /// `samples_per_pixel` (32 to 65536, default 256) and `bits` (8 or 16, default 8), each at
    /// most once, digits only; decoded as the URL signature reads the query.
    static func shape(_ query: String?) throws -> PeaksShape {
        guard let parameters = URLSigner.parameters(query ?? "") else {
            throw HTTPProblem(.badRequest, "invalid_query", "the query string has a bad percent-escape")
        }
        var shape = defaultShape
        let range = WaveformPeaks.samplesPerPixelRange
        if let value = try single("samples_per_pixel", in: parameters) {
            guard let parsed = Int64(plainDigits: value).map(Int.init), range.contains(parsed) else {
                throw HTTPProblem(.badRequest, "invalid_samples_per_pixel",
                                  "samples_per_pixel must be an integer from \(range.lowerBound) to \(range.upperBound) (default 256)")
            }
            shape.samplesPerPixel = parsed
        }
        if let value = try single("bits", in: parameters) {
            guard let parsed = WaveformPeaks.allowedBits.first(where: { String($0) == value }) else {
                throw HTTPProblem(.badRequest, "invalid_bits", "bits must be 8 or 16 (default 8)")
            }
            shape.bits = parsed
        }
        return shape
    }

    private static func single(_ name: String, in parameters: [(String, String)]) throws -> String? {
        let values = parameters.filter { $0.0 == name }
        guard values.count <= 1 else { throw HTTPProblem(.badRequest, "invalid_\(name)", "give \(name) at most once") }
        return values.first?.1
    }
}
