import Support
import Foundation
import Trim

/// `clipproxy trim` and `clipproxy probe`: the clip engine on local files.
enum TrimTool {
    static func trim(source path: String, startMs: Int64, durationMs: Int64, output: String) throws {
        let source = try FileByteSource(path: path)
        let (_, index) = try SourceDescription.probe(source)
        let plan = try ClipPlan.plan(index, ClipPlan.Request(startMs: startMs, durationMs: durationMs))
        // Write next to the target and rename, so a failed cut never leaves a partial clip behind.
        let temporary = output + ".partial-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: nil), let handle = FileHandle(forWritingAtPath: temporary) else {
            throw ToolError("cannot write \(output)")
        }
        do {
            try Trimmer.write(plan, from: source) { bytes in try handle.write(contentsOf: bytes) }
            try handle.synchronize()
            try handle.close()
            try Posix.rename(temporary, to: output)
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
        let summary: [String: Any] = [
            "output": output, "bytes": plan.byteCount, "start_sample": plan.startSample, "samples": plan.sampleCount,
            "duration_ms": plan.durationMs, "source_bytes_read": plan.readRange.count,
            "read_range": [plan.readRange.lowerBound, plan.readRange.upperBound],
            "encoder_delay": plan.encoderDelay, "encoder_padding": plan.encoderPadding,
        ]
        try printJSON(summary)
    }

    static func probe(source path: String) throws {
        let (description, _) = try SourceDescription.probe(try FileByteSource(path: path))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        FileHandle.standardOutput.write(try encoder.encode(description))
        FileHandle.standardOutput.write(Data("\n".utf8))
    }

    static func printJSON(_ object: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        FileHandle.standardOutput.write(data)
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}

struct ToolError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
