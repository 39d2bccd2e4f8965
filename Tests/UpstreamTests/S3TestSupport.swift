import Foundation
import Support
import Testing
import TestSupport
@testable import Upstream

/// Shared pieces of the S3 client tests.
enum S3Test {
    /// moto checks no signature unless told to; any key pair works.
    static let credentials = AWSCredentials(accessKeyId: "testing", secretAccessKey: "testing")

    /// Quick retries, so fault tests take milliseconds per retry rather than seconds.
    static let fastRetry = S3RetryPolicy(maxAttempts: 4, baseDelay: .milliseconds(10), maxDelay: .milliseconds(100))

    static func client(_ server: TestServer, pathStyle: Bool = true, region: String = "eu-west-2",
                       credentials: AWSCredentials = credentials, retry: S3RetryPolicy = fastRetry,
                       timeouts: TransferTimeouts = TransferTimeouts(connect: .seconds(2), lowSpeedBytes: 1, lowSpeedWindow: .seconds(5)),
                       log: LogCapture? = nil) throws -> S3Client {
        try client(endpoint: server.endpoint, pathStyle: pathStyle, region: region, credentials: credentials,
                   retry: retry, timeouts: timeouts, log: log)
    }

    static func client(endpoint: String, pathStyle: Bool = true, region: String = "eu-west-2",
                       credentials: AWSCredentials = credentials, retry: S3RetryPolicy = fastRetry,
                       timeouts: TransferTimeouts = TransferTimeouts(connect: .seconds(2), lowSpeedBytes: 1, lowSpeedWindow: .seconds(5)),
                       log: LogCapture? = nil) throws -> S3Client {
        let configuration = S3Configuration(endpoint: URL(string: endpoint)!, region: region, pathStyle: pathStyle,
                                            timeouts: timeouts, retry: retry)
        return try S3Client(configuration: configuration, credentials: credentials, log: log?.record)
    }

    /// Deterministic bytes that differ from `CurlSmokeTests.payload` for another seed, so two
    /// versions of an object never share a prefix by accident.
    static func payload(_ count: Int, seed: UInt32 = 2_463_534_242) -> [UInt8] {
        var state = seed
        return (0..<count).map { _ in
            state ^= state << 13; state ^= state >> 17; state ^= state << 5
            return UInt8(truncatingIfNeeded: state)
        }
    }

    static func quotedMD5(_ bytes: [UInt8]) -> String { "\"\(Digest.md5Hex(bytes))\"" }

    /// What the fault proxy saw so far.
    static func proxyLog(_ proxy: TestServer) throws -> [FaultProxyRequest] {
        var body: [UInt8] = []
        let head = try CurlTransfer().perform(HTTPRequest(method: "GET", url: proxy.endpoint + "/__proxy/log")) { chunk in
            body.append(contentsOf: chunk)
            return true
        }
        guard head.status == 200 else { throw TestSetupError("fault proxy log: HTTP \(head.status)") }
        return try FaultProxyRequest.decodeLog(body)
    }

    /// Reads an object through `getObject`, recording every chunk and every `onHead` call.
    struct Read {
        var bytes: [UInt8] = []
        var chunks = 0
        var heads: [S3ObjectResponse] = []
        var bodyBeforeHead = false
    }

    @discardableResult
    static func read(_ client: S3Client, _ bucket: String, _ key: String, range: S3ByteRange? = nil,
                     into read: inout Read) throws -> S3ObjectResponse {
        try client.getObject(bucket: bucket, key: key, range: range, onHead: { head in
            read.heads.append(head)
        }, onBody: { chunk in
            if read.heads.isEmpty { read.bodyBeforeHead = true }
            read.bytes.append(contentsOf: chunk)
            read.chunks += 1
        })
    }
}

/// Collects the client's log records (the `log` hook the server bridges to swift-log).
/// `@unchecked Sendable`: `records` is only touched under `lock`.
final class LogCapture: @unchecked Sendable {
    private let lock = NSLock()
    private var records: [S3LogRecord] = []

    var all: [S3LogRecord] { lock.withLock { records } }

    func record(_ record: S3LogRecord) {
        lock.withLock { records.append(record) }
    }

    func count(_ message: String, operation: String? = nil) -> Int {
        all.filter { $0.message == message && (operation == nil || $0.metadata["s3.operation"] == operation) }.count
    }
}
