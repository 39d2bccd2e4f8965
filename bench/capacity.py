#!/usr/bin/env python3
"""The capacity model: a simulator of clipproxy's tiers fed a trace, checked against the replay,
then run at 10^4 to 10^8 plays a day and costed next to the Lambda + ffmpeg design it replaces.

    .venv/bin/python bench/capacity.py --replay bench/results/replay-<date>.json
        [--prices bench/prices.json] [--serving bench/results/<date>.json] [--json-out FILE]

What it simulates (docs/ARCHITECTURE.md describes the real thing):
- CDN (set-up c): one entry per URL, the whole clip, LRU under the CDN's max_size; a miss asks
  the balancer for the whole clip whatever the client's Range.
- Balancer: consistent hashing of the clip's path onto the nodes (a ring of 160 points per node).
- Node: `prepare` runs unless the same clip was prepared in the last 60 s; it re-resolves the
  episode (a LIST of the source folder) and re-lists the episode's clip-bucket folder (a LIST)
  once per catalog.ttl_s; the first time a node meets an episode it GETs the shared frame index
  (a miss when no node published one), and the first node probes the source (the GETs a cold
  episode's first clip costs in `make bench`, less the clip's own) and PUTs the index; a VBR
  index covers only as far as the clips asked for, and a clip beyond it costs one GET (the bytes
  in between) and one PUT of the longer index.
- A VBR scan (probe or extension) ends on the clip it was for, and those bytes are kept for 30 s:
  that clip's fill reads no source again.
- L1: LRU of whole clips under cache.max_bytes. A whole request that misses L1 is a clip-bucket
  hit (HEAD + GET) when the node's listing or its own uploads name the clip, else a fill (one
  source GET of the clip's bytes, then a PUT to the clip bucket). A single Range smaller than the
  clip that misses L1 is a part: HEAD + ranged GET from the clip bucket, or one ranged source GET
  (none when the range lies inside the Info frame the node writes itself). Any GET with a Range
  header (`bytes=0-` too) that misses L1 is first offered a part, which asks the clip bucket with
  a HEAD when the listing names the clip; a range that is the whole clip then opens it as above,
  from that HEAD's answer (no second HEAD).
- Clip sizes: the clip's milliseconds (30 s plus two preroll frames, the Info frame and the
  frame the end falls in) times the episode's average bytes per millisecond.
Joining a running fill ("coalesced") needs timings the model does not have: it counts as local,
and the check compares local + coalesced.

Extrapolation: for each plays-a-day figure a day is generated with the trace's own model
(bench/workload.py's parameters) over a catalog that grows with the audience (--catalog-at-1e4
episodes at 10^4 plays a day, times the square root of the growth), drawn clip by clip and
sampled spatially (SHARDS: keep the clips whose hash falls under a rate R, scale cache sizes by
R, scale counts by 1/R), so 10^8 plays a day costs the same as 10^6. Listings (once per TTL per
episode per node) and frame-index work do not scale with R and are computed per episode.
Cache per node: Mattson's stack distances give LRU's L1 hit ratio for every size in one pass;
the recommended size is the smallest at which it is within one point of the largest swept.
"""
import argparse
import bisect
import collections
import datetime
import hashlib
import json
import math
import os
import random
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from workload import DAY_S, SEEK_MAX_BYTE, Zipf, day_time, is_play, read_trace  # noqa: E402

CLIP_MS = 30_000
PREPARED_WINDOW_S = 60.0
RECENT_BYTES_S = 30.0  # the last bytes a scan read are kept this long, so its clip is cut from them
FRAME_MS = 26.1  # one MPEG-1 frame at 44.1 kHz; MPEG-2 at 22.05/24 kHz is the same or shorter
INFO_FRAME_BYTES = 104  # the smallest Info frame holding the tag; a Range inside it reads no source


def episode_rate(e):
    return e["size"] / e["duration_ms"]  # bytes per millisecond


def clip_size(e, start_ms):
    end = min(e["duration_ms"], start_ms + CLIP_MS)
    return int((end - start_ms + 3 * FRAME_MS) * episode_rate(e)) + INFO_FRAME_BYTES


def parse_url(url):
    _, _, eid, start = url.split("/")[:4]
    return eid, int(start.split("?")[0].removesuffix(".mp3"))


def parse_range(value, size):
    """(first, last) of a single byte range, or None for the whole clip."""
    if not value or value == "bytes=0-":
        return None
    a, _, b = value.removeprefix("bytes=").partition("-")
    first, last = int(a), (int(b) if b else size - 1)
    if first == 0 and last >= size - 1:
        return None
    return first, min(last, size - 1)


class LRU:
    def __init__(self, budget):
        self.budget, self.used, self.items = budget, 0, collections.OrderedDict()

    def get(self, key):
        if key in self.items:
            self.items.move_to_end(key)
            return True
        return False

    def put(self, key, size):
        if key in self.items:
            self.items.move_to_end(key)
            return
        self.items[key] = size
        self.used += size
        while self.used > self.budget and self.items:
            _, s = self.items.popitem(last=False)
            self.used -= s


