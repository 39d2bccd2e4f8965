#!/usr/bin/env python3
"""Chaos soak and eviction-pressure stress for clipproxy (issue 12). Run it with the venv's Python.

    .venv/bin/python scripts/chaos.py [--mode soak|eviction] [--seconds N] [--clients N] [--seed N]
        [--binary PATH] [--no-mount] [--json-out PATH] [--commit LABEL] [--keep-work]

soak: moto (source bucket + clip bucket) behind scripts/fault_proxy.py, the MongoDB wire test
server and `clipproxy serve` (catalog.kind mongo, source.kind s3, a short catalog.ttl_s, the cache
on a 4 MiB tmpfs with a small byte budget), all on random loopback ports. Client threads request
random clips of the fixture episodes, whole and with Range, while the main thread injects one
fault at a time: S3 resets / 5xx / stalls through the fault proxy's plan, the MongoDB server
SIGKILLed and restarted on its port, the cache disk filled and freed, clipproxy SIGKILLed and
restarted on the same port and cache directory.

eviction: the embedded default (catalog files, source directory, local clip directory) with
cache.max_bytes 8000000, 16 clients, 30% of requests with a Range, no faults.

Every response is checked against `clipproxy trim` of the source: a 200/206 body must be exactly
the right bytes, or the request must have failed before its headers with a JSON error. A 200/206
whose body is short or differs is BROKEN, classified by the fault in force during the request and
by X-Clip-Tier. The one exempt kind (reported on its own line) is "source died mid-transfer after
every retry": a body that came from S3, cut short during an S3 fault (and no disk-full fault),
which the server counted in clipproxy_responses_aborted_total. Responses cut by our own SIGKILL of clipproxy and connections refused while
it was down are counted apart; a clipproxy that dies on its own is a failure. During long MongoDB
outages (past catalog.ttl_s) clips never asked before are requested too: they must still play
from the last known resolution. 2% of requests ask for an episode without audio (404) and 2% for
an unknown one (404, or 503 while MongoDB is down).

At the end clipproxy is stopped with SIGTERM, no `*.partial` may remain, every stored clip (local
blobs, and the clip bucket or clip directory) must equal its expected clip, `clipproxy index gc`
must drop no record and `clipproxy index verify` must be clean.

Exit status: 0 when nothing broke, 1 otherwise, 2 when the set-up failed.
"""
import argparse
import collections
import errno
import hashlib
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "Tests" / "Fixtures" / "generated"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
SOURCE_BUCKET = "pod-insights-raw"
CLIP_BUCKET = "pod-insights-clips"
ACCESS_KEY, SECRET_KEY = "AKIDCHAOS", "chaosSecretKey0123456789abcdef"
# An ObjectId the catalog does not know: 404 normally, 503 + Retry-After while MongoDB is down.
UNKNOWN_EPISODE = "685ba776e4f9ec2f0756ffff"
S3_FAULTS = ("s3_reset", "s3_5xx", "s3_stall")
CATALOG_TTL_S = 3
# Server log lines worth counting (issue 12's contract names them).
LOG_PHRASES = ("local store bypassed", "local store writes resumed", "catalog unavailable; serving the last known resolution",
               "fill failed", "source changed")
# Tiers whose bytes come from S3 (source or clip bucket), where a dying S3 can cut a body.
S3_FED_TIERS = ("fill", "coalesced", "part", "l2_hit")
# How long after a fault ends it can still be the cause: S3 retries back off for about a second
# (4 attempts from 100 ms), a stalled S3 read is only given up after clipproxy's 10 s low-speed
# window, a restarted MongoDB needs a moment before libmongoc reconnects.
GRACE_S = {"s3_reset": 3.0, "s3_5xx": 3.0, "s3_stall": 15.0, "mongo_down": 2.0, "disk_full": 1.0,
           "clipproxy_kill": 0.0}


def log(message):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- child processes ---------------------------------------------------------------------------

# clipproxy does not watch its parent (the test servers do): have the kernel kill it when we die,
# so an interrupted soak leaves nothing behind. setpriv sets PR_SET_PDEATHSIG and execs (same pid);
# a preexec_fn would do the same but can deadlock when forking from a threaded process. Children
# are started only from the main thread, which lives until the end (the signal follows the
# forking thread).
SETPRIV = ["setpriv", "--pdeathsig", "SIGKILL", "--"] if shutil.which("setpriv") else []


class Child:
    """A server process that prints a line saying it listens; stdout and stderr go to a log file."""

    def __init__(self, name, argv, env, ready, log_path, timeout=60.0):
        self.name = name
        self.log_path = log_path
        self.log_file = open(log_path, "ab")
        self.proc = subprocess.Popen(SETPRIV + argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.log_file)
        self.port = None
        found = threading.Event()
        pattern = re.compile(ready)

        def pump():
            # Keep draining stdout after the ready line so a chatty child never blocks.
            for raw in iter(self.proc.stdout.readline, b""):
                line = raw.decode("utf-8", "replace")
                self.log_file.write(b"[stdout] " + raw)
                self.log_file.flush()
                match = pattern.search(line)
                if match and not found.is_set():
                    self.port = int(match.group(1))
                    found.set()
            found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(timeout) or self.port is None:
            self.kill()
            raise SetupError(f"{name} did not start within {timeout:.0f} s; log {log_path}:\n{self.log_tail()}")

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
        self.proc.wait()

    def terminate(self, timeout=30.0):
        """SIGTERM and wait; SIGKILL after `timeout`. Returns (clean, exit status)."""
        if not self.alive():
            return False, self.proc.returncode
        self.proc.terminate()
        try:
            return True, self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return False, self.proc.wait()

    def log_tail(self, n=4000):
        try:
            return Path(self.log_path).read_text("utf-8", "replace")[-n:]
        except OSError:
            return ""


class SetupError(Exception):
    pass


