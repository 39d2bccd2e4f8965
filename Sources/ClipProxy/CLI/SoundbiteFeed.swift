import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// One `<item>` of a podcast RSS feed, reduced to what warming needs.
struct FeedItem: Equatable {
    /// The item's `<guid>`, trimmed; nil when it has none (or an empty one).
    let guid: String?
    let title: String?
    /// Where the item starts in the feed, for messages.
    let line: Int
    let soundbites: [Soundbite]

    /// How messages name the item: its title and guid, or its line when it has neither.
    var name: String {
        switch (title, guid) {
        case let (title?, guid?): "\"\(title)\" (guid \(guid))"
        case let (nil, guid?): "guid \(guid)"
        case let (title?, nil): "\"\(title)\" (line \(line))"
        case (nil, nil): "the item at line \(line)"
        }
    }
}

/// One `<podcast:soundbite startTime="73.5" duration="45.0">Title</podcast:soundbite>`.
struct Soundbite: Equatable {
    enum Timing: Equatable {
        case clip(startMs: Int64, durationMs: Int64)
        /// What is wrong with the attributes, in words for the user.
        case invalid(String)
    }

    let title: String
    /// `startTime` as written, so messages show the feed's own value.
    let startTime: String
    let line: Int
    let timing: Timing
}

/// Reads the soundbites of a podcast RSS 2.0 feed. Soundbites are matched by namespace URI, not
/// by prefix: a feed may bind the Podcasting 2.0 namespace to any prefix.
enum SoundbiteFeed {
    /// The Podcasting 2.0 namespace, and the GitHub address early feeds declared for it.
    static let namespaces: Set<String> = [
        "https://podcastindex.org/namespace/1.0",
        "https://github.com/Podcastindex-org/podcast-namespace/blob/main/docs/1.0.md",
    ]

    /// A feed that cannot be read at all.
    struct ParseError: Error, Equatable, CustomStringConvertible {
        let description: String
        /// The parser's position for XML that is not well formed.
        var line: Int? = nil
        var column: Int? = nil
    }

    /// Every item of the feed's `<channel>`, with its soundbites (bad values are kept as
    /// `.invalid`, so the caller can report them with the rest). Throws for data that is not XML
    /// (with the parser's line and column) and for XML without a `<channel>`.
    static func parse(_ data: Data) throws -> [FeedItem] {
        guard !data.isEmpty else { throw ParseError(description: "the feed is empty") }
        let parser = XMLParser(data: data)
        let reader = FeedReader()
        parser.delegate = reader
        parser.shouldProcessNamespaces = true
        parser.shouldResolveExternalEntities = false
        // libxml2 recovers from many errors and parse() may still return true: the delegate's
        // record of the first error decides.
        let finished = parser.parse()
        if let error = reader.error {
            throw ParseError(description: "not XML: line \(error.line), column \(error.column): \(error.reason)", line: error.line, column: error.column)
        }
        guard finished else {
            throw ParseError(description: "not XML: line \(parser.lineNumber), column \(parser.columnNumber)",
                             line: parser.lineNumber, column: parser.columnNumber)
        }
        guard reader.sawChannel else {
            let root = reader.rootElement.map { "<\($0)>" } ?? "nothing"
            throw ParseError(description: "no <channel> element (the document's root is \(root)): not an RSS 2.0 podcast feed")
        }
        return reader.items
    }

    /// Whole milliseconds of a count of seconds written in a feed (`73.5`, `45`, `.25`), rounded
    /// to the nearest; `.failure` says what is wrong with it.
    static func milliseconds(_ text: String, attribute: String) -> Result<Int64, SoundbiteValueError> {
        let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
        let digits = value.hasPrefix("-") || value.hasPrefix("+") ? String(value.dropFirst()) : value
        guard digits.wholeMatch(of: /[0-9]*\.?[0-9]*/) != nil, digits.contains(where: \.isNumber), let seconds = Double(digits) else {
            return .failure(SoundbiteValueError("\(attribute)=\"\(text)\" is not a number of seconds (write it like 73.5)"))
        }
        if value.hasPrefix("-") && seconds > 0 {
            return .failure(SoundbiteValueError("\(attribute)=\"\(text)\" is negative"))
        }
        // The server takes at most 12 digits of milliseconds; anything near that is a typo.
        guard seconds < 1e9 else { return .failure(SoundbiteValueError("\(attribute)=\"\(text)\" is too large (over 31 years)")) }
        return .success(Int64((seconds * 1000).rounded()))
    }

    static func timing(startTime: String?, duration: String?) -> Soundbite.Timing {
        guard let startTime else { return .invalid("no startTime attribute") }
        guard let duration else { return .invalid("no duration attribute") }
        do {
            let startMs = try milliseconds(startTime, attribute: "startTime").get()
            let durationMs = try milliseconds(duration, attribute: "duration").get()
            guard durationMs > 0 else { return .invalid("duration=\"\(duration)\" is zero: a soundbite needs a length") }
            return .clip(startMs: startMs, durationMs: durationMs)
        } catch {
            return .invalid(error.description)
        }
    }
}