class Ring:
    """Consistent hashing: 160 points per node on a 32-bit ring, as ketama does."""

    def __init__(self, nodes):
        points = []
        for n in range(nodes):
            for j in range(160):
                points.append((int(hashlib.md5(f"node-{n}-{j}".encode()).hexdigest()[:8], 16), n))
        points.sort()
        self.keys = [p[0] for p in points]
        self.nodes = [p[1] for p in points]

    def node(self, key):
        h = int(hashlib.md5(key.encode()).hexdigest()[:8], 16)
        i = bisect.bisect(self.keys, h) % len(self.keys)
        return self.nodes[i]


class Counts:
    def __init__(self):
        self.tiers = collections.Counter()
        self.s3 = collections.Counter()
        self.s3_bytes = 0
        self.growth_objects = 0
        self.growth_bytes = 0


class World:
    """What the nodes share: the clip bucket and the published frame indexes."""

    def __init__(self, params):
        self.params = params
        self.clip_bucket = {}       # url -> upload time
        self.by_episode = collections.defaultdict(set)
        self.shared_index = {}      # episode -> covered ms (inf: complete)
        self.counts = Counts()

    def s3(self, verb, n=1, nbytes=0):
        self.counts.s3[verb] += n
        self.counts.s3_bytes += nbytes


class Node:
    def __init__(self, world, budget):
        self.world = world
        self.l1 = LRU(budget)
        self.prepared = {}
        self.resolved_until = {}
        self.listing = {}           # episode -> (expires, set of urls)
        self.index = {}             # episode -> covered ms
        self.recent_scan = {}       # url -> time a VBR scan read up to its end (RecentSourceBytes)

    def prepare(self, url, e, start, t):
        w, p = self.world, self.world.params
        if t - self.prepared.get(url, -1e18) < PREPARED_WINDOW_S:
            return
        self.prepared[url] = t
        eid = e["_id"]
        if t >= self.resolved_until.get(eid, -1e18):
            w.s3("LIST")
            self.resolved_until[eid] = t + p["ttl_s"]
        self.list_if_due(eid, t)
        need = start + CLIP_MS
        if eid not in self.index:
            shared = w.shared_index.get(eid)
            w.s3("GET", 1, 0)  # the shared frame index, or its 404
            if shared is not None:
                self.index[eid] = shared
            else:
                gets = p["probe_gets_vbr"] if e["vbr"] else p["probe_gets_cbr"]
                covered = min(need, e["duration_ms"]) if e["vbr"] else math.inf
                scanned = int(covered * episode_rate(e)) if e["vbr"] else 0
                w.s3("GET", gets, scanned)
                if e["vbr"]:
                    self.recent_scan[url] = t
                self.index[eid] = covered
                w.s3("PUT")
                w.shared_index[eid] = max(w.shared_index.get(eid, 0), covered)
        if self.index[eid] < min(need, e["duration_ms"]):
            # one GET from the index's end to the clip's; the clip is then cut from those bytes
            w.s3("GET", 1, int((need - self.index[eid]) * episode_rate(e)))
            self.recent_scan[url] = t
            self.index[eid] = need
            w.s3("PUT")  # every extension is shared
            w.shared_index[eid] = max(w.shared_index.get(eid, 0), need)

    def list_if_due(self, eid, t):
        """The episode's clip-bucket folder, listed again once the last listing is catalog.ttl_s old."""
        w = self.world
        if t >= self.listing.get(eid, (-1e18, None))[0]:
            w.s3("LIST")
            self.listing[eid] = (t + w.params["ttl_s"], set(w.by_episode[eid]))

    def serve(self, url, e, start, rng, t, has_range=False):
        """Returns the tier of a request for `url` with Range `rng` (None: whole clip); `has_range`
        when the request carried a Range header at all (`bytes=0-` is one, though it asks for all)."""
        w = self.world
        self.prepare(url, e, start, t)
        eid = e["_id"]
        if self.l1.get(url):
            return "local"
        size = clip_size(e, start)
        self.list_if_due(eid, t)  # a miss looks in the listing, re-listing it when it is due
        listed = url in self.listing[eid][1]
        if has_range and listed:
            # A GET with Range is first offered a part: the clip bucket is asked (HEAD) for it even
            # when the range turns out to be the whole clip, which is then opened like any other.
            w.s3("HEAD")
        if rng is not None:
            first, last = rng
            if listed:
                w.s3("GET", 1, last - first + 1)
            elif last >= INFO_FRAME_BYTES:
                w.s3("GET", 1, last - max(first, INFO_FRAME_BYTES) + 1)
            return "part"
        self.l1.put(url, size)
        if listed:
            if not has_range:  # a Range request's part offer asked already; its answer opens the clip
                w.s3("HEAD")
            w.s3("GET", 1, size)
            return "clip_bucket"
        if t - self.recent_scan.pop(url, -1e18) > RECENT_BYTES_S:
            w.s3("GET", 1, size)
        w.s3("PUT")
        if url not in w.clip_bucket:
            w.counts.growth_objects += 1
            w.counts.growth_bytes += size
        w.clip_bucket[url] = t
        w.by_episode[eid].add(url)
        self.listing[eid][1].add(url)
        return "fill"


