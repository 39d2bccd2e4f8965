import CCurl
import Foundation
import Support

/// What an upload sends: bytes in memory, or a local file streamed through libcurl's read
/// callback (never loaded whole). Either way it goes out with an exact Content-Length.
public enum HTTPRequestBody: Sendable {
    case bytes([UInt8])
    /// The first `length` bytes of the file at `path`, re-opened for every transfer. If the file
    /// ends early the transfer fails with `TransferError.Kind.upload`.
    case file(path: String, length: Int64)

    public var length: Int64 {
        switch self {
        case .bytes(let bytes): Int64(bytes.count)
        case .file(_, let length): length
        }
    }
}

/// One HTTP request as libcurl will send it.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(name: String, value: String)]
    /// Request body, sent with Content-Length (S3 PutObject needs an exact length).
    public var body: HTTPRequestBody?
    /// Connect to this Unix domain socket instead of the URL's host and port (the URL still
    /// gives the path and the Host header): `clipproxy purge` reaching an admin socket.
    public var unixSocketPath: String?

    public init(method: String, url: String, headers: [(name: String, value: String)] = [], body: [UInt8]? = nil) {
        self.init(method: method, url: url, headers: headers, upload: body.map(HTTPRequestBody.bytes))
    }

    public init(method: String, url: String, headers: [(name: String, value: String)] = [], upload: HTTPRequestBody?) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = upload
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
    /// Abort (`.timeout`) when fewer than `lowSpeedBytes` per second move over `lowSpeedWindow`,
    /// or when no byte at all moves for a whole window, however fast the transfer was before (a
    /// stalled peer). Checked by this class rather than by libcurl, whose speed is an average
    /// over the last five seconds and so notices a stall after a burst only seconds late.
    /// A stall is noticed between one window and one window plus a second after the last byte.
    /// Zero for either disables the rule.
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
        case upload         // the request body could not be read (file missing or shorter than declared)
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
        let upload = try UploadSource(request.body)
        let state = TransferState(upload: upload, speed: SpeedWatch(timeouts), onHead: onHead, onBody: onBody)
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
        // Set on every transfer (nil clears it) because pooled handles keep their options.
        ccurl_setopt_string(handle, CURLOPT_UNIX_SOCKET_PATH, request.unixSocketPath)
        // S3 keys may contain `.` and `..` segments: send the path as given, never "normalised".
        ccurl_setopt_long(handle, CURLOPT_PATH_AS_IS, 1)
        ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)  // threads + timeouts: no SIGALRM
        ccurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, timeouts.connect.milliseconds)
        if timeouts.lowSpeedBytes > 0 && timeouts.lowSpeedWindow > .zero {
            ccurl_setopt_long(handle, CURLOPT_NOPROGRESS, 0)
            ccurl_setopt_pointer(handle, CURLOPT_XFERINFODATA, userdata)
            ccurl_setopt_xferinfo_callback(handle, CURLOPT_XFERINFOFUNCTION, curlProgressCallback)
        }
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
            ccurl_setopt_off(handle, CURLOPT_INFILESIZE_LARGE, curl_off_t(body.length))
            ccurl_setopt_pointer(handle, CURLOPT_READDATA, userdata)
            ccurl_setopt_read_callback(handle, CURLOPT_READFUNCTION, curlReadCallback)
        }

        let code = curl_easy_perform(handle)
        if let error = state.consumerError { throw error }
        if let failure = upload?.failure {
            throw TransferError(kind: .upload, curlCode: Int(code.rawValue), detail: failure, bodyBytesDelivered: state.delivered)
        }
        if code == CURLE_ABORTED_BY_CALLBACK, let stall = state.speed.verdict {
            throw TransferError(kind: .timeout, curlCode: Int(code.rawValue), detail: stall, bodyBytesDelivered: state.delivered)
        }
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
        // SEND_FAIL_REWIND: a reused connection died under an upload that cannot be rewound in
        // place; a fresh attempt re-reads the body from the start.
        case CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_PARTIAL_FILE, CURLE_GOT_NOTHING, CURLE_SEND_FAIL_REWIND: .reset
        case CURLE_WRITE_ERROR, CURLE_ABORTED_BY_CALLBACK: .aborted
        default: .other
        }
    }
}

/// What the C callbacks need, reached through their userdata pointer.
private final class TransferState {
    let upload: UploadSource?
    var speed: SpeedWatch
    let onHead: (HTTPResponseHead) throws -> Void
    let onBody: (UnsafeRawBufferPointer) throws -> Bool
    var statusLine = 0
    var headers: [(name: String, value: String)] = []
    var headDelivered = false
    var delivered: Int64 = 0
    var consumerError: Error?

