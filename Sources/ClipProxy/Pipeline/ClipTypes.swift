import Foundation
import Index
import Synchronization
import Trim
import Upstream

/// What a request asks for, once validated.
struct ClipRequest: Sendable, Hashable {
    var episodeId: String
    var startMs: Int64
    var durationMs: Int64
    /// `snap=pause`: the window moves to the nearest pauses (`PauseSnaps`); the prepared clip is
    /// then the exact window it moved to.
    var snapsToPauses = false
    /// `download=1`: the clip tagged as a file a person keeps (`ClipDownload`).
    var download = false

    /// The exact window `window` of this request's episode.
    func exactly(_ window: ClipPlan.Request) -> ClipRequest {
        ClipRequest(episodeId: episodeId, startMs: window.startMs, durationMs: window.durationMs)
    }
}

/// A clip whose plan and key are known: its exact length, before any source byte is read.
struct PreparedClip: Sendable {
    let request: ClipRequest
    let episode: ResolvedEpisode
    let plan: ClipPlan
    let key: ClipKey
    let sourceIdentity: String
}

/// Where the bytes of a response come from. Every case has already been answered by its
/// upstream when it is returned: the status line may go out.
enum ClipBody: Sendable {
    /// L1: a finished file in the local store, open and pinned while it is read.
    case stored(ClipStore.Lease, tier: Tier)
    /// A fill in progress (this request's or another's) whose source has answered: read as it grows.
    case filling(Fill, tier: Tier)
    /// A cold clip asked for in part: each range is made from just the bytes behind it (the
    /// second tier's copy, or the source through the plan); nothing is cached.
    case part(PartSource)

    enum Tier: String, Sendable, CaseIterable {
        case l1 = "l1_hit", l2 = "l2_hit", fill = "fill", coalesced = "coalesced", part = "part"
    }

    var tier: Tier {
        switch self {
        case .stored(_, let tier), .filling(_, let tier): tier
        case .part: .part
        }
    }

    /// When the clip was first cut (its Last-Modified).
    var createdMs: Int64 {
        switch self {
        case .stored(let lease, _): lease.record.createdMs
        case .filling(let fill, _): fill.createdMs
        case .part(let part): part.createdMs
        }
    }

    /// Lets go of a stored clip's lease (nothing to do for the others).
    func release() {
        if case .stored(let lease, _) = self { lease.release() }
    }
}

/// Where the ranges of a cold clip asked for in part come from.
struct PartSource: Sendable {
    enum Bytes: Sendable {
        /// The finished clip in the second tier.
        case stored(StoredClip)
        /// The source, cut through the plan.
        case source(any ByteSource)
    }
    let plan: ClipPlan
    let bytes: Bytes
    let createdMs: Int64

    /// The second tier's copy these ranges would be read from, if that is where they come from.
    var storedCopy: StoredClip? {
        if case .stored(let stored) = bytes { stored } else { nil }
    }

    /// Bytes `range` of the clip, read before the response's headers go out. Blocking.
    func read(_ range: Range<Int64>) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Int(range.count))
        switch bytes {
        case .stored(let stored): try stored.bytes.stream(range) { out.append(contentsOf: $0) }
        case .source(let source): try Trimmer.write(plan, range: range, from: source) { out.append(contentsOf: $0) }
        }
        return out
    }
}

/// The source object is no longer the one the episode was resolved to (re-uploaded: new
/// content, new ETag). What was derived from the old one must be dropped and resolved again.
struct SourceChangedError: Error, CustomStringConvertible {
    let sourceKey: String
    var description: String { "the source audio \(sourceKey) changed since it was indexed" }

    /// True for every way a read reports a changed source: S3's 412 to `If-Match` (or an ETag
    /// that moved between attempts), or a source file that is no longer the indexed one.
    static func matches(_ error: any Error) -> Bool {
        switch error {
        case is SourceChangedError: true
        case let error as S3Error: error.kind == .objectChanged
        default: false
        }
    }
}

