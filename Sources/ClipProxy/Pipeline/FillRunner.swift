import Foundation
import Index
import Logging
import Trim

/// Makes clips: one fill per clip key however many requests want it, within `limits.max_fills`
/// slots (and a bounded queue), from the second tier's copy or from the source; then keeps the
/// clip in the local store and uploads it to the second tier. Every fill and upload runs as
/// `BackgroundWork`, so shutdown waits for them: a fill belongs to the cache, not to a request,
/// and finishes even when every client has left.
final class FillRunner: PipelinePart, Sendable {
    let shared: PipelineShared
    let secondTier: (any ClipTier)?
    let listings: SecondTierListings?
    let indexes: FrameIndexes
    let coordinator = FillCoordinator()
    let slots: FillSlots
    /// Second-tier uploads in progress, so one clip is uploaded once however many ask.
    private let uploads = SingleFlight<ClipKey, Void>()

    init(_ shared: PipelineShared, secondTier: (any ClipTier)?, listings: SecondTierListings?, indexes: FrameIndexes,
         limits: (maxFills: Int, queue: Int, queueWait: Duration)) {
        self.shared = shared
        self.secondTier = secondTier
        self.listings = listings
        self.indexes = indexes
        slots = FillSlots(capacity: limits.maxFills, queueLimit: limits.queue, maxWait: limits.queueWait)
    }

    /// Starts a fill for `clip` (from `stored` when the second tier has it) and returns it once
    /// started. nil when another request's fill is running or has just been stored: the caller
    /// looks again. `lookup` runs once the fill is registered, so concurrent requests for a cold
    /// clip make one second-tier lookup, not one each.
    func fill(_ clip: PreparedClip, createdMs: Int64, lookup: () async -> StoredClip?) async throws -> (fill: Fill, from: StoredClip?)? {
        let fill = Fill(key: clip.key, length: clip.plan.byteCount, createdMs: createdMs)
        switch await coordinator.claim(fill, isStored: { [store] in (try? store.contains(clip.key)) ?? false }) {
        case .mine: break
        case .running, .stored: return nil
        }
        do { try await slots.acquire() } catch {
            metrics.overloaded.increment()
            logger.warning("fill refused: all fill slots busy and the queue full or too slow",
                           metadata: ["clip.key": "\(clip.key)", "limits.max_fills": "\(slots.capacity)"])
            fill.finish(error)
            await coordinator.remove(fill)
            throw error
        }
        let stored = await lookup()
        if let createdMs = stored?.createdMs { fill.createdMs = createdMs }
        background.start("fill") { [self] in await run(clip, fill, from: stored) }
        try await fill.waitUntilStarted()
        return (fill, stored)
    }

    /// One fill, start to end: produce the bytes (readers take them from memory as they arrive),
    /// keep them locally, free the slot, then upload a clip cut from the source.
    private func run(_ clip: PreparedClip, _ fill: Fill, from stored: StoredClip?) async {
        let local = LocalCopy(store: store, key: clip.key, createdMs: fill.createdMs)
        logger.info(stored == nil ? "fill started" : "local copy from the second tier started",
                    metadata: ["clip.key": "\(clip.key)", "episode.id": "\(clip.request.episodeId)",
                               "source.range": "\(clip.plan.readRange)", "clip.bytes": "\(clip.plan.byteCount)"])
        let started = ContinuousClock.now
        do {
            try await blocking { [self] in
                try produce(clip, from: stored, fill: fill) { bytes in
                    try fill.append(bytes)
                    local.write(bytes, of: fill)
                }
            }
            guard fill.bytesWritten == clip.plan.byteCount else {
                throw FillError.incomplete(written: fill.bytesWritten, expected: clip.plan.byteCount)
            }
        } catch {
            local.abort()
            await end(fill, error: error)
            metrics.fillFailures.increment()
            metrics.upstreamErrors[stored == nil ? "source" : "clip_tier"]?.increment()
            logger.error("fill failed; nothing cached", metadata: ["clip.key": "\(clip.key)", "error": "\(error)",
                                                                   "fill.answered": "\(fill.hasStarted)"])
            return
        }
        // Readers have every byte already (`append` woke them); the fill ends once the local
        // store has kept the clip or given up, so `waitUntilFinished` means settled, and a
        // request in between joins this fill.
        let kept = await keep(clip, local, location: stored == nil ? nil : secondTier?.location(clip))
        await end(fill, error: nil)
        guard stored == nil else {
            logger.info("local copy from the second tier finished", metadata: ["clip.key": "\(clip.key)", "cache.kept": "\(kept)"])
            return
        }
        let elapsed = ContinuousClock.now - started
        metrics.fillDuration.record(duration: elapsed)
        // How long the source took to answer, as this node saw it (the upstream's own time to
        // first byte plus the network): what a client's wait is measured against.
        let sourceWait = fill.startedAt.map { String(format: "%.3f", Double(($0 - started).components.attoseconds) / 1e15
                                                        + Double(($0 - started).components.seconds) * 1000) } ?? "-"
        logger.info("fill finished", metadata: ["clip.key": "\(clip.key)", "fill.ms": "\(elapsed.wholeMilliseconds)", "cache.kept": "\(kept)",
                                                "source.first_byte_ms": "\(sourceWait)"])
        await copyToSecondTier(clip, kept ? nil : fill)
    }

