#!/usr/bin/env python3
"""moto's S3 API server on a loopback port, for tests and benchmarks.

    python scripts/s3_test_server.py [--host 127.0.0.1] [--port 0] [--expire-sessions]
                                     [--web-identity-token TOKEN] [--authenticate FILE]
                                     [--moto-listings] [--no-access-log]

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

ListObjectsV2 is answered by quick_listings() (moto's answer, byte for byte, at a cost that
does not grow with the whole bucket); --moto-listings leaves it to moto's own code, which
scripts/check_s3_test_server.py compares it with.

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
CONNECTION_THREADS = 1024  # connections served at once; more wait for a thread to be free


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
      ListObjectsV2 answer (a third of a listing's CPU), and the formatting of that string from
      the object's modification time (kept with the time it was made from);
    - a thread per connection: connections are handed to a pool of threads that are kept once
      started (up to CONNECTION_THREADS at once, as many as were ever busy together), where
      moto's server started and ended a thread for every request.
    Every response stays byte for byte what moto answered without them."""
    import functools

    from moto import backends
    from moto.core import serialize
    from moto.s3.models import FakeKey
    from moto.s3.models import iso_8601_datetime_without_milliseconds_s3

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

    def last_modified_iso8601(key):
        kept = key.__dict__.get("_last_modified_iso8601")
        if kept is None or kept[0] != key.last_modified:
            kept = (key.last_modified, iso_8601_datetime_without_milliseconds_s3(key.last_modified))
            key.__dict__["_last_modified_iso8601"] = kept
        return kept[1]

    FakeKey.last_modified_ISO8601 = property(last_modified_iso8601)

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

    from concurrent.futures import ThreadPoolExecutor

    from werkzeug.serving import ThreadedWSGIServer

    threads = ThreadPoolExecutor(max_workers=CONNECTION_THREADS, thread_name_prefix="connection")
    ThreadedWSGIServer.process_request = lambda server, request, address: threads.submit(
        server.process_request_thread, request, address)


LISTING_FIELDS = {"Name", "Prefix", "MaxKeys", "KeyCount", "IsTruncated", "Contents", "Delimiter",
                  "CommonPrefixes", "EncodingType", "NextContinuationToken", "StartAfter"}
LISTED_KEY_FIELDS = {"Key", "LastModified", "ETag", "Size", "StorageClass"}


