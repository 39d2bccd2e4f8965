import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Prometheus
import Synchronization

/// Each public connection's pipeline, built where Hummingbird lets a server build its own (an
/// `HTTPServerBuilder` making a `ServerChildChannel`), the way its `HTTP1Channel` builds one.
/// From the socket up:
///
/// 1. NIO's HTTP/1 codec: llhttp parses every request byte; nothing in clipproxy reads them.
/// 2. The HTTPTypes conversion (`HTTP1ToHTTPServerCodec`).
/// 2a. `ResponseTimings` (with `http.request_metrics`): first-byte and whole-response times.
/// 3. `ResponseDate`: every response's `Date`, from the clock when its head is written.
/// 4. `CloseAfterWrites`: a close waits for the responses already written.
/// 5. Hummingbird's `HTTPConnectionStateHandler`: idle timeout and graceful shutdown.
/// 6. `StoredClipFastPath` (with `http.fast_path`): stored clips answered with sendfile.
/// 7. The router, through Hummingbird's `handleHTTP`.
struct ClipHTTP1Channel: HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let responder: HTTPChannelHandler.Responder
    let routes: ClipRoutes
    let fastPath: Bool
    let idleTimeout: Duration
    /// Shutdown waits at most this for a slow client.
    let closeLimit: TimeAmount
    let decoderLimits: NIOHTTPDecoderLimitConfiguration
    /// nil with `http.request_metrics: false`.
    let latency: ResponseLatencyMetrics?
    let openConnections: Prometheus.Gauge

    init(responder: @escaping HTTPChannelHandler.Responder, routes: ClipRoutes, configuration: Configuration) {
        self.responder = responder
        self.routes = routes
        fastPath = configuration.httpFastPath
        idleTimeout = .seconds(configuration.httpIdleTimeoutS)
        // 30 s at most: within common grace periods.
        closeLimit = .seconds(Int64(min(configuration.httpIdleTimeoutS, 30)))
        var limits = NIOHTTPDecoderLimitConfiguration()
        // The decoder's hard limit protects memory; RequestLimits answers 414/431 below it.
        limits.maxHeaderFieldSize = max(64 << 10, 2 * configuration.httpMaxHeaderBytes)
        limits.maxHeaderListSize = max(64 << 10, 2 * configuration.httpMaxHeaderBytes)
        decoderLimits = limits
        latency = configuration.httpRequestMetrics ? routes.pipeline.metrics.latency : nil
        openConnections = routes.pipeline.metrics.openConnections
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        // Counted per connection, not per request, so always.
        openConnections.increment()
        channel.closeFuture.whenComplete { [openConnections] _ in openConnections.decrement() }
        return channel.eventLoop.makeCompletedFuture {
            let pipeline = channel.pipeline.syncOperations
            try pipeline.configureHTTPServerPipeline(
                withPipeliningAssistance: false,  // the async channel reads one request at a time
                withErrorHandling: false,  // Hummingbird answers parser errors
                withOutboundHeaderValidation: false,  // HTTPTypes validated the fields already
                withEncoderConfiguration: .init(),
                withDecoderLimitConfiguration: decoderLimits)
            try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            if let latency { try pipeline.addHandler(ResponseTimings(metrics: latency)) }
            try pipeline.addHandler(ResponseDate())
            try pipeline.addHandler(CloseAfterWrites(limit: closeLimit))
            try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: idleTimeout, logger: logger))
            if fastPath { try pipeline.addHandler(StoredClipFastPath(routes: routes)) }
            return try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    func handle(value asyncChannel: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: asyncChannel, logger: logger)
    }
}

/// Sets every response's `Date` as its head is written, from the clock then, so a
/// `Last-Modified` (a time already past when the answer was decided) is never later than it
/// (RFC 9110 8.8.2.1). Hummingbird's own `Date` comes from a value refreshed once a second,
/// which can lag the clock that stamped a clip just cut.
final class ResponseDate: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .head(var head) = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        head.headerFields[.date] = CurrentHTTPDate.shared.text
        context.write(wrapOutboundOut(.head(head)), promise: promise)
    }
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
