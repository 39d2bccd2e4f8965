import Foundation
import Support
import Testing
import TestSupport
@testable import Upstream

/// The S3 client against moto's S3 server on loopback.
@Suite("S3 client against moto")
struct S3ClientTests {
    @Test("Ranged GETs stream exactly the requested bytes; onHead comes first, once")
    func rangedGets() async throws {
        try await withTestServer(try TestServer.s3()) { s3 in
            let client = try S3Test.client(s3)
            try client.createBucket("ranges")
            let size = 2_000_000
            let object = S3Test.payload(size)
            let put = try client.putObject(bucket: "ranges", key: "episode/audio.mp3", body: object, contentType: "audio/mpeg")
            #expect(put.etag == S3Test.quotedMD5(object))

            let last = Int64(size - 1)
            let cases: [(range: S3ByteRange?, expected: ClosedRange<Int64>, status: Int)] = [
                (nil, 0...last, 200),                                      // whole object
                (S3ByteRange(0...0), 0...0, 206),                          // first byte
                (S3ByteRange(last...last), last...last, 206),              // last byte
                (S3ByteRange(from: 1_234_567), 1_234_567...last, 206),     // open-ended
                (S3ByteRange(from: 0), 0...last, 206),                     // open-ended from 0: the whole object as a range
                (S3ByteRange(1000...1999), 1000...1999, 206),              // middle
                (S3ByteRange(1_999_990...5_000_000), 1_999_990...last, 206), // past the end: clamped by S3
            ]
            for (range, expected, status) in cases {
                var read = S3Test.Read()
                let response = try S3Test.read(client, "ranges", "episode/audio.mp3", range: range, into: &read)
                let label = range?.description ?? "whole"
                #expect(response.status == status, "\(label)")
                #expect(response.range == expected, "\(label)")
                #expect(response.contentLength == expected.upperBound - expected.lowerBound + 1, "\(label)")
                #expect(response.objectSize == Int64(size), "\(label)")
                #expect(response.etag == put.etag, "\(label)")
                #expect(response.contentType == "audio/mpeg", "\(label)")
                #expect(read.heads.count == 1 && !read.bodyBeforeHead, "\(label): onHead once, before the body")
                #expect(sameBytes(read.bytes, object[Int(expected.lowerBound)...Int(expected.upperBound)]), "\(label)")
                if expected.count > 1_000_000 { #expect(read.chunks > 10, "\(label): \(read.chunks) chunks; streamed, not buffered") }
            }

            // Beyond the end: S3's 416 InvalidRange is a typed invalid request, not retried.
            let error = #expect(throws: S3Error.self) {
                try client.getObject(bucket: "ranges", key: "episode/audio.mp3", range: S3ByteRange(from: Int64(size))) { _ in }
            }
            #expect(error?.kind == .invalidRequest)
            #expect(error?.status == 416)
            #expect(error?.code == "InvalidRange")
            #expect(error?.attempts == 1)
        }
    }

