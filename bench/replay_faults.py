#!/usr/bin/env python3
"""Set-up (c) of the replay under faults (issue 24): three nodes behind conf/multinode's nginx,
conf/cdn's cache in front, the replayed trace, and a seeded fault schedule run beside it.

    .venv/bin/python bench/replay_faults.py --clipproxy BIN --trace TRACE.jsonl [--seed 24]
        [--fault-scale 1.0] [--speed auto] [--budget-mb 256] [--json-out FILE]

The schedule (printed before the run, the same for one seed; --fault-scale shortens every
duration and gap for a quick try), one fault at a time with calm between them:

  node_kill    a node SIGKILLed while it streams (a fill running, or data queued on one of its
               sockets), started again on the same port and cache 30 s later
  node_term    a node SIGTERMed (a rolling restart: it drains, exits) and started again
  s3_brownout  60 s of S3 through scripts/fault_proxy.py: 30% of requests 503 SlowDown, the rest
               their first byte 200 ms late
  mongo_down   the MongoDB server SIGKILLed for 90 s (far past the scaled catalog.ttl_s), then
               started again on its port
  cdn_wipe     the CDN's nginx stopped gracefully (SIGQUIT), its cache directory removed, started
               again empty; with --cdn-wipe reload, its files removed while it runs, then SIGHUP
  disk_full    one node's cache directory (a tmpfs mounted for the run) filled to ENOSPC for
               60 s, then freed; skipped, and said so, when mounting is refused

The trace is sent as bench/replay.py sends it (--workers keep-alive clients, its Conn and check),
at a speed that makes it last as long as the schedule. A connection the CDN refuses while it
restarts is retried by the client (counted apart). Each response is judged:

  broken_in_flight_on_killed_node   cut short or reset, in flight when a node was SIGKILLed, and
                                    the balancer's access log shows that node serving the URL
                                    then: the only breakage allowed
  broken_other                      any other response cut short, without an answer, with bytes
                                    that differ from `clipproxy trim`, a Content-Range that does
                                    not match, or a length that differs between responses
  failed_before_headers             an error status (JSON, before any body byte), by status;
                                    not broken, but a play that did not start, reported per window
  cdn_served_wrong_or_short         a CDN HIT that was short or wrong during the run, a re-fetch
                                    through the CDN after the faults that is short or wrong, or
                                    a stored cache file whose body is not its Content-Length

conf/multinode and conf/cdn are used as they are in the commit (the JSON records their digests and
whether the working tree differs from HEAD).
"""
import argparse
import asyncio
import datetime
import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
from replay import (PY, REPO, RANGE, Conn, Harness, Nginx, check, free_port, log, sampled,  # noqa: E402
                    tier_of, wait_port)
from serving import Proc, pct  # noqa: E402
from workload import is_play  # noqa: E402

DAY_S = 86400.0
NODES = ("a", "b", "c")
CONF_FILES = ("conf/multinode/nginx.conf", "conf/multinode/clipproxy-node.yaml", "conf/multinode/node-a.env",
              "conf/multinode/node-b.env", "conf/multinode/node-c.env", "conf/cdn/nginx-proxy-cache.conf")
RECOVERY_WINDOW_S = 10.0   # hit ratio measured over this many seconds of sent requests
RECOVERY_BASELINE_S = 30.0  # ... against the same ratio over this long before the fault
RECOVERY_SLACK = 0.03      # recovered: within 3 points of the baseline


# ----------------------------------------------------------------------------------------------
# the schedule

def make_schedule(seed, scale):
    """Seeded: the order of the faults, the nodes they hit and the calm between them."""
    rng = random.Random(seed)
    kinds = ["node_kill", "node_term", "s3_brownout", "mongo_down", "cdn_wipe", "disk_full"]
    rng.shuffle(kinds)
    hold = {"node_kill": 30, "node_term": 0, "s3_brownout": 60, "mongo_down": 90, "cdn_wipe": 0, "disk_full": 60}
    targets = dict(zip(("node_kill", "node_term", "disk_full"), rng.sample(NODES, 3)))  # three nodes, one each
    gap = 90.0 * scale  # the caches warm up first
    at, schedule = 0.0, []
    for kind in kinds:
        at += gap
        entry = {"kind": kind, "after_calm_s": round(gap, 1), "at_s": round(at, 1), "hold_s": round(hold[kind] * scale, 1)}
        if kind in targets:
            entry["node"] = targets[kind]
        schedule.append(entry)
        at += entry["hold_s"]
        # What follows a fault: time to see the cluster recover before the next one.
        gap = rng.uniform(35, 50) * scale
    return schedule, at + gap + 20 * scale  # room for a kill that waits for a stream


