import Index
import Support

/// Small documents derived from a clip or a source (waveform peaks, snapped windows) kept in the
/// local store beside the clips, under keys of their own: evicted like clips, and recorded with
/// their episode so a purge removes them.
extension PipelinePart {
    /// The stored blob under `key`, read whole on the blocking pool, or nil.
    func storedBlob(_ key: ClipKey) async throws -> [UInt8]? {
        try await blocking { [store] in
            guard let lease = try store.lookup(key) else { return nil }
            defer { lease.release() }
            return try ClipStore.readWhole(lease)
        }
    }

    /// Stores `bytes` under `key` as an entry of `episodeId`. Best effort: a full disk costs a
    /// recomputation, and `what` names the write in the store-write metrics.
    func keepBlob(_ bytes: [UInt8], key: ClipKey, episodeId: String, secondTierLocation: String? = nil, what: String) async {
        _ = try? await blocking { [store, storeWrites] in
            storeWrites.attempt(what, roomFor: 4 * Int64(bytes.count)) {
                let blob = try store.beginFill(key)
                try blob.write(bytes)
                _ = try store.commit(blob, secondTierLocation: secondTierLocation, episodeId: episodeId)
            }
        }
    }
}

extension ClipStore {
    /// A leased blob's bytes, whole (documents of a few tens of kB, not clips).
    static func readWhole(_ lease: ClipStore.Lease) throws -> [UInt8] {
        let count = Int(lease.record.byteCount)
        var bytes = [UInt8](repeating: 0, count: count)
        let read = try bytes.withUnsafeMutableBytes { buffer in
            try Posix.readFully(lease.descriptor, into: buffer.baseAddress!, count: count, at: 0, path: lease.path)
        }
        guard read == count else { throw FillError.incomplete(written: Int64(read), expected: Int64(count)) }
        return bytes
    }
}
