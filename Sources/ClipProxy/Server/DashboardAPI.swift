import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Upstream

/// What a dashboard needs besides the clips themselves:
///
///     GET /api/v1/episodes[?limit=N]           the most recent playable episodes, by podcast
///     GET /api/v1/search?q=TEXT[&limit=N]      transcript chunks holding every word, with links to play them
///
/// Both ask the catalog on the blocking pool and list only episodes whose source audio resolves
/// (through the pipeline's cached resolutions), so whatever they return can be played.
struct DashboardAPI: Sendable {
    let pipeline: ClipPipeline
    let signer: URLSigner?

    static let episodeLimits = (default: 100, max: 200)
    static let searchLimits = (default: 20, max: 100)
    static let maxQueryCharacters = 200
    static let maxQueryWords = 10
    /// Catalog queries share the blocking pool with fills and resolutions: at most two at once
    /// (a regex search scans the whole chunk collection on MongoDB), a few more wait, the rest
    /// get 503 + Retry-After, so searches can never starve the clips.
    let catalogQueries = FillSlots(capacity: 2, queueLimit: 16, maxWait: .seconds(5))

    func register(on router: some RouterMethods<ClipRequestContext>) {
        router.get("/api/v1/episodes") { request, _ in await self.answer { try await self.episodes(request) } }
        router.get("/api/v1/search") { request, _ in await self.answer { try await self.search(request) } }
    }

    /// Sorted by podcast name, then newest first: a dashboard groups them without sorting again.
    func episodes(_ request: Request) async throws -> [[String: Any]] {
        let parameters = try Self.parameters(request)
        let limit = try Self.limit(parameters, Self.episodeLimits)
        let recent = try await catalogQuery { [catalog = pipeline.locator.catalog] in try catalog.recentEpisodes(limit: limit) }
        let playable = await playableIds(recent.map(\.episodeId))
        let links = ClipLinks(request: request, configuration: pipeline.configuration, signer: signer, now: Date())
        return recent.filter { playable.contains($0.episodeId) }
            .sorted { $0.podcastName != $1.podcastName ? $0.podcastName < $1.podcastName : EpisodeSummary.newestFirst($0, $1) }
            .map { episode in
                let fields: [String: Any] = ["episode_id": episode.episodeId, "guid": episode.guid, "podcast_name": episode.podcastName,
                                             "episode_title": episode.episodeTitle, "published_date": episode.publishedDate ?? NSNull(),
                                             "duration_ms": episode.durationMs ?? NSNull()]
                return fields.merging(links.player(episodeId: episode.episodeId, startMs: 0)) { $1 }
            }
    }

    /// In the catalog's order; each hit's clip starts where its chunk starts.
    func search(_ request: Request) async throws -> [[String: Any]] {
        let parameters = try Self.parameters(request, formEncoded: true)
        let query = try Self.query(parameters)
        let limit = try Self.limit(parameters, Self.searchLimits)
        let hits = try await catalogQuery { [catalog = pipeline.locator.catalog] in try catalog.searchTranscripts(query, limit: limit) }
        let playable = await playableIds(hits.map(\.episodeId))
        let links = ClipLinks(request: request, configuration: pipeline.configuration, signer: signer, now: Date())
        return hits.filter { playable.contains($0.episodeId) }.map { hit in
            let startMs = max(0, Int64((hit.chunk.startTime * 1000).rounded()))
            let fields: [String: Any] = ["episode_id": hit.episodeId, "guid": hit.guid, "podcast_name": hit.podcastName,
                                         "episode_title": hit.episodeTitle, "start_ms": startMs,
                                         "end_ms": hit.chunk.endTime.map { Int64(($0 * 1000).rounded()) } ?? NSNull(), "text": hit.chunk.text]
            return fields.merging(links.player(episodeId: hit.episodeId, startMs: startMs)) { $1 }
        }
    }

    /// `work` on the blocking pool, once one of the catalog-query slots is free.
    private func catalogQuery<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await catalogQueries.acquire()
        do {
            let result = try await pipeline.blocking(work)
            await catalogQueries.release()
            return result
        } catch {
            await catalogQueries.release()
            throw error
        }
    }

    /// The ids among `ids` whose episode resolves to source audio now. A resolution is cached
    /// for `catalog.ttl_s`, so listing again costs little; an episode that cannot be resolved
    /// (no audio, or the catalog cannot say) is left out.
    func playableIds(_ ids: [String]) async -> Set<String> {
        await withTaskGroup(of: String?.self) { group in
            for id in Set(ids) { group.addTask { (try? await pipeline.resolver.resolve(id)) == nil ? nil : id } }
            var playable = Set<String>()
            for await id in group { if let id { playable.insert(id) } }
            return playable
        }
    }

    /// 200 with the JSON array, or the JSON error.
    private func answer(_ body: () async throws -> [[String: Any]]) async -> Response {
        do {
            let data = try JSONSerialization.data(withJSONObject: try await body(), options: [.sortedKeys, .withoutEscapingSlashes])
            pipeline.metrics.response(status: 200)
            return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
        } catch {
            let problem = HTTPProblem(error)
            pipeline.metrics.response(status: Int(problem.status.code))
            return problem.response()
        }
    }

    // MARK: - Validation

    /// The decoded query parameters. With `formEncoded`, `+` is a space, as an HTML form sends it.
    static func parameters(_ request: Request, formEncoded: Bool = false) throws -> [(String, String)] {
        let raw = request.uri.query ?? ""
        guard let parameters = URLSigner.parameters(formEncoded ? raw.replacingOccurrences(of: "+", with: " ") : raw) else {
            throw HTTPProblem(.badRequest, "invalid_query", "the query string has a bad percent-escape or is not UTF-8")
        }
        return parameters
    }

    static func limit(_ parameters: [(String, String)], _ bounds: (default: Int, max: Int)) throws -> Int {
        let values = parameters.filter { $0.0 == "limit" }.map(\.1)
        guard let text = values.first else { return bounds.default }
        guard values.count == 1, let value = Int64(plainDigits: text), (1...Int64(bounds.max)).contains(value) else {
            throw HTTPProblem(.badRequest, "invalid_limit", "limit must be given once, as an integer from 1 to \(bounds.max)")
        }
        return Int(value)
    }

    static func query(_ parameters: [(String, String)]) throws -> TranscriptQuery {
        let values = parameters.filter { $0.0 == "q" }.map(\.1)
        guard values.count == 1, let text = values.first, text.count <= maxQueryCharacters,
              !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }),
              let query = TranscriptQuery(text), query.words.count <= maxQueryWords else {
            throw HTTPProblem(.badRequest, "invalid_q", "give q once: 1 to \(maxQueryWords) words to find in transcripts, "
                              + "at most \(maxQueryCharacters) characters, no control characters")
        }
        return query
    }
}
