import Foundation
import Upstream

/// One `/clips` URL read to its end from the running server, as the warm tools do: the body is
/// counted, not kept (a clip only needs to pass through the server to be cached), except the
/// start of an error body.
struct ClipFetch {
    let status: Int
    /// `X-Clip-Tier`: where the server found the clip (`l1_hit`, `l2_hit`, `coalesced`, `fill`).
    let tier: String?
    let bytes: Int64
    let contentLength: Int64?
    /// The first 4 KiB of the body, enough for a JSON error.
    let start: [UInt8]

    static func get(_ url: String, with transfer: CurlTransfer) throws -> ClipFetch {
        var bytes: Int64 = 0
        var start: [UInt8] = []
        let head = try transfer.perform(HTTPRequest(method: "GET", url: url),
                                        timeouts: TransferTimeouts(connect: .seconds(5), lowSpeedWindow: .seconds(30))) { chunk in
            bytes += Int64(chunk.count)
            if start.count < 4096 { start += chunk.prefix(4096 - start.count) }
            return true
        }
        return ClipFetch(status: head.status, tier: head.header("X-Clip-Tier"), bytes: bytes,
                         contentLength: head.header("Content-Length").flatMap { Int64($0) }, start: start)
    }

    var text: String { String(decoding: start, as: UTF8.self) }

    /// The server's JSON error (`{"error": ..., "detail": ...}`), or the start of whatever it sent.
    var refusal: (error: String, detail: String) {
        if let json = try? JSONSerialization.jsonObject(with: Data(start)) as? [String: Any], let error = json["error"] as? String {
            return (error, json["detail"] as? String ?? "")
        }
        return ("http_\(status)", text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
