#!/usr/bin/env python3
"""Serving benchmarks: clipproxy next to its peers (nginx, and a re-creation of the old system),
side by side in one run, on one S3 test server and one MongoDB wire server.

    .venv/bin/python bench/serving.py --clipproxy BIN [--quick]     (bench/serving.sh runs it)

Scenarios (bench/README.md says what each measures and how):
  1 hits          clipproxy's local store vs nginx (sendfile) on the same clip files, wrk, 64 conns
  2 misses        cold clips of indexed episodes vs the old path (ffmpeg -ss -i URL -t -c copy)
  2c snapped      a snapped miss (snap=pause) next to an exact miss of the same episode
  3 source bytes  per miss, counted at the S3 server (bench/count_proxy.py in front of moto)
  4 coalescing    200 concurrent requests for one cold clip
  5 cold episodes first clip of a never-seen one-hour CBR and one-hour VBR episode
  6 JSON API      /api/v1/audio_clips with the clip cached, vs the old path's cached answer
  7 slow clients  1,000 concurrent slow streaming downloads: peak memory and CPU, vs nginx

Writes bench/results/<date>.json, bench/RESULTS.md and bench/results/chart.png.
"""
import argparse
import asyncio
import concurrent.futures
import datetime
import json
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import boto3
from botocore.config import Config

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(HERE)
PY = os.path.join(REPO, ".venv", "bin", "python")
# First-byte latency of S3 in the same region (typical GET/HEAD/LIST figures are 10-20 ms; we take
# 15 ms): the second misses run holds every S3 response of both systems that long.
S3_FIRST_BYTE_MS = 15
SOURCE_BUCKET = "pod-insights-raw"
CLIP_BUCKET = "pod-insights-clips"
OLD_CLIP_BUCKET = "old-system-clips"  # the old system's own cache bucket, so neither sees the other's clips
CLK = os.sysconf("SC_CLK_TCK")
PUBLISHED_OLD_HIT_MS = (156, 205)


def log(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
# processes

class Proc:
    """A child process that prints a readiness line with its port on stdout."""

    def __init__(self, name, argv, env=None, ready=r"LISTENING (\d+)", timeout=60, logdir=None):
        self.name = name
        self.logpath = os.path.join(logdir, name + ".log")
        self.logfile = open(self.logpath, "wb")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.logfile, stdin=subprocess.DEVNULL,
                                  env=env, start_new_session=False)
        self.port = None
        found = threading.Event()
        pattern = re.compile(ready)

        def reader():
            for raw in self.p.stdout:
                m = pattern.search(raw.decode(errors="replace"))
                if m and not found.is_set():
                    self.port = int(m.group(1))
                    found.set()
            found.set()

        threading.Thread(target=reader, daemon=True).start()
        found.wait(timeout)
        if self.port is None:
            self.stop()
            raise RuntimeError(f"{name} did not start: {self.log()[-3000:]}")

    @property
    def pid(self):
        return self.p.pid

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # utime, stime, and those of waited-for children (the old system's ffmpeg runs)
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except OSError:
            pass
    return total / CLK


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pids):
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            pass


class Usage:
    """CPU seconds and peak resident memory of a set of processes over a window."""

    def __init__(self, pids):
        self.pids = pids
        reset_peak(pids)
        self.rss_before_mb = sum(status_kb(p, "VmRSS") for p in pids) * 1024 / 1e6
        self.cpu0 = cpu_seconds(pids)
        self.t0 = time.monotonic()

    def done(self):
        wall = time.monotonic() - self.t0
        cpu = cpu_seconds(self.pids) - self.cpu0
        return {"cpu_s": round(cpu, 2), "cpu_pct": round(100 * cpu / wall, 1) if wall else 0,
                "peak_mb": round(sum(status_kb(p, "VmHWM") for p in self.pids) * 1024 / 1e6, 1),
                "rss_before_mb": round(self.rss_before_mb, 1), "wall_s": round(wall, 2)}


# ----------------------------------------------------------------------------------------------
# HTTP measurement client (asyncio, raw HTTP/1.1, one request per connection)

async def fetch(host, port, path, keep=False, read_size=65536, read_delay=None, max_seconds=None, rcvbuf=None):
    t0 = time.perf_counter()
    t_start = time.monotonic()  # the byte counter's clock, to line its log up with this request
    result = {"status": None, "ttfb": None, "total": None, "bytes": 0, "error": None, "t_start": t_start}
    writer = None
    try:
        if rcvbuf:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=read_size)
        else:
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        result["head"] = time.perf_counter() - t0
        lines = head.decode("latin-1").split("\r\n")
        result["status"] = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        length = int(headers["content-length"]) if "content-length" in headers else None
        result["length"] = length
        result["tier"] = headers.get("x-clip-tier")
        body = [] if keep else None
        first = b""  # the body's first bytes, until the first MP3 frame's length is known
        audio_from = None  # where the audio starts: after the Info frame, for audio/mpeg
        while length is None or result["bytes"] < length:
            data = await reader.read(read_size)
            if not data:
                break
            if result["ttfb"] is None:
                result["ttfb"] = time.perf_counter() - t0
            result["bytes"] += len(data)
            if audio_from is None and len(first) < 4:
                first += data[:4 - len(first)]
                if len(first) == 4:
                    audio_from = mp3_frame_length(first) or 0
            if "ttfa" not in result and audio_from is not None and result["bytes"] > audio_from:
                result["ttfa"] = time.perf_counter() - t0
            if keep:
                body.append(data)
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                break
            if read_delay:
                await asyncio.sleep(read_delay)
        if result["ttfb"] is None:
            result["ttfb"] = time.perf_counter() - t0
        if keep:
            result["body"] = b"".join(body)
    except Exception as exc:  # recorded, counted as a failure in the table
        result["error"] = repr(exc)[:200]
    finally:
        result["total"] = time.perf_counter() - t0
        result["t_end"] = time.monotonic()
        if writer is not None:
            writer.close()
    return result


