import CCurl
import Foundation

/// One HTTP request as libcurl will send it.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(name: String, value: String)]
    /// Request body, sent with Content-Length (S3 PutObject needs an exact length).
    public var body: [UInt8]?

    public init(method: String, url: String, headers: [(name: String, value: String)] = [], body: [UInt8]? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }
}

/// Status line and headers of a response, available before its body.
public struct HTTPResponseHead: Sendable {
    public var status: Int
    /// Header names lowercased; repeated headers keep their order.
    public var headers: [(name: String, value: String)]

    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name == lower }?.value
    }
}

/// Time bounds for one transfer.
public struct TransferTimeouts: Sendable {
    public var connect: Duration
    /// Abort when fewer than `lowSpeedBytes` per second arrive for `lowSpeedWindow` (a stalled peer).
    public var lowSpeedBytes: Int
    public var lowSpeedWindow: Duration
    /// Upper bound on the whole transfer; nil for none (long streams are bounded by the low-speed rule).
    public var total: Duration?

    public init(connect: Duration = .seconds(5), lowSpeedBytes: Int = 1, lowSpeedWindow: Duration = .seconds(10),
                total: Duration? = nil) {
        self.connect = connect
        self.lowSpeedBytes = lowSpeedBytes
        self.lowSpeedWindow = lowSpeedWindow
        self.total = total
    }
}

/// A transfer that did not complete. The message never contains request headers (they hold
/// signatures and session tokens).
public struct TransferError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        case connect        // could not reach the peer
        case timeout        // connect, low-speed or total timeout
        case reset          // connection dropped mid-transfer
        case aborted        // the consumer asked to stop
        case other
    }
    public let kind: Kind
    public let curlCode: Int
    public let detail: String
    /// Body bytes handed to the consumer before the failure (for resuming a ranged read).
    public let bodyBytesDelivered: Int64

    public var description: String { "HTTP transfer failed (\(kind), curl \(curlCode)): \(detail)" }
}

private let curlGlobalInit: Void = {
    // Once per process, before any handle: libcurl's global state is not thread-safe to set up.
    _ = curl_global_init(Int(CURL_GLOBAL_ALL))
}()

/// One libcurl easy handle. Reusing it across requests keeps the connection alive when the peer
/// allows. Not thread-safe: use it from one thread at a time (a pool hands handles out).
public final class CurlTransfer {
    private let handle: UnsafeMutableRawPointer

    public init() {
        _ = curlGlobalInit
        guard let h = curl_easy_init() else { fatalError("libcurl: curl_easy_init failed (out of memory)") }
        handle = h
    }

    deinit { curl_easy_cleanup(handle) }

    /// Performs `request`. `onHead` sees the final response head before any body byte;
    /// `onBody` receives body bytes as they arrive and returns false to abort the transfer.
    @discardableResult
    public func perform(
        _ request: HTTPRequest,
        timeouts: TransferTimeouts = TransferTimeouts(),
        onHead: (HTTPResponseHead) throws -> Void = { _ in },
        onBody: (UnsafeRawBufferPointer) throws -> Bool
    ) throws -> HTTPResponseHead {
        // The callbacks live only for this call; the C side reaches them through a retained state object.
        try withoutActuallyEscaping(onHead) { onHead in
            try withoutActuallyEscaping(onBody) { onBody in
                try run(request, timeouts: timeouts, onHead: onHead, onBody: onBody)
            }
        }
    }

