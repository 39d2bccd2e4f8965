import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Times every answer of a timed route (`TimedRoute`) as the listener sees it, whichever part of
/// the server answered (the router or `StoredClipFastPath`): from the request's head being read
/// to the response's head being written (first byte), and to its end reaching the socket
/// (whole). It sits in each public connection's pipeline just above the HTTP/1 conversion, so
/// every head and end passes it. The tier comes from the answer's own `X-Clip-Tier` field.
///
/// Cost per request: three clock reads, an array append and removal, a field lookup and two
/// histogram records; `http.request_metrics: false` leaves this handler out of the pipeline.
final class ResponseTimings: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let metrics: ResponseLatencyMetrics
    /// Requests read and not answered to the end yet, oldest first (HTTP/1.1 pipelining answers
    /// in order): when each was read, its route, and (once its head went out) its histograms.
    private var pending = CircularBuffer<(started: NIODeadline, route: TimedRoute?, pair: ResponseLatencyMetrics.Pair?)>(initialCapacity: 2)

    init(metrics: ResponseLatencyMetrics) { self.metrics = metrics }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            pending.append((NIODeadline.now(), head.path.flatMap(TimedRoute.init(target:)), nil))
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200:
            if let first = pending.first, let route = first.route {
                let pair = metrics.pair(route: route, status: head.status.code,
                                        tier: route == .clips ? head.headerFields[ClipRoutes.clipTierField] : nil)
                pair.firstByte.record(.nanoseconds(NIODeadline.now().uptimeNanoseconds - first.started.uptimeNanoseconds))
                pending[pending.startIndex].pair = pair
            }
            context.write(data, promise: promise)
        case .end:
            guard let answered = pending.popFirst(), let pair = answered.pair else {
                context.write(data, promise: promise)
                return
            }
            // Whole: once the end (and so everything before it) has been written to the socket.
            let written = promise ?? context.eventLoop.makePromise(of: Void.self)
            written.futureResult.whenSuccess {
                pair.whole.record(.nanoseconds(NIODeadline.now().uptimeNanoseconds - answered.started.uptimeNanoseconds))
            }
            context.write(data, promise: written)
        default:
            context.write(data, promise: promise)
        }
    }
}