    init(upload: UploadSource?, speed: SpeedWatch, onHead: @escaping (HTTPResponseHead) throws -> Void,
         onBody: @escaping (UnsafeRawBufferPointer) throws -> Bool) {
        self.upload = upload
        self.speed = speed
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
    guard let upload = state.upload else { return 0 }
    return upload.read(into: UnsafeMutableRawBufferPointer(start: buffer, count: size * count))
}

private func curlProgressCallback(_ userdata: UnsafeMutableRawPointer?, _ downloadTotal: curl_off_t, _ downloaded: curl_off_t,
                                  _ uploadTotal: curl_off_t, _ uploaded: curl_off_t) -> Int32 {
    guard let userdata else { return 0 }
    let state = Unmanaged<TransferState>.fromOpaque(userdata).takeUnretainedValue()
    return state.speed.allows(moved: Int64(downloaded) + Int64(uploaded)) ? 0 : 1
}

/// The low-speed rule of `TransferTimeouts`, fed by libcurl's progress callback (which runs
/// whenever data moves, and about once a second while nothing does).
private struct SpeedWatch {
    private let minimumBytesPerSecond: Double
    private let windowNanos: UInt64
    private var windowStart: UInt64
    private var windowStartBytes: Int64 = 0
    private var lastProgress: UInt64
    private var lastBytes: Int64 = 0
    /// Why the transfer was stopped, once it was.
    private(set) var verdict: String?

    init(_ timeouts: TransferTimeouts) {
        minimumBytesPerSecond = Double(timeouts.lowSpeedBytes)
        windowNanos = UInt64(max(0, timeouts.lowSpeedWindow.milliseconds)) * 1_000_000
        windowStart = Self.now()
        lastProgress = windowStart
    }

    /// Whether the transfer may go on, with `moved` bytes sent and received so far.
    mutating func allows(moved: Int64) -> Bool {
        let now = Self.now()
        if moved > lastBytes {
            lastBytes = moved
            lastProgress = now
        }
        let seconds = Double(windowNanos) / 1e9
        if now - lastProgress >= windowNanos {
            verdict = "stalled: no data for \(seconds) s"
            return false
        }
        if now - windowStart >= windowNanos {
            let rate = Double(moved - windowStartBytes) / (Double(now - windowStart) / 1e9)
            if rate < minimumBytesPerSecond {
                verdict = "too slow: \(Int(rate)) bytes/s over \(seconds) s, below \(Int(minimumBytesPerSecond))"
                return false
            }
            windowStart = now
            windowStartBytes = moved
        }
        return true
    }

    private static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}

/// The request body of one transfer, read by libcurl's read callback. A file is opened when the
/// transfer starts and closed when it ends, so every attempt reads it from the beginning.
private final class UploadSource {
    private let bytes: [UInt8]
    private let fd: Int32
    private let length: Int64
    private var offset: Int64 = 0
    /// Why reading the body failed, if it did (the transfer was aborted).
    private(set) var failure: String?

    init?(_ body: HTTPRequestBody?) throws {
        switch body {
        case nil:
            return nil
        case .bytes(let bytes):
            self.bytes = bytes
            fd = -1
            length = Int64(bytes.count)
        case .file(let path, let length):
            let fd = Posix.openForReading(path)
            guard fd >= 0 else {
                throw TransferError(kind: .upload, curlCode: 0, detail: "cannot open upload file \(path): \(String(cString: strerror(errno)))",
                                    bodyBytesDelivered: 0)
            }
            bytes = []
            self.fd = fd
            self.length = length
        }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Fills `buffer` with the next bytes; 0 at the end; CURL_READFUNC_ABORT when the file fails.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let n = Int(min(Int64(buffer.count), length - offset))
        guard n > 0 else { return 0 }
        if fd < 0 {
            bytes.withUnsafeBytes { raw in
                buffer.baseAddress!.copyMemory(from: raw.baseAddress! + Int(offset), byteCount: n)
            }
            offset += Int64(n)
            return n
        }
        var got = Foundation.read(fd, buffer.baseAddress, n)
        while got < 0 && errno == EINTR { got = Foundation.read(fd, buffer.baseAddress, n) }
        guard got > 0 else {
            failure = got == 0 ? "upload file ended at byte \(offset) of \(length)" : "reading upload file failed: \(String(cString: strerror(errno)))"
            return Int(CURL_READFUNC_ABORT)
        }
        offset += Int64(got)
        return got
    }
}

extension Duration {
    /// Whole milliseconds, for C APIs that take them as `long`.
    var milliseconds: Int { Int(wholeMilliseconds) }
}
