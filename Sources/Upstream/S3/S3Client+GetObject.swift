import Foundation

extension S3Client {
    /// Streams an object, or a byte range of it, to `onBody` as the bytes arrive; the object is
    /// never held in memory. Blocking: runs on the calling thread (call it from a thread pool).
    ///
    /// `onHead` is called once, before the first body byte, with the response that fixes what
    /// will be delivered (range, length, ETag). If the connection fails after N bytes, the read
    /// resumes with a new request for the rest (`Range: bytes=first+N-last`, `If-Match: <ETag>`),
    /// so `onBody` sees every byte of the range exactly once, in order. If the object changed in
    /// the meantime the read fails with `.objectChanged` instead of mixing two versions.
    ///
    /// Errors thrown by `onHead` or `onBody` stop the read and are rethrown unchanged (no retry).
    /// `ifMatch`: the ETag the caller expects; another version fails with `.objectChanged` (412)
    /// before any byte is delivered.
    /// - Returns: the same response `onHead` saw.
    @discardableResult
    public func getObject(bucket: String, key: String, range: S3ByteRange? = nil, ifMatch: String? = nil,
                          onHead: (S3ObjectResponse) throws -> Void = { _ in },
                          onBody: (UnsafeRawBufferPointer) throws -> Void) throws -> S3ObjectResponse {
        let call = Call(operation: "GetObject", bucket: bucket, key: key)
        try validate(call)
        if let range, range.first < 0 || (range.last.map { $0 < range.first } ?? false) {
            throw failure(call, .invalidRequest, "InvalidRange", "invalid byte range \(range)")
        }
        var read = ResumableRead(requested: range)
        return try withRetries(call) { _ in
            if let done = read.completed { return done }  // everything arrived before the failure
            var headers: [(name: String, value: String)] = []
            if let pinned = read.pinned, let rest = read.remainingRange {
                headers = [("Range", rest.description), ("If-Match", pinned.etag)]
                emit(.info, "s3 get resuming", call, ["s3.offset": "\(rest.first)", "s3.delivered": "\(read.delivered)"])
            } else {
                if let range { headers.append(("Range", range.description)) }
                if let ifMatch { headers.append(("If-Match", ifMatch.hasPrefix("\"") ? ifMatch : "\"\(ifMatch)\"")) }
            }

            var errorBody: [UInt8]?
            let head = try perform(call, method: "GET", headers: headers, onHead: { head in
                guard (200..<300).contains(head.status) else {
                    errorBody = []
                    return
                }
                if let first = try read.accept(head) {
                    do { try onHead(first) } catch { throw ConsumerFailure(error: error) }
                }
            }, onBody: { chunk in
                if errorBody != nil {
                    if errorBody!.count < 64 << 10 { errorBody!.append(contentsOf: chunk) }
                    return
                }
                guard read.delivered + Int64(chunk.count) <= read.pinned!.contentLength else {
                    throw S3Error(kind: .serverError, code: "UnexpectedResponse", message: "response carries more bytes than the range it announced")
                }
                do { try onBody(chunk) } catch { throw ConsumerFailure(error: error) }
                read.delivered += Int64(chunk.count)
            })
            if let errorBody { throw S3Error.response(status: head.status, head: head, body: errorBody) }
            guard let done = read.completed else {
                throw S3Error(kind: .transport, code: "Transport",
                              message: "response ended after \(read.delivered) of \(read.pinned?.contentLength ?? 0) bytes",
                              transferKind: .reset)
            }
            return done
        }
    }
}

/// The state of one streamed read across its attempts: what the first response promised (range,
/// length, ETag) and how many bytes the consumer has had.
private struct ResumableRead {
    let requested: S3ByteRange?
    /// The first successful response; later attempts must continue exactly it.
    private(set) var pinned: S3ObjectResponse?
    var delivered: Int64 = 0

    init(requested: S3ByteRange?) { self.requested = requested }

    var completed: S3ObjectResponse? {
        guard let pinned, delivered == pinned.contentLength else { return nil }
        return pinned
    }

    /// The part of the pinned range the consumer has not had yet.
    var remainingRange: S3ByteRange? {
        guard let range = pinned?.range else { return nil }
        return S3ByteRange((range.lowerBound + delivered)...range.upperBound)
    }

    /// Checks a 2xx head. On the first success it pins the response and returns it (to be handed
    /// to the consumer); on a resumed attempt it checks the response continues the pinned one.
    mutating func accept(_ head: HTTPResponseHead) throws(S3Error) -> S3ObjectResponse? {
        func unexpected(_ why: String) -> S3Error { S3Error(kind: .serverError, code: "UnexpectedResponse", message: why) }
        guard let etag = head.header("etag"), !etag.isEmpty else { throw unexpected("GET response has no ETag") }
        let contentRange = head.header("content-range").flatMap(ContentRange.init)

        if let pinned {
            guard etag == pinned.etag else {
                throw S3Error(kind: .objectChanged, code: "ObjectChanged",
                              message: "the object changed during the read (ETag \(pinned.etag) became \(etag)); \(delivered) bytes were delivered")
            }
            let expected = remainingRange!
            guard head.status == 206, let contentRange, contentRange.first == expected.first, contentRange.last == expected.last else {
                throw unexpected("resumed read asked for \(expected) and got status \(head.status) \(head.header("content-range") ?? "without Content-Range")")
            }
            return nil
        }

        let response: S3ObjectResponse
        switch head.status {
        case 200:
            guard let length = head.header("content-length").flatMap({ Int64($0) }) else {
                throw unexpected("200 response without Content-Length")
            }
            // A 200 to a ranged request carries the whole object: fine only if that is what was asked.
            if let requested, requested.first != 0 || (requested.last.map { $0 < length - 1 } ?? false) {
                throw unexpected("asked for \(requested) and got the whole object (status 200)")
            }
            response = S3ObjectResponse(status: 200, etag: etag, contentLength: length, range: length > 0 ? 0...(length - 1) : nil,
                                        objectSize: length, contentType: head.header("content-type"),
                                        lastModified: head.header("last-modified").flatMap(S3Date.parseHTTP))
        case 206:
            guard let requested, let contentRange, contentRange.first == requested.first,
                  requested.last.map({ contentRange.last <= $0 }) ?? (contentRange.size.map { contentRange.last == $0 - 1 } ?? true) else {
                throw unexpected("asked for \(requested?.description ?? "the whole object") and got \(head.header("content-range") ?? "206 without Content-Range")")
            }
            response = S3ObjectResponse(status: 206, etag: etag, contentLength: contentRange.last - contentRange.first + 1,
                                        range: contentRange.first...contentRange.last, objectSize: contentRange.size,
                                        contentType: head.header("content-type"),
                                        lastModified: head.header("last-modified").flatMap(S3Date.parseHTTP))
        default:
            throw unexpected("unexpected status \(head.status) for GET")
        }
        pinned = response
        return response
    }
}

/// `Content-Range: bytes first-last/size` (size may be `*`).
private struct ContentRange {
    let first: Int64
    let last: Int64
    let size: Int64?

    init?(_ header: String) {
        guard header.hasPrefix("bytes ") else { return nil }
        let spec = header.dropFirst(6).split(separator: "/", maxSplits: 1)
        guard spec.count == 2 else { return nil }
        let bounds = spec[0].split(separator: "-", maxSplits: 1)
        guard bounds.count == 2, let first = Int64(bounds[0]), let last = Int64(bounds[1]), first <= last else { return nil }
        self.first = first
        self.last = last
        if spec[1] == "*" { size = nil } else if let size = Int64(spec[1]), size > last { self.size = size } else { return nil }
    }
}
