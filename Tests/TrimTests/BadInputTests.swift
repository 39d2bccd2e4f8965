import Foundation
import Testing
import TestSupport
@testable import Trim

/// Issue acceptance: "Bad input gives a typed error and never a crash: empty file, truncated file,
/// an ID3 tag with a huge size, random bytes, a WAV or Ogg file, an MP3 with garbage between
/// frames. A mutation test feeds at least 100,000 mutated fixture files through probe, index and
/// plan, with zero crashes."
@Suite("Trim: bad input gives a typed error, never a crash")
struct BadInputTests {
    // MARK: - The bad-input fixtures

    /// What probing (libavformat, then the frame index) must say about each input that is rejected,
    /// and what the frame index builder alone says about it (it must not depend on libavformat
    /// having turned the input away first).
    static let rejected: [String: (probe: TrimErrorKind, index: TrimErrorKind, message: String?)] = [
        "not_mp3.wav": (.unsupportedFormat, .unsupportedFormat, "wav/pcm_s16le"),
        "not_mp3.ogg": (.unsupportedFormat, .unsupportedFormat, "ogg/vorbis"),
        "empty.mp3": (.unsupportedFormat, .corrupt, nil),
        "random.mp3": (.unsupportedFormat, .unsupportedFormat, nil),
        "huge_id3.mp3": (.unsupportedFormat, .corrupt, nil),
    ]
    /// Damaged but usable MP3: probed, indexed and cut.
    static let usable: Set<String> = ["truncated.mp3", "garbage_between.mp3"]

    static let badInputNames = ((try? Fixtures.badInputs()) ?? []).map(\.lastPathComponent)

    @Test("Every bad-input fixture exists and has a written expectation")
    func badInputSet() throws {
        let names = try Fixtures.badInputs().map(\.lastPathComponent)
        #expect(Set(names) == Set(Self.rejected.keys).union(Self.usable))
        for url in try Fixtures.badInputs() {
            #expect(FileManager.default.fileExists(atPath: url.path), "\(url.lastPathComponent) is missing: run `make fixtures`")
        }
    }

    @Test("A bad input is rejected with the right TrimError, or cut to exactly the planned length",
          arguments: badInputNames)
    func badInput(_ name: String) throws {
        let path = Fixtures.directory.appendingPathComponent("media").appendingPathComponent(name).path
        let source = try FileByteSource(path: path)

        if let expected = Self.rejected[name] {
            do {
                let (description, _) = try SourceDescription.probe(source)
                Issue.record("\(name) was accepted: \(description)")
            } catch let error as TrimError {
                #expect(error.kind == expected.probe, "\(name): probe said \(error)")
                if let message = expected.message {
                    #expect(error.description.contains(message), "\(name): \(error)")
                }
            } catch {
                Issue.record("\(name): probe threw \(type(of: error)), not a TrimError: \(error)")
            }
            do {
                let index = try FrameIndexBuilder.build(source)
                Issue.record("\(name) was indexed: \(index.frameCount) frames")
            } catch let error as TrimError {
                #expect(error.kind == expected.index, "\(name): index builder said \(error)")
            } catch {
                Issue.record("\(name): index builder threw \(type(of: error)), not a TrimError: \(error)")
            }
            return
        }

        #expect(Self.usable.contains(name))
        let (description, index) = try SourceDescription.probe(source)
        #expect(description.codec == "mp3" && description.container == "mp3")
        #expect(index.audioFramesEnd <= index.audioEnd && index.audioEnd <= source.size)
        let work = try TemporaryDirectory("bad-input")
        defer { work.remove() }
        for startMs in [0, index.durationMs / 2] {
            let plan = try ClipPlan.plan(index, .init(startMs: startMs, durationMs: 30_000))
            var clip: [UInt8] = []
            try Trimmer.write(plan, from: source) { clip.append(contentsOf: $0) }
            #expect(Int64(clip.count) == plan.byteCount, "\(name) @\(startMs)")
            let decoded = try Self.decode(clip, in: work, name: "\(startMs)", like: index)
            #expect(decoded.stderr.isEmpty, "\(name) @\(startMs): ffmpeg said \(decoded.stderr)")
            #expect(Int64(decoded.frameCount) == plan.sampleCount, "\(name) @\(startMs): decodes to the planned length")
        }
    }

    @Test("truncated.mp3: the partial last frame is left out and the rest is indexed")
    func truncatedFile() throws {
        let source = try FileByteSource(path: Self.badInputPath("truncated.mp3"))
        let index = try FrameIndexBuilder.build(source)
        // 10,000 bytes of a 128 kbps stream: the Info frame (417 bytes) and 22 whole audio frames.
        #expect(index.frameCount == 22)
        #expect(index.vbrTag?.frames == 2758, "the Info tag still claims the whole episode")
        #expect(source.size - index.audioFramesEnd < Int64(index.header.frameLength) + 1)
        guard case .table(_, let gaps) = index.layout else {
            Issue.record("a source shorter than its Info tag says must be scanned, not modelled")
            return
        }
        #expect(gaps.isEmpty)
        #expect(index.decodedSampleCount <= Int64(index.frameCount * index.samplesPerFrame))
    }

