import Support
import Foundation
import Testing
import TestSupport
@testable import Upstream

/// libcurl against a real S3 API server (moto on loopback). moto checks no signature by default but
/// treats a request without one as anonymous and denies reads, so every request here is SigV4-signed.
@Suite("libcurl: transfers against moto's S3 server")
struct CurlSmokeTests {
    /// Deterministic, non-repeating bytes, so any misplaced byte shows.
    static func payload(_ count: Int) -> [UInt8] {
        var state: UInt32 = 2_463_534_242
        return (0..<count).map { _ in
            state ^= state << 13; state ^= state >> 17; state ^= state << 5
            return UInt8(truncatingIfNeeded: state)
        }
    }

    /// A path-style request to moto, signed with test credentials.
    static func request(_ method: String, _ s3: TestServer, _ path: String, headers: [(name: String, value: String)] = [],
                        body: [UInt8]? = nil) -> HTTPRequest {
        let signer = SigV4Signer(credentials: AWSCredentials(accessKeyId: "testing", secretAccessKey: "testing"), region: "us-east-1")
        var all = headers + [("Host", "127.0.0.1:\(s3.port)")]
        if body != nil { all.append(("Content-Type", "application/octet-stream")) }
        let payloadHash = body.map { Digest.sha256($0).hexString } ?? SigV4Signer.emptyPayloadHash
        all += signer.signedHeaders(method: method, path: path, headers: all, payloadHash: payloadHash, date: Date())
        return HTTPRequest(method: method, url: s3.endpoint + path, headers: all, body: body)
    }

    @Test("PUT an object, then GET it whole, GET a range, and HEAD it")
    func putGetRangeHead() async throws {
        try await withTestServer(try TestServer.s3()) { s3 in
            let curl = CurlTransfer()
            let object = Self.payload(300_000)

            let created = try curl.perform(Self.request("PUT", s3, "/smoke-bucket", body: [])) { _ in true }
            #expect(created.status == 200)
            let put = try curl.perform(Self.request("PUT", s3, "/smoke-bucket/a/b.bin", body: object)) { _ in true }
            #expect(put.status == 200)

            var whole: [UInt8] = []
            var chunks = 0
            let got = try curl.perform(Self.request("GET", s3, "/smoke-bucket/a/b.bin")) { chunk in
                whole.append(contentsOf: chunk)
                chunks += 1
                return true
            }
            #expect(got.status == 200)
            #expect(sameBytes(whole, object))
            #expect(chunks > 1, "a 300 kB body arrives in several chunks, handed over as they come")

            var ranged: [UInt8] = []
            var headSeenBeforeBody = false
            let partial = try curl.perform(
                Self.request("GET", s3, "/smoke-bucket/a/b.bin", headers: [("Range", "bytes=1000-1999")]),
                onHead: { head in headSeenBeforeBody = ranged.isEmpty && head.status == 206 },
                onBody: { chunk in ranged.append(contentsOf: chunk); return true })
            #expect(partial.status == 206)
            #expect(headSeenBeforeBody)
            #expect(partial.header("Content-Range") == "bytes 1000-1999/300000")
            #expect(sameBytes(ranged, object[1000..<2000]))

            let head = try curl.perform(Self.request("HEAD", s3, "/smoke-bucket/a/b.bin")) { _ in
                Issue.record("HEAD must not deliver a body")
                return true
            }
            #expect(head.status == 200)
            #expect(head.header("content-length") == "300000")
            #expect(head.header("etag") == "\"\(Digest.md5Hex(object))\"")
        }
    }

    @Test("A consumer that stops reading aborts the transfer with a typed error")
    func consumerAbort() async throws {
        try await withTestServer(try TestServer.s3()) { s3 in
            let curl = CurlTransfer()
            _ = try curl.perform(Self.request("PUT", s3, "/abort-bucket", body: [])) { _ in true }
            _ = try curl.perform(Self.request("PUT", s3, "/abort-bucket/o", body: Self.payload(1 << 20))) { _ in true }
            let error = #expect(throws: TransferError.self) {
                try curl.perform(Self.request("GET", s3, "/abort-bucket/o")) { _ in false }
            }
            #expect(error?.kind == .aborted)
        }
    }

    @Test("A closed port fails fast with a connect error")
    func refused() throws {
        // Bind then close a socket to find a port nobody listens on.
        let port = try freeLoopbackPort()
        let error = #expect(throws: TransferError.self) {
            try CurlTransfer().perform(HTTPRequest(method: "GET", url: "http://127.0.0.1:\(port)/x"),
                                       timeouts: TransferTimeouts(connect: .seconds(2))) { _ in true }
        }
        #expect(error?.kind == .connect)
    }
}
