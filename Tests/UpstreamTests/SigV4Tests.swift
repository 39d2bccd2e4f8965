import Support
import Foundation
import Testing
@testable import Upstream

@Suite("SigV4 against AWS's published examples")
struct SigV4Tests {
    static let example = AWSCredentials(accessKeyId: "AKIAIOSFODNN7EXAMPLE",
                                        secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    static let may24 = Date(timeIntervalSince1970: 1_369_353_600)  // 2013-05-24T00:00:00Z

    @Test("S3 documentation: pre-signed GET of examplebucket/test.txt")
    func presignExample() {
        let signer = SigV4Signer(credentials: Self.example, region: "us-east-1")
        let url = signer.presignedURL(baseURL: "https://examplebucket.s3.amazonaws.com", host: "examplebucket.s3.amazonaws.com",
                                      path: "/test.txt", expires: 86400, date: Self.may24)
        #expect(url.hasSuffix("X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"))
        #expect(url.contains("X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"))
    }

    @Test("S3 documentation: header-signed GET with Range")
    func headerSignedRangeGet() {
        let signer = SigV4Signer(credentials: Self.example, region: "us-east-1")
        let headers = signer.signedHeaders(method: "GET", path: "/test.txt",
                                           headers: [("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9")],
                                           payloadHash: SigV4Signer.emptyPayloadHash, date: Self.may24)
        let authorization = headers.first { $0.name == "Authorization" }?.value ?? ""
        #expect(authorization.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"))
        #expect(authorization.hasSuffix("Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"))
    }

    @Test("Credentials never print their secret")
    func redaction() {
        let c = AWSCredentials(accessKeyId: "AKID", secretAccessKey: "s3cr3t", sessionToken: "t0k3n")
        #expect(!"\(c)".contains("s3cr3t"))
        #expect(!"\(c)".contains("t0k3n"))
    }

    @Test("S3 URI encoding: once, slashes kept in keys")
    func uriEncoding() {
        #expect(S3URI.encode("a b+c=d&e/f~g_h.i-j", keepSlash: true) == "a%20b%2Bc%3Dd%26e/f~g_h.i-j")
        #expect(S3URI.encode("a/b", keepSlash: false) == "a%2Fb")
        #expect(S3URI.encode("é%", keepSlash: true) == "%C3%A9%25")
    }
}