    @Test("garbage_between.mp3: the garbage is found as gaps and every real frame is indexed")
    func garbageIsDetected() throws {
        let source = try FileByteSource(path: Self.badInputPath("garbage_between.mp3"))
        let index = try FrameIndexBuilder.build(source)
        let clean = try FrameIndexBuilder.build(try FileByteSource(path: try Fixtures.named("m1_44k_stereo_cbr128").path))
        guard case .table(let sizes, let gaps) = index.layout else {
            Issue.record("garbage between frames must give a table layout")
            return
        }
        // make_fixtures.py inserts 150, 220 and 290 bytes before frames 50, n/2 and n−20 of the file.
        #expect(gaps.map(\.bytes) == [150, 220, 290])
        #expect(gaps.allSatisfy { $0.beforeFrame > 0 && $0.beforeFrame < index.frameCount })
        #expect(index.frameCount == clean.frameCount, "no frame lost, no junk taken for a frame")
        #expect(index.decodedSampleCount == clean.decodedSampleCount)
        #expect(sizes.indices.allSatisfy { Int(sizes[$0]) == clean.size(of: $0) }, "frame sizes agree with the clean source")
        #expect(index.audioFramesEnd == source.size)
    }

    @Test("garbage_between.mp3: a clip across each garbage region decodes exactly like the clean source's clip")
    func clipAcrossGarbage() throws {
        let source = try FileByteSource(path: Self.badInputPath("garbage_between.mp3"))
        let index = try FrameIndexBuilder.build(source)
        let cleanFixture = try Fixtures.named("m1_44k_stereo_cbr128")
        let cleanSource = try FileByteSource(path: cleanFixture.path)
        let clean = try FrameIndexBuilder.build(cleanSource)
        guard case .table(_, let gaps) = index.layout else {
            Issue.record("garbage between frames must give a table layout")
            return
        }
        let work = try TemporaryDirectory("garbage-clip")
        defer { work.remove() }
        for gap in gaps {
            // Start ten frames before the garbage, so it falls inside the copied frames.
            let startMs = Int64(gap.beforeFrame - 10) * Int64(index.samplesPerFrame) * 1000 / Int64(index.sampleRate)
            let request = ClipPlan.Request(startMs: startMs, durationMs: 2_000)
            let plan = try ClipPlan.plan(index, request)
            try #require(plan.skips == [gap], "the clip @\(startMs) ms must skip the \(gap.bytes) junk bytes before frame \(gap.beforeFrame)")
            var clip: [UInt8] = []
            try Trimmer.write(plan, from: source) { clip.append(contentsOf: $0) }
            #expect(Int64(clip.count) == plan.byteCount, "@\(startMs): length")

            var reference: [UInt8] = []
            let cleanPlan = try Trimmer.trim(cleanSource, index: clean, request: request) { reference.append(contentsOf: $0) }
            #expect(plan.copiedBytes == cleanPlan.copiedBytes, "the same frames are copied, without the junk")

            let decoded = try Self.decode(clip, in: work, name: "garbage-\(startMs)", like: index)
            let expected = try Self.decode(reference, in: work, name: "clean-\(startMs)", like: clean)
            #expect(decoded.stderr.isEmpty, "@\(startMs): ffmpeg said \(decoded.stderr)")
            #expect(Int64(decoded.frameCount) == plan.sampleCount, "@\(startMs): decoded length")
            #expect(decoded.samples.elementsEqual(expected.samples), "@\(startMs): same samples as the clip of the clean source")
        }
    }

