import Foundation
import Testing
import TestSupport
@testable import Trim

/// The progressive frame index (issue 13, item 2): a VBR source indexed only as far as a clip
/// needs is an exact prefix of the complete index, clips cut through it are the same bytes, it
/// extends to exactly what a longer scan gives, and a cold clip near the start reads about its
/// own bytes, not the whole episode.
@Suite("Trim: progressive frame index")
struct ProgressiveIndexTests {
    // MARK: - Sources

    /// A 20-minute VBR episode (lame -q:a 5 through ffmpeg, with a Xing/LAME tag): a sine and
    /// pink noise under a slow swell, so frame sizes vary. Generated once per machine (about
    /// 7 s) into the temporary directory; the fixtures hold no long VBR source.
    static var longVBR: Result<String, any Error> { LongVBRFixture.path }

    struct Source: Sendable, CustomTestStringConvertible {
        let name: String
        let path: String
        var testDescription: String { name }
    }

    /// Every fixture the builder scans (VBR, no-tag VBR, CRC, tags, junk between frames), and the
    /// long VBR episode. The CBR fixtures are modelled and never partial (tested separately).
    static let scannedSources: [Source] = {
        var sources = Fixtures.audioOrEmpty.filter { !$0.name.hasPrefix("hour") }.compactMap { fixture -> Source? in
            guard let index = try? FrameIndexBuilder.build(FileByteSource(path: fixture.path)), !index.isConstantBitrate else { return nil }
            return Source(name: fixture.name, path: fixture.path)
        }
        sources.append(Source(name: "garbage_between", path: Fixtures.directory.appendingPathComponent("media/garbage_between.mp3").path))
        if let path = try? longVBR.get() { sources.append(Source(name: "long_vbr_20min", path: path)) }
        return sources
    }()

    // MARK: - Prefix, extend, build