# ----------------------------------------------------------------------------------------------
# the cluster

def unix_get(path, sock_path, timeout=2.0):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")


def counters_and_gauges(text):
    """Every clipproxy series of a /metrics page, labels kept."""
    out = {}
    for line in text.splitlines():
        if line.startswith("clipproxy_") and " " in line:
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def counters(text):
    """The counters (`*_total` series) of a /metrics page."""
    return {k: v for k, v in counters_and_gauges(text).items() if k.split("{", 1)[0].endswith("_total")}


class Scraper(threading.Thread):
    """Reads every node's /metrics from its admin socket every `every` s, as Prometheus would."""

    def __init__(self, cluster, t0, every=2.0):
        super().__init__(daemon=True)
        self.c, self.t0, self.every = cluster, t0, every
        self.samples = []  # (t, node, counters or None when the node did not answer)
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(self.every):
            t = time.perf_counter() - self.t0
            for name in NODES:
                try:
                    self.samples.append((t, name, counters(self.c.admin(name))))
                except OSError:
                    self.samples.append((t, name, None))

    def increase(self, start, end):
        """Series -> how much it rose over [start, end] on all nodes (a restart's reset counts from 0)."""
        rise, last, missed = {}, {}, {}
        for t, node, values in self.samples:
            if values is None:
                if start <= t <= end:
                    missed[node] = missed.get(node, 0) + 1
                continue
            before = last.get(node)
            last[node] = values
            if before is None or not start <= t <= end + self.every:
                continue
            for series, v in values.items():
                d = v - before.get(series, 0.0)
                d = v if d < 0 else d
                if d:
                    rise[series] = rise.get(series, 0.0) + d
        return {k: round(v) for k, v in sorted(rise.items())}, missed


