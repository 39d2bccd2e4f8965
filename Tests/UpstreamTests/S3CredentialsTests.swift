import Foundation
import Testing
import TestSupport
@testable import Upstream

@Suite("AWS credentials from the environment and the shared credentials and config files")
struct S3CredentialsTests {
    static let file = """
        # written by aws configure
        [default]
        aws_access_key_id = AKIDDEFAULT
        aws_secret_access_key = default/secret+with=signs#and;semicolons
        region = eu-west-2

        ; a profile with a session token
        [podcasts]
        aws_access_key_id=AKIDPODCASTS
        aws_secret_access_key=podcasts-secret
        aws_session_token = podcasts-token==
        s3 =
          max_concurrent_requests = 20

        [half]
        aws_access_key_id = AKIDHALF
        aws_session_token = half-token-never-printed
        """

    static func withFile<T>(_ body: (String, String) throws -> T) throws -> T {
        let directory = try TemporaryDirectory("aws-credentials")
        defer { directory.remove() }
        try FileManager.default.createDirectory(at: directory.url.appendingPathComponent(".aws"), withIntermediateDirectories: true)
        let path = directory.url.appendingPathComponent(".aws/credentials").path
        try Self.file.write(toFile: path, atomically: true, encoding: .utf8)
        return try body(path, directory.path)
    }

