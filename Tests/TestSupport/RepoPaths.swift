import Foundation

/// Where the repository's scripts, venv and generated fixtures live, found from this file's path
/// so tests work from any working directory.
public enum RepoPaths {
    public static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public static var scripts: URL { root.appendingPathComponent("scripts") }
    public static var python: URL { root.appendingPathComponent(".venv/bin/python") }
    public static var fixtures: URL { root.appendingPathComponent("Tests/Fixtures/generated") }

    /// The `clipproxy` executable built next to the test bundle.
    public static var clipproxyBinary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("clipproxy")
    }

    /// Fails with a message that says how to get the file when something generated is missing.
    public static func require(_ url: URL, hint: String) throws -> URL {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TestSetupError("\(url.path) is missing: \(hint)")
        }
        return url
    }
}

public struct TestSetupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A fresh temporary directory, removed by `remove()`.
public struct TemporaryDirectory: Sendable {
    public let url: URL
    public init(_ label: String = "clipproxy-test") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    public var path: String { url.path }
    public func remove() { try? FileManager.default.removeItem(at: url) }
}

/// Byte-for-byte equality as a plain Bool. Use it in `#expect` instead of `==` on large arrays:
/// a failing `==` makes Swift Testing diff the arrays element by element, which takes minutes.
public func sameBytes<A: Collection, B: Collection>(_ a: A, _ b: B) -> Bool where A.Element == UInt8, B.Element == UInt8 {
    a.count == b.count && a.elementsEqual(b)
}
