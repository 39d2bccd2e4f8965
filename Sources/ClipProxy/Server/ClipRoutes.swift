import Foundation
import HTTPTypes
import Hummingbird
import Index
import Logging
import NIOCore
import Trim
import Support
import Upstream

/// HTTP for `/clips`: request validation, response headers, and streaming the body from the store
/// or from a fill in progress. The flow itself lives in `ClipPipeline`.
struct ClipRoutes: Sendable {
    let pipeline: ClipPipeline
    /// nil when URL signing is off.
    let signer: URLSigner?
    static let chunkSize: Int64 = 64 << 10
    var cors: CORSPolicy { CORSPolicy(allowedOrigins: pipeline.configuration.httpCorsOrigins) }

    func register(on router: some RouterMethods<ClipRequestContext>) {
        router.get("/clips/:episode/:start") { request, context in try await self.serve(request, context) }
        router.head("/clips/:episode/:start") { request, context in try await self.serve(request, context) }
        router.on("/clips/:episode/:start", method: .options) { request, _ in self.preflight(request) }
    }

    /// Preflight for dashboards that `fetch()` clips with Range or conditional headers.
    func preflight(_ request: Request) -> Response {
        var headers = HTTPFields()
        headers[.accessControlAllowMethods] = "GET, HEAD, OPTIONS"
        headers[.accessControlAllowHeaders] = "Range, If-Range, If-None-Match, If-Match, If-Modified-Since, If-Unmodified-Since"
        headers[.accessControlMaxAge] = "86400"
        return Response(status: .noContent, headers: headers)
    }

    /// The `/clips` flow, top to bottom: accept the request, have the pipeline answer it (open
    /// the clip and decide Range and conditionals; nothing is sent before that succeeded), send.
    func serve(_ request: Request, _ context: ClipRequestContext) async throws -> Response {
        if CaptionRoutes.wantsCaptions(context.parameters.get("start")) { return try await CaptionRoutes(clips: self).serve(request, context) }
        if PeaksRoutes.wantsPeaks(context.parameters.get("start")) { return try await PeaksRoutes(clips: self).serve(request, context) }
        let clipRequest: ClipRequest
        do {
            clipRequest = try accept(request, context)
        } catch let problem as HTTPProblem {
            return refuse(problem, nil, nil)
        }
        let conditions = ByteRangeResponse.RequestConditions(method: request.method, fields: request.headers)
        let answer: ClipPipeline.Answer
        var download: ClipDownload?
        do {
            answer = try await pipeline.withCurrentSource(clipRequest) { clip in
                guard clipRequest.download else { return try await self.pipeline.answer(clip, conditions) }
                let links = ClipLinks(request: request, configuration: self.pipeline.configuration, signer: nil, now: Date())
                let tagged = try await self.pipeline.download(of: clip, clipURL: links.url(episodeId: clip.request.episodeId, startMs: clip.request.startMs,
                                                                                           parameters: [("duration_ms", String(clip.request.durationMs))]))
                download = tagged
                return try await self.pipeline.answer(clip, conditions, download: tagged)
            }
        } catch {
            return refuse(HTTPProblem(error), error, clipRequest)
        }
        return respond(answer, origin: request.headers[.origin], location: contentLocation(of: answer.clip, asked: clipRequest, query: request.uri.query),
                       download: download)
    }

    /// A valid, signed (when signing is on) request, or the 400/403 that says what is wrong.
    private func accept(_ request: Request, _ context: ClipRequestContext) throws -> ClipRequest {
        try checkSignature(path: request.uri.path, query: request.uri.query)
        return try validate(episode: context.parameters.get("episode") ?? "", start: context.parameters.get("start") ?? "",
                            query: request.uri.query)
    }

    /// The JSON error for a request refused before its headers, counted (and logged if ours).
    private func refuse(_ problem: HTTPProblem, _ error: (any Error)?, _ clipRequest: ClipRequest?) -> Response {
        pipeline.metrics.response(status: Int(problem.status.code))
        if let error, case CatalogError.unavailable = error { pipeline.metrics.upstreamErrors["catalog"]?.increment() }
        if let error, let clipRequest, problem.status.code >= 500 {
            pipeline.logger.warning("clip request failed before its headers", metadata: [
                "episode.id": "\(clipRequest.episodeId)", "clip.start_ms": "\(clipRequest.startMs)",
                "http.status": "\(problem.status.code)", "error": "\(error)"])
        }
        return problem.response()
    }

