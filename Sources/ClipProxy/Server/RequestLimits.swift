import HTTPTypes
import Hummingbird

/// Refuses oversized requests with a clear JSON error before any work: a request target longer
/// than `http.max_uri_bytes` gets 414, header fields larger in total than `http.max_header_bytes`
/// get 431. (Clip URLs are short; anything this large is a mistake or an attack.)
struct RequestLimits<Context: RequestContext>: RouterMiddleware {
    let maxURIBytes: Int
    let maxHeaderBytes: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let target = request.head.path?.utf8.count ?? 0
        if target > maxURIBytes {
            return HTTPProblem(.uriTooLong, "uri_too_long", "the request target is \(target) bytes; at most \(maxURIBytes) are accepted").response()
        }
        // As on the wire: "name: value\r\n" per field.
        let headerBytes = request.headers.reduce(0) { $0 + $1.name.rawName.utf8.count + $1.value.utf8.count + 4 }
        if headerBytes > maxHeaderBytes {
            return HTTPProblem(.init(code: 431), "headers_too_large",
                               "the request headers are \(headerBytes) bytes; at most \(maxHeaderBytes) are accepted").response()
        }
        return try await next(request, context)
    }
}
