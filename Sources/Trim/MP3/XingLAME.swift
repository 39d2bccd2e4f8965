/// The Xing/Info (or VBRI) tag in the first frame of a stream, with the LAME extension that
/// carries the encoder delay and padding players use for gapless, sample-exact playback.
public struct VBRTag: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable { case xing = "Xing", info = "Info", vbri = "VBRI" }
    public var kind: Kind
    /// Audio frames after the tag frame, when the tag says.
    public var frames: Int?
    public var bytes: Int?
    /// Encoder name from the LAME extension, e.g. "LAME3.100".
    public var encoder: String?
    public var encoderDelay: Int?
    public var encoderPadding: Int?

    /// True when ffmpeg (and the players built on it) trim the delay and padding this tag declares:
    /// it honours them only for LAME, Lavf and Lavc encoder strings.
    public var declaresGapless: Bool {
        guard kind != .vbri, let encoder, encoderDelay != nil else { return false }
        return encoder.hasPrefix("LAME") || encoder.hasPrefix("Lavf") || encoder.hasPrefix("Lavc")
    }

    /// Looks for a tag in the frame `frame` (starting with its header).
    static func parse(frame: ArraySlice<UInt8>, header: FrameHeader) -> VBRTag? {
        let f = Array(frame)
        // Xing/Info sits after the side info. ffmpeg looks there ignoring a CRC; some encoders
        // account for the CRC. Accept both.
        for offset in Set([4 + header.sideInfoSize, 4 + header.sideInfoSize + (header.crcProtected ? 2 : 0)]).sorted() {
            guard f.count >= offset + 8 else { continue }
            let magic = String(decoding: f[offset..<(offset + 4)], as: UTF8.self)
            guard magic == "Xing" || magic == "Info" else { continue }
            var tag = VBRTag(kind: magic == "Xing" ? .xing : .info)
            let flags = be32(f, offset + 4)
            var at = offset + 8
            if flags & 1 != 0, f.count >= at + 4 { tag.frames = Int(be32(f, at)); at += 4 }
            if flags & 2 != 0, f.count >= at + 4 { tag.bytes = Int(be32(f, at)); at += 4 }
            if flags & 4 != 0 { at += 100 }
            if flags & 8 != 0 { at += 4 }
            // LAME extension: 9-byte encoder string, then fixed fields; delay/padding at +21.
            if f.count >= at + 24 {
                let name = f[at..<(at + 9)]
                if name.allSatisfy({ $0 == 0 || (0x20...0x7E).contains($0) }) {
                    tag.encoder = String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
                    let v = Int(f[at + 21]) << 16 | Int(f[at + 22]) << 8 | Int(f[at + 23])
                    tag.encoderDelay = v >> 12
                    tag.encoderPadding = v & 0xFFF
                }
            }
            return tag
        }
        // VBRI (Fraunhofer) always sits 32 bytes after the header.
        if f.count >= 36 + 18, String(decoding: f[36..<40], as: UTF8.self) == "VBRI" {
            return VBRTag(kind: .vbri, frames: Int(be32(f, 36 + 14)), bytes: Int(be32(f, 36 + 10)))
        }
        return nil
    }

    private init(kind: Kind) { self.kind = kind }
    init(kind: Kind, frames: Int?, bytes: Int?) {
        self.kind = kind
        self.frames = frames
        self.bytes = bytes
    }
}

/// Builds the Info/Xing frame that opens every clip: frame and byte counts, a seek TOC, and a LAME
/// extension with the exact encoder delay and padding, so players start and stop on the requested sample.
enum InfoFrameBuilder {
    /// Encoder string players honour (Firefox ignores "Lavf"; ffmpeg and Chrome read LAME's fields).
    static let encoderString = Array("LAME3.100".utf8)

    /// Length of the Info frame for a stream like `template`: the smallest unpadded frame that
    /// holds the tag and LAME extension.
    static func frameLength(like template: FrameHeader) -> (bitrateIndex: Int, length: Int) {
        let needed = 4 + template.sideInfoSize + 120 + 36
        let index = FrameHeader.smallestBitrateIndex(like: template, holding: needed)!  // ≤ 320/160 kbps always fits
        let length = FrameHeader.frameLength(version: template.version, bitrate: FrameHeader.bitratesKbps[template.version]![index] * 1000,
                                             sampleRate: template.sampleRate, padding: false)
        return (index, length)
    }

    static func build(like template: FrameHeader, vbr: Bool, frames: Int, bytes: Int, toc: [UInt8],
                      encoderDelay: Int, encoderPadding: Int) -> [UInt8] {
        precondition(toc.count == 100 && (0...4095).contains(encoderDelay) && (0...4095).contains(encoderPadding))
        let (index, length) = frameLength(like: template)
        var f = [UInt8](repeating: 0, count: length)
        f.replaceSubrange(0..<4, with: FrameHeader.synthesized(like: template, bitrateIndex: index))
        // Side info stays zero: main_data_begin 0 and empty granules, so a decoder that does not
        // know the tag decodes silence.
        var at = 4 + template.sideInfoSize
        f.replaceSubrange(at..<(at + 4), with: Array((vbr ? "Xing" : "Info").utf8)); at += 4
        put32(&f, at, 0x0F); at += 4                              // frames, bytes, TOC, quality
        put32(&f, at, UInt32(frames)); at += 4
        put32(&f, at, UInt32(bytes)); at += 4
        f.replaceSubrange(at..<(at + 100), with: toc); at += 100
        put32(&f, at, 0); at += 4                                  // quality: unknown
        let lame = at
        f.replaceSubrange(lame..<(lame + 9), with: encoderString)
        f[lame + 9] = vbr ? 0x04 : 0x01                            // tag revision 0; VBR method: vbr-mtrh / CBR
        let v = encoderDelay << 12 | encoderPadding
        f[lame + 21] = UInt8(v >> 16); f[lame + 22] = UInt8((v >> 8) & 0xFF); f[lame + 23] = UInt8(v & 0xFF)
        put32(&f, lame + 28, UInt32(bytes))                        // music length
        // lame+32: music CRC would need the whole clip before its first byte; left 0 (unchecked by players).
        let crc = crc16(f[0..<(lame + 34)])
        f[lame + 34] = UInt8(crc >> 8); f[lame + 35] = UInt8(crc & 0xFF)
        return f
    }

    /// CRC-16 as the LAME tag uses it (polynomial 0x8005 reflected = 0xA001, initial value 0).
    static func crc16(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xA001 : crc >> 1 }
        }
        return crc
    }
}

func be32(_ b: [UInt8], _ at: Int) -> UInt32 {
    UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
}

func put32(_ b: inout [UInt8], _ at: Int, _ v: UInt32) {
    b[at] = UInt8(v >> 24); b[at + 1] = UInt8((v >> 16) & 0xFF); b[at + 2] = UInt8((v >> 8) & 0xFF); b[at + 3] = UInt8(v & 0xFF)
}
