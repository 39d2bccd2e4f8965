import Foundation

/// What to send for a `GET` or `HEAD` of one representation, given the request's Range and
/// conditional header fields: the status, the header fields that follow from them, and the body as
/// a list of parts (literal bytes for multipart framing, or byte ranges of the representation).
///
/// This is a pure decision (no I/O, no server types). The server streams each `.bytes` part from
/// wherever the representation lives (L1 file, L2 upstream, or a fill that is still growing), and
/// because the representation's length is known from the clip plan, `Content-Length` is exact for
/// every 200 and 206 before a byte is read.
///
/// Semantics follow RFC 9110 (sections 13 and 14) and match nginx 1.22's static file serving
/// (`ngx_http_not_modified_filter`, `ngx_http_range_filter`, with `if_modified_since before`),
/// which `RangeSemanticsTests` runs side by side. Where nginx departs from a requirement of
/// RFC 9110 this follows the RFC; where RFC 9110 leaves a choice this makes nginx's:
///
/// - Preconditions come before Range, in RFC 9110 13.2.2 order. If-Unmodified-Since is ignored when
///   If-Match is present or when it is not a valid HTTP-date, and If-Modified-Since is ignored when
///   If-None-Match is present (nginx evaluates each of them anyway).
/// - If-Modified-Since: not modified when Last-Modified <= the date (nginx's default is an exact
///   match only; `if_modified_since before` gives the RFC rule).
/// - Range: the unit is case-insensitive; SP and HTAB are accepted around numbers, dashes and
///   commas; empty list elements are ignored (RFC 9110 5.6.1; nginx answers 416 to `bytes=0-1,`
///   and to HTAB); positions too large for Int64 saturate instead of failing with 416.
///   Like nginx: invalid syntax anywhere → 416; individually unsatisfiable ranges (including
///   `9-5`) are dropped and 416 only when none is left; ranges are neither sorted nor coalesced;
///   more than `maxRanges` ranges, or ranges whose lengths add up to more than the representation
///   (overlap abuse), → 200 with the whole representation; a value of just `bytes=` and any other
///   unit are ignored; a zero-length representation is always served whole (200).
/// - Multipart framing is nginx's byte for byte: each part is CRLF, `--boundary`, CRLF,
///   `Content-Type`, CRLF, `Content-Range`, CRLF, CRLF, data; then CRLF `--boundary--` CRLF. The
///   boundary is 20 random alphanumerics where nginx uses a 20-digit counter (same length, so
///   the same Content-Length).
/// - HEAD gets exactly the status and header fields GET would get and no body: 206 for a
///   satisfiable Range, as nginx does. (RFC 9110 14.2 defines range handling for GET only; 9.3.2
///   asks HEAD to mirror GET's header fields, and that is what clients probing with HEAD expect.)
/// - 304 carries ETag and Last-Modified and no Content-Length; 412 and 416 carry
///   `Content-Length: 0` and no body (nginx sends an HTML error page). The server adds
///   Cache-Control, Date and CORS to every response, 304 included, and must not add a
///   Content-Length to a 304 or a body to a HEAD.
/// - `Accept-Ranges: bytes` on 200 and 206 (nginx omits it on 206; RFC 9110 allows either).
struct ByteRangeResponse: Sendable {
    /// The selected representation: what a 200 would send in full.
    struct Representation: Sendable, Equatable {
        var length: Int64
        /// A strong entity tag, quoted: `"\"abc\""`.
        var etag: String
        /// Compared and sent at whole-second precision (HTTP-dates have no fractions).
        var lastModified: Date
        var contentType: String

        init(length: Int64, etag: String, lastModified: Date, contentType: String) {
            precondition(length >= 0, "a representation has a non-negative length")
            self.length = length
            self.etag = etag
            self.lastModified = lastModified
            self.contentType = contentType
        }
    }

    /// The request header fields that decide the response, as received (nil when absent).
    struct RequestConditions: Sendable, Equatable {
        var method: String
        var range: String?
        var ifRange: String?
        var ifMatch: String?
        var ifNoneMatch: String?
        var ifModifiedSince: String?
        var ifUnmodifiedSince: String?

