import HTTPTypes
import Hummingbird

/// Refuses oversized requests with a clear JSON error before any work: a request target longer
/// than `http.max_uri_bytes` gets 414, header fields larger in total than `http.max_header_bytes`
/// get 431. (Clip URLs are short; anything this large is a mistake or an attack.)
struct RequestLimits<Context: RequestContext>: RouterMiddleware {
    let maxURIBytes: Int
    let maxHeaderBytes: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let problem = Self.violation(target: request.head.path ?? "", headers: request.headers,
                                        maxURIBytes: maxURIBytes, maxHeaderBytes: maxHeaderBytes) {
            return problem.response()
        }
        return try await next(request, context)
    }

    /// The error for a request over either limit; nil within them.
    static func violation(target: String, headers: HTTPFields, maxURIBytes: Int, maxHeaderBytes: Int) -> HTTPProblem? {
        let targetBytes = target.utf8.count
        if targetBytes > maxURIBytes {
            return HTTPProblem(.uriTooLong, "uri_too_long", "the request target is \(targetBytes) bytes; at most \(maxURIBytes) are accepted")
        }
        // As on the wire: "name: value\r\n" per field.
        let headerBytes = headers.reduce(0) { $0 + $1.name.rawName.utf8.count + $1.value.utf8.count + 4 }
        if headerBytes > maxHeaderBytes {
            return HTTPProblem(.init(code: 431), "headers_too_large",
                               "the request headers are \(headerBytes) bytes; at most \(maxHeaderBytes) are accepted")
        }
        return nil
    }
}

/// Requests no route answers get JSON errors like every other error: 405 with `Allow` when the
/// path exists but not for this method, else 404.
struct UnroutedAsJSON<Context: RequestContext>: RouterMiddleware {
    /// The methods each path shape accepts (a `*` segment matches any one segment).
    let routes: [KnownRoutes.Route]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            let segments = request.uri.path.split(separator: "/")
            if let route = routes.first(where: { route in
                route.pattern.count == segments.count && zip(route.pattern, segments).allSatisfy { $0 == "*" || $0 == $1 }
            }) {
                var response = HTTPProblem(.methodNotAllowed, "method_not_allowed", "\(request.method) is not supported here; use \(route.methods)").response()
                response.headers[.allow] = route.methods
                return response
            }
            return HTTPProblem(.notFound, "no_such_endpoint", "no endpoint at \(request.uri.path); see openapi.yaml for what this server offers").response()
        }
    }
}

/// The paths each listener answers, for `UnroutedAsJSON`'s 405 and 404.
enum KnownRoutes {
    typealias Route = (pattern: [Substring], methods: String)

    /// The public port's paths. `/admin/...` is not among them: it is answered only on the admin listener.
    static func publicPort(metrics: Bool) -> [Route] {
        [
            (["clips", "*", "*"], "GET, HEAD, OPTIONS"), (["api", "v1", "audio_clips", "*"], "GET"),
            (["api", "v1", "episodes"], "GET"), (["api", "v1", "search"], "GET"),
            (["healthz"], "GET"), (["readyz"], "GET"), ([], "GET"),
        ] + (metrics ? [(["metrics"], "GET")] : [])
    }

    /// The admin listener's paths.
    static var adminListener: [Route] { [(["admin", "purge", "*"], "POST"), (["healthz"], "GET"), (["metrics"], "GET")] }
}
