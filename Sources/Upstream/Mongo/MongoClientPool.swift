import CMongoc
import Foundation

/// A condition on one field of a filter. Only what the catalog queries need.
public enum MongoFilterValue: Sendable, Equatable {
    case objectId(String)   // 24 hex digits
    case string(String)
    case int64(Int64)
    /// The field's string matches every one of these regular expressions, in any case:
    /// `{$and: [{field: {$regex: p, $options: "i"}}, ...]}`.
    case matchingAll([String])
    /// The field equals one of these strings: `{field: {$in: [...]}}`.
    case oneOf([String])
}

/// A failure talking to MongoDB. Messages come from libmongoc and never include the URI's password.
public struct MongoError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        case invalidURI
        case unavailable     // no server selectable within the timeout, or the connection failed
        case commandFailed   // the server answered with an error
        case badDocument     // a reply that is not valid BSON / JSON
    }
    public let kind: Kind
    public let detail: String
    public var description: String { "MongoDB \(kind): \(detail)" }
}

private let mongocRuntime: Void = {
    // Once per process: calling mongoc_init again after mongoc_cleanup corrupts the handshake.
    mongoc_init()
}()

/// A libmongoc client pool. Every call blocks its thread; callers run them on a thread pool.
/// `@unchecked Sendable`: mongoc_client_pool_t is documented thread-safe, and each call pops its
/// own mongoc_client_t, which is used by that one thread only and pushed back before returning.
public final class MongoClientPool: @unchecked Sendable {
    private let pool: OpaquePointer
    public let database: String

    /// - Parameters:
    ///   - uri: a `mongodb://` URI. Its own timeouts win; otherwise `timeout` bounds server selection
    ///     and connecting, so an unreachable server fails fast instead of hanging.
    public init(uri: String, database: String, timeout: Duration = .seconds(3), appName: String = "clipproxy") throws {
        _ = mongocRuntime
        var error = bson_error_t()
        guard let parsed = mongoc_uri_new_with_error(uri, &error) else {
            throw MongoError(kind: .invalidURI, detail: Self.message(error))
        }
        defer { mongoc_uri_destroy(parsed) }
        let millis = Int32(clamping: Int64(timeout.milliseconds))
        if !uri.contains("serverSelectionTimeoutMS") {
            mongoc_uri_set_option_as_int32(parsed, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, millis)
        }
        if !uri.contains("connectTimeoutMS") {
            mongoc_uri_set_option_as_int32(parsed, MONGOC_URI_CONNECTTIMEOUTMS, millis)
        }
        if !uri.contains("socketTimeoutMS") {
            mongoc_uri_set_option_as_int32(parsed, MONGOC_URI_SOCKETTIMEOUTMS, millis)
        }
        mongoc_uri_set_option_as_utf8(parsed, MONGOC_URI_APPNAME, appName)
        guard let pool = mongoc_client_pool_new(parsed) else {
            throw MongoError(kind: .invalidURI, detail: "libmongoc refused the URI")
        }
        mongoc_client_pool_set_error_api(pool, Int32(MONGOC_ERROR_API_VERSION_2))
        self.pool = pool
        self.database = database
    }

    deinit { mongoc_client_pool_destroy(pool) }

    /// Runs `{ping: 1}` against the database: succeeds only if a server answers.
    public func ping() throws {
        try withClient { client in
            let command = bson_new()!
            defer { bson_destroy(command) }
            bson_append_int32(command, "ping", -1, 1)
            let reply = bson_new()!
            defer { bson_destroy(reply) }
            var error = bson_error_t()
            guard mongoc_client_command_simple(client, database, command, nil, reply, &error) else {
                throw Self.failure(error)
            }
        }
    }

