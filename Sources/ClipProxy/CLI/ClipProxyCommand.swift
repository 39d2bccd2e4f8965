import Foundation
import ArgumentParser
import Logging

@main
struct ClipProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clipproxy",
        abstract: "A content-addressed caching proxy that serves exact podcast clips from S3.",
        discussion: "Design and contract: docs/ARCHITECTURE.md. Configuration keys: docs/CONFIGURATION.md and conf/clipproxy.yaml. Operations: docs/OPERATIONS.md.",
        version: ClipProxyVersion.string,
        subcommands: [
            ServeCommand.self, TrimCommand.self, ProbeCommand.self, ResolveCommand.self,
            S3Command.self, IndexCommand.self, WarmCommand.self, PurgeCommand.self, SignCommand.self,
            IndexSourcesCommand.self,
        ])

    static func main() async {
        LoggingSystem.bootstrap { label in
            StderrLogHandler(label: label)
        }
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

enum ClipProxyVersion {
    static let string = "0.1.0"
}

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Configuration file (YAML or JSON); every key can be overridden by its CLIPPROXY_* variable.")
    var config: String?

    func load() throws -> Configuration {
        let configuration = try Configuration.load(file: config)
        for warning in configuration.warnings { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }
        return configuration
    }
}

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "Serve /clips, the JSON pre-sign API, /healthz, /readyz and /metrics.")
    @OptionGroup var options: ConfigOption
    func run() async throws { try await ClipServer.run(try options.load()) }
}

struct TrimCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "trim", abstract: "Cut an exact clip from a local MP3 without re-encoding.")
    @Argument(help: "Source MP3 file.") var source: String
    @Option(name: .long, help: "Start of the clip in milliseconds.") var startMs: Int64
    @Option(name: .long, help: "Length of the clip in milliseconds.") var durationMs: Int64 = 30000
    @Option(name: .shortAndLong, help: "Output file.") var output: String
    func run() async throws { try TrimTool.trim(source: source, startMs: startMs, durationMs: durationMs, output: output) }
}

struct ProbeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "probe", abstract: "Describe a source MP3 as JSON (codec, frames, encoder delay, …).")
    @Argument(help: "Source MP3 file.") var source: String
    func run() async throws { try TrimTool.probe(source: source) }
}

struct ResolveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resolve", abstract: "Resolve an episode id to its source object as JSON.")
    @Argument(help: "Episode id: a 24-hex ObjectId or a guid.") var episodeId: String
    @OptionGroup var options: ConfigOption
    func run() async throws { try UpstreamTools.resolve(episodeId, try options.load()) }
}

struct S3Command: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "s3", abstract: "S3 utilities.", subcommands: [Presign.self])

    struct Presign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "presign", abstract: "Print a SigV4 pre-signed GET URL for s3://BUCKET/KEY.")
        @Argument(help: "s3://BUCKET/KEY") var url: String
        @Option(name: .long, help: "Lifetime in seconds (1 to 604800).") var expires: Int = 86400
        @Option(name: .long, help: "Sign as of this ISO 8601 time instead of now.") var now: String?
        @OptionGroup var options: ConfigOption
        func run() async throws { try UpstreamTools.presign(url, expires: expires, now: now, try options.load()) }
    }
}

struct IndexCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "index", abstract: "Inspect and maintain the local index and clip store.",
                                                    subcommands: [Stats.self, Verify.self, GC.self])
    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "stats", abstract: "Counts and sizes of the index and the clip store.")
        @OptionGroup var options: ConfigOption
        func run() async throws { try IndexTool.stats(try options.load()) }
    }
    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "verify", abstract: "Recompute every stored clip's digest and report mismatches.")
        @OptionGroup var options: ConfigOption
        func run() async throws { try IndexTool.verify(try options.load()) }
    }
    struct GC: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "gc", abstract: "Reconcile the index with the disk and evict down to the byte budget.")
        @OptionGroup var options: ConfigOption
        func run() async throws { try IndexTool.gc(try options.load()) }
    }
}

