/// Where the audio frames of a file lie once metadata tags are set aside: leading ID3v2 tags
/// (there may be several, and v2.4 may carry a footer) and trailing ID3v1 and APEv2 tags.
struct TagLayout: Sendable, Equatable {
    var audioStart: Int64
    var audioEnd: Int64

    /// Bytes after the first ID3v2 header needed to decide; callers read this much at a time.
    static let id3HeaderSize = 10

    /// Size of an ID3v2 tag (header, body and footer) whose header is at `bytes[0..<10]`, or nil.
    static func id3v2Size(_ bytes: ArraySlice<UInt8>) -> Int64? {
        guard bytes.count >= 10 else { return nil }
        let b = Array(bytes.prefix(10))
        guard b[0] == 0x49, b[1] == 0x44, b[2] == 0x33,            // "ID3"
              b[3] != 0xFF, b[4] != 0xFF,
              b[6] & 0x80 == 0, b[7] & 0x80 == 0, b[8] & 0x80 == 0, b[9] & 0x80 == 0
        else { return nil }
        let body = Int64(b[6]) << 21 | Int64(b[7]) << 14 | Int64(b[8]) << 7 | Int64(b[9])
        let footer: Int64 = (b[3] >= 4 && b[5] & 0x10 != 0) ? 10 : 0
        return 10 + body + footer
    }

    /// Bytes to drop from the end of a file whose last `tail.count` bytes are `tail`:
    /// an ID3v1 tag ("TAG", 128 bytes) and, before it, an APEv2 tag (footer "APETAGEX").
    static func trailingTagBytes(tail: [UInt8], fileSize: Int64) -> Int64 {
        var end = tail.count
        if end >= 128, tail[end - 128] == 0x54, tail[end - 127] == 0x41, tail[end - 126] == 0x47 { end -= 128 }
        if end >= 32, Array(tail[(end - 32)..<(end - 24)]) == Array("APETAGEX".utf8) {
            let footer = Array(tail[(end - 32)..<end])
            let size = Int64(littleEndian32(footer, 12))      // items + footer, without header
            let flags = littleEndian32(footer, 20)
            let headerBytes: Int64 = flags & 0x8000_0000 != 0 ? 32 : 0
            let total = size + headerBytes
            let afterID3v1 = Int64(tail.count - end)
            // The APE tag may be longer than the tail we read (cover art); only its footer is needed.
            if total >= 32, total <= fileSize - afterID3v1 { return afterID3v1 + total }
        }
        return Int64(tail.count - end)
    }

    private static func littleEndian32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }
}
