import Foundation
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Synchronization

/// Stored clips go to the socket with sendfile, as nginx sends files: no copy through user space.
///
/// Hummingbird's response body writer only carries `ByteBuffer`s, so a route cannot hand NIO a
/// `FileRegion`. Instead the route registers a ticket (an open descriptor and a byte range) and
/// writes a small marker buffer naming it; `SendFileHandler`, installed under the route and above
/// Hummingbird's HTTP/1 codec, swaps the marker for a `FileRegion` written below the codec. The
/// marker starts with 16 random bytes drawn at start-up, so no clip byte can ever look like one.
///
/// Ownership of the descriptor: the route's until the handler takes the ticket, then the
/// handler's until the kernel has sent the range (or the write failed). A ticket whose marker
/// never reached the handler (the connection died in between) is closed by `cancel` or, at the
/// latest, by the sweep of stale tickets.
final class SendFileTickets: Sendable {
    static let shared = SendFileTickets()

    struct Ticket: Sendable {
        let descriptor: Int32
        let range: Range<Int64>
        let created: ContinuousClock.Instant
    }

    private let magic: [UInt8] = (0..<16).map { _ in UInt8.random(in: 0...255) }
    private let tickets = Mutex<(all: [UInt64: Ticket], lastSweep: ContinuousClock.Instant)>(([:], .now))
    private let nextId = Atomic<UInt64>(1)
    static let staleAfter: Duration = .seconds(60)

    var markerLength: Int { magic.count + 8 }

    /// Registers `descriptor` (ownership passes to the tickets) and returns the marker to write.
    func register(descriptor: Int32, range: Range<Int64>) -> (id: UInt64, marker: ByteBuffer) {
        let id = nextId.add(1, ordering: .relaxed).oldValue
        let now = ContinuousClock.now
        let stale = tickets.withLock { state -> [Ticket] in
            state.all[id] = Ticket(descriptor: descriptor, range: range, created: now)
            // Swept at most once a second: this runs for every stored response.
            guard now - state.lastSweep > .seconds(1) else { return [] }
            state.lastSweep = now
            let old = state.all.filter { now - $0.value.created > Self.staleAfter }
            for key in old.keys { state.all[key] = nil }
            return Array(old.values)
        }
        for ticket in stale { close(ticket.descriptor) }
        var marker = ByteBuffer()
        marker.writeBytes(magic)
        marker.writeInteger(id)
        return (id, marker)
    }

    /// What a written buffer is: clip bytes, or a marker and its ticket (nil when the ticket is
    /// gone: swept as stale, so its descriptor was closed).
    enum Taken {
        case bytes
        case marker(Ticket?)
    }

    /// Removes and returns the ticket a marker names.
    func take(_ buffer: ByteBuffer) -> Taken {
        guard buffer.readableBytes == markerLength,
              buffer.getBytes(at: buffer.readerIndex, length: magic.count) == magic,
              let id = buffer.getInteger(at: buffer.readerIndex + magic.count, as: UInt64.self) else { return .bytes }
        return .marker(tickets.withLock { $0.all.removeValue(forKey: id) })
    }

    /// The route could not deliver the marker: close the descriptor if the handler never took it.
    func cancel(_ id: UInt64) {
        if let ticket = tickets.withLock({ $0.all.removeValue(forKey: id) }) { close(ticket.descriptor) }
    }

    var pending: Int { tickets.withLock { $0.all.count } }
}

/// Swaps sendfile markers for `FileRegion`s below Hummingbird's HTTP/1 codec; every other part
/// passes through untouched. One per connection.
final class SendFileHandler: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let tickets: SendFileTickets
    init(tickets: SendFileTickets) { self.tickets = tickets }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .body(let buffer) = unwrapOutboundIn(data), buffer.readableBytes == tickets.markerLength,
              case .marker(let found) = tickets.take(buffer) else {
            context.write(data, promise: promise)
            return
        }
        guard let ticket = found else {
            // Its ticket went stale waiting behind a slow transfer: the bytes it stood for cannot
            // be sent, and the marker must never go out as if it were clip bytes.
            promise?.fail(ChannelError.inappropriateOperationForState)
            context.close(promise: nil)
            return
        }
        guard let codec = try? context.pipeline.syncOperations.context(handlerType: HTTP1ToHTTPServerCodec.self) else {
            // Not the pipeline this was built for: fail the response rather than send a marker.
            Glibc.close(ticket.descriptor)
            promise?.fail(ChannelError.inappropriateOperationForState)
            context.close(promise: nil)
            return
        }
        Self.sendFile(ticket.descriptor, range: ticket.range, below: codec, promise: promise)
    }

    /// Writes `range` of the file as a `FileRegion` straight to the HTTP/1 codec's context (below
    /// the HTTPTypes conversion, which carries only buffers). Takes ownership of `descriptor`:
    /// closed once the kernel has sent the range or the write failed.
    static func sendFile(_ descriptor: Int32, range: Range<Int64>, below codec: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: descriptor)
        let sent = codec.eventLoop.makePromise(of: Void.self)
        sent.futureResult.whenComplete { _ in try? handle.close() }
        if let promise { sent.futureResult.cascade(to: promise) }
        writeRegion(of: handle, range: range, below: codec, promise: sent)
    }

    /// Writes `range` of an open file as a `FileRegion` to the codec's context; the caller owns
    /// (and closes) `file`. sendfile reads at explicit offsets, so regions may share a file.
    static func writeRegion(of file: NIOFileHandle, range: Range<Int64>, below codec: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        let region = FileRegion(fileHandle: file, readerIndex: Int(range.lowerBound), endIndex: Int(range.upperBound))
        codec.write(NIOAny(HTTPServerResponsePart.body(.fileRegion(region))), promise: promise)
    }
}
