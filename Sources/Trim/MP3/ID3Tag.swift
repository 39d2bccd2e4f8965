/// An ID3v2.4 tag to put in front of a clip a person keeps (id3.org, id3v2.4.0-structure and
/// -frames): text frames in UTF-8, a comment, and a picture. Tag and frame sizes are synchsafe;
/// no unsynchronisation, no extended header, no padding.
public struct ID3Tag: Sendable, Equatable {
    /// Cover art as an APIC frame carries it.
    public struct Picture: Sendable, Equatable {
        public var mimeType: String
        /// 3 is the front cover.
        public var pictureType: UInt8
        public var data: [UInt8]

        public init(mimeType: String, pictureType: UInt8, data: [UInt8]) {
            self.mimeType = mimeType
            self.pictureType = pictureType
            self.data = data
        }
    }

    /// Text frames by id (`TIT2`, `TPE1`, `TALB`, `TDRC`, `TLEN`), written in this order.
    public var texts: [(id: String, value: String)] = []
    public var comment: String?
    public var picture: Picture?

    public init() {}

    public static func == (a: ID3Tag, b: ID3Tag) -> Bool {
        a.texts.map(\.id) == b.texts.map(\.id) && a.texts.map(\.value) == b.texts.map(\.value) && a.comment == b.comment && a.picture == b.picture
    }

    /// The tag's bytes: header, then the frames.
    public var bytes: [UInt8] {
        var frames: [UInt8] = []
        for (id, value) in texts where !value.isEmpty { frames += Self.frame(id, [3] + Array(value.utf8)) }
        if let comment { frames += Self.frame("COMM", [3] + Array("eng".utf8) + [0] + Array(comment.utf8)) }
        if let picture {
            frames += Self.frame("APIC", [3] + Array(picture.mimeType.utf8) + [0, picture.pictureType, 0] + picture.data)
        }
        return Array("ID3".utf8) + [4, 0, 0] + Self.synchsafe(frames.count) + frames
    }

    static func frame(_ id: String, _ body: [UInt8]) -> [UInt8] { Array(id.utf8) + synchsafe(body.count) + [0, 0] + body }

    static func synchsafe(_ value: Int) -> [UInt8] { [21, 14, 7, 0].map { UInt8((value >> $0) & 0x7F) } }

    /// The first picture of the ID3v2.3 or v2.4 tag at the start of `bytes` (a file's head), if
    /// its frame is whole in `bytes`, uncompressed, unencrypted and not unsynchronised. Frames
    /// are walked by their sizes, so a tag that lies about them ends the walk, never a crash.
    public static func picture(inHead bytes: [UInt8]) -> Picture? {
        guard bytes.count >= 10, bytes[0] == 0x49, bytes[1] == 0x44, bytes[2] == 0x33, bytes[3] == 3 || bytes[3] == 4,
              bytes[5] & 0x80 == 0, let tagSize = TagLayout.id3v2Size(bytes[0..<10]) else { return nil }
        let version = bytes[3]
        let end = Int(min(Int64(bytes.count), tagSize))
        func size(_ at: Int, synchsafe: Bool) -> Int {
            (0..<4).reduce(0) { $0 << (synchsafe ? 7 : 8) | Int(bytes[at + $1]) }
        }
        var at = 10
        if bytes[5] & 0x40 != 0, at + 4 <= end {   // an extended header
            at += version == 4 ? size(at, synchsafe: true) : size(at, synchsafe: false) + 4
        }
        while at + 10 <= end, bytes[at] != 0 {
            let id = String(decoding: bytes[at..<(at + 4)], as: UTF8.self)
            let length = size(at + 4, synchsafe: version == 4)
            let formatFlags = bytes[at + 9]
            let body = at + 10
            guard length >= 0, body + length <= end else { return nil }
            let plain = version == 4 ? formatFlags & 0x0F == 0 : formatFlags & 0xE0 == 0
            if id == "APIC", plain, let picture = Self.apic(Array(bytes[body..<(body + length)])) { return picture }
            at = body + length
        }
        return nil
    }

    /// An APIC frame's body: encoding, MIME type, picture type, description, data.
    static func apic(_ body: [UInt8]) -> Picture? {
        guard body.count > 4, let mimeEnd = body[1...].firstIndex(of: 0), mimeEnd + 1 < body.count else { return nil }
        let encoding = body[0]
        let pictureType = body[mimeEnd + 1]
        var at = mimeEnd + 2
        // The description ends with one zero byte (Latin-1, UTF-8) or two aligned ones (UTF-16).
        if encoding == 1 || encoding == 2 {
            while at + 1 < body.count, !(body[at] == 0 && body[at + 1] == 0) { at += 2 }
            at += 2
        } else {
            while at < body.count, body[at] != 0 { at += 1 }
            at += 1
        }
        guard at < body.count else { return nil }
        var mime = String(decoding: body[1..<mimeEnd], as: UTF8.self)
        if !mime.contains("/") { mime = mime.lowercased() == "jpg" ? "image/jpeg" : "image/" + mime.lowercased() }  // "JPG"/"PNG"
        return Picture(mimeType: mime, pictureType: pictureType, data: Array(body[at...]))
    }
}
