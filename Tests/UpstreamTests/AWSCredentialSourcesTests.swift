import Foundation
import Support
import Testing
import TestSupport
@testable import Upstream

/// Each platform source of the default chain, against moto checking every signature: the client
/// starts with no credentials, finds them through the chain on its first request, reads a range of
/// a source object and uploads a clip. A request signed with anything else would be refused.
@Suite("AWS credential sources against moto with signatures checked", .serialized)
struct AWSCredentialSourcesTests {
    @Test("Web identity (EKS IRSA): the token file is exchanged with STS AssumeRoleWithWebIdentity")
    func webIdentity() throws {
        let moto = try AuthenticatingMoto.start()
        defer { moto.server.stop() }
        let directory = try TemporaryDirectory("web-identity")
        defer { directory.remove() }
        let tokenFile = try writeTemporaryFile(directory, "token", AuthenticatingMoto.webIdentityToken + "\n")
        let log = LogCapture()
        let credentials = RefreshingAWSCredentials(provider: AWSCredentialsProvider(environment: moto.environment([
            "AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile, "AWS_ROLE_ARN": moto.roleArn, "AWS_ROLE_SESSION_NAME": "clipproxy-test",
        ])), log: log.record)
        #expect(credentials.peek == nil, "nothing is resolved before the first request")
        try AuthenticatingMoto.readAndUpload(try moto.client(credentials), key: "clips/web-identity.mp3")
        #expect(credentials.source?.name == "web_identity")
        #expect(credentials.peek?.accessKeyId.hasPrefix("ASIA") == true, "session credentials from STS")
        #expect(credentials.peek?.expiration != nil)
        #expect(log.count("aws credentials resolved") == 1)

        // A token STS does not accept: the error says which source failed and STS's answer.
        try "not-the-token".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let refused = #expect(throws: AWSCredentialsError.self) {
            try AWSCredentialsProvider(environment: moto.environment([
                "AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile, "AWS_ROLE_ARN": moto.roleArn,
            ])).resolve()
        }
        #expect(refused?.description.contains("web_identity") == true)
        #expect(refused?.description.contains("InvalidIdentityToken") == true, "\(refused?.description ?? "")")
        #expect(refused?.description.contains("not-the-token") == false, "the token is never printed")
    }

    @Test("Container endpoint (ECS, EKS Pod Identity): full URI with the authorization token file")
    func container() throws {
        let moto = try AuthenticatingMoto.start()
        defer { moto.server.stop() }
        let endpoint = try moto.credentialsServer(duration: 900)
        defer { endpoint.stop() }
        let directory = try TemporaryDirectory("container")
        defer { directory.remove() }
        let tokenFile = try writeTemporaryFile(directory, "token", AuthenticatingMoto.containerToken)
        let credentials = RefreshingAWSCredentials(provider: AWSCredentialsProvider(environment: moto.environment([
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": endpoint.endpoint + "/v2/credentials/task-1",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": tokenFile,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": "the-file-wins",
        ])))
        try AuthenticatingMoto.readAndUpload(try moto.client(credentials), key: "clips/container.mp3")
        #expect(credentials.source?.name == "container")
        #expect(try AuthenticatingMoto.stats(endpoint)["issued"] == 1)

        // The token from the environment alone, wrong: refused, and the error names the endpoint.
        let wrong = #expect(throws: AWSCredentialsError.self) {
            try AWSCredentialsProvider(environment: moto.environment([
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": endpoint.endpoint + "/v2/credentials/task-1",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": "wrong-token-value",
            ])).resolve()
        }
        #expect(wrong?.description.contains("container endpoint \(endpoint.endpoint)") == true)
        #expect(wrong?.description.contains("HTTP 401") == true)
        #expect(wrong?.description.contains("wrong-token-value") == false)
        // Plain http to a host that is not loopback would send the token in clear: refused.
        let remote = #expect(throws: AWSCredentialsError.self) {
            try AWSCredentialsProvider(environment: moto.environment(["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://192.0.2.7/creds"])).resolve()
        }
        #expect(remote?.description.contains("neither https nor a loopback") == true)
    }

    @Test("Instance metadata: IMDSv2 session token first, IMDSv1 never")
    func instanceMetadata() throws {
        let moto = try AuthenticatingMoto.start()
        defer { moto.server.stop() }
        let imds = try moto.credentialsServer(duration: 900)
        defer { imds.stop() }
        var environment = moto.environment(["AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint + "/"])
        environment["AWS_EC2_METADATA_DISABLED"] = nil
        let credentials = RefreshingAWSCredentials(provider: AWSCredentialsProvider(environment: environment))
        try AuthenticatingMoto.readAndUpload(try moto.client(credentials), key: "clips/imds.mp3")
        #expect(credentials.source?.name == "instance_metadata")
        let stats = try AuthenticatingMoto.stats(imds)
        #expect(stats["token_puts"] == 1 && stats["issued"] == 1)
        #expect(stats["v1_attempts"] == 0 && stats["unauthorized"] == 0, "every request carried the IMDSv2 token: \(stats)")

        // IMDS unreachable is not an error of its own: the chain ends with "no credentials" and
        // says what it tried.
        environment["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = "http://127.0.0.1:\(try freeLoopbackPort())"
        let none = #expect(throws: AWSCredentialsError.self) { try AWSCredentialsProvider(environment: environment).resolve() }
        #expect(none?.description.hasPrefix("no AWS credentials found") == true)
        #expect(none?.tried.count == 5, "environment, web identity, profile, container, instance metadata: \(String(describing: none))")
        #expect(none?.tried.last?.contains("PUT") == true)
    }

    @Test("An IMDS without sessions (IMDSv1 only): refused by default, used only with AWS_EC2_METADATA_V1_DISABLED=false")
    func instanceMetadataV1() throws {
        let moto = try AuthenticatingMoto.start()
        defer { moto.server.stop() }
        let imds = try moto.moto.credentialsServer(duration: 900, imdsV1Only: true)
        defer { imds.stop() }
        var environment = moto.environment(["AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint])
        environment["AWS_EC2_METADATA_DISABLED"] = nil
        let refused = #expect(throws: AWSCredentialsError.self) { try AWSCredentialsProvider(environment: environment).resolve() }
        #expect(refused?.description.contains("HTTP 404; IMDSv1 is not used unless AWS_EC2_METADATA_V1_DISABLED=false") == true,
                "\(refused?.description ?? "")")
        #expect(try AuthenticatingMoto.stats(imds)["v1_attempts"] == 0, "no request without a token was made")

        environment["AWS_EC2_METADATA_V1_DISABLED"] = "false"
        let credentials = RefreshingAWSCredentials(provider: AWSCredentialsProvider(environment: environment))
        try AuthenticatingMoto.readAndUpload(try moto.client(credentials), key: "clips/imds-v1.mp3")
        #expect(try AuthenticatingMoto.stats(imds)["v1_attempts"] == 2, "role name and credentials, without a token")
    }

    @Test("A profile with role_arn and source_profile: AssumeRole signed with the source profile's key")
    func assumedRoleProfile() throws {
        let moto = try AuthenticatingMoto.start()
        defer { moto.server.stop() }
        let home = try TemporaryDirectory("assume-role")
        defer { home.remove() }
        try FileManager.default.createDirectory(at: home.url.appendingPathComponent(".aws"), withIntermediateDirectories: true)
        _ = try writeTemporaryFile(home, ".aws/credentials", """
            [deployer]
            aws_access_key_id = \(moto.user.accessKeyId)
            aws_secret_access_key = \(moto.user.secretAccessKey)
            """)
        _ = try writeTemporaryFile(home, ".aws/config", """
            [profile clips]
            role_arn = \(moto.roleArn)
            source_profile = deployer
            role_session_name = clipproxy-profile
            region = eu-west-2

            [profile loop-a]
            role_arn = \(moto.roleArn)
            source_profile = loop-b

            [profile loop-b]
            role_arn = \(moto.roleArn)
            source_profile = loop-a
            """)
        let credentials = RefreshingAWSCredentials(provider: AWSCredentialsProvider(environment: moto.environment(["AWS_PROFILE": "clips"], home: home.path)))
        try AuthenticatingMoto.readAndUpload(try moto.client(credentials), key: "clips/assumed.mp3")
        #expect(credentials.source?.name == "assume_role")
        #expect(credentials.peek?.accessKeyId != moto.user.accessKeyId, "signed with the role's session, not the user's key")

        let loop = #expect(throws: AWSCredentialsError.self) {
            try AWSCredentialsProvider(environment: moto.environment(["AWS_PROFILE": "loop-a"], home: home.path)).resolve()
        }
        #expect(loop?.description.contains("cycle") == true, "\(String(describing: loop))")
    }

    @Test("credential_process: the command's JSON document, Expiration included")
    func credentialProcess() throws {
        let moto = try AuthenticatingMoto.start()
        defer { moto.server.stop() }
        let sts = AWSSecurityTokenService(environment: ["AWS_ENDPOINT_URL_STS": moto.endpoint], region: "eu-west-2")
        let session = try sts.assumeRole(with: moto.user, roleArn: moto.roleArn, sessionName: "process-test", durationSeconds: 900)
        let home = try TemporaryDirectory("credential-process")
        defer { home.remove() }
        let expiration = ISO8601DateFormatter().string(from: session.expiration!)
        let document = #"{"Version": 1, "AccessKeyId": "\#(session.accessKeyId)", "SecretAccessKey": "\#(session.secretAccessKey)", "SessionToken": "\#(session.sessionToken!)", "Expiration": "\#(expiration)"}"#
        _ = try writeTemporaryFile(home, "document.json", document)
        let script = try writeTemporaryFile(home, "helper.sh", "#!/bin/sh\necho invoked >> \"$(dirname \"$0\")/calls\"\ncat \"$(dirname \"$0\")/document.json\"\n",
                                            executable: true)
        let config = try writeTemporaryFile(home, "config", "[profile helper]\ncredential_process = \(script) --role clips\n")
        let credentials = RefreshingAWSCredentials(provider: AWSCredentialsProvider(environment: moto.environment([
            "AWS_CONFIG_FILE": config, "AWS_PROFILE": "helper",
        ])))
        try AuthenticatingMoto.readAndUpload(try moto.client(credentials), key: "clips/process.mp3")
        #expect(credentials.source?.name == "credential_process")
        #expect(credentials.peek?.expiration.map { abs($0.timeIntervalSince(session.expiration!)) < 1 } == true)
        let calls = try String(contentsOf: home.url.appendingPathComponent("calls"), encoding: .utf8)
        #expect(calls == "invoked\n")

        // A command that fails: its status in the error, not its output.
        let failing = try writeTemporaryFile(home, "failing-config", "[profile helper]\ncredential_process = sh -c 'echo SECRET-OUTPUT; exit 3'\n")
        let error = #expect(throws: AWSCredentialsError.self) {
            try AWSCredentialsProvider(environment: moto.environment(["AWS_CONFIG_FILE": failing, "AWS_PROFILE": "helper"])).resolve()
        }
        #expect(error?.description.contains("exited with status 3") == true, "\(String(describing: error))")
        #expect(error?.description.contains("SECRET-OUTPUT") == false)
    }
}