    @Test("A partial index is a prefix of the complete one, covering what was asked and the frames read by then; extending it covers as far; it round-trips",
          arguments: scannedSources)
    func prefixesAndExtensions(_ source: Source) throws {
        let file = try FileByteSource(path: source.path)
        let complete = try FrameIndexBuilder.build(file)
        #expect(complete.isComplete && !complete.isConstantBitrate)
        let durationMs = complete.durationMs
        // From nothing to past the end, ending with the coverages around the end of the audio.
        let step: Int64 = max(2_500, durationMs / 12)
        var coverages: [Int64] = [0, 1, 26, 1000]
        coverages += Array<Int64>(stride(from: step, to: durationMs, by: Int64.Stride(step)))
        coverages += [durationMs - 1000, durationMs - 60, durationMs - 1, durationMs, durationMs + 1, durationMs + 60_000]
        coverages = Array(Set(coverages.filter { $0 >= 0 })).sorted()

        var previous: FrameIndex?
        var partials = 0, partialsPastJunk = 0
        for coveringMs in coverages {
            let built = try FrameIndexBuilder.build(file, coveringMs: coveringMs)
            #expect(Self.isPrefix(built, of: complete), "\(source.name) covering \(coveringMs): not a prefix of the complete index")
            if built.isComplete {
                let same = built == complete
                #expect(same, "\(source.name) covering \(coveringMs): complete but not the complete index")
            } else {
                partials += 1
                if case .table(_, let gaps) = built.layout, !gaps.isEmpty { partialsPastJunk += 1 }
                #expect(built.coveredMs >= coveringMs, "\(source.name) covering \(coveringMs): covers only \(built.coveredMs) ms")
                // Past the coverage (plus its margin) it holds only the frames the scan had read
                // by then: less than one read-ahead of them.
                let needed = Self.framesCovering(coveringMs, in: complete)
                #expect(built.frameCount >= needed && built.audioFramesEnd - complete.offset(of: needed) < Int64(SourceWindow.chunk),
                        "\(source.name) covering \(coveringMs): \(built.frameCount) frames, \(needed) needed")
                let stored = try FrameIndex(serialized: built.serialized())
                let roundTrip = stored == built
                #expect(roundTrip && !stored.isComplete, "\(source.name) covering \(coveringMs): the stored partial index differs")
            }
            // Extending the previous (shorter) index covers as much, as a prefix of the complete one.
            if let previous {
                let extended = try FrameIndexBuilder.extend(previous, source: file, coveringMs: coveringMs)
                #expect(Self.isPrefix(extended, of: complete) && (extended.isComplete || extended.coveredMs >= coveringMs),
                        "\(source.name): extend(\(previous.coveredMs) ms → \(coveringMs) ms) is not a covering prefix")
            }
            // A shorter coverage leaves a covering index as it is.
            let unchanged = try FrameIndexBuilder.extend(built, source: file, coveringMs: coveringMs / 2) == built
            #expect(unchanged)
            let toEnd = try FrameIndexBuilder.extend(built, source: file, coveringMs: nil) == complete
            #expect(toEnd, "\(source.name): extend(\(coveringMs) ms → end) is not the complete index")
            previous = built
        }
        #expect(partials > 0, "\(source.name): no coverage gave a partial index")
        // With junk between frames, some scans stopped and resumed after a resynchronisation.
        if case .table(_, let gaps) = complete.layout, !gaps.isEmpty {
            #expect(partialsPastJunk > 0 && partialsPastJunk < partials, "\(source.name): \(partialsPastJunk) of \(partials) partial indexes hold gaps")
        }
    }

    @Test("Constant-bitrate sources stay complete whatever the coverage, and read no more for it")
    func constantBitrateStaysComplete() throws {
        for name in ["hour_cbr64_44k_mono", "m1_44k_stereo_cbr128", "m2_22k_mono_cbr32"] {
            let fixture = try Fixtures.named(name)
            let complete = try FrameIndexBuilder.build(FileByteSource(path: fixture.path))
            #expect(complete.isConstantBitrate)
            let counting = CountingByteSource(try FileByteSource(path: fixture.path))
            let (_, index) = try SourceDescription.probe(counting, coveringMs: 60_000)
            let same = index == complete
            #expect(same && index.isComplete, "\(name)")
            #expect(counting.bytesRead <= 64 << 10, "\(name): \(counting.bytesRead) bytes")
            let extended = try FrameIndexBuilder.extend(index, source: FileByteSource(path: fixture.path), coveringMs: nil) == complete
            #expect(extended)
        }
    }

    // MARK: - Clips through a partial index

    /// Plan or error, comparable: what `clipproxy trim` or the server would answer.
    enum Outcome: Equatable {
        case plan(ClipPlan)
        case outside(TrimError)
        case tooShort(FrameIndexTooShort)

        init(_ index: FrameIndex, _ request: ClipPlan.Request) {
            do {
                self = .plan(try ClipPlan.plan(index, request))
            } catch let error as FrameIndexTooShort {
                self = .tooShort(error)
            } catch {
                self = .outside(error as! TrimError)
            }
        }

        var summary: String {
            switch self {
            case .plan(let plan): plan.identity
            case .outside(let error): "\(error)"
            case .tooShort(let error): "\(error)"
            }
        }
    }

    static let durations: [Int64] = [30_000, 10, 1_000, 95_000]

    @Test("Every clip through an index built to cover it plans exactly as through the complete index, at the start, middle and end",
          arguments: scannedSources)
    func clipsThroughPartialIndexes(_ source: Source) throws {
        let file = try FileByteSource(path: source.path)
        // What `clipproxy trim` uses: probe, which builds the complete index.
        let (_, complete) = try SourceDescription.probe(file)
        let starts = ClipExactnessTests.starts(durationMs: complete.durationMs) + [complete.durationMs, complete.durationMs + 5]
        // Shared by every request: first indexed for a clip at the start, then extended as asked.
        var progressive = try FrameIndexBuilder.build(file, coveringMs: 30_000)
        let startedPartial = !progressive.isComplete
        var extensions = 0
        for startMs in starts {
            for durationMs in Self.durations {
                let request = ClipPlan.Request(startMs: startMs, durationMs: durationMs)
                let expected = Outcome(complete, request)
                if case .tooShort = expected { Issue.record("a complete index asked to be extended") }

                // An index built for exactly this window plans it exactly, with no "extend".
                let covering = try FrameIndexBuilder.build(file, coveringMs: startMs + durationMs)
                let direct = Outcome(covering, request)
                let sameDirect = direct == expected
                #expect(sameDirect, "\(source.name) @\(startMs)+\(durationMs): \(direct.summary) vs \(expected.summary)")

                // The shared index: a plan, or "extend to the window's end" and then the plan.
                var outcome = Outcome(progressive, request)
                if case .tooShort(let error) = outcome {
                    #expect(!progressive.isComplete && error.neededMs == startMs + durationMs && error.coveredMs == progressive.coveredMs)
                    progressive = try FrameIndexBuilder.extend(progressive, source: file, coveringMs: error.neededMs)
                    extensions += 1
                    outcome = Outcome(progressive, request)
                }
                let same = outcome == expected
                #expect(same, "\(source.name) @\(startMs)+\(durationMs) after extending: \(outcome.summary) vs \(expected.summary)")
            }
        }
        // (A short source is read whole by the first scan, which then indexes all of it.)
        #expect(!startedPartial || extensions > 0)
        let completed = progressive == complete
        #expect(completed && progressive.isComplete, "windows past the end extended the shared index to the end")
    }

    @Test("Clips cut through a partial index are byte-identical to clips cut through the complete index (long VBR and one-hour CBR)")
    func clipBytesAtStartMiddleEnd() throws {
        let sources = [try Source(name: "long_vbr_20min", path: Self.longVBR.get()),
                       Source(name: "hour_cbr64_44k_mono", path: try Fixtures.named("hour_cbr64_44k_mono").path)]
        for source in sources {
            let file = try FileByteSource(path: source.path)
            let (_, complete) = try SourceDescription.probe(file)
            let d = complete.durationMs
            var progressive = try FrameIndexBuilder.build(file, coveringMs: 0)
            for startMs in [0, 60_000, d / 2, d - 30_000, d - 10_000] {
                let request = ClipPlan.Request(startMs: startMs, durationMs: 30_000)
                var plan: ClipPlan
                do {
                    plan = try ClipPlan.plan(progressive, request)
                } catch let error as FrameIndexTooShort {
                    progressive = try FrameIndexBuilder.extend(progressive, source: file, coveringMs: error.neededMs)
                    plan = try ClipPlan.plan(progressive, request)
                }
                var partialBytes: [UInt8] = [], completeBytes: [UInt8] = []
                try Trimmer.write(plan, from: file) { partialBytes.append(contentsOf: $0) }
                try Trimmer.trim(file, index: complete, request: request) { completeBytes.append(contentsOf: $0) }
                #expect(Int64(partialBytes.count) == plan.byteCount)
                #expect(sameBytes(partialBytes, completeBytes), "\(source.name) @\(startMs): the clips differ")
                // A byte range of the clip, as a Range request on a cold clip cuts it, too.
                var part: [UInt8] = []
                let range = (plan.byteCount / 3)..<(plan.byteCount / 2)
                try Trimmer.write(plan, range: range, from: file) { part.append(contentsOf: $0) }
                #expect(sameBytes(part, completeBytes[Int(range.lowerBound)..<Int(range.upperBound)]), "\(source.name) @\(startMs): range")
            }
            if source.name.hasPrefix("long") { #expect(progressive.isComplete, "the window at the end extended the index to the end") }
        }
    }

    @Test("The end-of-episode window through a partial index asks for an extension, then plans like the complete index")
    func endOfEpisodeNeedsExtension() throws {
        let file = try FileByteSource(path: try Self.longVBR.get())
        let complete = try FrameIndexBuilder.build(file)
        let d = complete.durationMs
        let partial = try FrameIndexBuilder.build(file, coveringMs: 60_000)
        #expect(!partial.isComplete && partial.frameCount < complete.frameCount / 2)

        let last = ClipPlan.Request(startMs: d - 10_000, durationMs: 30_000)
        #expect(throws: FrameIndexTooShort(neededMs: d + 20_000, coveredMs: partial.coveredMs)) { try ClipPlan.plan(partial, last) }
        let extended = try FrameIndexBuilder.extend(partial, source: file, coveringMs: d + 20_000)
        let isComplete = extended == complete
        #expect(isComplete && extended.isComplete, "a window past the end extends the index to the end")
        let samePlan = try ClipPlan.plan(extended, last) == ClipPlan.plan(complete, last)
        #expect(samePlan)
        // The window is cut at the end, as with the complete index (which no partial index may fake).
        #expect(try ClipPlan.plan(extended, last).durationMs < 30_000)

        // Ending just inside the audio: still more than the partial index covers.
        let inside = ClipPlan.Request(startMs: d - 30_001, durationMs: 30_000)
        #expect(throws: FrameIndexTooShort.self) { try ClipPlan.plan(partial, inside) }
        let near = try FrameIndexBuilder.extend(partial, source: file, coveringMs: d - 1)
        let nearPlan = try ClipPlan.plan(near, inside) == ClipPlan.plan(complete, inside)
        #expect(nearPlan)

        // A start past the end: "extend" first, then the complete index's 422.
        let past = ClipPlan.Request(startMs: d + 1, durationMs: 30_000)
        #expect(throws: FrameIndexTooShort.self) { try ClipPlan.plan(partial, past) }
        #expect(throws: TrimError.windowOutsideAudio(startMs: d + 1, durationMs: 30_000)) { try ClipPlan.plan(extended, past) }
        // Any 64-bit request: the error says "to the end", never overflows.
        #expect(throws: FrameIndexTooShort(neededMs: .max, coveredMs: partial.coveredMs)) {
            try ClipPlan.plan(partial, .init(startMs: .max - 5, durationMs: 30_000))
        }
    }

    // MARK: - Reads

    @Test("A cold clip at minute 1 of a long VBR episode reads at most its last frame's end plus one read-ahead, and the extension reads on from there")
    func coldClipAtMinuteOneReadsLittle() throws {
        let path = try Self.longVBR.get()
        let counting = CountingByteSource(try FileByteSource(path: path))
        let request = ClipPlan.Request(startMs: 60_000, durationMs: 30_000)
        let (description, index) = try SourceDescription.probe(counting, coveringMs: request.startMs + request.durationMs)
        let plan = try ClipPlan.plan(index, request)
        #expect(!index.isComplete && description.frames == index.frameCount)
        // The bound: every byte up to the end of the clip's last frame, plus one read-ahead of
        // the progressive scan (the last read goes on past what the scan needs).
        let bound = plan.readRange.upperBound + Int64(FrameIndexBuilder.progressiveReadAhead)
        print("minute 1 of a \(counting.size)-byte VBR episode: probe + index read \(counting.bytesRead) bytes in \(counting.readCount) reads "
              + "(clip ends at byte \(plan.readRange.upperBound), bound \(bound)): \(counting.ranges)")
        #expect(counting.bytesRead <= bound, "read \(counting.bytesRead) bytes: \(counting.ranges)")
        #expect(counting.bytesRead < counting.size / 4, "far less than the whole episode")
        #expect(counting.readCount <= 4, "head, tail and one read-ahead: \(counting.ranges)")

        // Extending to minute 10 reads only after the prefix (resynchronising needs nothing before it).
        let later = CountingByteSource(try FileByteSource(path: path))
        let extended = try FrameIndexBuilder.extend(index, source: later, coveringMs: 10 * 60_000)
        #expect(later.ranges.allSatisfy { $0.lowerBound >= index.audioFramesEnd }, "\(later.ranges)")
        let minuteTen = try ClipPlan.plan(extended, .init(startMs: 9 * 60_000, durationMs: 60_000))
        #expect(later.bytesRead <= minuteTen.readRange.upperBound - index.audioFramesEnd + Int64(SourceWindow.chunk))
        #expect(later.readCount <= 4, "\(later.ranges)")
        print("extending to minute 10: \(later.bytesRead) bytes in \(later.readCount) reads")
    }

    // MARK: - Stored form

    @Test("Version-1 records decode as complete indexes; partial records round-trip; inconsistent flags are refused")
    func storedForm() throws {
        for name in ["m1_44k_joint_vbr_v2", "m1_48k_mono_cbr64"] {
            let complete = try FrameIndexBuilder.build(FileByteSource(path: try Fixtures.named(name).path))
            var record = complete.serialized()
            #expect(record[4] == 2 && record[5] == 0, "version 2")
            // Version 1 is version 2 without the completeness byte (after the frame count).
            var v1 = record
            v1.remove(at: Self.completenessOffset)
            v1[4] = 1
            let decoded = try FrameIndex(serialized: v1)
            let same = decoded == complete
            #expect(same && decoded.isComplete, "\(name): a version-1 record decodes as the complete index")
            record[Self.completenessOffset] = 2
            #expect(throws: TrimError.self) { try FrameIndex(serialized: record) }
            if complete.isConstantBitrate {
                record[Self.completenessOffset] = 0
                #expect(throws: TrimError.badFrameIndex("a partial constant layout")) { try FrameIndex(serialized: record) }
            }
        }
        let vbr = try FileByteSource(path: try Fixtures.named("m1_44k_joint_vbr_v2").path)
        let partial = try FrameIndexBuilder.build(vbr, coveringMs: 20_000)
        let record = partial.serialized()
        #expect(record[Self.completenessOffset] == 0)
        let back = try FrameIndex(serialized: record)
        let same = back == partial
        #expect(same && !back.isComplete)
    }

    /// "CPFI", version, sourceSize, header, audioStart, audioEnd, tagFrameOffset, frameCount.
    static let completenessOffset = 4 + 2 + 8 + 4 + 8 + 8 + 8 + 4

    // MARK: - Helpers

    /// True when `partial` is what `complete` says about its first frames.
    /// The fewest frames of `complete` whose decoded audio reaches `coveringMs` plus the scan's margin.
    static func framesCovering(_ coveringMs: Int64, in complete: FrameIndex) -> Int {
        let target = (coveringMs * Int64(complete.sampleRate) + 999) / 1000
            + Int64(FrameIndexBuilder.coverageMarginFrames * complete.samplesPerFrame)
        return (1...complete.frameCount).first {
            FrameIndex.decodedSamples(frames: $0, header: complete.header, tag: complete.vbrTag) >= target
        } ?? complete.frameCount
    }

    static func isPrefix(_ partial: FrameIndex, of complete: FrameIndex) -> Bool {
        guard partial.sourceSize == complete.sourceSize, partial.header == complete.header, partial.vbrTag == complete.vbrTag,
              partial.tagFrameOffset == complete.tagFrameOffset, partial.audioStart == complete.audioStart,
              partial.audioEnd == complete.audioEnd, partial.frameCount <= complete.frameCount,
              partial.isConstantBitrate == complete.isConstantBitrate else { return false }
        if case .table(let sizes, let gaps) = partial.layout, case .table(let all, let allGaps) = complete.layout {
            guard sizes[...] == all.prefix(sizes.count), gaps[...] == allGaps.prefix(while: { $0.beforeFrame < sizes.count }) else { return false }
        }
        // Frame by frame; a partial scan may stop right before junk, so its end is the end of
        // its last frame, not the start of the complete index's next frame.
        guard (0..<partial.frameCount).allSatisfy({ partial.offset(of: $0) == complete.offset(of: $0) }) else { return false }
        let last = partial.frameCount - 1
        return partial.frameCount == 0 || partial.audioFramesEnd == complete.offset(of: last) + Int64(complete.size(of: last))
    }
}