    private func run(
        _ request: HTTPRequest, timeouts: TransferTimeouts,
        onHead: @escaping (HTTPResponseHead) throws -> Void,
        onBody: @escaping (UnsafeRawBufferPointer) throws -> Bool
    ) throws -> HTTPResponseHead {
        curl_easy_reset(handle)
        let state = TransferState(body: request.body ?? [], onHead: onHead, onBody: onBody)
        let unmanaged = Unmanaged.passRetained(state)
        defer { unmanaged.release() }
        let userdata = unmanaged.toOpaque()

        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        for (name, value) in request.headers {
            headerList = curl_slist_append(headerList, "\(name): \(value)")
        }
        // libcurl would add `Expect: 100-continue` to uploads, costing a round trip.
        headerList = curl_slist_append(headerList, "Expect:")
        defer { curl_slist_free_all(headerList) }

        ccurl_setopt_string(handle, CURLOPT_URL, request.url)
        ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)  // threads + timeouts: no SIGALRM
        ccurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, timeouts.connect.milliseconds)
        ccurl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, timeouts.lowSpeedBytes)
        ccurl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, max(1, timeouts.lowSpeedWindow.milliseconds / 1000))
        if let total = timeouts.total { ccurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, total.milliseconds) }
        ccurl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList)
        ccurl_setopt_pointer(handle, CURLOPT_HEADERDATA, userdata)
        ccurl_setopt_write_callback(handle, CURLOPT_HEADERFUNCTION, curlHeaderCallback)
        ccurl_setopt_pointer(handle, CURLOPT_WRITEDATA, userdata)
        ccurl_setopt_write_callback(handle, CURLOPT_WRITEFUNCTION, curlWriteCallback)

        switch request.method {
        case "GET": ccurl_setopt_long(handle, CURLOPT_HTTPGET, 1)
        case "HEAD": ccurl_setopt_long(handle, CURLOPT_NOBODY, 1)
        default:
            ccurl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request.method)
        }
        if let body = request.body {
            ccurl_setopt_long(handle, CURLOPT_UPLOAD, 1)
            ccurl_setopt_off(handle, CURLOPT_INFILESIZE_LARGE, curl_off_t(body.count))
            ccurl_setopt_pointer(handle, CURLOPT_READDATA, userdata)
            ccurl_setopt_read_callback(handle, CURLOPT_READFUNCTION, curlReadCallback)
        }

        let code = curl_easy_perform(handle)
        if let error = state.consumerError { throw error }
        guard code == CURLE_OK else {
            throw TransferError(kind: Self.kind(of: code), curlCode: Int(code.rawValue),
                                detail: String(cString: curl_easy_strerror(code)), bodyBytesDelivered: state.delivered)
        }
        // A response without a body (HEAD, 204, empty object) still has a head to hand over.
        _ = state.deliverHeadIfNeeded()
        if let error = state.consumerError { throw error }
        var status = 0
        ccurl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return HTTPResponseHead(status: status, headers: state.headers)
    }

    private static func kind(of code: CURLcode) -> TransferError.Kind {
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST: .connect
        case CURLE_OPERATION_TIMEDOUT: .timeout
        case CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_PARTIAL_FILE, CURLE_GOT_NOTHING: .reset
        case CURLE_WRITE_ERROR, CURLE_ABORTED_BY_CALLBACK: .aborted
        default: .other
        }
    }
}

/// What the C callbacks need, reached through their userdata pointer.
private final class TransferState {
    let body: [UInt8]
    var bodyOffset = 0
    let onHead: (HTTPResponseHead) throws -> Void
    let onBody: (UnsafeRawBufferPointer) throws -> Bool
    var statusLine = 0
    var headers: [(name: String, value: String)] = []
    var headDelivered = false
    var delivered: Int64 = 0
    var consumerError: Error?

    init(body: [UInt8], onHead: @escaping (HTTPResponseHead) throws -> Void,
         onBody: @escaping (UnsafeRawBufferPointer) throws -> Bool) {
        self.body = body
        self.onHead = onHead
        self.onBody = onBody
    }

    func headerLine(_ line: String) {
        let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("HTTP/") {
            // A new response (after 100-continue or a redirect): forget the previous head.
            headers = []
            let parts = trimmed.split(separator: " ")
            statusLine = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        } else if let colon = trimmed.firstIndex(of: ":") {
            let name = trimmed[..<colon].lowercased()
            let value = trimmed[trimmed.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers.append((name, value))
        }
    }

    /// Hands the head to the consumer once, just before the first body byte (or at the end).
    func deliverHeadIfNeeded() -> Bool {
        guard !headDelivered else { return true }
        headDelivered = true
        do { try onHead(HTTPResponseHead(status: statusLine, headers: headers)) } catch {
            consumerError = error
            return false
        }
        return true
    }
}

private func curlHeaderCallback(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int,
                                _ userdata: UnsafeMutableRawPointer?) -> Int {
    let length = size * count
    guard let data, let userdata else { return length }
    let state = Unmanaged<TransferState>.fromOpaque(userdata).takeUnretainedValue()
    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    state.headerLine(line)
    return length
}

private func curlWriteCallback(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int,
                               _ userdata: UnsafeMutableRawPointer?) -> Int {
    let length = size * count
    guard let data, let userdata else { return 0 }
    let state = Unmanaged<TransferState>.fromOpaque(userdata).takeUnretainedValue()
    guard state.deliverHeadIfNeeded() else { return 0 }
    do {
        let keepGoing = try state.onBody(UnsafeRawBufferPointer(start: data, count: length))
        guard keepGoing else { return 0 }  // returning a short count makes libcurl abort
    } catch {
        state.consumerError = error
        return 0
    }
    state.delivered += Int64(length)
    return length
}

private func curlReadCallback(_ buffer: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int,
                              _ userdata: UnsafeMutableRawPointer?) -> Int {
    guard let buffer, let userdata else { return 0 }
    let state = Unmanaged<TransferState>.fromOpaque(userdata).takeUnretainedValue()
    let n = min(size * count, state.body.count - state.bodyOffset)
    guard n > 0 else { return 0 }
    state.body.withUnsafeBytes { raw in
        UnsafeMutableRawPointer(buffer).copyMemory(from: raw.baseAddress! + state.bodyOffset, byteCount: n)
    }
    state.bodyOffset += n
    return n
}

extension Duration {
    /// Whole milliseconds, for C APIs that take them as `long`.
    var milliseconds: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }
}
