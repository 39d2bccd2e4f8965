import CFFmpeg
import Foundation

/// A libavformat AVIOContext whose reads and seeks are byte-range reads of a `ByteSource`.
/// Owns the context and its buffer; everything libavformat does through it is a bounded read.
final class AVIOByteReader {
    /// The position and source the C callbacks work on, reached through `opaque`.
    final class Cursor {
        let source: any ByteSource
        var position: Int64 = 0
        var failure: Error?
        init(source: any ByteSource) { self.source = source }
    }

    let context: UnsafeMutablePointer<AVIOContext>
    private let cursor: Unmanaged<Cursor>

    /// The first error the source threw (libavformat only sees a generic I/O error).
    var sourceError: Error? { cursor.takeUnretainedValue().failure }

    init(source: any ByteSource, bufferSize: Int = 32 << 10) throws {
        guard let buffer = av_malloc(bufferSize) else { throw TrimError.sourceUnavailable("out of memory") }
        let cursor = Unmanaged.passRetained(Cursor(source: source))
        guard let context = avio_alloc_context(
            buffer.assumingMemoryBound(to: UInt8.self), Int32(bufferSize), 0, cursor.toOpaque(),
            avioRead, nil, avioSeek)
        else {
            av_free(buffer)
            cursor.release()
            throw TrimError.sourceUnavailable("out of memory")
        }
        self.context = context
        self.cursor = cursor
    }

    deinit {
        // libavformat may have replaced the buffer; free whatever it holds now, then the context.
        var ctx: UnsafeMutablePointer<AVIOContext>? = context
        av_freep(&ctx!.pointee.buffer)
        avio_context_free(&ctx)
        cursor.release()
    }
}

private func avioRead(_ opaque: UnsafeMutableRawPointer?, _ buffer: UnsafeMutablePointer<UInt8>?, _ size: Int32) -> Int32 {
    guard let opaque, let buffer else { return cffmpeg_averror(EINVAL) }
    let cursor = Unmanaged<AVIOByteReader.Cursor>.fromOpaque(opaque).takeUnretainedValue()
    do {
        let bytes = try cursor.source.read(offset: cursor.position, count: Int(size))
        // libavformat treats 0 as "try again"; the end of input must be AVERROR_EOF.
        if bytes.isEmpty { return cffmpeg_averror_eof() }
        bytes.withUnsafeBytes { buffer.update(from: $0.bindMemory(to: UInt8.self).baseAddress!, count: bytes.count) }
        cursor.position += Int64(bytes.count)
        return Int32(bytes.count)
    } catch {
        if cursor.failure == nil { cursor.failure = error }
        return cffmpeg_averror(EIO)
    }
}

private func avioSeek(_ opaque: UnsafeMutableRawPointer?, _ offset: Int64, _ whence: Int32) -> Int64 {
    guard let opaque else { return Int64(cffmpeg_averror(EINVAL)) }
    let cursor = Unmanaged<AVIOByteReader.Cursor>.fromOpaque(opaque).takeUnretainedValue()
    let size = cursor.source.size
    // AVSEEK_FORCE is a hint we can ignore: every position costs the same to reach.
    switch whence & ~Int32(AVSEEK_FORCE) {
    case Int32(AVSEEK_SIZE): return size
    case SEEK_SET: cursor.position = offset
    case SEEK_CUR: cursor.position += offset
    case SEEK_END: cursor.position = size + offset
    default: return Int64(cffmpeg_averror(EINVAL))
    }
    if cursor.position < 0 { cursor.position = 0; return Int64(cffmpeg_averror(EINVAL)) }
    return cursor.position
}
