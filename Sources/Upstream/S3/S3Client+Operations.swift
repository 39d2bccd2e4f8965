import Foundation
import Support

extension S3Client {
    /// Size, ETag, Last-Modified and Content-Type of an object. A missing object is `.notFound`
    /// (HEAD responses have no body, so the code is `NotFound`). Blocking: call from a thread pool.
    public func headObject(bucket: String, key: String) throws -> S3ObjectHead {
        let call = Call(operation: "HeadObject", bucket: bucket, key: key)
        try validate(call)
        return try withRetries(call) { _ in
            let (head, _) = try collect(call, method: "HEAD")
            guard let size = head.header("content-length").flatMap({ Int64($0) }), let etag = head.header("etag") else {
                throw S3Error(kind: .serverError, code: "UnexpectedResponse", message: "HEAD response without Content-Length or ETag")
            }
            var result = S3ObjectHead(size: size, etag: etag, lastModified: head.header("last-modified").flatMap(S3Date.parseHTTP),
                                      contentType: head.header("content-type"))
            for (name, value) in head.headers where name.hasPrefix("x-amz-meta-") {
                result.metadata[String(name.dropFirst("x-amz-meta-".count))] = value
            }
            return result
        }
    }

    /// Succeeds when the bucket exists and these credentials may use it (readiness checks).
    /// Blocking: call from a thread pool.
    /// Deletes an object; true when it existed. S3 answers 204 either way, so a HEAD first tells
    /// which (the count is for people; a race in between only makes it off by one).
    @discardableResult
    public func deleteObject(bucket: String, key: String) throws -> Bool {
        let existed: Bool
        do { _ = try headObject(bucket: bucket, key: key); existed = true } catch let error as S3Error where error.kind == .notFound { existed = false }
        let call = Call(operation: "DeleteObject", bucket: bucket, key: key)
        try validate(call)
        try withRetries(call) { _ in _ = try collect(call, method: "DELETE") }
        return existed
    }

    public func headBucket(_ bucket: String) throws {
        let call = Call(operation: "HeadBucket", bucket: bucket, key: nil)
        try validate(call)
        _ = try withRetries(call) { _ in try collect(call, method: "HEAD") }
    }

    /// Every object whose key starts with `prefix`, in key order, following continuation tokens
    /// across pages (S3 returns at most 1,000 keys per page; `pageSize` asks for fewer).
    /// Each page is retried on its own. Keys come back as XML text (no `encoding-type=url`), so a
    /// key with control characters that XML 1.0 cannot carry would fail the parse.
    /// Blocking: call from a thread pool.
    public func listObjectsV2(bucket: String, prefix: String = "", pageSize: Int? = nil) throws -> [S3ObjectSummary] {
        let call = Call(operation: "ListObjectsV2", bucket: bucket, key: nil)
        try validate(call)
        var objects: [S3ObjectSummary] = []
        var token: String?
        repeat {
            var query: [(String, String)] = [("list-type", "2")]
            if !prefix.isEmpty { query.append(("prefix", prefix)) }
            if let pageSize { query.append(("max-keys", String(pageSize))) }
            if let token { query.append(("continuation-token", token)) }
            let page = try withRetries(call) { _ in
                let (_, body) = try collect(call, method: "GET", query: query)
                return try Self.parseListPage(body)
            }
            objects += page.objects
            guard page.truncated else { break }
            guard let next = page.nextToken, !next.isEmpty, next != token else {
                throw failure(call, .serverError, "UnexpectedResponse", "truncated listing without a new continuation token")
            }
            token = next
        } while true
        return objects
    }

    static func parseListPage(_ body: [UInt8]) throws(S3Error) -> (objects: [S3ObjectSummary], truncated: Bool, nextToken: String?) {
        guard let root = S3XML.parse(body), root.name == "ListBucketResult" else {
            throw S3Error(kind: .serverError, code: "UnexpectedResponse", message: "ListObjectsV2 response is not a ListBucketResult document")
        }
        var objects: [S3ObjectSummary] = []
        for entry in root.children("Contents") {
            guard let key = entry.childText("Key"), let size = entry.childText("Size").flatMap({ Int64($0) }) else {
                throw S3Error(kind: .serverError, code: "UnexpectedResponse", message: "ListObjectsV2 entry without Key or Size")
            }
            objects.append(S3ObjectSummary(key: key, size: size, etag: entry.childText("ETag") ?? "",
                                           lastModified: entry.childText("LastModified").flatMap(S3Date.parseISO8601)))
        }
        let truncated = root.childText("IsTruncated") == "true"
        return (objects, truncated, root.childText("NextContinuationToken"))
    }