    /// Regression: `ClipPlan.readRange` ends at `index.offset(of: first + copied)`, which for a table
    /// layout is the start of the next frame *after* the junk before it. The junk is then counted in
    /// `frameSizesBeforeFirst`, the writer takes that many extra bytes as reservoir, and the first
    /// copied frame no longer lines up: `corrupt("frame N is not where the index says")`.
    @Test("garbage_between.mp3: a clip that ends right before a garbage region is cut")
    func clipEndingAtGarbage() throws {
        let source = try FileByteSource(path: Self.badInputPath("garbage_between.mp3"))
        let index = try FrameIndexBuilder.build(source)
        guard case .table(_, let gaps) = index.layout else {
            Issue.record("garbage between frames must give a table layout")
            return
        }
        let work = try TemporaryDirectory("garbage-end")
        defer { work.remove() }
        let spf = Int64(index.samplesPerFrame), rate = Int64(index.sampleRate)
        for gap in gaps {
            // The first request (1 s long, starting on a 1 ms grid) whose last copied frame is the one before the gap.
            let earliest = max(0, (Int64(gap.beforeFrame - 60) * spf * 1000) / rate)
            let found = (earliest..<(earliest + 2_000)).lazy.compactMap { startMs -> ClipPlan? in
                guard let plan = try? ClipPlan.plan(index, .init(startMs: startMs, durationMs: 1_000)) else { return nil }
                return plan.firstFrame + plan.frameCount == gap.beforeFrame ? plan : nil
            }.first
            let plan = try #require(found, "no 1 s clip ends right before frame \(gap.beforeFrame)")
            var clip: [UInt8] = []
            do {
                try Trimmer.write(plan, from: source) { clip.append(contentsOf: $0) }
            } catch {
                Issue.record("clip \(plan.startSample * 1000 / rate) ms + 1000 ms (frames \(plan.firstFrame)..<\(gap.beforeFrame), junk after it): \(error)")
                continue
            }
            #expect(Int64(clip.count) == plan.byteCount)
            #expect(plan.readRange.upperBound == index.offset(of: gap.beforeFrame - 1) + Int64(index.size(of: gap.beforeFrame - 1)),
                    "the read range ends with the last copied frame, not after the junk that follows it")
            let decoded = try Self.decode(clip, in: work, name: "\(gap.beforeFrame)", like: index)
            #expect(decoded.stderr.isEmpty, "ffmpeg said \(decoded.stderr)")
        }
    }

    // MARK: - MemoryByteSource

    @Test("MemoryByteSource reads like FileByteSource and gives the same index and errors")
    func memorySourceMatchesFile() throws {
        let fixture = try Fixtures.named("m1_48k_mono_cbr64")   // over 256 KiB: streamed in several chunks
        let file = try FileByteSource(path: fixture.path)
        let memory = MemoryByteSource(try Self.readAll(fixture.path))
        #expect(memory.size == file.size)
        for (offset, count) in [(0, 10), (1000, 4096), (memory.size - 3, 10), (memory.size, 5), (memory.size + 7, 5), (5, 0)] as [(Int64, Int)] {
            #expect(sameBytes(try memory.read(offset: offset, count: count), try file.read(offset: offset, count: count)), "read \(offset)+\(count)")
        }
        #expect(throws: TrimError.self) { try memory.read(offset: -1, count: 4) }
        #expect(throws: TrimError.self) { try memory.read(offset: 0, count: -4) }
        var streamed: [UInt8] = []
        try memory.stream(100..<500_000) { streamed.append(contentsOf: $0) }
        #expect(sameBytes(streamed, try file.read(offset: 100, count: 500_000 - 100)))
        #expect(throws: TrimError.self) { try memory.stream(0..<(memory.size + 1)) { _ in } }
        let fromFile = try FrameIndexBuilder.build(file)
        let fromMemory = try FrameIndexBuilder.build(memory)
        #expect(fromFile == fromMemory)

        func outcome(_ source: any ByteSource) -> String {
            do { return "indexed: \(try FrameIndexBuilder.build(source).serialized())" } catch { return "\(error)" }
        }
        for url in try Fixtures.badInputs() {
            let fromFile = outcome(try FileByteSource(path: url.path))
            let fromMemory = outcome(MemoryByteSource(try Self.readAll(url.path)))
            #expect(fromFile == fromMemory, "\(url.lastPathComponent)")
        }
    }

    // MARK: - Crashes found while writing these tests (each runs in a child process)

    /// A start or a duration in milliseconds is multiplied by the sample rate before any range
    /// check, so `?start=` or `?duration=` beyond ~2·10^14 traps (ClipPlan.swift, `t0` and `n`).
    @Test("A start or a duration too large for the arithmetic is a typed error, not a trap")
    func hugeRequest() async throws {
        await #expect(processExitsWith: .success) {
            let index = try FrameIndexBuilder.build(try FileByteSource(path: BadInputTests.badInputPath("truncated.mp3")))
            do {
                let plan = try ClipPlan.plan(index, .init(startMs: .max, durationMs: 1_000))
                Issue.record("planned \(plan.identity) for a start at Int64.max ms")
            } catch let error as TrimError {
                #expect(error.kind == .windowOutsideAudio)
            }
        }
        await #expect(processExitsWith: .success) {
            let index = try FrameIndexBuilder.build(try FileByteSource(path: BadInputTests.badInputPath("truncated.mp3")))
            // A window running past the end is cut at the end.
            let plan = try ClipPlan.plan(index, .init(startMs: 0, durationMs: .max))
            #expect(plan.firstFrame + plan.frameCount == index.frameCount)
        }
    }

    /// `FrameIndex(serialized:)` promises a typed error for any damaged record, but it only checks
    /// `audioStart <= audioEnd <= sourceSize`: offsets near Int64.max overflow while the table's
    /// frame offsets are summed (FrameIndex.swift, `init`), and a constant layout with a huge frame
    /// length and count overflows in `offset(of:)` when `audioFramesEnd` is checked.
    @Test("A stored index with absurd offsets or lengths is badFrameIndex, not a trap")
    func absurdStoredIndex() async throws {
        await #expect(processExitsWith: .success) {
            // Table layout (truncated.mp3 is scanned): sourceSize, audioStart, audioEnd near Int64.max.
            let index = try FrameIndexBuilder.build(try FileByteSource(path: BadInputTests.badInputPath("truncated.mp3")))
            var record = index.serialized()
            StoredIndexLayout.put(&record, StoredIndexLayout.sourceSize, Int64.max)
            StoredIndexLayout.put(&record, StoredIndexLayout.audioStart, Int64.max - 10)
            StoredIndexLayout.put(&record, StoredIndexLayout.audioEnd, Int64.max)
            #expect(BadInputTests.decodeError(record) == .badFrameIndex)
        }
        await #expect(processExitsWith: .success) {
            // Constant layout (m1_48k_mono_cbr64 is modelled): frame count and frame length 2^32 − 1.
            let fixture = try Fixtures.named("m1_48k_mono_cbr64")
            let index = try FrameIndexBuilder.build(try FileByteSource(path: fixture.path))
            #expect(index.isConstantBitrate)
            var record = index.serialized()
            StoredIndexLayout.put32(&record, StoredIndexLayout.frameCount, .max)
            StoredIndexLayout.put32(&record, record.count - 16, .max)   // constant layout: length, fraction, rate, phase
            #expect(BadInputTests.decodeError(record) == .badFrameIndex)
        }
    }

    // MARK: - Mutation test

    /// The mutation test runs in child processes (one per core): a trap fails the test with the
    /// case that caused it instead of ending the whole test run.
    static let fuzzCases = 100_000
    static let fuzzShards = 2

    @Test("100,000 mutated MP3s through index, plan, write, the stored-index codec and libavformat: typed errors only")
    func mutations() async throws {
        let work = try TemporaryDirectory("mutations")
        defer { work.remove() }
        let progress = (0..<Self.fuzzShards).map { work.url.appendingPathComponent("shard-\($0).case").path }
        let clock = ContinuousClock()
        let started = clock.now
        let results = await withTaskGroup(of: (Int, ExitTest.Result?).self) { group in
            for shard in 0..<Self.fuzzShards {
                group.addTask { (shard, await Self.runShard(shard, progress: progress[shard])) }
            }
            var all: [(Int, ExitTest.Result?)] = []
            for await result in group { all.append(result) }
            return all.sorted { $0.0 < $1.0 }
        }
        var tally: [String: Int] = [:]
        for (shard, result) in results {
            guard let result else {
                // The failed exit expectation is recorded; say which case it was and where it trapped.
                Issue.record(Comment(rawValue: MutationFuzz.crashReport(shard: shard, progress: progress[shard])))
                continue
            }
            let stdout = String(decoding: result.standardOutputContent, as: UTF8.self)
            for line in stdout.split(separator: "\n") where line.hasPrefix("FUZZ\t") {
                let fields = line.split(separator: "\t")
                if fields.count == 3, let count = Int(fields[2]) { tally[String(fields[1]), default: 0] += count }
            }
        }
        let elapsed = clock.now - started
        let total = tally["cases", default: 0]
        print("mutation test: \(total) mutated inputs in \(elapsed)")
        for (key, count) in tally.sorted(by: { $0.key < $1.key }) { print("  \(key): \(count)") }
        #expect(total >= 100_000)
        #expect(tally["index: built", default: 0] > total / 10, "enough mutants are still MP3 to reach plan and write")
        #expect(tally["write: exact length", default: 0] > 0)
    }

    static func runShard(_ shard: Int, progress: String) async -> ExitTest.Result? {
        await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            [shard = shard as Int, progress = progress as String] in
            try MutationFuzz.run(shard: shard, of: BadInputTests.fuzzShards, cases: BadInputTests.fuzzCases, progress: progress)
        }
    }

    // MARK: - Helpers

    /// The kind of error decoding `record` gives (nil when it decodes).
    static func decodeError(_ record: [UInt8]) -> TrimErrorKind? {
        do {
            _ = try FrameIndex(serialized: record)
            return nil
        } catch {
            return (error as? TrimError)?.kind
        }
    }

    static func badInputPath(_ name: String) -> String {
        Fixtures.directory.appendingPathComponent("media").appendingPathComponent(name).path
    }

    static func readAll(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    static func decode(_ clip: [UInt8], in work: TemporaryDirectory, name: String, like index: FrameIndex) throws -> FFmpegOracle.PCM {
        let url = work.url.appendingPathComponent("\(name).mp3")
        try Data(clip).write(to: url)
        let path = url.path
        return try FFmpegOracle.decode(path, channels: index.header.channels, sampleRate: index.sampleRate)
    }
}

