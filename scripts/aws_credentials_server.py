#!/usr/bin/env python3
"""The two platform credential endpoints AWS gives a workload, for tests. stdlib only.

    python scripts/aws_credentials_server.py --sts http://127.0.0.1:MOTO --role-arn ARN \\
        --key-id AKIA... --secret ... [--duration 30] [--claimed-extra 0] [--container-token T] [--imds-v1-only]

One server answers both:
  - the instance metadata service, IMDSv2 only: PUT /latest/api/token (header
    X-aws-ec2-metadata-token-ttl-seconds) gives a token; GET /latest/meta-data/iam/security-credentials/
    names the role and GET .../<role> gives the credentials, both only with the header
    X-aws-ec2-metadata-token (IMDSv1 requests, without a token, get 401 as on an instance that
    requires IMDSv2);
    With --imds-v1-only it plays an old IMDS instead: the token PUT gets 404 and the GETs need
    no token;
  - the container credentials endpoint (ECS, EKS Pod Identity): GET /v2/credentials/<anything>
    with `Authorization: <--container-token>` (401 without it) gives the credentials.

Every credentials answer is fresh: an AssumeRole of --role-arn at the STS endpoint (moto), signed
with SigV4 by the given IAM access key, lasting --duration seconds. --claimed-extra S makes the
answer claim S seconds more than STS granted (to test a client facing an ExpiredToken before the
Expiration it was told).

Control: GET /__control/stats answers JSON counts: issued, token_puts, unauthorized (requests
refused for a missing or wrong token), v1_attempts (credential requests without an IMDSv2 token).

Prints "LISTENING <port>" once it accepts connections; exits on SIGTERM/SIGINT or with its parent.
"""
import argparse
import datetime
import hashlib
import hmac
import json
import sys
import threading
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from test_server_lifecycle import announce_and_wait, unblock_termination_signals

ROLE_NAME = "clipproxy-instance-role"
IMDS_TOKEN = "imds-session-token-for-tests"


def sigv4_post(url, body, key_id, secret, region="us-east-1", service="sts"):
    """POSTs a form body signed with SigV4 (header signing), returns (status, bytes)."""
    parsed = urllib.parse.urlsplit(url)
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"content-type": "application/x-www-form-urlencoded", "host": parsed.netloc,
               "x-amz-content-sha256": payload_hash, "x-amz-date": stamp}
    names = sorted(headers)
    canonical = "\n".join(["POST", parsed.path or "/", "", "".join(f"{n}:{headers[n]}\n" for n in names),
                           ";".join(names), payload_hash])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Issuer:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.stats = {"issued": 0, "token_puts": 0, "unauthorized": 0, "v1_attempts": 0}

    def count(self, name):
        with self.lock:
            self.stats[name] += 1

    def credentials(self):
        """A fresh AssumeRole answer as the platform endpoints shape it, or None."""
        body = urllib.parse.urlencode({
            "Action": "AssumeRole", "Version": "2011-06-15", "RoleArn": self.args.role_arn,
            "RoleSessionName": "platform-test", "DurationSeconds": str(self.args.duration),
        }).encode()
        status, answer = sigv4_post(self.args.sts + "/", body, self.args.key_id, self.args.secret)
        if status != 200:
            sys.stderr.write(f"AssumeRole failed: HTTP {status} {answer[:500]!r}\n")
            return None
        namespace = {"s": "https://sts.amazonaws.com/doc/2011-06-15/"}
        found = ElementTree.fromstring(answer).find(".//s:Credentials", namespace)
        value = lambda name: found.find("s:" + name, namespace).text
        expiration = datetime.datetime.fromisoformat(value("Expiration").replace("Z", "+00:00"))
        expiration += datetime.timedelta(seconds=self.args.claimed_extra)
        self.count("issued")
        return {"AccessKeyId": value("AccessKeyId"), "SecretAccessKey": value("SecretAccessKey"),
                "Token": value("SessionToken"),
                "Expiration": expiration.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def handler_for(issuer, container_token, v1_only):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def answer(self, status, body, content_type="application/json"):
            data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def refuse(self):
            issuer.count("unauthorized")
            self.answer(401, "")

        def credentials(self, extra):
            issued = issuer.credentials()
            if issued is None:
                self.answer(500, json.dumps({"message": "AssumeRole failed"}))
            else:
                self.answer(200, json.dumps({**extra, **issued}))

        def do_PUT(self):
            if v1_only:
                self.answer(404, "")
            elif self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                issuer.count("token_puts")
                self.answer(200, IMDS_TOKEN, "text/plain")
            else:
                self.answer(400, "")

        def do_GET(self):
            path = self.path
            if path == "/__control/stats":
                with issuer.lock:
                    self.answer(200, json.dumps(issuer.stats))
            elif path.startswith("/latest/meta-data/iam/security-credentials/"):
                token = self.headers.get("X-aws-ec2-metadata-token")
                if token is None:
                    issuer.count("v1_attempts")
                    if not v1_only:
                        return self.refuse()
                elif token != IMDS_TOKEN:
                    return self.refuse()
                role = path[len("/latest/meta-data/iam/security-credentials/"):]
                if role == "":
                    self.answer(200, ROLE_NAME, "text/plain")
                elif role == ROLE_NAME:
                    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                    self.credentials({"Code": "Success", "LastUpdated": now, "Type": "AWS-HMAC"})
                else:
                    self.answer(404, "")
            elif path.startswith("/v2/credentials/"):
                if container_token is None or self.headers.get("Authorization") != container_token:
                    return self.refuse()
                self.credentials({"RoleArn": issuer.args.role_arn})
            else:
                self.answer(404, "")

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sts", required=True, help="STS endpoint URL (moto)")
    parser.add_argument("--role-arn", required=True)
    parser.add_argument("--key-id", required=True, help="IAM access key that may assume the role")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--duration", type=int, default=3600, help="seconds each credential lasts")
    parser.add_argument("--claimed-extra", type=int, default=0, help="seconds added to the Expiration told")
    parser.add_argument("--container-token", default=None)
    parser.add_argument("--imds-v1-only", action="store_true")
    args = parser.parse_args()
    unblock_termination_signals()

    server = ThreadingHTTPServer((args.host, args.port), handler_for(Issuer(args), args.container_token, args.imds_v1_only))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    announce_and_wait(server.server_address[1])
    server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
