import Foundation
import Support
import HTTPTypes
import Hummingbird
import NIOCore

/// The old system's JSON pre-sign API, kept so the existing dashboard works unchanged:
///
///     GET /api/v1/audio_clips/{episode_id}?start_time_ms=N[&duration_ms=M][&snap=pause]
///
/// It makes sure the clip is in the second tier (the S3 clip bucket under the configured key
/// template), cutting it through the same pipeline as `/clips` (so the work is shared), and
/// answers with a pre-signed URL to it. Field names, JSON types and error statuses are the old
/// FastAPI service's: 400 for values out of range, 422 (FastAPI's validation error shape) for a
/// missing or non-integer parameter. `snap=pause` (new, as on `/clips`) moves the window to the
/// nearest pauses; the answer's `start_time_ms` and `duration_ms` are then the window chosen (the
/// one `clip_url` holds), followed by the window asked for.
struct AudioClipsAPI: Sendable {
    let pipeline: ClipPipeline
    let signer: URLSigner?

    func register(on router: some RouterMethods<ClipRequestContext>) {
        router.get("/api/v1/audio_clips/:episode") { request, context in try await self.handle(request, context) }
    }

    /// The answer, in the old API's field order, plus `proxy_url`.
    struct Answer {
        let clipURL: String
        let expiresAt: String
        let cacheHit: Bool
        let episodeId: String
        let startTimeMs: Int64
        let durationMs: Int64
        let generationTimeMs: Int64
        let proxyURL: String
        /// For `snap=pause`: the window asked for (`startTimeMs`/`durationMs` are the one chosen).
        var requested: ClipRequest?

        /// Written by hand: Foundation's encoders do not keep field order on Linux, and clients
        /// that compare answers as text see the old order.
        var json: String {
            "{\"clip_url\":\(Self.quoted(clipURL)),\"expires_at\":\(Self.quoted(expiresAt)),\"cache_hit\":\(cacheHit),"
                + "\"episode_id\":\(Self.quoted(episodeId)),\"start_time_ms\":\(startTimeMs),\"duration_ms\":\(durationMs),"
                + "\"generation_time_ms\":\(generationTimeMs),\"proxy_url\":\(Self.quoted(proxyURL))"
                + (requested.map { ",\"snap\":\"pause\",\"requested_start_time_ms\":\($0.startMs),\"requested_duration_ms\":\($0.durationMs)" } ?? "")
                + "}"
        }

        static func quoted(_ text: String) -> String {
            var out = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case _ where scalar.value < 0x20: out += String(format: "\\u%04X", scalar.value)
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out + "\""
        }
    }