/// The case of a `TrimError`, without its payload.
enum TrimErrorKind: String, Sendable {
    case sourceUnavailable, truncatedSource, unsupportedFormat, corrupt, windowOutsideAudio, badFrameIndex
}

extension TrimError {
    var kind: TrimErrorKind {
        switch self {
        case .sourceUnavailable: .sourceUnavailable
        case .truncatedSource: .truncatedSource
        case .unsupportedFormat: .unsupportedFormat
        case .corrupt: .corrupt
        case .windowOutsideAudio: .windowOutsideAudio
        case .badFrameIndex: .badFrameIndex
        }
    }
}

/// Field offsets of the stored index record, the same in versions 1 and 2 (see `FrameIndex.serialized()`), for
/// targeted damage. Little-endian.
enum StoredIndexLayout {
    static let sourceSize = 6, audioStart = 18, audioEnd = 26, frameCount = 42

    static func put(_ record: inout [UInt8], _ at: Int, _ value: Int64) {
        let bits = UInt64(bitPattern: value)
        for i in 0..<8 { record[at + i] = UInt8(truncatingIfNeeded: bits >> UInt64(8 * i)) }
    }

    static func put32(_ record: inout [UInt8], _ at: Int, _ value: UInt32) {
        for i in 0..<4 { record[at + i] = UInt8(truncatingIfNeeded: value >> UInt32(8 * i)) }
    }
}

// MARK: - Mutation engine

/// Deterministic xorshift64 generator; each case seeds its own, so any case can be rebuilt alone.
struct XorShift64 {
    private(set) var state: UInt64

    init(seed: UInt64) {
        // splitmix64 finaliser: neighbouring seeds give unrelated streams (and never the zero state).
        var z = seed &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        state = (z ^ (z >> 31)) | 1
    }

    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }

    /// Uniform in 0..<n (n > 0; the modulo bias is irrelevant here).
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + below(range.count) }
    mutating func percent(_ p: Int) -> Bool { below(100) < p }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next() >> 24) }
    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in byte() } }
}

/// Builds mutated inputs from small pieces of the fixtures and runs each through the pipeline.
enum MutationFuzz {
    struct Base {
        let name: String
        let bytes: [UInt8]
    }

