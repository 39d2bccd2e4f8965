import Foundation
import Logging
import Synchronization
import Testing
@testable import ClipProxy

/// clipproxy's log handler must write exactly the lines swift-log's `StreamLogHandler` wrote
/// before it (operators' log parsing, and the tests that read log lines, rely on the format).
@Suite("Log lines")
struct StderrLogHandlerTests {
    /// Collects what a `StreamLogHandler` writes.
    final class Captured: TextOutputStream, @unchecked Sendable {
        var text = ""
        func write(_ string: String) { text += string }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String { "disk on fire" }
    }

    static let events: [LogEvent] = [
        LogEvent(level: .info, message: "clip", metadata: ["episode.id": "685ba776e4f9ec2f0756267a", "clip.start_ms": "5000",
                                                           "clip.tier": "l1_hit", "http.status": "200"],
                 source: "ClipProxy", file: #fileID, function: #function, line: #line),
        LogEvent(level: .info, message: "Server started", metadata: nil, source: "HummingbirdCore", file: #fileID, function: #function, line: #line),
        LogEvent(level: .warning, message: "values of every kind", metadata: [
            "count": .stringConvertible(42), "list": .array(["a", "b"]), "map": .dictionary(["k": "v"]), "b": "x=y z",
        ], source: "ClipProxy", file: #fileID, function: #function, line: #line),
        LogEvent(level: .error, message: "failed", error: Failure(), metadata: ["fill": "1"], source: "Index",
                 file: #fileID, function: #function, line: #line),
        LogEvent(level: .debug, message: "explicit wins", metadata: ["node": "override"], source: "ClipProxy", file: #fileID, function: #function, line: #line),
    ]

    @Test("Each line equals StreamLogHandler's, with handler metadata, overrides, errors and every value kind")
    func sameLinesAsStreamLogHandler() throws {
        for base in [Logger.Metadata(), ["node": "a", "zone": .stringConvertible(3)]] {
            for label in ["clipproxy", ""] {
                // The timestamp has one-second resolution: a pair that straddles a second is retried.
                var attempts = 0
                while true {
                    attempts += 1
                    let (theirs, ours) = try render(label: label, base: base)
                    #expect(theirs.split(separator: "\n").count == Self.events.count)
                    if theirs == ours { break }
                    let sameSecond = zip(theirs.split(separator: "\n"), ours.split(separator: "\n")).allSatisfy {
                        $0.prefix(24) == $1.prefix(24)
                    }
                    #expect(!sameSecond && attempts < 5, "\(label) \(base):\n\(theirs)\(ours)")
                    if sameSecond || attempts >= 5 { break }
                }
            }
        }
    }

    @Test("Lines are whole and start with a local timestamp of the current second")
    func timestamp() throws {
        let (_, ours) = try render(label: "clipproxy", base: [:])
        let lines = ours.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == Self.events.count + 1 && lines.last == "")
        for line in lines.dropLast() {
            #expect(line.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \w+ clipproxy:( .+)? \[\w+\] .+/) != nil, "\(line)")
        }
    }

    /// The events through StreamLogHandler and through StderrLogHandler (into a pipe).
    private func render(label: String, base: Logger.Metadata) throws -> (String, String) {
        let captured = Captured()
        var stream = StreamLogHandler(label: label, stream: captured, metadataProvider: nil)
        stream.metadata = base
        var descriptors: [Int32] = [0, 0]
        #expect(pipe(&descriptors) == 0)
        var ours = StderrLogHandler(label: label, descriptor: descriptors[1], metadataProvider: nil)
        ours.metadata = base
        for event in Self.events {
            stream.log(event: event)
            ours.log(event: event)
        }
        close(descriptors[1])
        defer { close(descriptors[0]) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(descriptors[0], &buffer, buffer.count)
            if count <= 0 { break }
            bytes += buffer[..<count]
        }
        return (captured.text, String(decoding: bytes, as: UTF8.self))
    }
}
