import CFFmpeg
import Foundation

/// Decodes an MP3 file to PCM with libavformat + libavcodec, the way ffmpeg (and so a browser
/// built on it) plays it: the mp3 demuxer reads the Info/LAME tag and marks the encoder delay
/// and padding on the packets (skip-samples side data), and the decoder drops them, so the first
/// sample delivered is the file's first real sample and the last is its last.
public enum MP3Decoder {
    /// What was decoded: the stream's rate and channel count, and how many samples per channel.
    public struct Summary: Sendable, Equatable {
        public var sampleRate: Int
        public var channels: Int
        public var sampleCount: Int64
    }

    /// Decodes `source` and hands each decoded frame to `consume` mixed down to one channel (the
    /// average of the channels) as 16-bit samples, rounded and clipped as ffmpeg converts float
    /// to s16. Blocking: call it off the event loop.
    public static func decodeMono(_ source: any ByteSource, _ consume: (UnsafeBufferPointer<Int16>) throws -> Void) throws -> Summary {
        let session = try DecodeSession(source)
        var summary = Summary(sampleRate: 0, channels: 0, sampleCount: 0)
        var mono: [Int16] = []
        try session.forEachFrame { frame in
            let channels = Int(frame.ch_layout.nb_channels)
            summary.sampleRate = Int(frame.sample_rate)
            summary.channels = channels
            try mixDown(frame, channels: channels, into: &mono)
            summary.sampleCount += Int64(mono.count)
            try mono.withUnsafeBufferPointer(consume)
        }
        return summary
    }

    /// One decoded frame's samples as one channel of Int16 (planar or packed, float or s16: what
    /// the mp3 decoders of libavcodec produce).
    private static func mixDown(_ frame: AVFrame, channels: Int, into mono: inout [Int16]) throws {
        let count = Int(frame.nb_samples)
        mono.removeAll(keepingCapacity: true)
        guard channels > 0, count > 0, let planes = frame.extended_data else { return }
        let format = AVSampleFormat(rawValue: frame.format)
        // A sample of channel `c` at index `i`, in -1...1 (s16 scaled by 1/32768, as ffmpeg does).
        let sample: (Int, Int) -> Float
        switch format {
        case AV_SAMPLE_FMT_FLTP:
            sample = { c, i in UnsafeRawPointer(planes[c]!).assumingMemoryBound(to: Float.self)[i] }
        case AV_SAMPLE_FMT_FLT:
            sample = { c, i in UnsafeRawPointer(planes[0]!).assumingMemoryBound(to: Float.self)[i * channels + c] }
        case AV_SAMPLE_FMT_S16P:
            sample = { c, i in Float(UnsafeRawPointer(planes[c]!).assumingMemoryBound(to: Int16.self)[i]) / 32768 }
        case AV_SAMPLE_FMT_S16:
            sample = { c, i in Float(UnsafeRawPointer(planes[0]!).assumingMemoryBound(to: Int16.self)[i * channels + c]) / 32768 }
        default:
            throw TrimError.unsupportedFormat("the decoder produced sample format \(frame.format); expected float or s16")
        }
        mono.reserveCapacity(count)
        let scale = 32768 / Float(channels)
        for i in 0..<count {
            var sum: Float = 0
            for c in 0..<channels { sum += sample(c, i) }
            mono.append(Int16(clamping: lrintf(sum * scale)))
        }
    }
}

/// libavformat and libavcodec opened on one source: owns every pointer it allocates and frees
/// them in `deinit`, in reverse order.
private final class DecodeSession {
    private let reader: AVIOByteReader
    private var format: UnsafeMutablePointer<AVFormatContext>?
    private var codec: UnsafeMutablePointer<AVCodecContext>?
    private var packet: UnsafeMutablePointer<AVPacket>?
    private var frame: UnsafeMutablePointer<AVFrame>?
    private var streamIndex: Int32 = -1

    init(_ source: any ByteSource) throws {
        av_log_set_level(AV_LOG_QUIET)
        reader = try AVIOByteReader(source: source)
        guard let context = avformat_alloc_context() else { throw TrimError.sourceUnavailable("out of memory") }
        context.pointee.pb = reader.context
        context.pointee.flags |= AVFMT_FLAG_CUSTOM_IO
        format = context
        // The clip is an MP3 we made: name the demuxer rather than probe for it.
        let opened = avformat_open_input(&format, nil, av_find_input_format("mp3"), nil)
        guard opened >= 0, let format else {
            self.format = nil  // avformat_open_input frees the context on failure
            if let error = reader.sourceError { throw error }
            throw TrimError.corrupt("libavformat cannot open the MP3 (\(averrorText(opened)))")
        }
        let streams = UnsafeBufferPointer(start: format.pointee.streams, count: Int(format.pointee.nb_streams))
        guard let index = streams.firstIndex(where: { $0?.pointee.codecpar.pointee.codec_type == AVMEDIA_TYPE_AUDIO }),
              let parameters = streams[index]?.pointee.codecpar,
              let decoder = avcodec_find_decoder(parameters.pointee.codec_id)
        else { throw TrimError.unsupportedFormat("no audio stream libavcodec can decode") }
        streamIndex = Int32(index)
        codec = avcodec_alloc_context3(decoder)
        packet = av_packet_alloc()
        frame = av_frame_alloc()
        guard let codec, packet != nil, frame != nil else { throw TrimError.sourceUnavailable("out of memory") }
        let configured = avcodec_parameters_to_context(codec, parameters)
        guard configured >= 0 else { throw TrimError.corrupt("cannot configure the decoder (\(averrorText(configured)))") }
        let started = avcodec_open2(codec, decoder, nil)
        guard started >= 0 else { throw TrimError.corrupt("cannot open the decoder (\(averrorText(started)))") }
    }

    deinit {
        av_frame_free(&frame)
        av_packet_free(&packet)
        avcodec_free_context(&codec)
        if format != nil { avformat_close_input(&format) }
    }

    /// Reads every packet of the audio stream, decodes it and hands each frame to `body`, then
    /// drains the decoder. A damaged packet is skipped, as ffmpeg does; a source that fails to
    /// read throws its own error.
    func forEachFrame(_ body: (AVFrame) throws -> Void) throws {
        guard let format, let codec, let packet, let frame else { return }
        while true {
            let read = av_read_frame(format, packet)
            if let error = reader.sourceError { throw error }
            if read < 0 { break }  // end of input (or an unreadable tail: the frames before it count)
            defer { av_packet_unref(packet) }
            guard packet.pointee.stream_index == streamIndex else { continue }
            let sent = avcodec_send_packet(codec, packet)
            guard sent >= 0 || sent == cffmpeg_averror_invaliddata() else {
                throw TrimError.corrupt("the decoder refused a packet (\(averrorText(sent)))")
            }
            try receive(codec, frame, body)
        }
        _ = avcodec_send_packet(codec, nil)  // flush: the decoder's last frames
        try receive(codec, frame, body)
    }

    private func receive(_ codec: UnsafeMutablePointer<AVCodecContext>, _ frame: UnsafeMutablePointer<AVFrame>,
                         _ body: (AVFrame) throws -> Void) throws {
        while true {
            let received = avcodec_receive_frame(codec, frame)
            if received == cffmpeg_averror(EAGAIN) || received == cffmpeg_averror_eof() { return }
            guard received >= 0 else { throw TrimError.corrupt("the decoder failed (\(averrorText(received)))") }
            defer { av_frame_unref(frame) }
            try body(frame.pointee)
        }
    }
}
