#!/usr/bin/env python3
"""A day of the dashboard's clip traffic as a trace: JSON lines, one request each.

    python bench/workload.py --episodes bench/work/replay-corpus/episodes.json --plays 100000 \
        [--seed 23] [--zipf 1.0] [--out bench/work/trace-100000.jsonl]

Each line: {"t": seconds since the start of the day, "client": listener id, "url": path and query,
"range": the Range header or null, "kind": play | burst | replay | probe | seek}. A replay of the
file is exact; an access log turned into the same lines replays as well (bench/replay --trace).
"Plays" are the lines of kind play, burst and replay: a listener starting a clip. Probes and seeks
are follow-ups within a play and are requests, not plays.

The model, and why (every parameter is an option; defaults in brackets):

- Episodes by popularity: Zipf with exponent --zipf [1.0] over a random ranking of the corpus.
  Podcast listening, like most catalogue traffic, is heavy-headed: a few recent episodes take
  most plays.
- Where a play starts: most plays come from search results, which link to a transcript chunk's
  start [--chunk-share 0.95]; within an episode the chunks themselves are Zipf-popular
  [--moment-zipf 0.8], since the same quotable moments are found and shared again and again. The
  rest start at an arbitrary second of the episode (a listener scrubbing the episode page), which
  almost never repeats.
- Follow-ups from the same listener: a Range probe `bytes=0-1` before the play (Safari's first
  request for media) [--probe 0.15]; a seek inside the clip, `bytes=N-` a few seconds after the
  play starts (at most 60 kB in) [--seek 0.10]; the same clip played again 5 to 120 s later [--replay 0.05].
- Browsers fetch media with `Range: bytes=0-` (Chromium, Firefox) [--range-share 0.7 of plays];
  the rest (API clients, downloads) send no Range.
- Time of day: arrivals follow a smooth daily curve (a trough at 05:00, a peak at 19:00, peak to
  trough about 3:1).
- Bursts: a clip linked from a newsletter [--bursts 3 a day, each --burst-share 0.02 of the
  plays], arriving over about 20 minutes with an exponentially falling rate.
- Listeners: --plays/4 of them, each play drawn by a listener at random (follow-ups keep it).
"""
import argparse
import bisect
import json
import math
import os
import random
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
DAY_S = 86400.0
# A seek lands at most this far into a clip: within the smallest 30 s clip of the corpus (about
# 98 kB at the lowest VBR rate), so a seek is never past the end.
SEEK_MAX_BYTE = 60_000


class Zipf:
    """Draws ranks 0..n-1 with probability proportional to 1/(rank+1)^s (inverse of the CDF)."""

    def __init__(self, n, s):
        weights = [1.0 / (k + 1) ** s for k in range(n)]
        total = sum(weights)
        self.cdf, acc = [], 0.0
        for w in weights:
            acc += w / total
            self.cdf.append(acc)

    def draw(self, rng):
        return min(bisect.bisect_left(self.cdf, rng.random()), len(self.cdf) - 1)


def day_time(rng):
    """A time of day in seconds, from a daily curve 1 + 0.5·cos(2π(t − 19 h)/24 h) (peak 19:00)."""
    for _ in range(1000):  # rejection sampling: accepted with probability ≥ 1/3 per round
        t = rng.random() * DAY_S
        if rng.random() * 1.5 <= 1.0 + 0.5 * math.cos(2 * math.pi * (t - 19 * 3600) / DAY_S):
            return t
    return t


def clip_url(episode, start_ms):
    return f"/clips/{episode['_id']}/{start_ms}"