class Cluster:
    """Set-up (c) with every process restartable in place: fixed ports, fixed directories."""

    def __init__(self, h, budget_mb, disk_node):
        self.h = h
        self.budget_mb = budget_mb
        self.base = os.path.join(h.work, "cluster")
        self.clip_bucket = "replay-clips-faults"
        self.starts = 0
        self.mounted = None
        self.mount_note = None
        h.s3().create_bucket(Bucket=self.clip_bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        self.s3_proxy = h.start("fault_proxy", [PY, os.path.join(REPO, "scripts", "fault_proxy.py"),
                                                "--target", f"127.0.0.1:{h.moto.port}"])
        self.ports = {n: free_port() for n in NODES}
        self.dirs = {n: os.path.join(self.base, f"node-{n}") for n in NODES}
        for d in self.dirs.values():
            os.makedirs(d, exist_ok=True)
        if disk_node:
            self.mount_tmpfs(disk_node)
        self.nodes = {n: self.start_node(n) for n in NODES}
        self.lb_port, self.cdn_port = free_port(), free_port()
        self.lb_log = os.path.join(h.logs, "lb-access.log")
        fill = {"@LISTEN@": f"127.0.0.1:{self.lb_port}", "@ACCESS_LOG@": self.lb_log}
        for letter, n in zip("ABC", NODES):
            fill[f"@NODE_{letter}@"] = f"127.0.0.1:{self.ports[n]}"
        self.lb = Nginx("lb", "conf/multinode/nginx.conf", fill, self.base, h.logs)
        wait_port(self.lb_port)
        self.cdn_cache = os.path.join(self.base, "cdn-cache")
        self.cdn_log = os.path.join(h.logs, "cdn-access.log")
        self.cdn_gen = 0
        self.cdn = self.start_cdn()

    def mount_tmpfs(self, name):
        size_mb = self.budget_mb + 160  # the budget, the LMDB index and fills in flight
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", self.dirs[name]],
                           capture_output=True, text=True)
        if r.returncode == 0:
            self.mounted = name
        else:
            self.mount_note = f"disk_full skipped: mounting a tmpfs was refused ({r.stderr.strip() or r.returncode})"
            log("  " + self.mount_note)

    def start_node(self, name):
        self.starts += 1
        return self.h.node(f"faults{self.starts}", name, self.clip_bucket, self.s3_proxy.port, self.budget_mb,
                           port=self.ports[name], cache_dir=self.dirs[name])

    def start_cdn(self):
        self.cdn_gen += 1
        n = Nginx(f"cdn-{self.cdn_gen}", "conf/cdn/nginx-proxy-cache.conf",
                  {"@LISTEN@": f"127.0.0.1:{self.cdn_port}", "@UPSTREAM@": [f"127.0.0.1:{self.lb_port}"],
                   "@CACHE_DIR@": self.cdn_cache, "@ACCESS_LOG@": self.cdn_log}, self.base, self.h.logs)
        wait_port(self.cdn_port)
        return n

    def admin(self, name, path="/metrics"):
        return unix_get(path, os.path.join(self.dirs[name], "admin.sock"))

    def sent_bytes(self, name):
        """peer -> bytes sent so far, for each established connection of the node's port."""
        out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{self.ports[name]} )"],
                             capture_output=True, text=True).stdout
        sent, peer = {}, None
        for line in out.splitlines():
            if not line[:1].isspace():
                fields = line.split()
                peer = fields[-1] if len(fields) >= 4 else None
            elif peer and (m := re.search(r"\bbytes_sent:(\d+)", line)):
                sent[peer] = int(m.group(1))
        return sent

    def streaming(self, name, polls=2, every=0.0):
        """A fill running on the node (its own gauge), or a connection of the node whose bytes
        sent grew over `polls` samples in a row: a body under way."""
        try:
            running = counters_and_gauges(self.admin(name)).get("clipproxy_fills_running", 0)
            if running:
                return f"{running:.0f} fills running"
        except OSError:
            pass
        samples = [self.sent_bytes(name)]
        for _ in range(polls - 1):
            time.sleep(every)
            samples.append(self.sent_bytes(name))
        for peer, last in samples[-1].items():
            seen = [s.get(peer) for s in samples]
            if None not in seen and all(x < y for x, y in zip(seen, seen[1:])):
                return f"{last - seen[0]} bytes sent in {1000 * every * (polls - 1):.0f} ms to {peer}"
        return None

    def set_s3(self, spec):
        body = json.dumps(spec).encode()
        with socket.create_connection(("127.0.0.1", self.s3_proxy.port), 5) as s:
            s.sendall(b"POST /__proxy/plan HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(body)).encode()
                      + b"\r\nConnection: close\r\n\r\n" + body)
            s.recv(4096)

    def stop(self):
        for n in (self.cdn, self.lb):
            n.stop()
        for p in self.nodes.values():
            p.stop()
        if self.mounted:
            subprocess.run(["umount", "-l", self.dirs[self.mounted]], capture_output=True)


# ----------------------------------------------------------------------------------------------
# the faults, on a thread of their own beside the client

