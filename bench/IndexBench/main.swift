// Index benchmark: insert and lookup rates of the LMDB index and the clip store, in-process.
// Usage: IndexBench DIRECTORY   (bench/index.sh builds it in release mode and runs it)
import Foundation
import Index

let directory = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : NSTemporaryDirectory() + "/clipproxy-index-bench"
try? FileManager.default.removeItem(atPath: directory)

func rate(_ count: Int, _ body: () throws -> Void) rethrows -> Double {
    let start = ContinuousClock.now
    try body()
    let elapsed = ContinuousClock.now - start
    return Double(count) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
}

// Raw LMDB: 100,000 puts in batches of 1,000 per transaction, then random gets.
let env = try LMDBEnvironment(path: directory + "/raw", initialMapSize: 1 << 20)
let db = try env.database(named: "kv")
let n = 100_000
let value = [UInt8](repeating: 7, count: 96)
let lmdbPut = try rate(n) {
    for batch in stride(from: 0, to: n, by: 1000) {
        try env.write { txn in for i in batch..<(batch + 1000) { try txn.put(db, key: Array("key-\(i)".utf8), value: value) } }
    }
}
var keys = (0..<n).map { Array("key-\($0)".utf8) }
keys.shuffle()
let lmdbGet = try rate(n) {
    for key in keys { _ = try env.read { try $0.withValue(db, key: key) { $0?.count } } }
}

// Clip store: commits of 64 KiB clips (each fsynced, renamed and recorded), then hits.
let store = try ClipStore(.init(directory: directory + "/store", maxBytes: 1 << 34))
let clipCount = 300
let clip = [UInt8](repeating: 1, count: 64 << 10)
var clipKeys: [ClipKey] = []
let storeInsert = try rate(clipCount) {
    for i in 0..<clipCount {
        let key = ClipKey(identity: "bench-\(i)")
        let fill = try store.beginFill(key)
        try fill.write(clip)
        try store.commit(fill)
        clipKeys.append(key)
    }
}
let lookups = 200_000
let storeLookup = try rate(lookups) {
    for i in 0..<lookups { try store.lookup(clipKeys[i % clipCount])?.release() }
}
let storeMiss = try rate(lookups) {
    for i in 0..<lookups { _ = try store.lookup(ClipKey(identity: "absent-\(i % 997)")) }
}
try store.flushRecency()

let results: [String: Any] = [
    "lmdb_puts_per_s_batched": Int(lmdbPut), "lmdb_gets_per_s": Int(lmdbGet),
    "store_commits_per_s_64KiB_fsync": Int(storeInsert), "store_hit_lookups_per_s": Int(storeLookup),
    "store_miss_lookups_per_s": Int(storeMiss),
]
let json = try JSONSerialization.data(withJSONObject: results, options: [.prettyPrinted, .sortedKeys])
print(String(decoding: json, as: UTF8.self))
try? FileManager.default.removeItem(atPath: directory)
