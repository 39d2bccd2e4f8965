import CFFmpeg
import Foundation

/// What libavformat says a source is.
public struct FormatProbe: Sendable, Equatable, Codable {
    /// Demuxer name, e.g. "mp3".
    public var container: String
    /// Codec name of the first audio stream, e.g. "mp3".
    public var codec: String
    public var sampleRate: Int
    public var channels: Int
    /// Duration as libavformat estimates it (from a Xing header, or from size and bitrate).
    public var durationMs: Int64?
    public var bitRate: Int64?
}

extension FormatProbe {
    /// Opens `source` with libavformat through byte-range reads and describes its first audio stream.
    /// Blocking: call it off the event loop.
    public static func probe(_ source: any ByteSource, probeBytes: Int = 64 << 10) throws -> FormatProbe {
        _ = quietLibav
        let reader = try AVIOByteReader(source: source)
        guard var format = avformat_alloc_context() else { throw TrimError.sourceUnavailable("out of memory") }
        format.pointee.pb = reader.context
        format.pointee.flags |= AVFMT_FLAG_CUSTOM_IO
        // Identification needs a few frames, not libavformat's default megabytes.
        format.pointee.probesize = Int64(probeBytes)
        format.pointee.format_probesize = Int32(probeBytes)
        var formatOptional: UnsafeMutablePointer<AVFormatContext>? = format
        let openResult = avformat_open_input(&formatOptional, nil, nil, nil)
        guard openResult >= 0, let opened = formatOptional else {
            // avformat_open_input frees the context on failure.
            if let error = reader.sourceError { throw error }
            throw TrimError.unsupportedFormat("libavformat cannot identify the source (\(averrorText(openResult)))")
        }
        format = opened
        defer { avformat_close_input(&formatOptional) }

        let infoResult = avformat_find_stream_info(format, nil)
        if let error = reader.sourceError { throw error }
        guard infoResult >= 0 else {
            throw TrimError.corrupt("libavformat found no readable stream (\(averrorText(infoResult)))")
        }
        let streams = UnsafeBufferPointer(start: format.pointee.streams, count: Int(format.pointee.nb_streams))
        guard let audio = streams.first(where: { $0?.pointee.codecpar.pointee.codec_type == AVMEDIA_TYPE_AUDIO }),
              let parameters = audio?.pointee.codecpar.pointee
        else { throw TrimError.unsupportedFormat("no audio stream") }

        let duration = format.pointee.duration
        return FormatProbe(
            container: String(cString: format.pointee.iformat.pointee.name),
            codec: String(cString: avcodec_get_name(parameters.codec_id)),
            sampleRate: Int(parameters.sample_rate),
            channels: Int(parameters.ch_layout.nb_channels),
            durationMs: duration == cffmpeg_nopts_value() || duration < 0 ? nil : duration / 1000,
            bitRate: parameters.bit_rate > 0 ? parameters.bit_rate : nil)
    }
}

/// libav* would print to stderr; the server logs through swift-log instead.
private let quietLibav: Void = av_log_set_level(AV_LOG_QUIET)

/// libavutil's text for an error code (the av_err2str macro does not import).
func averrorText(_ code: Int32) -> String {
    var buffer = [CChar](repeating: 0, count: 128)
    av_strerror(code, &buffer, buffer.count)
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