        init(method: String, range: String? = nil, ifRange: String? = nil, ifMatch: String? = nil,
             ifNoneMatch: String? = nil, ifModifiedSince: String? = nil, ifUnmodifiedSince: String? = nil) {
            self.method = method
            self.range = range
            self.ifRange = ifRange
            self.ifMatch = ifMatch
            self.ifNoneMatch = ifNoneMatch
            self.ifModifiedSince = ifModifiedSince
            self.ifUnmodifiedSince = ifUnmodifiedSince
        }

        /// Picks the fields out of a request's header list (names case-insensitive). A field sent on
        /// several lines is joined with ", " as RFC 9110 5.3 allows: lists (If-Match,
        /// If-None-Match) stay lists, and a repeated singleton becomes invalid, which is how RFC
        /// 9110 wants it treated (dates with more than one member are ignored, a doubled Range is
        /// rejected, a doubled If-Range does not match).
        init(method: String, headers: [(name: String, value: String)]) {
            func field(_ name: String) -> String? {
                let values = headers.filter { $0.name.caseInsensitiveEquals(name) }.map(\.value)
                return values.isEmpty ? nil : values.joined(separator: ", ")
            }
            self.init(method: method, range: field("Range"), ifRange: field("If-Range"), ifMatch: field("If-Match"),
                      ifNoneMatch: field("If-None-Match"), ifModifiedSince: field("If-Modified-Since"),
                      ifUnmodifiedSince: field("If-Unmodified-Since"))
        }
    }

    /// One piece of the body, in order.
    enum Part: Sendable, Equatable {
        /// Bytes made here (multipart boundaries and part headers).
        case literal([UInt8])
        /// Bytes `range` of the representation (half-open, within 0..<length).
        case bytes(Range<Int64>)

        var count: Int64 {
            switch self {
            case .literal(let bytes): Int64(bytes.count)
            case .bytes(let range): range.upperBound - range.lowerBound
            }
        }
    }

    /// What a Range header field asks for, once parsed against the representation's length.
    enum RangeDecision: Sendable, Equatable {
        /// Serve the whole representation with 200: another unit, nothing after `bytes=`, too many
        /// ranges, ranges adding up to more than the representation, or a zero-length representation.
        case ignore
        /// Serve these ranges (half-open, non-empty, in request order) with 206.
        case satisfiable([Range<Int64>])
        /// 416: invalid syntax, or no range overlaps the representation.
        case unsatisfiable
    }

    /// The outcome of RFC 9110 13.2.2 steps 1 to 4.
    enum PreconditionOutcome: Sendable, Equatable {
        case proceed
        case notModified            // 304
        case preconditionFailed     // 412
    }

    /// The status code: 200, 206, 304, 412 or 416.
    let status: Int
    /// Header fields that follow from the decision, in the order to send them.
    let headers: [(name: String, value: String)]
    /// The body, in order. Empty for HEAD, 304, 412 and 416. For GET its total is the value of
    /// Content-Length.
    let parts: [Part]