    /// Ends a fill, whatever its outcome: readers learn it, later requests stop joining it (they
    /// find the stored clip or start anew), its slot is free.
    private func end(_ fill: Fill, error: (any Error)?) async {
        fill.finish(error)
        await coordinator.remove(fill)
        await slots.release()
    }

    /// Emits the whole clip into `emit`, announcing the fill started when its upstream answers.
    /// The clip writer emits a frame at a time (a few hundred bytes); they are handed on in
    /// batches, once per source chunk or 64 KiB, so the local copy, the readers' wake-ups and
    /// their socket writes come per batch, not per frame. Blocking.
    private func produce(_ clip: PreparedClip, from stored: StoredClip?, fill: Fill,
                         emit: @escaping (UnsafeRawBufferPointer) throws -> Void) throws {
        let answered: @Sendable () -> Void = { fill.markStarted() }
        let batch = EmitBatch(emit)
        defer { batch.discard() }
        let source = { AnnouncingSource(base: try self.indexes.openSource(clip.episode, identity: clip.sourceIdentity), onFirstBytes: answered) }
        guard let stored else {
            try Trimmer.write(clip.plan, from: batch.flushingAfterEachChunk(try source()), emit: batch.add)
            return try batch.flush()
        }
        do {
            try AnnouncingSource(base: stored.bytes, onFirstBytes: answered).stream(0..<clip.plan.byteCount) { chunk in
                try batch.add(chunk)
                try batch.flush()
            }
            return
        } catch {
            try batch.flush()  // the bytes before the failure are the clip's: keep them
            // The copy is the same bytes the source makes: carry on from where it stopped.
            metrics.upstreamErrors["clip_tier"]?.increment()
            logger.warning("second tier copy failed; cutting the rest from the source",
                           metadata: ["clip.key": "\(clip.key)", "clip.offset": "\(fill.bytesWritten)", "error": "\(error)"])
        }
        try Trimmer.write(clip.plan, range: fill.bytesWritten..<clip.plan.byteCount, from: batch.flushingAfterEachChunk(try source()), emit: batch.add)
        try batch.flush()
    }

    /// Commits a finished fill's local copy, or counts why it could not be kept. True when stored.
    private func keep(_ clip: PreparedClip, _ local: LocalCopy, location: String?) async -> Bool {
        let room = 4 * clip.plan.byteCount
        guard local.failure == nil, let blob = local.blob else {
            let failure = local.failure ?? FillError.notStored
            _ = try? await blocking { [storeWrites] in storeWrites.bypassed("clip", failure, roomFor: room) }
            return false
        }
        return (try? await blocking { [storeWrites, store] in
            storeWrites.attempt("clip", roomFor: room) {
                try store.commit(blob, secondTierLocation: location, episodeId: clip.request.episodeId)
            }
        }) ?? false
    }

    /// After a fill: copy the clip to the second tier; failures are logged (the clip is still
    /// served from L1 and is copied again when the JSON API asks for it).
    private func copyToSecondTier(_ clip: PreparedClip, _ unkept: Fill?) async {
        do {
            try await upload(clip, unkept: unkept)
            logger.info("second tier copy finished", metadata: ["clip.key": "\(clip.key)"])
        } catch {
            metrics.upstreamErrors["clip_tier"]?.increment()
            logger.warning("could not copy the clip to the second tier", metadata: ["clip.key": "\(clip.key)", "error": "\(error)"])
        }
    }

    /// Uploads the clip to the second tier once, however many callers ask at the same time: the
    /// local store's copy (returns at once if the index says it is there already), or the bytes
    /// of a finished fill the local store could not keep.
    func upload(_ clip: PreparedClip, unkept: Fill? = nil) async throws {
        guard let secondTier else { return }
        try await uploads.run(clip.key) { [self] in
            try await blocking { [store, storeWrites] in
                guard let lease = try store.lookup(clip.key) else {
                    guard let unkept else { throw FillError.notStored }
                    return try secondTier.store(clip, contents: .bytes(unkept.contents), createdMs: unkept.createdMs)
                }
                defer { lease.release() }
                if lease.record.secondTierLocation == secondTier.location(clip) { return }
                // Through the lease's descriptor: the file may be evicted during the upload.
                try secondTier.store(clip, contents: .file("/proc/self/fd/\(lease.descriptor)"), createdMs: lease.record.createdMs)
                storeWrites.attempt("second tier location") { try store.setSecondTierLocation(clip.key, secondTier.location(clip)) }
            }
            listings?.noteStored(clip)
        }
    }
}