def quick_listings():
    """ListObjectsV2 at a cost that does not grow with the whole bucket. moto answers a listing
    by walking every key of the bucket through a Python generator (one dictionary lookup and
    two method calls per key) and then writing the answer with its generic, botocore-driven XML
    serializer (about 50 us per listed key). The replay bench's nodes list one episode's folder
    of the clip bucket per `catalog.ttl_s` while the bucket grows to thousands of clips: by
    late in the day each listing of 170 clips cost moto about 20 ms of CPU, most of moto's work.

    Two replacements, each giving exactly what moto's own code gives (scripts/
    check_s3_test_server.py compares both ways of answering, byte for byte, over prefixes,
    delimiters, continuation tokens, start-after and max-keys):
    - the scan: each bucket keeps its key names sorted (brought up to date, when keys were added
      or deleted, from set differences with moto's key table, in C), so a listing looks only at
      the names with its prefix; folders, start-after, continuation tokens and truncation stay
      moto's own.
    - the XML: moto still builds the listing's result (its argument handling, KeyCount, tokens);
      this writes it out in S3's element order. Results with fields this does not write
      (fetch-owner, checksum algorithms) go to moto's serializer as before.
    """
    import bisect
    import threading
    from xml.sax.saxutils import escape

    from moto.s3.models import FakeBucket, FakeDeleteMarker, S3Backend
    from moto.s3.responses import S3Response

    scan = S3Backend.list_objects
    index_lock = threading.Lock()

    def names_under(bucket, prefix):
        """The bucket's key names that start with `prefix`, in order. Each bucket keeps its names
        sorted, brought up to date on each listing by set differences against the key table."""
        store = bucket.keys
        with index_lock:
            known, ordered = bucket.__dict__.get("_listing_index") or (set(), [])
            added, removed = store.keys() - known, known.difference(store.keys())
            if added or removed:
                known = set(store.keys())
                if len(added) + len(removed) > 64:
                    ordered = sorted(known)
                else:
                    ordered = list(ordered)  # a listing in progress keeps the list it took
                    for name in removed:
                        del ordered[bisect.bisect_left(ordered, name)]
                    for name in added:
                        bisect.insort(ordered, name)
                bucket.__dict__["_listing_index"] = (known, ordered)
        first = bisect.bisect_left(ordered, prefix)
        for name in ordered[first:]:
            if not name.startswith(prefix):
                break
            yield name

    def list_objects(self, bucket, prefix, delimiter, marker, max_keys):
        if type(bucket) is not FakeBucket:
            return scan(self, bucket, prefix, delimiter, marker, max_keys)
        prefix = prefix or ""
        cut = len(prefix)
        keys, folders = [], set()
        for name in names_under(bucket, prefix):
            if delimiter and delimiter in name[cut:]:
                folders.add(prefix + name[cut:].split(delimiter)[0] + delimiter)
                continue
            versions = dict.get(bucket.keys, name)
            if versions and not isinstance(versions[-1], FakeDeleteMarker):
                keys.append(versions[-1])
        folders = sorted(folders)
        if marker:
            keys = self._get_results_from_token(keys, self._pagination_tokens.get(marker) or marker)
        truncated, next_marker = False, None
        if max_keys is not None:
            keys, truncated, next_marker = self._truncate_result(keys, max_keys)
        return keys, folders, truncated, next_marker

    S3Backend.list_objects = list_objects

    serialized = S3Response.serialized

    def element(name, value):
        if isinstance(value, bool):
            value = "true" if value else "false"
        text = escape(str(value))
        return f"<{name}>{text}</{name}>" if text else f"<{name}/>"

    def write_listing(result):
        parts = ['<?xml version="1.0" encoding="utf-8"?>\n',
                 '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
                 element("IsTruncated", result["IsTruncated"])]
        for item in result["Contents"]:  # the one part as long as the listing: written in one go
            parts.append(f"<Contents><Key>{escape(item['Key'])}</Key><LastModified>{item['LastModified']}"
                         f"</LastModified><ETag>{escape(item['ETag'])}</ETag><Size>{item['Size']}</Size>"
                         f"<StorageClass>{item['StorageClass']}</StorageClass></Contents>")
        parts += [element("Name", result["Name"]), element("Prefix", result["Prefix"])]
        if "Delimiter" in result:
            parts.append(element("Delimiter", result["Delimiter"]))
        parts.append(element("MaxKeys", result["MaxKeys"]))
        for common in result.get("CommonPrefixes", ()):
            parts.append("<CommonPrefixes>" + element("Prefix", common["Prefix"]) + "</CommonPrefixes>")
        for name in ("EncodingType", "KeyCount", "NextContinuationToken", "StartAfter"):
            if name in result:
                parts.append(element(name, result[name]))
        parts.append("</ListBucketResult>")
        return "".join(parts)

    def answer(self, action_result):
        result = getattr(action_result, "result", None)
        if (self.data.get("Action") != "ListObjectsV2" or not isinstance(result, dict)
                or not set(result) <= LISTING_FIELDS
                or any(item.keys() != LISTED_KEY_FIELDS or not item["StorageClass"] for item in result["Contents"])):
            return serialized(self, action_result)
        headers = {"Content-Type": "application/xml"}
        headers.update(self.response_headers)
        return 200, headers, write_listing(result)

    S3Response.serialized = answer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expire-sessions", action="store_true")
    parser.add_argument("--web-identity-token", default=None)
    parser.add_argument("--authenticate", metavar="FILE", default=None)
    parser.add_argument("--no-access-log", action="store_true",
                        help="no line on stderr per request (a benchmark's hundreds of thousands)")
    parser.add_argument("--moto-listings", action="store_true",
                        help="answer ListObjectsV2 with moto's own code (quick_listings off), to compare")
    args = parser.parse_args()
    if args.expire_sessions:
        expire_sessions()
    if args.web_identity_token:
        accept_web_identity(args.web_identity_token)
    unblock_termination_signals()
    memoize_pure_lookups()
    if not args.moto_listings:
        quick_listings()
    if args.no_access_log:
        from werkzeug.serving import WSGIRequestHandler
        WSGIRequestHandler.log_request = lambda handler, code="-", size="-": None

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