class Faults(threading.Thread):
    def __init__(self, cluster, schedule, t0, seed):
        super().__init__(daemon=True)
        self.c = cluster
        self.schedule = schedule
        self.t0 = t0
        self.seed = seed
        self.windows = []
        self.kills = []  # (run seconds, wall time, node address)
        self.error = None

    def now(self):
        return time.perf_counter() - self.t0

    def sleep_until(self, at):
        time.sleep(max(0.0, at - self.now()))

    def run(self):
        try:
            last_end = 0.0
            for entry in self.schedule:
                if entry["kind"] == "disk_full" and not self.c.mounted:
                    self.windows.append(dict(entry, skipped=self.c.mount_note))
                    continue
                # The calm is kept even when a fault took longer than planned (a kill waits for a stream).
                self.sleep_until(max(entry["at_s"], last_end + entry["after_calm_s"]))
                w = dict(entry, start_s=round(self.now(), 2))
                log(f"  fault at {w['start_s']:.0f} s: {entry['kind']} {entry.get('node', '')}")
                getattr(self, entry["kind"])(entry, w)
                w["end_s"] = round(self.now(), 2)
                last_end = w["end_s"]
                self.windows.append(w)
        except Exception as exc:  # reported in the JSON and fails the run
            self.error = repr(exc)
            log(f"  fault thread failed: {exc!r}")

    def node_kill(self, entry, w):
        name = entry["node"]
        deadline = self.now() + 30
        while not (why := self.c.streaming(name)) and self.now() < deadline:
            pass
        w["streaming"] = why or "nothing seen streaming in 30 s"
        self.c.nodes[name].p.kill()
        # Seconds since the start of the replay (the clock of the results' sent and end), wall time.
        self.kills.append((self.now(), time.time(), f"127.0.0.1:{self.c.ports[name]}"))
        self.c.nodes[name].p.wait()
        killed_at = self.now()
        w["killed_s"] = round(killed_at, 2)
        self.sleep_until(killed_at + entry["hold_s"])
        self.c.nodes[name] = self.c.start_node(name)
        w["restarted_s"] = round(self.now(), 2)

    def node_term(self, entry, w):
        name = entry["node"]
        p = self.c.nodes[name].p
        p.send_signal(signal.SIGTERM)
        try:
            w["exit_status"] = p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            w["exit_status"] = "still running 60 s after SIGTERM: killed"
        w["drained_s"] = round(self.now() - w["start_s"], 2)
        self.c.nodes[name] = self.c.start_node(name)
        w["restarted_s"] = round(self.now(), 2)

    def s3_brownout(self, entry, w):
        self.c.set_s3({"plan": [], "default": "pass", "mix": {"slowdown": 30, "delay:200": 70}, "seed": self.seed})
        self.sleep_until(w["start_s"] + entry["hold_s"])
        self.c.set_s3({"plan": [], "default": "pass"})

    def mongo_down(self, entry, w):
        h = self.c.h
        port = h.mongo.port
        h.mongo.p.kill()
        h.mongo.p.wait()
        self.sleep_until(w["start_s"] + entry["hold_s"])
        catalog = os.path.join(os.path.dirname(h.args.episodes), "catalog")
        h.mongo = h.start("mongo-restarted", [PY, os.path.join(REPO, "scripts", "mongo_wire_server.py"), "--dir", catalog,
                                              "--port", str(port)])

    def cdn_wipe(self, entry, w):
        if self.c.cdn_wipe_mode == "reload":
            # The operator's way (docs/OPERATIONS.md): the files go while nginx runs (a missing file
            # is a miss), then a reload (SIGHUP: new workers, the listening socket stays open).
            w["entries_wiped"] = sum(len(files) for _, _, files in os.walk(self.c.cdn_cache))
            for item in os.listdir(self.c.cdn_cache):
                shutil.rmtree(os.path.join(self.c.cdn_cache, item), ignore_errors=True)
            self.c.cdn.p.send_signal(signal.SIGHUP)
            w["mode"] = "files removed while running, then nginx reloaded (SIGHUP)"
            return
        w["mode"] = "nginx stopped (SIGQUIT), cache directory removed, nginx started"
        old = self.c.cdn
        old.p.send_signal(signal.SIGQUIT)  # graceful: responses under way finish
        try:
            old.p.wait(60)
        except subprocess.TimeoutExpired:
            old.p.kill()
            old.p.wait()
        w["entries_wiped"] = sum(len(files) for _, _, files in os.walk(self.c.cdn_cache))
        shutil.rmtree(self.c.cdn_cache, ignore_errors=True)
        self.c.cdn = self.c.start_cdn()
        w["down_s"] = round(self.now() - w["start_s"], 2)

    def disk_full(self, entry, w):
        """Fills the node's disk and keeps it full: what its evictions free is taken again at once."""
        filler = os.path.join(self.c.dirs[entry["node"]], "filler.bin")
        written, top_ups = 0, 0
        with open(filler, "wb", buffering=0) as f:
            while self.now() < w["start_s"] + entry["hold_s"]:
                for size in (1 << 20, 4096):
                    block = b"\0" * size
                    while True:
                        try:
                            written += f.write(block)
                        except OSError as exc:
                            if exc.errno != errno.ENOSPC:
                                raise
                            break
                top_ups += 1
                time.sleep(0.005)
        w["filler_mb"] = round(written / 2 ** 20, 1)
        w["filler_top_ups"] = top_ups
        os.unlink(filler)


# ----------------------------------------------------------------------------------------------
# the client

