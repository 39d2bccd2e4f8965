import NIOCore
import NIOHTTPTypes

/// A close waits for the responses already written to reach the socket.
///
/// NIO fails writes still queued when a channel closes. Hummingbird's connection-state handler
/// closes a keep-alive connection on graceful shutdown (at once when it thinks the connection
/// idle, else right after the last response's end was written) and on idle timeout; a response
/// whose end was written is not yet sent, though: a sendfile of a clip to a slow client can have
/// most of its bytes still queued. Without this, SIGTERM could cut such a transfer short.
///
/// A close (full, or of the output: Hummingbird half-closes when the client did, and NIO turns
/// that into a full close once input is shut) is held until every response end written before
/// it has been written to the socket, or `limit` passed (a client that stopped reading must not
/// hold a shutdown forever).
final class CloseAfterWrites: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let limit: TimeAmount
    private var unfinishedResponses = 0
    private var heldClose: EventLoopPromise<Void>?
    private var heldMode: CloseMode = .output
    private var holding = false

    init(limit: TimeAmount) { self.limit = limit }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        let written = promise ?? context.eventLoop.makePromise(of: Void.self)
        track(written.futureResult)
        context.write(data, promise: written)
    }

    /// Counts a response until `written` (its end's write) completes.
    func track(_ written: EventLoopFuture<Void>) {
        unfinishedResponses += 1
        written.assumeIsolated().whenComplete { [self] _ in
            unfinishedResponses -= 1
            if unfinishedResponses == 0, holding, let context { closeNow(context) }
        }
    }
    private var context: ChannelHandlerContext?
    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode != .input, unfinishedResponses > 0 else {
            context.close(mode: mode, promise: promise)
            return
        }
        if mode == .all { heldMode = .all }
        if let promise {
            if let held = heldClose { held.futureResult.cascade(to: promise) } else { heldClose = promise }
        }
        guard !holding else { return }
        holding = true
        context.flush()
        context.eventLoop.assumeIsolated().scheduleTask(in: limit) { [self] in
            if holding { closeNow(context) }
        }
    }

    private func closeNow(_ context: ChannelHandlerContext) {
        holding = false
        let (promise, mode) = (heldClose, heldMode)
        heldClose = nil
        heldMode = .output
        context.close(mode: mode, promise: promise)
    }
}
