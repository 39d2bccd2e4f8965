import Foundation
import Index
import Support
import Synchronization
import Trim
import Upstream

/// The exact windows `snap=pause` requests stand for (`PauseSnap` in Trim chooses them). A
/// choice costs one source read, of the clip's own bytes widened by the 1.25 s of audio the
/// search looks at; those bytes are then kept with the scans' (`RecentSourceBytes`), so the fill
/// of the snapped clip that usually follows reads nothing more. The choice depends on the source
/// bytes alone, so it is kept: in memory, and in the local store under a key of its own (16
/// bytes, an entry of the episode, so a purge removes it). A repeat costs a lookup.
final class PauseSnaps: PipelinePart, Sendable {
    let shared: PipelineShared
    let indexes: FrameIndexes
    let sources: SourceOpener
    private let chosen = Mutex<[ClipKey: ClipPlan.Request]>([:])
    static let chosenLimit = 16_384
    /// Choices being made, by key: one source read however many ask at once.
    private let choices = SingleFlight<ClipKey, ClipPlan.Request>()

    init(_ shared: PipelineShared, indexes: FrameIndexes, sources: SourceOpener) {
        self.shared = shared
        self.indexes = indexes
        self.sources = sources
    }

    /// What a choice is stored under: the source version, the asked window, the longest clip
    /// allowed (it bounds the end) and the engine (it decides what is decoded).
    static func key(_ asked: ClipPlan.Request, identity: String, maxDurationMs: Int64) -> ClipKey {
        ClipKey(identity: "snap.v1|pause|\(identity)|\(asked.startMs)|\(asked.durationMs)|\(maxDurationMs)|e\(ClipPlan.engineVersion)")
    }

    /// The window `asked` snaps to on `episode`'s source. `planning` plans a window with an index
    /// that covers it (extending a partial one), as `/clips` plans.
    func window(_ asked: ClipPlan.Request, episode: ResolvedEpisode, episodeId: String, identity: String, maxDurationMs: Int64,
                planning: @escaping @Sendable (ClipPlan.Request) async throws -> (ClipPlan, FrameIndex)) async throws -> ClipPlan.Request {
        let key = Self.key(asked, identity: identity, maxDurationMs: maxDurationMs)
        if let known = chosen.withLock({ $0[key] }) { return known }
        return try await choices.run(key) { [self] in
            if let known = chosen.withLock({ $0[key] }) { return known }
            if let stored = try await storedBlob(key).flatMap(Self.decode) { return remember(stored, key) }
            let started = ContinuousClock.now
            let (searchPlan, index) = try await planning(PauseSnap.searchWindow(asked))
            let readFrom = ContinuousClock.now
            let held = try await read(searchPlan.readRange, of: episode, identity: identity)
            let decideFrom = ContinuousClock.now
            let window = try await blocking { try PauseSnap.snap(asked, index: index, source: held, maxDurationMs: maxDurationMs) }
            let decided = ContinuousClock.now
            logger.info("clip boundaries snapped to pauses", metadata: [
                "episode.id": "\(episodeId)", "clip.asked": "\(asked.startMs)+\(asked.durationMs)",
                "clip.window": "\(window.startMs)+\(window.durationMs)", "source.range": "\(searchPlan.readRange)",
                "snap.ms": "\((decided - started).wholeMilliseconds)",
                "snap.read.us": "\((decideFrom - readFrom).wholeMicroseconds)", "snap.decide.us": "\((decided - decideFrom).wholeMicroseconds)"])
            // Kept in memory first, so a repeat finds it; the store's copy (for restarts) is
            // written in the background, not before this clip's first byte.
            remember(window, key)
            background.start("snapped window store") { [self] in
                await keepBlob(Self.encode(window), key: key, episodeId: episodeId, what: "snapped window")
            }
            return window
        }
    }

    /// The source bytes of `range` in one read (or none, when a scan just read them), kept for
    /// the fill that follows. Blocking work on the pool.
    private func read(_ range: Range<Int64>, of episode: ResolvedEpisode, identity: String) async throws -> HeldBytesSource {
        let recorder = indexes.recentSourceBytes.recording(try sources.open(episode), identity: identity)
        let bytes = try await blocking { try recorder.read(offset: range.lowerBound, count: Int(range.count)) }
        guard Int64(bytes.count) == range.count else { throw TrimError.truncatedSource(offset: range.lowerBound + Int64(bytes.count), expected: range.upperBound) }
        indexes.recentSourceBytes.keep(recorder)
        return HeldBytesSource(size: recorder.size, start: range.lowerBound, bytes: bytes)
    }

    @discardableResult
    private func remember(_ window: ClipPlan.Request, _ key: ClipKey) -> ClipPlan.Request {
        chosen.withLock { chosen in
            if chosen.count >= Self.chosenLimit { chosen.removeAll(keepingCapacity: true) }
            chosen[key] = window
        }
        return window
    }

    static func encode(_ window: ClipPlan.Request) -> [UInt8] {
        var writer = ByteWriter()
        writer.i64(window.startMs)
        writer.i64(window.durationMs)
        return writer.data
    }

    static func decode(_ bytes: [UInt8]) -> ClipPlan.Request? {
        var reader = ByteReader(bytes)
        guard let start = try? reader.i64(), let duration = try? reader.i64(), start >= 0, duration > 0 else { return nil }
        return ClipPlan.Request(startMs: start, durationMs: duration)
    }
}