async def send_trace(port, trace, speed, workers, sample_every, t0):
    """Every line at its scaled time; a refused connection (the CDN restarting) is retried."""
    results = [None] * len(trace)
    pending = asyncio.Queue()
    conns = [Conn(port) for _ in range(workers)]

    async def one(conn, i):
        line = trace[i]
        sent = time.perf_counter()
        refused = 0
        while True:
            try:
                r = await conn.request(line["url"], line.get("range"), sampled(line["url"], sample_every))
                break
            except ConnectionRefusedError as exc:
                conn.close()
                refused += 1
                if refused > 200:  # 10 s of refusals: the CDN did not come back
                    r = {"status": None, "error": repr(exc)[:200]}
                    break
                await asyncio.sleep(0.05)
            except Exception as exc:
                conn.close()
                r = {"status": None, "error": repr(exc)[:200]}
                break
        end = time.perf_counter()
        r.update(i=i, sent=sent - t0, end=end - t0, lag=sent - (t0 + line["t"] / speed), refused=refused)
        results[i] = r

    async def worker(conn):
        while (i := await pending.get()) is not None:
            await one(conn, i)
        conn.close()

    tasks = [asyncio.ensure_future(worker(c)) for c in conns]
    for i, line in enumerate(trace):
        wait = t0 + line["t"] / speed - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        pending.put_nowait(i)
    for _ in tasks:
        pending.put_nowait(None)
    await asyncio.gather(*tasks)
    return results


# ----------------------------------------------------------------------------------------------
# judging

LB_LINE = re.compile(r'\[(?P<time>[^\]]+)\] "GET (?P<url>\S+) [^"]*" (?P<status>\d+) (?P<bytes>\d+) "[^"]*" '
                     r'upstream=(?P<upstream>\S+(?:, \S+)*) upstream_status=')


def lb_entries(path):
    """url -> [(epoch seconds, the last node tried)] from the balancer's access log."""
    by_url = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = LB_LINE.search(line)
            if m:
                t = datetime.datetime.strptime(m["time"], "%d/%b/%Y:%H:%M:%S %z").timestamp()
                by_url.setdefault(m["url"], []).append((t, m["upstream"].split(", ")[-1]))
    return by_url


def caught_by_kills(error_log, kills, window_s=3.0):
    """From the balancer's error log, per kill: requests it found the node dead on before the
    response head (nginx tries the next node) and those it lost in the middle of a body."""
    stamps = []
    with open(error_log, errors="replace") as f:
        for line in f:
            if "prematurely closed" in line or "Connection reset by peer" in line:
                t = datetime.datetime.strptime(line[:19], "%Y/%m/%d %H:%M:%S").replace(
                    tzinfo=datetime.timezone.utc).timestamp()
                stamps.append((t, "response header" in line, line))
    out = []
    for _, wall_t, addr in kills:
        near = [(head, line) for t, head, line in stamps if -1.5 <= t - wall_t <= window_s and addr in line]
        out.append({"before_headers_tried_next_node": sum(1 for head, _ in near if head),
                    "mid_body": sum(1 for head, _ in near if not head)})
    return out


def cut(r):
    return r["status"] is None or r["got"] != r["length"]


def on_killed_node(r, url, kills, lb):
    for perf_t, wall_t, addr in kills:
        if r["sent"] <= perf_t <= r["end"] + 0.5:
            if any(addr == up and abs(t - wall_t) <= 2.0 for t, up in lb.get(url, [])):
                return True
    return False


def per_second(results, good):
    """second -> [answered, good] over the requests sent in that second of the run."""
    counts = {}
    for r in results:
        if r["status"] in (200, 206):
            c = counts.setdefault(int(r["sent"]), [0, 0])
            c[0] += 1
            c[1] += bool(good(r))
    return counts


def ratio(counts, start, end):
    answered = sum(counts.get(s, (0, 0))[0] for s in range(int(start), int(end)))
    return sum(counts.get(s, (0, 0))[1] for s in range(int(start), int(end))) / answered if answered else None


def recovery(counts, fault_at, back_at, until):
    """The ratio before the fault, its lowest after, and how long after `back_at` (the fault's end)
    a window of it is back within RECOVERY_SLACK of that."""
    base = ratio(counts, fault_at - RECOVERY_BASELINE_S, fault_at)
    out = {"baseline": round(base, 4) if base is not None else None, "recovered_after_s": None}
    if base is None:
        return out
    t, lowest = back_at, None
    while t + RECOVERY_WINDOW_S <= until:
        now = ratio(counts, t, t + RECOVERY_WINDOW_S)
        if now is not None:
            lowest = now if lowest is None else min(lowest, now)
            if now >= base - RECOVERY_SLACK:
                out["recovered_after_s"] = round(t - back_at, 1)
                break
        t += 1.0
    out["lowest"] = round(lowest, 4) if lowest is not None else None
    return out


