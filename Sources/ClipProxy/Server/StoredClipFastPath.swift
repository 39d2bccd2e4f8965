import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Index
import NIOCore
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOHTTP1
import Synchronization

/// Stored clips answered in one event-loop turn, as nginx answers a file.
///
/// A routed request goes from the event loop into a Swift task and back, for the head and again
/// for the body; for the hottest case (a clip on the local disk, prepared within the last minute)
/// that trip is most of the cost. `StoredClipFastPath` sits in each connection's pipeline just
/// before the handler that feeds Hummingbird's router. For a GET or HEAD of `/clips/...` whose
/// answer is already known it writes the head and a sendfile of the stored bytes right away, with
/// the headers, metrics and access log of the route (the same code makes them); every other
/// request passes to the router untouched, which answers it exactly as before.
///
/// Known means: the request is one the route would accept as it stands (limits, signature, ids),
/// the clip was prepared within the last minute (`ClipPipeline.recentlyPrepared`), and the local
/// store has it whole (a lease opens the file, so eviction cannot take the bytes mid-send). Range
/// and conditional headers are decided by the route's own RFC 9110 code (`ByteRangeResponse`).
/// Anything else (a miss, a clip not prepared lately, a bad URL, `Connection: close`, a body)
/// goes to the router.
///
/// HTTP/1.1 pipelining: a request is answered here only when no earlier request of the connection
/// is still with the router; responses then leave in request order. The connection-state handler
/// in front (idle timeout, graceful shutdown) sees these requests and responses like any other.
final class StoredClipFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let routes: ClipRoutes
    private let connection: FastPathConnection
    /// Bound on `FastPathConnection.answersInFlight`.
    static let maxAnswersInFlight = 8
    /// The current request was answered here: its body parts (if any) are dropped.
    private var droppingBody = false
    private var needsFlush = false
    /// A request asked for `Connection: close`: nothing after it is read.
    private var closing = false
    /// ... and it was answered here (not by the router).
    private var closedAfterFastAnswer = false

    init(routes: ClipRoutes, connection: FastPathConnection = FastPathConnection()) {
        self.routes = routes
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Counted until its response's end is written (here, or by the router through `write`);
        // one never answered (after a close) keeps `StoredClipWirePath` out for good.
        if case .head = unwrapInboundIn(data) { connection.requestsAbove += 1 }
        guard !closing else {
            // A request after one answered here with `Connection: close`: nobody will answer it,
            // and the connection-state handler counted it, so only a close ends the connection
            // (held until the answer already written is out, by `CloseAfterWrites`).
            if closedAfterFastAnswer, case .head = unwrapInboundIn(data) { context.close(promise: nil) }
            return
        }
        switch unwrapInboundIn(data) {
        case .head(let head):
            // A client that does not read its answers gets the rest from the router, which waits
            // for the socket: at most a few answers (one descriptor each) queue per connection.
            // `requestsAbove` counts this request and any earlier one still with the router (a
            // fast answer's end is written at once).
            if connection.requestsAbove == 1, connection.answersInFlight < Self.maxAnswersInFlight, let answer = routes.storedAnswer(head) {
                droppingBody = true
                send(answer, context: context)
                // As Hummingbird does after a routed response: no more requests, output closed
                // once the response is out (a half-close, so no reset can destroy its tail).
                if head.headerFields[.connection] == "close" {
                    closing = true
                    closedAfterFastAnswer = true
                    context.flush()
                    context.close(mode: .output, promise: nil)
                }
            } else {
                droppingBody = false
                // Hummingbird reads nothing after a routed `Connection: close` either.
                if head.headerFields[.connection] == "close" { closing = true }
                context.fireChannelRead(data)
            }
        case .body:
            if !droppingBody { context.fireChannelRead(data) }
        case .end:
            if droppingBody { droppingBody = false } else { context.fireChannelRead(data) }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Answers to a burst of pipelined requests leave in one flush. (Corking the socket
        // around it, as nginx's tcp_nopush does, was measured on loopback: a quarter more
        // requests/s, but a fifth more CPU per hit; bench/results/NOTES.md.)
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { connection.requestsAbove = max(0, connection.requestsAbove - 1) }
        context.write(data, promise: promise)
    }

    /// Head, body and end, written now. For a response decided in full here the HTTPTypes
    /// conversion would only copy the same fields: the head goes to the HTTP/1 encoder as NIO's
    /// own head (the encoder must see every head: it pairs responses with request methods), and
    /// the stored bytes as `FileRegion`s (sendfile) below it. The end passes the handlers in front
    /// (the connection-state handler counts it, `CloseAfterWrites` holds closes for it).
    /// The lease ends at once and hands over its descriptor: one per answer, however many ranges,
    /// closed once the end has been written (or failed); eviction or purge from here on cannot
    /// touch what is being sent.
    private func send(_ answer: StoredClipAnswer, context: ChannelHandlerContext) {
        let (hasBytes, file) = answer.endLease()
        guard let (codec, wire) = lowerContexts(context), !hasBytes || file != nil else {
            try? file?.close()
            context.close(promise: nil)
            return
        }
        connection.answersInFlight += 1
        var headers = HTTPHeaders()
        headers.reserveCapacity(answer.head.headerFields.count)
        for field in answer.head.headerFields { headers.add(name: field.name.rawName, value: field.value) }
        let status = HTTPResponseStatus(statusCode: answer.head.status.code, reasonPhrase: answer.head.status.reasonPhrase)
        codec.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        for piece in answer.bodyPieces(file: file, allocator: context.channel.allocator) {
            wire.write(NIOAny(piece), promise: nil)
        }
        let ended = context.eventLoop.makePromise(of: Void.self)
        ended.futureResult.assumeIsolated().whenComplete { [self] _ in
            connection.answersInFlight -= 1
            try? file?.close()
        }
        context.write(wrapOutboundOut(.end(nil)), promise: ended)
        connection.requestsAbove = max(0, connection.requestsAbove - 1)
        needsFlush = true
    }

    /// The HTTPTypes codec's context (writes from it reach NIO's HTTP/1 encoder) and the
    /// encoder's (writes from it go to the socket as they are), looked up once per connection.
    private func lowerContexts(_ context: ChannelHandlerContext) -> (codec: ChannelHandlerContext, wire: ChannelHandlerContext)? {
        if lower == nil {
            let pipeline = context.pipeline.syncOperations
            if let codec = try? pipeline.context(handlerType: HTTP1ToHTTPServerCodec.self),
               let wire = try? pipeline.context(handlerType: HTTPResponseEncoder.self) {
                lower = (codec, wire)
            }
        }
        return lower
    }
    private var lower: (codec: ChannelHandlerContext, wire: ChannelHandlerContext)?

    /// Installs a `StoredClipFastPath` right after Hummingbird's connection-state handler, and
    /// a `StoredClipWirePath` in front of NIO's HTTP/1 parser, then removes itself. Hummingbird
    /// adds its extra handlers in front of the state handler; the fast path belongs behind it, so
    /// idle timeouts and graceful shutdown count its requests too. The connection is active only
    /// once its pipeline is complete, so that is when this runs.
    final class Installer: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPRequestPart
        let routes: ClipRoutes
        let wirePath: Bool
        let idleTimeout: TimeAmount
        let maxHeaderBytes: Int

        init(routes: ClipRoutes, wirePath: Bool, idleTimeout: TimeAmount, maxHeaderBytes: Int) {
            self.routes = routes
            self.wirePath = wirePath
            self.idleTimeout = idleTimeout
            self.maxHeaderBytes = maxHeaderBytes
        }

        func channelActive(context: ChannelHandlerContext) {
            let pipeline = context.pipeline.syncOperations
            let connection = FastPathConnection()
            let fastPath = StoredClipFastPath(routes: routes, connection: connection)
            if let state = try? pipeline.handler(type: HTTPConnectionStateHandler.self) {
                try? pipeline.addHandler(fastPath, position: .after(state))
            } else {
                try? pipeline.addHandler(fastPath, position: .after(self))
            }
            if wirePath {
                try? pipeline.addHandler(StoredClipWirePath(routes: routes, connection: connection, idleTimeout: idleTimeout,
                                                            maxHeaderBytes: maxHeaderBytes), position: .first)
            }
            context.fireChannelActive()
            pipeline.removeHandler(context: context, promise: nil)
        }
    }
}

