import CLibCrypto

/// SHA-256 and HMAC-SHA256 from libcrypto (OpenSSL 3), the primitives of AWS Signature V4 and of
/// signed proxy URLs.
public enum Digest {
    public static let sha256Length = 32

    /// SHA-256 of `bytes` in one call.
    public static func sha256<Bytes: Collection>(_ bytes: Bytes) -> [UInt8] where Bytes.Element == UInt8 {
        var hasher = SHA256Hasher()
        hasher.update(bytes)
        return hasher.finalize()
    }

    /// MD5 in hex: what S3 reports as the ETag of a single-part object.
    public static func md5Hex(_ bytes: [UInt8]) -> String {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = bytes.withUnsafeBytes { EVP_Digest($0.baseAddress, $0.count, &out, &length, EVP_md5(), nil) }
        precondition(ok == 1, "libcrypto MD5 failed")
        return out.prefix(Int(length)).hexString
    }

    /// HMAC-SHA256 of `message` under `key`.
    public static func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var outLength: UInt32 = 0
        let ok = key.withUnsafeBufferPointer { k in
            message.withUnsafeBufferPointer { m in
                HMAC(EVP_sha256(), k.baseAddress, Int32(k.count), m.baseAddress, m.count, &out, &outLength)
            }
        }
        // HMAC only fails when libcrypto cannot allocate; nothing sensible can continue after that.
        precondition(ok != nil && outLength == 32, "libcrypto HMAC-SHA256 failed")
        return Array(out.prefix(Int(outLength)))
    }

    public static func hmacSHA256(key: [UInt8], message: String) -> [UInt8] {
        hmacSHA256(key: key, message: Array(message.utf8))
    }

    /// Compares two byte strings in time that depends only on their lengths, for signatures.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in CRYPTO_memcmp(pa.baseAddress, pb.baseAddress, a.count) == 0 }
        }
    }
}

/// Incremental SHA-256, for content digests computed while bytes stream past.
/// Owns one EVP_MD_CTX; not copyable so the context has exactly one owner.
public struct SHA256Hasher: ~Copyable {
    private let context: OpaquePointer

    public init() {
        guard let context = EVP_MD_CTX_new() else { fatalError("libcrypto: EVP_MD_CTX_new failed (out of memory)") }
        precondition(EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1, "libcrypto: SHA-256 init failed")
        self.context = context
    }

    public mutating func update<Bytes: Collection>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        let done: Void? = bytes.withContiguousStorageIfAvailable { buffer in
            _ = EVP_DigestUpdate(context, buffer.baseAddress, buffer.count)
        }
        if done == nil {
            let copy = Array(bytes)
            copy.withUnsafeBufferPointer { _ = EVP_DigestUpdate(context, $0.baseAddress, $0.count) }
        }
    }

    public mutating func update(_ buffer: UnsafeRawBufferPointer) {
        _ = EVP_DigestUpdate(context, buffer.baseAddress, buffer.count)
    }

    /// The digest. Call once: the context is finished afterwards.
    public mutating func finalize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        precondition(EVP_DigestFinal_ex(context, &out, &length) == 1, "libcrypto: SHA-256 final failed")
        return Array(out.prefix(Int(length)))
    }

    deinit { EVP_MD_CTX_free(context) }
}

extension Sequence where Element == UInt8 {
    /// Lowercase hexadecimal, as SigV4 and ETags use.
    public var hexString: String {
        var s = ""
        s.reserveCapacity(64)
        for byte in self {
            s.append(hexDigits[Int(byte >> 4)])
            s.append(hexDigits[Int(byte & 0x0f)])
        }
        return s
    }
}

private let hexDigits: [Character] = Array("0123456789abcdef")