def generate(episodes, plays, seed=23, zipf=1.0, chunk_share=0.95, moment_zipf=0.8, probe=0.15, seek=0.10,
             replay=0.05, range_share=0.7, bursts=3, burst_share=0.02):
    rng = random.Random(seed)
    ranking = list(episodes)
    rng.shuffle(ranking)
    by_episode = Zipf(len(ranking), zipf)
    moments = {e["_id"]: Zipf(len(e["chunk_starts_ms"]), moment_zipf) for e in ranking}
    # Each episode's chunks in a random popularity order (the quotable moment is anywhere in it).
    orders = {}
    for e in ranking:
        order = list(range(len(e["chunk_starts_ms"])))
        rng.shuffle(order)
        orders[e["_id"]] = order
    clients = max(1, plays // 4)
    lines = []

    def play(t, client, url, kind):
        rng_range = "bytes=0-" if rng.random() < range_share else None
        if rng.random() < probe:
            lines.append({"t": t, "client": client, "url": url, "range": "bytes=0-1", "kind": "probe"})
            t += rng.uniform(0.05, 0.4)
            rng_range = "bytes=0-"
        lines.append({"t": t, "client": client, "url": url, "range": rng_range, "kind": kind})
        if rng.random() < seek:
            lines.append({"t": t + rng.uniform(2, 20), "client": client, "url": url,
                          "range": f"bytes={rng.randint(2_000, SEEK_MAX_BYTE)}-", "kind": "seek"})
        return t

    burst_plays = int(plays * burst_share) if bursts else 0
    regular = plays - bursts * burst_plays
    n = 0
    while n < regular:
        e = ranking[by_episode.draw(rng)]
        starts = e["chunk_starts_ms"]
        if rng.random() < chunk_share and starts:
            start = starts[orders[e["_id"]][moments[e["_id"]].draw(rng)]]
        else:
            start = 1000 * rng.randint(0, max(0, e["duration_ms"] // 1000 - 31))
        t = day_time(rng)
        client = f"c{rng.randrange(clients)}"
        t = play(t, client, clip_url(e, start), "play")
        n += 1
        if rng.random() < replay and n < regular:
            play(t + rng.uniform(5, 120), client, clip_url(e, start), "replay")
            n += 1
    for _ in range(bursts):
        e = ranking[by_episode.draw(rng)]
        starts = e["chunk_starts_ms"] or [0]
        url = clip_url(e, rng.choice(starts))
        t0 = rng.uniform(6 * 3600, 22 * 3600)
        for _ in range(burst_plays):
            t = min(DAY_S - 1, t0 + rng.expovariate(1 / 300.0))
            play(t, f"c{rng.randrange(clients)}", url, "burst")
    lines.sort(key=lambda line: line["t"])
    for line in lines:
        line["t"] = round(line["t"], 3)
    return lines


def read_trace(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def is_play(line):
    return line.get("kind", "play") in ("play", "burst", "replay")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", default=os.path.join(HERE, "work", "replay-corpus", "episodes.json"))
    ap.add_argument("--plays", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--chunk-share", type=float, default=0.95)
    ap.add_argument("--moment-zipf", type=float, default=0.8)
    ap.add_argument("--probe", type=float, default=0.15)
    ap.add_argument("--seek", type=float, default=0.10)
    ap.add_argument("--replay", type=float, default=0.05)
    ap.add_argument("--range-share", type=float, default=0.7)
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--burst-share", type=float, default=0.02)
    ap.add_argument("--max-episodes", type=int, default=0, help="use only the first N episodes of the corpus")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.episodes) as f:
        episodes = json.load(f)
    if args.max_episodes:
        episodes = episodes[:args.max_episodes]
    lines = generate(episodes, args.plays, seed=args.seed, zipf=args.zipf, chunk_share=args.chunk_share,
                     moment_zipf=args.moment_zipf, probe=args.probe, seek=args.seek, replay=args.replay,
                     range_share=args.range_share, bursts=args.bursts, burst_share=args.burst_share)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        for line in lines:
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
    os.replace(tmp, args.out)
    plays = sum(1 for line in lines if is_play(line))
    print(f"  trace: {len(lines)} requests, {plays} plays, {len({l['url'] for l in lines})} distinct clips -> {args.out}")


if __name__ == "__main__":
    sys.exit(main())
