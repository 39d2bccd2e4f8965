import Foundation

extension TestServer {
    /// scripts/fault_proxy.py on a free loopback port in front of `target`: it hands each new
    /// connection (one request each) the next mode of `plan`, then `defaultMode` (modes: `pass`,
    /// `503`, `slowdown`, `500`, `reset:K`, `stall:K`, `close`, `slow:B`; see the script). `GET /__proxy/log`
    /// on the proxy lists the requests it saw.
    public static func faultProxy(target: TestServer, plan: [String] = [], defaultMode: String = "pass",
                                  stallSeconds: Double = 30) throws -> TestServer {
        try faultProxy(address: "\(target.host):\(target.port)", plan: plan, defaultMode: defaultMode, stallSeconds: stallSeconds)
    }

    /// The same in front of any `host:port` (a `ClipProxyProcess`, say: it counts what browsers ask).
    public static func faultProxy(address: String, plan: [String] = [], defaultMode: String = "pass",
                                  stallSeconds: Double = 30) throws -> TestServer {
        try start(name: "fault-proxy", executable: RepoPaths.python, arguments: [
            RepoPaths.scripts.appendingPathComponent("fault_proxy.py").path,
            "--target", address,
            "--plan", plan.joined(separator: ","),
            "--default", defaultMode,
            "--stall-seconds", String(stallSeconds),
        ])
    }
}

/// One request as the fault proxy saw it.
public struct FaultProxyRequest: Decodable, Sendable {
    public let n: Int
    public let method: String
    public let path: String
    public let mode: String
    /// The `Range` header, if the request had one.
    public let range: String?
    /// The `If-Match` header, if the request had one.
    public let ifMatch: String?
    /// Response body bytes the proxy forwarded to the client (so far, for a transfer under way).
    public let bytes: Int

    enum CodingKeys: String, CodingKey {
        case n, method, path, mode, range, bytes
        case ifMatch = "if_match"
    }

    /// Decodes the JSON that `GET /__proxy/log` returns.
    public static func decodeLog(_ bytes: [UInt8]) throws -> [FaultProxyRequest] {
        try JSONDecoder().decode([FaultProxyRequest].self, from: Data(bytes))
    }
}
