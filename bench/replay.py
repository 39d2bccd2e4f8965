#!/usr/bin/env python3
"""Replays a trace of the dashboard's clip traffic against real processes, per set-up, and
records what it cost: S3 requests and bytes, clip-bucket growth, clipproxy CPU, hits per tier,
time to first byte per tier, and every response checked whole.

    .venv/bin/python bench/replay.py --clipproxy BIN --trace TRACE.jsonl --episodes EPISODES.json
        [--setups a,b,c] [--speed X] [--budget-mb 64] [--json-out FILE] [--workers 24]

Set-ups (bench/CAPACITY.md, "How the replay runs"):
  a  one node
  b  three nodes behind conf/multinode/nginx.conf (consistent hashing)
  c  b with conf/cdn/nginx-proxy-cache.conf in front (the CDN's cache points at b's balancer)
S3 is moto behind bench/count_proxy.py (a fresh counter and a fresh clip bucket per set-up; one
source bucket for all), the catalog scripts/mongo_wire_server.py.

Time: the trace's seconds are divided by --speed (a day at speed 288 takes 5 minutes), and
`catalog.ttl_s` is divided by the same factor (at least 1 s), so the tiers see a day's listings
in the run's minutes. Requests are sent at their (scaled) times by --workers concurrent
keep-alive clients; a request whose time comes while all are busy waits (the lag is recorded).

A response is broken when its status is not 200/206 (or 416 for a range past the clip's end), its body
is shorter or longer than Content-Length, its Content-Range does not match the body, its full
length differs from another response for the same URL, or, for the sampled URLs (about one in
30, at most --sample per set-up), its bytes differ from `clipproxy trim` run on the local copy
of the source.
"""
import argparse
import asyncio
import datetime
import hashlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import boto3
from botocore.config import Config

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from serving import Proc, children, cpu_seconds, pct  # noqa: E402  (the serving bench's process helpers)
from workload import is_play, read_trace  # noqa: E402

PY = os.path.join(REPO, ".venv", "bin", "python")
SOURCE_BUCKET = "pod-insights-raw"
TIERS = ("cdn", "local", "coalesced", "clip_bucket", "fill", "part")
NODE_TIER = {"l1_hit": "local", "coalesced": "coalesced", "l2_hit": "clip_bucket", "fill": "fill", "part": "part"}
DAY_TTL_S = 600  # the default catalog.ttl_s (conf/clipproxy.yaml), scaled by --speed


def log(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


# ----------------------------------------------------------------------------------------------
# nginx from the repository's own snippets

class Nginx:
    """One nginx running an http-level snippet of conf/ with its placeholders filled in."""

    def __init__(self, name, snippet, fill, work, logs):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(REPO, snippet)) as f:
            text = f.read()
        for placeholder, value in fill.items():
            if isinstance(value, list):  # the whole line holding it, once per value
                lines = []
                for line in text.splitlines():
                    if placeholder in line and not line.lstrip().startswith("#"):
                        lines += [line.replace(placeholder, v) for v in value]
                    else:
                        lines.append(line)
                text = "\n".join(lines) + "\n"
            else:
                text = text.replace(placeholder, value)
        with open(os.path.join(self.dir, "site.conf"), "w") as f:
            f.write(text)
        user = "user root root;" if os.geteuid() == 0 else ""
        d = self.dir
        conf = f"""{user}
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    include {d}/site.conf;
}}
"""
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(conf)
        self.p = subprocess.Popen(["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf")], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(logs, name + ".log"), "wb"))

    def pids(self):
        return [self.p.pid] + children(self.p.pid)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


# ----------------------------------------------------------------------------------------------
# the client: keep-alive HTTP/1.1, every response read whole and checked

