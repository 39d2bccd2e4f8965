import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Testing
@testable import ClipProxy

/// Stands in for a socket that cannot take more bytes: holds every write until `release`.
final class StalledSocket: ChannelOutboundHandler {
    typealias OutboundIn = HTTPResponsePart
    var held: [EventLoopPromise<Void>] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        held.append(promise ?? context.eventLoop.makePromise())
    }

    func release() {
        let promises = held
        held = []
        for promise in promises { promise.succeed(()) }
    }
}

@Suite("A close waits for the responses written before it")
struct CloseAfterWritesTests {
    static func channel(limit: TimeAmount) throws -> (EmbeddedChannel, StalledSocket) {
        let socket = StalledSocket()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(socket)
        try channel.pipeline.syncOperations.addHandler(CloseAfterWrites(limit: limit))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, socket)
    }

    static func writeResponse(_ channel: EmbeddedChannel) {
        channel.write(HTTPResponsePart.head(HTTPResponse(status: .ok)), promise: nil)
        channel.write(HTTPResponsePart.body(ByteBuffer(string: "clip bytes")), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
    }

    @Test("A close (graceful shutdown, idle timeout) is held until the last response's end is written")
    func heldUntilWritten() throws {
        let (channel, socket) = try Self.channel(limit: .seconds(60))
        Self.writeResponse(channel)
        let closed = channel.close()
        channel.embeddedEventLoop.run()
        #expect(channel.isActive, "closed while the response was still queued")
        socket.release()
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
        #expect(throws: Never.self) { try closed.wait() }
    }

    @Test("A response written below the handler (the wire fast path) holds a close until it is out")
    func trackedResponse() throws {
        let (channel, _) = try Self.channel(limit: .seconds(60))
        let closeAfterWrites = try channel.pipeline.syncOperations.handler(type: CloseAfterWrites.self)
        let written = channel.embeddedEventLoop.makePromise(of: Void.self)
        closeAfterWrites.track(written.futureResult)
        let closed = channel.close()
        channel.embeddedEventLoop.run()
        #expect(channel.isActive, "closed while the response was still being written")
        written.succeed(())
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
        #expect(throws: Never.self) { try closed.wait() }
    }

    @Test("A client that stops reading holds the close no longer than the limit")
    func limited() throws {
        let (channel, socket) = try Self.channel(limit: .seconds(5))
        defer { socket.release() }  // NIO insists every promise is completed
        Self.writeResponse(channel)
        let closed = channel.close()
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
        #expect(throws: Never.self) { try closed.wait() }
    }

    @Test("A half-close (the client half-closed, so NIO closes fully) is held too, and keeps its mode")
    func halfCloseHeld() throws {
        let (channel, socket) = try Self.channel(limit: .seconds(60))
        Self.writeResponse(channel)
        let closed = channel.close(mode: .output)
        channel.embeddedEventLoop.run()
        #expect(channel.isActive, "the output closed while the response was still queued")
        socket.release()
        channel.embeddedEventLoop.run()
        #expect(throws: Never.self) { try closed.wait() }
        _ = try? channel.close().wait()  // (EmbeddedChannel closes fully on an output close)
    }

    @Test("With nothing queued the close goes through at once")
    func immediate() throws {
        let (idle, _) = try Self.channel(limit: .seconds(60))
        try idle.close().wait()
        #expect(!idle.isActive)

        let (busy, socket) = try Self.channel(limit: .seconds(60))
        Self.writeResponse(busy)
        socket.release()
        busy.embeddedEventLoop.run()
        try busy.close().wait()
        #expect(!busy.isActive)
    }
}