    /// Heads of every MP3 fixture (after any leading tag; 8–24 KiB of audio), alone and followed by
    /// the file's last KiB (trailing tags), plus the bad inputs cut the same way.
    static func corpus() throws -> [Base] {
        var bases: [Base] = []
        let audioKiB = [8, 12, 16, 20, 24]
        for (i, fixture) in try Fixtures.audio().filter({ !$0.name.hasPrefix("hour") }).enumerated() {
            let file = try BadInputTests.readAll(fixture.path)
            let head = Array(file.prefix(fixture.firstFrameOffset + audioKiB[i % audioKiB.count] << 10))
            bases.append(Base(name: "\(fixture.name) first \(head.count) bytes", bytes: head))
            bases.append(Base(name: "\(fixture.name) first \(head.count) + last 1024 bytes", bytes: head + file.suffix(1024)))
        }
        for url in try Fixtures.badInputs() {
            let file = try BadInputTests.readAll(url.path)
            let name = url.lastPathComponent
            let headBytes = name.hasPrefix("not_mp3") || name.hasPrefix("random") ? 4 << 10 : 24 << 10
            let bytes = file.count <= headBytes + 1024 ? file : Array(file.prefix(headBytes)) + file.suffix(1024)
            bases.append(Base(name: "\(name) (\(bytes.count) bytes)", bytes: bytes))
        }
        return bases
    }

    static func rng(forCase n: Int) -> XorShift64 { XorShift64(seed: 0xC11B_9A0C_5EED_0001 ^ UInt64(n)) }

    /// The input of case `n`: the unmutated bases first, then 1–3 mutations of a base in turn.
    /// `trace`, when not nil, receives a description of each step; `kinds` the kind of each mutation.
    static func input(case n: Int, corpus: [Base], rng: inout XorShift64, trace: inout [String]?, kinds: inout [String]) -> [UInt8] {
        let base = corpus[n % corpus.count]
        trace?.append("base \(base.name)")
        guard n >= corpus.count else { return base.bytes }
        var bytes = base.bytes
        for _ in 0..<rng.int(1...3) { kinds.append(mutate(&bytes, corpus: corpus, rng: &rng, trace: &trace)) }
        return bytes
    }

    static func input(case n: Int, corpus: [Base], rng: inout XorShift64, trace: inout [String]?) -> [UInt8] {
        var kinds: [String] = []
        return input(case: n, corpus: corpus, rng: &rng, trace: &trace, kinds: &kinds)
    }

    /// Applies one mutation; returns its kind.
    static func mutate(_ b: inout [UInt8], corpus: [Base], rng: inout XorShift64, trace: inout [String]?) -> String {
        let count = b.count
        switch rng.below(11) {
        case 0 where count > 0:
            let flips = (0..<rng.int(1...8)).map { _ in (rng.below(count), rng.below(8)) }
            for (at, bit) in flips { b[at] ^= 1 << UInt8(bit) }
            trace?.append("flip bits \(flips.map { "\($0.0).\($0.1)" })")
            return "flip bits"
        case 1 where count > 0:
            let at = rng.below(count), n = min(rng.int(1...32), count - at)
            b.replaceSubrange(at..<(at + n), with: rng.bytes(n))
            trace?.append("overwrite \(n) bytes at \(at)")
            return "overwrite bytes"
        case 2:
            let at = rng.below(count + 1)
            let copy = count > 0 && rng.percent(50)
            let n = rng.int(1...400)
            let run: [UInt8]
            if copy {
                let from = rng.below(count)
                run = Array(b[from..<min(count, from + n)])
            } else {
                run = rng.bytes(n)
            }
            b.insert(contentsOf: run, at: at)
            trace?.append("insert \(run.count) \(copy ? "copied" : "random") bytes at \(at)")
            return "insert a run"
        case 3 where count > 0:
            let at = rng.below(count), n = min(rng.int(1...700), count - at)
            b.removeSubrange(at..<(at + n))
            trace?.append("delete \(n) bytes at \(at)")
            return "delete a run"
        case 4:
            let cut = rng.percent(50) ? rng.below(count + 1) : max(0, count - rng.int(1...300))
            b.removeSubrange(cut...)
            trace?.append("truncate at \(cut)")
            return "truncate"
        case 5:
            let other = rng.pick(corpus)
            let keep = rng.below(count + 1), from = rng.below(other.bytes.count + 1)
            b = Array(b[..<keep]) + other.bytes[from...]
            trace?.append("splice: first \(keep) bytes + \(other.name) from \(from)")
            return "splice two inputs"
        case 6:
            mutateID3(&b, rng: &rng, trace: &trace)
            return "ID3v2 size"
        case 7 where count > 0:
            for _ in 0..<rng.int(1...8) {
                let at = rng.below(count)
                // A sync word, then either random bits or a plausible bitrate/rate/padding byte.
                let second = rng.pick([0xFB, 0xFA, 0xF3, 0xF2, 0xE3, 0xE2] as [UInt8])
                let third = rng.percent(50) ? UInt8(rng.int(1...14) << 4 | rng.int(0...2) << 2 | rng.int(0...1) << 1) : rng.byte()
                let header: [UInt8] = [0xFF, second, third, rng.byte()]
                let n = min(4, count - at)
                b.replaceSubrange(at..<(at + n), with: header.prefix(n))
                trace?.append("fake sync \(header.map { String($0, radix: 16) }) at \(at)")
            }
            return "fake sync words"
        case 8:
            mutateVBRTag(&b, rng: &rng, trace: &trace)
            return "Xing/Info/VBRI/LAME fields"
        case 9:
            mutateTrailingTags(&b, rng: &rng, trace: &trace)
            return "ID3v1/APEv2 trailing tags"
        default:
            // Swap two runs: frames out of order.
            guard count > 64 else { return "none (input too short)" }
            let n = rng.int(1...min(1500, count / 2))
            let a = rng.below(count - n), c = rng.below(count - n)
            let first = Array(b[a..<(a + n)]), second = Array(b[c..<(c + n)])
            b.replaceSubrange(a..<(a + n), with: second)
            b.replaceSubrange(c..<(c + n), with: first)
            trace?.append("swap \(n) bytes at \(a) and \(c)")
            return "swap two runs"
        }
    }

