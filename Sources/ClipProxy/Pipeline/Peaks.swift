import Foundation
import Index
import Support
import Trim

/// A clip's waveform peaks (`/clips/<id>/<start>.json`), computed from the clip's own bytes and
/// kept beside it: in the local store under a key derived from the clip key, and in the second
/// tier next to the clip. One computation per peaks key however many ask (`peakLoads`).
extension ClipPipeline {
    /// The peaks document (audiowaveform JSON bytes): from the local store, else the second tier,
    /// else decoded from the clip, which is opened as a `/clips` request would open it (so a cold
    /// clip is cut once and cached as usual).
    func peaks(of clip: PreparedClip, _ shape: PeaksShape) async throws -> [UInt8] {
        let key = shape.key(of: clip)
        if let stored = try await storedBlob(key) { return stored }
        return try await peakLoads.run(key) { [self] in
            // A flight that ended just before this one started has stored them.
            if let stored = try await storedBlob(key) { return stored }
            if let shared = await sharedPeaks(of: clip, shape) {
                await keepPeaks(shared, key: key, clip: clip, secondTierLocation: secondTierPeaksLocation(clip, shape))
                return shared
            }
            let computed = try await computePeaks(of: clip, shape)
            await keepPeaks(computed, key: key, clip: clip, secondTierLocation: nil)
            sharePeaks(computed, key: key, of: clip, shape)
            return computed
        }
    }

    private func secondTierPeaksLocation(_ clip: PreparedClip, _ shape: PeaksShape) -> String? {
        (secondTier as? any DerivedObjectTier).map { shape.location(of: clip, in: $0) }
    }

    /// Another node's (or this node's, before a restart) peaks from the second tier. A tier that
    /// cannot answer is logged and treated as not having them: decoding the clip is always correct.
    private func sharedPeaks(of clip: PreparedClip, _ shape: PeaksShape) async -> [UInt8]? {
        guard let tier = secondTier as? any DerivedObjectTier else { return nil }
        let location = shape.location(of: clip, in: tier)
        do {
            let bytes = try await blocking { try tier.derivedObject(at: location) }
            if bytes != nil { logger.info("peaks from the second tier", metadata: ["clip.key": "\(clip.key)", "peaks.location": "\(location)"]) }
            return bytes
        } catch {
            metrics.upstreamErrors["clip_tier"]?.increment()
            logger.warning("second tier peaks lookup failed; decoding the clip", metadata: ["clip.key": "\(clip.key)", "error": "\(error)"])
            return nil
        }
    }

    /// Reads the whole clip through the normal flow (stored, joined or a new fill, which is
    /// awaited to its end), then decodes it on the blocking pool.
    private func computePeaks(of clip: PreparedClip, _ shape: PeaksShape) async throws -> [UInt8] {
        let mp3: [UInt8]
        switch try await open(clip) {
        case .stored(let lease, _):
            defer { lease.release() }
            mp3 = try await blocking { try ClipStore.readWhole(lease) }
        case .filling(let fill, _):
            try await fill.waitUntilFinished()
            mp3 = fill.contents
        case .part:
            preconditionFailure("open never answers with a part")
        }
        let started = ContinuousClock.now
        let peaks = try await blocking {
            try WaveformPeaks.of(mp3: MemoryByteSource(mp3), samplesPerPixel: shape.samplesPerPixel, bits: shape.bits)
        }
        guard peaks.sampleCount == clip.plan.sampleCount else {
            // The clip's Info/LAME tag says how many samples it holds; a decode that disagrees is a bug to report, not peaks to keep.
            throw TrimError.corrupt("decoded \(peaks.sampleCount) samples from clip \(clip.key), its plan says \(clip.plan.sampleCount)")
        }
        logger.info("peaks computed", metadata: [
            "clip.key": "\(clip.key)", "peaks.samples_per_pixel": "\(shape.samplesPerPixel)", "peaks.bits": "\(shape.bits)",
            "peaks.length": "\(peaks.length)", "peaks.decode_ms": "\((ContinuousClock.now - started).wholeMilliseconds)"])
        return Array(peaks.json.utf8)
    }

    /// Stores the peaks in the local store (best effort: a full disk costs a recomputation), as
    /// an entry of the clip's episode so a purge removes it.
    private func keepPeaks(_ bytes: [UInt8], key: ClipKey, clip: PreparedClip, secondTierLocation: String?) async {
        await keepBlob(bytes, key: key, episodeId: clip.request.episodeId, secondTierLocation: secondTierLocation, what: "peaks")
    }

    /// Copies freshly computed peaks to the second tier in the background, then records where.
    private func sharePeaks(_ bytes: [UInt8], key: ClipKey, of clip: PreparedClip, _ shape: PeaksShape) {
        guard let tier = secondTier as? any DerivedObjectTier else { return }
        let location = shape.location(of: clip, in: tier)
        background.start("peaks share") { [self] in
            do {
                try await blocking { [store, storeWrites] in
                    try tier.storeDerivedObject(bytes, at: location, contentType: "application/json")
                    storeWrites.attempt("second tier location") { try store.setSecondTierLocation(key, location) }
                }
                logger.info("peaks copied to the second tier", metadata: ["clip.key": "\(clip.key)", "peaks.location": "\(location)"])
            } catch {
                metrics.upstreamErrors["clip_tier"]?.increment()
                logger.warning("could not copy the peaks to the second tier", metadata: ["clip.key": "\(clip.key)", "error": "\(error)"])
            }
        }
    }
}
