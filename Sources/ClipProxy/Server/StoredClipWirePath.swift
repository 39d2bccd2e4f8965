import HTTPTypes
import NIOCore

/// The stored-clip fast path at the bottom of the pipeline: plain requests for stored clips are
/// answered from the connection's bytes, before NIO's HTTP/1 parser.
///
/// `StoredClipFastPath` answers stored clips on the event loop, but each request still costs
/// llhttp's parse, two conversions (NIO's HTTP/1 types and swift-http-types) and five handler
/// hops for its end; together that was about a third of clipproxy's user-space CPU per hit. Here
/// a request `WireRequest` reads whole (a plain `GET` or `HEAD` of `/clips/...`, nothing
/// unusual) is decided by the same `ClipRoutes.storedAnswer`, and its head, body (sendfile) and
/// completion are written at once, below everything else. Anything else, and everything after
/// it in the same read, goes up unchanged, to NIO's parser, `StoredClipFastPath` and the router.
///
/// Order and state, per connection:
/// - A request is answered here only when no request handed up is still unanswered
///   (`FastPathConnection.requestsAbove`), so responses leave in request order.
/// - What goes up is whole requests without a body (any method and target), so NIO's parser
///   ends on a request boundary; the start of a request split across reads waits here for its
///   rest. Bytes it cannot split so (a body, anything else `WireRequest` does not take) may leave
///   the parser mid-request: from then on the connection's bytes all go up. After a
///   `Connection: close` request nothing more is read.
/// - NIO's HTTP/1 encoder pairs responses with the methods of the requests its parser read; the
///   requests answered here never reach that parser, so the pairing stays right.
/// - Hummingbird's connection-state handler does not see these requests. So that it never takes
///   a busy connection for an idle one, a request is handed up (and answered by
///   `StoredClipFastPath`) at least every eighth of the idle timeout; at its quiesce event
///   (graceful shutdown) everything goes up; and `CloseAfterWrites` holds its closes until the
///   answers written here are out.
/// - At most 8 answers per connection are in flight, counting both fast paths; after that
///   requests go up, where the router waits for the socket.
final class StoredClipWirePath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private let routes: ClipRoutes
    private let connection: FastPathConnection
    private let handUpEvery: TimeAmount
    /// The longest request read here; larger ones go to NIO's parser (far below every limit).
    private let maxRequestBytes: Int
    private var handingUpAll = false
    /// A request answered here asked for `Connection: close`: nothing more is read.
    private var closing = false
    private var lastHandedUp = NIODeadline.now()
    private var needsFlush = false
    private var closeAfterWrites: CloseAfterWrites?
    /// The start of a request split across reads, kept until its rest arrives (at most
    /// `maxRequestBytes`, or `WireRequest` would call it unusual).
    private var partial: ByteBuffer?

    init(routes: ClipRoutes, connection: FastPathConnection, idleTimeout: TimeAmount, maxHeaderBytes: Int) {
        self.routes = routes
        self.connection = connection
        self.handUpEvery = .nanoseconds(idleTimeout.nanoseconds / 8)
        self.maxRequestBytes = min(8192, maxHeaderBytes / 2)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        closeAfterWrites = try? context.pipeline.syncOperations.handler(type: CloseAfterWrites.self)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if closing { return }
        if handingUpAll {
            context.fireChannelRead(data)
            return
        }
        var buffer = unwrapInboundIn(data)
        if var start = partial.take() {
            start.writeImmutableBuffer(buffer)
            buffer = start
        }
        while buffer.readableBytes > 0, connection.requestsAbove == 0,
              connection.answersInFlight < StoredClipFastPath.maxAnswersInFlight,
              NIODeadline.now() - lastHandedUp < handUpEvery,
              case .request(let wire) = WireRequest.parse(buffer, maxBytes: maxRequestBytes),
              let answer = routes.storedAnswer(wire.request) {
            buffer.moveReaderIndex(forwardBy: wire.length)
            routes.pipeline.metrics.wirePathAnswers.increment()
            guard send(answer, closing: wire.closes, context: context), !wire.closes else {
                closing = true
                return
            }
        }
        handUp(buffer, context: context)
    }

    /// Hands `buffer` to NIO's parser: its whole requests, and what follows them too unless that
    /// is the start of a request split across reads, which waits here for its rest.
    private func handUp(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        guard buffer.readableBytes > 0 else { return }
        var buffer = buffer
        let (length, closes, rest) = WireRequest.wholePrefix(buffer, maxBytes: maxRequestBytes)
        // Hummingbird reads nothing after a routed `Connection: close`; neither does this.
        if closes { closing = true }
        switch rest {
        case .incomplete? where !closes:
            partial = buffer.getSlice(at: buffer.readerIndex + length, length: buffer.readableBytes - length)
            buffer = buffer.getSlice(at: buffer.readerIndex, length: length)!
        case .unusual?, .incomplete?:
            // NIO's parser may now stop mid-request: from here on it reads everything.
            handingUpAll = true
        default:
            break
        }
        guard buffer.readableBytes > 0 else { return }
        lastHandedUp = .now()
        context.fireChannelRead(wrapInboundOut(buffer))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Graceful shutdown: from now on the connection-state handler decides, seeing every
        // request. At the end of the input, a request's start kept here goes to the parser too.
        if event is ChannelShouldQuiesceEvent || event as? ChannelEvent == .inputClosed {
            handingUpAll = true
            if let start = partial.take(), !closing { context.fireChannelRead(wrapInboundOut(start)) }
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Head, body and the answer's end, written now below every other handler. The lease hands
    /// over its descriptor (one per answer, closed once the last byte is written or failed).
    /// False when the answer could not be sent (its descriptor is gone): the connection closes,
    /// after the answers already written (the close goes through `CloseAfterWrites`).
    private func send(_ answer: StoredClipAnswer, closing: Bool, context: ChannelHandlerContext) -> Bool {
        let (hasBytes, file) = answer.endLease()
        guard !hasBytes || file != nil else {
            context.pipeline.close(promise: nil)
            return false
        }
        connection.answersInFlight += 1
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenComplete { [self] _ in
            connection.answersInFlight -= 1
            try? file?.close()
            if closing { context.close(mode: .output, promise: nil) }
        }
        closeAfterWrites?.track(written.futureResult)
        var head = context.channel.allocator.buffer(capacity: 512)
        head.writeHTTP1ResponseHead(answer.head)
        let body = answer.bodyPieces(file: file, allocator: context.channel.allocator)
        context.write(wrapOutboundOut(.byteBuffer(head)), promise: body.isEmpty ? written : nil)
        for (index, piece) in body.enumerated() {
            context.write(wrapOutboundOut(piece), promise: index == body.count - 1 ? written : nil)
        }
        needsFlush = true
        if closing { context.flush() }
        return true
    }
}

/// What the two fast paths of one connection share.
final class FastPathConnection {
    /// Requests NIO's parser has read whose response's end has not been written yet.
    var requestsAbove = 0
    /// Answers of either fast path whose last byte has not reached the socket yet. Bounded, so a
    /// client that pipelines without reading holds at most 8 descriptors per connection; further
    /// requests go to the router, which waits for the socket.
    var answersInFlight = 0
}

extension ByteBuffer {
    /// An HTTP/1.1 response head as NIO's encoder writes it: status line, each field as given
    /// (name case kept), blank line.
    mutating func writeHTTP1ResponseHead(_ response: HTTPResponse) {
        writeStaticString("HTTP/1.1 ")
        let code = response.status.code
        writeInteger(UInt8(ascii: "0") + UInt8(code / 100 % 10))
        writeInteger(UInt8(ascii: "0") + UInt8(code / 10 % 10))
        writeInteger(UInt8(ascii: "0") + UInt8(code % 10))
        writeStaticString(" ")
        writeString(response.status.reasonPhrase)
        writeStaticString("\r\n")
        for field in response.headerFields {
            writeString(field.name.rawName)
            writeStaticString(": ")
            writeString(field.value)
            writeStaticString("\r\n")
        }
        writeStaticString("\r\n")
    }
}