    func handle(_ request: Request, _ context: ClipRequestContext) async throws -> Response {
        let started = ContinuousClock.now
        let clipRequest: ClipRequest
        do {
            clipRequest = try validate(request, context)
        } catch let problem as HTTPProblem {
            pipeline.metrics.response(status: Int(problem.status.code))
            return problem.response()
        }
        do {
            let clip = try await pipeline.prepare(clipRequest)
            let existed = try await pipeline.ensureInSecondTier(clip)
            let now = Date()
            let expires = pipeline.configuration.presignExpiresS
            // A snapped request is answered with the exact window it moved to (`clip.request`).
            let proxyURL = proxyURL(for: clip.request, request: request, now: now)
            let presigned = try await pipeline.blocking { [pipeline] in
                try pipeline.secondTier?.presignedURL(clip, expires: expires, now: now)
            }
            let elapsed = ContinuousClock.now - started
            let answer = Answer(
                clipURL: presigned ?? proxyURL,
                expiresAt: Self.iso8601(now.addingTimeInterval(TimeInterval(expires))),
                cacheHit: existed, episodeId: clipRequest.episodeId, startTimeMs: clip.request.startMs,
                durationMs: clip.request.durationMs,
                generationTimeMs: elapsed.wholeMilliseconds,
                proxyURL: proxyURL, requested: clipRequest.snapsToPauses ? clipRequest : nil)
            pipeline.metrics.response(status: 200)
            pipeline.logger.info("audio_clips", metadata: ["episode.id": "\(clipRequest.episodeId)", "clip.start_ms": "\(clipRequest.startMs)",
                                                            "clip.window": "\(clip.request.startMs)+\(clip.request.durationMs)", "clip.key": "\(clip.key)", "cache_hit": "\(existed)", "http.status": "200"])
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: answer.json)))
        } catch {
            let problem = HTTPProblem(error)
            pipeline.metrics.response(status: Int(problem.status.code))
            return problem.response()
        }
    }

    // MARK: - Validation (FastAPI's rules)

    func validate(_ request: Request, _ context: ClipRequestContext) throws -> ClipRequest {
        let episode = try ClipRoutes.episodeId(context.parameters.get("episode") ?? "")
        let query = request.uri.queryParameters
        var problems: [ValidationIssue] = []
        func integer(_ name: String, required: Bool) -> Int64? {
            guard let text = query.get(name) else {
                if required { problems.append(ValidationIssue(type: "missing", loc: ["query", name], msg: "Field required", input: nil)) }
                return nil
            }
            guard let value = Self.integer(text) else {
                problems.append(ValidationIssue(type: "int_parsing", loc: ["query", name],
                                                msg: "Input should be a valid integer, unable to parse string as an integer", input: text))
                return nil
            }
            return value
        }
        let start = integer("start_time_ms", required: true)
        let duration = integer("duration_ms", required: false)
        guard problems.isEmpty, let start else { throw HTTPProblem(unprocessable: problems) }
        guard start >= 0 else { throw HTTPProblem(.badRequest, "invalid_start_time_ms", "start_time_ms must be non-negative") }
        let maximum = pipeline.configuration.clipsMaxDurationMs
        let durationMs = duration ?? pipeline.configuration.clipsDefaultDurationMs
        guard durationMs > 0, durationMs <= maximum else {
            throw HTTPProblem(.badRequest, "invalid_duration_ms", "duration_ms must be between 1 and \(maximum)")
        }
        let snaps = query.getAll("snap")
        guard snaps.count <= 1, snaps.allSatisfy({ $0 == "pause" }) else {
            throw HTTPProblem(.badRequest, "invalid_snap", "snap must be `pause` (the window moves to the nearest pauses), given at most once; leave it out for the exact window")
        }
        return ClipRequest(episodeId: episode, startMs: start, durationMs: durationMs, snapsToPauses: !snaps.isEmpty)
    }

    /// An integer as pydantic reads one from a query string: optional sign, digits, surrounding
    /// spaces allowed; anything else (decimals, exponents, words) is not an integer.
    static func integer(_ text: String) -> Int64? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        var digits = Substring(trimmed)
        if digits.first == "-" || digits.first == "+" { digits = digits.dropFirst() }
        guard !digits.isEmpty, digits.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        return Int64(trimmed.hasPrefix("+") ? String(trimmed.dropFirst()) : trimmed)
    }

    // MARK: - URLs

    /// The proxy's own `/clips` URL for the window, signed when URL signing is on.
    func proxyURL(for clip: ClipRequest, request: Request, now: Date) -> String {
        let configuration = pipeline.configuration
        var parameters: [(String, String)] = []
        if clip.durationMs != configuration.clipsDefaultDurationMs { parameters.append(("duration_ms", String(clip.durationMs))) }
        return ClipLinks(request: request, configuration: configuration, signer: signer, now: now)
            .url(episodeId: clip.episodeId, startMs: clip.startMs, parameters: parameters)
    }

    static func iso8601(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }
}

/// One entry of a FastAPI-style 422 `detail` list.
struct ValidationIssue: Sendable {
    let type: String
    let loc: [String]
    let msg: String
    let input: String?

    var json: [String: Any] { ["type": type, "loc": loc, "msg": msg, "input": input ?? NSNull()] }
}

extension HTTPProblem {
    /// FastAPI's 422: `detail` is the list of validation errors.
    init(unprocessable issues: [ValidationIssue]) {
        self.init(.init(code: 422), "validation_error", issues.map(\.msg).joined(separator: "; "))
        self.issues = issues
    }
}
