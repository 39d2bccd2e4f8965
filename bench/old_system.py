#!/usr/bin/env python3
"""A re-creation of the system clipproxy replaces, as the serving benchmarks' peer.

    python bench/old_system.py --s3 http://127.0.0.1:PORT [--s3-source URL] --mongo mongodb://127.0.0.1:PORT/
        [--source-bucket B] [--clip-bucket B] [--port 0]

    GET /api/v1/audio_clips/{episode_id}?start_time_ms=N[&duration_ms=M]

Per request, as the old API + Lambda did: look the episode up in MongoDB (episode_metadata by _id
gives guid; transcript_chunks_768d by episode_id gives feed_slug); if the clip bucket holds
`{feed_slug}/{guid}/{start}-{end}.mp3` (HeadObject), pre-sign it and answer cache_hit true;
otherwise find the source object (ListObjectsV2 under `{feed_slug}/{guid}/audio/`), pre-sign it, run
`ffmpeg -ss S -i <pre-signed URL> -t D -acodec copy`, upload the clip (PutObject), pre-sign it and
answer. The client then downloads the clip from the pre-signed URL. Prints "LISTENING <port>".
"""
import argparse
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
from botocore.config import Config
from bson.objectid import ObjectId
from pymongo import MongoClient

EXPIRES = 86400


class OldSystem:
    def __init__(self, args):
        def client(endpoint):
            return boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-2",
                                aws_access_key_id="AKIDBENCH", aws_secret_access_key="benchsecret",
                                config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                              max_pool_connections=256, retries={"max_attempts": 1}))
        self.s3 = client(args.s3)
        # Source reads may go through another endpoint (the benchmark's byte-counting proxy).
        self.src = client(args.s3_source or args.s3)
        self.db = MongoClient(args.mongo, directConnection=True, retryReads=False)[args.database]
        self.source_bucket = args.source_bucket
        self.clip_bucket = args.clip_bucket

    def clip(self, episode_id, start_ms, duration_ms):
        began = time.monotonic()
        try:
            oid = ObjectId(episode_id)
        except Exception:
            return 400, {"error": "invalid_episode_id"}
        meta = self.db.episode_metadata.find_one({"_id": oid})
        if meta is None:
            return 404, {"error": "not_found"}
        guid = meta["guid"]
        chunk = self.db.transcript_chunks_768d.find_one({"episode_id": guid})
        if chunk is None:
            return 404, {"error": "not_found"}
        feed = chunk["feed_slug"]
        key = f"{feed}/{guid}/{start_ms}-{start_ms + duration_ms}.mp3"
        hit = True
        try:
            self.s3.head_object(Bucket=self.clip_bucket, Key=key)
        except self.s3.exceptions.ClientError:
            hit = False
        if not hit:
            listing = self.src.list_objects_v2(Bucket=self.source_bucket, Prefix=f"{feed}/{guid}/audio/")
            wanted = f"_{guid[:8]}_audio.mp3"
            source = next((o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith(wanted)), None)
            if source is None:
                return 404, {"error": "no_source_audio"}
            url = self.src.generate_presigned_url("get_object", Params={"Bucket": self.source_bucket, "Key": source},
                                                 ExpiresIn=3600)
            with tempfile.TemporaryDirectory(prefix="oldsys-") as work:
                out = os.path.join(work, "clip.mp3")
                run = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{start_ms / 1000:.3f}", "-i", url,
                                      "-t", f"{duration_ms / 1000:.3f}", "-acodec", "copy", out],
                                     capture_output=True, text=True)
                if run.returncode != 0:
                    return 502, {"error": "ffmpeg", "detail": run.stderr[-500:]}
                with open(out, "rb") as f:
                    self.s3.put_object(Bucket=self.clip_bucket, Key=key, Body=f.read(), ContentType="audio/mpeg")
        clip_url = self.s3.generate_presigned_url("get_object", Params={"Bucket": self.clip_bucket, "Key": key},
                                                  ExpiresIn=EXPIRES)
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=EXPIRES)
        return 200, {"clip_url": clip_url, "expires_at": expires.isoformat(), "cache_hit": hit,
                     "episode_id": episode_id, "start_time_ms": start_ms, "duration_ms": duration_ms,
                     "generation_time_ms": int((time.monotonic() - began) * 1000)}


def handler_for(system):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def setup(self):
            super().setup()
            # Headers and body leave in separate writes: without this, Nagle + delayed ACK would add
            # 40 ms to every keep-alive answer, a cost the real API never had.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            prefix = "/api/v1/audio_clips/"
            if not url.path.startswith(prefix):
                return self.reply(404, {"error": "not_found"})
            try:
                start = int(query["start_time_ms"][0])
                duration = int(query.get("duration_ms", ["30000"])[0])
            except (KeyError, ValueError):
                return self.reply(400, {"error": "bad_request"})
            try:
                status, body = system.clip(urllib.parse.unquote(url.path[len(prefix):]), start, duration)
            except Exception as exc:  # a benchmark peer: report, never hang
                status, body = 502, {"error": "upstream", "detail": repr(exc)[:500]}
            self.reply(status, body)

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--s3", required=True, help="S3 endpoint for the clip bucket")
    ap.add_argument("--s3-source", help="S3 endpoint for source reads (default: --s3)")
    ap.add_argument("--mongo", required=True)
    ap.add_argument("--database", default="podinsight")
    ap.add_argument("--source-bucket", default="pod-insights-raw")
    ap.add_argument("--clip-bucket", default="pod-insights-clips")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(OldSystem(args)))
    server.daemon_threads = True
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