struct SoundbiteValueError: Error, Equatable, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The XMLParser delegate behind `SoundbiteFeed.parse`: follows the element path and collects
/// the text of each item's `<guid>`, `<title>` and soundbites.
private final class FeedReader: NSObject, XMLParserDelegate {
    private struct Open { let namespace: String?; let name: String }
    private struct PendingItem { let line: Int; var guid: String?; var title: String?; var soundbites: [Soundbite] = [] }
    private struct PendingSoundbite { let depth: Int; let line: Int; let attributes: [String: String]; let problem: String? }

    var items: [FeedItem] = []
    var sawChannel = false
    var rootElement: String?
    /// The first error that makes the document not XML.
    var error: (line: Int, column: Int, reason: String)?

    private var path: [Open] = []
    private var item: PendingItem?
    private var soundbite: PendingSoundbite?
    private var text = ""

    private func isPlain(_ open: Open, _ name: String) -> Bool { (open.namespace ?? "").isEmpty && open.name == name }

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        let open = Open(namespace: namespaceURI, name: elementName)
        if rootElement == nil { rootElement = qualifiedName ?? elementName }
        if isPlain(open, "channel") { sawChannel = true }
        if isPlain(open, "item"), item == nil, path.contains(where: { isPlain($0, "channel") }) {
            item = PendingItem(line: parser.lineNumber)
        } else if item != nil, elementName == "soundbite", SoundbiteFeed.namespaces.contains(namespaceURI ?? "") {
            soundbite = PendingSoundbite(depth: path.count, line: parser.lineNumber, attributes: attributes, problem: nil)
        } else if item != nil, (namespaceURI ?? "").isEmpty, let qualifiedName, qualifiedName.hasSuffix(":soundbite") {
            // A prefix with no xmlns declaration: libxml2 reports it but goes on, so say it here.
            let prefix = qualifiedName.dropLast(":soundbite".count)
            soundbite = PendingSoundbite(depth: path.count, line: parser.lineNumber, attributes: attributes, problem:
                "the prefix \(prefix): is not declared (add xmlns:\(prefix)=\"https://podcastindex.org/namespace/1.0\" to <rss>)")
        }
        path.append(open)
        text = ""
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

    func parser(_ parser: XMLParser, foundCDATA CDATABlock: Data) { text += String(decoding: CDATABlock, as: UTF8.self) }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
        guard let open = path.popLast() else { return }
        let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
        // Only the item's own <guid> and <title>, not those of something nested in it.
        let childOfItem = item != nil && path.last.map { isPlain($0, "item") } == true
        if childOfItem && isPlain(open, "guid") {
            item?.guid = value.isEmpty ? nil : value
        } else if childOfItem && isPlain(open, "title") {
            item?.title = value.isEmpty ? nil : value
        } else if let pending = soundbite, pending.depth == path.count {
            let startTime = pending.attributes["startTime"], duration = pending.attributes["duration"]
            item?.soundbites.append(Soundbite(title: value, startTime: startTime ?? "", line: pending.line,
                                              timing: pending.problem.map { .invalid($0) }
                                                  ?? SoundbiteFeed.timing(startTime: startTime, duration: duration)))
            soundbite = nil
        } else if isPlain(open, "item"), let done = item, !path.contains(where: { isPlain($0, "item") }) {
            items.append(FeedItem(guid: done.guid, title: done.title, line: done.line, soundbites: done.soundbites))
            item = nil
        }
        text = ""
    }

    func parser(_ parser: XMLParser, parseErrorOccurred parseError: any Error) {
        let code = (parseError as NSError).code
        // Namespace errors (libxml2's 200s) leave the XML readable; an undeclared soundbite prefix is reported above.
        guard error == nil, code < 200 else { return }
        // The first error is where the document stopped being XML; what follows is libxml2 recovering.
        error = (parser.lineNumber, parser.columnNumber, Self.reason(code))
        parser.abortParsing()
    }

    /// Foundation on Linux passes libxml2's error number but not its message: these are the ones
    /// a broken feed usually shows.
    private static func reason(_ code: Int) -> String {
        switch code {
        case 4: "no XML element where the document should start (an empty file, or not XML at all, like an HTML error page)"
        case 5: "the document does not end properly (an element left open, or more after the last closing tag)"
        case 9: "a character XML does not allow"
        case 26: "an entity XML does not define (HTML's &nbsp; must be written &#160;)"
        case 39: "an attribute value without quotes"
        case 76: "a closing tag that does not match the element it closes"
        case 77: "the document ends inside a tag (was it cut off?)"
        default: "libxml2 error \(code)"
        }
    }
}
