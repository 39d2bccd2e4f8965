import Foundation
import Testing
import TestSupport
@testable import Index

@Suite("liblmdb: the environment wrapper")
struct LMDBEnvironmentTests {
    @Test("A value put in a committed transaction is read back, also after reopening")
    func putGetAcrossReopen() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        do {
            let env = try LMDBEnvironment(path: dir.path)
            let db = try env.database(named: "clips")
            try env.write { try $0.put(db, key: Array("k1".utf8), value: Array("hello".utf8)) }
            #expect(try env.read { try $0.get(db, key: Array("k1".utf8)) } == Array("hello".utf8))
            #expect(try env.read { try $0.get(db, key: Array("absent".utf8)) } == nil)
        }
        let reopened = try LMDBEnvironment(path: dir.path)
        let db = try reopened.database(named: "clips")
        #expect(try reopened.read { try $0.get(db, key: Array("k1".utf8)) } == Array("hello".utf8))
    }

    struct Boom: Error {}

    @Test("A transaction whose body throws leaves nothing behind")
    func abortOnThrow() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let env = try LMDBEnvironment(path: dir.path)
        let db = try env.database(named: "clips")
        #expect(throws: Boom.self) {
            try env.write { txn in
                try txn.put(db, key: Array("k".utf8), value: Array("v".utf8))
                throw Boom()
            }
        }
        #expect(try env.read { try $0.count(db) } == 0)
    }

    @Test("A tiny map grows instead of failing")
    func mapGrows() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let env = try LMDBEnvironment(path: dir.path, initialMapSize: 64 << 10)
        let db = try env.database(named: "blobs")
        let value = [UInt8](repeating: 7, count: 4096)
        for i in 0..<500 {
            try env.write { try $0.put(db, key: Array("key-\(i)".utf8), value: value) }
        }
        #expect(try env.read { try $0.count(db) } == 500)
        #expect(env.currentMapSize > 64 << 10)
        #expect(try env.read { try $0.get(db, key: Array("key-499".utf8)) } == value)
    }
}
