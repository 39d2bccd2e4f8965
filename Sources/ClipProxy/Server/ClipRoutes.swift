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
    /// Stored clips are sent with sendfile through these tickets when the server installed
    /// `SendFileHandler`; nil: read and written in chunks.
    var sendFile: SendFileTickets? = nil
    static let chunkSize: Int64 = 64 << 10

    func register(on router: Router<ClipRequestContext>) {
        router.get("/clips/:episode/:start") { request, context in try await self.serve(request, context) }
        router.head("/clips/:episode/:start") { request, context in try await self.serve(request, context) }
        router.on("/clips/:episode/:start", method: .options) { request, _ in self.preflight(request) }
    }

    /// CORS: `*`, or the request's Origin when it is in `http.cors_origins` (then `Vary: Origin`).
    func corsHeaders(_ request: Request, into headers: inout HTTPFields) {
        corsHeaders(origin: request.headers[.origin], into: &headers)
    }

    func corsHeaders(origin: String?, into headers: inout HTTPFields) {
        let allowed = pipeline.configuration.httpCorsOrigins
        if allowed == ["*"] {
            headers[.accessControlAllowOrigin] = "*"
        } else if let origin, allowed.contains(origin) {
            headers[.accessControlAllowOrigin] = origin
            headers[.vary] = "Origin"
        } else if !allowed.isEmpty {
            headers[.vary] = "Origin"
        }
        headers[.accessControlExposeHeaders] = "Content-Range, Accept-Ranges, ETag, Content-Length"
    }

    /// Preflight for dashboards that `fetch()` clips with Range or conditional headers.
    func preflight(_ request: Request) -> Response {
        var headers = HTTPFields()
        corsHeaders(request, into: &headers)
        headers[.accessControlAllowMethods] = "GET, HEAD, OPTIONS"
        headers[.accessControlAllowHeaders] = "Range, If-Range, If-None-Match, If-Match, If-Modified-Since, If-Unmodified-Since"
        headers[.accessControlMaxAge] = "86400"
        return Response(status: .noContent, headers: headers)
    }

    func serve(_ request: Request, _ context: ClipRequestContext) async throws -> Response {
        if CaptionRoutes.wantsCaptions(context.parameters.get("start")) { return try await CaptionRoutes(clips: self).serve(request, context) }
        if PeaksRoutes.wantsPeaks(context.parameters.get("start")) { return try await PeaksRoutes(clips: self).serve(request, context) }
        let clipRequest: ClipRequest
        do {
            try checkSignature(path: request.uri.path, query: request.uri.query)
            clipRequest = try validate(episode: context.parameters.get("episode") ?? "", start: context.parameters.get("start") ?? "",
                                       query: request.uri.query)
        } catch let error as HTTPProblem {
            pipeline.metrics.response(status: Int(error.status.code))
            return error.response(cors: self, request)
        }
        let conditions = ByteRangeResponse.RequestConditions(
            method: request.method.rawValue, headers: request.headers.map { ($0.name.canonicalName, $0.value) })
        // A Range request on a cold clip costs only the bytes it asks for, unless the answer
        // turns out to need the whole clip (then it is filled like any other request).
        let wantsPart = request.method == .get && request.headers[.range] != nil
        let answer: Answer
        do {
            answer = try await pipeline.withCurrentSource(clipRequest) { clip in
                try await self.answer(clip, conditions, wantsPart: wantsPart)
            }
        } catch {
            let problem = HTTPProblem(error)
            pipeline.metrics.response(status: Int(problem.status.code))
            if case CatalogError.unavailable = error { pipeline.metrics.upstreamErrors["catalog"]?.increment() }
            if problem.status.code >= 500 {
                pipeline.logger.warning("clip request failed before its headers", metadata: [
                    "episode.id": "\(clipRequest.episodeId)", "clip.start_ms": "\(clipRequest.startMs)",
                    "http.status": "\(problem.status.code)", "error": "\(error)"])
            }
            return problem.response(cors: self, request)
        }
        let (clip, body, decision) = (answer.clip, answer.body, answer.decision)
        let headers = responseHeaders(decision, tier: body.tier, origin: request.headers[.origin])
        recordAnswer(clip, tier: body.tier, status: decision.status)
        let status = HTTPResponse.Status(code: decision.status)
        guard !decision.parts.isEmpty else {
            release(body)
            return Response(status: status, headers: headers, body: ResponseBody())
        }
        let pipeline = self.pipeline
        let parts = decision.parts
        let partBytes = answer.partBytes
        let sendFile = self.sendFile
        return Response(status: status, headers: headers, body: ResponseBody(contentLength: Int(decision.bodyLength)) { writer in
            defer { Self.release(body) }
            for part in parts {
                switch part {
                case .literal(let bytes): try await writer.write(ByteBuffer(bytes: bytes))
                case .bytes(let range):
                    switch body {
                    case .stored(let lease, _):
                        if let sendFile {
                            try await Self.sendStored(lease, range: range, tickets: sendFile, into: &writer)
                        } else {
                            try await Self.streamStored(lease, range: range, into: &writer)
                        }
                    case .filling(let fill, _):
                        try await Self.streamFill(fill, range: range, pipeline: pipeline, into: &writer)
                    case .part:
                        // Read before the headers (`answer`): the one range a part is made for.
                        try await writer.write(partBytes!)
                    }
                    pipeline.metrics.bytesServed.increment(by: Int(range.count))
                }
            }
            try await writer.finish(nil)
        })
    }

    /// What a request is answered with: the body, the RFC 9110 decision and, for a part, its bytes.
    struct Answer: Sendable {
        let clip: PreparedClip
        let body: ClipBody
        let decision: ByteRangeResponse
        var partBytes: ByteBuffer?
    }

    /// Opens the clip and decides the response. Every upstream read a response depends on has
    /// answered when this returns, so the status line that follows is one the body can honour.
    private func answer(_ clip: PreparedClip, _ conditions: ByteRangeResponse.RequestConditions, wantsPart: Bool) async throws -> Answer {
        let body = try await wantsPart ? pipeline.openForPart(clip) : pipeline.open(clip)
        let decision = ByteRangeResponse.decide(conditions, for: representation(clip, body))
        guard case .part(let part) = body else { return Answer(clip: clip, body: body, decision: decision) }
        guard Self.worthAPart(decision, of: clip.plan.byteCount) else {
            let whole = try await pipeline.open(clip)
            return Answer(clip: clip, body: whole, decision: ByteRangeResponse.decide(conditions, for: representation(clip, whole)))
        }
        var answer = Answer(clip: clip, body: body, decision: decision)
        if let range = decision.parts.lazy.compactMap({ if case .bytes(let r) = $0 { r } else { nil } }).first {
            answer.partBytes = ByteBuffer(bytes: try await pipeline.blocking { try part.read(range) })
        }
        return answer
    }

    /// A part is read from the bytes behind it only for a single range that is not the whole
    /// clip (a browser seeking, a CDN slicing). Several ranges would each be their own uncached
    /// read, every time: they are answered from a fill that caches the clip and takes a fill slot
    /// like any other.
    static func worthAPart(_ decision: ByteRangeResponse, of length: Int64) -> Bool {
        let ranges = decision.parts.compactMap { if case .bytes(let r) = $0 { r } else { nil } }
        return ranges.count <= 1 && ranges.allSatisfy { $0.count < length }
    }

    /// A stored clip's range by sendfile: a descriptor of its own (a duplicate of the lease's,
    /// so it stays valid whatever evicts the clip meanwhile) handed to `SendFileHandler` through a ticket.
    static func sendStored(_ lease: ClipStore.Lease, range: Range<Int64>, tickets: SendFileTickets,
                           into writer: inout any ResponseBodyWriter) async throws {
        let descriptor = dup(lease.descriptor)
        guard descriptor >= 0 else { throw SystemCallError("dup", lease.path, code: errno) }
        let (id, marker) = tickets.register(descriptor: descriptor, range: range)
        do { try await writer.write(marker) } catch {
            tickets.cancel(id)
            throw error
        }
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

    /// Preconditions, Range, If-Range, multipart (RFC 9110 as nginx implements it), then the
    /// headers every clip response carries. The fast path sends exactly these too.
    func responseHeaders(_ decision: ByteRangeResponse, tier: ClipBody.Tier, origin: String?) -> HTTPFields {
        var headers = HTTPFields()
        for (name, value) in decision.headers {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        headers[.cacheControl] = "public, max-age=31536000, immutable"
        corsHeaders(origin: origin, into: &headers)
        headers[Self.clipTierField] = tier.rawValue
        return headers
    }

    static let clipTierField = HTTPField.Name("X-Clip-Tier")!

    /// Metrics and the access log line of an answered clip request.
    func recordAnswer(_ clip: PreparedClip, tier: ClipBody.Tier, status: Int) {
        pipeline.metrics.tierCounters[tier]?.increment()
        pipeline.metrics.response(status: status)
        pipeline.logger.info("clip", metadata: ["episode.id": "\(clip.request.episodeId)", "clip.start_ms": "\(clip.request.startMs)",
                                                 "clip.key": "\(clip.key)", "clip.tier": "\(tier.rawValue)",
                                                 "http.status": "\(status)"])
    }

    private func release(_ body: ClipBody) { Self.release(body) }
    static func release(_ body: ClipBody) {
        if case .stored(let lease, _) = body { lease.release() }
    }

    /// Length, strong ETag (from the clip key), Last-Modified (the clip's first cut) and type.
    func representation(_ clip: PreparedClip, _ body: ClipBody) -> ByteRangeResponse.Representation {
        let createdMs: Int64 = switch body {
        case .stored(let lease, _): lease.record.createdMs
        case .filling(let fill, _): fill.createdMs
        case .part(let part): part.createdMs
        }
        return ByteRangeResponse.Representation(length: clip.plan.byteCount, etag: "\"\(clip.key.hex.prefix(32))\"",
                                                lastModified: Date(timeIntervalSince1970: Double(createdMs / 1000)), contentType: "audio/mpeg")
    }

    // MARK: - Validation

    /// Episode id (ObjectId or URL-encoded guid), start (digits, optional `.mp3`), `duration_ms`.
    /// `episode` and `start` are the path segments as they arrived, `query` the raw query string.
    func validate(episode rawEpisode: String, start rawStart: String, query: String?) throws -> ClipRequest {
        let episode = try Self.episodeId(rawEpisode)
        var start = rawStart
        if start.hasSuffix(".mp3") { start.removeLast(4) }
        guard let startMs = Self.milliseconds(start) else {
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
            guard let parsed = Self.milliseconds(value), parsed > 0, parsed <= pipeline.configuration.clipsMaxDurationMs else {
                throw HTTPProblem(.badRequest, "invalid_duration_ms",
                                  "duration_ms must be an integer from 1 to \(pipeline.configuration.clipsMaxDurationMs)")
            }
            durationMs = parsed
        }
        return ClipRequest(episodeId: episode, startMs: startMs, durationMs: durationMs)
    }

    /// The episode id path segment, percent-decoded: an ObjectId or a guid without control characters or slashes.
    static func episodeId(_ raw: String) throws -> String {
        guard let episode = raw.removingPercentEncoding, !episode.isEmpty, episode.count <= 200,
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

    /// Digits only, at most 12 of them (over 31 years of audio): no signs, spaces or exponents.
    static func milliseconds(_ text: String) -> Int64? {
        guard !text.isEmpty, text.count <= 12, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        return Int64(text)
    }
}

/// An error as the client sees it: a status and a JSON body `{"error", "detail"}` a person can act on.
struct HTTPProblem: Error {
    let status: HTTPResponse.Status
    let error: String
    let detail: String
    var retryAfter: Int?
    /// When set, `detail` is sent as this list (FastAPI's validation errors) instead of the text.
    var issues: [ValidationIssue] = []

    init(_ status: HTTPResponse.Status, _ error: String, _ detail: String, retryAfter: Int? = nil) {
        self.status = status
        self.error = error
        self.detail = detail
        self.retryAfter = retryAfter
    }

    /// Maps module errors to statuses. Only this type decides HTTP statuses.
    init(_ failure: any Error) {
        switch failure {
        case let problem as HTTPProblem: self = problem
        case let error as CatalogError:
            switch error {
            case .notFound: self.init(.notFound, "not_found", error.description)
            case .unavailable: self.init(.serviceUnavailable, "catalog_unavailable", error.description, retryAfter: 5)
            case .invalidData: self.init(.badGateway, "catalog_error", error.description)
            }
        case let error as TrimError:
            switch error {
            case .windowOutsideAudio: self.init(.init(code: 422), "window_outside_episode", error.description)
            case .unsupportedFormat, .corrupt, .truncatedSource, .badFrameIndex: self.init(.badGateway, "bad_source_audio", error.description)
            case .sourceUnavailable: self.init(.badGateway, "source_unavailable", error.description)
            }
        case is ServiceError: self.init(.serviceUnavailable, "overloaded", "\(failure)", retryAfter: 1)
        case let error as S3Error:
            // A source or clip-bucket read refused before any byte was sent.
            switch error.kind {
            case .notFound: self.init(.notFound, "no_source_audio", "the episode's source audio is not in the source bucket: \(error)")
            case .throttled: self.init(.serviceUnavailable, "source_throttled", error.description, retryAfter: 1)
            case .objectChanged: self.init(.serviceUnavailable, "source_changed", "the source audio is being replaced; retry in a second", retryAfter: 1)
            case .transport where error.transferKind == .timeout: self.init(.gatewayTimeout, "source_timeout", error.description)
            case .denied, .serverError, .transport, .invalidRequest: self.init(.badGateway, "source_unavailable", error.description)
            }
        case is SourceChangedError:
            self.init(.serviceUnavailable, "source_changed", "the source audio is being replaced; retry in a second", retryAfter: 1)
        default: self.init(.internalServerError, "internal_error", "\(failure)")
        }
    }

    func response(cors routes: ClipRoutes? = nil, _ request: Request? = nil) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if let routes, let request { routes.corsHeaders(request, into: &headers) }
        headers[.cacheControl] = "no-store"
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        let detailValue: Any = issues.isEmpty ? detail : issues.map(\.json)
        let body = (try? JSONSerialization.data(withJSONObject: ["error": error, "detail": detailValue], options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}
