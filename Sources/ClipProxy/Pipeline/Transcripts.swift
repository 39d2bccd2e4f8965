import Upstream

extension ClipPipeline {
    /// The episode's transcript chunks: from memory while younger than `catalog.ttl_s`, else from
    /// the catalog (off the event loop, once per episode however many ask). Past the TTL a catalog
    /// that cannot answer leaves the last answer in use, as it does for resolutions.
    func transcript(of episode: ResolvedEpisode) async throws -> [TranscriptChunk] {
        let cached = transcripts.entry(episode.guid)
        if let cached, cached.isFresh { return cached.chunks }
        do {
            return try await transcripts.loads.run(episode.guid) { [self] in
                let chunks = try await blocking { [catalog = locator.catalog] in try catalog.transcriptChunks(guid: episode.guid) }
                transcripts.keep(chunks, guid: episode.guid)
                return chunks
            }
        } catch where cached != nil && EpisodeResolver.isOutage(error) {
            metrics.catalogStale.increment()
            logger.warning("catalog unavailable; serving the last known transcript",
                           metadata: ["episode.id": "\(episode.episodeId)", "error": "\(error)"])
            return cached!.chunks
        }
    }
}
