/// The source bucket as an `ObjectLister` (ListObjectsV2, all pages).
public struct S3BucketLister: ObjectLister {
    public let client: S3Client
    public let bucket: String

    public init(client: S3Client, bucket: String) {
        self.client = client
        self.bucket = bucket
    }

    public func list(prefix: String) throws -> [StoredObject] {
        try client.listObjectsV2(bucket: bucket, prefix: prefix).map {
            StoredObject(key: $0.key, size: $0.size, etag: $0.etag.trimmingCharacters(in: ["\""]))
        }
    }
}
