import HTTPTypes
import NIOCore

/// A plain `GET` or `HEAD` of `/clips/...`, read straight from the connection's bytes.
///
/// Deliberately much narrower than HTTP/1.1: HTTP/1.1 only, a target of visible ASCII, header
/// fields of token names and printable values (no whitespace after them), no body (no
/// Content-Length or Transfer-Encoding), no Upgrade or Expect, `Connection` absent, `close` or
/// `keep-alive`, at most `maxBytes` and 64 fields. Everything else is `.unusual` and goes to NIO's full parser (llhttp), so the two never
/// disagree about where a request ends: whatever this accepts, llhttp parses the same way.
struct WireRequest {
    let request: HTTPRequest
    /// Bytes the request takes, head and blank line.
    let length: Int
    /// The client asked for `Connection: close`.
    let closes: Bool

    enum Parsed {
        case request(WireRequest)
        /// A prefix of what could be a plain request: more bytes are needed.
        case incomplete
        /// Not a plain request, or not one this parser takes.
        case unusual
    }

    static func parse(_ buffer: ByteBuffer, maxBytes: Int) -> Parsed {
        buffer.withUnsafeReadableBytes { bytes in parse(bytes, maxBytes: maxBytes) }
    }

    /// `anyRequest`: any method and any origin-form target, the rest as strict (to find where
    /// requests end, not to answer them).
    static func parse(_ bytes: UnsafeRawBufferPointer, maxBytes: Int, anyRequest: Bool = false) -> Parsed {
        var index = 0
        let end = min(bytes.count, maxBytes)
        /// The next line without its CRLF, nil when none ends within `end`.
        func line() -> Range<Int>?? {
            let start = index
            while index + 1 < end {
                if bytes[index] == cr {
                    guard bytes[index + 1] == lf else { return .some(nil) }   // bare CR
                    defer { index += 2 }
                    return start..<index
                }
                if bytes[index] == lf { return .some(nil) }                  // bare LF
                index += 1
            }
            return nil
        }
        func incompleteOrUnusual() -> Parsed { bytes.count >= maxBytes ? .unusual : .incomplete }

        guard let requestLineOrBad = line() else { return incompleteOrUnusual() }
        guard let requestLine = requestLineOrBad else { return .unusual }
        let text = UnsafeRawBufferPointer(rebasing: bytes[requestLine])
        let method: HTTPRequest.Method
        let targetStart: Int
        if text.starts(with: getPrefix) {
            (method, targetStart) = (.get, getPrefix.count)
        } else if text.starts(with: headPrefix) {
            (method, targetStart) = (.head, headPrefix.count)
        } else if anyRequest, let space = text.firstIndex(of: UInt8(ascii: " ")), space > 0,
                  text[..<space].allSatisfy({ tokenBytes[Int($0)] }),
                  let other = HTTPRequest.Method(String(decoding: text[..<space], as: UTF8.self)) {
            (method, targetStart) = (other, space + 1)
        } else {
            return .unusual
        }
        guard text.count > targetStart + versionSuffix.count, text.suffix(versionSuffix.count).elementsEqual(versionSuffix) else { return .unusual }
        let target = text[targetStart..<(text.count - versionSuffix.count)]
        guard target.starts(with: anyRequest ? originFormPrefix : clipsPrefix),
              target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return .unusual }

        var fields = HTTPFields()
        var authority: String?
        var closes = false
        var count = 0
        while true {
            guard let fieldLineOrBad = line() else { return incompleteOrUnusual() }
            guard let fieldLine = fieldLineOrBad else { return .unusual }
            if fieldLine.isEmpty { break }
            count += 1
            guard count <= 64 else { return .unusual }
            let field = UnsafeRawBufferPointer(rebasing: bytes[fieldLine])
            guard let colon = field.firstIndex(of: UInt8(ascii: ":")), colon > 0,
                  field[..<colon].allSatisfy({ tokenBytes[Int($0)] }) else { return .unusual }
            var valueStart = colon + 1
            let valueEnd = field.count
            while valueStart < valueEnd, field[valueStart] == space || field[valueStart] == tab { valueStart += 1 }
            // Whitespace after a value is left to llhttp, whatever it makes of it (an Origin with
            // a trailing space must get the same answer on both paths).
            if valueEnd > valueStart, field[valueEnd - 1] == space || field[valueEnd - 1] == tab { return .unusual }
            guard field[valueStart..<valueEnd].allSatisfy({ ($0 >= 0x20 && $0 < 0x7F) || $0 == tab }) else { return .unusual }
            let nameText = String(decoding: field[..<colon], as: UTF8.self)
            let value = String(decoding: field[valueStart..<valueEnd], as: UTF8.self)
            guard let name = HTTPField.Name(nameText) else { return .unusual }
            switch name {
            case .contentLength, .transferEncoding, .upgrade, .expect:
                return .unusual
            case .connection:
                switch value.lowercased() {
                case "close": closes = true
                case "keep-alive": break
                default: return .unusual
                }
                fields.append(HTTPField(name: name, value: value))
            case hostField where authority == nil:
                // As NIO's conversion does: the first Host is the authority, not a field.
                authority = value
            default:
                fields.append(HTTPField(name: name, value: value))
            }
        }
        let request = HTTPRequest(method: method, scheme: "http", authority: authority,
                                  path: String(decoding: target, as: UTF8.self), headerFields: fields)
        return .request(WireRequest(request: request, length: index, closes: closes))
    }

    /// How `bytes` splits for NIO's parser: `length` bytes of whole requests with no body (any
    /// method or origin-form target, fields as strict as `parse`), which it reads to a request
    /// boundary; whether one of them asked for `Connection: close`; and what follows: nothing,
    /// the start of such a request (`.incomplete`), or something else (`.unusual`).
    static func wholePrefix(_ buffer: ByteBuffer, maxBytes: Int) -> (length: Int, closes: Bool, rest: Parsed?) {
        buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            var closes = false
            while offset < bytes.count {
                let parsed = parse(UnsafeRawBufferPointer(rebasing: bytes[offset...]), maxBytes: maxBytes, anyRequest: true)
                guard case .request(let request) = parsed else { return (offset, closes, parsed) }
                offset += request.length
                closes = closes || request.closes
            }
            return (offset, closes, nil)
        }
    }

    private static let getPrefix = Array("GET ".utf8)
    private static let headPrefix = Array("HEAD ".utf8)
    private static let versionSuffix = Array(" HTTP/1.1".utf8)
    private static let clipsPrefix = Array("/clips/".utf8)
    private static let originFormPrefix = Array("/".utf8)
    /// RFC 9110 tchar.
    private static let tokenBytes: [Bool] = (0..<256).map { byte in
        let c = UInt8(byte)
        return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || Array("!#$%&'*+-.^_`|~".utf8).contains(c)
    }
}

private let hostField = HTTPField.Name("Host")!
private let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), space = UInt8(ascii: " "), tab = UInt8(ascii: "\t")