def simulate(trace, episodes_by_id, nodes, budget, ttl_s, speed, cdn_bytes=None, probe_gets=(3, 3), weight=1.0,
             sent=None):
    """Runs a trace through the tiers; `speed` maps trace seconds to the wall seconds the TTLs
    count in, unless `sent` gives each request's wall time as the replay sent it (a replay that
    falls behind its schedule sees fewer trace-seconds per TTL); `weight` scales counts (spatial
    sampling). Returns the replay's summary fields."""
    params = {"ttl_s": ttl_s, "probe_gets_cbr": probe_gets[0], "probe_gets_vbr": probe_gets[1]}
    world = World(params)
    ring = Ring(nodes)
    ns = [Node(world, budget) for _ in range(nodes)]
    cdn = LRU(cdn_bytes) if cdn_bytes else None
    plays = 0
    for i, line in enumerate(trace):
        if is_play(line):
            plays += 1
        eid, start = parse_url(line["url"])
        e = episodes_by_id[eid]
        t = sent[i] if sent else line["t"] / speed
        size = clip_size(e, start)
        rng = parse_range(line.get("range"), size)
        has_range = bool(line.get("range"))
        if cdn is not None:
            if cdn.get(line["url"]):
                world.counts.tiers["cdn"] += 1
                continue
            cdn.put(line["url"], size)
            rng, has_range = None, False  # the CDN asks for the whole clip, without Range
        node = ns[ring.node(line["url"].split("?")[0].removesuffix(".mp3") + "|")] if nodes > 1 else ns[0]
        world.counts.tiers[node.serve(line["url"], e, start, rng, t, has_range)] += 1
    c = world.counts
    total = sum(c.tiers.values())
    per_k = 1000.0 / plays if plays else 0
    return {
        "plays": plays * weight, "requests": total * weight,
        "hit_ratio": {k: round(v / total, 4) for k, v in sorted(c.tiers.items())},
        "s3_requests_per_1k_plays": {v: round(c.s3[v] * per_k, 2) for v in ("GET", "PUT", "LIST", "HEAD")},
        "s3_bytes_per_1k_plays": round(c.s3_bytes * per_k),
        "clip_bucket_growth_per_1k_plays": {"objects": round(c.growth_objects * per_k, 2),
                                            "bytes": round(c.growth_bytes * per_k)},
        "_raw": {"tiers": dict(c.tiers), "s3": dict(c.s3), "s3_bytes": c.s3_bytes,
                 "growth_objects": c.growth_objects, "growth_bytes": c.growth_bytes},
    }


# ----------------------------------------------------------------------------------------------
# Mattson: LRU hit ratio for every cache size in one pass (byte-weighted stack distances)

class Fenwick:
    def __init__(self, n):
        self.n, self.t = n, [0] * (n + 1)

    def add(self, i, v):
        i += 1
        while i <= self.n:
            self.t[i] += v
            i += i & -i

    def prefix(self, i):  # sum of [0, i)
        s = 0
        while i > 0:
            s += self.t[i]
            i -= i & -i
        return s


def stack_distances(accesses):
    """For each (key, size) access: the bytes of the distinct keys touched since its last access,
    itself included (an LRU of at least that many bytes hits), or None on a first access."""
    tree = Fenwick(len(accesses))
    last = {}
    total = 0
    out = []
    for i, (key, size) in enumerate(accesses):
        if key in last:
            j = last[key]
            out.append(total - tree.prefix(j))  # bytes at positions >= j: keys since, and itself
            tree.add(j, -size)
            total -= size
        else:
            out.append(None)
        tree.add(i, size)
        total += size
        last[key] = i
    return out


def hit_curve(distances, sizes):
    n = len(distances)
    finite = sorted(d for d in distances if d is not None)
    return [(s, bisect.bisect_right(finite, s) / n if n else 0.0) for s in sizes]


# ----------------------------------------------------------------------------------------------
# extrapolation: a day drawn clip by clip, spatially sampled