def http_call(port, method, path, body=None, timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- expected clips ----------------------------------------------------------------------------

class Clip:
    __slots__ = ("episode", "source", "start", "duration", "data", "sha")

    def __init__(self, episode, source, start, duration):
        self.episode, self.source, self.start, self.duration = episode, source, start, duration
        self.data = None
        self.sha = None


def load_episodes():
    path = FIXTURES / "episodes.json"
    if not path.exists():
        raise SetupError(f"{path} is missing: run `make fixtures`")
    return json.loads(path.read_text())


def plan_clips(episodes, rng, mode):
    """A fixed set of clips per run (seeded): some distinct starts and durations per episode, so
    requests repeat (hits, coalescing) while the set is several times the cache budget. Plus, in
    soak mode, a reserve of clips the clients never ask for: asked during MongoDB outages, they
    need the episode's resolution (a clip seen before is answered without it)."""
    clips, reserve = [], []
    for ep in episodes:
        if not ep.get("source_key"):
            continue
        source = FIXTURES / "source" / ep["source_key"]
        last = ep["duration_ms"] - 31_000
        long_episode = ep["duration_ms"] > 600_000
        spare = (4 if long_episode else 2) if mode == "soak" else 0
        wanted = (16 if mode == "soak" else 24) if long_episode else 6
        starts = rng.sample(range(0, last, 500 if long_episode else 250), wanted + spare)
        for start in sorted(starts[:spare]):
            reserve.append(Clip(ep["_id"], source, start, 30_000))
        for start in sorted(starts[spare:]):
            durations = [30_000] + ([rng.choice([5_000, 12_000, 20_000])] if rng.random() < 0.5 else [])
            for duration in durations:
                clips.append(Clip(ep["_id"], source, start, duration))
    return clips, reserve


def binary_identity(binary):
    st = os.stat(binary)
    return hashlib.sha256(f"{os.path.realpath(binary)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def compute_expected(binary, clips, cache_root):
    """`clipproxy trim` of each clip, cached on disk per binary build and (episode, start, duration)."""
    cache = cache_root / binary_identity(binary)
    if not cache.exists():
        # Every build gets its own folder (about 20 MB): keep only the newest few.
        old = sorted((d for d in cache_root.glob("*") if d.is_dir()), key=lambda d: d.stat().st_mtime)
        for stale in old[:-3]:
            shutil.rmtree(stale, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    todo = []
    for clip in clips:
        src = clip.source.stat()
        path = cache / f"{clip.episode}_{src.st_size}_{src.st_mtime_ns}_{clip.start}_{clip.duration}.mp3"
        if path.exists():
            clip.data = path.read_bytes()
        else:
            todo.append((clip, path))

    def trim(item):
        clip, path = item
        out = str(path) + f".tmp{os.getpid()}"
        result = subprocess.run([str(binary), "trim", str(clip.source), "--start-ms", str(clip.start),
                                 "--duration-ms", str(clip.duration), "-o", out],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SetupError(f"clipproxy trim {clip.source} --start-ms {clip.start} failed: {result.stderr[-2000:]}")
        os.replace(out, path)
        clip.data = path.read_bytes()

    if todo:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            list(pool.map(trim, todo))
        log(f"cut {len(todo)} expected clips with `clipproxy trim` in {time.monotonic() - started:.1f} s "
            f"({len(clips) - len(todo)} cached in {cache})")
    for clip in clips:
        clip.sha = hashlib.sha256(clip.data).hexdigest()


# --- faults ------------------------------------------------------------------------------------

class Timeline:
    """Fault windows, to name the cause of a broken response, and clipproxy's up/down state."""

    def __init__(self):
        self.lock = threading.Lock()
        self.windows = []  # [kind, detail, start, end or None]
        self.counts = collections.Counter()
        self.generation = 0  # bumped whenever the clipproxy process goes away
        self.up = False
        self.expected_down = False  # a kill we did, as opposed to a crash

    def begin(self, kind, detail):
        with self.lock:
            window = [kind, detail, time.monotonic(), None]
            self.windows.append(window)
            self.counts[kind] += 1
            return window

    def end(self, window):
        with self.lock:
            window[3] = time.monotonic()

    def causes(self, t0, t1):
        """Kinds of the faults active (or within their grace) during [t0, t1]."""
        return set(self.overlapping(t0, t1))

    def primary_cause(self, t0, t1):
        """The fault that began last before the request ended, among those overlapping it: with
        one fault at a time it is the one in force, the others are only within their grace."""
        kinds = self.overlapping(t0, t1)
        return kinds[-1] if kinds else None

    def overlapping(self, t0, t1):
        with self.lock:
            kinds = []
            for kind, _, start, end in self.windows:  # in order of start
                stop = (end if end is not None else t1) + GRACE_S[kind]
                if start <= t1 and stop >= t0:
                    kinds.append(kind)
            return kinds

    def snapshot(self):
        with self.lock:
            return self.generation, self.up


class FaultProxyPlan:
    def __init__(self, port):
        self.port = port

    def set(self, plan, default="pass"):
        status, _ = http_call(self.port, "POST", "/__proxy/plan", json.dumps({"plan": plan, "default": default}).encode())
        if status != 200:
            raise RuntimeError(f"fault proxy refused the plan: {status}")


# --- requests and checks -----------------------------------------------------------------------

class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.status = collections.Counter()
        self.outcomes = collections.Counter()
        self.tiers = collections.Counter()
        self.errors = collections.Counter()  # "status error-code"
        self.broken = []  # one dict per response
        self.source_died = []
        self.anomalies = []
        self.unknown_latency_down = []  # seconds, unknown episode while MongoDB was down
        self.bytes = 0

    def add(self, outcome, status=None, tier=None, error=None, record=None, kind=None, nbytes=0):
        with self.lock:
            self.requests += 1
            self.outcomes[outcome] += 1
            if status is not None:
                self.status[str(status)] += 1
            if tier and outcome == "ok":
                self.tiers[tier] += 1
            if error:
                self.errors[error] += 1
            self.bytes += nbytes
            if record is not None:
                record["outcome"] = outcome
                {"broken": self.broken, "source_died": self.source_died, "anomaly": self.anomalies}[kind].append(record)


def choose_range(rng, length, share):
    """(Range header or None, first byte, last byte) for a clip of `length` bytes."""
    if rng.random() >= share:
        return None, 0, length - 1
    kind = rng.choice(["open0", "single", "single", "suffix", "open", "probe"])
    if kind == "open0":
        return "bytes=0-", 0, length - 1
    if kind == "probe":
        return "bytes=0-1", 0, 1
    if kind == "suffix":
        n = rng.randint(1, length)
        return f"bytes=-{n}", length - n, length - 1
    first = rng.randint(0, length - 1)
    if kind == "open":
        return f"bytes={first}-", first, length - 1
    last = rng.randint(first, min(length - 1, first + 200_000))
    return f"bytes={first}-{last}", first, last


def fetch(port, path, headers, timeout):
    """One request on a fresh connection. Returns a dict describing what came back, never raises."""
    result = {"phase": "connect", "status": None, "headers": {}, "body": b"", "complete": False, "error": None}
    chunks = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.connect()
        result["phase"] = "request"
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        result["phase"] = "body"
        result["status"] = response.status
        result["headers"] = {k.lower(): v for k, v in response.getheaders()}
        length = response.getheader("Content-Length")
        received = 0
        while True:
            chunk = response.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
        result["body"] = b"".join(chunks)
        result["complete"] = length is None or received == int(length)
        result["phase"] = "done"
    except http.client.IncompleteRead as exc:  # chunked body cut short
        result["body"] = b"".join(chunks) + exc.partial
        result["error"] = "IncompleteRead"
    except (OSError, http.client.HTTPException) as exc:
        result["body"] = b"".join(chunks)
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["refused"] = isinstance(exc, ConnectionRefusedError)
    finally:
        conn.close()
    return result


class Client(threading.Thread):
    def __init__(self, index, harness, seed):
        super().__init__(name=f"client-{index}", daemon=True)
        self.h = harness
        self.rng = random.Random(seed)

    def run(self):
        while not self.h.stop_clients.is_set():
            try:
                self.one()
            except Exception as exc:  # a bug in the checker must not silently stop a client
                self.h.results.add("checker_error", record={"error": repr(exc)}, kind="anomaly")

    def one(self):
        h = self.h
        roll = self.rng.random()
        if h.mode == "soak" and roll < 0.02:
            self.error_expected(h.missing_episode, "not_found")
            return
        if h.mode == "soak" and roll < 0.04:
            self.error_expected(UNKNOWN_EPISODE, "unknown")
            return
        outcome = self.request_clip(h.pick(self.rng), h.range_share)
        if outcome[0] == "refused_while_down":
            time.sleep(0.05)  # a browser would not hammer a closed port either

    def request_clip(self, clip, range_share):
        """Requests `clip` (a random Range with probability `range_share`), checks and counts the
        answer; returns the outcome."""
        h = self.h
        length = len(clip.data)
        range_header, first, last = choose_range(self.rng, length, range_share)
        path = f"/clips/{clip.episode}/{clip.start}{'.mp3' if self.rng.random() < 0.2 else ''}"
        if clip.duration != 30_000 or self.rng.random() < 0.2:
            path += f"?duration_ms={clip.duration}"
        headers = {"Range": range_header} if range_header else {}
        gen0, _ = h.timeline.snapshot()
        t0 = time.monotonic()
        r = fetch(h.port, path, headers, h.client_timeout)
        t1 = time.monotonic()
        outcome = self.classify(clip, path, range_header, first, last, r, gen0, t0, t1)
        h.results.add(*outcome)
        return outcome

    def error_expected(self, episode, label):
        h = self.h
        gen0, _ = h.timeline.snapshot()
        t0 = time.monotonic()
        r = fetch(h.port, f"/clips/{episode}/1000", {}, h.client_timeout)
        t1 = time.monotonic()
        if r["status"] is None:
            h.results.add(*self.transport_failure(r, path=f"/clips/{episode}/1000", gen0=gen0, t0=t0, t1=t1))
            return
        if r["status"] >= 400 and self.is_json_error(r):
            if label == "unknown" and "mongo_down" in h.timeline.causes(t0, t1):
                with h.results.lock:
                    h.results.unknown_latency_down.append(t1 - t0)
            h.results.add("error_json", status=r["status"], error=f"{r['status']} {self.error_code(r)}")
            return
        h.results.add("unexpected_status", status=r["status"], kind="anomaly",
                      record={"path": f"/clips/{episode}/1000", "status": r["status"], "why": f"{label} episode answered",
                              "content_type": r["headers"].get("content-type")})

    @staticmethod
    def is_json_error(r):
        if not r["complete"] or not r["headers"].get("content-type", "").startswith("application/json"):
            return False
        try:
            return isinstance(json.loads(r["body"]), dict)
        except ValueError:
            return False

    @staticmethod
    def error_code(r):
        try:
            return json.loads(r["body"]).get("error")
        except (ValueError, AttributeError):
            return None

    def transport_failure(self, r, path, gen0, t0, t1):
        """No status line: refused while clipproxy was down, lost to our SIGKILL, or an anomaly."""
        h = self.h
        gen1, up1 = h.timeline.snapshot()
        if gen1 != gen0 or not up1 or not h.server_alive():
            # Ours: a kill in progress, or every process change since the start was one of our kills.
            planned = h.timeline.expected_down or (gen1 != gen0 and h.kill_generations.issuperset(range(gen0 + 1, gen1 + 1)))
            if not planned:
                return ("crash_before_headers", None, None, None,
                        {"path": path, "error": r["error"], "at_s": round(t0 - h.t_start, 2)}, "anomaly")
            return ("refused_while_down" if r.get("refused") else "killed_in_flight",)
        record = {"path": path, "error": r["error"], "phase": r["phase"], "at_s": round(t0 - h.t_start, 2),
                  "elapsed_s": round(t1 - t0, 2), "faults": sorted(h.timeline.causes(t0, t1))}
        outcome = "refused_while_up" if r.get("refused") else "dropped_before_headers"
        return (outcome, None, None, None, record, "anomaly")

    def classify(self, clip, path, range_header, first, last, r, gen0, t0, t1):
        h = self.h
        if r["status"] is None:
            return self.transport_failure(r, path, gen0, t0, t1)
        status, headers = r["status"], r["headers"]
        tier = headers.get("x-clip-tier")
        if status >= 400:
            if self.is_json_error(r):
                return ("error_json", status, None, f"{status} {self.error_code(r)}")
            return ("error_not_json", status, tier, None,
                    {"path": path, "range": range_header, "status": status, "content_type": headers.get("content-type"),
                     "complete": r["complete"], "faults": sorted(h.timeline.causes(t0, t1))}, "anomaly")
        length = len(clip.data)
        if status == 206 and range_header:
            want = clip.data[first:last + 1]
            content_range = f"bytes {first}-{last}/{length}"
        elif status == 200:
            want = clip.data
            content_range = None
        else:
            return ("unexpected_status", status, tier, None,
                    {"path": path, "range": range_header, "status": status, "tier": tier}, "anomaly")
        body = r["body"]
        problems = []
        if content_range and headers.get("content-range") != content_range:
            problems.append(f"Content-Range {headers.get('content-range')!r}, want {content_range!r}")
        declared = headers.get("content-length")
        if declared is not None and int(declared) != len(want):
            problems.append(f"Content-Length {declared}, want {len(want)}")
        truncated = not r["complete"] or len(body) < len(want)
        if truncated:
            problems.append(f"body {len(body)} of {declared or '?'} bytes ({r['error'] or 'connection closed'})")
        prefix_ok = want[:len(body)] == body
        if not prefix_ok:
            at = next((i for i, (a, b) in enumerate(zip(body, want)) if a != b), min(len(body), len(want)))
            problems.append(f"bytes differ from clipproxy trim at offset {at}")
        if not problems:
            if status == 200 and range_header:
                # Allowed by RFC 9110 (a server may ignore Range) but clipproxy should not.
                return ("ok_range_ignored", status, tier, None,
                        {"path": path, "range": range_header, "tier": tier}, "anomaly")
            return ("ok", status, tier, None, None, None, len(body))
        gen1, _ = h.timeline.snapshot()
        if gen1 != gen0:
            if h.kill_generations.issuperset(range(gen0 + 1, gen1 + 1)) and prefix_ok:
                return ("killed_in_flight", status, tier)
            cause, causes = "clipproxy_crashed", set()
        elif not h.server_alive() and not h.timeline.expected_down:
            cause, causes = "clipproxy_crashed", set()
        else:
            cause, causes = h.timeline.primary_cause(t0, t1) or "no fault", h.timeline.causes(t0, t1)
        record = {"path": path, "range": range_header, "status": status, "tier": tier, "cause": cause,
                  "faults_overlapping": sorted(causes),
                  "problems": problems, "at_s": round(t0 - h.t_start, 2), "elapsed_s": round(t1 - t0, 2),
                  "received": len(body), "expected": len(want), "clip": f"{clip.episode}/{clip.start}+{clip.duration}"}
        # Exempt only a body that S3 fed, cut short (not altered) during an S3 fault with no full
        # disk about. The server must count each in clipproxy_responses_aborted_total: the summary
        # fails when it saw more than the server counted. Those cut at 0 bytes are listed apart.
        if (truncated and prefix_ok and len(problems) == 1 and cause in S3_FAULTS
                and "disk_full" not in causes and tier in S3_FED_TIERS):
            return ("source_died_after_retries", status, tier, None, record, "source_died")
        return ("broken", status, tier, None, record, "broken")


# --- the harness -------------------------------------------------------------------------------

class Harness:
    def __init__(self, args):
        self.args = args
        self.mode = args.mode
        self.rng = random.Random(args.seed)
        self.results = Results()
        self.timeline = Timeline()
        self.stop_clients = threading.Event()
        self.kill_generations = set()
        self.clipproxy = None
        self.mongo = None
        self.proxy = None
        self.moto = None
        self.port = None
        self.mounted = False
        self.disk_full_note = None
        self.crashes = []
        self.metrics_total = collections.Counter()
        self.stale_probes = collections.Counter()  # outcomes of never-seen clips asked while MongoDB was down
        self.client_timeout = 60.0
        self.range_share = 0.3 if self.mode == "eviction" else 0.4
        self.binary = Path(args.binary).resolve()
        self.work = Path(tempfile.mkdtemp(prefix=f"clipproxy-chaos-{self.mode}-"))
        self.cache_mount = self.work / "cachefs"
        self.cache_dir = self.cache_mount / "cache"
        self.filler = self.cache_mount / "filler"
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.server_logs = []
        self.t_start = time.monotonic()

    # - set-up -

    def setup(self):
        # The tree's commit when the run starts (the binary is assumed built from it, unless
        # --commit says otherwise).
        commit = self.args.commit or subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "Sources"],
                               capture_output=True, text=True).stdout.strip()
        self.commit = (commit or "unknown") + ("+uncommitted Sources/ changes" if dirty and not self.args.commit else "")
        if not self.binary.exists():
            raise SetupError(f"{self.binary} not found: build it with `swift build` (or pass --binary)")
        episodes = load_episodes()
        self.missing_episode = next((e["_id"] for e in episodes if not e.get("source_key")), UNKNOWN_EPISODE)
        self.clips, self.reserve = plan_clips(episodes, self.rng, self.mode)
        compute_expected(self.binary, self.clips + self.reserve, REPO / ".build" / "chaos-expected")
        self.expected_digests = {c.sha for c in self.clips + self.reserve}
        by_id = {e["_id"]: e for e in episodes}
        self.clip_by_l2_key = {(f"{by_id[c.episode]['feed_slug']}/{by_id[c.episode]['guid']}", c.start, c.start + c.duration): c
                               for c in self.clips + self.reserve}
        order = list(self.clips)
        self.rng.shuffle(order)
        # Zipf-like popularity: a hot head that stays cached, a long tail that keeps evicting.
        weights = [1.0 / (i + 1) ** 0.8 for i in range(len(order))]
        self.pick = lambda rng: rng.choices(order, weights=weights)[0]
        total = sum(len(c.data) for c in self.clips)
        log(f"{len(self.clips)} distinct clips ({total / 1e6:.1f} MB) from {len({c.episode for c in self.clips})} episodes")
        self.cache_mount.mkdir()
        if self.mode == "soak":
            self.setup_soak()
        else:
            self.env = self.base_env()
            self.env.update({
                "CLIPPROXY_CATALOG_KIND": "file", "CLIPPROXY_CATALOG_DIR": str(FIXTURES / "catalog"),
                "CLIPPROXY_SOURCE_KIND": "dir", "CLIPPROXY_SOURCE_DIR": str(FIXTURES / "source"),
                "CLIPPROXY_CACHE_MAX_BYTES": "8000000",
            })
        self.start_clipproxy(port=0)

    def base_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPPROXY_")}
        env.update({
            "CLIPPROXY_HTTP_HOST": "127.0.0.1",
            "CLIPPROXY_CACHE_DIR": str(self.cache_dir),
            "CLIPPROXY_SECOND_TIER_DIR": str(self.work / "l2"),
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        })
        return env

    def setup_soak(self):
        python = str(VENV_PYTHON if VENV_PYTHON.exists() else sys.executable)
        if self.args.no_mount:
            self.disk_full_note = "skipping the disk-full fault: --no-mount"
            log(self.disk_full_note)
        else:
            mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(self.cache_mount)],
                                   capture_output=True, text=True)
            if mount.returncode == 0:
                self.mounted = True
            else:
                self.disk_full_note = "skipping the disk-full fault: mount not allowed"
                log(f"{self.disk_full_note} ({mount.stderr.strip()})")
        self.moto = Child("moto", [python, str(REPO / "scripts" / "s3_test_server.py")], None,
                          r"LISTENING (\d+)", self.logs / "moto.log")
        self.seed_s3()
        self.proxy = Child("fault-proxy", [python, str(REPO / "scripts" / "fault_proxy.py"), "--target",
                                           f"127.0.0.1:{self.moto.port}", "--stall-seconds", "30"],
                           None, r"LISTENING (\d+)", self.logs / "fault-proxy.log")
        self.plan = FaultProxyPlan(self.proxy.port)
        self.mongo_argv = [python, str(REPO / "scripts" / "mongo_wire_server.py"), "--dir", str(FIXTURES / "catalog")]
        self.mongo = Child("mongo", self.mongo_argv, None, r"LISTENING (\d+)", self.logs / "mongo.log")
        self.env = self.base_env()
        self.env.update({
            "CLIPPROXY_CATALOG_KIND": "mongo",
            "CLIPPROXY_MONGO_URI": f"mongodb://127.0.0.1:{self.mongo.port}/?retryReads=false",
            "CLIPPROXY_MONGO_DATABASE": "podinsight",
            "CLIPPROXY_CATALOG_TTL_S": str(CATALOG_TTL_S),
            "CLIPPROXY_SOURCE_KIND": "s3",
            "CLIPPROXY_S3_ENDPOINT": f"http://127.0.0.1:{self.proxy.port}",
            "CLIPPROXY_S3_PATH_STYLE": "true",
            "CLIPPROXY_S3_REGION": "eu-west-2",
            "CLIPPROXY_S3_SOURCE_BUCKET": SOURCE_BUCKET,
            "CLIPPROXY_S3_CLIP_BUCKET": CLIP_BUCKET,
            # Leaves room on the 4 MiB tmpfs for the index and a few fills in flight, not many.
            "CLIPPROXY_CACHE_MAX_BYTES": "1500000",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        })
        self.env.pop("AWS_SESSION_TOKEN", None)

    def s3(self):
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.moto.port}", region_name="eu-west-2",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def seed_s3(self):
        s3 = self.s3()
        for bucket in (SOURCE_BUCKET, CLIP_BUCKET):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        for ep in load_episodes():
            if ep.get("source_key"):
                s3.upload_file(str(FIXTURES / "source" / ep["source_key"]), SOURCE_BUCKET, ep["source_key"],
                               ExtraArgs={"ContentType": "audio/mpeg"})

    def start_clipproxy(self, port):
        env = dict(self.env, CLIPPROXY_HTTP_PORT=str(port))
        log_path = self.logs / f"clipproxy-{len(self.server_logs)}.log"
        self.server_logs.append(log_path)
        last = None
        for _ in range(10):  # the port can be briefly unavailable right after a kill
            try:
                self.clipproxy = Child("clipproxy", [str(self.binary), "serve"], env,
                                       r"listening on http://[0-9.]+:(\d+)", log_path, timeout=90)
                break
            except SetupError as exc:
                last = exc
                time.sleep(0.5)
        else:
            raise last
        self.port = self.clipproxy.port
        with self.timeline.lock:
            self.timeline.up = True
            self.timeline.expected_down = False

    def server_alive(self):
        proc = self.clipproxy
        return proc is not None and proc.alive()

    # - metrics -

    def scrape_metrics(self):
        """Adds the server's counters to the run's totals (called before every stop: a SIGKILL loses them)."""
        try:
            status, body = http_call(self.port, "GET", "/metrics", timeout=5)
        except OSError:
            return
        if status != 200:
            return
        for line in body.decode("utf-8", "replace").splitlines():
            if line.startswith("#") or not line.startswith("clipproxy_"):
                continue
            name, _, value = line.rpartition(" ")
            if name.split("{")[0].endswith("_total"):
                try:
                    self.metrics_total[name] += float(value)
                except ValueError:
                    pass

    # - faults -

    def fault_s3(self, kind):
        window_s = self.rng.uniform(0.3, 2.0) if kind == "s3_stall" else self.rng.uniform(0.5, 4.0)
        share = self.rng.choice([0.3, 0.6, 1.0])  # below 1: transparent retries; at 1: retries run out
        modes = []
        for _ in range(400):
            if self.rng.random() >= share:
                modes.append("pass")
            elif kind == "s3_reset":
                modes.append(self.rng.choice(["reset:0", f"reset:{self.rng.randint(1, 300_000)}", "close"]))
            elif kind == "s3_5xx":
                modes.append(self.rng.choice(["503", "500", "slowdown"]))
            else:
                modes.append(f"stall:{self.rng.randint(0, 200_000)}")
        window = self.timeline.begin(kind, f"{window_s:.1f} s, {int(share * 100)}% of S3 requests")
        self.plan.set(modes)
        self.sleep(window_s)
        self.plan.set([])
        self.timeline.end(window)

    def fault_mongo(self):
        # Mostly past the 3 s catalog TTL (stale-if-error), sometimes within it.
        # The first outage is always a long one, so that even a short run checks stale-if-error.
        long_outage = not self.timeline.counts["mongo_down"] or self.rng.random() < 0.7
        down_s = self.rng.uniform(4.5, 8.0) if long_outage else self.rng.uniform(1.0, 3.0)
        window = self.timeline.begin("mongo_down", f"{down_s:.1f} s")
        port = self.mongo.port
        self.mongo.kill()
        started = time.monotonic()
        if down_s > CATALOG_TTL_S + 1 and self.reserve:
            # Past the TTL every resolution has expired: a clip never asked before must still play
            # from the last known resolution (issue 12 item 4).
            self.sleep(CATALOG_TTL_S + 1)
            for _ in range(2):
                if self.reserve:
                    outcome = self.prober.request_clip(self.reserve.pop(self.rng.randrange(len(self.reserve))), 0.0)
                    self.stale_probes[outcome[0] if outcome[0] != "error_json" else f"error {outcome[1]}"] += 1
        self.sleep(down_s - (time.monotonic() - started))
        self.mongo = Child("mongo", self.mongo_argv + ["--port", str(port)], None, r"LISTENING (\d+)",
                           self.logs / "mongo.log")
        self.timeline.end(window)

    def fault_disk(self):
        hold_s = self.rng.uniform(2.0, 6.0)
        window = self.timeline.begin("disk_full", f"{hold_s:.1f} s")
        filled = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for size in (1 << 20, 64 << 10, 4096):
                block = b"\0" * size
                while True:
                    try:
                        filled += os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        window[1] += f", {filled // 1024} KiB filler"
        self.sleep(hold_s)
        os.unlink(self.filler)
        self.timeline.end(window)

    def fault_kill(self):
        down_s = self.rng.uniform(0.2, 1.5)
        window = self.timeline.begin("clipproxy_kill", f"down {down_s:.1f} s")
        self.scrape_metrics()
        with self.timeline.lock:
            self.timeline.up = False
            self.timeline.expected_down = True
            self.timeline.generation += 1
            self.kill_generations.add(self.timeline.generation)
        self.clipproxy.kill()
        self.sleep(down_s)
        self.start_clipproxy(self.port)
        self.timeline.end(window)

    def check_crash(self):
        """A clipproxy that died on its own is a finding; restart it so the soak goes on."""
        if self.server_alive() or self.timeline.expected_down:
            return
        code = self.clipproxy.proc.returncode
        with self.timeline.lock:
            self.timeline.up = False
            self.timeline.generation += 1
        self.crashes.append({"at_s": round(time.monotonic() - self.t_start, 1), "exit": code,
                             "log": str(self.clipproxy.log_path), "log_tail": self.clipproxy.log_tail(1500)})
        log(f"clipproxy DIED on its own (exit {code}); log {self.clipproxy.log_path}; restarting")
        self.start_clipproxy(self.port)

    def sleep(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_crash()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def run(self):
        clients = [Client(i, self, self.args.seed * 1000 + i) for i in range(self.args.clients)]
        self.prober = Client(-1, self, self.args.seed * 1000 - 1)  # never started: used by the fault loop
        self.t_start = time.monotonic()
        for client in clients:
            client.start()
        deadline = self.t_start + self.args.seconds
        kinds = ["s3_reset", "s3_5xx", "s3_stall", "mongo_down", "clipproxy_kill"]
        weights = [3, 3, 1, 2, 2]
        if self.mounted:
            kinds.append("disk_full")
            weights.append(3)
        next_report = self.t_start + 10
        deck, rounds = [], 0
        # A slow machine overruns --seconds rather than skip a kind of the first round.
        first_round_pending = self.mode == "soak"
        while time.monotonic() < deadline or first_round_pending:
            if self.mode == "soak":
                # Calm between faults; shorter in short runs, so that they still see every kind.
                self.sleep(self.rng.uniform(1.0, 4.0) if self.args.seconds >= 90 else self.rng.uniform(0.5, 1.5))
                first_round_pending = rounds == 0 or (rounds == 1 and bool(deck))
                if time.monotonic() >= deadline - 5 and not first_round_pending:
                    break  # no new fault in the last seconds: let the last one heal first
                if not deck:
                    # The first round deals each kind once, so that even a short run sees every
                    # fault; later rounds deal them by weight. Random order within a round.
                    deck = [k for k, w in zip(kinds, weights) for _ in range(w if rounds else 1)]
                    self.rng.shuffle(deck)
                    rounds += 1
                kind = deck.pop()
                log(f"fault: {kind}")
                if kind in S3_FAULTS:
                    self.fault_s3(kind)
                elif kind == "mongo_down":
                    self.fault_mongo()
                elif kind == "disk_full":
                    self.fault_disk()
                else:
                    self.fault_kill()
            else:
                self.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= next_report:
                next_report += 10
                r = self.results
                log(f"{time.monotonic() - self.t_start:.0f} s: {r.requests} requests, {len(r.broken)} broken, "
                    f"{len(r.source_died)} source-died, outcomes {dict(r.outcomes)}")
        self.sleep(max(0.0, deadline - time.monotonic()))
        if self.mode == "soak":
            self.sleep(2.0)  # the last fault's retries settle before the clients stop
        self.stop_clients.set()
        for client in clients:
            client.join(self.client_timeout + 5)
        self.check_crash()
        self.elapsed = time.monotonic() - self.t_start

    # - end checks -

    def final_checks(self):
        report = {}
        self.scrape_metrics()
        with self.timeline.lock:
            self.timeline.expected_down = True
            self.timeline.up = False
        clean, code = self.clipproxy.terminate(timeout=30)
        # Nothing may run on the cache now: a leftover process would make the checks below racy.
        report["processes_left"] = self.processes_using_cache()
        report["clipproxy_stopped_cleanly"] = clean and code == 0
        report["clipproxy_exit"] = code
        partials = [str(p.relative_to(self.cache_dir)) for p in self.cache_dir.rglob("*.partial*")] if self.cache_dir.exists() else []
        report["partials_left"] = partials
        # Every stored clip must be one of the expected clips, byte for byte (before `index verify`
        # opens the store, since opening reconciles it).
        blobs, corrupt = 0, []
        blob_root = self.cache_dir / "blobs"
        if blob_root.exists():
            for path in blob_root.rglob("*"):
                if path.is_file():
                    blobs += 1
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    if digest not in self.expected_digests:
                        corrupt.append({"blob": path.name, "bytes": path.stat().st_size})
        report["local_blobs_checked"] = blobs
        report["local_blobs_corrupt"] = corrupt
        # The second tier names clips by the seed layout {feed_slug}/{guid}/{start}-{end}.mp3: each
        # object is compared with exactly the clip its name says (other objects, such as shared
        # frame indexes, are not clips).
        l2_checked, l2_corrupt = 0, []

        def check_l2(name, data):
            nonlocal l2_checked
            match = re.fullmatch(r"(.+)/(\d+)-(\d+)\.mp3", name)
            if not match:
                return
            l2_checked += 1
            clip = self.clip_by_l2_key.get((match.group(1), int(match.group(2)), int(match.group(3))))
            digest = hashlib.sha256(data).hexdigest()
            if (clip.sha if clip else None) != digest and not (clip is None and digest in self.expected_digests):
                l2_corrupt.append({"key": name, "bytes": len(data), "want": len(clip.data) if clip else None})

        if self.mode == "soak":
            s3 = self.s3()
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=CLIP_BUCKET):
                for obj in page.get("Contents", []):
                    check_l2(obj["Key"], s3.get_object(Bucket=CLIP_BUCKET, Key=obj["Key"])["Body"].read())
        else:
            root = self.work / "l2"
            links, dangling = 0, []
            for path in (root.rglob("*.mp3") if root.exists() else []):
                if path.is_symlink():
                    # A shared tier must hold copies: a link into the local store dies with the
                    # local copy (eviction, another node).
                    links += 1
                    if not path.exists():
                        dangling.append(str(path.relative_to(root)))
                        continue
                check_l2(str(path.relative_to(root)), path.read_bytes())
            report["second_tier_symlinks"] = links
            report["second_tier_dangling"] = dangling
        report["second_tier_checked"] = l2_checked
        report["second_tier_corrupt"] = l2_corrupt
        # `index gc` first: opening the store drops records whose file is missing or has the wrong
        # size, so its report is where truncated entries show; `verify` then checks every digest.
        gc = subprocess.run([str(self.binary), "index", "gc"], env=self.env, capture_output=True, text=True)
        try:
            report["index_gc"] = json.loads(gc.stdout)
        except ValueError:
            report["index_gc"] = {"exit": gc.returncode, "stderr": gc.stderr[-2000:]}
        verify = subprocess.run([str(self.binary), "index", "verify"], env=self.env, capture_output=True, text=True)
        try:
            verify_json = json.loads(verify.stdout)
        except ValueError:
            verify_json = {"stdout": verify.stdout[-2000:], "stderr": verify.stderr[-2000:]}
        verify_json["exit"] = verify.returncode
        report["index_verify"] = verify_json
        return report

    def processes_using_cache(self):
        """Pids (other than ours) whose environment names this run's cache directory."""
        found = []
        needle = f"CLIPPROXY_CACHE_DIR={self.cache_dir}".encode()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                        found.append(int(entry))
                except OSError:
                    pass
        return found

    def cleanup(self):
        for child in (self.clipproxy, self.mongo, self.proxy, self.moto):
            if child is not None:
                child.kill()
        if self.mounted:
            if subprocess.run(["umount", str(self.cache_mount)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.cache_mount)], capture_output=True)
        if not self.args.keep_work and self.passed:
            shutil.rmtree(self.work, ignore_errors=True)

    # - summary -

    def summary(self, checks):
        r = self.results
        by_cause = collections.Counter(b["cause"] for b in r.broken)
        by_tier = collections.Counter(str(b["tier"]) for b in r.broken)
        short = [b for b in r.broken if b["received"] < b["expected"]]
        verify = checks["index_verify"]
        corrupt_entries = (len(checks["local_blobs_corrupt"]) + len(checks["second_tier_corrupt"])
                           + checks["index_gc"].get("records_dropped", 0)
                           + len(verify.get("wrong_size", [])) + len(verify.get("wrong_digest", [])))
        aborted_keys = [k for k in self.metrics_total if k.startswith("clipproxy_responses_aborted_total")]
        # None when the build has no such counter (before issue 12's changes).
        aborted = sum(self.metrics_total[k] for k in aborted_keys) if aborted_keys else None
        log_counts = collections.Counter()
        for path in self.server_logs:
            try:
                text = path.read_text("utf-8", "replace")
            except OSError:
                continue
            for phrase in LOG_PHRASES:
                log_counts[phrase] += text.count(phrase)
            for level in ("warning", "error", "critical"):
                log_counts[f"level {level}"] += len(re.findall(rf"^\S+ {level} ", text, re.M))
        # Truncations the server did not own up to are broken too (when it has the counter).
        unaccounted = max(0, len(r.source_died) - int(aborted)) if aborted is not None else 0
        failures = []
        if unaccounted:
            failures.append(f"{unaccounted} source-died responses more than clipproxy_responses_aborted_total counted")
        if r.broken:
            failures.append(f"{len(r.broken)} broken responses")
        if corrupt_entries:
            failures.append(f"{corrupt_entries} corrupt cache entries")
        if verify.get("exit") != 0 or not verify.get("clean", False):
            failures.append("index verify not clean")
        if checks["partials_left"]:
            failures.append(f"{len(checks['partials_left'])} *.partial files left")
        if self.crashes:
            failures.append(f"clipproxy crashed {len(self.crashes)} times")
        if r.outcomes.get("checker_error"):
            failures.append("checker errors")
        self.passed = not failures
        return {
            "mode": self.mode, "seconds": round(self.elapsed, 1), "clients": self.args.clients, "seed": self.args.seed,
            "binary": str(self.binary), "commit": self.commit,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "distinct_clips": len(self.clips),
            "requests": r.requests, "requests_per_s": round(r.requests / max(self.elapsed, 1e-9), 1),
            "body_bytes_checked": r.bytes,
            "responses_by_status": dict(sorted(r.status.items())),
            "outcomes": dict(sorted(r.outcomes.items())),
            "ok_by_tier": dict(sorted(r.tiers.items())),
            "errors": dict(sorted(r.errors.items())),
            "faults": dict(sorted(self.timeline.counts.items())),
            "fault_windows": [{"kind": k, "detail": d, "at_s": round(s - self.t_start, 1),
                               "for_s": round((e or s) - s, 1)} for k, d, s, e in self.timeline.windows],
            "disk_full_fault": self.disk_full_note or ("ran" if self.mode == "soak" else "not in this mode"),
            "broken": {"total": len(r.broken), "by_cause": dict(by_cause), "by_tier": dict(by_tier),
                       "short_body": len(short), "short_body_l1_hit": sum(1 for b in short if b["tier"] == "l1_hit"),
                       "responses": r.broken[:200]},
            "source_died_after_retries": {"total": len(r.source_died),
                                          "cut_at_0_bytes": sum(1 for b in r.source_died if b["received"] == 0),
                                          "not_counted_by_server": unaccounted,
                                          "by_tier": dict(collections.Counter(str(b["tier"]) for b in r.source_died)),
                                          "server_aborted_counter": aborted, "responses": r.source_died[:50]},
            "anomalies": {"total": len(r.anomalies),
                          "by_outcome": dict(collections.Counter(a["outcome"] for a in r.anomalies)),
                          "examples": r.anomalies[:50]},
            "unknown_episode_while_catalog_down_s": (
                {"count": len(r.unknown_latency_down), "max": round(max(r.unknown_latency_down), 2)}
                if r.unknown_latency_down else None),
            "new_clips_of_known_episodes_while_catalog_down_past_ttl": dict(self.stale_probes),
            "clipproxy_crashes": self.crashes,
            "corrupt_cache_entries": corrupt_entries,
            "cache": checks,
            "server_counters": {k: v for k, v in sorted(self.metrics_total.items())},
            "server_log_lines": dict(sorted(log_counts.items())),
            "work_dir": str(self.work),
            "failures": failures,
            "passed": self.passed,
        }


