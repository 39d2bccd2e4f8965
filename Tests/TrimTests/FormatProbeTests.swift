import Foundation
import Testing
import TestSupport
@testable import Trim

@Suite("libavformat: probing through byte-range reads")
struct FormatProbeTests {
    @Test("The fixture set is present (fixtures are generated, never silently absent)")
    func fixturesExist() throws {
        let fixtures = try Fixtures.audio()
        #expect(fixtures.count >= 13)
    }

    @Test("Every MP3 fixture is identified as mp3 with its sample rate and channels", arguments: Fixtures.audioOrEmpty)
    func probeFixture(_ fixture: AudioFixture) throws {
        let source = CountingByteSource(try FileByteSource(path: fixture.path))
        let probe = try FormatProbe.probe(source)
        #expect(probe.container == "mp3")
        #expect(probe.codec == "mp3")
        #expect(probe.sampleRate == fixture.sampleRate)
        #expect(probe.channels == fixture.channels)
        #expect(source.bytesRead > 0)
        #expect(source.ranges.allSatisfy { $0.count <= 64 << 10 }, "every read is a bounded range")
        #expect(source.bytesRead <= 256 << 10, "probing reads a few frames, not the file")
    }

    @Test("Non-MP3 and broken inputs give a typed error or a non-mp3 answer, never a crash")
    func badInputs() throws {
        for url in try Fixtures.badInputs() {
            let source = try FileByteSource(path: url.path)
            do {
                let probe = try FormatProbe.probe(source)
                // WAV and Ogg are real formats; what matters is that they are not taken for MP3.
                if url.lastPathComponent.hasPrefix("not_mp3") { #expect(probe.container != "mp3", "\(url.lastPathComponent)") }
            } catch let error as TrimError {
                _ = error.description
            }
        }
    }
}

extension AudioFixture: CustomTestStringConvertible {}
