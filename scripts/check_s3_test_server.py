#!/usr/bin/env python3
"""Checks that scripts/s3_test_server.py's quick ListObjectsV2 answers as moto's own code does.

    python scripts/check_s3_test_server.py

Starts the server twice, once as tests use it and once with --moto-listings, writes the same
objects into both (nested folders, names with XML and URL special characters, a versioned bucket
with a deleted key), sends both the same listings (prefixes, delimiters, start-after, max-keys,
every continuation token to the end, encoding-type, fetch-owner, errors), then adds and deletes
keys and sends them again, and compares status, headers and body byte for byte. Only what differs between any two runs is masked: request ids,
dates, and LastModified (the two servers store the objects at different instants), whose form is
checked instead. Prints one line per listing compared; exits 1 on the first difference.
"""
import http.client
import os
import re
import subprocess
import sys
import urllib.parse

HERE = os.path.dirname(os.path.realpath(__file__))
VOLATILE_HEADERS = {"date", "x-amz-request-id", "x-amzn-requestid", "x-amz-id-2"}
KEYS = ["a/b/1.mp3", "a/b/2.mp3", "a/b/10.mp3", "a/c/1.mp3", "a/c/d/1.mp3", "a/top.mp3", "b/1.mp3",
        "b+plus/x y.mp3", "b&amp/<tag>.mp3", "caf\u00e9/\u00e9t\u00e9.mp3", "z", "a/b/3.mp3"]
LISTINGS = [
    "", "prefix=a/", "prefix=a/b/", "prefix=a", "prefix=nothing/", "prefix=b%2Bplus/", "prefix=b%26amp/",
    "delimiter=/", "prefix=a/&delimiter=/", "prefix=a/c/&delimiter=/", "delimiter=.", "prefix=a/&delimiter=b",
    "start-after=a/b/2.mp3", "prefix=a/&start-after=a/c", "max-keys=0", "max-keys=1000&prefix=a/b/",
    "encoding-type=url", "encoding-type=url&delimiter=/", "fetch-owner=true&prefix=a/b/",
    "continuation-token=", "max-keys=abc",
]
PAGED = ["max-keys=1", "max-keys=2&prefix=a/", "max-keys=3&delimiter=/", "max-keys=2&prefix=a/&delimiter=/",
         "max-keys=1&start-after=a/c"]


class Server:
    def __init__(self, *flags):
        self.p = subprocess.Popen([sys.executable, os.path.join(HERE, "s3_test_server.py"), *flags],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.p.stdout.readline()
        match = re.match(r"LISTENING (\d+)", line)
        if not match:
            raise SystemExit(f"s3_test_server.py {' '.join(flags)} did not start: {line!r}")
        self.port = int(match.group(1))

    def request(self, method, path, body=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, urllib.parse.quote(path, safe="/?&=%"), body=body)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def stop(self):
        self.p.terminate()
        self.p.wait(10)


def masked(status, headers, body):
    kept = sorted((k.lower(), v) for k, v in headers if k.lower() not in VOLATILE_HEADERS)
    text = body.decode("utf-8")
    stamps = re.findall(r"<LastModified>([^<]*)</LastModified>", text)
    bad = [s for s in stamps if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z", s)]
    if bad:
        raise AssertionError(f"LastModified not in S3's form: {bad[0]!r}")
    text = re.sub(r"<LastModified>[^<]*</LastModified>", "<LastModified/>", text)
    text = re.sub(r"<(RequestId|HostId)>[^<]*</\1>", r"<\1/>", text)
    return status, kept, text


def fill(server):
    for bucket in ("listed", "versioned"):
        status, _, body = server.request("PUT", f"/{bucket}")
        assert status == 200, (bucket, status, body)
    server.request("PUT", "/versioned?versioning",
                   b'<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>')
    for key in KEYS:
        for bucket in ("listed", "versioned"):
            status, _, body = server.request("PUT", f"/{bucket}/{key}", key.encode() * 3)
            assert status == 200, (bucket, key, status, body)
    server.request("PUT", "/listed/a/b/2.mp3", b"written twice")
    server.request("DELETE", "/versioned/a/b/2.mp3")  # a delete marker: not listed


def change(server):
    """Keys added and deleted after the first listings: the quick path's sorted names must follow."""
    for key in ("a/b/0.mp3", "a/b/4.mp3", "a/bb/1.mp3", "0first", "zz/last.mp3"):
        for bucket in ("listed", "versioned"):
            server.request("PUT", f"/{bucket}/{key}", b"added later")
    for key in ("a/b/10.mp3", "z", "a/c/d/1.mp3"):
        for bucket in ("listed", "versioned"):
            server.request("DELETE", f"/{bucket}/{key}")


def compare(quick, moto, cases):
    """Sends every listing to both servers, following continuation tokens; the number compared,
    or None after printing the first difference."""
    compared = 0
    for bucket, query in cases:
        tokens = {quick: None, moto: None}
        while True:
            answers = {}
            for server in (quick, moto):
                q = query + (f"&continuation-token={urllib.parse.quote(tokens[server], safe='')}"
                             if tokens[server] else "")
                answers[server] = masked(*server.request("GET", f"/{bucket}?list-type=2&{q}".rstrip("&")))
            compared += 1
            if answers[quick] != answers[moto]:
                print(f"DIFFERENT: /{bucket}?list-type=2&{query} (token {tokens[moto]})")
                for label, server in (("quick", quick), ("moto", moto)):
                    print(f"  {label}: {answers[server]}")
                return None
            print(f"same: /{bucket}?list-type=2&{query}" + (f" (after token {tokens[moto]})" if tokens[moto] else ""))
            for server in (quick, moto):
                found = re.search(r"<NextContinuationToken>([^<]*)<", answers[server][2])
                tokens[server] = found.group(1) if found else None
            if not tokens[moto]:
                break
    return compared


def main():
    quick, moto = Server(), Server("--moto-listings")
    try:
        for server in (quick, moto):
            fill(server)
        cases = [(b, q) for b in ("listed", "versioned", "missing") for q in LISTINGS]
        cases += [(b, q) for b in ("listed", "versioned") for q in PAGED]
        compared = compare(quick, moto, cases)
        if compared is None:
            return 1
        for server in (quick, moto):
            change(server)
        again = compare(quick, moto, [(b, q) for b, q in cases if b != "missing"])
        if again is None:
            return 1
    finally:
        quick.stop()
        moto.stop()
    print(f"{compared + again} listings answered byte for byte as moto answers them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