def window_stats(trace, results, start, end):
    span = max(end - start, 1e-9)
    inside = [r for r in results if start <= r["end"] < end]
    plays_ok = sum(1 for r in inside if is_play(trace[r["i"]]) and r["status"] in (200, 206) and not cut(r))
    offered = sum(1 for r in results if start <= r["sent"] - r["lag"] < end and is_play(trace[r["i"]]))
    errors = {}
    for r in inside:
        if r["status"] not in (200, 206, 416):
            key = str(r["status"])
            errors[key] = errors.get(key, 0) + 1
    ttfb = [r["ttfb"] for r in inside if r.get("ttfb") is not None and r["status"] in (200, 206)]
    return {"plays_per_s": round(plays_ok / span, 1), "offered_plays_per_s": round(offered / span, 1),
            "errors": errors, "ttfb_ms_p50": round(pct(ttfb, 50) * 1000, 1) if ttfb else None,
            "ttfb_ms_p99": round(pct(ttfb, 99) * 1000, 1) if ttfb else None}


def cache_files_short(cache_dir):
    """Stored CDN entries whose body is not as long as their Content-Length (nginx's file layout:
    a binary header, "\\nKEY: ...\\n", the response head, the body)."""
    checked, bad = 0, []
    for root, _, files in os.walk(cache_dir):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            key_at = data.find(b"\nKEY: ")
            head_end = data.find(b"\r\n\r\n", key_at)
            if key_at < 0 or head_end < 0:
                continue  # a temporary file being written
            head = data[data.index(b"\n", key_at + 1) + 1:head_end].decode("latin-1")
            m = re.search(r"(?im)^content-length:\s*(\d+)", head)
            checked += 1
            if not m or int(m.group(1)) != len(data) - head_end - 4 or not head.startswith("HTTP/1.1 200"):
                bad.append(data[key_at + 6:data.index(b"\n", key_at + 1)].decode("latin-1"))
    return checked, bad


async def refetch(port, urls):
    conn, out = Conn(port), []
    for url in urls:
        try:
            out.append(await conn.request(url, None, True))
        except Exception as exc:
            conn.close()
            out.append({"status": None, "error": repr(exc)[:200]})
    conn.close()
    return out


# ----------------------------------------------------------------------------------------------

