// swift-tools-version:6.1
// clipproxy: a content-addressed caching reverse proxy for podcast clips in front of S3.
// See docs/ARCHITECTURE.md for the architecture. C libraries come from Debian's -dev packages
// (installed by `make deps`); each is a system-library target found through pkg-config.
import PackageDescription

let package = Package(
    name: "clipproxy",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "clipproxy", targets: ["ClipProxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Already under Hummingbird; named for the sendfile handler below its HTTP/1 codec.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
    ],
    targets: [
        // MARK: C libraries (headers + tiny static inline shims for what Swift cannot import)
        .systemLibrary(
            name: "CLMDB", pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]),
        .systemLibrary(
            name: "CFFmpeg", pkgConfig: "libavformat",
            providers: [.apt(["libavformat-dev", "libavcodec-dev", "libavutil-dev"])]),
        .systemLibrary(
            name: "CMongoc", pkgConfig: "libmongoc-1.0",
            providers: [.apt(["libmongoc-dev"])]),
        .systemLibrary(
            name: "CCurl", pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(
            name: "CLibCrypto", pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]),

        // MARK: Modules
        // Hashing (libcrypto) and the little-endian record codec shared by Trim, Index and Upstream.
        .target(name: "Support", dependencies: ["CLibCrypto"]),
        // Clip engine: probing, MP3 frame index, clip plan, clip writer. Only Trim/FFmpeg imports CFFmpeg.
        .target(name: "Trim", dependencies: ["CFFmpeg", "Support"]),
        // LMDB index and the content-addressed local blob store.
        .target(name: "Index", dependencies: ["CLMDB", "Support"]),
        // S3 over libcurl + SigV4 (libcrypto), MongoDB catalog over libmongoc, and embedded stand-ins.
        .target(name: "Upstream", dependencies: ["CCurl", "CMongoc", "Support"]),
        // The `clipproxy` executable: the HTTP server and the CLI subcommands.
        .executableTarget(
            name: "ClipProxy",
            dependencies: [
                "Trim", "Index", "Upstream",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            ]),

        // MARK: Tests
        // Starts real test servers (moto, the MongoDB wire server) and locates fixtures.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "TrimTests", dependencies: ["Trim", "TestSupport"]),
        .testTarget(name: "IndexTests", dependencies: ["Index", "Support", "TestSupport"]),
        .testTarget(name: "UpstreamTests", dependencies: ["Upstream", "Support", "TestSupport"]),
        .testTarget(name: "ClipProxyTests", dependencies: [
            "ClipProxy", "Index", "Trim", "Upstream", "Support", "TestSupport",
            .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
        ]),
        // Fills the clip store until killed; the crash-safety test SIGKILLs it at random moments.
        .executableTarget(name: "IndexCrashChild", dependencies: ["Index"], path: "Tests/IndexCrashChild"),

        // MARK: Benchmarks (run by `make bench`, never by the tests)
        .executableTarget(name: "IndexBench", dependencies: ["Index"], path: "bench/IndexBench"),
    ],
    swiftLanguageModes: [.v6]
)