/// A source that calls `onFirstBytes` once, when its first bytes arrive: the moment a fill knows
/// its upstream answered (a refusal throws before it), so requests may send their headers.
struct AnnouncingSource: ByteSource {
    let base: any ByteSource
    let onFirstBytes: @Sendable () -> Void

    var size: Int64 { base.size }

    func read(offset: Int64, count: Int) throws -> [UInt8] {
        let bytes = try base.read(offset: offset, count: count)
        if !bytes.isEmpty { onFirstBytes() }
        return bytes
    }

    func stream(_ range: Range<Int64>, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws {
        try base.stream(range) { chunk in
            if !chunk.isEmpty { onFirstBytes() }  // an empty callback is no answer
            try consume(chunk)
        }
    }
}

/// Collects the clip writer's small emits (a frame each) and passes them on in batches: when 64
/// KiB have gathered, after each source chunk has been consumed (so bytes never wait for the next
/// read), and at the end. `@unchecked Sendable`: used by the one thread that produces a fill.
final class EmitBatch: @unchecked Sendable {
    static let limit = 64 << 10
    private let emit: (UnsafeRawBufferPointer) throws -> Void
    private var buffer: [UInt8] = []

    init(_ emit: @escaping (UnsafeRawBufferPointer) throws -> Void) {
        self.emit = emit
        buffer.reserveCapacity(Self.limit)
    }

    func add(_ bytes: UnsafeRawBufferPointer) throws {
        buffer.append(contentsOf: bytes)
        if buffer.count >= Self.limit { try flush() }
    }

    func flush() throws {
        guard !buffer.isEmpty else { return }
        defer { buffer.removeAll(keepingCapacity: true) }
        try buffer.withUnsafeBytes(emit)
    }

    /// Drops what was not flushed (the fill failed; those bytes go nowhere).
    func discard() { buffer.removeAll() }

    /// `source`, flushing this batch after each chunk it delivers has been consumed.
    func flushingAfterEachChunk(_ source: any ByteSource) -> any ByteSource { FlushingSource(base: source, batch: self) }

    private struct FlushingSource: ByteSource {
        let base: any ByteSource
        let batch: EmitBatch
        var size: Int64 { base.size }
        func read(offset: Int64, count: Int) throws -> [UInt8] { try base.read(offset: offset, count: count) }
        func stream(_ range: Range<Int64>, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws {
            try base.stream(range) { chunk in
                try consume(chunk)
                try batch.flush()
            }
        }
    }
}

extension PreparedClip {
    /// What RFC 9110 decisions are made about: the exact length, a strong ETag from the clip key,
    /// Last-Modified (the clip's first cut, whole seconds) and the type.
    /// The clip as RFC 9110 sees it. Its Last-Modified is when it was first cut, never later than
    /// now (a copy stamped by another node whose clock runs ahead): the `Date` written after
    /// this is never earlier than it.
    func representation(createdMs: Int64) -> ByteRangeResponse.Representation {
        let modifiedMs = min(createdMs, ClipStore.nowMs())
        return ByteRangeResponse.Representation(length: plan.byteCount, etag: "\"\(key.hex.prefix(32))\"",
                                                lastModified: Date(timeIntervalSince1970: Double(modifiedMs / 1000)), contentType: "audio/mpeg")
    }
}

/// When each recently cut clip was first cut, forgotten after `memoryMs` or, in a storm of cold
/// clips, oldest first beyond `limit` entries. O(1) per call: entries leave in insertion order.
struct FirstCuts {
    static let memoryMs: Int64 = 300_000
    static let limit = 16_384
    private var times: [ClipKey: Int64] = [:]
    private var order: [(key: ClipKey, time: Int64)] = []
    private var head = 0

    mutating func time(of key: ClipKey, now: Int64) -> Int64 {
        while head < order.count, now - order[head].time >= Self.memoryMs || times.count >= Self.limit {
            let oldest = order[head]
            if times[oldest.key] == oldest.time { times[oldest.key] = nil }
            head += 1
        }
        if head > 1024, head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
        if let earlier = times[key] { return earlier }
        times[key] = now
        order.append((key, now))
        return now
    }
}