/// What the fast path sends for one request.
struct StoredClipAnswer {
    let head: HTTPResponse
    let parts: [ByteRangeResponse.Part]
    let lease: ClipStore.Lease

    /// The body as NIO writes it below the HTTP/1 encoder: literal parts (multipart framing) as
    /// buffers, stored bytes as `FileRegion`s of `file` (sendfile; regions may share it).
    func bodyPieces(file: NIOFileHandle?, allocator: ByteBufferAllocator) -> [IOData] {
        parts.map { part in
            switch part {
            case .literal(let bytes):
                .byteBuffer(allocator.buffer(bytes: bytes))
            case .bytes(let range):
                .fileRegion(FileRegion(fileHandle: file!, readerIndex: Int(range.lowerBound), endIndex: Int(range.upperBound)))
            }
        }
    }

    /// Ends the lease. When the body has stored bytes the lease hands over its open file: one
    /// descriptor per answer however many ranges, for the caller to close once it is written
    /// (nil with `hasBytes` if the descriptor is gone). Eviction or purge from here on cannot
    /// touch what is being sent.
    func endLease() -> (hasBytes: Bool, file: NIOFileHandle?) {
        let hasBytes = parts.contains { if case .bytes = $0 { true } else { false } }
        let file = hasBytes ? lease.releaseKeepingDescriptor().map { NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: $0) } : nil
        lease.release()  // (no-op when the descriptor was taken)
        return (hasBytes, file)
    }
}

