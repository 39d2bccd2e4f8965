import Foundation

/// A byte range of an object: `first...last` inclusive, or from `first` to the end.
public struct S3ByteRange: Sendable, Equatable, CustomStringConvertible {
    public let first: Int64
    /// Inclusive; nil reads to the end of the object.
    public let last: Int64?

    public init(_ range: ClosedRange<Int64>) {
        first = range.lowerBound
        last = range.upperBound
    }

    /// From `first` to the end of the object.
    public init(from first: Int64) {
        self.first = first
        last = nil
    }

    /// The `Range` header value.
    public var description: String { "bytes=\(first)-\(last.map(String.init) ?? "")" }
}

/// The head of a GET response, handed to the consumer before the first body byte.
public struct S3ObjectResponse: Sendable {
    /// 200 (whole object) or 206 (a range).
    public let status: Int
    /// Quoted, as S3 sends it (`"d41d8cd9…"`); the same form HEAD and LIST report.
    public let etag: String
    /// Body bytes this response delivers (the length of `range`).
    public let contentLength: Int64
    /// The object's bytes delivered, nil for an empty object.
    public let range: ClosedRange<Int64>?
    /// Size of the whole object, when the response says (always for 200, and for 206 from S3).
    public let objectSize: Int64?
    public let contentType: String?
    public let lastModified: Date?
}

/// What HEAD says about an object.
public struct S3ObjectHead: Sendable, Equatable {
    public let size: Int64
    /// Quoted, as S3 sends it.
    public let etag: String
    public let lastModified: Date?
    public let contentType: String?
    /// User metadata (`x-amz-meta-*` headers), names lowercased without the prefix.
    public var metadata: [String: String] = [:]
}

/// One entry of a ListObjectsV2 result.
public struct S3ObjectSummary: Sendable, Equatable {
    public let key: String
    public let size: Int64
    /// Quoted, as S3 sends it.
    public let etag: String
    public let lastModified: Date?
}

public struct S3PutResult: Sendable {
    /// Quoted, as S3 sends it (for a single-part upload, the MD5 of the body).
    public let etag: String
}

/// One thing the client wants to say, shaped for swift-log: a constant message and the details in
/// dotted metadata keys (`s3.operation`, `s3.bucket`, `s3.key`, `s3.attempt`, `s3.status`,
/// `s3.code`, `s3.error`, `s3.delay_ms`, `s3.offset`, `s3.delivered`, `s3.duration_ms`,
/// `s3.request_id`).
/// Never holds credentials, signatures, request headers or pre-signed URLs.
public struct S3LogRecord: Sendable, CustomStringConvertible {
    public enum Level: String, Sendable { case debug, info, warning }
    public let level: Level
    public let message: String
    public let metadata: [String: String]

    public var description: String {
        "[\(level.rawValue)] \(message)" + metadata.sorted { $0.key < $1.key }.map { " \($0.key)=\($0.value)" }.joined()
    }
}