def conf_state():
    digests = {}
    for path in CONF_FILES:
        with open(os.path.join(REPO, path), "rb") as f:
            digests[path] = hashlib.sha256(f.read()).hexdigest()[:16]
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "conf/multinode", "conf/cdn"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return {"sha256_16": digests, "same_as_commit": not dirty}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clipproxy", required=True)
    ap.add_argument("--trace", required=True)
    ap.add_argument("--episodes", default=os.path.join(HERE, "work", "replay-corpus", "episodes.json"))
    ap.add_argument("--seed", type=int, default=24)
    ap.add_argument("--fault-scale", type=float, default=1.0, help="multiplies every fault's duration and gap")
    ap.add_argument("--speed", default="auto", help="trace seconds per wall second; auto: as long as the schedule")
    ap.add_argument("--budget-mb", type=int, default=256)
    ap.add_argument("--cdn-wipe", choices=("restart", "reload"), default="restart",
                    help="restart: stop nginx, remove its cache, start it; reload: remove the files while it runs, SIGHUP")
    ap.add_argument("--workers", type=int, default=24)
    ap.add_argument("--sample-every", type=int, default=30)
    ap.add_argument("--sample", type=int, default=150)
    ap.add_argument("--refetch", type=int, default=400, help="URLs re-fetched through the CDN after the faults")
    ap.add_argument("--work", default=os.path.join(HERE, "work", "replay-faults"))
    ap.add_argument("--json-out", required=True)
    args = ap.parse_args()

    args.work = os.path.abspath(args.work)  # nginx runs with -p in it
    schedule, length_s = make_schedule(args.seed, args.fault_scale)
    trace_span = None
    with open(args.trace) as f:
        for line in f:
            trace_span = json.loads(line)["t"]
    speed = trace_span / length_s if args.speed == "auto" else float(args.speed)
    log(f"==> fault schedule (seed {args.seed}; the trace runs {trace_span / speed:.0f} s at speed {speed:.1f}):")
    for e in schedule:
        log(f"    {e['at_s']:6.1f} s  {e['kind']:<12} {e.get('node', ''):<2} hold {e['hold_s']} s "
            f"(after {e['after_calm_s']} s of calm)")
    conf_before = conf_state()
    load_before = os.getloadavg()
    h = Harness(types.SimpleNamespace(work=args.work, episodes=args.episodes, trace=args.trace, speed=speed,
                                      clipproxy=args.clipproxy))
    disk_node = next((e["node"] for e in schedule if e["kind"] == "disk_full"), None)
    cluster = faults = None
    t_run0 = time.time()
    try:
        h.setup_shared()
        cluster = Cluster(h, args.budget_mb, disk_node)
        cluster.cdn_wipe_mode = args.cdn_wipe
        log(f"==> replaying {len(h.trace)} requests through the CDN on {cluster.cdn_port}")
        t0 = time.perf_counter()
        faults = Faults(cluster, schedule, t0, args.seed)
        scraper = Scraper(cluster, t0)
        faults.start()
        scraper.start()
        results = asyncio.run(send_trace(cluster.cdn_port, h.trace, speed, args.workers, args.sample_every, t0))
        wall = time.perf_counter() - t0
        faults.join()
        scraper.done.set()
        scraper.join()
        load_after = os.getloadavg()
        time.sleep(2)
        summary = judge(args, h, cluster, faults, scraper, results, speed, wall)
        cluster.cdn.p.send_signal(signal.SIGQUIT)  # written entries only, before reading the files
        cluster.cdn.p.wait(30)
        checked, short = cache_files_short(cluster.cdn_cache)
        summary["cdn_cache_files_checked"] = checked
        summary["cdn_cache_files_short_or_not_200"] = len(short)
        summary["cdn_served_wrong_or_short"] += len(short)
    finally:
        if cluster:
            cluster.stop()
        h.stop_all()
    conf_after = conf_state()
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                    text=True).stdout.strip(),
           "machine": f"{os.cpu_count()} cores, {os.uname().machine}, {os.uname().release}",
           "load_average_before": [round(x, 2) for x in load_before],
           "load_average_after": [round(x, 2) for x in load_after],
           "trace": os.path.relpath(args.trace, REPO), "seed": args.seed, "fault_scale": args.fault_scale,
           "cdn_wipe": args.cdn_wipe,
           "speed": round(speed, 2), "catalog_ttl_s": h.ttl_s, "budget_mb_per_node": args.budget_mb,
           "workers": args.workers, "schedule": schedule, "fault_thread_error": faults.error,
           "conf": {"before": conf_before, "after": conf_after,
                    "unchanged": conf_before == conf_after and conf_after["same_as_commit"]},
           "duration_s": round(time.time() - t_run0, 1)}
    out.update(summary)
    os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump(out, f, indent=1)
    log(f"  broken_in_flight_on_killed_node {out['broken_in_flight_on_killed_node']}, broken_other "
        f"{out['broken_other']} {out['broken_other_reasons']}, cdn_served_wrong_or_short "
        f"{out['cdn_served_wrong_or_short']}, failed before headers {out['failed_before_headers']}")
    log(f"  wrote {args.json_out} ({out['duration_s']} s)")
    ok = (out["broken_other"] == 0 and out["cdn_served_wrong_or_short"] == 0 and not faults.error
          and out["conf"]["unchanged"])
    return 0 if ok else 1


