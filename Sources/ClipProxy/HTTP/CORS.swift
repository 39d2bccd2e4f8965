import HTTPTypes
import Hummingbird

/// Which web pages may read clips from scripts (`http.cors_origins`): `*`, or exact origins (then
/// the answer depends on the request's Origin, so `Vary: Origin`).
struct CORSPolicy: Sendable {
    let allowedOrigins: [String]

    func apply(origin: String?, to headers: inout HTTPFields) {
        if allowedOrigins == ["*"] {
            headers[.accessControlAllowOrigin] = "*"
        } else if let origin, allowedOrigins.contains(origin) {
            headers[.accessControlAllowOrigin] = origin
            headers[.vary] = "Origin"
        } else if !allowedOrigins.isEmpty {
            headers[.vary] = "Origin"
        }
        headers[.accessControlExposeHeaders] = "Content-Range, Accept-Ranges, ETag, Content-Length, Content-Location, Content-Disposition"
    }
}

/// CORS headers on every response of the routes it is added to, errors included. (Named apart
/// from Hummingbird's `CORSMiddleware`, which answers preflights itself; `/clips` answers
/// build theirs in `ClipRoutes.responseHead` for the router and the fast path alike.)
struct CrossOriginHeaders<Context: RequestContext>: RouterMiddleware {
    let policy: CORSPolicy

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as HTTPResponseError {
            response = try error.response(from: request, context: context)
        } catch {
            response = HTTPProblem(error).response()
        }
        policy.apply(origin: request.headers[.origin], to: &response.headers)
        return response
    }
}