struct WarmCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "warm", abstract: "Fill the caches with clips ahead of demand: start times of one episode, or a feed's soundbites.",
        usage: """
        clipproxy warm <episode-id> <start-ms> ... [--duration-ms N] [--server URL] [--config FILE]
        clipproxy warm --feed PATH_OR_URL [--concurrency N] [--server URL] [--config FILE]
        """,
        discussion: FeedWarmTool.help)
    @Argument(help: "Episode id (not with --feed).") var episodeId: String?
    @Argument(help: "Start times in milliseconds.") var startMs: [Int64] = []
    @Option(name: .long, help: "Clip length in milliseconds (default: the server's clips.default_duration_ms).") var durationMs: Int64?
    @Option(name: .long, help: "A podcast RSS feed, a file or an http(s) URL: warm every <podcast:soundbite> of its items.") var feed: String?
    @Option(name: .long, help: "With --feed: clips requested at once (1 to 64).") var concurrency: Int = 4
    @Option(name: .long, help: ArgumentHelp("Seconds between progress lines when standard output is not a terminal.", visibility: .hidden))
    var progressInterval: Double = 5
    @Option(name: .long, help: "Base URL of the server, e.g. http://127.0.0.1:8080 (default: from the configuration).") var server: String?
    @OptionGroup var options: ConfigOption
    func validate() throws {
        if feed != nil, episodeId != nil || durationMs != nil {
            throw ValidationError("--feed takes each clip's episode, start and length from the feed: give no episode id, start times or --duration-ms")
        }
        if feed == nil, episodeId == nil { throw ValidationError("give an episode id and start times, or --feed PATH_OR_URL") }
    }
    func run() async throws {
        if let feed {
            try FeedWarmTool.run(feed: feed, server: server, concurrency: concurrency, progressInterval: progressInterval, try options.load())
        } else {
            try ClipURLTools.warm(episodeId: episodeId ?? "", starts: startMs, durationMs: durationMs, server: server, try options.load())
        }
    }
}

struct IndexSourcesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index-sources", abstract: "Index every source not yet indexed and share the index through the second tier.",
        discussion: """
        Walks the source bucket (or source directory), and for each episode's source whose frame \
        index the clip bucket (or clip directory) does not hold yet, builds it and stores it where \
        nodes look for it, so the first clip of a new episode never waits for a scan. Run it after \
        ingest. Interrupt it with Ctrl-C (it finishes what is in flight); run it again to resume. \
        Exits 1 when any source failed, 130 when interrupted.
        """)
    @Option(name: .long, help: "Only this feed's sources (the folder <feed>/ of the source bucket or directory).") var feed: String?
    @Option(name: .long, help: "Sources indexed at once (1 to 64).") var concurrency: Int = 4
    @Option(name: .long, help: ArgumentHelp("Seconds between progress lines when standard output is not a terminal.", visibility: .hidden))
    var progressInterval: Double = 5
    @OptionGroup var options: ConfigOption
    func run() async throws {
        try IndexSourcesTool.run(feed: feed, concurrency: concurrency, progressInterval: progressInterval, try options.load())
    }
}

struct PurgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "purge", abstract: "Make running servers forget an episode now.",
        discussion: """
        Drops the episode's resolution, frame index and clips from each server's local store (and \
        with --second-tier its clips in the clip bucket or clip directory), so the next request \
        resolves, indexes and cuts it afresh. Needed when an episode's audio was replaced under a \
        new object name, or its clips must go (takedown); a source re-uploaded under the same key \
        is noticed without it. Talks to each server's admin listener (admin.listen: by default \
        admin.sock in cache.dir), never to its public port. Give --admin once per node to purge a \
        cluster; one line per node is printed, and the exit status is 1 if any node failed.
        """)
    @Argument(help: "Episode id.") var episodeId: String
    @Flag(name: .long, help: "Also delete the episode's clips from the second tier (clip bucket or clip directory).") var secondTier = false
    @Option(name: .long, help: "A node's admin listener: a Unix socket path or a loopback HOST:PORT; repeat for each node (default: admin.listen of the configuration).")
    var admin: [String] = []
    @Option(name: .long, help: ArgumentHelp("No longer used: purge talks to the admin listener.", visibility: .hidden)) var server: String?
    @OptionGroup var options: ConfigOption
    func validate() throws {
        if server != nil {
            throw ValidationError("--server is gone: the public port no longer answers /admin/; use --admin with the node's admin.listen (a socket path or a loopback HOST:PORT)")
        }
    }
    func run() async throws {
        try PurgeTool.run(episodeId: episodeId, secondTier: secondTier, admins: admin, try options.load())
    }
}

struct SignCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sign", abstract: "Sign a /clips URL with signing.key (adds exp and sig).")
    @Argument(help: "Path and query, e.g. /clips/685ba776e4f9ec2f0756267a/123500?duration_ms=15000") var path: String
    @Option(name: .long, help: "Seconds until the URL expires.") var expiresIn: Int64 = 86400
    @Option(name: .long, help: "Prefix to print before the path, e.g. https://clips.example.com") var baseURL: String?
    @OptionGroup var options: ConfigOption
    func run() async throws { try ClipURLTools.sign(path, expiresIn: expiresIn, baseURL: baseURL, try options.load()) }
}
