import Foundation
import Support

/// Signed `/clips` URLs: `?exp=<unix seconds>&sig=<hex HMAC-SHA256>` over a canonical form of the
/// path and every other query parameter, so no part of the URL can change without the signature
/// failing. The current key signs; the current and the previous key (during rotation) verify.
///
/// Canonical form (what is signed):
///
///     <path, percent-decoded, then re-encoded with only RFC 3986 unreserved characters and "/" left bare>
///     "\n"
///     <query parameters except sig, each name=value percent-decoded then re-encoded the same way,
///      sorted by name then value, joined with "&">
///
/// Decoding before re-encoding means `%7E` and `~`, or `%2f` and `%2F`, sign the same: proxies and
/// CDNs that normalise escapes do not break URLs.
struct URLSigner: Sendable {
    /// Keys as bytes; the first one signs.
    let keys: [[UInt8]]

    /// nil when signing is off (no key configured).
    init?(key: String, previousKey: String) {
        guard !key.isEmpty else { return nil }
        keys = [Array(key.utf8)] + (previousKey.isEmpty ? [] : [Array(previousKey.utf8)])
    }

    enum Verdict: Equatable {
        case valid
        case missing
        case malformed(String)
        case expired
        case mismatch
    }

    /// `path` and `rawQuery` as they arrived on the request line.
    func verify(path: String, rawQuery: String?, now: Int64) -> Verdict {
        guard let parameters = Self.parameters(rawQuery ?? "") else { return .malformed("the query string has a bad percent-escape") }
        let exps = parameters.filter { $0.0 == "exp" }, sigs = parameters.filter { $0.0 == "sig" }
        guard !exps.isEmpty || !sigs.isEmpty else { return .missing }
        guard exps.count == 1, sigs.count == 1 else { return .malformed("exactly one exp and one sig parameter are needed") }
        guard let exp = Int64(plainDigits: exps[0].1) else { return .malformed("exp must be a Unix time in seconds") }
        guard let given = Self.hexBytes(sigs[0].1), given.count == Digest.sha256Length else {
            return .malformed("sig must be 64 hexadecimal digits")
        }
        guard let message = Self.canonical(path: path, parameters: parameters) else { return .malformed("the path has a bad percent-escape") }
        // Every key is tried (constant time per key) before deciding, so timing says nothing about which key matched.
        var matched = false
        for key in keys where Digest.constantTimeEqual(Digest.hmacSHA256(key: key, message: message), given) { matched = true }
        guard matched else { return .mismatch }
        return exp < now ? .expired : .valid
    }

    /// The query string (without `?`) that makes `path?query` valid until `expiresAt`: the given
    /// parameters, then `exp` and `sig`.
    func signedQuery(path: String, parameters: [(String, String)], expiresAt: Int64) -> String {
        let all = parameters + [("exp", String(expiresAt))]
        let message = Self.canonical(path: path, parameters: all) ?? path
        let sig = Digest.hmacSHA256(key: keys[0], message: message).hexString
        return (all + [("sig", sig)]).map { "\(Self.encode($0.0))=\(Self.encode($0.1))" }.joined(separator: "&")
    }

    // MARK: - Canonical form

    static func canonical(path: String, parameters: [(String, String)]) -> String? {
        guard let decodedPath = path.removingPercentEncoding else { return nil }
        let encoded: [(name: String, value: String)] = parameters.filter { $0.0 != "sig" }.map { (encode($0.0), encode($0.1)) }
        let sorted = encoded.sorted { (a, b) -> Bool in a.name != b.name ? a.name < b.name : a.value < b.value }
        let query = sorted.map { "\($0.name)=\($0.value)" }.joined(separator: "&")
        return encode(decodedPath, keepSlash: true) + "\n" + query
    }

    /// Decoded name/value pairs of a raw query string; nil for a bad escape.
    static func parameters(_ rawQuery: String) -> [(String, String)]? {
        var out: [(String, String)] = []
        for item in rawQuery.split(separator: "&", omittingEmptySubsequences: true) {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = String(pair[0]).percentDecoded,
                  let value = (pair.count > 1 ? String(pair[1]) : "").percentDecoded else { return nil }
            out.append((name, value))
        }
        return out
    }

    private static let unreserved = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8)

    static func encode(_ text: String, keepSlash: Bool = false) -> String {
        var out = ""
        for byte in text.utf8 {
            if unreserved.contains(byte) || (keepSlash && byte == UInt8(ascii: "/")) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    static func hexBytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        for i in stride(from: 0, to: digits.count, by: 2) {
            guard let high = hexValue(digits[i]), let low = hexValue(digits[i + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension String {
    /// `removingPercentEncoding`, without its cost for the common text that has no escapes.
    var percentDecoded: String? { utf8.contains(UInt8(ascii: "%")) ? removingPercentEncoding : self }
}

extension Int64 {
    /// A number written as 1 to 12 decimal digits and nothing else (no sign, space or exponent):
    /// how `start_ms`, `duration_ms` and `exp` are written. 12 digits are over 31 years of audio
    /// in milliseconds, and any Unix time in seconds.
    init?(plainDigits text: some StringProtocol) {
        guard !text.isEmpty, text.utf8.count <= 12, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let value = Int64(text) else { return nil }
        self = value
    }
}
