import Support
import Foundation

/// AWS Signature Version 4 for S3: header-signed requests and query-string pre-signed URLs.
public struct SigV4Signer: Sendable {
    public let credentials: AWSCredentials
    public let region: String
    public let service: String

    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"
    /// Pre-signed URLs live 1 s to 7 days (S3's limits).
    public static let expiryRange: ClosedRange<Int> = 1...604_800

    public init(credentials: AWSCredentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The headers to add to a request so S3 accepts it: `x-amz-date`, `x-amz-content-sha256`,
    /// `x-amz-security-token` (with session credentials) and `Authorization`.
    /// - Parameters:
    ///   - path: the URI path exactly as it goes on the wire (already S3-encoded).
    ///   - headers: the other headers to sign (`host` is required).
    public func signedHeaders(method: String, path: String, query: [(String, String)] = [],
                              headers: [(name: String, value: String)], payloadHash: String,
                              date: Date) -> [(name: String, value: String)] {
        let stamp = Timestamp(date)
        var all = headers
        all.append(("x-amz-date", stamp.full))
        all.append(("x-amz-content-sha256", payloadHash))
        if let token = credentials.sessionToken { all.append(("x-amz-security-token", token)) }

        let canonicalHeaders = Self.canonicalHeaders(all)
        let signedNames = canonicalHeaders.map(\.name).joined(separator: ";")
        let canonicalRequest = [
            method, path, Self.canonicalQuery(query),
            canonicalHeaders.map { "\($0.name):\($0.value)\n" }.joined(),
            signedNames, payloadHash,
        ].joined(separator: "\n")
        let signature = sign(canonicalRequest, stamp: stamp)
        let authorization = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyId)/\(scope(stamp)), "
            + "SignedHeaders=\(signedNames), Signature=\(signature)"
        return Array(all.dropFirst(headers.count)) + [("Authorization", authorization)]
    }

    /// A pre-signed GET (or other method) URL valid for `expires` seconds from `date`.
    /// - Parameters:
    ///   - baseURL: scheme and authority, e.g. `https://bucket.s3.eu-west-2.amazonaws.com`.
    ///   - host: the Host header value the request will carry (with a non-default port).
    ///   - path: the S3-encoded path.
    public func presignedURL(method: String = "GET", baseURL: String, host: String, path: String,
                             expires: Int, date: Date) -> String {
        let stamp = Timestamp(date)
        var query: [(String, String)] = [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", "\(credentials.accessKeyId)/\(scope(stamp))"),
            ("X-Amz-Date", stamp.full),
            ("X-Amz-Expires", String(expires)),
            ("X-Amz-SignedHeaders", "host"),
        ]
        if let token = credentials.sessionToken { query.append(("X-Amz-Security-Token", token)) }
        let canonicalQuery = Self.canonicalQuery(query)
        let canonicalRequest = [method, path, canonicalQuery, "host:\(host)\n", "host", Self.unsignedPayload]
            .joined(separator: "\n")
        let signature = sign(canonicalRequest, stamp: stamp)
        return "\(baseURL)\(path)?\(canonicalQuery)&X-Amz-Signature=\(signature)"
    }

    // MARK: - The algorithm

    private func scope(_ stamp: Timestamp) -> String { "\(stamp.day)/\(region)/\(service)/aws4_request" }

    private func sign(_ canonicalRequest: String, stamp: Timestamp) -> String {
        let stringToSign = [
            "AWS4-HMAC-SHA256", stamp.full, scope(stamp),
            Digest.sha256(Array(canonicalRequest.utf8)).hexString,
        ].joined(separator: "\n")
        var key = Digest.hmacSHA256(key: Array("AWS4\(credentials.secretAccessKey)".utf8), message: stamp.day)
        for part in [region, service, "aws4_request"] { key = Digest.hmacSHA256(key: key, message: part) }
        return Digest.hmacSHA256(key: key, message: stringToSign).hexString
    }

    /// Lowercase names, values trimmed with inner runs of spaces collapsed, sorted by name;
    /// repeated names joined with commas.
    static func canonicalHeaders(_ headers: [(name: String, value: String)]) -> [(name: String, value: String)] {
        var merged: [String: String] = [:]
        for (name, value) in headers {
            let lower = name.lowercased()
            let clean = value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            merged[lower] = merged[lower].map { "\($0),\(clean)" } ?? clean
        }
        return merged.sorted { $0.key < $1.key }.map { (name: $0.key, value: $0.value) }
    }

    /// Each name and value URI-encoded (slashes too), sorted by encoded name then value.
    static func canonicalQuery(_ query: [(String, String)]) -> String {
        let encoded: [(name: String, value: String)] = query.map {
            (S3URI.encode($0.0, keepSlash: false), S3URI.encode($0.1, keepSlash: false))
        }
        let sorted = encoded.sorted { a, b in a.name == b.name ? a.value < b.value : a.name < b.name }
        return sorted.map { pair in pair.name + "=" + pair.value }.joined(separator: "&")
    }

    /// `yyyyMMdd'T'HHmmss'Z'` and `yyyyMMdd` in UTC.
    struct Timestamp {
        let full: String
        let day: String
        init(_ date: Date) {
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = TimeZone(identifier: "UTC")!
            let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
            day = String(format: "%04d%02d%02d", c.year!, c.month!, c.day!)
            full = day + String(format: "T%02d%02d%02dZ", c.hour!, c.minute!, c.second!)
        }
    }
}

/// URI encoding as S3 expects it: every byte except `A-Z a-z 0-9 - . _ ~` as `%XX` (uppercase),
/// applied once; `/` kept in object key paths.
public enum S3URI {
    public static func encode(_ text: String, keepSlash: Bool) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                 UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "/") where keepSlash:
                out.append("/")
            default:
                out.append("%")
                out.append(upperHex[Int(byte >> 4)])
                out.append(upperHex[Int(byte & 0x0f)])
            }
        }
        return out
    }

    private static let upperHex: [Character] = Array("0123456789ABCDEF")
}