class Conn:
    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def request(self, url, range_header, digest):
        """One GET; returns a result dict. Reconnects when the server closed the connection."""
        for attempt in range(2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
            try:
                return await self._once(url, range_header, digest)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                reused = attempt == 0 and getattr(self, "served", 0) > 0
                self.close()
                if not reused or getattr(exc, "partial_body", False):
                    raise
        raise ConnectionError("unreachable")

    async def _once(self, url, range_header, digest):
        head = f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        if range_header:
            head += f"Range: {range_header}\r\n"
        t0 = time.perf_counter()
        self.writer.write((head + "\r\n").encode())
        raw = await self.reader.readuntil(b"\r\n\r\n")
        t_head = time.perf_counter()
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        sha = hashlib.sha256() if digest else None
        got, t_first = 0, None
        try:
            while got < length:
                data = await self.reader.read(min(262144, length - got))
                if not data:
                    break
                if t_first is None:
                    t_first = time.perf_counter()
                got += len(data)
                if sha:
                    sha.update(data)
        except ConnectionError as exc:
            exc.partial_body = True
            raise
        self.served = getattr(self, "served", 0) + 1
        if got < length or headers.get("connection", "").lower() == "close":
            self.close()
        return {"status": status, "length": length, "got": got,
                "ttfb": (t_first or t_head) - t0, "total": time.perf_counter() - t0,
                "content_range": headers.get("content-range"), "tier": headers.get("x-clip-tier"),
                "cache": headers.get("x-cache-status"), "sha": sha.hexdigest() if sha else None}

    def close(self):
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
        self.reader = self.writer = None


def sampled(url, every):
    return int(hashlib.sha256(url.encode()).hexdigest()[:8], 16) % every == 0


async def replay(port, trace, speed, workers, sample_every, results):
    queue = asyncio.Queue(maxsize=workers * 4)
    t_start = time.perf_counter()

    async def worker():
        conn = Conn(port)
        while True:
            item = await queue.get()
            if item is None:
                conn.close()
                return
            i, line, due = item
            sent = time.perf_counter()
            try:
                r = await conn.request(line["url"], line.get("range"), sampled(line["url"], sample_every))
            except Exception as exc:  # counted as broken
                r = {"status": None, "error": repr(exc)[:200]}
            r["i"], r["lag"], r["sent"] = i, sent - due, sent - t_start
            results.append(r)

    tasks = [asyncio.ensure_future(worker()) for _ in range(workers)]
    for i, line in enumerate(trace):
        due = t_start + line["t"] / speed
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await queue.put((i, line, due))
    for _ in tasks:
        await queue.put(None)
    await asyncio.gather(*tasks)
    return time.perf_counter() - t_start


# ----------------------------------------------------------------------------------------------
# checks against the reference

RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def check(trace, results, clipproxy, episodes_by_id, work, sample_limit):
    """Marks broken responses; compares the sampled ones with `clipproxy trim`. Returns a summary."""
    full_length = {}
    broken, reasons = 0, {}
    sample_refs = {}

    def bad(reason):
        nonlocal broken
        broken += 1
        reasons[reason] = reasons.get(reason, 0) + 1

    for r in results:
        line = trace[r["i"]]
        if r.get("status") is None:
            bad("no response: " + r.get("error", "")[:60])
            continue
        if r["got"] != r["length"]:
            bad("cut short")
            continue
        if r["status"] == 200:
            total = r["length"]
        elif r["status"] == 416:
            continue  # judged below, once every URL's length is known
        elif r["status"] == 206:
            m = RANGE.fullmatch(r["content_range"] or "")
            if not m or int(m.group(2)) - int(m.group(1)) + 1 != r["length"]:
                bad("Content-Range does not match the body")
                continue
            total = int(m.group(3))
        else:
            bad(f"status {r['status']}")
            continue
        if full_length.setdefault(line["url"], total) != total:
            bad("full length differs between responses for one URL")
    # 416 is right only for a range that starts at or past the end of the clip.
    for r in results:
        if r.get("status") == 416:
            line = trace[r["i"]]
            m = re.fullmatch(r"bytes=(\d+)-\d*", line.get("range") or "")
            total = full_length.get(line["url"])
            if not m or total is None or int(m.group(1)) < total:
                bad("416 for a satisfiable range")
    # Bytes against the reference, for the sampled URLs.
    checked = 0
    refdir = os.path.join(work, "reference")
    os.makedirs(refdir, exist_ok=True)
    for r in results:
        if r.get("sha") is None or r.get("got") != r.get("length"):
            continue
        url = trace[r["i"]]["url"]
        if url not in sample_refs:
            if len(sample_refs) >= sample_limit:
                continue
            m = re.fullmatch(r"/clips/([0-9a-f]{24})/(\d+)", url)
            episode = episodes_by_id[m.group(1)]
            out = os.path.join(refdir, f"{m.group(1)}-{m.group(2)}.mp3")
            if not os.path.exists(out):
                subprocess.run([clipproxy, "trim", episode["file"], "--start-ms", m.group(2), "--duration-ms", "30000",
                                "-o", out], check=True, capture_output=True)
            with open(out, "rb") as f:
                sample_refs[url] = f.read()
        ref = sample_refs[url]
        if r["status"] == 206:
            a, b, _ = (int(x) for x in RANGE.fullmatch(r["content_range"]).groups())
            expected = ref[a:b + 1]
        else:
            expected = ref
        checked += 1
        if hashlib.sha256(expected).hexdigest() != r["sha"]:
            bad("bytes differ from clipproxy trim")
    return {"broken": broken, "broken_reasons": reasons, "responses_checked_whole": len(results),
            "responses_checked_bytes": checked, "urls_checked_bytes": len(sample_refs)}


# ----------------------------------------------------------------------------------------------
# one set-up

class Harness:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs)
        self.procs = []
        with open(args.episodes) as f:
            self.episodes = json.load(f)
        self.by_id = {e["_id"]: e for e in self.episodes}
        self.trace = read_trace(args.trace)
        self.ttl_s = max(1, round(DAY_TTL_S / args.speed))
        self.runs = 0

    def start(self, name, argv, env=None, ready=r"LISTENING (\d+)"):
        p = Proc(name, argv, env=env, ready=ready, logdir=self.logs)
        self.procs.append(p)
        return p

    def s3(self):
        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.moto.port}", region_name="eu-west-2",
                            aws_access_key_id="AKIDREPLAY", aws_secret_access_key="replaysecret",
                            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))

    def setup_shared(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
        catalog = os.path.join(os.path.dirname(self.args.episodes), "catalog")
        self.moto = self.start("moto", [PY, os.path.join(REPO, "scripts", "s3_test_server.py"), "--no-access-log"])
        self.mongo = self.start("mongo", [PY, os.path.join(REPO, "scripts", "mongo_wire_server.py"), "--dir", catalog])
        s3 = self.s3()
        s3.create_bucket(Bucket=SOURCE_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        used = {re.fullmatch(r"/clips/([0-9a-f]{24})/\d+", line["url"]).group(1) for line in self.trace}
        t0 = time.time()
        for e in self.episodes:
            if e["_id"] in used:
                with open(e["file"], "rb") as f:
                    s3.put_object(Bucket=SOURCE_BUCKET, Key=e["source_key"], Body=f.read(), ContentType="audio/mpeg")
        log(f"  seeded {len(used)} source objects ({sum(self.by_id[i]['size'] for i in used) / 1e9:.2f} GB) "
            f"into moto in {time.time() - t0:.0f} s")
        self.used_episodes = used

    def node(self, setup, name, clip_bucket, counter_port, budget_mb, port=0, cache_dir=None):
        """One node of conf/multinode; `port` and `cache_dir` fixed by a caller that restarts it in place."""
        env = dict(os.environ)
        with open(os.path.join(REPO, "conf", "multinode", f"node-{name}.env")) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    env[k] = v
        env.update({
            "CLIPPROXY_HTTP_HOST": "127.0.0.1", "CLIPPROXY_HTTP_PORT": str(port),
            "CLIPPROXY_CACHE_DIR": cache_dir or os.path.join(self.work, f"{setup}-{self.runs}", f"node-{name}"),
            "CLIPPROXY_CACHE_MAX_BYTES": str(budget_mb * 1024 * 1024),
            "CLIPPROXY_CATALOG_TTL_S": str(self.ttl_s),
            "CLIPPROXY_MONGO_URI": f"mongodb://127.0.0.1:{self.mongo.port}/?retryReads=false",
            "CLIPPROXY_S3_ENDPOINT": f"http://127.0.0.1:{counter_port}", "CLIPPROXY_S3_PATH_STYLE": "true",
            "CLIPPROXY_S3_CLIP_BUCKET": clip_bucket,
            "AWS_ACCESS_KEY_ID": "AKIDREPLAY", "AWS_SECRET_ACCESS_KEY": "replaysecret",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        })
        env.pop("AWS_SESSION_TOKEN", None)
        return self.start(f"{setup}-node-{name}-{budget_mb}", [self.args.clipproxy, "serve", "--config",
                                                   os.path.join(REPO, "conf", "multinode", "clipproxy-node.yaml")],
                          env=env, ready=r"listening on http://[0-9.]+:(\d+)")

    def run_setup(self, setup, budget_mb):
        log(f"==> set-up {setup}: {dict(a='one node', b='three nodes behind nginx', c='CDN cache in front of b')[setup]}, "
            f"{budget_mb} MiB per node")
        self.runs += 1
        setup_dir = f"{setup}-{self.runs}"
        clip_bucket = f"replay-clips-{setup}-{self.runs}"
        s3 = self.s3()
        s3.create_bucket(Bucket=clip_bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        counter = self.start(f"{setup}-count_proxy", [PY, os.path.join(HERE, "count_proxy.py"),
                                                      "--target", f"127.0.0.1:{self.moto.port}"])
        names = ["a"] if setup == "a" else ["a", "b", "c"]
        nodes = [self.node(setup, n, clip_bucket, counter.port, budget_mb) for n in names]
        nginxes = []
        port = nodes[0].port
        if setup in ("b", "c"):
            lb_port = free_port()
            fill = {"@LISTEN@": f"127.0.0.1:{lb_port}", "@ACCESS_LOG@": os.path.join(self.logs, f"{setup_dir}-lb-access.log")}
            for letter, n in zip("ABC", nodes):
                fill[f"@NODE_{letter}@"] = f"127.0.0.1:{n.port}"
            nginxes.append(Nginx(f"{setup_dir}-lb", "conf/multinode/nginx.conf", fill, self.work, self.logs))
            wait_port(lb_port)
            port = lb_port
        if setup == "c":
            cdn_port = free_port()
            nginxes.append(Nginx(f"{setup_dir}-cdn", "conf/cdn/nginx-proxy-cache.conf",
                                 {"@LISTEN@": f"127.0.0.1:{cdn_port}", "@UPSTREAM@": [f"127.0.0.1:{port}"],
                                  "@CACHE_DIR@": os.path.join(self.work, setup_dir, "cdn-cache"),
                                  "@ACCESS_LOG@": os.path.join(self.logs, f"{setup_dir}-cdn-access.log")}, self.work, self.logs))
            wait_port(cdn_port)
            port = cdn_port
        node_pids = [n.pid for n in nodes]
        cpu0, nginx_cpu0 = cpu_seconds(node_pids), cpu_seconds(sum((n.pids() for n in nginxes), []))
        helpers = {"moto": [self.moto.pid], "counting_proxy": [counter.pid], "mongodb_server": [self.mongo.pid]}
        helper_cpu0 = {name: cpu_seconds(pids) for name, pids in helpers.items()}
        client_cpu0 = time.process_time()
        results = []
        wall = asyncio.run(replay(port, self.trace, self.args.speed, self.args.workers, self.args.sample_every, results))
        cpu = cpu_seconds(node_pids) - cpu0
        nginx_cpu = cpu_seconds(sum((n.pids() for n in nginxes), [])) - nginx_cpu0
        # Every process's CPU over the replay, for bench/README.md's "where the time goes".
        cpu_by_process = {"clipproxy": round(cpu, 1), "nginx": round(nginx_cpu, 1),
                          "replay_client": round(time.process_time() - client_cpu0, 1)}
        cpu_by_process.update({name: round(cpu_seconds(pids) - helper_cpu0[name], 1) for name, pids in helpers.items()})
        load_average = {"1min": round(os.getloadavg()[0], 1), "5min": round(os.getloadavg()[1], 1)}
        time.sleep(2)  # background uploads to the clip bucket finish
        s3log = json.loads(self.http_get(counter.port, "/__count/log"))
        with open(os.path.join(self.work, f"{setup_dir}-s3.json"), "w") as f:
            json.dump(s3log, f)
        for n in nginxes:
            n.stop()
        for n in nodes:
            n.stop()
        counter.stop()
        growth = {"objects": 0, "bytes": 0, "frame_index_objects": 0, "frame_index_bytes": 0}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=clip_bucket):
            for o in page.get("Contents", []):
                kind = "frame_index_" if o["Key"].startswith("_clipproxy/") else ""
                growth[kind + "objects"] += 1
                growth[kind + "bytes"] += o["Size"]
        results.sort(key=lambda r: r["i"])
        checks = check(self.trace, results, self.args.clipproxy, self.by_id, self.work, self.args.sample)
        summary = summarize(self.trace, results, s3log, clip_bucket, growth, cpu, nginx_cpu, wall)
        summary["working_set_mb"] = round(working_set_bytes(self.trace, results) / 2 ** 20, 1)
        summary["working_set_over_budget"] = round(summary["working_set_mb"] / budget_mb, 1)
        summary.update(checks)
        summary.update({"cpu_s_by_process": cpu_by_process, "load_average_at_end": load_average,
                        "schedule_s": round(self.trace[-1]["t"] / self.args.speed, 1)})
        summary.update({"nodes": len(nodes), "budget_mb_per_node": budget_mb,
                        "catalog_ttl_s": self.ttl_s, "speed": self.args.speed, "workers": self.args.workers})
        with open(os.path.join(self.work, f"{setup_dir}-responses.jsonl"), "w") as f:
            for r in results:
                f.write(json.dumps({k: r.get(k) for k in ("i", "sent", "status", "tier", "cache", "ttfb", "lag")}) + "\n")
        summary["responses_file"] = os.path.relpath(os.path.join(self.work, f"{setup_dir}-responses.jsonl"), REPO)
        log(f"  {setup}: {summary['plays']} plays, {summary['requests']} requests in {wall:.0f} s, broken {summary['broken']}, "
            f"hit ratio {summary['hit_ratio']}, S3/1k plays {summary['s3_requests_per_1k_plays']}, "
            f"CPU/1k plays {summary['cpu_s_per_1k_plays']} s; CPU s by process {cpu_by_process}, load average {load_average['1min']} (5 min: {load_average['5min']})")
        return summary

    def http_get(self, port, path):
        with socket.create_connection(("127.0.0.1", port), 10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        return data.split(b"\r\n\r\n", 1)[1]

    def stop_all(self):
        for p in reversed(self.procs):
            p.stop()


def working_set_bytes(trace, results):
    """Bytes of the distinct clips the run asked for (each clip's full length, from the answers)."""
    sizes = {}
    for r in results:
        if r.get("status") == 200:
            sizes[trace[r["i"]]["url"]] = r["length"]
        elif r.get("status") == 206 and r.get("content_range"):
            m = RANGE.fullmatch(r["content_range"])
            if m:
                sizes[trace[r["i"]]["url"]] = int(m.group(3))
    return sum(sizes.values())


def tier_of(r):
    if r.get("cache") == "HIT":
        return "cdn"
    return NODE_TIER.get(r.get("tier"), "unknown")


def s3_verb(entry):
    method, path = entry["method"], entry["path"]
    if method == "HEAD":
        return "HEAD"
    if method in ("PUT", "POST"):
        return "PUT"
    if method == "GET" and ("list-type=" in path or re.search(r"[?&]prefix=", path)):
        return "LIST"
    return method


def summarize(trace, results, s3log, clip_bucket, growth, cpu, nginx_cpu, wall):
    plays = sum(1 for line in trace if is_play(line))
    per_k = 1000.0 / plays
    tiers = {t: 0 for t in TIERS}
    ttfb = {t: [] for t in TIERS}
    for r in results:
        if r.get("status") in (200, 206):
            t = tier_of(r)
            tiers[t] = tiers.get(t, 0) + 1
            ttfb.setdefault(t, []).append(r["ttfb"])
    answered = sum(tiers.values())
    verbs = {"GET": 0, "PUT": 0, "LIST": 0, "HEAD": 0}
    by_bucket = {}
    s3_bytes = 0
    for entry in s3log:
        verb = s3_verb(entry)
        verbs[verb] = verbs.get(verb, 0) + 1
        bucket = "clip_bucket" if entry["path"].startswith("/" + clip_bucket) else "source_bucket"
        by_bucket.setdefault(bucket, {}).setdefault(verb, 0)
        by_bucket[bucket][verb] += 1
        if verb == "GET":  # object bytes (listings are counted as requests, not bytes)
            s3_bytes += entry["body_bytes"]
    lags = [r["lag"] for r in results if "lag" in r]
    return {
        "plays": plays,
        "requests": len(trace),
        "hit_ratio": {t: round(n / answered, 4) if answered else None for t, n in tiers.items()},
        "requests_by_tier": tiers,
        "s3_requests_per_1k_plays": {v: round(n * per_k, 2) for v, n in verbs.items()},
        "s3_requests_by_bucket": by_bucket,
        "s3_bytes_per_1k_plays": round(s3_bytes * per_k),
        "clip_bucket_growth": growth,
        "clip_bucket_growth_per_1k_plays": {"objects": round(growth["objects"] * per_k, 2),
                                            "bytes": round(growth["bytes"] * per_k)},
        "cpu_s_per_1k_plays": round(cpu * per_k, 3),
        "cpu_s": round(cpu, 2),
        "nginx_cpu_s": round(nginx_cpu, 2),
        "ttfb_ms": {t: {"p50": round(pct(v, 50) * 1000, 2), "p99": round(pct(v, 99) * 1000, 2), "n": len(v)}
                    for t, v in ttfb.items() if v},
        "wall_s": round(wall, 1),
        "lag_ms": {"p50": round(pct(lags, 50) * 1000, 1), "p99": round(pct(lags, 99) * 1000, 1)} if lags else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clipproxy", required=True)
    ap.add_argument("--trace", required=True)
    ap.add_argument("--episodes", default=os.path.join(HERE, "work", "replay-corpus", "episodes.json"))
    ap.add_argument("--setups", default="a,b,c")
    ap.add_argument("--speed", type=float, default=288.0, help="trace seconds per wall second")
    ap.add_argument("--budget-mb", type=int, default=64, help="cache.max_bytes of each node, MiB")
    ap.add_argument("--workers", type=int, default=24)
    ap.add_argument("--sample-every", type=int, default=30, help="check the bytes of one URL in N")
    ap.add_argument("--sample", type=int, default=120, help="at most this many URLs checked byte for byte per set-up")
    ap.add_argument("--sweep-budgets", default="", help="MiB,MiB,…: run set-up a once per budget (the sweep)")
    ap.add_argument("--work", default=os.path.join(HERE, "work", "replay-run"))
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    h = Harness(args)
    t0 = time.time()
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                    text=True).stdout.strip(),
           "machine": f"{os.cpu_count()} cores, {os.uname().machine}, {os.uname().release}",
           "trace": os.path.relpath(args.trace, REPO) if args.trace.startswith(REPO) else args.trace,
           "label": args.label, "speed": args.speed, "budget_mb_per_node": args.budget_mb,
           "catalog_ttl_s": h.ttl_s, "setups": {}}
    try:
        h.setup_shared()
        out["episodes_in_trace"] = len(h.used_episodes)
        out["source_bytes_in_trace"] = sum(h.by_id[i]["size"] for i in h.used_episodes)
        if args.sweep_budgets:
            out.pop("setups")
            out["runs"] = {}
            for mb in (int(x) for x in args.sweep_budgets.split(",")):
                out["runs"][str(mb)] = h.run_setup("a", mb)
        else:
            for setup in args.setups.split(","):
                out["setups"][setup] = h.run_setup(setup, args.budget_mb)
    finally:
        h.stop_all()
    out["duration_s"] = round(time.time() - t0, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump(out, f, indent=1)
    log(f"  wrote {args.json_out} ({out['duration_s']} s)")
    return 1 if any(s["broken"] for s in (out.get("setups") or out.get("runs")).values()) else 0


if __name__ == "__main__":
    sys.exit(main())
