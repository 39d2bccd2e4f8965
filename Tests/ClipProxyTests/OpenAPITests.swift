import Foundation
import Testing
import TestSupport

/// openapi.yaml at the repository root: valid OpenAPI, complete for the routes the server has, and
/// true of a live server (schemathesis generates requests from it and checks every answer).
@Suite("OpenAPI document: validated, and schemathesis against a live server")
struct OpenAPITests {
    static let document = RepoPaths.root.appendingPathComponent("openapi.yaml")
    static let venv = RepoPaths.root.appendingPathComponent(".venv/bin")

    /// What schemathesis checks on every response. Left out on purpose, because they judge inputs
    /// by the schema alone while this API's answers also depend on data and on configuration:
    /// `positive_data_acceptance` (a schema-valid window past an episode's end is 422, a random
    /// If-Match 412), `negative_data_rejection` (`exp` and `sig` are ignored when URL signing is
    /// off, so malformed ones are accepted) and the checks for authentication and stateful
    /// resources, which do not apply. `unsupported_method` is on: a method a path does not declare
    /// gets 405 with `Allow` (`UnroutedAsJSON`).
    static let checks = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
                         "response_headers_conformance", "response_schema_conformance", "unsupported_method"]

    /// The paths every server build has, each of which must be in the document.
    static let routes = ["/clips/{episode_id}/{start_ms}", "/api/v1/audio_clips/{episode_id}", "/api/v1/episodes", "/api/v1/search",
                         "/healthz", "/readyz", "/metrics"]

    /// Runs a program from the venv with its output in files (no pipe can fill up) and a time
    /// limit: SIGKILL when it runs over, since a child of a Swift Concurrency thread inherits a
    /// blocked SIGTERM.
    static func run(_ tool: String, _ arguments: [String], in directory: TemporaryDirectory,
                    timeout: TimeInterval) throws -> (status: Int32, output: String, timedOut: Bool) {
        let executable = try RepoPaths.require(venv.appendingPathComponent(tool), hint: "run `make test` (scripts/ensure-deps.sh installs scripts/requirements-test.txt)")
        let outputFile = directory.url.appendingPathComponent("\(tool)-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        let output = try FileHandle(forWritingTo: outputFile)
        defer { try? output.close() }
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = directory.url  // hypothesis keeps its example database here
        process.environment = ProcessInfo.processInfo.environment.merging(["NO_COLOR": "1", "COLUMNS": "120"]) { $1 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(100_000) }
        let timedOut = process.isRunning
        if timedOut { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return (process.terminationStatus, (try? String(contentsOf: outputFile, encoding: .utf8)) ?? "", timedOut)
    }

    @Test("openapi.yaml validates with openapi-spec-validator, a broken copy does not, and every route is documented")
    func documentValidates() throws {
        let work = try TemporaryDirectory("openapi-validate")
        defer { work.remove() }
        let valid = try Self.run("openapi-spec-validator", [Self.document.path], in: work, timeout: 60)
        #expect(valid.status == 0 && valid.output.contains("OK"), "\(valid.output)")

        // The validator really looks: the same document with one response missing its description fails.
        let text = try String(contentsOf: Self.document, encoding: .utf8)
        let broken = text.replacingOccurrences(of: "          description: Alive.\n", with: "")
        #expect(broken != text)
        let brokenFile = work.url.appendingPathComponent("broken.yaml")
        try broken.write(to: brokenFile, atomically: true, encoding: .utf8)
        let rejected = try Self.run("openapi-spec-validator", [brokenFile.path], in: work, timeout: 60)
        #expect(rejected.status != 0, "a response without a description must not validate: \(rejected.output)")

        for route in Self.routes {
            #expect(text.contains("\n  \(route):\n"), "\(route) is not documented")
        }
        for method in ["get", "head", "options"] {
            #expect(text.contains("    \(method):\n      tags: [clips]"), "/clips \(method.uppercased()) is not documented")
        }
    }

    @Test("schemathesis against a live clipproxy serve (embedded default): no server error, every answer as documented",
          arguments: [false, true])
    func schemathesis(signed: Bool) throws {
        let work = try TemporaryDirectory("openapi-schemathesis")
        defer { work.remove() }
        // With URL signing on, /clips answers 403 to every URL schemathesis makes up (it cannot
        // sign), and the JSON API hands out signed proxy URLs.
        var environment = EmbeddedServer(work: work).environment
        if signed { environment["CLIPPROXY_SIGNING_KEY"] = "openapi-test-signing-key-0123456789" }
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }

        try Self.fuzz(server, label: "embedded default, URL signing \(signed ? "on" : "off")", work: work)
    }

    @Test("schemathesis against clipproxy serve with the MongoDB catalog and S3 source and clip buckets (moto): no server error")
    func schemathesisFullStack() async throws {
        let work = try TemporaryDirectory("openapi-fullstack")
        defer { work.remove() }
        try await withTestServer(try TestServer.s3()) { s3 in
            try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
                _ = try FullStackTests.seedBucket(s3)
                _ = try ClipBucketTests().clipBucketClient(s3).createBucket(ClipBucketTests.clipBucket)
                let server = try ClipProxyProcess(environment: FullStackTests.environment(s3: s3, mongo: mongo, work: work))
                defer { server.stop() }
                try Self.fuzz(server, label: "MongoDB + S3", work: work)
            }
        }
    }

    /// Operations in openapi.yaml: method keys under `paths` (indented four spaces).
    static func documentedOperationCount() throws -> Int {
        let text = try String(contentsOf: document, encoding: .utf8)
        let methods: Set<String> = ["get", "head", "post", "put", "delete", "options", "patch"]
        return text.split(separator: "\n").filter { line in
            line.hasPrefix("    ") && !line.hasPrefix("     ") && line.hasSuffix(":")
                && methods.contains(String(line.dropFirst(4).dropLast()))
        }.count
    }

    /// Runs schemathesis over every operation against `server` and expects no failure of `checks`.
    static func fuzz(_ server: ClipProxyProcess, label: String, work: TemporaryDirectory) throws {
        // Whether the JSON pre-sign API is there in this build (it answers JSON even to a bad request).
        let probe = try fetch("\(server.baseURL)/api/v1/audio_clips/\(ServerTests.episode)")
        print("\(label): JSON pre-sign API present: \(probe.headers["content-type"] == "application/json") (status \(probe.status))")

        // Bounded: at most 50 generated cases per operation in each phase, a fixed seed so a
        // failure reproduces, and a hard limit on the whole run.
        let result = try run("schemathesis", [
            "run", document.path, "--url", server.baseURL,
            "--checks", checks.joined(separator: ","),
            "--max-examples", "50", "--seed", "20251126", "--workers", "2",
            "--request-timeout", "20", "--no-color",
        ], in: work, timeout: 150)
        let summary = result.output.components(separatedBy: "SUMMARY").last ?? result.output
        print("schemathesis, \(label) (exit \(result.status)):\(summary.suffix(1500))")
        #expect(!result.timedOut, "schemathesis ran over its time limit:\n\(result.output.suffix(4000))")
        #expect(result.status == 0, "schemathesis found failures (\(label)):\n\(result.output.suffix(12000))")
        // Every operation the document describes was exercised (counted from the document, so
        // a new endpoint cannot be left out of the run unnoticed).
        let operations = try documentedOperationCount()
        #expect(operations >= 8)
        #expect(result.output.contains("Tested: \(operations)\n") && result.output.contains("Selected: \(operations)/\(operations)"),
                "every one of the \(operations) operations was exercised:\n\(summary)")
        #expect(try fetch("\(server.baseURL)/healthz").status == 200, "the server is still up after the run")
    }
}
