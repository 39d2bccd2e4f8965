import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Index
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Upstream

/// `clipproxy serve`: builds the pipeline from the configuration and runs the HTTP server until
/// SIGTERM/SIGINT, then finishes in-flight responses and closes the store.
enum ClipServer {
    static func run(_ configuration: Configuration) async throws {
        var logger = Logger(label: "clipproxy")
        logger.logLevel = .info
        let store = try ClipStore(.init(directory: configuration.cacheDir, maxBytes: configuration.cacheMaxBytes))
        let opening = store.openingReport
        logger.info("clip store open", metadata: ["cache.dir": "\(configuration.cacheDir)", "cache.clips": "\(opening.clips)",
                                                   "cache.bytes": "\(opening.bytes)", "reconcile.dropped": "\(opening.recordsDropped)",
                                                   "reconcile.orphans": "\(opening.orphanFilesRemoved)"])
        let metrics = ClipMetrics.bootstrap()
        let catalog = TimedCatalog(catalog: try Upstreams.catalog(configuration), metrics: metrics.upstream)
        let (lister, sources) = try Upstreams.sources(configuration, logger: logger, metrics: metrics.upstream)
        let threads = NIOThreadPool(numberOfThreads: configuration.limitsMaxFills + 4)
        threads.start()
        // Fills, uploads and index shares under way when SIGTERM comes are waited for (after the
        // public server has finished its responses), at most this long.
        let background = BackgroundWork(drainLimit: .seconds(25), logger: logger)
        let pipeline = ClipPipeline(configuration: configuration, store: store,
                                    locator: SourceLocator(catalog: catalog, lister: lister), sources: sources,
                                    secondTier: try Upstreams.clipTier(configuration, logger: logger, metrics: metrics.upstream),
                                    threads: threads, background: background, logger: logger, metrics: metrics)

        let router = Router(context: ClipRequestContext.self)
        router.add(middleware: UnroutedAsJSON(routes: KnownRoutes.publicPort(metrics: configuration.httpMetrics)))
        router.add(middleware: RequestLimits(maxURIBytes: configuration.httpMaxURIBytes, maxHeaderBytes: configuration.httpMaxHeaderBytes))
        let signer = URLSigner(key: configuration.signingKey, previousKey: configuration.signingPreviousKey)
        let clipRoutes = ClipRoutes(pipeline: pipeline, signer: signer)
        // Routes whose answers scripts on other origins may read: CORS on all of them, errors too.
        let crossOrigin = router.group().add(middleware: CrossOriginHeaders(policy: clipRoutes.cors))
        clipRoutes.register(on: crossOrigin)
        AudioClipsAPI(pipeline: pipeline, signer: signer).register(on: crossOrigin)
        DashboardAPI(pipeline: pipeline, signer: signer).register(on: crossOrigin)
        router.get("/healthz") { _, _ in jsonResponse(.ok, ["status": "ok"]) }
        let readiness = Readiness(checks: try readinessChecks(configuration, store: store, catalog: catalog, logger: logger),
                                  runBlocking: { work in try await pipeline.blocking(work) })
        router.get("/readyz") { [logger] _, _ in
            let report = await readiness.report()
            guard report.ready else {
                logger.warning("not ready", metadata: ["readiness.failures": "\(report.failures)"])
                let detail = report.failures.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; ")
                return jsonResponse(.serviceUnavailable, ["status": "not_ready", "detail": detail])
            }
            return jsonResponse(.ok, ["status": "ready", "checked": report.checked.joined(separator: ",")])
        }
        let state = NodeStateGauges(registry: metrics.registry, pipeline: pipeline,
                                    credentials: configuration.sourceKind == "s3" ? Upstreams.awsCredentials(region: configuration.s3Region) : nil)
        let exposition: @Sendable (Request, ClipRequestContext) -> Response = { _, _ in
            state.refresh()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.exposition())))
        }
        if configuration.httpMetrics { router.get("/metrics", use: exposition) }
        router.get("/") { _, _ in DashboardPage.response() }

        let admin = try adminApplication(configuration, pipeline: pipeline, exposition: exposition, logger: logger)
        let app = Application(
            router: router,
            server: HTTPServerBuilder { ClipHTTP1Channel(responder: $0, routes: clipRoutes, configuration: configuration) },
            configuration: .init(address: .hostname(configuration.httpHost, port: configuration.httpPort), serverName: serverName),
            // Services stop in reverse order: the public server first (no new requests, in-flight
            // responses finish), then the admin listener, then the background work drains.
            services: [background, admin.application],
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.httpPort
                // Tests and scripts read this line to find the port when http.port is 0.
                FileHandle.standardOutput.write(Data("clipproxy listening on http://\(configuration.httpHost):\(port)/\n".utf8))
            },
            logger: logger)
        defer { admin.socketFile?.remove(logger: logger) }
        try await app.runService()
        try store.flushRecency()
        try await threads.shutdownGracefully()
        logger.info("clipproxy stopped")
    }

    /// The admin listener (`admin.listen`): `/admin/purge`, `/healthz` and `/metrics`, never on
    /// the public port. A stale Unix socket is replaced before binding, a live one stops the start.
    static func adminApplication(_ configuration: Configuration, pipeline: ClipPipeline,
                                 exposition: @escaping @Sendable (Request, ClipRequestContext) -> Response,
                                 logger: Logger) throws -> (application: any Service, socketFile: AdminSocketFile?) {
        let router = Router(context: ClipRequestContext.self)
        router.add(middleware: UnroutedAsJSON(routes: KnownRoutes.adminListener))
        AdminRoutes(pipeline: pipeline).register(on: router)
        router.get("/healthz") { _, _ in jsonResponse(.ok, ["status": "ok"]) }
        router.get("/metrics", use: exposition)
        let address = configuration.adminAddress
        var socketFile: AdminSocketFile?
        if case .unixSocket(let path) = address {
            socketFile = AdminSocketFile(path: path)
            _ = try socketFile?.claim(logger: logger)
        }
        let application = Application(
            router: router,
            configuration: .init(address: address.bindAddress, serverName: serverName),
            onServerRunning: { [socketFile] channel in
                var shown = address
                if let socketFile {
                    do { try socketFile.restrict() } catch {
                        logger.critical("admin socket left open to others; closing it", metadata: ["error": "\(error)"])
                        try? await channel.close()
                        return
                    }
                } else if case .loopback(let host, _) = address, let port = channel.localAddress?.port {
                    shown = .loopback(host: host, port: port)
                }
                // Tests and scripts read this line to find the admin listener when its port is 0.
                FileHandle.standardOutput.write(Data("clipproxy admin listening on \(shown)\n".utf8))
            },
            logger: logger)
        return (application, socketFile)
    }

    /// Sent as `Server` on every response.
    static let serverName = "clipproxy"

    /// What `/readyz` checks: the index, the catalog, the source store and the second tier.
    static func readinessChecks(_ configuration: Configuration, store: ClipStore, catalog: any EpisodeCatalog,
                                logger: Logger) throws -> [Readiness.Check] {
        var checks = [
            Readiness.Check(name: "index") { _ = try store.contains(ClipKey(identity: "readiness probe")) },
            Readiness.Check(name: "catalog") { try catalog.ping() },
        ]
        if configuration.sourceKind == "s3" {
            let client = try Upstreams.s3Client(configuration, logger: logger)
            checks.append(Readiness.Check(name: "source_bucket") { try client.headBucket(configuration.s3SourceBucket) })
            checks.append(Readiness.Check(name: "clip_bucket") { try client.headBucket(configuration.s3ClipBucket) })
        } else {
            checks.append(Readiness.Check(name: "source_dir") { try directoryCheck(configuration.sourceDir, writable: false) })
            checks.append(Readiness.Check(name: "second_tier_dir") {
                try FileManager.default.createDirectory(atPath: configuration.secondTierDir, withIntermediateDirectories: true)
                try directoryCheck(configuration.secondTierDir, writable: true)
            })
        }
        return checks
    }

    static func directoryCheck(_ path: String, writable: Bool) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ConfigurationError("\(path) is not a directory")
        }
        guard access(path, writable ? (R_OK | W_OK | X_OK) : (R_OK | X_OK)) == 0 else {
            throw ConfigurationError("\(path) is not \(writable ? "writable" : "readable") by this process")
        }
    }

    static func jsonResponse(_ status: HTTPResponse.Status, _ object: [String: String]) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return Response(status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}
