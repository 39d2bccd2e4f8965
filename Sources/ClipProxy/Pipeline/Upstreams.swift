import Foundation
import Logging
import Metrics
import Synchronization
import Trim
import Upstream

/// Builds the catalog, the source lister and the S3 client that the configuration asks for.
/// `serve`, `resolve` and `s3 presign` all go through here, so they agree.
enum Upstreams {
    static func catalog(_ configuration: Configuration) throws -> any EpisodeCatalog {
        switch configuration.catalogKind {
        case "mongo":
            // 2 s to find a server: a request for an episode never seen answers 503 within 3 s
            // while MongoDB is down (known episodes keep their last resolution meanwhile).
            let pool = try MongoClientPool(uri: configuration.mongoURI, database: configuration.mongoDatabase, timeout: .seconds(2))
            return MongoCatalog(pool: pool)
        default:
            return try FileCatalog(directory: configuration.catalogDir)
        }
    }

    static func s3Configuration(_ configuration: Configuration) throws -> S3Configuration {
        guard !configuration.s3Endpoint.isEmpty else {
            var aws = S3Configuration.aws(region: configuration.s3Region)
            aws.pathStyle = configuration.s3PathStyle
            return aws
        }
        guard let url = URL(string: configuration.s3Endpoint), url.scheme == "http" || url.scheme == "https", url.host != nil else {
            throw ConfigurationError("s3.endpoint must be an http(s) URL, got \(configuration.s3Endpoint)")
        }
        return S3Configuration(endpoint: url, region: configuration.s3Region, pathStyle: configuration.s3PathStyle)
    }

    /// - Parameter metrics: where each request's latency and failure are counted (the server's).
    static func s3Client(_ configuration: Configuration, logger: Logger? = nil, metrics: UpstreamMetrics? = nil) throws -> S3Client {
        var log: (@Sendable (S3LogRecord) -> Void)?
        if let logger {
            log = { @Sendable record in
                switch record.level {
                case .warning: logger.warning("\(record)")
                case .info: logger.info("\(record)")
                case .debug: logger.debug("\(record)")
                }
            }
        }
        return try S3Client(configuration: s3Configuration(configuration), credentials: awsCredentials(region: configuration.s3Region), log: log,
                            observe: metrics?.s3Observer(sourceBucket: configuration.s3SourceBucket))
    }

    /// One set of AWS credentials per process, shared by every S3 client (one renewal thread, one
    /// STS call per renewal), found through the SDKs' default chain on first use.
    private static let sharedCredentials = Mutex<RefreshingAWSCredentials?>(nil)

    static func awsCredentials(region: String) -> RefreshingAWSCredentials {
        sharedCredentials.withLock { shared in
            if let shared { return shared }
            let logger = Logger(label: "clipproxy")
            let made = RefreshingAWSCredentials(provider: AWSCredentialsProvider(region: region), log: { record in
                let metadata = record.metadata.mapValues { Logger.MetadataValue.string($0) }
                switch record.level {
                case .warning: logger.warning("\(record.message)", metadata: metadata)
                case .info: logger.info("\(record.message)", metadata: metadata)
                case .debug: logger.debug("\(record.message)", metadata: metadata)
                }
            }, onStatus: { status in
                // Made at each report (rare), so they land in the registry bootstrapped after start-up.
                if status.failed { Counter(label: "clipproxy_aws_credentials_failures_total").increment() }
                Gauge(label: "clipproxy_aws_credentials_expiry_timestamp_seconds")
                    .record(status.expiration?.timeIntervalSince1970 ?? 0)
            })
            shared = made
            return made
        }
    }

    /// The lister and opener of source audio: a directory, or the S3 source bucket.
    static func sources(_ configuration: Configuration, logger: Logger? = nil, metrics: UpstreamMetrics? = nil) throws -> (any ObjectLister, SourceOpener) {
        switch configuration.sourceKind {
        case "s3":
            let client = try s3Client(configuration, logger: logger, metrics: metrics)
            return (S3BucketLister(client: client, bucket: configuration.s3SourceBucket),
                    SourceOpener(kind: .s3(client, bucket: configuration.s3SourceBucket)))
        default:
            return (DirectoryLister(root: configuration.sourceDir), SourceOpener(kind: .directory(configuration.sourceDir)))
        }
    }
}

extension Upstreams {
    /// The second tier: the S3 clip bucket when sources come from S3, else the clip directory.
    static func clipTier(_ configuration: Configuration, logger: Logger? = nil, metrics: UpstreamMetrics? = nil) throws -> any ClipTier {
        switch configuration.sourceKind {
        case "s3":
            S3ClipTier(client: try s3Client(configuration, logger: logger, metrics: metrics), bucket: configuration.s3ClipBucket,
                       template: configuration.s3ClipKeyTemplate)
        default:
            ClipDirectoryTier(root: configuration.secondTierDir, template: configuration.s3ClipKeyTemplate)
        }
    }
}

/// An S3 object read as byte ranges: every read is a ranged GET, streams arrive as they come.
/// With `etag` set, every GET carries `If-Match`: a re-uploaded object fails the read (412,
/// `.objectChanged`) instead of mixing its bytes into a plan made from the old one.
struct S3ByteSource: ByteSource {
    let client: S3Client
    let bucket: String
    let key: String
    let size: Int64
    var etag: String? = nil

    func read(offset: Int64, count: Int) throws -> [UInt8] {
        let end = min(size, offset + Int64(count))
        guard offset >= 0, offset < end else { return [] }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(end - offset))
        try client.getObject(bucket: bucket, key: key, range: S3ByteRange(offset...(end - 1)), ifMatch: etag) { chunk in
            bytes.append(contentsOf: chunk)
        }
        return bytes
    }

    func stream(_ range: Range<Int64>, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard !range.isEmpty else { return }
        try client.getObject(bucket: bucket, key: key, range: S3ByteRange(range.lowerBound...(range.upperBound - 1)), ifMatch: etag) { chunk in
            try consume(chunk)
        }
    }
}