    static func syncsafe(_ value: Int) -> [UInt8] {
        [UInt8((value >> 21) & 0x7F), UInt8((value >> 14) & 0x7F), UInt8((value >> 7) & 0x7F), UInt8(value & 0x7F)]
    }

    /// Damages the size of a leading ID3v2 tag, or adds one that claims anything from nothing to 256 MB.
    static func mutateID3(_ b: inout [UInt8], rng: inout XorShift64, trace: inout [String]?) {
        let size = rng.pick([0x0FFF_FFFF, 0x0FFF_FFF0, b.count - 10, b.count - 9, b.count, rng.below(1 << 16), rng.below(max(1, b.count))])
        if b.count >= 10, b[0] == 0x49, b[1] == 0x44, b[2] == 0x33, rng.percent(75) {
            switch rng.below(3) {
            case 0: b.replaceSubrange(6..<10, with: syncsafe(max(0, size))); trace?.append("ID3 size := \(size)")
            case 1: b[6 + rng.below(4)] |= 0x80; trace?.append("ID3 size byte not syncsafe")
            default: b[3] = 4; b[5] |= 0x10; trace?.append("ID3 v2.4 with footer flag")
            }
        } else {
            let version: UInt8 = rng.percent(50) ? 3 : 4
            let flags: UInt8 = rng.percent(25) ? 0x10 : 0
            b.insert(contentsOf: [0x49, 0x44, 0x33, version, 0, flags] + syncsafe(max(0, size)), at: 0)
            trace?.append("prepend ID3v2.\(version) header claiming \(size) bytes, flags \(flags)")
        }
    }

    /// Damages the fields of the Xing/Info/VBRI tag and its LAME extension, or plants a tag.
    static func mutateVBRTag(_ b: inout [UInt8], rng: inout XorShift64, trace: inout [String]?) {
        var found: (at: Int, magic: String)?
        for magic in ["Xing", "Info", "VBRI", "LAME"] {
            if let at = firstOccurrence(of: Array(magic.utf8), in: b), at < found?.at ?? .max { found = (at, magic) }
        }
        let extremes: [[UInt8]] = [[0xFF, 0xFF, 0xFF, 0xFF], [0, 0, 0, 0], [0x7F, 0xFF, 0xFF, 0xFF], [0, 0, 0, 1], [0, 0, 0, 0x0F]]
        guard let (at, magic) = found else {
            guard b.count > 40 else { return }
            let at = rng.below(min(b.count - 40, 2048))
            let tag = Array(rng.pick(["Xing", "Info"]).utf8) + rng.pick(extremes) + rng.bytes(32)
            b.replaceSubrange(at..<(at + 40), with: tag)
            trace?.append("plant a VBR tag at \(at)")
            return
        }
        // Offsets after the magic: flags, frames, bytes (Xing/Info); LAME name +0, delay/padding +21.
        let field = magic == "LAME" ? rng.pick([9, 20, 21, 22, 23]) : rng.pick([4, 8, 12, 16, 116, 120, 141, 142, 143])
        let value = rng.percent(60) ? rng.pick(extremes) : rng.bytes(4)
        let start = at + field
        guard start < b.count else { return }
        let n = min(4, b.count - start)
        b.replaceSubrange(start..<(start + n), with: value.prefix(n))
        trace?.append("\(magic) tag at \(at): field +\(field) := \(value.prefix(n))")
    }

    /// Where `needle` first occurs in `haystack`. Jumps between candidates with memchr: a plain
    /// byte-by-byte search in a debug build would dominate the run time.
    static func firstOccurrence(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        haystack.withUnsafeBytes { all -> Int? in
            guard let base = all.baseAddress, all.count >= needle.count else { return nil }
            var at = 0
            let last = all.count - needle.count
            while at <= last {
                guard let hit = memchr(base + at, Int32(needle[0]), last - at + 1) else { return nil }
                at = base.distance(to: UnsafeRawPointer(hit))
                if memcmp(base + at, needle, needle.count) == 0 { return at }
                at += 1
            }
            return nil
        }
    }