def mp3_frame_length(header):
    """Bytes of the MPEG audio frame that starts with these 4 bytes (Layer III), or None."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 3          # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    bitrate_index, rate_index, padding = header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    if version == 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrates = ([0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320] if mpeg1
                else [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160])
    rate = [44100, 48000, 32000][rate_index] // {3: 1, 2: 2, 0: 4}[version]
    return (144 if mpeg1 else 72) * bitrates[bitrate_index] * 1000 // rate + padding


def get(host, port, path, **kw):
    return asyncio.run(fetch(host, port, path, **kw))


def pct(values, p):
    values = sorted(values)
    if not values:
        return None
    k = max(0, min(len(values) - 1, int(round(p / 100 * len(values) + 0.5)) - 1))
    return values[k]


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 2)


# ----------------------------------------------------------------------------------------------
# wrk

WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk(url, seconds, connections, threads, script=None):
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", "--timeout", "10s"]
    if script:
        argv += ["-s", script]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    res = {"raw": out}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    for p in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        res[f"p{p}_ms"] = round(float(m.group(1)) * WRK_UNITS[m.group(2)], 3) if m else None
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return res


# ----------------------------------------------------------------------------------------------
# the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.work = os.path.join(HERE, "work", "run")
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs)
        with open(os.path.join(HERE, "work", "corpus", "episodes.json")) as f:
            self.episodes = json.load(f)
        self.by_name = {e["name"]: e for e in self.episodes}
        self.procs = []
        self.results = {"scenarios": {}, "notes": []}
        self.clip_bodies = {}  # path -> bytes of clips clipproxy served (they become the hit set)
        self.s3_delay_ms = 0

    # --- set-up ---------------------------------------------------------------------------

    def start(self, name, argv, env=None, ready=r"LISTENING (\d+)"):
        p = Proc(name, argv, env=env, ready=ready, logdir=self.logs)
        self.procs.append(p)
        return p

    def setup(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
        self.moto = self.start("moto", [PY, os.path.join(REPO, "scripts", "s3_test_server.py")])
        self.counter = self.start("count_proxy", [PY, os.path.join(HERE, "count_proxy.py"),
                                                  "--target", f"127.0.0.1:{self.moto.port}"])
        self.mongo = self.start("mongo", [PY, os.path.join(REPO, "scripts", "mongo_wire_server.py"),
                                          "--dir", os.path.join(HERE, "work", "corpus", "catalog")])
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.moto.port}", region_name="eu-west-2",
                          aws_access_key_id="AKIDBENCH", aws_secret_access_key="benchsecret",
                          config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
        for bucket in (SOURCE_BUCKET, CLIP_BUCKET, OLD_CLIP_BUCKET):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        for e in self.episodes:
            s3.upload_file(e["file"], SOURCE_BUCKET, e["source_key"], ExtraArgs={"ContentType": "audio/mpeg"})
        log(f"  seeded {len(self.episodes)} source objects "
            f"({sum(e['size'] for e in self.episodes) / 1e6:.0f} MB) into moto")
        secret = "benchsecret"
        env = dict(os.environ)
        env.update({
            "CLIPPROXY_HTTP_PORT": "0", "CLIPPROXY_HTTP_HOST": "127.0.0.1",
            "CLIPPROXY_CATALOG_KIND": "mongo",
            "CLIPPROXY_MONGO_URI": f"mongodb://127.0.0.1:{self.mongo.port}/?retryReads=false",
            "CLIPPROXY_MONGO_DATABASE": "podinsight",
            "CLIPPROXY_SOURCE_KIND": "s3", "CLIPPROXY_S3_ENDPOINT": f"http://127.0.0.1:{self.counter.port}",
            "CLIPPROXY_S3_PATH_STYLE": "true", "CLIPPROXY_S3_SOURCE_BUCKET": SOURCE_BUCKET,
            "CLIPPROXY_S3_CLIP_BUCKET": CLIP_BUCKET,
            "CLIPPROXY_CACHE_DIR": os.path.join(self.work, "cache"),
            "CLIPPROXY_SECOND_TIER_DIR": os.path.join(self.work, "l2"),
            "AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        })
        env.pop("AWS_SESSION_TOKEN", None)
        self.clipproxy_env = env
        self.clipproxy = self.start("clipproxy", [self.args.clipproxy, "serve"], env=env,
                                    ready=r"listening on http://[0-9.]+:(\d+)")
        self.old = self.start("old_system", [PY, os.path.join(HERE, "old_system.py"),
                                             # All its S3 requests through the byte counter, like
                                             # clipproxy's: both pay the same S3 latency when it is set.
                                             "--s3", f"http://127.0.0.1:{self.counter.port}",
                                             "--s3-source", f"http://127.0.0.1:{self.counter.port}",
                                             "--mongo", f"mongodb://127.0.0.1:{self.mongo.port}/",
                                             "--source-bucket", SOURCE_BUCKET, "--clip-bucket", OLD_CLIP_BUCKET])
        log(f"  clipproxy :{self.clipproxy.port} (pid {self.clipproxy.pid}), old system :{self.old.port}, "
            f"moto :{self.moto.port} behind count proxy :{self.counter.port}, mongo :{self.mongo.port}")

    def nginx_start(self, root):
        d = os.path.join(self.work, "nginx")
        os.makedirs(d, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = f"""
{user}
daemon off;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type audio/mpeg;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        etag on;
    }}
}}
"""
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(conf)
        p = subprocess.Popen(["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf")],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.logs, "nginx.log"), "wb"))
        self.nginx, self.nginx_port = p, port
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                if len(children(p.pid)) >= 2:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("nginx did not start: " + open(os.path.join(self.logs, "nginx.log")).read())

    def nginx_pids(self):
        return [self.nginx.pid] + children(self.nginx.pid)

    def stop_all(self):
        if getattr(self, "nginx", None) and self.nginx.poll() is None:
            self.nginx.terminate()
            self.nginx.wait(10)
        for p in reversed(self.procs):
            p.stop()

    # --- helpers ----------------------------------------------------------------------------

    def proxy_log(self):
        r = get("127.0.0.1", self.counter.port, "/__count/log", keep=True)
        return json.loads(r["body"])

    def source_reads(self, since, key):
        path = "/" + SOURCE_BUCKET + "/" + urllib.parse.quote(key, safe="/~")
        entries = [e for e in self.proxy_log()[since:] if e["method"] == "GET" and
                   urllib.parse.unquote(e["path"].split("?")[0]) == urllib.parse.unquote(path)]
        return entries

    def fills_finished(self):
        return self.clipproxy.log().count("fill finished")

    def last_source_first_byte(self):
        """The `source.first_byte_ms` of the newest `fill finished` line, in seconds: how long the
        source GET took to its first byte as clipproxy itself saw it (the relay included)."""
        lines = [l for l in self.clipproxy.log().splitlines() if "fill finished" in l and "source.first_byte_ms=" in l]
        if not lines:
            return None
        value = lines[-1].split("source.first_byte_ms=")[1].split()[0]
        return None if value == "-" else float(value) / 1000

    def wait_fills(self, count, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline and self.fills_finished() < count:
            time.sleep(0.02)
        time.sleep(0.1)  # the proxy records a connection when it closes

    def clip_path(self, e, start):
        return f"/clips/{e['_id']}/{start}"

    def clipproxy_get(self, e, start, **kw):
        path = self.clip_path(e, start)
        r = get("127.0.0.1", self.clipproxy.port, path, keep=True, **kw)
        if r["status"] == 200 and r.get("length") and r["bytes"] == r["length"]:
            self.clip_bodies[path] = r["body"]
        r.pop("body", None)
        return r

    def old_get(self, e, start):
        """The old path as a dashboard saw it: the JSON API call, then the download of clip_url."""
        r = get("127.0.0.1", self.old.port, f"/api/v1/audio_clips/{e['_id']}?start_time_ms={start}", keep=True)
        out = {"api_s": r["total"], "status": r["status"], "error": r["error"]}
        if r["status"] != 200:
            out["error"] = out["error"] or r.get("body", b"")[:300].decode(errors="replace")
            return out
        body = json.loads(r["body"])
        url = urllib.parse.urlsplit(body["clip_url"])
        d = get(url.hostname, url.port, url.path + "?" + url.query)
        out.update({"cache_hit": body["cache_hit"], "ttfb": r["total"] + d["ttfb"], "total": r["total"] + d["total"],
                    "bytes": d["bytes"], "download_status": d["status"]})
        return out

    # --- scenarios ---------------------------------------------------------------------------

    def warm_index(self):
        """Index every episode but the two one-hour ones (kept never-seen for scenario 5), as an
        operator does after ingest: `clipproxy index-sources` per feed (their feed, bench-hour, is
        left out), then one clip per episode through the server."""
        t0 = time.time()
        feeds = sorted({e["feed_slug"] for e in self.episodes if not e["name"].startswith("hour_")})
        for feed in feeds:
            done = subprocess.run([self.args.clipproxy, "index-sources", "--feed", feed], env=self.clipproxy_env,
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"clipproxy index-sources --feed {feed} failed: {done.stdout[-500:]} {done.stderr[-500:]}")
        log(f"  clipproxy index-sources: {len(feeds)} feeds in {time.time() - t0:.1f} s")
        fills = self.fills_finished()
        n = 0
        for e in self.episodes:
            if e["name"].startswith("hour_"):
                continue
            r = self.clipproxy_get(e, 0)
            if r["status"] != 200:
                raise RuntimeError(f"clipproxy warm-up of {e['name']} failed: {r}")
            n += 1
        self.wait_fills(fills + n)
        log(f"  indexed {n} episodes through clipproxy (one clip each) in {time.time() - t0:.1f} s")

    def misses(self, key="misses", seed=20261126):
        rng = random.Random(seed)
        eps = [e for e in self.episodes if not e["name"].startswith("hour_")]
        if self.quick:
            eps = eps[:3] + [e for e in eps if e["name"].startswith("ten_")][:3]
        rows = []
        usage = {"clipproxy": Usage([self.clipproxy.pid]), "old": Usage([self.old.pid])}
        for i, e in enumerate(eps):
            start = rng.randrange(1000, max(1001, e["duration_ms"] - 31000))
            row = {"episode": e["name"], "start_ms": start, "vbr": e["vbr"]}
            order = ("clipproxy", "old") if i % 2 == 0 else ("old", "clipproxy")
            for who in order:
                since = len(self.proxy_log())
                if who == "clipproxy":
                    fills = self.fills_finished()
                    r = self.clipproxy_get(e, start)
                    self.wait_fills(fills + 1)
                    reads = self.source_reads(since, e["source_key"])
                    # Where a miss waits: the S3 requests made while the client was being served.
                    log_now = self.proxy_log()[since:]
                    window = [x for x in log_now if x["t0"] <= r["t_end"]]
                    # What its first byte waited on: the S3 requests begun before it arrived (a
                    # miss of an indexed episode should make exactly one, the source GET), and our
                    # own overhead on top of that GET's time to its first byte.
                    first_byte_at = r["t_start"] + (r["ttfb"] or 0)
                    waited = [x for x in log_now if x["t0"] <= first_byte_at]
                    source_ttfb = (reads[0]["t_first"] - reads[0]["t0"]) if reads and reads[0].get("t_first") else None
                    own_view = self.last_source_first_byte()
                    row["clipproxy"] = {"status": r["status"], "head": r.get("head"), "ttfb": r["ttfb"], "ttfa": r.get("ttfa"),
                                        "total": r["total"], "s3_waited": len(waited),
                                        "overhead": (r["ttfb"] - source_ttfb) if source_ttfb is not None and r["ttfb"] else None,
                                        "overhead_own": (r["ttfb"] - own_view) if own_view is not None and r["ttfb"] else None,
                                        "bytes": r["bytes"], "error": r["error"],
                                        "source_gets": len(reads), "source_bytes": sum(x["body_bytes"] for x in reads),
                                        "s3_requests": [f"{x['method']} {x['path'].split('?')[0][:60]} "
                                                        f"{(min(x['t1'] or r['t_end'], r['t_end']) - x['t0']) * 1000:.1f} ms"
                                                        for x in window]}
                else:
                    r = self.old_get(e, start)
                    time.sleep(0.1)
                    reads = self.source_reads(since, e["source_key"])
                    r.update({"source_gets": len(reads), "source_bytes": sum(x["body_bytes"] for x in reads)})
                    row["old"] = r
            rows.append(row)
            c, o = row["clipproxy"], row["old"]
            log(f"    {e['name']:<26} @{start / 1000:7.1f}s  clipproxy {ms(c['total']):8.1f} ms "
                f"{c['source_bytes'] / max(1, c['bytes']):5.2f}x clip read | old {ms(o.get('total')) or float('nan'):8.1f} ms "
                f"{o.get('source_bytes', 0) / 1e6:6.2f} MB read")
        cpu = {who: u.done()["cpu_s"] for who, u in usage.items()}
        ok = [r for r in rows if r["clipproxy"]["status"] == 200 and r["old"].get("status") == 200
              and not r["old"].get("cache_hit")]
        cp_total = [r["clipproxy"]["total"] for r in ok]
        old_total = [r["old"]["total"] for r in ok]
        ratios = [r["clipproxy"]["source_bytes"] / r["clipproxy"]["bytes"] for r in ok if r["clipproxy"]["bytes"]]
        summary = {
            "clips": len(rows), "ok": len(ok),
            "clipproxy": {"head_p50_ms": ms(pct([r["clipproxy"]["head"] for r in ok], 50)),
                          "first_audio_byte_p50_ms": ms(pct([r["clipproxy"]["ttfa"] for r in ok if r["clipproxy"]["ttfa"]], 50)),
                          "ttfb_p50_ms": ms(pct([r["clipproxy"]["ttfb"] for r in ok], 50)),
                          "ttfb_p99_ms": ms(pct([r["clipproxy"]["ttfb"] for r in ok], 99)),
                          "total_p50_ms": ms(pct(cp_total, 50)), "total_p99_ms": ms(pct(cp_total, 99)),
                          "source_bytes_per_miss_p50": round(pct([r["clipproxy"]["source_bytes"] for r in ok], 50) or 0),
                          "source_over_clip_max": round(max(ratios), 3) if ratios else None,
                          "source_over_clip_p50": round(pct(ratios, 50), 3) if ratios else None,
                          "source_gets_max": max((r["clipproxy"]["source_gets"] for r in ok), default=None),
                          "s3_waited_max": max((r["clipproxy"]["s3_waited"] for r in ok), default=None),
                          "overhead_p50_ms": ms(pct([r["clipproxy"]["overhead"] for r in ok if r["clipproxy"]["overhead"] is not None], 50)),
                          "overhead_own_p50_ms": ms(pct([r["clipproxy"]["overhead_own"] for r in ok if r["clipproxy"].get("overhead_own") is not None], 50)),
                          "cpu_ms_per_miss": round(1000 * cpu["clipproxy"] / len(rows), 1)},
            "old": {"ttfb_p50_ms": ms(pct([r["old"]["ttfb"] for r in ok], 50)),
                    "ttfb_p99_ms": ms(pct([r["old"]["ttfb"] for r in ok], 99)),
                    "total_p50_ms": ms(pct(old_total, 50)), "total_p99_ms": ms(pct(old_total, 99)),
                    "source_bytes_per_miss_p50": round(pct([r["old"]["source_bytes"] for r in ok], 50) or 0),
                    "source_over_clip_p50": round(pct([r["old"]["source_bytes"] / max(1, r["old"]["bytes"]) for r in ok], 50), 2) if ok else None,
                    "source_gets_p50": pct([r["old"]["source_gets"] for r in ok], 50),
                    "cpu_ms_per_miss": round(1000 * cpu["old"] / len(rows), 1)},
        }
        if ok:
            summary["speedup_total_p50"] = round(summary["old"]["total_p50_ms"] / summary["clipproxy"]["total_p50_ms"], 1)
            summary["speedup_ttfb_p50"] = round(summary["old"]["ttfb_p50_ms"] / summary["clipproxy"]["ttfb_p50_ms"], 1)
            summary["speedup_total_min"] = round(min(o / c for o, c in zip(old_total, cp_total)), 1)
        summary["rows"] = [{k: ({kk: (ms(vv) if kk in ("head", "ttfb", "ttfa", "total", "api_s", "overhead", "overhead_own") else vv) for kk, vv in v.items()}
                                if isinstance(v, dict) else v) for k, v in r.items()} for r in rows]
        summary["s3_first_byte_delay_ms"] = self.s3_delay_ms
        self.results["scenarios"][key] = summary

    def snapped_misses(self, key="snapped_misses", seed=20261201):
        """A snapped miss (`?snap=pause`) next to an exact miss of the same episode: two fresh
        windows, one in each half, so neither reads what the other did. A snapped miss sends its
        headers only once the whole widened source range is read (the end boundary decides the
        length), where an exact miss starts streaming as the source answers."""
        rng = random.Random(seed)
        eps = [e for e in self.episodes if not e["name"].startswith("hour_") and e["duration_ms"] >= 130000]
        if self.quick:
            eps = eps[:4]
        rows = []
        for i, e in enumerate(eps):
            half = e["duration_ms"] // 2
            starts = {"exact": rng.randrange(32000, half - 31000), "snapped": rng.randrange(half + 2000, e["duration_ms"] - 33000)}
            row = {"episode": e["name"]}
            for kind in (("exact", "snapped") if i % 2 == 0 else ("snapped", "exact")):
                since, fills = len(self.proxy_log()), self.fills_finished()
                snaps = self.clipproxy.log().count("clip boundaries snapped to pauses")
                path = self.clip_path(e, starts[kind]) + ("?snap=pause" if kind == "snapped" else "")
                r = get("127.0.0.1", self.clipproxy.port, path)
                self.wait_fills(fills + 1)
                reads = self.source_reads(since, e["source_key"])
                row[kind] = {"start_ms": starts[kind], "status": r["status"], "tier": r.get("tier"), "ttfb": r["ttfb"],
                             "bytes": r["bytes"], "source_gets": len(reads), "source_bytes": sum(x["body_bytes"] for x in reads),
                             "snap_logged": self.clipproxy.log().count("clip boundaries snapped to pauses") > snaps,
                             "error": r["error"]}
            rows.append(row)
            x, sn = row["exact"], row["snapped"]
            log(f"    {e['name']:<26} exact {ms(x['ttfb']) or float('nan'):7.1f} ms {x['source_bytes'] / max(1, x['bytes']):5.2f}x | "
                f"snapped {ms(sn['ttfb']) or float('nan'):7.1f} ms {sn['source_bytes'] / max(1, sn['bytes']):5.2f}x "
                f"({sn['tier']}, {'snapped' if sn['snap_logged'] else 'NOT snapped'})")
        # Both misses answered from a fill, the snapped one after a logged choice.
        ok = [r for r in rows if all(r[k]["status"] == 200 and r[k]["tier"] == "fill" and r[k]["bytes"] for k in ("exact", "snapped"))
              and r["snapped"]["snap_logged"]]

        def side(kind):
            return {"ttfb_p50_ms": ms(pct([r[kind]["ttfb"] for r in ok], 50)),
                    "ttfb_p99_ms": ms(pct([r[kind]["ttfb"] for r in ok], 99)),
                    "source_over_clip_p50": round(pct([r[kind]["source_bytes"] / r[kind]["bytes"] for r in ok], 50), 3) if ok else None,
                    "source_over_clip_max": round(max(r[kind]["source_bytes"] / r[kind]["bytes"] for r in ok), 3) if ok else None,
                    "source_gets_max": max((r[kind]["source_gets"] for r in ok), default=None)}

        summary = {"clips": len(rows), "ok": len(ok), "exact": side("exact"), "snapped": side("snapped")}
        if ok and summary["exact"]["ttfb_p50_ms"]:
            summary["ttfb_p50_ratio"] = round(summary["snapped"]["ttfb_p50_ms"] / summary["exact"]["ttfb_p50_ms"], 2)
        summary["rows"] = [{k: ({kk: (ms(vv) if kk == "ttfb" else vv) for kk, vv in v.items()} if isinstance(v, dict) else v)
                            for k, v in r.items()} for r in rows]
        summary["s3_first_byte_delay_ms"] = self.s3_delay_ms
        self.results["scenarios"][key] = summary

    def set_s3_delay(self, milliseconds):
        """Holds the first byte of every S3 response (both systems') for `milliseconds`."""
        get("127.0.0.1", self.counter.port, f"/__count/delay?ms={milliseconds}", keep=True)
        self.s3_delay_ms = milliseconds

    @staticmethod
    def burst(port, path, n):
        """n concurrent GETs of one path, all started at once; their spread."""
        async def run():
            return await asyncio.gather(*(fetch("127.0.0.1", port, path) for _ in range(n)))

        results = asyncio.run(run())
        good = [r for r in results if r["status"] == 200 and r["bytes"] == r.get("length")]
        return good, {"requests": n, "ok": len(good),
                      "ttfb_p50_ms": ms(pct([r["ttfb"] for r in good], 50)),
                      "ttfb_p99_ms": ms(pct([r["ttfb"] for r in good], 99)),
                      "total_min_ms": ms(min((r["total"] for r in good), default=None)),
                      "total_p50_ms": ms(pct([r["total"] for r in good], 50)),
                      "total_p99_ms": ms(pct([r["total"] for r in good], 99)),
                      "total_max_ms": ms(max((r["total"] for r in good), default=None)),
                      "errors": sorted({str(r["error"] or r["status"]) for r in results if r not in good})[:5]}

    def coalescing(self):
        n = 20 if self.quick else 200
        e = self.by_name["ten_cbr128_44k_stereo"]
        start = 432100
        since = len(self.proxy_log())
        fills = self.fills_finished()
        started = self.clipproxy.log().count("fill started")
        path = self.clip_path(e, start)
        good, spread = self.burst(self.clipproxy.port, path, n)
        self.wait_fills(fills + 1)
        reads = self.source_reads(since, e["source_key"])
        out = {"requests": n, "ok": len(good), "source_gets": len(reads),
               "source_bytes": sum(x["body_bytes"] for x in reads),
               "fills_started": self.clipproxy.log().count("fill started") - started,
               "clipproxy": spread, "errors": spread["errors"]}
        # The same burst once the clip is stored: what the crowd costs without any fill (and, with
        # nginx's run of it in the hits phase, what the measuring client itself costs).
        self.coalescing_path = path
        self.clipproxy_get(e, start)
        out["clipproxy_cached"] = self.burst(self.clipproxy.port, path, n)[1]
        # The old path next to it, with fewer requests: it has no coalescing, so every request runs
        # its own ffmpeg over the source (200 at once would only measure process thrashing).
        m = 5 if self.quick else 20
        since = len(self.proxy_log())
        start_old = 432100 + 30000

        with concurrent.futures.ThreadPoolExecutor(max_workers=m) as pool:
            olds = list(pool.map(lambda _: self.old_get(e, start_old), range(m)))
        time.sleep(0.2)
        reads = self.source_reads(since, e["source_key"])
        og = [r for r in olds if r.get("status") == 200]
        out["old"] = {"requests": m, "ok": len(og), "source_gets": len(reads),
                      "ran_ffmpeg": sum(1 for r in og if not r.get("cache_hit")),
                      "source_bytes": sum(x["body_bytes"] for x in reads),
                      "total_p50_ms": ms(pct([r["total"] for r in og], 50)),
                      "total_max_ms": ms(max((r["total"] for r in og), default=None))}
        self.results["scenarios"]["coalescing"] = out
        log(f"    {n} requests: {out['ok']} ok, {out['source_gets']} source GETs, {out['source_bytes']} B, "
            f"TTFB p50 {out['clipproxy']['ttfb_p50_ms']} ms, total p50 {out['clipproxy']['total_p50_ms']} ms "
            f"max {out['clipproxy']['total_max_ms']} ms (stored: p50 {out['clipproxy_cached']['total_p50_ms']} ms); "
            f"old path ({m} requests): {out['old']['source_gets']} source GETs, {out['old']['ran_ffmpeg']} ran ffmpeg")

    def cold_episodes(self):
        out = {}
        # A search result at minute 1 of a never-seen hour-long episode: a VBR source is indexed
        # only as far as that clip needs.
        start = 60000
        for name in ("hour_cbr64_44k_mono", "hour_vbr_v5_44k_mono"):
            e = self.by_name[name]
            since = len(self.proxy_log())
            fills = self.fills_finished()
            r = self.clipproxy_get(e, start)
            self.wait_fills(fills + 1, timeout=120)
            reads = self.source_reads(since, e["source_key"])
            since2 = len(self.proxy_log())
            o = self.old_get(e, start + 30000)  # a different clip, so neither warms the other
            time.sleep(0.1)
            oreads = self.source_reads(since2, e["source_key"])
            out[name] = {"episode_bytes": e["size"], "start_ms": start,
                         "clipproxy": {"status": r["status"], "ttfb_ms": ms(r["ttfb"]), "total_ms": ms(r["total"]),
                                       "clip_bytes": r["bytes"], "source_gets": len(reads),
                                       "source_bytes": sum(x["body_bytes"] for x in reads),
                                       # one after another (sum ≈ span) or in parallel (sum > span)?
                                       "source_gets_sum_ms": ms(sum((x["t1"] or x["t0"]) - x["t0"] for x in reads)),
                                       "source_gets_span_ms": ms(max((x["t1"] or x["t0"]) for x in reads) - min(x["t0"] for x in reads))
                                       if reads else None},
                         "old": {"status": o.get("status"), "ttfb_ms": ms(o.get("ttfb")), "total_ms": ms(o.get("total")),
                                 "clip_bytes": o.get("bytes"), "source_gets": len(oreads),
                                 "source_bytes": sum(x["body_bytes"] for x in oreads)}}
            c = out[name]["clipproxy"]
            log(f"    {name}: clipproxy read {c['source_bytes'] / 1e6:.2f} MB in {c['source_gets']} GETs, "
                f"TTFB {c['ttfb_ms']} ms, whole {c['total_ms']} ms | old read "
                f"{out[name]['old']['source_bytes'] / 1e6:.2f} MB, whole {out[name]['old']['total_ms']} ms")
        self.results["scenarios"]["cold_episodes"] = out

    def write_hit_set(self):
        root = os.path.join(self.work, "www")
        for path, body in self.clip_bodies.items():
            dest = os.path.join(root, path.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(body)
        paths = sorted(self.clip_bodies)
        script = os.path.join(self.work, "paths.lua")
        with open(script, "w") as f:
            f.write("paths = {" + ",".join(f'"{p}"' for p in paths) + "}\n")
            f.write("counter = 0\n"
                    "setup = function(thread) thread:set('offset', math.random(#paths)) end\n"
                    "init = function(args) counter = offset or 0 end\n"
                    "request = function()\n"
                    "  counter = counter + 1\n"
                    "  return wrk.format('GET', paths[(counter % #paths) + 1])\n"
                    "end\n")
        return root, paths, script

    def start_baselines(self, paths):
        """Other clipproxy builds or settings (`--baseline`), for the hits only, each on a cache
        directory of its own that it fills from the same clip bucket: their hits run in the same
        rounds as clipproxy's and nginx's, so what a change cost is measured in one run."""
        started = {}
        for index, spec in enumerate(self.args.baseline):
            env = dict(self.clipproxy_env)
            env.update(spec.get("env", {}))
            env["CLIPPROXY_CACHE_DIR"] = os.path.join(self.work, f"cache-baseline-{index}")
            server = self.start(f"baseline-{index}", [spec.get("bin", self.args.clipproxy), "serve"], env=env,
                                ready=r"listening on http://[0-9.]+:(\d+)")
            for p in paths:  # the first request copies the clip in, the second must be a local hit
                get("127.0.0.1", server.port, p, keep=True)
            log(f"  {spec['label']} :{server.port} (pid {server.pid})")
            started[spec["label"]] = server
        return started

    def hits(self, root, paths, script):
        # Every clip must be a local-store hit at clipproxy and byte-identical at nginx.
        baselines = self.start_baselines(paths)
        def same_build(value):
            return next((label for label, spec in zip(baselines, self.args.baseline)
                         if "bin" not in spec and spec.get("env", {}).get("CLIPPROXY_HTTP_REQUEST_METRICS") == value), None)
        # The metrics' cost is measured between two fresh processes of this build, on and off:
        # clipproxy itself has run every scenario before this one (a larger heap and index).
        metrics_off, metrics_on = same_build("false"), same_build("true")
        servers = {"clipproxy": self.clipproxy, **baselines}
        for p in paths:
            b = get("127.0.0.1", self.nginx_port, p, keep=True)
            for who, server in servers.items():
                a = get("127.0.0.1", server.port, p, keep=True)
                if a.get("body") != b.get("body") or a["status"] != 200:
                    raise RuntimeError(f"hit set differs between {who} and nginx at {p}: {a['status']} {b['status']}")
                if a.get("tier") not in (None, "l1_hit"):
                    raise RuntimeError(f"{p} is not a local-store hit at {who} (X-Clip-Tier: {a['tier']})")
        seconds = 5 if self.quick else 15
        # Three rounds, the order alternating: runs on this shared 2-core machine vary by a
        # quarter in kernel time per request from one to the next, for nginx as for clipproxy.
        rounds = 1 if self.quick else 3
        runs = {"nginx": [], **{who: [] for who in servers}}
        for round_index in range(rounds):
            for who in (list(runs) if round_index % 2 == 0 else list(reversed(runs))):
                port = self.nginx_port if who == "nginx" else servers[who].port
                pids = self.nginx_pids() if who == "nginx" else [servers[who].pid]
                fast0 = self.fast_path_responses() if who == "clipproxy" else None
                u = Usage(pids)
                r = wrk(f"http://127.0.0.1:{port}", seconds, 64, 2, script)
                r.update(u.done())
                r.pop("raw")
                # CPU milliseconds per hit; for clipproxy also the share its fast path answered.
                r["cpu_ms_per_hit"] = round(1000 * r["cpu_s"] / (r["rps"] * r["wall_s"]), 4) if r["rps"] else None
                if fast0 is not None and r["rps"]:
                    r["fast_path_share"] = round((self.fast_path_responses() - fast0) / (r["rps"] * seconds), 3)
                runs[who].append(r)
                log(f"    {who[:24]:<24} {r['rps']:>9} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
                    f"CPU {r['cpu_pct']}%  peak {r['peak_mb']} MB  errors {r['non2xx'] + r['socket_errors']}")
        if os.environ.get("BENCH_PERF") == "1":  # an extra, unmeasured run under perf: where the time goes
            self.profile("hits", lambda: wrk(f"http://127.0.0.1:{self.clipproxy.port}", seconds, 64, 2, script))
        best = {k: max(v, key=lambda r: r["rps"] or 0) for k, v in runs.items()}
        avg = sum(len(self.clip_bodies[p]) for p in paths) / len(paths)
        out = {"clips": len(paths), "mean_clip_bytes": round(avg), "connections": 64, "seconds": seconds,
               "rounds": rounds, "best": best, "all": runs,
               "rps_ratio": round(best["clipproxy"]["rps"] / best["nginx"]["rps"], 3),
               "p99_ratio": round(best["clipproxy"]["p99_ms"] / best["nginx"]["p99_ms"], 3),
               "cpu_per_hit_ratio": round(best["clipproxy"]["cpu_ms_per_hit"] / best["nginx"]["cpu_ms_per_hit"], 3)}
        c = best["clipproxy"]
        out["baselines"] = [{"label": label,
                             "rps_ratio": round(best[label]["rps"] / best["nginx"]["rps"], 3),
                             "p99_ratio": round(best[label]["p99_ms"] / best["nginx"]["p99_ms"], 3),
                             "cpu_per_hit_ratio": round(best[label]["cpu_ms_per_hit"] / best["nginx"]["cpu_ms_per_hit"], 3),
                             "clipproxy_change": {"rps": round(c["rps"] / best[label]["rps"] - 1, 3),
                                                  "p99": round(c["p99_ms"] / best[label]["p99_ms"] - 1, 3),
                                                  "cpu_per_hit": round(c["cpu_ms_per_hit"] / best[label]["cpu_ms_per_hit"] - 1, 3)}}
                            for label in baselines]
        if metrics_off:
            # What the per-request metrics cost a hit: the same build with them off, compared round
            # by round (the two run back to back), the median of the rounds' ratios.
            pairs = sorted(on["cpu_ms_per_hit"] / off["cpu_ms_per_hit"]
                           for on, off in zip(runs[metrics_on or "clipproxy"], runs[metrics_off]) if on["cpu_ms_per_hit"] and off["cpu_ms_per_hit"])
            out["request_metrics_cpu_per_hit_ratio"] = round(pairs[len(pairs) // 2], 3) if pairs else None
        self.results["scenarios"]["hits"] = out
        for server in baselines.values():
            server.stop()  # the slow-client scenario after this measures clipproxy alone

    def fast_path_responses(self):
        """clipproxy's clipproxy_fast_path_responses_total (0 for a build without the fast path)."""
        body = get("127.0.0.1", self.clipproxy.port, "/metrics", keep=True).get("body", b"").decode()
        for line in body.splitlines():
            if line.startswith("clipproxy_fast_path_responses_total "):
                return float(line.split()[-1])
        return 0.0

    def json_api(self):
        e = self.by_name["ten_cbr64_44k_mono"]
        start = 0  # cached since the warm-up
        path = f"/api/v1/audio_clips/{e['_id']}?start_time_ms={start}"
        first = get("127.0.0.1", self.clipproxy.port, path, keep=True)
        body = first.get("body", b"")
        if first["status"] == 404:  # for an episode that exists: the route is not in this build
            self.results["scenarios"]["json_api"] = {"available": False,
                                                     "detail": "GET /api/v1/audio_clips answered 404 for a known "
                                                               "episode: the route is not in this build"}
            log(f"    not available in this build (404 {body[:100].decode(errors='replace')})")
            return
        if first["status"] != 200:
            self.results["scenarios"]["json_api"] = {"available": False,
                                                     "detail": f"status {first['status']}: {body[:300].decode(errors='replace')}"}
            return
        # A second call must be a cache hit.
        second = json.loads(get("127.0.0.1", self.clipproxy.port, path, keep=True)["body"])
        self.old_get(e, start)  # the old system caches the clip in its bucket
        seconds = 3 if self.quick else 10
        out = {"available": True, "cache_hit": second.get("cache_hit"), "connections": 1,
               "published_old_hit_ms": list(PUBLISHED_OLD_HIT_MS), "sample": second}
        for who, port, pids in (("clipproxy", self.clipproxy.port, [self.clipproxy.pid]),
                                ("old", self.old.port, [self.old.pid])):
            u = Usage(pids)
            r = wrk(f"http://127.0.0.1:{port}{path}", seconds, 1, 1)
            r.update(u.done())
            r.pop("raw")
            out[who] = r
            log(f"    {who:<9} p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  {r['rps']} req/s  errors {r['non2xx'] + r['socket_errors']}")
        self.results["scenarios"]["json_api"] = out

    def slow_clients(self, paths):
        n = 100 if self.quick else 1000
        seconds = 8 if self.quick else 30
        # 16 KiB reads once a second from a 16 KiB receive buffer: at most 16 KiB/s per client, a
        # 128 kbit/s clip played in real time; each client stops after `seconds`.
        out = {"clients": n, "seconds": seconds, "read_bytes_per_s": 16384}
        for who in ("clipproxy", "nginx"):
            port = self.clipproxy.port if who == "clipproxy" else self.nginx_port
            pids = [self.clipproxy.pid] if who == "clipproxy" else self.nginx_pids()
            u = Usage(pids)
            samples = []
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    samples.append(sum(status_kb(p, "VmRSS") for p in pids) * 1024 / 1e6)
                    time.sleep(0.5)

            t = threading.Thread(target=sample, daemon=True)
            t.start()

            async def crowd():
                async def one(i):
                    await asyncio.sleep(i * 2.0 / n)  # connect over two seconds
                    return await fetch("127.0.0.1", port, paths[i % len(paths)], read_size=16384, read_delay=1.0,
                                       max_seconds=seconds, rcvbuf=16384)
                return await asyncio.gather(*(one(i) for i in range(n)))

            results = asyncio.run(crowd())
            stop.set()
            t.join()
            usage = u.done()
            good = [r for r in results if r["status"] == 200 and r["bytes"] > 0 and not r["error"]]
            out[who] = {**usage, "ok": len(good), "rss_max_sampled_mb": round(max(samples, default=0), 1),
                        "bytes_per_client_p50": pct([r["bytes"] for r in good], 50),
                        "ttfb_p50_ms": ms(pct([r["ttfb"] for r in good], 50)),
                        "ttfb_p99_ms": ms(pct([r["ttfb"] for r in good], 99)),
                        "errors": sorted({str(r["error"] or r["status"]) for r in results if r not in good})[:5]}
            log(f"    {who:<9} {len(good)}/{n} ok, peak {usage['peak_mb']} MB (RSS before {usage['rss_before_mb']} MB), "
                f"CPU {usage['cpu_s']} s ({usage['cpu_pct']}%), TTFB p99 {out[who]['ttfb_p99_ms']} ms")
            time.sleep(1)
        self.results["scenarios"]["slow_clients"] = out

    def profile(self, name, load):
        """Samples clipproxy's stacks (perf, cpu-clock) while `load` runs; the report goes to
        bench/work/perf-<name>.txt. Nothing of it enters the results."""
        if not shutil.which("perf"):
            log("    (perf not installed: no profile)")
            return
        data = os.path.join(self.work, f"perf-{name}.data")
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(self.clipproxy.pid),
                                "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        load()
        rec.send_signal(2)
        rec.wait(30)
        out = os.path.join(HERE, "work", f"perf-{name}.txt")
        with open(out, "w") as f:
            for args in (["--no-children", "--sort", "dso,symbol"], ["--children", "--sort", "symbol"]):
                r = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none", "--percent-limit", "0.7", *args],
                                   capture_output=True, text=True)
                f.write(r.stdout)
        log(f"    profile: bench/work/perf-{name}.txt")

    # --- the run ------------------------------------------------------------------------------

    def memory_mark(self, label):
        """clipproxy's resident memory after each phase, split as the kernel reports it."""
        pid = self.clipproxy.pid
        self.results.setdefault("clipproxy_memory", []).append(
            {"after": label, **{k: round(status_kb(pid, k) * 1024 / 1e6, 1) for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}})

    def mappings(self, label, top=8):
        """clipproxy's largest resident mappings, by file (shared libraries, LMDB) or [anon]."""
        sizes, current = {}, None
        try:
            with open(f"/proc/{self.clipproxy.pid}/smaps") as f:
                for line in f:
                    first = line.split(None, 1)[0]
                    if "-" in first and not first.endswith(":"):
                        parts = line.split()
                        current = os.path.basename(parts[5]) if len(parts) > 5 else "[anon]"
                    elif first == "Rss:":
                        sizes[current] = sizes.get(current, 0) + int(line.split()[1])
        except OSError:
            return
        biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
        self.results.setdefault("clipproxy_mappings", {})[label] = [(name, round(kb * 1024 / 1e6, 1)) for name, kb in biggest]

    def run_snapped_only(self):
        """`--only snapped`: scenarios 2c and 2d alone (the inner loop of the snapped path's
        time to first byte), printed, nothing published."""
        self.setup()
        self.warm_index()
        self.snapped_misses()
        self.set_s3_delay(S3_FIRST_BYTE_MS)
        self.snapped_misses(key="snapped_misses_s3_latency", seed=20261202)
        for key in ("snapped_misses", "snapped_misses_s3_latency"):
            sm = self.results["scenarios"][key]
            log(f"{key}: exact {sm['exact']['ttfb_p50_ms']} ms, snapped {sm['snapped']['ttfb_p50_ms']} ms, "
                f"ratio {sm.get('ttfb_p50_ratio')}x, source/clip max {sm['snapped']['source_over_clip_max']}x, "
                f"source GETs max {sm['snapped']['source_gets_max']}")

    def run(self):
        t0 = time.time()
        self.setup()
        self.memory_mark("start")
        self.mappings("start")
        log("==> index warm-up")
        self.warm_index()
        self.memory_mark("index warm-up")
        log("==> 2/3 misses and source bytes (clipproxy vs old path)")
        self.misses()
        self.memory_mark("misses")
        log("==> 2c snapped misses (snap=pause) next to exact misses of the same episodes")
        self.snapped_misses()
        log(f"==> 2b misses again, every S3 response's first byte held {S3_FIRST_BYTE_MS} ms (in-region S3)")
        self.set_s3_delay(S3_FIRST_BYTE_MS)
        self.misses(key="misses_s3_latency", seed=20261129)
        log(f"==> 2d snapped misses, S3 first byte +{S3_FIRST_BYTE_MS} ms")
        self.snapped_misses(key="snapped_misses_s3_latency", seed=20261202)
        self.set_s3_delay(0)
        log("==> 4 coalescing")
        self.coalescing()
        self.memory_mark("coalescing")
        log("==> 5 cold one-hour episodes")
        self.cold_episodes()
        self.memory_mark("cold episodes")
        log("==> 6 JSON API, cached clip")
        self.json_api()
        self.memory_mark("JSON API")
        root, paths, script = self.write_hit_set()
        self.nginx_start(root)
        n = self.results["scenarios"]["coalescing"]["requests"]
        self.results["scenarios"]["coalescing"]["nginx_cached"] = self.burst(self.nginx_port, self.coalescing_path, n)[1]
        log(f"==> 1 hits: {len(paths)} clips, wrk 64 connections (nginx :{self.nginx_port})")
        self.hits(root, paths, script)
        self.memory_mark("hits")
        log("==> 7 slow clients")
        self.slow_clients(paths)
        self.memory_mark("slow clients")
        self.mappings("end")
        self.results["duration_s"] = round(time.time() - t0, 1)
        self.results["clipproxy_rss_end_mb"] = round(status_kb(self.clipproxy.pid, "VmRSS") * 1024 / 1e6, 1)
        self.results["clipproxy_hwm_lifetime_note"] = "peaks are per scenario: VmHWM reset through /proc/PID/clear_refs"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clipproxy", required=True)
    ap.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--baseline", action="append", type=json.loads,
                    default=json.loads(os.environ.get("CLIPPROXY_BASELINES") or "[]"),
                    help='another clipproxy whose hits run in the same rounds (what a change cost), as JSON: '
                         '{"label": "...", "bin": PATH (default --clipproxy), "env": {"CLIPPROXY_...": "..."}}; repeatable')
    ap.add_argument("--only", choices=["snapped"], help="run only these scenarios, print them, publish nothing")
    args = ap.parse_args()
    if not os.environ.get("CLIPPROXY_BASELINES"):
        # By default: the same build started fresh with the per-request metrics on and off, for their cost per hit.
        args.baseline += [{"label": "request metrics on (fresh)", "env": {"CLIPPROXY_HTTP_REQUEST_METRICS": "true"}},
                          {"label": "request metrics off (fresh)", "env": {"CLIPPROXY_HTTP_REQUEST_METRICS": "false"}}]
    bench = Bench(args)
    try:
        if args.only:
            {"snapped": bench.run_snapped_only}[args.only]()
            return
        bench.run()
    finally:
        bench.stop_all()
    import report
    report.publish(bench.results, args)


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()