def synthetic_catalog(corpus, n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        base = corpus[i % len(corpus)] if i < len(corpus) else rng.choice(corpus)
        e = dict(base)
        e["_id"] = hashlib.sha256(f"catalog/{i}".encode()).hexdigest()[:24]
        out.append(e)
    return out


def sampled_day(catalog, plays, rate, seed=23, zipf=1.0, chunk_share=0.95, moment_zipf=0.8, probe=0.15, seek=0.10,
                replay=0.05, range_share=0.7, bursts=3, burst_share=0.02):
    """A day with bench/workload.py's model, keeping only clips whose URL hash is under `rate`.
    Each chunk clip's plays are Poisson with its expected count; arbitrary starts never repeat, so
    their sampled count is drawn directly; the burst clips keep `rate` of their plays."""
    rng = random.Random(seed)
    ranking = list(catalog)
    rng.shuffle(ranking)
    ep = Zipf(len(ranking), zipf)
    p_episode = [ep.cdf[0]] + [ep.cdf[k] - ep.cdf[k - 1] for k in range(1, len(ep.cdf))]
    burst_plays = int(plays * burst_share) if bursts else 0
    regular = plays - bursts * burst_plays
    origins = regular / (1 + replay)
    lines = []

    def play(t, url, kind):
        r = "bytes=0-" if rng.random() < range_share else None
        if rng.random() < probe:
            lines.append({"t": t, "url": url, "range": "bytes=0-1", "kind": "probe"})
            t += rng.uniform(0.05, 0.4)
            r = "bytes=0-"
        lines.append({"t": t, "url": url, "range": r, "kind": kind})
        if rng.random() < seek:
            lines.append({"t": t + rng.uniform(2, 20), "url": url, "range": f"bytes={rng.randint(2_000, SEEK_MAX_BYTE)}-",
                          "kind": "seek"})
        if kind == "play" and rng.random() < replay:
            play(t + rng.uniform(5, 120), url, "replay")

    threshold = int(rate * 2 ** 32)
    heavy = []  # (url, expected originating plays, episode): too popular to sample, see below
    for k, e in enumerate(ranking):
        starts = e["chunk_starts_ms"]
        mz = Zipf(len(starts), moment_zipf)
        order = list(range(len(starts)))
        random.Random(f"{seed}/{e['_id']}").shuffle(order)
        for r_ in range(len(starts)):
            url = f"/clips/{e['_id']}/{starts[order[r_]]}"
            q = mz.cdf[r_] - (mz.cdf[r_ - 1] if r_ else 0.0)
            lam = origins * chunk_share * p_episode[k] * q
            if rate < 1 and lam * rate >= HEAVY_SAMPLED_PLAYS:
                heavy.append((url, lam, e))
                continue
            if int(hashlib.md5(url.encode()).hexdigest()[:8], 16) >= threshold:
                continue
            for _ in range(poisson(rng, lam)):
                play(day_time(rng), url, "play")
    arbitrary = poisson(rng, origins * (1 - chunk_share) * rate)
    for _ in range(arbitrary):
        e = ranking[ep.draw(rng)]
        start = 1000 * rng.randint(0, max(0, e["duration_ms"] // 1000 - 31))
        play(day_time(rng), f"/clips/{e['_id']}/{start}", "play")
    for b in range(bursts):
        e = ranking[ep.draw(rng)]
        url = f"/clips/{e['_id']}/{rng.choice(e['chunk_starts_ms'] or [0])}"
        if rate < 1:
            heavy.append((url, burst_plays / (1 + replay), e))
            continue
        t0 = rng.uniform(6 * 3600, 22 * 3600)
        for _ in range(poisson(rng, burst_plays * rate)):
            play(min(DAY_S - 1, t0 + rng.expovariate(1 / 300.0)), url, "burst")
    lines.sort(key=lambda line: line["t"])
    return lines, p_episode, ranking, heavy


# Spatial sampling keeps a clip with probability R and scales its counts by 1/R, which is unbiased
# but hopeless for the head of a Zipf distribution: one sampled top clip can carry more plays than
# the whole sample should. A clip expected to have at least this many plays in the sample is
# taken out of it and accounted for whole: it stays in every cache all day (it is asked for every
# few seconds), so it costs one fill and its bytes of each cache, and every other request for it is
# a hit (local, or CDN in front).
HEAVY_SAMPLED_PLAYS = 5
REQUESTS_PER_ORIGIN = 1.0 + 0.15 + 0.10 + 0.05 * 1.25  # play, probe, seek, replay (with its own follow-ups)
PLAYS_PER_ORIGIN = 1.05


def heavy_totals(heavy):
    """Requests, plays, bytes served and the bytes they hold in a cache, for the heavy clips."""
    out = {"clips": len(heavy), "requests": 0.0, "plays": 0.0, "served": 0.0, "bytes": 0}
    for url, lam, e in heavy:
        size = clip_size(e, parse_url(url)[1])
        out["requests"] += lam * REQUESTS_PER_ORIGIN
        out["plays"] += lam * PLAYS_PER_ORIGIN
        out["served"] += lam * PLAYS_PER_ORIGIN * size
        out["bytes"] += size
    return out


def poisson(rng, lam):
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    k, p, threshold = 0, 1.0, math.exp(-lam)
    while k < 10_000:
        p *= rng.random()
        if p < threshold:
            return k
        k += 1
    return k


def listings_per_day(p_episode, plays, nodes, ttl_s, curve_points=96):
    """Expected LISTs a day (source folder and clip-bucket folder, each once per TTL per episode per
    node that saw a request in that TTL): per TTL window, 1 - exp(-rate·ttl) per episode and node."""
    requests_per_play = 1.0  # prepare runs per clip request that reaches a node; plays dominate
    total = 0.0
    for i in range(curve_points):
        t = (i + 0.5) * DAY_S / curve_points
        shape = 1.0 + 0.5 * math.cos(2 * math.pi * (t - 19 * 3600) / DAY_S)
        windows = (DAY_S / curve_points) / ttl_s
        for p in p_episode:
            lam = plays * requests_per_play * p * shape / DAY_S / nodes  # per node
            total += 2 * nodes * windows * (1 - math.exp(-lam * ttl_s))
    return total


def extrapolate(corpus, replay, prices, serving, args):
    setups = replay["setups"]
    out = []
    budgets_gb = [0.25, 0.5, 1, 2, 4, 8, 16, 32, 64]
    for exp10 in range(4, 9):
        plays = 10 ** exp10
        catalog_n = int(round(args.catalog_at_1e4 * math.sqrt(plays / 1e4)))
        catalog = synthetic_catalog(corpus, catalog_n, args.seed)
        by_id = {e["_id"]: e for e in catalog}
        rate = min(1.0, args.sample_plays / plays)
        lines, p_episode, _, heavy = sampled_day(catalog, plays, rate, seed=args.seed)
        hv = heavy_totals(heavy)
        # nodes from CPU: the replay's CPU per play with a CDN (c) and without (b), at the daily peak
        # (1.5x the average rate) over an instance's vCPUs at the target utilisation.
        inst = prices["instance"]
        peak_per_s = plays / DAY_S * 1.5
        row = {"plays_per_day": plays, "catalog_episodes": catalog_n, "sampling_rate": round(rate, 6),
               "sampled_requests": len(lines), "heavy_clips": hv["clips"],
               "heavy_share_of_plays": round(hv["plays"] / plays, 4)}
        for label, setup, cdn in (("no_cdn", "b", False), ("cdn", "c", True)):
            cpu_per_play = setups[setup]["cpu_s_per_1k_plays"] / 1000 if setup in setups else \
                setups["a"]["cpu_s_per_1k_plays"] / 1000
            nodes = max(1, math.ceil(peak_per_s * cpu_per_play / (inst["vcpus"] * args.target_cpu)))
            if plays >= 10 ** 6:
                nodes = max(nodes, 2)  # availability: a node can fail
            # the L1 curve of one node's share of the requests that reach the nodes
            ring = Ring(nodes)
            cdn_seen = set()
            accesses = []
            for line in lines:
                if cdn:
                    if line["url"] in cdn_seen:
                        continue
                    cdn_seen.add(line["url"])
                if nodes == 1 or ring.node(line["url"] + "|") == 0:
                    eid, start = parse_url(line["url"])
                    accesses.append((line["url"], clip_size(by_id[eid], start)))
            # heavy clips: a node's share of them sits in its cache all day; the rest of the cache is
            # the sampled clips' (scaled by R); hits of all requests reaching the node combine both
            node_heavy = hv["bytes"] / nodes if not cdn else 0.0
            light = hit_curve(stack_distances(accesses), [max(0.0, b * 1e9 - node_heavy) * rate for b in budgets_gb])
            n_light = len(accesses) / rate
            heavy_req = 0.0 if cdn else hv["requests"] / nodes
            curve = [(b, (h * n_light + max(0.0, heavy_req - len(heavy) / nodes)) / max(1.0, n_light + heavy_req))
                     for b, (_, h) in zip(budgets_gb, light)]
            best = curve[-1][1]
            chosen = next(b for b, h in curve if h >= best - 0.01)
            sim = simulate(lines, by_id, nodes, max(0.0, chosen * 1e9 - node_heavy) * rate, 600, 1.0,
                           cdn_bytes=(max(0.0, prices["cdn"]["cache_gb"] * 1e9 - hv["bytes"]) * rate) if cdn else None,
                           probe_gets=probe_gets_from(serving), weight=1 / rate)
            raw = add_heavy(sim["_raw"], hv, rate, cdn)
            sim["hit_ratio"] = {k: round(v / sum(raw["tiers"].values()), 4) for k, v in sorted(raw["tiers"].items())}
            scale = 1 / rate
            listings = listings_per_day(p_episode, plays * (1 - sim["hit_ratio"].get("cdn", 0)), nodes, 600)
            s3 = {v: raw["s3"].get(v, 0) * scale for v in ("GET", "PUT", "HEAD")}
            s3["LIST"] = listings
            total_requests = raw_requests = sum(raw["tiers"].values()) * scale
            clip_bytes_served = sum(clip_size(by_id[parse_url(l["url"])[0]], parse_url(l["url"])[1])
                                    for l in lines if l.get("range") in (None, "bytes=0-")) * scale + hv["served"]
            cost = cost_month(prices, s3, raw["s3_bytes"] * scale, raw["growth_bytes"] * scale, nodes, chosen,
                              clip_bytes_served, total_requests, sim["hit_ratio"].get("cdn", 0) if cdn else None)
            row[label] = {"nodes": nodes, "cache_gb_per_node": chosen,
                          "l1_hit_ratio_curve": [[b, round(h, 4)] for b, h in curve],
                          "hit_ratio": sim["hit_ratio"],
                          "s3_requests_per_day": {k: round(v) for k, v in s3.items()},
                          "s3_bytes_per_day": round(raw["s3_bytes"] * scale),
                          "clip_bucket_growth_per_day": {"objects": round(raw["growth_objects"] * scale),
                                                         "bytes": round(raw["growth_bytes"] * scale)},
                          "requests_per_day": round(raw_requests),
                          "bytes_served_per_day": round(clip_bytes_served),
                          "cost_month_usd": cost}
        row["old_design"] = old_design_cost(prices, serving, lines, by_id, rate, hv)
        out.append(row)
        print(f"  extrapolated {plays:>11,} plays/day: catalog {catalog_n}, sampling {rate:.4f}, "
              f"nodes {row['no_cdn']['nodes']}/{row['cdn']['nodes']}, cache {row['no_cdn']['cache_gb_per_node']} GB/node, "
              f"$/month {row['no_cdn']['cost_month_usd']['total']:.0f} (CDN {row['cdn']['cost_month_usd']['total']:.0f}), "
              f"old {row['old_design']['cost_month_usd']['total']:.0f}", flush=True)
    return out


def add_heavy(raw, hv, rate, cdn):
    """The sampled counts scaled by 1/R, plus the heavy clips: one fill each (a source GET of the
    clip and a PUT), every other request a hit of the first tier."""
    out = {"tiers": {k: v / rate for k, v in raw["tiers"].items()}, "s3": {k: v / rate for k, v in raw["s3"].items()},
           "s3_bytes": raw["s3_bytes"] / rate, "growth_objects": raw["growth_objects"] / rate + hv["clips"],
           "growth_bytes": raw["growth_bytes"] / rate + hv["bytes"]}
    hit = "cdn" if cdn else "local"
    out["tiers"]["fill"] = out["tiers"].get("fill", 0) + hv["clips"]
    out["tiers"][hit] = out["tiers"].get(hit, 0) + max(0.0, hv["requests"] - hv["clips"])
    out["s3"]["GET"] = out["s3"].get("GET", 0) + hv["clips"]
    out["s3"]["PUT"] = out["s3"].get("PUT", 0) + hv["clips"]
    out["s3_bytes"] += hv["bytes"]
    # back to "per sample" units, which the caller scales by 1/R again
    return {"tiers": {k: v * rate for k, v in out["tiers"].items()}, "s3": {k: v * rate for k, v in out["s3"].items()},
            "s3_bytes": out["s3_bytes"] * rate, "growth_objects": out["growth_objects"] * rate,
            "growth_bytes": out["growth_bytes"] * rate}


def probe_gets_from(serving):
    """S3 GETs of a cold episode's frame index: the cold-episode scenario's source GETs less the clip's own."""
    cold = serving["scenarios"]["cold_episodes"]
    cbr = next(v for k, v in cold.items() if "cbr" in k)["clipproxy"]["source_gets"] - 1
    vbr = next(v for k, v in cold.items() if "vbr" in k)["clipproxy"]["source_gets"] - 1
    return max(1, cbr), max(1, vbr)


MONTH_DAYS = 30.4


def cost_month(prices, s3, s3_bytes, growth_bytes, nodes, cache_gb, served_bytes, requests, cdn_hit):
    p = prices
    s3p = p["s3"]
    req = (s3["GET"] + s3["HEAD"]) / 1000 * s3p["get_per_1k"]["usd"] + (s3["PUT"] + s3["LIST"]) / 1000 * s3p["put_list_per_1k"]["usd"]
    # the clip bucket after a month of growth (it keeps growing unless a lifecycle rule expires clips)
    storage = growth_bytes * MONTH_DAYS / 1e9 * s3p["storage_gb_month"]["usd"]
    inst = p["instance"]
    compute = nodes * inst["usd_per_hour"]["usd"] * 730
    disk = nodes * (cache_gb * 1.2 + 8) * p["ebs_gb_month"]["usd"]
    gb_out = served_bytes * MONTH_DAYS / 1e9
    if cdn_hit is None:
        transfer = gb_out * p["transfer_out_gb"]["usd"]
        cdn = 0.0
    else:
        transfer = 0.0  # origin to CloudFront is free
        cdn = gb_out * p["cdn"]["transfer_gb"]["usd"] + requests * MONTH_DAYS / 10_000 * p["cdn"]["https_per_10k"]["usd"]
    costs = {"s3_requests": req * MONTH_DAYS, "s3_storage": storage, "compute": compute, "disk": disk,
             "transfer": transfer, "cdn": cdn}
    costs = {k: round(v, 2) for k, v in costs.items()}
    costs["total"] = round(sum(costs.values()), 2)
    return costs


def old_design_cost(prices, serving, lines, by_id, rate, hv=None):
    """The old path under the same day: every play is one API call and one Lambda invocation (a
    HeadObject on its clip bucket; on a miss a ListObjectsV2, an ffmpeg run reading the source
    over pre-signed URLs, a PutObject), then the player downloads the clip from S3 by a pre-signed
    URL; probes and seeks are ranged GETs of that URL. Its clip bucket never forgets, so a miss is
    a clip's first play of the day (a first day: the bucket starts empty, like the simulator's)."""
    sc = serving["scenarios"]
    miss = sc["misses_s3_latency"]["old"]
    hit_ms = sc["json_api"]["old"]["p50_ms"] + sc["misses_s3_latency"]["s3_first_byte_delay_ms"]
    miss_ms = miss["total_p50_ms"]
    gets_per_miss = miss["source_gets_p50"]
    bytes_per_miss = miss["source_bytes_per_miss_p50"]
    scale = 1 / rate
    seen = set()
    api = misses = downloads = ranged = 0
    served = 0
    for line in lines:
        eid, start = parse_url(line["url"])
        size = clip_size(by_id[eid], start)
        if line["kind"] in ("probe", "seek"):
            ranged += 1
            continue
        api += 1
        downloads += 1
        served += size
        if line["url"] not in seen:
            seen.add(line["url"])
            misses += 1
    api, misses, downloads, ranged, served = (x * scale for x in (api, misses, downloads, ranged, served))
    if hv:  # heavy clips: every play an API call and a download, one miss each
        api += hv["plays"]
        downloads += hv["plays"]
        ranged += hv["requests"] - hv["plays"]
        misses += hv["clips"]
        served += hv["served"]
    p = prices
    lam = p["lambda"]
    gb = lam["memory_mb"]["value"] / 1024
    gb_s = (api - misses) * hit_ms / 1000 * gb + misses * miss_ms / 1000 * gb
    s3_get = api + misses * gets_per_miss + downloads + ranged  # HEAD per call, source GETs, downloads
    s3_put_list = misses * 2
    day = {"api_calls": api, "lambda_invocations": api, "lambda_gb_s": gb_s, "misses": misses,
           "s3_get_head": s3_get, "s3_put_list": s3_put_list, "source_bytes": misses * bytes_per_miss,
           "bytes_served": served}
    m = MONTH_DAYS
    costs = {
        "lambda": (api / 1e6 * lam["per_million_requests"]["usd"] + gb_s * lam["per_gb_s"]["usd"]) * m,
        "api_gateway": api / 1e6 * p["api_gateway"]["per_million"]["usd"] * m,
        "s3_requests": (s3_get / 1000 * p["s3"]["get_per_1k"]["usd"] + s3_put_list / 1000 * p["s3"]["put_list_per_1k"]["usd"]) * m,
        "s3_storage": misses * (served / max(downloads, 1)) * m / 1e9 * p["s3"]["storage_gb_month"]["usd"],
        "transfer": served * m / 1e9 * p["transfer_out_gb"]["usd"],
    }
    costs = {k: round(v, 2) for k, v in costs.items()}
    costs["total"] = round(sum(costs.values()), 2)
    return {"per_day": {k: round(v) for k, v in day.items()}, "billed_ms_hit": round(hit_ms, 2),
            "billed_ms_miss": round(miss_ms, 2), "cost_month_usd": costs}


# ----------------------------------------------------------------------------------------------

def compare(replay_setup, model):
    """Side by side: hit ratio by tier (local and coalesced together) and S3 requests per 1k plays."""
    rows = []

    def ratio(hr, keys):
        return sum(hr.get(k) or 0 for k in keys)

    groups = [("cdn", ["cdn"]), ("local", ["local", "coalesced"]), ("clip_bucket", ["clip_bucket"]),
              ("fill", ["fill"]), ("part", ["part"])]
    for name, keys in groups:
        r, m = ratio(replay_setup["hit_ratio"], keys), ratio(model["hit_ratio"], keys)
        rows.append({"metric": f"hit ratio: {name}", "replay": round(r, 4), "model": round(m, 4)})
    r_hit = 1 - ratio(replay_setup["hit_ratio"], ["fill", "part"])
    m_hit = 1 - ratio(model["hit_ratio"], ["fill", "part"])
    rows.append({"metric": "hit ratio: all tiers (no source read)", "replay": round(r_hit, 4), "model": round(m_hit, 4),
                 "checked": True})
    for verb in ("GET", "PUT", "LIST", "HEAD"):
        rows.append({"metric": f"S3 {verb} per 1k plays", "replay": replay_setup["s3_requests_per_1k_plays"].get(verb, 0),
                     "model": model["s3_requests_per_1k_plays"][verb]})
    r_total = sum(replay_setup["s3_requests_per_1k_plays"].values())
    m_total = sum(model["s3_requests_per_1k_plays"].values())
    rows.append({"metric": "S3 requests per 1k plays (all verbs)", "replay": round(r_total, 2), "model": round(m_total, 2),
                 "checked": True})
    rows.append({"metric": "S3 bytes per 1k plays", "replay": replay_setup["s3_bytes_per_1k_plays"],
                 "model": model["s3_bytes_per_1k_plays"]})
    for row in rows:
        r, m = row["replay"], row["model"]
        row["error"] = round((m - r) / r, 4) if r else (0.0 if not m else None)
        if row.get("checked"):
            row["within_10pct"] = row["error"] is not None and abs(row["error"]) <= 0.10
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replay", required=True, help="bench/results/replay-<date>.json")
    ap.add_argument("--sweep", default=None, help="a replay JSON of the budget sweep (set-up a at several budgets)")
    ap.add_argument("--prices", default=os.path.join(HERE, "prices.json"))
    ap.add_argument("--serving", default=None, help="make bench's results JSON (default: the newest full run)")
    ap.add_argument("--episodes", default=os.path.join(HERE, "work", "replay-corpus", "episodes.json"))
    ap.add_argument("--catalog-at-1e4", type=int, default=50)
    ap.add_argument("--sample-plays", type=int, default=300_000, help="plays simulated per extrapolated day")
    ap.add_argument("--target-cpu", type=float, default=0.5, help="peak CPU utilisation a node is sized for")
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--no-extrapolation", action="store_true")
    ap.add_argument("--json-out", default=None, help="default: next to --replay, replay-…-capacity.json")
    args = ap.parse_args()
    with open(args.replay) as f:
        replay = json.load(f)
    with open(args.episodes) as f:
        corpus = json.load(f)
    with open(args.prices) as f:
        prices = json.load(f)
    serving_path = args.serving or newest_serving()
    with open(serving_path) as f:
        serving = json.load(f)
    by_id = {e["_id"]: e for e in corpus}
    trace = read_trace(os.path.join(REPO, replay["trace"]) if not os.path.isabs(replay["trace"]) else replay["trace"])
    pg = probe_gets_from(serving)
    out = {"replay": os.path.relpath(args.replay, REPO), "serving": os.path.relpath(serving_path, REPO),
           "prices": os.path.relpath(args.prices, REPO), "probe_gets": {"cbr": pg[0], "vbr": pg[1]},
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "check": {}}
    for name, s in replay["setups"].items():
        model = simulate(trace, by_id, s["nodes"], s["budget_mb_per_node"] * 1024 * 1024, s["catalog_ttl_s"], s["speed"],
                         cdn_bytes=10 * 1024 ** 3 if name == "c" else None, probe_gets=pg, sent=sent_times(s, len(trace)))
        model.pop("_raw")
        rows = compare(s, model)
        out["check"][name] = {"model": model, "rows": rows,
                              "all_within_10pct": all(r["within_10pct"] for r in rows if r.get("checked"))}
        print(f"  set-up {name}: model vs replay")
        for r in rows:
            flag = "" if not r.get("checked") else ("  ok" if r["within_10pct"] else "  OUT OF 10%")
            err = "" if r["error"] is None else f"{100 * r['error']:+.1f}%"
            print(f"    {r['metric']:<42} replay {r['replay']:>12}  model {r['model']:>12}  {err}{flag}")
    # the budget sweep: the replay of set-up a at several budgets, and the model's curve
    if args.sweep:
        with open(args.sweep) as f:
            sweep = json.load(f)
        strace = read_trace(os.path.join(REPO, sweep["trace"]))
        points = []
        for label, s in sorted(sweep["runs"].items(), key=lambda kv: kv[1]["budget_mb_per_node"]):
            model = simulate(strace, by_id, 1, s["budget_mb_per_node"] * 1024 * 1024, s["catalog_ttl_s"], s["speed"],
                             probe_gets=pg, sent=sent_times(s, len(strace)))
            points.append({"budget_mb": s["budget_mb_per_node"], "replay": s["hit_ratio"], "model": model["hit_ratio"],
                           "replay_s3_per_1k": sum(s["s3_requests_per_1k_plays"].values()),
                           "model_s3_per_1k": sum(model["s3_requests_per_1k_plays"].values())})
        accesses = [(l["url"], clip_size(by_id[parse_url(l["url"])[0]], parse_url(l["url"])[1])) for l in strace]
        mb = [2 ** k for k in range(2, 13)]
        out["sweep"] = {"trace": sweep["trace"], "points": points,
                        "mattson_curve_mb": [[m, round(h, 4)] for m, h in
                                             hit_curve(stack_distances(accesses), [m * 1024 * 1024 for m in mb])],
                        "working_set_mb": round(sum(s for _, s in {k: (k, s) for k, s in accesses}.values()) / 2 ** 20, 1)}
        out["sweep"]["mattson_curve_mb"] = [[m, h] for m, h in zip(mb, [h for _, h in out["sweep"]["mattson_curve_mb"]])]
    if not args.no_extrapolation:
        out["extrapolation"] = extrapolate(corpus, replay, prices, serving, args)
    path = args.json_out or args.replay.replace(".json", "-capacity.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"  wrote {path}")
    return 0 if all(c["all_within_10pct"] for c in out["check"].values()) else 1


def sent_times(setup, n):
    """When the replay sent each request (wall seconds from its start), if its responses file is
    still there (bench/work is not kept in git); else None, and the trace's schedule is used."""
    path = setup.get("responses_file")
    if not path or not os.path.exists(os.path.join(REPO, path)):
        return None
    times = [None] * n
    with open(os.path.join(REPO, path)) as f:
        for line in f:
            r = json.loads(line)
            times[r["i"]] = r.get("sent")
    return times if all(t is not None for t in times) else None


def newest_serving():
    d = os.path.join(HERE, "results")
    full = sorted(f for f in os.listdir(d) if f[:4].isdigit() and f.endswith(".json") and "quick" not in f
                  and "cold_episodes" in open(os.path.join(d, f)).read())
    return os.path.join(d, full[-1])


if __name__ == "__main__":
    sys.exit(main())