    /// The first header field with this name (case-insensitive).
    func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveEquals(name) }?.value
    }

    /// The number of body bytes the parts make up.
    var bodyLength: Int64 { parts.reduce(0) { $0 + $1.count } }

    /// The default limit on ranges in one request (nginx's `max_ranges`, which is unlimited by default).
    static let defaultMaxRanges = 128

    /// Decides the response to `request` for `representation`.
    /// - Parameters:
    ///   - boundary: the multipart boundary (1 to 70 characters a boundary may hold); a fresh random
    ///     one when nil.
    ///   - maxRanges: more satisfiable ranges than this → 200 with the whole representation.
    ///   - now: only resolves two-digit years in RFC 850 dates (RFC 9110 5.6.7).
    static func decide(_ request: RequestConditions, for representation: Representation,
                       boundary: String? = nil, maxRanges: Int = defaultMaxRanges, now: Date = Date()) -> ByteRangeResponse {
        let isHead = request.method == "HEAD"
        let length = representation.length
        let validators: [(name: String, value: String)] = [
            ("ETag", representation.etag), ("Last-Modified", HTTPDate.format(representation.lastModified)),
        ]

        switch evaluatePreconditions(request, for: representation, now: now) {
        case .notModified:
            return ByteRangeResponse(status: 304, headers: validators, parts: [])
        case .preconditionFailed:
            return ByteRangeResponse(status: 412, headers: [("Content-Length", "0")], parts: [])
        case .proceed:
            break
        }

        var decision = RangeDecision.ignore
        if request.method == "GET" || isHead, let range = request.range,
           request.ifRange.map({ ifRangeHolds($0, for: representation, now: now) }) ?? true {
            decision = parseRange(range, length: length, maxRanges: maxRanges)
        }

        let status: Int
        var headers: [(name: String, value: String)]
        var parts: [Part]
        switch decision {
        case .ignore:
            status = 200
            headers = [("Content-Type", representation.contentType), ("Content-Length", String(length))]
            parts = length > 0 ? [.bytes(0..<length)] : []
        case .unsatisfiable:
            return ByteRangeResponse(status: 416, headers: [("Content-Range", "bytes */\(length)"), ("Content-Length", "0")], parts: [])
        case .satisfiable(let ranges) where ranges.count == 1:
            status = 206
            headers = [("Content-Type", representation.contentType), ("Content-Length", String(ranges[0].count)),
                       ("Content-Range", contentRange(ranges[0], length: length))]
            parts = [.bytes(ranges[0])]
        case .satisfiable(let ranges):
            status = 206
            let boundary = boundary ?? makeBoundary()
            parts = multipartBody(ranges, boundary: boundary, representation: representation)
            let total = parts.reduce(Int64(0)) { $0 + $1.count }
            headers = [("Content-Type", "multipart/byteranges; boundary=\(boundary)"), ("Content-Length", String(total))]
        }
        headers += validators
        headers.append(("Accept-Ranges", "bytes"))
        return ByteRangeResponse(status: status, headers: headers, parts: isHead ? [] : parts)
    }

    // MARK: Preconditions (RFC 9110 13.2.2)

    static func evaluatePreconditions(_ request: RequestConditions, for representation: Representation,
                                      now: Date = Date()) -> PreconditionOutcome {
        // Parsed only when asked for: most requests carry no entity tag to compare.
        var ownTag: EntityTag? { EntityTag.parse(Substring(representation.etag)) }
        let lastModified = HTTPDate.seconds(representation.lastModified)
        let safe = request.method == "GET" || request.method == "HEAD"

        if let ifMatch = request.ifMatch {
            // Step 1: strong comparison; "*" matches any current representation.
            let holds = ifMatch.trimmingOWS() == "*"
                || (ownTag.map { own in EntityTag.list(ifMatch).contains { $0.strongMatch(own) } } ?? false)
            if !holds { return .preconditionFailed }
        } else if let value = request.ifUnmodifiedSince, let date = HTTPDate.parseSeconds(value, now: now) {
            // Step 2, only without If-Match; an invalid date is ignored.
            if lastModified > date { return .preconditionFailed }
        }

        if let ifNoneMatch = request.ifNoneMatch {
            // Step 3: weak comparison; "*" matches any current representation.
            let matches = ifNoneMatch.trimmingOWS() == "*"
                || (ownTag.map { own in EntityTag.list(ifNoneMatch).contains { $0.weakMatch(own) } } ?? false)
            if matches { return safe ? .notModified : .preconditionFailed }
        } else if safe, let value = request.ifModifiedSince, let date = HTTPDate.parseSeconds(value, now: now) {
            // Step 4, only without If-None-Match; an invalid date is ignored.
            if lastModified <= date { return .notModified }
        }
        return .proceed
    }

    /// RFC 9110 13.1.5: an entity tag must match strongly; a date must equal Last-Modified exactly.
    /// Like nginx, a value ending in a double quote is taken as an entity tag.
    static func ifRangeHolds(_ value: String, for representation: Representation, now: Date = Date()) -> Bool {
        let value = value.trimmingOWS()
        if value.hasSuffix("\"") || value.hasPrefix("\"") || value.hasPrefix("W/") {
            guard let tag = EntityTag.parse(value), tag.source.count == value.count,
                  let own = EntityTag.parse(Substring(representation.etag)) else { return false }
            return tag.strongMatch(own)
        }
        guard let date = HTTPDate.parseSeconds(String(value), now: now) else { return false }
        return date == HTTPDate.seconds(representation.lastModified)
    }

    // MARK: Range (RFC 9110 14.1 and 14.2, nginx's rules where the RFC leaves a choice)

    static func parseRange(_ value: String, length: Int64, maxRanges: Int = defaultMaxRanges) -> RangeDecision {
        let text = Array(value.trimmingOWS().utf8)
        let unit = Array("bytes=".utf8)
        guard text.count > unit.count,
              zip(text, unit).allSatisfy({ asciiLowercased($0) == $1 }) else { return .ignore }

        var i = unit.count
        func skipOWS() { while i < text.count, text[i] == space || text[i] == tab { i += 1 } }
        func isDigit() -> Bool { i < text.count && text[i] >= zero && text[i] <= zero + 9 }
        func number() -> Int64 {
            var value: Int64 = 0
            while isDigit() {
                let digit = Int64(text[i] - zero)
                value = value > (Int64.max - digit) / 10 ? Int64.max : value * 10 + digit
                i += 1
            }
            return value
        }

        var ranges: [Range<Int64>] = []
        var total: Int64 = 0
        var budget = maxRanges
        while true {
            skipOWS()
            if i == text.count { break }
            if text[i] == comma { i += 1; continue }    // empty list element

            var start: Int64, end: Int64                // half-open, clamped to the length
            if text[i] == dash {
                i += 1
                guard isDigit() else { return .unsatisfiable }
                let suffix = number()
                start = suffix < length ? length - suffix : 0
                end = length
            } else {
                guard isDigit() else { return .unsatisfiable }
                start = number()
                skipOWS()
                guard i < text.count, text[i] == dash else { return .unsatisfiable }
                i += 1
                skipOWS()
                if i == text.count || text[i] == comma {
                    end = length
                } else {
                    guard isDigit() else { return .unsatisfiable }
                    let last = number()
                    end = last >= length ? length : last + 1
                }
            }
            skipOWS()
            guard i == text.count || text[i] == comma else { return .unsatisfiable }

            if start < end {
                ranges.append(start..<end)
                total = total > Int64.max - (end - start) ? Int64.max : total + (end - start)
                if budget <= 0 { return .ignore }
                budget -= 1
            } else if start == 0 {
                return .ignore      // only a zero-length representation gets here
            }
        }
        if ranges.isEmpty { return .unsatisfiable }
        if total > length { return .ignore }
        return .satisfiable(ranges)
    }

    static func contentRange(_ range: Range<Int64>, length: Int64) -> String {
        "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(length)"
    }

    /// A boundary of 20 letters and digits: as long as nginx's, never in any realistic body.
    static func makeBoundary() -> String {
        let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        var generator = SystemRandomNumberGenerator()
        return String((0..<20).map { _ in alphabet.randomElement(using: &generator)! })
    }

    private static func multipartBody(_ ranges: [Range<Int64>], boundary: String,
                                      representation: Representation) -> [Part] {
        var parts: [Part] = []
        parts.reserveCapacity(ranges.count * 2 + 1)
        for range in ranges {
            let head = "\r\n--\(boundary)\r\nContent-Type: \(representation.contentType)\r\n"
                + "Content-Range: \(contentRange(range, length: representation.length))\r\n\r\n"
            parts.append(.literal(Array(head.utf8)))
            parts.append(.bytes(range))
        }
        parts.append(.literal(Array("\r\n--\(boundary)--\r\n".utf8)))
        return parts
    }

    // MARK: Entity tags (RFC 9110 8.8.3)

    struct EntityTag: Sendable, Equatable {
        var weak: Bool
        /// The quoted opaque tag, quotes included.
        var opaque: Substring
        /// What was parsed, `W/` included.
        var source: Substring

        func strongMatch(_ other: EntityTag) -> Bool { !weak && !other.weak && opaque == other.opaque }
        func weakMatch(_ other: EntityTag) -> Bool { opaque == other.opaque }

        /// The entity tag at the start of `text`, if one is there.
        static func parse(_ text: Substring) -> EntityTag? {
            var rest = text
            let weak = rest.hasPrefix("W/")
            if weak { rest = rest.dropFirst(2) }
            guard rest.first == "\"", let close = rest.dropFirst().firstIndex(of: "\"") else { return nil }
            let opaque = rest[rest.startIndex...close]
            return EntityTag(weak: weak, opaque: opaque, source: text[text.startIndex...close])
        }

        /// The entity tags of a `1#entity-tag` list; malformed members and empty elements are skipped.
        static func list(_ value: String) -> [EntityTag] {
            var tags: [EntityTag] = []
            var rest = Substring(value)
            while !rest.isEmpty {
                rest = rest.drop { $0 == " " || $0 == "\t" || $0 == "," }
                guard !rest.isEmpty else { break }
                if let tag = parse(rest) {
                    let after = rest[tag.source.endIndex...].drop { $0 == " " || $0 == "\t" }
                    if after.isEmpty || after.first == "," {
                        tags.append(tag)
                        rest = after
                        continue
                    }
                    rest = after
                }
                // Not a well-formed member: skip to the next comma.
                rest = rest.drop { $0 != "," }
            }
            return tags
        }
    }

    // MARK: HTTP-date (RFC 9110 5.6.7)

    enum HTTPDate {
        private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        private static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]

        /// Whole seconds since 1970, rounded down.
        static func seconds(_ date: Date) -> Int64 { Int64(floor(date.timeIntervalSince1970)) }

        /// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
        static func format(_ date: Date) -> String {
            let total = seconds(date)
            let days = floorDivide(total, 86_400)
            let second = total - days * 86_400
            let (year, month, day) = civil(days)
            let weekday = Int(((days % 7) + 11) % 7)     // 1970-01-01 was a Thursday
            // Built as bytes: this runs for every clip response (Last-Modified, Date).
            var text: [UInt8] = []
            text.reserveCapacity(29)
            func two(_ n: Int64) { text.append(UInt8(48 + n / 10)); text.append(UInt8(48 + n % 10)) }
            text += weekdays[weekday].utf8
            text += ", ".utf8
            two(day)
            text.append(32)
            text += months[Int(month) - 1].utf8
            text.append(32)
            if year >= 0, year < 10_000 {
                two(year / 100)
                two(year % 100)
            } else {
                let yearText = String(year)
                text += (String(repeating: "0", count: max(0, 4 - yearText.count)) + yearText).utf8
            }
            text.append(32)
            two(second / 3600)
            text.append(58)
            two(second / 60 % 60)
            text.append(58)
            two(second % 60)
            text += " GMT".utf8
            return String(decoding: text, as: UTF8.self)
        }

        static func parse(_ value: String, now: Date = Date()) -> Date? {
            parseSeconds(value, now: now).map { Date(timeIntervalSince1970: TimeInterval($0)) }
        }

        /// Accepts IMF-fixdate, RFC 850 and asctime dates (the day name is not checked against the
        /// date, as nginx does not either; a trailing `GMT` may be missing). Nil when invalid.
        static func parseSeconds(_ value: String, now: Date = Date()) -> Int64? {
            var s = Array(value.trimmingOWS().utf8)[...]
            func take(_ byte: UInt8) -> Bool {
                guard s.first == byte else { return false }
                s = s.dropFirst()
                return true
            }
            func digits(_ count: ClosedRange<Int>) -> Int64? {
                let run = s.prefix { $0 >= zero && $0 <= zero + 9 }
                guard count.contains(run.count) else { return nil }
                s = s.dropFirst(run.count)
                return run.reduce(0) { $0 * 10 + Int64($1 - zero) }
            }
            func monthName() -> Int64? {
                guard s.count >= 3, let index = months.firstIndex(where: { $0.utf8.elementsEqual(s.prefix(3)) }) else { return nil }
                s = s.dropFirst(3)
                return Int64(index + 1)
            }
            func time() -> (Int64, Int64, Int64)? {
                guard let h = digits(2...2), take(colon), let m = digits(2...2), take(colon), let sec = digits(2...2),
                      h < 24, m < 60, sec < 60 else { return nil }
                return (h, m, sec)
            }

            let name = s.prefix { ($0 | 0x20) >= 0x61 && ($0 | 0x20) <= 0x7A }
            guard name.count >= 3 else { return nil }
            s = s.dropFirst(name.count)

            var year: Int64, month: Int64, day: Int64, clock: (Int64, Int64, Int64)
            if take(comma) {
                guard take(space), let d = digits(2...2) else { return nil }
                day = d
                if take(space) {                                    // IMF-fixdate
                    guard let m = monthName(), take(space), let y = digits(4...4), take(space), let t = time() else { return nil }
                    (month, year, clock) = (m, y, t)
                } else if take(dash) {                              // RFC 850
                    guard let m = monthName(), take(dash), let yy = digits(2...2), take(space), let t = time() else { return nil }
                    // RFC 9110: a two-digit year more than 50 years ahead is in the past century.
                    let (thisYear, _, _) = civil(floorDivide(seconds(now), 86_400))
                    var y = thisYear - thisYear % 100 + yy
                    if y > thisYear + 50 { y -= 100 }
                    (month, year, clock) = (m, y, t)
                } else {
                    return nil
                }
                let zone = s.drop { $0 == space || $0 == tab }
                guard zone.isEmpty || zone.elementsEqual("GMT".utf8) || zone.elementsEqual("UTC".utf8) else { return nil }
            } else {                                                // asctime: Sun Nov  6 08:49:37 1994
                guard take(space), let m = monthName(), take(space) else { return nil }
                _ = take(space)
                guard let d = digits(1...2), take(space), let t = time(), take(space), let y = digits(4...4), s.isEmpty else { return nil }
                (month, day, clock, year) = (m, d, t, y)
            }

            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
            let monthDays: [Int64] = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
            guard day >= 1, day <= monthDays[Int(month) - 1] else { return nil }
            return days(year: year, month: month, day: day) * 86_400 + clock.0 * 3600 + clock.1 * 60 + clock.2
        }

        private static func floorDivide(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }

        /// Days since 1970-01-01 of a proleptic Gregorian date (era arithmetic, 400-year cycles).
        private static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
            let y = month <= 2 ? year - 1 : year
            let era = floorDivide(y, 400)
            let yearOfEra = y - era * 400
            let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
            let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
            return era * 146_097 + dayOfEra - 719_468
        }

        /// The inverse of `days(year:month:day:)`.
        private static func civil(_ days: Int64) -> (year: Int64, month: Int64, day: Int64) {
            let shifted = days + 719_468
            let era = floorDivide(shifted, 146_097)
            let dayOfEra = shifted - era * 146_097
            let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
            let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
            let shiftedMonth = (5 * dayOfYear + 2) / 153
            let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
            let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
            return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
        }
    }
}

private let space = UInt8(ascii: " "), tab = UInt8(ascii: "\t"), comma = UInt8(ascii: ","),
            dash = UInt8(ascii: "-"), colon = UInt8(ascii: ":"), zero = UInt8(ascii: "0")

private func asciiLowercased(_ byte: UInt8) -> UInt8 {
    byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
}

private extension StringProtocol {
    /// Without leading and trailing SP and HTAB (HTTP's OWS).
    func trimmingOWS() -> SubSequence {
        let isOWS: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = firstIndex(where: { !isOWS($0) }), let last = lastIndex(where: { !isOWS($0) }) else {
            return self[endIndex...]
        }
        return self[first...last]
    }

    func caseInsensitiveEquals(_ other: String) -> Bool {
        utf8.count == other.utf8.count && zip(utf8, other.utf8).allSatisfy { asciiLowercased($0) == asciiLowercased($1) }
    }
}
