import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Trim
import Upstream

/// An error as the client sees it: a status and a JSON body `{"error", "detail"}` a person can act on.
struct HTTPProblem: Error {
    let status: HTTPResponse.Status
    let error: String
    let detail: String
    var retryAfter: Int?
    /// When set, `detail` is sent as this list (FastAPI's validation errors) instead of the text.
    var issues: [ValidationIssue] = []
    /// Set for an unexpected error: the id its log line carries.
    var requestId: String?
    static let logger = Logger(label: "clipproxy")

    init(_ status: HTTPResponse.Status, _ error: String, _ detail: String, retryAfter: Int? = nil) {
        self.status = status
        self.error = error
        self.detail = detail
        self.retryAfter = retryAfter
    }

    /// Maps module errors to statuses. Only this type decides HTTP statuses.
    init(_ failure: any Error) {
        switch failure {
        case let problem as HTTPProblem: self = problem
        case let error as CatalogError:
            switch error {
            case .notFound: self.init(.notFound, "not_found", error.description)
            case .unavailable: self.init(.serviceUnavailable, "catalog_unavailable", error.description, retryAfter: 5)
            case .invalidData: self.init(.badGateway, "catalog_error", error.description)
            }
        case let error as TrimError:
            switch error {
            case .windowOutsideAudio: self.init(.init(code: 422), "window_outside_episode", error.description)
            case .unsupportedFormat, .corrupt, .truncatedSource, .badFrameIndex: self.init(.badGateway, "bad_source_audio", error.description)
            case .sourceUnavailable: self.init(.badGateway, "source_unavailable", error.description)
            }
        case is ServiceError: self.init(.serviceUnavailable, "overloaded", "\(failure)", retryAfter: 1)
        case let error as S3Error:
            // A source or clip-bucket read refused before any byte was sent.
            switch error.kind {
            case .notFound: self.init(.notFound, "no_source_audio", "the episode's source audio is not in the source bucket: \(error)")
            case .throttled: self.init(.serviceUnavailable, "source_throttled", error.description, retryAfter: 1)
            case .objectChanged: self.init(.serviceUnavailable, "source_changed", "the source audio is being replaced; retry in a second", retryAfter: 1)
            case .transport where error.transferKind == .timeout: self.init(.gatewayTimeout, "source_timeout", error.description)
            case .denied, .serverError, .transport, .invalidRequest: self.init(.badGateway, "source_unavailable", error.description)
            case .credentialsUnavailable:
                // The cause (each credential source and why it failed) is in the log, not in the answer.
                Self.logger.warning("no valid AWS credentials", metadata: ["error": "\(error.message)"])
                self.init(.serviceUnavailable, "source_unavailable",
                          "clipproxy has no valid AWS credentials right now (its credential source is failing); retry shortly", retryAfter: 5)
            }
        case is SourceChangedError:
            self.init(.serviceUnavailable, "source_changed", "the source audio is being replaced; retry in a second", retryAfter: 1)
        default:
            // What went wrong stays in the log (paths, hosts, internals); the client gets an id to quote.
            let requestId = UInt64.random(in: 0...UInt64.max).hexPadded
            Self.logger.error("unexpected error", metadata: ["request.id": "\(requestId)", "error": "\(failure)"])
            self.init(.internalServerError, "internal_error",
                      "something went wrong inside clipproxy; its log has the details under request id \(requestId)")
            self.requestId = requestId
        }
    }

    func response() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        let detailValue: Any = issues.isEmpty ? detail : issues.map(\.json)
        var fields: [String: Any] = ["error": error, "detail": detailValue]
        if let requestId { fields["request_id"] = requestId }
        let body = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}

extension UInt64 {
    /// 16 lowercase hex digits.
    var hexPadded: String {
        let digits = String(self, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
