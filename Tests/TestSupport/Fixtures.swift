import Foundation

/// One generated MP3 fixture, as described by `fixtures.json` (written by scripts/make_fixtures.py).
public struct AudioFixture: Decodable, Sendable {
    public let name: String
    public let file: String
    public let mpegVersion: String
    public let sampleRate: Int
    public let channels: Int
    public let mode: String
    public let hasXing: Bool
    public let id3v2: Bool
    public let id3v1: Bool
    public let ape: Bool
    public let crc: Bool
    public let nominalDurationS: Double
    public let frames: Int
    public let firstFrameOffset: Int
    public let size: Int

    public var url: URL { Fixtures.directory.appendingPathComponent(file) }
    public var path: String { url.path }
    public var isCBR: Bool { mode == "cbr" }
    public var testDescription: String { name }
}


public enum Fixtures {
    public static var directory: URL { RepoPaths.fixtures }

    struct Manifest: Decodable {
        let fixtures: [AudioFixture]
        let badInputFiles: [String]
    }

    private static let manifest: Result<Manifest, Error> = Result {
        let url = try RepoPaths.require(directory.appendingPathComponent("fixtures.json"),
                                        hint: "generate fixtures with `make fixtures` (or run `make test`)")
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(Manifest.self, from: Data(contentsOf: url))
    }

    /// Every MP3 fixture that exists on disk (the one-hour file only when generated with --hour).
    public static func audio() throws -> [AudioFixture] {
        try manifest.get().fixtures.filter { FileManager.default.fileExists(atPath: $0.path) }
    }

    /// Fixtures for parameterized tests; an empty list (no fixtures generated) fails the test run
    /// through `requireAudio()` rather than silently running nothing.
    public static var audioOrEmpty: [AudioFixture] { (try? audio()) ?? [] }

    public static func named(_ name: String) throws -> AudioFixture {
        guard let fixture = try audio().first(where: { $0.name == name }) else {
            throw TestSetupError("fixture \(name) is missing: run `make fixtures`")
        }
        return fixture
    }

    /// Inputs that are not usable MP3 (WAV, Ogg, empty, random, truncated, huge ID3, garbage).
    public static func badInputs() throws -> [URL] {
        try manifest.get().badInputFiles.map { directory.appendingPathComponent($0) }
    }
}
