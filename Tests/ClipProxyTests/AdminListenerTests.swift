import Foundation
import Testing
import TestSupport

/// The admin endpoints live on their own listener (`admin.listen`), never on the public port, and
/// the shipped proxies refuse them too: nobody who can reach the public port can purge.
@Suite("Admin listener: purge only through admin.listen, never through the public port or the shipped proxies")
struct AdminListenerTests {
    static let episode = "685ba776e4f9ec2f0756267a"
    /// Ways a client might spell the purge path to slip past a prefix match.
    static let purgeSpellings = ["/admin/purge/\(episode)?second_tier=1", "/%61dmin/purge/\(episode)?second_tier=1",
                                 "//admin/purge/\(episode)?second_tier=1", "/clips/../admin/purge/\(episode)?second_tier=1"]

    @Test("Through conf/cdn's and conf/multinode's nginx on the same host: POST /admin/purge and GET /metrics answer 404 without reaching the node, and the clip stays a local hit")
    func proxiesRefuseAdmin() throws {
        let work = try TemporaryDirectory("admin-proxies")
        defer { work.remove() }
        let node = try EmbeddedServer(work: work).start()
        defer { node.stop() }
        let address = String(node.baseURL.dropFirst("http://".count))
        let cdn = try NginxProxyCache.start(upstreams: [address])
        defer { cdn.stop() }
        let balancer = try NginxLoadBalancer.start(nodes: [address, address, address])
        defer { balancer.stop() }

        let clip = "/clips/\(Self.episode)/0"
        #expect(try fetch(node.baseURL + clip).status == 200)
        #expect(node.waitForLog("second tier copy finished", timeout: 30))
        let clipFile = work.path + "/l2/" + FaultToleranceTests.clipPrefixA + "0-30000.mp3"
        #expect(FileManager.default.fileExists(atPath: clipFile))

        for (name, endpoint) in [("conf/cdn", cdn.endpoint), ("conf/multinode", balancer.endpoint), ("the public port", node.baseURL)] {
            for path in Self.purgeSpellings {
                let answer = try fetch(endpoint + path, method: "POST")
                #expect(answer.status == 404, "POST \(path) through \(name): \(answer.status) \(String(decoding: answer.body, as: UTF8.self))")
            }
            #expect(try fetch(endpoint + "/admin/purge/\(Self.episode)").status == 404, "GET /admin/purge through \(name)")
            if name != "the public port" {
                #expect(try fetch(endpoint + "/metrics").status == 404, "/metrics through \(name)")
            }
        }
        // The proxies answered themselves: no /admin or /metrics request reached the node.
        let asked = Self.purgeSpellings.count + 2
        for (name, log) in [("conf/cdn", cdn.accessLog(lines: asked)), ("conf/multinode", balancer.accessLog(lines: asked))] {
            let lines = log.split(separator: "\n").filter { $0.contains("dmin/purge") || $0.contains("/metrics") }
            #expect(lines.count == asked, "\(name) logged \(lines.count) of \(asked) requests:\n\(log)")
            for line in lines { #expect(line.contains("upstream=-"), "\(name) asked a node: \(line)") }
        }
        let after = try fetch(node.baseURL + clip)
        #expect(after.headers["x-clip-tier"] == "l1_hit", "after the refused purges the clip came from \(after.headers["x-clip-tier"] ?? "-")")
        #expect(FileManager.default.fileExists(atPath: clipFile), "a refused purge removed the clip from the clip directory")

        // The admin listener itself purges, and reports.
        let purge = try runClipProxy(["purge", Self.episode, "--second-tier", "--admin", node.adminListener])
        #expect(purge.status == 0 && purge.stdout.contains(#""clips_removed":1"#), "clipproxy purge: \(purge.stdout) \(purge.stderr)")
        #expect(!FileManager.default.fileExists(atPath: clipFile))
    }

    @Test("The admin socket is owner-only, refuses other users with a clear error, is removed at shutdown and replaced when stale; a live one or a non-socket stops the start")
    func socketLifecycle() throws {
        let work = try TemporaryDirectory("admin-socket")
        defer { work.remove() }
        // A directory others may enter, so the socket's own mode is what keeps them out.
        let socketDirectory = work.path + "/run"
        try FileManager.default.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: work.path)
        let socket = socketDirectory + "/admin.sock"
        var environment = EmbeddedServer(work: work).environment
        environment["CLIPPROXY_ADMIN_LISTEN"] = "unix:" + socket

        let first = try ClipProxyProcess(environment: environment)
        #expect(first.adminSocket == socket)
        var info = stat()
        #expect(lstat(socket, &info) == 0 && info.st_mode & S_IFMT == S_IFSOCK && info.st_mode & 0o777 == 0o600,
                "admin socket mode \(String(info.st_mode & 0o777, radix: 8))")