def judge(args, h, cluster, faults, scraper, results, speed, wall):
    trace = h.trace
    lb = lb_entries(cluster.lb_log)
    allowed, rest, refused_retried = [], [], 0
    for r in results:
        refused_retried += r["refused"]
        if cut(r) and on_killed_node(r, trace[r["i"]]["url"], faults.kills, lb):
            allowed.append(r)
        else:
            rest.append(r)
    checks = check(trace, rest, args.clipproxy, h.by_id, h.work, args.sample)
    reasons = dict(checks["broken_reasons"])
    failed = {}
    for reason in list(reasons):
        if reason.startswith("status "):
            failed[reason[7:]] = reasons.pop(reason)
    broken_other = checks["broken"] - sum(failed.values())
    # CDN hits that were short or wrong, judged on their own.
    hits = [r for r in rest if r.get("cache") == "HIT"]
    hit_broken = check(trace, hits, args.clipproxy, h.by_id, h.work, args.sample)["broken"]

    # Re-fetch through the CDN: every URL that was ever cut short, every URL first filled while a
    # fault was in force, and a seeded sample of the rest; each checked whole and byte for byte.
    windows = [w for w in faults.windows if "start_s" in w]
    in_fault = lambda t: any(w["start_s"] <= t <= w["end_s"] + 5 for w in windows)  # noqa: E731
    urls = sorted({trace[r["i"]]["url"] for r in results if cut(r)})
    urls += sorted({trace[r["i"]]["url"] for r in results if r.get("cache") == "MISS" and in_fault(r["sent"])}
                   - set(urls))
    others = sorted({line["url"] for line in trace} - set(urls))
    random.Random(args.seed).shuffle(others)
    urls = (urls + others)[:args.refetch]
    again = asyncio.run(refetch(cluster.cdn_port, urls))
    re_trace = [{"url": u, "range": None} for u in urls]
    for i, r in enumerate(again):
        r["i"] = i
    re_checks = check(re_trace, again, args.clipproxy, h.by_id, os.path.join(h.work, "refetch"), len(urls))
    refetch_hits = sum(1 for r in again if r.get("cache") == "HIT")

    caught = caught_by_kills(os.path.join(cluster.base, "lb", "error.log"), faults.kills)
    per_window = {}
    for w in windows:
        if w["kind"] == "node_kill" and caught:
            w["balancer_saw"] = caught.pop(0)
        key = w["kind"] + (f"-{w['node']}" if w.get("node") else "")
        # A fault that is over in a moment (a restart) is measured over the 10 s that follow it.
        stats = window_stats(trace, results, w["start_s"], max(w["end_s"], w["start_s"] + 10))
        stats.update({k: w[k] for k in w if k not in ("kind", "node", "at_s")})
        rise, missed = scraper.increase(w["start_s"], max(w["end_s"], w["start_s"] + 10))
        stats["metrics_increase"] = rise
        stats["metrics_scrapes_failed"] = missed
        per_window[key] = stats
    first, last = min(r["sent"] for r in results), max(r["end"] for r in results)
    calm = window_stats(trace, results, first, last)
    series = {"cdn_hit_ratio": per_second(results, lambda r: r.get("cache") == "HIT"),
              "served_without_fill": per_second(results, lambda r: tier_of(r) != "fill")}
    recov = {}
    for w in windows:
        back = {"cdn_wipe": "end_s", "node_kill": "restarted_s", "node_term": "restarted_s"}.get(w["kind"])
        if back:
            name = "after_cdn_wipe" if w["kind"] == "cdn_wipe" else f"after_{w['kind']}_restart"
            recov[name] = {k: recovery(c, w["start_s"], w[back], last) for k, c in series.items()}
    tiers = {}
    for r in results:
        if r["status"] in (200, 206):
            tiers[tier_of(r)] = tiers.get(tier_of(r), 0) + 1
    answered = sum(tiers.values())
    return {
        "plays": sum(1 for line in trace if is_play(line)), "requests": len(trace), "wall_s": round(wall, 1),
        "broken_in_flight_on_killed_node": len(allowed),
        "broken_other": broken_other, "broken_other_reasons": reasons,
        "failed_before_headers": failed,
        "cdn_served_wrong_or_short": hit_broken + re_checks["broken"],
        "cdn_hits_broken_during_run": hit_broken,
        "refetch": {"urls": len(urls), "cdn_hits": refetch_hits, "broken": re_checks["broken"],
                    "broken_reasons": re_checks["broken_reasons"], "checked_bytes": re_checks["responses_checked_bytes"]},
        "responses_checked_bytes": checks["responses_checked_bytes"],
        "client_connections_refused_then_retried": refused_retried,
        "hit_ratio": {t: round(n / answered, 4) for t, n in sorted(tiers.items())},
        "whole_run": calm, "fault_windows": per_window, "hit_ratio_recovery": recov,
        "recovery_rule": f"{RECOVERY_WINDOW_S:.0f} s windows of sent requests, from the fault's end, until within "
                         f"{RECOVERY_SLACK} of the ratio over the {RECOVERY_BASELINE_S:.0f} s before the fault",
        "disk_full_note": cluster.mount_note,
    }


if __name__ == "__main__":
    sys.exit(main())
