// A process that fills the clip store as fast as it can, forever: the crash-safety test kills it
// with SIGKILL at random moments and then checks that the store reconciles to a consistent state.
// Usage: IndexCrashChild DIRECTORY MAX_BYTES
import Foundation
import Index

let arguments = CommandLine.arguments
guard arguments.count == 3, let maxBytes = Int64(arguments[2]) else {
    FileHandle.standardError.write(Data("usage: IndexCrashChild DIRECTORY MAX_BYTES\n".utf8))
    exit(2)
}
let store = try ClipStore(.init(directory: arguments[1], maxBytes: maxBytes, initialMapSize: 256 << 10))
struct XorShift {
    var state = UInt64(UInt32(getpid())) | 1
    mutating func next() -> UInt64 { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state }
}
var random = XorShift()

var committed: [ClipKey] = []
for i in 0... {
    let key = ClipKey(identity: "crash-\(getpid())-\(i)")
    let fill = try store.beginFill(key)
    let size = 1_000 + Int(random.next() % 150_000)
    var written = 0
    while written < size {
        let n = min(8192, size - written)
        let chunk = (0..<n).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        try fill.write(chunk)
        written += n
    }
    try store.commit(fill, secondTierLocation: i % 3 == 0 ? "clips/\(key.hex).mp3" : nil)
    committed.append(key)
    // Hits on older clips move them in the LRU order (batched recency writes).
    if let old = committed.randomElement(), let lease = try store.lookup(old) { lease.release() }
    if i % 50 == 49 { try store.flushRecency() }
    FileHandle.standardOutput.write(Data("committed \(i + 1)\n".utf8))
}
