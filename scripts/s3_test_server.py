#!/usr/bin/env python3
"""moto's S3 API server on a loopback port, for tests and benchmarks.

    python scripts/s3_test_server.py [--host 127.0.0.1] [--port 0] [--expire-sessions]
                                     [--web-identity-token TOKEN] [--authenticate FILE]

With --expire-sessions, requests signed with STS session credentials (AssumeRole,
AssumeRoleWithWebIdentity) whose Expiration has passed are refused with S3's 400 ExpiredToken,
as AWS does; moto alone accepts them forever. Only matters once authentication is enforced
(INITIAL_NO_AUTH_ACTION_COUNT or POST /moto-api/reset-auth).

With --web-identity-token, STS AssumeRoleWithWebIdentity is answered unsigned, as AWS does
(moto enforcing authentication would fail it with a 500), and only for that token: any other
gets 400 InvalidIdentityToken.

With --authenticate FILE, moto gets an IAM user allowed s3:* and sts:AssumeRole, a role
`clipproxy-role` allowed s3:*, and from then on checks every signature; FILE receives the user's
key and the role's ARN as JSON ({"access_key_id", "secret_access_key", "role_arn"}) before
"LISTENING" is printed.

Prints "LISTENING <port>" once requests are accepted, and exits on SIGTERM/SIGINT or when the
process that started it dies (so a crashed test run leaves no server behind).
"""
import argparse
import os
import sys

from test_server_lifecycle import announce_and_wait, unblock_termination_signals

from moto.server import ThreadedMotoServer


def expire_sessions():
    """Makes moto's request authentication refuse STS session credentials past their Expiration."""
    from moto.core.utils import utcnow
    from moto.iam import access_control
    from moto.s3.exceptions import S3ClientError
    from moto.sts.models import sts_backends

    class ExpiredToken(S3ClientError):
        def __init__(self):
            super().__init__("ExpiredToken", "The provided token has expired.")

    original = access_control.AssumedRoleAccessKey.__init__

    def checked(self, account_id, partition, access_key_id, headers):
        original(self, account_id, partition, access_key_id, headers)
        for role in sts_backends[account_id][partition].assumed_roles:
            if role.access_key_id == access_key_id and role.expiration <= utcnow():
                raise ExpiredToken()

    access_control.AssumedRoleAccessKey.__init__ = checked


def accept_web_identity(token):
    """AssumeRoleWithWebIdentity needs no signature (the token is the proof), for `token` only."""
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.sts.exceptions import STSClientError
    from moto.sts.responses import TokenResponse

    class InvalidIdentityToken(STSClientError):
        def __init__(self):
            super().__init__("InvalidIdentityToken", "The web identity token is not valid.")

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def unsigned(self, iam_request_cls, resource="*"):
        if self._get_action() != "AssumeRoleWithWebIdentity":
            original(self, iam_request_cls, resource)

    answer = TokenResponse.assume_role_with_web_identity

    def checked(self):
        if self._get_param("WebIdentityToken") != token:
            raise InvalidIdentityToken()
        return answer(self)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = unsigned
    TokenResponse.assume_role_with_web_identity = checked


def authenticate(endpoint, path):
    """Creates the IAM user and role, turns signature checking on, writes the key to `path`."""
    import json
    import urllib.request

    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    statement = lambda actions: json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": "*"}]})
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["sts:AssumeRole", "sts:AssumeRoleWithWebIdentity"]}]})
    iam.create_user(UserName="deployer")
    iam.put_user_policy(UserName="deployer", PolicyName="s3-and-assume", PolicyDocument=statement(["s3:*", "sts:AssumeRole"]))
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    role = iam.create_role(RoleName="clipproxy-role", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.put_role_policy(RoleName="clipproxy-role", PolicyName="s3", PolicyDocument=statement("s3:*"))
    request = urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=10).read()
    with open(path, "w") as out:
        json.dump({"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"], "role_arn": role}, out)


WHOLE_VALUE_KEPT_FROM = 1 << 20  # bytes: objects this big keep their bytes in memory once read


def memoize_pure_lookups():
    """Caches what moto recomputes on every request although the answer has not changed, so the
    same responses cost less CPU (the replay bench sends moto hundreds of thousands of requests
    on a shared 2-core machine, where moto's own CPU is what limits the run):
    - an object's bytes: a ranged GET reads the whole object from its spooled temporary file
      (on disk past a few MB), under the object's lock, then slices the range, so each read of a
      clip from a 60 MB episode copied 60 MB and concurrent reads of one episode queued. Objects
      of at least WHOLE_VALUE_KEPT_FROM bytes keep the bytes read once (dropped when the object
      is written), so a ranged GET copies only its range. Memory: the source bucket once more.
    - the list of moto's service modules, which it rebuilds from a directory listing and a stat
      per entry (about 170) to route each request, twice per request;
    - the parsing of a stored object's timestamp string, repeated for every key of every
      ListObjectsV2 answer (a third of a listing's CPU).
    Every response stays byte for byte what moto answered without them."""
    import functools

    from moto import backends
    from moto.core import serialize
    from moto.s3.models import FakeKey

    read_value, write_value = FakeKey.value.fget, FakeKey.value.fset

    def value(key):
        kept = key.__dict__.get("_whole_value")
        if kept is not None:
            return kept
        whole = read_value(key)
        if len(whole) >= WHOLE_VALUE_KEPT_FROM:
            key.__dict__["_whole_value"] = whole
        return whole

    def set_value(key, new_value):
        key.__dict__.pop("_whole_value", None)
        write_value(key, new_value)

    FakeKey.value = property(value, set_value)

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: iter(modules)
    parse = serialize.parse_to_aware_datetime
    cached = functools.lru_cache(maxsize=1 << 16)(parse)

    def parse_to_aware_datetime(value):
        try:
            return cached(value)
        except TypeError:  # an unhashable value: parse it as moto would
            return parse(value)

    serialize.parse_to_aware_datetime = parse_to_aware_datetime


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expire-sessions", action="store_true")
    parser.add_argument("--web-identity-token", default=None)
    parser.add_argument("--authenticate", metavar="FILE", default=None)
    args = parser.parse_args()
    if args.expire_sessions:
        expire_sessions()
    if args.web_identity_token:
        accept_web_identity(args.web_identity_token)
    unblock_termination_signals()
    memoize_pure_lookups()

    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    if args.authenticate:
        authenticate(f"http://{args.host}:{port}", args.authenticate)
    announce_and_wait(port)
    # moto's own shutdown waits for open keep-alive connections; a test server need not.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