    /// Uploads `body` as the object (replacing it). The payload's SHA-256 is signed, so S3 rejects
    /// a body damaged in transit. Retried like every idempotent request. Blocking.
    @discardableResult
    public func putObject(bucket: String, key: String, body: [UInt8], contentType: String? = nil,
                          metadata: [String: String] = [:]) throws -> S3PutResult {
        try put(Call(operation: "PutObject", bucket: bucket, key: key), body: .bytes(body),
                payloadHash: Digest.sha256(body).hexString, contentType: contentType, metadata: metadata)
    }

    /// Uploads the file at `path`, streamed from disk through libcurl's read callback (never
    /// loaded whole). The file is read twice: once to hash it for the signature, once to send
    /// it (again from the start on a retry); if it changes in between, S3 rejects the upload
    /// (`XAmzContentSHA256Mismatch`) rather than store something else. Blocking.
    @discardableResult
    public func putObject(bucket: String, key: String, fileAt path: String, contentType: String? = nil,
                          metadata: [String: String] = [:]) throws -> S3PutResult {
        let call = Call(operation: "PutObject", bucket: bucket, key: key)
        let (length, hash) = try Self.hashFile(path, call: call, failure: failure)
        return try put(call, body: .file(path: path, length: length), payloadHash: hash, contentType: contentType, metadata: metadata)
    }

    /// `metadata` becomes `x-amz-meta-<name>` headers (signed with the request).
    private func put(_ call: Call, body: HTTPRequestBody, payloadHash: String, contentType: String?,
                     metadata: [String: String] = [:]) throws -> S3PutResult {
        try validate(call)
        var headers: [(name: String, value: String)] = contentType.map { [("Content-Type", $0)] } ?? []
        for (name, value) in metadata.sorted(by: { $0.key < $1.key }) { headers.append(("x-amz-meta-\(name.lowercased())", value)) }
        return try withRetries(call) { _ in
            let (head, _) = try collect(call, method: "PUT", headers: headers, body: body, payloadHash: payloadHash)
            return S3PutResult(etag: head.header("etag") ?? "")
        }
    }

    /// Length and SHA-256 (hex) of a file, read in 1 MiB pieces.
    private static func hashFile(_ path: String, call: Call,
                                 failure: (Call, S3Error.Kind, String, String) -> S3Error) throws(S3Error) -> (Int64, String) {
        let fd = Posix.openForReading(path)
        guard fd >= 0 else {
            throw failure(call, .invalidRequest, "UploadSourceUnreadable", "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var hasher = SHA256Hasher()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var length: Int64 = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else {
                throw failure(call, .invalidRequest, "UploadSourceUnreadable", "reading \(path) failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            hasher.update(buffer[0..<n])
            length += Int64(n)
        }
        return (length, hasher.finalize().hexString)
    }

    /// Creates a bucket in the configured region (for tests and the demo). Returns false when it
    /// already exists and belongs to these credentials (`BucketAlreadyOwnedByYou`). Blocking.
    @discardableResult
    public func createBucket(_ bucket: String) throws -> Bool {
        let call = Call(operation: "CreateBucket", bucket: bucket, key: nil)
        try validate(call)
        // us-east-1 is the default location and must not be named; every other region must be.
        let body: [UInt8] = configuration.region == "us-east-1" ? [] : Array((
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
            + "<LocationConstraint>\(configuration.region)</LocationConstraint></CreateBucketConfiguration>").utf8)
        do {
            return try withRetries(call) { _ in
                _ = try collect(call, method: "PUT", headers: body.isEmpty ? [] : [("Content-Type", "application/xml")],
                                body: .bytes(body), payloadHash: Digest.sha256(body).hexString)
                return true
            }
        } catch let error as S3Error where error.code == "BucketAlreadyOwnedByYou" {
            return false
        }
    }

    /// A pre-signed GET URL (SigV4 query signing, `UNSIGNED-PAYLOAD`) that anyone can fetch
    /// for `expires` seconds (1…604800) from `now`. The URL carries the session token when the
    /// credentials have one; never log it. Pure computation, no request is sent.
    public func presignedGetURL(bucket: String, key: String, expires: Int, now: Date = Date()) throws(S3Error) -> String {
        let call = Call(operation: "PresignGetObject", bucket: bucket, key: key)
        try validate(call)
        guard SigV4Signer.expiryRange.contains(expires) else {
            throw failure(call, .invalidRequest, "InvalidExpires",
                          "pre-signed URLs expire after 1 to 604800 seconds, got \(expires)")
        }
        let (base, host, path) = address(bucket: bucket, key: key)
        return try signer().presignedURL(baseURL: base, host: host, path: path, expires: expires, date: now)
    }
}