        // Another user: a clear error, nothing purged.
        if getuid() == 0 {
            let binary = try RepoPaths.require(RepoPaths.clipproxyBinary, hint: "build it with `swift build`").path
            let other = try runProcess("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", binary,
                                                            "purge", Self.episode, "--admin", socket])
            #expect(other.status != 0 && other.stdout.contains("permission denied on the admin socket"), "as nobody: \(other.stdout) \(other.stderr)")
        } else {
            Issue.record("not root: purging as another user (setpriv) was not checked")
        }

        // A second server with the same admin.listen refuses to start and leaves the live socket alone.
        var twin = environment
        twin["CLIPPROXY_CACHE_DIR"] = work.path + "/cache-twin"
        let refused = try runClipProxy(["serve"], environment: ProcessInfo.processInfo.environment.merging(twin) { $1 })
        #expect(refused.status != 0 && refused.stderr.contains("another process is serving on \(socket)"), "second server: \(refused.stderr)")
        #expect(try adminFetch(first, "/healthz", method: "GET").status == 200, "the first server's socket was taken over")

        // Graceful stop removes the socket.
        #expect(first.stop() == 0)
        #expect(access(socket, F_OK) != 0, "the socket is still there after shutdown")

        // A killed server leaves its socket behind; the next start replaces it.
        let killed = try ClipProxyProcess(environment: environment)
        kill(killed.process.processIdentifier, SIGKILL)
        killed.process.waitUntilExit()
        #expect(access(socket, F_OK) == 0, "SIGKILL left no socket to replace")
        let restarted = try ClipProxyProcess(environment: environment)
        #expect(restarted.waitForLog("stale admin socket removed"))
        let purge = try runClipProxy(["purge", Self.episode, "--admin", socket])
        #expect(purge.status == 0, "purge after a stale socket was replaced: \(purge.stdout) \(purge.stderr)")
        #expect(restarted.stop() == 0)

        // A file that is not a socket is never deleted to make room.
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: socket))
        let blocked = try runClipProxy(["serve"], environment: ProcessInfo.processInfo.environment.merging(environment) { $1 })
        #expect(blocked.status != 0 && blocked.stderr.contains("exists and is not a socket"), "\(blocked.stderr)")
        #expect((try? String(contentsOfFile: socket, encoding: .utf8)) == "keep me")
    }

    @Test("admin.listen on a loopback port serves purge; a non-loopback address, a bad value or a too-long path is a configuration error; purge without a server says where it looked")
    func tcpAndConfiguration() throws {
        let work = try TemporaryDirectory("admin-tcp")
        defer { work.remove() }
        var environment = EmbeddedServer(work: work).environment
        environment["CLIPPROXY_ADMIN_LISTEN"] = "127.0.0.1:0"
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }
        #expect(server.adminSocket == nil && server.adminListener.hasPrefix("127.0.0.1:"))
        let answer = try adminFetch(server, "/admin/purge/\(Self.episode)")
        #expect(answer.status == 200 && jsonObject(answer.body)["clips_removed"] as? Int == 0, "\(String(decoding: answer.body, as: UTF8.self))")
        #expect(try adminFetch(server, "/metrics", method: "GET").status == 200)
        #expect(try adminFetch(server, "/clips/\(Self.episode)/0", method: "GET").status == 404, "the admin listener serves clips")

        for (value, message) in [("0.0.0.0:9901", "not a loopback address"), ("10.1.2.3:9901", "not a loopback address"),
                                 ("localhost", "must be a Unix socket path"), ("127.0.0.1:99999", "port must be 0 to 65535"),
                                 ("/" + String(repeating: "a", count: 120), "1 to 107 bytes")] {
            let result = try runClipProxy(["purge", Self.episode], environment: ["CLIPPROXY_ADMIN_LISTEN": value])
            #expect(result.status != 0 && result.stderr.contains(message), "admin.listen \(value): \(result.stderr)")
        }
        let missing = work.path + "/nothing/admin.sock"
        let none = try runClipProxy(["purge", Self.episode, "--admin", missing, "--admin", server.adminListener])
        #expect(none.status != 0 && none.stdout.contains("no admin socket at \(missing)"), "\(none.stdout) \(none.stderr)")
        #expect(none.stdout.contains(#"\#(server.adminListener) {"episode_id""#), "the reachable node was not purged: \(none.stdout)")
        let old = try runClipProxy(["purge", Self.episode, "--server", server.baseURL])
        #expect(old.status != 0 && old.stderr.contains("--server is gone"), "\(old.stderr)")
    }
}