    /// Documents of `collection` whose fields equal `filter`, as Extended JSON values.
    /// `projection` names the fields to return (all when empty); `includeId: false` leaves `_id` out too.
    /// `sort` orders by each field in turn, ascending or not.
    public func find(collection: String, filter: [(field: String, value: MongoFilterValue)],
                     projection: [String] = [], includeId: Bool = true, sort: [(field: String, ascending: Bool)] = [],
                     limit: Int = 0) throws -> [JSONValue] {
        try withClient { client in
            guard let coll = mongoc_client_get_collection(client, database, collection) else {
                throw MongoError(kind: .commandFailed, detail: "cannot open collection \(collection)")
            }
            defer { mongoc_collection_destroy(coll) }
            let query = try Self.bson(filter)
            defer { bson_destroy(query) }
            let options = bson_new()!
            defer { bson_destroy(options) }
            if limit > 0 { bson_append_int64(options, "limit", -1, Int64(limit)) }
            if !sort.isEmpty {
                let order = bson_new()!
                defer { bson_destroy(order) }
                for (field, ascending) in sort { bson_append_int32(order, field, -1, ascending ? 1 : -1) }
                bson_append_document(options, "sort", -1, order)
            }
            if !projection.isEmpty || !includeId {
                let fields = bson_new()!
                defer { bson_destroy(fields) }
                for name in projection { bson_append_int32(fields, name, -1, 1) }
                if !includeId { bson_append_int32(fields, "_id", -1, 0) }
                bson_append_document(options, "projection", -1, fields)
            }
            guard let cursor = mongoc_collection_find_with_opts(coll, query, options, nil) else {
                throw MongoError(kind: .commandFailed, detail: "find on \(collection) could not start")
            }
            defer { mongoc_cursor_destroy(cursor) }
            var results: [JSONValue] = []
            var document: OpaquePointer? = nil
            while mongoc_cursor_next(cursor, &document) {
                guard let document else { continue }
                results.append(try Self.json(document))
            }
            var error = bson_error_t()
            if mongoc_cursor_error(cursor, &error) { throw Self.failure(error) }
            return results
        }
    }

    private func withClient<T>(_ body: (OpaquePointer) throws -> T) throws -> T {
        guard let client = mongoc_client_pool_pop(pool) else {
            throw MongoError(kind: .unavailable, detail: "no client available from the pool")
        }
        defer { mongoc_client_pool_push(pool, client) }
        return try body(client)
    }

    private static func bson(_ filter: [(field: String, value: MongoFilterValue)]) throws -> OpaquePointer {
        let doc = bson_new()!
        for (field, value) in filter {
            switch value {
            case .string(let s): bson_append_utf8(doc, field, -1, s, -1)
            case .int64(let n): bson_append_int64(doc, field, -1, n)
            case .objectId(let hex):
                guard bson_oid_is_valid(hex, hex.utf8.count) else {
                    bson_destroy(doc)
                    throw MongoError(kind: .badDocument, detail: "not an ObjectId: \(hex)")
                }
                var oid = bson_oid_t()
                bson_oid_init_from_string(&oid, hex)
                bson_append_oid(doc, field, -1, &oid)
            case .matchingAll(let patterns):
                let conditions = patterns.map { pattern in
                    let regex = bson_new()!
                    bson_append_utf8(regex, "$regex", -1, pattern, -1)
                    bson_append_utf8(regex, "$options", -1, "i", -1)
                    return document(field, regex)
                }
                appendArray(doc, "$and", conditions) { bson_append_document($0, $1, -1, $2) }
                conditions.forEach { bson_destroy($0) }
            case .oneOf(let values):
                let condition = bson_new()!
                appendArray(condition, "$in", values) { bson_append_utf8($0, $1, -1, $2, -1) }
                bson_append_document(doc, field, -1, condition)
                bson_destroy(condition)
            }
        }
        return doc
    }

    /// `{field: value}`; takes ownership of `value`.
    private static func document(_ field: String, _ value: OpaquePointer) -> OpaquePointer {
        defer { bson_destroy(value) }
        let doc = bson_new()!
        bson_append_document(doc, field, -1, value)
        return doc
    }

    /// Appends `items` to `doc` as a BSON array named `name` (a document keyed "0", "1", ...).
    private static func appendArray<T>(_ doc: OpaquePointer, _ name: String, _ items: [T],
                                       _ append: (OpaquePointer, String, T) -> Bool) {
        let array = bson_new()!
        defer { bson_destroy(array) }
        for (index, item) in items.enumerated() { _ = append(array, String(index), item) }
        bson_append_array(doc, name, -1, array)
    }

    private static func json(_ document: OpaquePointer) throws -> JSONValue {
        var length = 0
        guard let text = bson_as_canonical_extended_json(document, &length) else {
            throw MongoError(kind: .badDocument, detail: "document is not valid BSON")
        }
        defer { bson_free(text) }
        do {
            return try JSONValue(parsing: Data(bytes: text, count: length))
        } catch {
            throw MongoError(kind: .badDocument, detail: "document did not convert to JSON: \(error)")
        }
    }

    private static func failure(_ error: bson_error_t) -> MongoError {
        // Server selection and stream errors mean "no usable server"; anything else is the server's answer.
        let unavailable = error.domain == MONGOC_ERROR_SERVER_SELECTION.rawValue || error.domain == MONGOC_ERROR_STREAM.rawValue
            || error.domain == MONGOC_ERROR_CLIENT.rawValue
        return MongoError(kind: unavailable ? .unavailable : .commandFailed, detail: message(error))
    }

    private static func message(_ error: bson_error_t) -> String {
        withUnsafeBytes(of: error.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}