    /// The decided status and headers, and a body that streams the decided parts from wherever
    /// the clip is: the local store (read in chunks: a stored clip prepared within the last
    /// minute is sent with sendfile by `StoredClipFastPath`, before the router), a fill in memory,
    /// or the bytes read for a part.
    /// A download's tag goes in front of the clip: each range is cut into its part of the tag
    /// and its part of the clip.
    private func respond(_ answer: ClipPipeline.Answer, origin: String?, location: String?, download: ClipDownload?) -> Response {
        let (body, decision) = (answer.body, answer.decision)
        var head = responseHead(decision, tier: body.tier, origin: origin, location: location)
        if let download { head.headerFields[.contentDisposition] = download.contentDisposition }
        let tag = download?.tag ?? []
        recordAnswer(answer.clip, tier: body.tier, status: decision.status)
        guard !decision.parts.isEmpty else {
            body.release()
            return Response(status: head.status, headers: head.headerFields, body: ResponseBody())
        }
        let pipeline = self.pipeline
        let parts = decision.parts
        let partBytes = answer.partBytes
        return Response(status: head.status, headers: head.headerFields, body: ResponseBody(contentLength: Int(decision.bodyLength)) { writer in
            defer { body.release() }
            for part in parts {
                switch part {
                case .literal(let bytes): try await writer.write(ByteBuffer(bytes: bytes))
                case .bytes(let tagged):
                    let tagLength = Int64(tag.count)
                    if tagged.lowerBound < tagLength {
                        try await writer.write(ByteBuffer(bytes: tag[Int(tagged.lowerBound)..<Int(min(tagged.upperBound, tagLength))]))
                    }
                    let range = (max(tagged.lowerBound, tagLength) - tagLength)..<(max(tagged.upperBound, tagLength) - tagLength)
                    switch body {
                    case _ where range.isEmpty: break
                    case .stored(let lease, _):
                        try await Self.streamStored(lease, range: range, into: &writer)
                    case .filling(let fill, _):
                        try await Self.streamFill(fill, range: range, pipeline: pipeline, into: &writer)
                    case .part:
                        // Read before the headers (`answer`): the one range a part is made for.
                        try await writer.write(ByteBuffer(bytes: partBytes!))
                    }
                    pipeline.metrics.bytesServed.increment(by: Int(tagged.count))
                }
            }
            try await writer.finish(nil)
        })
    }

    /// A stored clip's range in chunks, read straight into the buffer that is written, on this
    /// task: the file is in the page cache, so a pread costs microseconds, less than a hop to the
    /// blocking pool. Chunks stay small so a thousand slow clients hold little memory each.
    static func streamStored(_ lease: ClipStore.Lease, range: Range<Int64>, into writer: inout any ResponseBodyWriter) async throws {
        var offset = range.lowerBound
        while offset < range.upperBound {
            let count = Int(min(range.upperBound - offset, chunkSize))
            var buffer = ByteBufferAllocator().buffer(capacity: count)
            let from = offset
            let n = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { pointer in
                try Posix.readFully(lease.descriptor, into: pointer.baseAddress!, count: count, at: from, path: lease.path)
            }
            guard n == count else { throw FillError.incomplete(written: from + Int64(n), expected: range.upperBound) }
            try await writer.write(buffer)
            offset += Int64(count)
        }
    }