    @Test("The environment comes first, with or without a session token")
    func environment() throws {
        let plain = try AWSCredentialsProvider(environment: ["AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "env-secret"]).resolve()
        #expect(plain.accessKeyId == "AKIDENV" && plain.secretAccessKey == "env-secret" && plain.sessionToken == nil)
        try Self.withFile { path, _ in
            let withToken = try AWSCredentialsProvider(environment: [
                "AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "env-secret", "AWS_SESSION_TOKEN": "env-token",
                "AWS_SHARED_CREDENTIALS_FILE": path,
            ]).resolve()
            #expect(withToken.accessKeyId == "AKIDENV" && withToken.sessionToken == "env-token", "environment wins over the file")
        }
    }

    @Test("Half a key pair in the environment is an error that names the missing variable, not the secret")
    func partialEnvironment() {
        let error = #expect(throws: AWSCredentialsError.self) {
            try AWSCredentialsProvider(environment: ["AWS_SECRET_ACCESS_KEY": "lonely-secret-value"]).resolve()
        }
        #expect(error?.description.contains("AWS_ACCESS_KEY_ID") == true)
        #expect(error?.description.contains("lonely-secret-value") == false)
    }

    @Test("The shared credentials file: default profile, AWS_PROFILE, ~/.aws/credentials, odd characters kept")
    func sharedFile() throws {
        try Self.withFile { path, home in
            let byDefault = try AWSCredentialsProvider(environment: ["AWS_SHARED_CREDENTIALS_FILE": path]).resolve()
            #expect(byDefault.accessKeyId == "AKIDDEFAULT")
            #expect(byDefault.secretAccessKey == "default/secret+with=signs#and;semicolons", "no inline comments: secrets keep # and ;")
            #expect(byDefault.sessionToken == nil)

            let profile = try AWSCredentialsProvider(environment: ["AWS_SHARED_CREDENTIALS_FILE": path, "AWS_PROFILE": "podcasts"]).resolve()
            #expect(profile.accessKeyId == "AKIDPODCASTS" && profile.secretAccessKey == "podcasts-secret")
            #expect(profile.sessionToken == "podcasts-token==")

            // No AWS_SHARED_CREDENTIALS_FILE: ~/.aws/credentials under HOME.
            let fromHome = AWSCredentialsProvider(environment: ["HOME": home, "AWS_PROFILE": "podcasts"])
            #expect(fromHome.sharedCredentialsFile == path)
            #expect(try fromHome.resolve().accessKeyId == "AKIDPODCASTS")
        }
    }

    @Test("Nothing found: the error lists every source tried and why, without secrets")
    func nothingFound() throws {
        let none = #expect(throws: AWSCredentialsError.self) {
            try AWSCredentialsProvider(environment: ["HOME": "/nonexistent-home", "AWS_EC2_METADATA_DISABLED": "true"]).resolve()
        }
        #expect(none?.tried.count == 5)
        #expect(none?.description.contains("AWS_ACCESS_KEY_ID") == true)
        #expect(none?.description.contains("AWS_WEB_IDENTITY_TOKEN_FILE") == true)
        #expect(none?.description.contains("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") == true)
        #expect(none?.description.contains("AWS_EC2_METADATA_DISABLED=true") == true)
        #expect(none?.description.contains("/nonexistent-home/.aws/config") == true)
        #expect(none?.description.contains("/nonexistent-home/.aws/credentials") == true)
        #expect(none?.description.contains("file not found") == true)
        #expect(none?.description.contains("profile \"default\"") == true)

        try Self.withFile { path, _ in
            let missingProfile = #expect(throws: AWSCredentialsError.self) {
                try AWSCredentialsProvider(environment: ["AWS_SHARED_CREDENTIALS_FILE": path, "AWS_PROFILE": "nope"]).resolve()
            }
            #expect(missingProfile?.description.hasPrefix("AWS profile not found") == true, "a profile named in AWS_PROFILE must exist")
            #expect(missingProfile?.description.contains("no [nope] section") == true)
            #expect(missingProfile?.description.contains("[podcasts]") == true, "says which profiles exist")
            #expect(missingProfile?.description.contains("secret") == false)

            let half = #expect(throws: AWSCredentialsError.self) {
                try AWSCredentialsProvider(environment: ["AWS_SHARED_CREDENTIALS_FILE": path, "AWS_PROFILE": "half"]).resolve()
            }
            #expect(half?.description.contains("aws_secret_access_key") == true)
            #expect(half?.description.contains("half-token-never-printed") == false)
        }
    }

    @Test("The config file: [profile name] sections, static keys there too, credentials file wins")
    func configFile() throws {
        let directory = try TemporaryDirectory("aws-config")
        defer { directory.remove() }
        let config = try writeTemporaryFile(directory, "config", """
            [default]
            region = eu-west-2
            [profile podcasts]
            aws_access_key_id = AKIDFROMCONFIG
            aws_secret_access_key = config-secret
            [profile only-config]
            aws_access_key_id = AKIDONLYCONFIG
            aws_secret_access_key = only-config-secret
            [sso-session ignored]
            sso_region = eu-west-2
            """)
        try Self.withFile { (path: String, _: String) throws -> Void in
            func resolve(_ profile: String) throws -> AWSCredentials {
                try AWSCredentialsProvider(environment: ["AWS_SHARED_CREDENTIALS_FILE": path, "AWS_CONFIG_FILE": config,
                                                         "AWS_PROFILE": profile, "AWS_EC2_METADATA_DISABLED": "true"]).resolve()
            }
            #expect(try resolve("podcasts").accessKeyId == "AKIDPODCASTS", "the credentials file wins")
            #expect(try resolve("only-config").accessKeyId == "AKIDONLYCONFIG")
            #expect(throws: AWSCredentialsError.self) { try resolve("ignored") }
        }
    }

    @Test("A client built from a provider resolves on first use: no credentials is a request error, not a construction error")
    func clientFromProvider() throws {
        let configuration = S3Configuration(endpoint: URL(string: "http://127.0.0.1:9")!, pathStyle: true)
        let client = try S3Client(configuration: configuration, credentialsFrom: AWSCredentialsProvider(
            environment: ["AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "env-secret"]))
        #expect(client.credentials.peek == nil)
        #expect(try client.signer().credentials.accessKeyId == "AKIDENV")
        #expect(client.credentials.source?.name == "environment")

        let empty = try S3Client(configuration: configuration, credentialsFrom: AWSCredentialsProvider(
            environment: ["HOME": "/nonexistent-home", "AWS_EC2_METADATA_DISABLED": "true"]))
        let error = #expect(throws: S3Error.self) { _ = try empty.headObject(bucket: "b", key: "k") }
        #expect(error?.kind == .credentialsUnavailable)
        #expect(error?.attempts == 1, "not retried by the S3 client (the credentials have their own retries)")
        #expect(error?.description.contains("no AWS credentials found") == true)
        #expect(error?.description.contains("AWS_CONTAINER_CREDENTIALS_FULL_URI") == true)
    }
}