def print_summary(s):
    out = sys.stdout
    print(f"\n== clipproxy chaos: {s['mode']}, {s['seconds']} s, {s['clients']} clients, seed {s['seed']}, commit {s['commit']}", file=out)
    print(f"requests            {s['requests']} ({s['requests_per_s']}/s), {s['body_bytes_checked'] / 1e6:.0f} MB of bodies checked", file=out)
    print(f"responses by status {s['responses_by_status']}", file=out)
    print(f"outcomes            {s['outcomes']}", file=out)
    print(f"exact, by tier      {s['ok_by_tier']}", file=out)
    print(f"JSON errors         {s['errors']}", file=out)
    print(f"faults              {s['faults'] or 'none'}  (disk-full: {s['disk_full_fault']})", file=out)
    b = s["broken"]
    print(f"BROKEN after headers {b['total']}  by cause {b['by_cause']}  by tier {b['by_tier']}  "
          f"(short bodies {b['short_body']}, of them l1_hit {b['short_body_l1_hit']})", file=out)
    for item in b["responses"][:20]:
        print(f"   {item['at_s']:>7} s {item['path']} range={item['range']} {item['status']} tier={item['tier']} "
              f"cause={item['cause']}: {'; '.join(item['problems'])}", file=out)
    d = s["source_died_after_retries"]
    counter = "no such counter" if d["server_aborted_counter"] is None else f"{d['server_aborted_counter']:.0f}"
    print(f"source died mid-transfer after every retry (exempt) {d['total']}  by tier {d['by_tier']}  "
          f"cut at 0 bytes {d['cut_at_0_bytes']}  (server's clipproxy_responses_aborted_total: {counter})", file=out)
    for item in d["responses"][:10]:
        print(f"   {item['at_s']:>7} s {item['path']} range={item['range']} {item['status']} tier={item['tier']} "
              f"cause={item['cause']}: {'; '.join(item['problems'])}", file=out)
    print(f"server log          {s['server_log_lines']}", file=out)
    print(f"anomalies (not failing) {s['anomalies']['total']} {s['anomalies']['by_outcome']}", file=out)
    if s["unknown_episode_while_catalog_down_s"]:
        print(f"unknown episode while MongoDB down: {s['unknown_episode_while_catalog_down_s']}", file=out)
    if s["new_clips_of_known_episodes_while_catalog_down_past_ttl"]:
        print(f"new clips of known episodes, MongoDB down past the TTL: "
              f"{s['new_clips_of_known_episodes_while_catalog_down_past_ttl']}", file=out)
    if s["clipproxy_crashes"]:
        print(f"clipproxy CRASHED {len(s['clipproxy_crashes'])} times: {[c['exit'] for c in s['clipproxy_crashes']]}", file=out)
    c = s["cache"]
    print(f"cache               {c['local_blobs_checked']} local blobs ({len(c['local_blobs_corrupt'])} corrupt), "
          f"{c['second_tier_checked']} second-tier clips ({len(c['second_tier_corrupt'])} corrupt), "
          f"{len(c['partials_left'])} *.partial left, corrupt entries total {s['corrupt_cache_entries']}", file=out)
    if c.get("second_tier_symlinks"):
        print(f"second tier         {c['second_tier_symlinks']} clip files are SYMLINKS into the local store, "
              f"{len(c['second_tier_dangling'])} of them dangling (the clip is lost from the shared tier)", file=out)
    if c.get("processes_left"):
        print(f"processes still using the cache after the stop: {c['processes_left']}", file=out)
    g = c["index_gc"]
    print(f"index gc            records dropped (file missing/short) {g.get('records_dropped')}, orphan files "
          f"{g.get('orphan_files_removed')}, temporary files {g.get('temporary_files_removed')}", file=out)
    v = c["index_verify"]
    print(f"index verify        exit {v.get('exit')}, clean {v.get('clean')}, checked {v.get('checked')}, "
          f"missing {len(v.get('missing', []))}, wrong size {len(v.get('wrong_size', []))}, "
          f"wrong digest {len(v.get('wrong_digest', []))}", file=out)
    print(f"clipproxy stopped cleanly: {c['clipproxy_stopped_cleanly']} (exit {c['clipproxy_exit']})", file=out)
    print(f"RESULT: {'PASS' if s['passed'] else 'FAIL: ' + ', '.join(s['failures'])}", file=out)
    if not s["passed"]:
        print(f"logs kept in {s['work_dir']}", file=out)
    out.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--mode", choices=["soak", "eviction"], default="soak")
    parser.add_argument("--seconds", type=float, default=None,
                        help="default: 180 (soak), 120 (eviction); a soak runs longer if needed to inject every kind of fault once")
    parser.add_argument("--clients", type=int, default=None, help="default: 8 (soak), 16 (eviction)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--binary", default=str(REPO / ".build" / "debug" / "clipproxy"))
    parser.add_argument("--no-mount", action="store_true", help="no tmpfs for the cache: no disk-full fault")
    parser.add_argument("--json-out", help="write the summary here as JSON")
    parser.add_argument("--commit", help="what --binary was built from, for the summary (default: this tree's HEAD)")
    parser.add_argument("--keep-work", action="store_true", help="keep the work directory (logs) even when passing")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 180 if args.mode == "soak" else 120
    if args.clients is None:
        args.clients = 8 if args.mode == "soak" else 16

    # Started from a Swift test, SIGTERM arrives blocked and children would inherit that: clipproxy
    # could then not be stopped cleanly.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)

    def watch_parent():
        # A test run that dies leaves no soak running: stop (and clean up: unmount) like on SIGTERM.
        parent = os.getppid()
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch_parent, daemon=True).start()

    harness = Harness(args)
    harness.passed = False
    try:
        try:
            harness.setup()
        except SetupError as exc:
            log(f"set-up failed: {exc}")
            return 2
        log(f"{args.mode}: clipproxy on 127.0.0.1:{harness.port}, {args.clients} clients for {args.seconds:.0f} s, "
            f"work dir {harness.work}")
        harness.run()
        checks = harness.final_checks()
        summary = harness.summary(checks)
        print_summary(summary)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(summary, indent=2) + "\n")
        return 0 if summary["passed"] else 1
    finally:
        harness.stop_clients.set()
        harness.cleanup()


if __name__ == "__main__":
    sys.exit(main())