    @Test("HEAD reports size, ETag, Last-Modified and Content-Type; missing objects are typed notFound")
    func headAndNotFound() async throws {
        try await withTestServer(try TestServer.s3()) { s3 in
            let log = LogCapture()
            let client = try S3Test.client(s3, log: log)
            try client.createBucket("heads")
            let object = S3Test.payload(12_345)
            let before = Date()
            try client.putObject(bucket: "heads", key: "a/b.mp3", body: object, contentType: "audio/mpeg")

            let head = try client.headObject(bucket: "heads", key: "a/b.mp3")
            #expect(head.size == 12_345)
            #expect(head.etag == S3Test.quotedMD5(object))
            #expect(head.contentType == "audio/mpeg")
            let modified = try #require(head.lastModified)
            #expect(abs(modified.timeIntervalSince(before)) < 60, "Last-Modified \(modified) vs \(before)")

            let missingGet = #expect(throws: S3Error.self) {
                try client.getObject(bucket: "heads", key: "nope.mp3") { _ in Issue.record("no body for a missing key") }
            }
            #expect(missingGet?.kind == .notFound)
            #expect(missingGet?.code == "NoSuchKey")
            #expect(missingGet?.status == 404)
            #expect(missingGet?.attempts == 1, "a 404 is never retried")
            #expect(missingGet?.operation == "GetObject" && missingGet?.key == "nope.mp3")

            // HEAD has no body, so no code from S3: still notFound.
            let missingHead = #expect(throws: S3Error.self) { try client.headObject(bucket: "heads", key: "nope.mp3") }
            #expect(missingHead?.kind == .notFound)
            #expect(missingHead?.code == "NotFound")
            #expect(missingHead?.status == 404)

            let noBucket = #expect(throws: S3Error.self) { try client.headObject(bucket: "no-such-bucket", key: "x") }
            #expect(noBucket?.kind == .notFound)
            let noBucketList = #expect(throws: S3Error.self) { try client.listObjectsV2(bucket: "no-such-bucket") }
            #expect(noBucketList?.kind == .notFound)
            #expect(noBucketList?.code == "NoSuchBucket")
            #expect(log.count("s3 request retrying") == 0, "4xx are never retried")

            #expect(try client.createBucket("heads") == false, "BucketAlreadyOwnedByYou counts as done")
        }
    }

    @Test("ListObjectsV2 follows continuation tokens past moto's 1,000-key pages")
    func listManyKeys() async throws {
        try await withTestServer(try TestServer.s3()) { s3 in
            let log = LogCapture()
            let client = try S3Test.client(s3, log: log)
            try client.createBucket("listing")
            let keys = (0..<1100).map { String(format: "feed/guid-%04d/audio/part %d.mp3", $0, $0) }
            // Four threads upload, as the server's thread pool would.
            DispatchQueue.concurrentPerform(iterations: 4) { worker in
                for i in stride(from: worker, to: keys.count, by: 4) {
                    do { try client.putObject(bucket: "listing", key: keys[i], body: Array("object \(i)".utf8)) } catch {
                        Issue.record("PUT \(keys[i]): \(error)")
                    }
                }
            }
            try client.putObject(bucket: "listing", key: "other/outside.mp3", body: [1, 2, 3])

            let listed = try client.listObjectsV2(bucket: "listing", prefix: "feed/")
            #expect(listed.count == 1100)
            #expect(listed.map(\.key) == keys.sorted(), "every key once, in key order")
            let byKey = Dictionary(uniqueKeysWithValues: listed.map { ($0.key, $0) })
            for i in [0, 999, 1000, 1099] {
                let body = Array("object \(i)".utf8)
                #expect(byKey[keys[i]]?.size == Int64(body.count))
                #expect(byKey[keys[i]]?.etag == S3Test.quotedMD5(body))
                #expect(byKey[keys[i]]?.lastModified != nil)
            }
            #expect(log.count("s3 request completed", operation: "ListObjectsV2") == 2, "two pages: 1,000 + 100")
            #expect(client.pool.idleCount <= 4, "handles are reused: at most one per thread that used the client")

            #expect(try client.listObjectsV2(bucket: "listing").count == 1101)
            #expect(try client.listObjectsV2(bucket: "listing", prefix: "feed/guid-0007/").map(\.key) == [keys[7]])
            #expect(try client.listObjectsV2(bucket: "listing", prefix: "nothing/").isEmpty)
            let small = try client.listObjectsV2(bucket: "listing", prefix: "feed/guid-00", pageSize: 7)
            #expect(small.map(\.key) == Array(keys.prefix(100)), "100 keys in pages of 7")
        }
    }

    @Test("PUT from bytes and from a file (streamed), empty objects, and a missing file")
    func putBytesAndFile() async throws {
        try await withTestServer(try TestServer.s3()) { s3 in
            let client = try S3Test.client(s3)
            try client.createBucket("uploads")
            let directory = try TemporaryDirectory("s3-put")
            defer { directory.remove() }

            let fileBytes = S3Test.payload(3_000_001, seed: 7)
            let path = directory.url.appendingPathComponent("clip.mp3").path
            #expect(FileManager.default.createFile(atPath: path, contents: Data(fileBytes)))
            let fromFile = try client.putObject(bucket: "uploads", key: "from-file.mp3", fileAt: path, contentType: "audio/mpeg")
            #expect(fromFile.etag == S3Test.quotedMD5(fileBytes))
            var read = S3Test.Read()
            try S3Test.read(client, "uploads", "from-file.mp3", into: &read)
            #expect(sameBytes(read.bytes, fileBytes))
            #expect(try client.headObject(bucket: "uploads", key: "from-file.mp3").contentType == "audio/mpeg")

            let bytes = S3Test.payload(70_000, seed: 8)
            #expect(try client.putObject(bucket: "uploads", key: "from-bytes.bin", body: bytes).etag == S3Test.quotedMD5(bytes))
            read = S3Test.Read()
            try S3Test.read(client, "uploads", "from-bytes.bin", into: &read)
            #expect(sameBytes(read.bytes, bytes))

            // Zero bytes, from memory and from a file.
            let emptyPath = directory.url.appendingPathComponent("empty").path
            #expect(FileManager.default.createFile(atPath: emptyPath, contents: Data()))
            try client.putObject(bucket: "uploads", key: "empty-file", fileAt: emptyPath)
            try client.putObject(bucket: "uploads", key: "empty-bytes", body: [])
            for key in ["empty-file", "empty-bytes"] {
                read = S3Test.Read()
                let response = try S3Test.read(client, "uploads", key, into: &read)
                #expect(response.contentLength == 0 && response.range == nil && read.bytes.isEmpty, "\(key)")
                #expect(read.heads.count == 1, "\(key): onHead also for an empty body")
                #expect(try client.headObject(bucket: "uploads", key: key).size == 0)
            }

            let missing = #expect(throws: S3Error.self) {
                try client.putObject(bucket: "uploads", key: "x", fileAt: directory.url.appendingPathComponent("absent").path)
            }
            #expect(missing?.kind == .invalidRequest)
            #expect(missing?.code == "UploadSourceUnreadable")
        }
    }

    @Test("Awkward keys round-trip (encoded exactly once), and a pre-signed GET works with plain libcurl")
    func awkwardKeysAndPresignedGet() async throws {
        try await withTestServer(try TestServer.s3()) { s3 in
            let client = try S3Test.client(s3)
            try client.createBucket("awkward")
            let keys = ["with space.mp3", "a+b=c&d.mp3", "100%.mp3", "a%20b", "time:12:30 (1)", "tilde~bang!star*quote'",
                        "café/日本語.mp3", "semi;colon,comma@dollar$", "hash#and?question", "emoji 🎧", "double//slash",
                        "trailing/", "/leading", "a/./b/../c"]
            for (i, key) in keys.enumerated() {
                try client.putObject(bucket: "awkward", key: key, body: Array("body \(i)".utf8))
            }
            #expect(try client.listObjectsV2(bucket: "awkward").map(\.key) == keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }))
            for (i, key) in keys.enumerated() {
                var read = S3Test.Read()
                try S3Test.read(client, "awkward", key, into: &read)
                #expect(String(decoding: read.bytes, as: UTF8.self) == "body \(i)", "\(key)")
                #expect(try client.headObject(bucket: "awkward", key: key).size == Int64("body \(i)".utf8.count))

                // The pre-signed URL, fetched with no headers at all.
                let url = try client.presignedGetURL(bucket: "awkward", key: key, expires: 300)
                var body: [UInt8] = []
                let head = try CurlTransfer().perform(HTTPRequest(method: "GET", url: url)) { chunk in
                    body.append(contentsOf: chunk)
                    return true
                }
                #expect(head.status == 200, "\(key)")
                #expect(String(decoding: body, as: UTF8.self) == "body \(i)", "\(key)")
            }

            let tooLong = #expect(throws: S3Error.self) { try client.presignedGetURL(bucket: "awkward", key: "k", expires: 604_801) }
            #expect(tooLong?.kind == .invalidRequest && tooLong?.code == "InvalidExpires")
            #expect(throws: S3Error.self) { try client.presignedGetURL(bucket: "awkward", key: "k", expires: 0) }
            #expect(try client.presignedGetURL(bucket: "awkward", key: "k", expires: 604_800).contains("X-Amz-Expires=604800"))
            #expect(try client.presignedGetURL(bucket: "awkward", key: "k", expires: 1).contains("X-Amz-Expires=1&"))
        }
    }

    @Test("Virtual-hosted addressing against moto via bucket.localhost")
    func virtualHosted() async throws {
        try await withTestServer(try TestServer.s3()) { s3 in
            let log = LogCapture()
            let client = try S3Test.client(endpoint: "http://localhost:\(s3.port)", pathStyle: false, log: log)
            #expect(client.address(bucket: "vhost", key: "a b").host == "vhost.localhost:\(s3.port)")
            try client.createBucket("vhost")
            let object = S3Test.payload(50_000, seed: 3)
            try client.putObject(bucket: "vhost", key: "dir/a b.mp3", body: object)
            var read = S3Test.Read()
            try S3Test.read(client, "vhost", "dir/a b.mp3", range: S3ByteRange(10...20_009), into: &read)
            #expect(sameBytes(read.bytes, object[10...20_009]))
            #expect(try client.listObjectsV2(bucket: "vhost").map(\.key) == ["dir/a b.mp3"])
            #expect(try client.headObject(bucket: "vhost", key: "dir/a b.mp3").size == 50_000)

            // The same bucket seen path-style: it is one bucket, not a bucket called "localhost".
            let pathClient = try S3Test.client(s3, pathStyle: true)
            #expect(try pathClient.headObject(bucket: "vhost", key: "dir/a b.mp3").etag == S3Test.quotedMD5(object))
        }
    }

    @Test("The handle pool lends each handle to one caller at a time and keeps at most maxIdle")
    func handlePool() {
        let pool = CurlHandlePool(maxIdle: 2)
        let first = pool.withHandle { ObjectIdentifier($0) }
        #expect(pool.withHandle { ObjectIdentifier($0) } == first, "a returned handle is reused")
        pool.withHandle { outer in
            pool.withHandle { inner in #expect(outer !== inner, "never lent twice at once") }
        }
        #expect(pool.idleCount == 2)
        pool.withHandle { _ in pool.withHandle { _ in pool.withHandle { _ in } } }
        #expect(pool.idleCount == 2, "the third handle is freed, not kept")
    }

    @Test("Addressing: URL, Host header and path for both styles (pure)")
    func addressing() throws {
        func client(_ endpoint: String, pathStyle: Bool) throws -> S3Client {
            try S3Client(configuration: S3Configuration(endpoint: URL(string: endpoint)!, pathStyle: pathStyle), credentials: S3Test.credentials)
        }
        let local = try client("http://127.0.0.1:9000", pathStyle: true)
        #expect(local.address(bucket: "b-1", key: "a b/c%d+é") == ("http://127.0.0.1:9000", "127.0.0.1:9000", "/b-1/a%20b/c%25d%2B%C3%A9"))
        #expect(local.address(bucket: "b-1", key: nil).path == "/b-1")
        // An IP endpoint cannot be virtual-hosted: path style even when asked otherwise.
        #expect(try client("http://127.0.0.1:9000", pathStyle: false).address(bucket: "b-1", key: "k").host == "127.0.0.1:9000")
        #expect(try client("http://[::1]:9000", pathStyle: false).address(bucket: "b-1", key: "k") == ("http://[::1]:9000", "[::1]:9000", "/b-1/k"))

        let aws = try client("https://s3.eu-west-2.amazonaws.com", pathStyle: false)
        #expect(aws.address(bucket: "pod-insights-clips", key: "feed/x.mp3")
            == ("https://pod-insights-clips.s3.eu-west-2.amazonaws.com", "pod-insights-clips.s3.eu-west-2.amazonaws.com", "/feed/x.mp3"))
        #expect(aws.address(bucket: "pod-insights-clips", key: nil).path == "/")
        // Dots over https would break the wildcard certificate: path style instead.
        #expect(aws.address(bucket: "my.dotted.bucket", key: "k").host == "s3.eu-west-2.amazonaws.com")
        #expect(aws.address(bucket: "my.dotted.bucket", key: "k").path == "/my.dotted.bucket/k")

        // Default ports stay out of Host; others stay in.
        #expect(try client("https://s3.example.com:443", pathStyle: true).address(bucket: "b12", key: "k").host == "s3.example.com")
        #expect(try client("http://minio.local:80/", pathStyle: true).address(bucket: "b12", key: "k").host == "minio.local")
        #expect(try client("https://minio.local:9443/prefix/", pathStyle: true).address(bucket: "b12", key: "k")
            == ("https://minio.local:9443", "minio.local:9443", "/prefix/b12/k"))

        #expect(throws: S3Error.self) { try client("ftp://example.com", pathStyle: true) }
        let noKey = #expect(throws: S3Error.self) { try local.headObject(bucket: "b-1", key: "") }
        #expect(noKey?.code == "InvalidKey")
    }
}