    /// Adds or damages an ID3v1 tag and an APEv2 footer at the end.
    static func mutateTrailingTags(_ b: inout [UInt8], rng: inout XorShift64, trace: inout [String]?) {
        if rng.percent(40), b.count >= 128 {
            b.replaceSubrange((b.count - 128)..<(b.count - 125), with: Array("TAG".utf8))
            trace?.append("ID3v1 marker at the end")
        }
        guard rng.percent(70) else { return }
        let hasID3v1 = b.count >= 128 && b[b.count - 128] == 0x54 && b[b.count - 127] == 0x41 && b[b.count - 126] == 0x47
        let end = b.count - (hasID3v1 ? 128 : 0)
        guard end >= 32 else { return }
        let size = rng.pick([UInt32.max, 32, 31, UInt32(end), UInt32(end + 1), UInt32(rng.below(4096)), UInt32(truncatingIfNeeded: rng.next())])
        let flags: UInt32 = rng.percent(50) ? 0x8000_0000 : 0
        var footer = Array("APETAGEX".utf8) + [0xD0, 0x07, 0, 0]
        for v in [size, UInt32(rng.below(20)), flags] { footer += [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)] }
        footer += [UInt8](repeating: 0, count: 8)
        b.replaceSubrange((end - 32)..<end, with: footer)
        trace?.append("APEv2 footer at \(end - 32) claiming \(size) bytes, flags \(flags)")
    }

    /// Damage to a stored index record: bit flips, byte writes, extreme field values, cuts and growth.
    static func mutateRecord(_ r: inout [UInt8], rng: inout XorShift64) {
        for _ in 0..<rng.int(1...3) {
            let count = r.count
            guard count > 0 else { r = rng.bytes(rng.below(64)); return }
            switch rng.below(6) {
            case 0:
                for _ in 0..<rng.int(1...4) { r[rng.below(count)] ^= 1 << UInt8(rng.below(8)) }
            case 1:
                r[rng.below(count)] = rng.byte()
            case 2, 3:
                // An extreme little-endian value of width 1, 2, 4 or 8 anywhere (lands on fields often).
                let width = rng.pick([1, 2, 4, 8])
                let at = rng.below(count)
                let value: [UInt8]
                switch rng.below(5) {
                case 0: value = [UInt8](repeating: 0xFF, count: width)
                case 1: value = [UInt8](repeating: 0, count: width)
                case 2: value = [UInt8](repeating: 0xFF, count: width - 1) + [0x7F]
                case 3: value = [UInt8](repeating: 0, count: width - 1) + [0x80]
                default: value = rng.bytes(width)
                }
                let n = min(width, count - at)
                r.replaceSubrange(at..<(at + n), with: value.prefix(n))
            case 4:
                r.removeSubrange(rng.below(count)...)
            default:
                if rng.percent(50) {
                    r.insert(contentsOf: rng.bytes(rng.int(1...8)), at: rng.below(count + 1))
                } else {
                    let at = rng.below(count)
                    r.removeSubrange(at..<min(count, at + rng.int(1...8)))
                }
            }
        }
    }

    /// Outcome counts of one shard.
    struct Tally {
        var counts: [String: Int] = [:]
        mutating func note(_ key: String) { counts[key, default: 0] += 1 }
        mutating func note(_ stage: String, _ error: TrimError) { note("\(stage): \(error.kind.rawValue)") }
    }

    /// Runs cases shard, shard + shards, … below `cases`; prints the tally to stdout. The number of
    /// the case being run is kept in the file `progress` (8 bytes, overwritten in place) and stderr
    /// goes to `progress`.stderr, so that a trap can be traced to its case and source line.
    static func run(shard: Int, of shards: Int, cases: Int, progress: String) throws {
        let corpus = try corpus()
        let log = open(progress + ".stderr", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard log >= 0, dup2(log, 2) >= 0 else { throw TestSetupError("cannot redirect stderr to \(progress).stderr") }
        let fd = open(progress, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw TestSetupError("cannot create \(progress)") }
        defer { close(fd) }
        var tally = Tally()
        for n in stride(from: shard, to: cases, by: shards) {
            var current = Int64(n)
            guard pwrite(fd, &current, 8, 0) == 8 else { throw TestSetupError("cannot write \(progress)") }
            var rng = rng(forCase: n)
            var trace: [String]? = nil
            var kinds: [String] = []
            let bytes = input(case: n, corpus: corpus, rng: &rng, trace: &trace, kinds: &kinds)
            for kind in kinds { tally.note("mutation: \(kind)") }
            runCase(n, bytes, rng: &rng, tally: &tally)
            tally.note("cases")
        }
        for (key, count) in tally.counts { print("FUZZ\t\(key)\t\(count)") }
    }

    /// Any error that is not a TrimError, or an invariant broken, is recorded as an issue naming the case.
    static func unexpected(_ n: Int, _ what: String) {
        var rng = rng(forCase: n)
        var trace: [String]? = []
        if let corpus = try? corpus() { _ = input(case: n, corpus: corpus, rng: &rng, trace: &trace) }
        Issue.record("case \(n) (\(trace?.joined(separator: "; ") ?? "")): \(what)")
    }

    static func runCase(_ n: Int, _ bytes: [UInt8], rng: inout XorShift64, tally: inout Tally) {
        let source = MemoryByteSource(bytes)

        // libavformat is slow next to the rest: every 50th case.
        if n % 50 == 0 {
            do {
                let probe = try FormatProbe.probe(source)
                tally.note("probe: identified as \(probe.container)")
            } catch let error as TrimError {
                tally.note("probe", error)
            } catch {
                unexpected(n, "FormatProbe.probe threw \(type(of: error)): \(error)")
            }
        }

        let index: FrameIndex
        do {
            index = try FrameIndexBuilder.build(source)
            tally.note("index: built")
            tally.note(index.isConstantBitrate ? "index: constant layout" : "index: table layout")
        } catch let error as TrimError {
            tally.note("index", error)
            return
        } catch {
            unexpected(n, "FrameIndexBuilder.build threw \(type(of: error)): \(error)")
            return
        }
        checkInvariants(n, index, bytes)

        // Plans: from the start, and from anywhere up to a little past the end; cut one of them.
        let requests = [ClipPlan.Request(startMs: 0, durationMs: Int64(rng.int(1...40_000))),
                        ClipPlan.Request(startMs: Int64(rng.below(Int(index.durationMs) + 300)), durationMs: Int64(rng.int(1...40_000)))]
        let cut = rng.below(2)
        for (i, request) in requests.enumerated() {
            do {
                let plan = try ClipPlan.plan(index, request)
                tally.note("plan: planned")
                if i == cut { write(n, plan, source, stage: "write", tally: &tally, builtFrom: index) }
            } catch let error as TrimError {
                tally.note("plan", error)
            } catch {
                unexpected(n, "ClipPlan.plan(\(request)) threw \(type(of: error)): \(error)")
            }
        }

        // The stored form round-trips; damaged, it decodes to something or is badFrameIndex.
        var record = index.serialized()
        do {
            let back = try FrameIndex(serialized: record)
            if back == index { tally.note("stored: round trip exact") } else { unexpected(n, "the stored index does not round-trip") }
        } catch {
            unexpected(n, "the stored index does not decode: \(error)")
        }
        mutateRecord(&record, rng: &rng)
        do {
            let damaged = try FrameIndex(serialized: record)
            tally.note("stored (damaged): decoded")
            // A damaged index that still decodes must not make planning or cutting trap either.
            let request = ClipPlan.Request(startMs: Int64(rng.below(Int(min(damaged.durationMs, 1 << 40)) + 1)), durationMs: 10_000)
            do {
                let plan = try ClipPlan.plan(damaged, request)
                write(n, plan, source, stage: "write with damaged index", tally: &tally)
            } catch let error as TrimError {
                tally.note("plan with damaged index", error)
            } catch is FrameIndexTooShort {
                // The damage marked the index partial: planning asks for it to be extended.
                tally.note("plan with damaged index: extend first")
            } catch {
                unexpected(n, "ClipPlan.plan with a damaged index threw \(type(of: error)): \(error)")
            }
        } catch let error as TrimError {
            tally.note("stored (damaged)", error)
            if error.kind != .badFrameIndex { unexpected(n, "a damaged stored index gave \(error), not badFrameIndex") }
        } catch {
            unexpected(n, "FrameIndex(serialized:) threw \(type(of: error)): \(error)")
        }
    }

    /// Cuts `plan`; `builtFrom` is the index when it was built from these very bytes (not damaged).
    static func write(_ n: Int, _ plan: ClipPlan, _ source: MemoryByteSource, stage: String, tally: inout Tally,
                      builtFrom index: FrameIndex? = nil) {
        var emitted: Int64 = 0
        do {
            try Trimmer.write(plan, from: source) { emitted += Int64($0.count) }
            if emitted == plan.byteCount {
                tally.note("\(stage): exact length")
            } else {
                unexpected(n, "\(stage): \(emitted) bytes emitted, plan says \(plan.byteCount)")
            }
        } catch let error as TrimError {
            guard let index else { return tally.note(stage, error) }
            guard case .table(_, let gaps) = index.layout else {
                // A constant-bitrate model is verified at a few frames only: damage between them
                // surfaces here, as it must, as a typed error.
                return tally.note("\(stage): \(error.kind.rawValue) (constant-bitrate model, damage between checked frames)")
            }
            // A scanned table lists only frames that are there, so cutting from the same bytes must work.
            let last = plan.firstFrame + plan.frameCount
            if gaps.contains(where: { $0.beforeFrame == last }) {
                tally.note("\(stage): \(error.kind.rawValue), clip ends right before junk (readRange bug)")
            } else {
                tally.note(stage, error)
                unexpected(n, "\(stage) of \(plan.identity) from a scanned index failed: \(error)")
            }
        } catch {
            unexpected(n, "\(stage) threw \(type(of: error)): \(error)")
        }
    }

    /// What every built index promises: its frames lie inside the audio, and a scanned table only
    /// ever points at real, compatible frame headers of the size it records.
    static func checkInvariants(_ n: Int, _ index: FrameIndex, _ bytes: [UInt8]) {
        guard index.frameCount > 0, index.audioStart >= 0, index.audioStart < index.audioFramesEnd,
              index.audioFramesEnd <= index.audioEnd, index.audioEnd <= Int64(bytes.count), index.sourceSize == Int64(bytes.count) else {
            unexpected(n, "index bounds: start \(index.audioStart), frames end \(index.audioFramesEnd), end \(index.audioEnd), size \(bytes.count)")
            return
        }
        guard case .table = index.layout else { return }
        for i in 0..<index.frameCount {
            let at = Int(index.offset(of: i))
            guard let header = FrameHeader(bytes[at..<(at + 4)]), header.isCompatible(with: index.header),
                  header.frameLength == index.size(of: i) else {
                unexpected(n, "frame \(i) at \(at) is not a frame of the stream")
                return
            }
        }
    }

    /// The case a crashed shard was running, rebuilt, and the source lines of its backtrace.
    static func crashReport(shard: Int, progress: String) -> String {
        let stderr = String(decoding: FileManager.default.contents(atPath: progress + ".stderr") ?? Data(), as: UTF8.self)
        guard let data = FileManager.default.contents(atPath: progress), data.count == 8 else {
            return "mutation shard \(shard) failed before its first case:\n\(stderr.suffix(4000))"
        }
        let n = Int(data.withUnsafeBytes { $0.loadUnaligned(as: Int64.self) })
        var rng = rng(forCase: n)
        var trace: [String]? = []
        var saved = ""
        if let corpus = try? corpus() {
            let bytes = input(case: n, corpus: corpus, rng: &rng, trace: &trace)
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("clipproxy-fuzz-case-\(n).mp3").path
            if FileManager.default.createFile(atPath: path, contents: Data(bytes)) { saved = "; input saved to \(path)" }
        }
        let interesting = stderr.split(separator: "\n").filter { $0.contains("Fatal error") || $0.contains("runtime failure") || $0.contains("/Sources/") || $0.contains("/Tests/") }
        return "mutation case \(n) crashed (\(trace?.joined(separator: "; ") ?? "")\(saved)):\n" + interesting.prefix(12).joined(separator: "\n")
    }
}