extension ClipRoutes {
    /// The answer to a request for a stored clip, decided without leaving the event loop, or nil
    /// when the router should answer (then nothing here has had any effect).
    func storedAnswer(_ request: HTTPRequest) -> StoredClipAnswer? {
        guard request.method == .get || request.method == .head, let target = request.path,
              let clipTarget = ClipTarget(target),
              RequestLimits<ClipRequestContext>.violation(target: target, headers: request.headerFields, maxURIBytes: pipeline.configuration.httpMaxURIBytes,
                                      maxHeaderBytes: pipeline.configuration.httpMaxHeaderBytes) == nil,
              // A request with a body is left to the router, which reads it.
              request.headerFields[.contentLength] == nil, request.headerFields[.transferEncoding] == nil,
              (try? checkSignature(path: clipTarget.path, query: clipTarget.query)) != nil,
              let clipRequest = try? validate(episode: clipTarget.episode, start: clipTarget.start, query: clipTarget.query),
              let clip = pipeline.recentlyPrepared(clipRequest),
              let lease = try? pipeline.storedLease(clip) else { return nil }
        let conditions = ByteRangeResponse.RequestConditions(method: request.method, fields: request.headerFields)
        let decision = ByteRangeResponse.decide(conditions, for: clip.representation(createdMs: lease.record.createdMs))
        var headers = responseHeaders(decision, tier: .l1)
        // What CORSMiddleware and Hummingbird add to routed responses.
        cors.apply(origin: request.headerFields[.origin], to: &headers)
        headers[.date] = CurrentHTTPDate.shared.text
        headers[.server] = ClipServer.serverName
        recordAnswer(clip, tier: .l1, status: decision.status)
        pipeline.metrics.fastPathAnswers.increment()
        pipeline.metrics.bytesServed.increment(by: Int(decision.parts.reduce(0) { total, part in
            if case .bytes(let range) = part { total + range.count } else { total }
        }))
        return StoredClipAnswer(head: HTTPResponse(status: .init(code: decision.status), headerFields: headers),
                                parts: decision.parts, lease: lease)
    }
}

/// `/clips/<episode>/<start>[?query]`, split as the router splits it. Any other shape (more or
/// fewer segments, empty ones, a fragment, an absolute URI) is nil and goes to the router.
struct ClipTarget {
    let path: String
    let episode: String
    let start: String
    let query: String?

    init?(_ target: String) {
        // One pass over the bytes: this runs for every request the fast path sees.
        let bytes = target.utf8
        guard bytes.starts(with: Self.prefix) else { return nil }
        var episodeEnd: String.Index?
        var pathEnd = target.endIndex
        for index in bytes.indices[bytes.index(bytes.startIndex, offsetBy: Self.prefix.count)...] {
            switch bytes[index] {
            case UInt8(ascii: "/"):
                guard episodeEnd == nil else { return nil }  // more than two segments
                episodeEnd = index
            case UInt8(ascii: "?"):
                pathEnd = index
            case UInt8(ascii: "#"):
                return nil
            default:
                continue
            }
            if pathEnd != target.endIndex { break }
        }
        let episodeStart = target.utf8.index(target.startIndex, offsetBy: Self.prefix.count)
        guard let episodeEnd, episodeEnd > episodeStart else { return nil }
        let startStart = target.utf8.index(after: episodeEnd)
        guard startStart < pathEnd else { return nil }
        path = String(target[..<pathEnd])
        episode = String(target[episodeStart..<episodeEnd])
        start = String(target[startStart..<pathEnd])
        query = pathEnd == target.endIndex ? nil : String(target[target.utf8.index(after: pathEnd)...])
        if query?.contains("#") == true { return nil }
    }

    private static let prefix = Array("/clips/".utf8)
}

/// The `Date` header field of the current second, formatted once a second.
final class CurrentHTTPDate: Sendable {
    static let shared = CurrentHTTPDate()
    private let cached = Mutex<(second: Int64, text: String)>((-1, ""))

    var text: String {
        let second = Int64(Date().timeIntervalSince1970)
        return cached.withLock { cached in
            if cached.second != second {
                cached = (second, ByteRangeResponse.HTTPDate.format(Date(timeIntervalSince1970: Double(second))))
            }
            return cached.text
        }
    }
}
