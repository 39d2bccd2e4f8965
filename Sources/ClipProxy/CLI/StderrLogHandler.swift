import Foundation
import Logging
import Support
import Synchronization

/// Log lines on stderr in swift-log's `StreamLogHandler` format, unchanged:
/// `<local time> <level> <label>: <key=value, sorted by key> [<source>] <message>`.
///
/// Made cheaper per line because every answered clip writes one (the access log), and on the
/// stored-clip fast path the stream handler's formatting cost about as much CPU as deciding the
/// answer: it asks the C library for the local time on each line and builds the metadata text
/// through several intermediate strings. Here the timestamp is formatted once a second, the line
/// is built in one string, and it leaves in one write(2) (so lines from different threads never
/// interleave, as with the stream handler's locked stdio).
struct StderrLogHandler: LogHandler {
    let label: String
    /// Where lines go: stderr, or a descriptor a test reads.
    let descriptor: Int32
    var logLevel: Logger.Level = .info
    var metadataProvider: Logger.MetadataProvider?
    var metadata: Logger.Metadata = [:]

    init(label: String, descriptor: Int32 = STDERR_FILENO, metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider) {
        self.label = label
        self.descriptor = descriptor
        self.metadataProvider = metadataProvider
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    private static let writing = Mutex(())

    func log(event: LogEvent) {
        var line = ""
        line.reserveCapacity(256)
        line += LocalTimestamp.shared.text
        line += " "
        line += event.level.rawValue
        if !label.isEmpty { line += " " + label }
        line += ":"
        Self.appendMetadata(effectiveMetadata(event), to: &line)
        line += " ["
        line += event.source
        line += "] "
        line += event.message.description
        line += "\n"
        // One write(2) per line, under a lock: a write cut short (a full pipe) is finished
        // before another thread's line starts.
        Self.writing.withLock { _ in
            line.withUTF8 { bytes in
                try? Posix.writeAll(descriptor, UnsafeRawBufferPointer(bytes), path: "stderr")
            }
        }
    }

    /// The handler's metadata, then the provider's, then the call's, later ones winning; the
    /// error (if any) as `error.message` and `error.type`.
    private func effectiveMetadata(_ event: LogEvent) -> Logger.Metadata {
        let provided = metadataProvider?.get() ?? [:]
        var merged = metadata
        for (key, value) in provided { merged[key] = value }
        if let explicit = event.metadata {
            if merged.isEmpty { merged = explicit } else { for (key, value) in explicit { merged[key] = value } }
        }
        if let error = event.error {
            merged["error.message"] = "\(error)"
            merged["error.type"] = "\(String(reflecting: type(of: error)))"
        }
        return merged
    }

    static func appendMetadata(_ metadata: Logger.Metadata, to line: inout String) {
        for key in metadata.keys.sorted() {
            line += " "
            line += key
            line += "="
            switch metadata[key]! {
            case .string(let text): line += text
            case .stringConvertible(let value): line += value.description
            case let other: line += other.description
            }
        }
    }
}

/// The local time of the current second as `%Y-%m-%dT%H:%M:%S%z`, formatted once a second.
final class LocalTimestamp: Sendable {
    static let shared = LocalTimestamp()
    private let cached = Mutex<(second: Int, text: String)>((-1, ""))

    var text: String {
        var now = time(nil)
        return cached.withLock { cached in
            if cached.second != now {
                var parts = tm()
                var buffer = [UInt8](repeating: 0, count: 64)
                let count = localtime_r(&now, &parts) == nil ? 0 : strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
                if count > 0 {
                    cached = (now, String(decoding: buffer[..<count], as: UTF8.self))
                } else {
                    cached = (now, "<unknown>")
                }
            }
            return cached.text
        }
    }
}