    /// Streams `range` of a fill from memory as its bytes arrive: whatever is there (up to a
    /// chunk) goes out at once, so the client has every byte the fill got, and gets it as soon as
    /// it can. A fill that fails after its headers went out (a source that died mid-transfer
    /// after every retry) throws here, which aborts the transfer: the client sees a broken
    /// connection, never a short success.
    static func streamFill(_ fill: Fill, range: Range<Int64>, pipeline: ClipPipeline, into writer: inout any ResponseBodyWriter) async throws {
        var offset = range.lowerBound
        while offset < range.upperBound {
            do { try await fill.waitForBytes(offset + 1) } catch {
                pipeline.metrics.responsesAborted.increment()
                pipeline.logger.error("response aborted after its headers: the fill failed",
                                      metadata: ["clip.key": "\(fill.key)", "clip.offset": "\(offset)", "error": "\(error)"])
                throw error
            }
            let end = min(range.upperBound, offset + chunkSize, fill.bytesWritten)
            try await writer.write(fill.bytes(offset..<end))
            offset = end
        }
    }

    /// The status line and header fields of every `/clips` answer, routed or sent by the fast
    /// path: preconditions, Range, If-Range, multipart (RFC 9110 as nginx implements it), caching,
    /// the tier, CORS for `origin`, `Server`, and for a snapped clip the `Content-Location` of the
    /// exact window it holds. (`Date` is set as the head is written, by `ResponseDate`, for
    /// every response.)
    func responseHead(_ decision: ByteRangeResponse, tier: ClipBody.Tier, origin: String?, location: String? = nil) -> HTTPResponse {
        var headers = HTTPFields()
        headers.reserveCapacity(decision.headers.count + 6)
        for (name, value) in decision.headers {
            if let field = Self.decisionFieldNames[name] ?? HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        headers[.cacheControl] = "public, max-age=31536000, immutable"
        headers[Self.clipTierField] = tier.rawValue
        if let location { headers[.contentLocation] = location }
        cors.apply(origin: origin, to: &headers)
        headers[.server] = ClipServer.serverName
        return HTTPResponse(status: .init(code: decision.status), headerFields: headers)
    }

    static let clipTierField = HTTPField.Name("X-Clip-Tier")!
    /// The names `ByteRangeResponse` uses, made once (on every response otherwise).
    private static let decisionFieldNames = Dictionary(uniqueKeysWithValues: [
        "Content-Type", "Content-Length", "Content-Range", "ETag", "Last-Modified", "Accept-Ranges",
    ].map { ($0, HTTPField.Name($0)!) })

    /// Metrics and the access log line of an answered clip request.
    func recordAnswer(_ clip: PreparedClip, tier: ClipBody.Tier, status: Int) {
        pipeline.metrics.tierCounters[tier]?.increment()
        pipeline.metrics.response(status: status)
        pipeline.logger.info("clip", metadata: ["episode.id": "\(clip.request.episodeId)", "clip.start_ms": "\(clip.request.startMs)",
                                                 "clip.key": "\(clip.key)", "clip.tier": "\(tier.rawValue)",
                                                 "http.status": "\(status)"])
    }


    /// For a snapped request, the URL of the exact window its clip holds: same bytes, same ETag.
    /// Signed (with the request's own expiry) when signing is on, so it can be fetched as it is.
    func contentLocation(of clip: PreparedClip, asked: ClipRequest, query: String?) -> String? {
        guard asked.snapsToPauses else { return nil }
        let path = ClipLinks.path(episodeId: clip.request.episodeId, startMs: clip.request.startMs)
        let parameters = [("duration_ms", String(clip.request.durationMs))] + (asked.download ? [("download", "1")] : [])
        if let signer, let exp = URLSigner.parameters(query ?? "")?.first(where: { $0.0 == "exp" }).flatMap({ Int64(plainDigits: $0.1) }) {
            return path + "?" + signer.signedQuery(path: path, parameters: parameters, expiresAt: exp)
        }
        return path + "?" + parameters.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

    // MARK: - Validation

    /// Episode id (ObjectId or URL-encoded guid), start (digits, optional `.mp3`), `duration_ms`.
    /// `episode` and `start` are the path segments as they arrived, `query` the raw query string.
    func validate(episode rawEpisode: String, start rawStart: String, query: String?) throws -> ClipRequest {
        let episode = try Self.episodeId(rawEpisode)
        var start = rawStart
        if start.hasSuffix(".mp3") { start.removeLast(4) }
        guard let startMs = Int64(plainDigits: start) else {
            throw HTTPProblem(.badRequest, "invalid_start_ms", "start_ms must be a non-negative integer number of milliseconds, optionally followed by .mp3")
        }
        var durationMs = pipeline.configuration.clipsDefaultDurationMs
        // Parameters decoded exactly as the URL signature reads them (names too), so what is
        // signed is what is served: `duration%5Fms` is `duration_ms` here as in the signature.
        guard let parameters = URLSigner.parameters(query ?? "") else {
            throw HTTPProblem(.badRequest, "invalid_query", "the query string has a bad percent-escape")
        }
        let durations = parameters.filter { $0.0 == "duration_ms" }
        guard durations.count <= 1 else { throw HTTPProblem(.badRequest, "invalid_duration_ms", "give duration_ms at most once") }
        if let value = durations.first?.1 {
            guard let parsed = Int64(plainDigits: value), parsed > 0, parsed <= pipeline.configuration.clipsMaxDurationMs else {
                throw HTTPProblem(.badRequest, "invalid_duration_ms",
                                  "duration_ms must be an integer from 1 to \(pipeline.configuration.clipsMaxDurationMs)")
            }
            durationMs = parsed
        }
        let snaps = parameters.filter { $0.0 == "snap" }
        guard snaps.count <= 1, snaps.allSatisfy({ $0.1 == "pause" }) else {
            throw HTTPProblem(.badRequest, "invalid_snap", "snap must be `pause` (boundaries move to the nearest pauses), given at most once; leave it out for the exact window")
        }
        let downloads = parameters.filter { $0.0 == "download" }
        guard downloads.count <= 1, downloads.allSatisfy({ $0.1 == "1" }) else {
            throw HTTPProblem(.badRequest, "invalid_download", "download must be 1 (the clip as a tagged file to keep), given at most once; leave it out to play")
        }
        return ClipRequest(episodeId: episode, startMs: startMs, durationMs: durationMs, snapsToPauses: !snaps.isEmpty, download: !downloads.isEmpty)
    }

    /// The episode id path segment, percent-decoded: an ObjectId or a guid without control characters or slashes.
    static func episodeId(_ raw: String) throws -> String {
        guard let episode = raw.percentDecoded, !episode.isEmpty, episode.count <= 200,
              !episode.unicodeScalars.contains(where: { $0.value < 0x20 || $0 == "/" || $0.value == 0x7F }) else {
            throw HTTPProblem(.badRequest, "invalid_episode_id", "episode_id must be a 24-hex ObjectId or a URL-encoded guid of at most 200 characters")
        }
        return episode
    }

    /// With URL signing on, the URL must carry a valid, unexpired `exp` + `sig`.
    func checkSignature(path: String, query: String?) throws {
        guard let signer else { return }
        switch signer.verify(path: path, rawQuery: query, now: Int64(Date().timeIntervalSince1970)) {
        case .valid: return
        case .missing: throw HTTPProblem(.forbidden, "signature_required", "this server only serves signed clip URLs: add exp and sig (see `clipproxy sign`)")
        case .malformed(let why): throw HTTPProblem(.forbidden, "signature_invalid", why)
        case .expired: throw HTTPProblem(.forbidden, "signature_expired", "the URL's exp has passed; ask for a new URL")
        case .mismatch: throw HTTPProblem(.forbidden, "signature_invalid", "the signature does not match the URL (changed, or signed with another key)")
        }
    }

}

extension ByteRangeResponse.RequestConditions {
    /// The fields that decide a response, picked out of a request's header fields by name
    /// (HTTPFields matches names case-insensitively); a field sent on several lines is joined
    /// with ", ", as `init(method:headers:)` does.
    init(method: HTTPRequest.Method, fields: HTTPFields) {
        func field(_ name: HTTPField.Name) -> String? {
            let values = fields[values: name]
            return values.isEmpty ? nil : values.count == 1 ? values[0] : values.joined(separator: ", ")
        }
        self.init(method: method.rawValue, range: field(.range), ifRange: field(.ifRange), ifMatch: field(.ifMatch),
                  ifNoneMatch: field(.ifNoneMatch), ifModifiedSince: field(.ifModifiedSince),
                  ifUnmodifiedSince: field(.ifUnmodifiedSince))
    }
}
