#!/usr/bin/env python3
"""The replay bench's corpus: long synthetic episodes, their MongoDB catalog and transcript chunks.

    python bench/make_replay_corpus.py [--episodes 48] [--out bench/work/replay-corpus] [--seed 23]
        [--min-minutes 20] [--max-minutes 120]

Episodes are 20 to 120 minutes long, in a mix of encodings a podcast host serves (CBR 32 to
128 kbit/s, MPEG-1 and MPEG-2, mono and stereo, and LAME VBR). Encoding hours of audio would take
far longer than the bench itself, so each encoding is made once as a 97-second segment (speech-like
material: bench/make_corpus.py's tone and wandering pink noise), and an episode is that
segment repeated by ffmpeg's stream copy (`-stream_loop N -c copy`): the frames are copied, never
re-encoded, and the muxer writes a correct Info/Xing frame for the whole file. Each segment starts
with an empty bit reservoir, so every joint is a valid MP3 stream. An episode takes well under a
second to make; files are kept and only missing ones are made.

Writes OUT/media/*.mp3, OUT/catalog/{episode_metadata,transcript_chunks_768d}.json (what the
MongoDB wire server reads) and OUT/episodes.json: for each episode its _id, guid, feed_slug,
source_key, file, duration_ms, size, vbr, encoding and chunk_starts_ms (the starts of its
transcript chunks, which the dashboard's search results link to).
"""
import argparse
import hashlib
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from make_corpus import duration_ms, generate, write_catalog  # noqa: E402  (the serving bench's corpus helpers)

HERE = os.path.dirname(os.path.realpath(__file__))
SEGMENT_S = 97

# name, libmp3lame options, channels, sample rate, vbr, share of episodes
ENCODINGS = [
    ("cbr32_22k_mono", ["-b:a", "32k"], 1, 22050, False, 0.15),
    ("cbr48_24k_mono", ["-b:a", "48k"], 1, 24000, False, 0.15),
    ("cbr64_44k_mono", ["-b:a", "64k"], 1, 44100, False, 0.25),
    ("cbr96_44k_joint", ["-b:a", "96k", "-joint_stereo", "1"], 2, 44100, False, 0.10),
    ("cbr128_44k_stereo", ["-b:a", "128k"], 2, 44100, False, 0.10),
    ("vbr_v7_44k_mono", ["-q:a", "7"], 1, 44100, True, 0.15),
    ("vbr_v9_22k_mono", ["-q:a", "9"], 1, 22050, True, 0.10),
]


def episode_file(path, seg, seconds):
    if os.path.exists(path) and os.path.getsize(path) > 0:
        return
    loops = seconds // SEGMENT_S + 1
    tmp = path + ".tmp"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-stream_loop", str(loops),
                    "-i", seg, "-t", str(seconds), "-c", "copy", "-fflags", "+bitexact", "-map_metadata", "-1",
                    "-f", "mp3", tmp], check=True)
    os.replace(tmp, path)


def hexid(kind, name, n):
    return hashlib.sha256(f"replay-{kind}/{name}".encode()).hexdigest()[:n]


def guid(name):
    h = hashlib.sha256(("replay-guid/" + name).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def chunk_starts(rng, total_ms):
    """Transcript chunks as an embedding pipeline cuts them: 20 to 70 s each, back to back."""
    starts, t = [], 0
    while t < total_ms - 35_000:
        starts.append(t)
        t += rng.randint(20_000, 70_000)
    return starts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=48)
    ap.add_argument("--out", default=os.path.join(HERE, "work", "replay-corpus"))
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--min-minutes", type=int, default=20)
    ap.add_argument("--max-minutes", type=int, default=120)
    args = ap.parse_args()
    media = os.path.join(args.out, "media")
    os.makedirs(media, exist_ok=True)
    os.makedirs(os.path.join(args.out, "catalog"), exist_ok=True)
    rng = random.Random(args.seed)

    segments = {}
    for i, (name, lame, channels, rate, _, _) in enumerate(ENCODINGS):
        path = os.path.join(media, f"segment_{name}.mp3")
        generate(path, SEGMENT_S, lame, channels, rate, 2300 + i)
        segments[name] = path

    episodes, meta, chunks = [], [], []
    weights = [e[5] for e in ENCODINGS]
    for n in range(args.episodes):
        encoding = rng.choices(ENCODINGS, weights)[0]
        minutes = rng.randint(args.min_minutes, args.max_minutes)
        name = f"ep{n:03d}_{encoding[0]}_{minutes}min"
        path = os.path.join(media, name + ".mp3")
        episode_file(path, segments[encoding[0]], minutes * 60)
        feed = f"replay-feed{n % 7}"
        g = guid(name)
        dur = duration_ms(path)
        starts = chunk_starts(random.Random(f"{args.seed}/{name}"), dur)
        episodes.append({"_id": hexid("episode", name, 24), "guid": g, "feed_slug": feed,
                         "source_key": f"{feed}/{g}/audio/2026-12-01-{name.replace('_', '-')}_{g[:8]}_audio.mp3",
                         "file": os.path.abspath(path), "duration_ms": dur, "size": os.path.getsize(path),
                         "vbr": encoding[4], "encoding": encoding[0], "name": name, "chunk_starts_ms": starts})
        meta.append({"_id": {"$oid": hexid("episode", name, 24)}, "guid": g, "podcast_name": "Replay " + feed,
                     "episode_title": name, "duration_ms": dur, "published_date": f"2026-11-{1 + n % 28:02d}"})
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else dur
            chunks.append({"_id": {"$oid": hexid("chunk", f"{name}/{i}", 24)}, "episode_id": g, "feed_slug": feed,
                           "chunk_index": i, "start_time": s / 1000.0, "end_time": end / 1000.0,
                           "text": f"chunk {i} of {name}"})
        print(f"  replay corpus: {name} ({os.path.getsize(path) / 1e6:.1f} MB, {len(starts)} chunks)", flush=True)

    write_catalog(args.out, meta, chunks, episodes)
    total = sum(e["size"] for e in episodes)
    print(f"  replay corpus: {len(episodes)} episodes, {total / 1e9:.2f} GB, "
          f"{sum(e['duration_ms'] for e in episodes) / 3.6e6:.0f} hours, in {args.out}")


if __name__ == "__main__":
    sys.exit(main())
