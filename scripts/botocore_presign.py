#!/usr/bin/env python3
"""Pre-signed S3 GET URLs from botocore, with a frozen clock: the reference for clipproxy's signer.

    python scripts/botocore_presign.py CASES.json

CASES.json is a JSON list of objects:
    {"bucket": "...", "key": "...", "endpoint": "https://s3.eu-west-2.amazonaws.com",
     "addressing_style": "path" | "virtual", "region": "eu-west-2", "expires": 3600,
     "now": 1700000000 (Unix seconds), "access_key": "...", "secret_key": "...",
     "session_token": "..." or null}
Prints a JSON list with one URL per case, in order.
"""
import datetime
import json
import os
import sys

import botocore.auth
import botocore.session
from botocore.config import Config


def presign(case, clients):
    # One client per endpoint/style/region/credentials: creating a botocore client costs ~0.1 s.
    identity = (case["endpoint"], case["addressing_style"], case["region"], case["access_key"],
                case["secret_key"], case.get("session_token"))
    client = clients.get(identity)
    if client is None:
        client = botocore.session.get_session().create_client(
            "s3",
            region_name=case["region"],
            endpoint_url=case["endpoint"],
            aws_access_key_id=case["access_key"],
            aws_secret_access_key=case["secret_key"],
            aws_session_token=case.get("session_token"),
            config=Config(signature_version="s3v4", s3={"addressing_style": case["addressing_style"]}),
        )
        clients[identity] = client
    frozen = datetime.datetime.fromtimestamp(case["now"], tz=datetime.timezone.utc).replace(tzinfo=None)
    # botocore 1.44's SigV4 query signer asks botocore.auth.get_current_datetime() for the time.
    botocore.auth.get_current_datetime = lambda *args, **kwargs: frozen
    return client.generate_presigned_url(
        "get_object", Params={"Bucket": case["bucket"], "Key": case["key"]}, ExpiresIn=case["expires"]
    )


def main():
    # Only the arguments given may shape the result: no profile, config file or env credentials.
    for name in list(os.environ):
        if name.startswith("AWS_"):
            del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    clients = {}
    json.dump([presign(case, clients) for case in cases], sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    sys.exit(main())
