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

/// The one way a stored clip leaves the server: head and body written in one event-loop turn,
/// the bytes as `FileRegion`s (sendfile), as nginx answers a file.
///
/// It sits in each connection's pipeline behind NIO's HTTP/1 parser (llhttp reads every byte) and
/// Hummingbird's connection-state handler (idle timeout, graceful shutdown), in front of the
/// router (`ClipHTTP1Channel` builds that pipeline). For a GET or HEAD of `/clips/...` whose
/// answer is already known it writes the answer right away; every other request passes to the
/// router untouched. Known means: the request is one the route would accept as it stands
/// (limits, signature, ids), the clip was prepared within the last minute
/// (`ClipPipeline.recentlyPrepared`), and the local store has it whole (a lease opens the file, so
/// eviction cannot take the bytes mid-send). Status and headers come from `ClipRoutes.responseHead`,
/// the function that makes them for routed answers too; Range and conditionals are decided by
/// `ByteRangeResponse`.
///
/// HTTP/1.1 pipelining: a request is answered here only when no earlier request of the
/// connection is still with the router; responses then leave in request order.
final class StoredClipFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let routes: ClipRoutes
    /// Requests read whose response's end has not been written yet (this one included).
    private var requestsInFlight = 0
    /// Answers written here whose last byte has not reached the socket yet. Bounded, so a client
    /// that pipelines without reading holds at most 8 descriptors; further requests go to the
    /// router, which waits for the socket.
    private var answersInFlight = 0
    static let maxAnswersInFlight = 8
    /// The current request was answered here: its body parts (if any) are dropped.
    private var droppingBody = false
    private var needsFlush = false
    /// A request asked for `Connection: close`: nothing after it is read.
    private var closing = false
    /// ... and it was answered here (not by the router).
    private var closedAfterFastAnswer = false

    init(routes: ClipRoutes) { self.routes = routes }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) { requestsInFlight += 1 }
        guard !closing else {
            // A request after one answered here with `Connection: close`: nobody will answer it,
            // and the connection-state handler counted it, so only a close ends the connection
            // (held until the answer already written is out, by `CloseAfterWrites`).
            if closedAfterFastAnswer, case .head = unwrapInboundIn(data) { context.close(promise: nil) }
            return
        }
        switch unwrapInboundIn(data) {
        case .head(let head):
            // Decided exactly as Hummingbird's handler decides it for routed requests, so a
            // connection ends the same way whichever answers (llhttp frames what follows either way).
            let wantsClose = head.headerFields[.connection] == "close"
            if requestsInFlight == 1, answersInFlight < Self.maxAnswersInFlight, let answer = routes.storedAnswer(head) {
                droppingBody = true
                send(answer, context: context)
                // As Hummingbird does after a routed response: no more requests, output closed
                // once the response is out (a half-close, so no reset can destroy its tail).
                if wantsClose {
                    closing = true
                    closedAfterFastAnswer = true
                    context.flush()
                    context.close(mode: .output, promise: nil)
                }
            } else {
                droppingBody = false
                // Hummingbird reads nothing after a routed `Connection: close` either.
                if wantsClose { closing = true }
                context.fireChannelRead(data)
            }
        case .body:
            if !droppingBody { context.fireChannelRead(data) }
        case .end:
            if droppingBody { droppingBody = false } else { context.fireChannelRead(data) }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Answers to a burst of pipelined requests leave in one flush.
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { requestsInFlight = max(0, requestsInFlight - 1) }
        context.write(data, promise: promise)
    }

    /// Head, body and end, written now. Head and end pass the handlers in front like a routed
    /// response's (the connection-state handler pairs them with requests, `CloseAfterWrites`
    /// holds closes for them); the stored bytes go as `FileRegion`s to the HTTPTypes codec's
    /// context, below the conversion that carries only buffers, in the same turn, so in order.
    /// The lease ends at once and hands over its descriptor: one per answer, however many
    /// ranges, closed once the end has been written (or failed); eviction or purge from here on
    /// cannot touch what is being sent.
    private func send(_ answer: StoredClipAnswer, context: ChannelHandlerContext) {
        let (hasBytes, file) = answer.endLease()
        guard let codec = codecContext(context), !hasBytes || file != nil else {
            try? file?.close()
            context.close(promise: nil)
            return
        }
        answersInFlight += 1
        context.write(wrapOutboundOut(.head(answer.head)), promise: nil)
        for piece in answer.bodyPieces(file: file, allocator: context.channel.allocator) {
            codec.write(NIOAny(HTTPServerResponsePart.body(piece)), promise: nil)
        }
        let ended = context.eventLoop.makePromise(of: Void.self)
        ended.futureResult.assumeIsolated().whenComplete { [self] _ in
            answersInFlight -= 1
            try? file?.close()
        }
        write(context: context, data: wrapOutboundOut(.end(nil)), promise: ended)
        needsFlush = true
    }

    /// The HTTPTypes codec's context: writes from it reach NIO's HTTP/1 encoder. Looked up once per connection.
    private func codecContext(_ context: ChannelHandlerContext) -> ChannelHandlerContext? {
        if codec == nil { codec = try? context.pipeline.syncOperations.context(handlerType: HTTP1ToHTTPServerCodec.self) }
        return codec
    }
    private var codec: ChannelHandlerContext?
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
              !clipRequest.download,  // a tagged file: the router puts the tag in front
              let clip = pipeline.recentlyPrepared(clipRequest),
              let lease = try? pipeline.storedLease(clip) else { return nil }
        let conditions = ByteRangeResponse.RequestConditions(method: request.method, fields: request.headerFields)
        let decision = ByteRangeResponse.decide(conditions, for: clip.representation(createdMs: lease.record.createdMs))
        let head = responseHead(decision, tier: .l1, origin: request.headerFields[.origin],
                                location: contentLocation(of: clip, asked: clipRequest, query: clipTarget.query))
        recordAnswer(clip, tier: .l1, status: decision.status)
        pipeline.metrics.fastPathAnswers.increment()
        pipeline.metrics.bytesServed.increment(by: Int(decision.parts.reduce(0) { total, part in
            if case .bytes(let range) = part { total + range.count } else { total }
        }))
        return StoredClipAnswer(head: head, parts: decision.parts, lease: lease)
    }
}

/// `/clips/<episode>/<start>[?query]`, read with Hummingbird's own `URI` (what the router routes
/// on), so the fast path never reads a target differently. Any other shape (more or fewer
/// segments, empty ones) is nil and goes to the router.
struct ClipTarget {
    let path: String
    let episode: String
    let start: String
    let query: String?

    init?(_ target: String) {
        let uri = URI(target)
        let segments = uri.path.split(separator: "/", omittingEmptySubsequences: false)
        guard segments.count == 4, segments[0].isEmpty, segments[1] == "clips", !segments[2].isEmpty, !segments[3].isEmpty else { return nil }
        path = uri.path
        episode = String(segments[2])
        start = String(segments[3])
        query = uri.query
    }
}
