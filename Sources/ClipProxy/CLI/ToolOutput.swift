import Foundation

/// How the batch subcommands write: unbuffered (a script or test may be reading the pipe while
/// they run), and with the same units and progress bar everywhere.
enum ToolOutput {
    /// A line on standard output, flushed at once.
    static func say(_ text: String) { write(text + "\n") }

    static func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    /// A line on standard error, flushed at once.
    static func warn(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    /// `[#########---------------------] 9/30`
    static func bar(done: Int, total: Int, width: Int = 30) -> String {
        let filled = total == 0 ? width : min(width, done * width / total)
        return "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "] \(done)/\(total)"
    }

    /// `1 guid`, `2 guids`.
    static func count(_ number: Int, _ noun: String) -> String { "\(number) \(noun)" + (number == 1 ? "" : "s") }

    static func megabytes(_ bytes: Int64) -> String { String(format: "%.1f MB", Double(bytes) / 1_000_000) }

    static func seconds(_ elapsed: Duration) -> String { String(format: "%.1f s", Double(elapsed.wholeMilliseconds) / 1000) }
}
