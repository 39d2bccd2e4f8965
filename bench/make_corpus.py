#!/usr/bin/env python3
"""The serving benchmarks' corpus: episodes, their MongoDB catalog and their source objects.

    python bench/make_corpus.py [--fixtures Tests/Fixtures/generated] [--out bench/work/corpus]

Episodes: every MP3 fixture of `make fixtures` (about a minute each, CBR and VBR, MPEG-1/2/2.5,
tagged), the one-hour CBR fixture, plus media generated here with ffmpeg's lavfi sources and
libmp3lame: six ten-minute episodes at common podcast encodings and a one-hour VBR episode.
Generated files are kept (a file is rebuilt only when missing), so a second run takes a second.

Writes OUT/media/*.mp3, OUT/catalog/{episode_metadata,transcript_chunks_768d}.json (mongoexport
JSON lines, as the MongoDB wire server reads them) and OUT/episodes.json (what the harness needs:
_id, guid, feed_slug, source_key, file, duration_ms, vbr, size, name).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(HERE)

# name, seconds, libmp3lame options, channels, sample rate, vbr
GENERATED = [
    ("ten_cbr128_44k_stereo", 600, ["-b:a", "128k"], 2, 44100, False),
    ("ten_cbr96_44k_joint", 600, ["-b:a", "96k", "-joint_stereo", "1"], 2, 44100, False),
    ("ten_cbr64_44k_mono", 600, ["-b:a", "64k"], 1, 44100, False),
    ("ten_cbr48_24k_mono", 600, ["-b:a", "48k"], 1, 24000, False),
    ("ten_vbr_v2_44k_stereo", 600, ["-q:a", "2"], 2, 44100, True),
    ("ten_vbr_v5_44k_mono", 600, ["-q:a", "5"], 1, 44100, True),
    ("hour_vbr_v5_44k_mono", 3600, ["-q:a", "5"], 1, 44100, True),
]


def oid(name):
    return hashlib.sha256(("bench-episode/" + name).encode()).hexdigest()[:24]


def guid(name):
    h = hashlib.sha256(("bench-guid/" + name).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def generate(path, seconds, lame, channels, rate, seed):
    """Speech-like material: a swept tone and pink noise whose loudness wanders, so VBR frames vary."""
    if os.path.exists(path) and os.path.getsize(path) > 0:
        return
    layout = "mono" if channels == 1 else "stereo"
    graph = (f"sine=f=180:r={rate}:d={seconds},volume=0.25[a];"
             f"anoisesrc=c=pink:r={rate}:a=0.3:seed={seed}:d={seconds},"
             f"volume='0.15+0.5*abs(sin(t/3.7))*abs(sin(t/11.3))':eval=frame[b];"
             f"[a][b]amix=inputs=2:normalize=0,aformat=channel_layouts={layout}")
    tmp = path + ".tmp"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                    "-filter_complex", graph, "-c:a", "libmp3lame", *lame, "-ar", str(rate), "-ac", str(channels),
                    "-fflags", "+bitexact", "-map_metadata", "-1", "-f", "mp3", tmp], check=True)
    os.replace(tmp, path)


def duration_ms(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
                         check=True, capture_output=True, text=True).stdout
    return int(round(float(out.strip()) * 1000))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=os.path.join(REPO, "Tests", "Fixtures", "generated"))
    ap.add_argument("--out", default=os.path.join(HERE, "work", "corpus"))
    args = ap.parse_args()
    media = os.path.join(args.out, "media")
    os.makedirs(media, exist_ok=True)
    os.makedirs(os.path.join(args.out, "catalog"), exist_ok=True)

    with open(os.path.join(args.fixtures, "fixtures.json")) as f:
        fixtures = json.load(f)["fixtures"]
    sources = []  # (name, path, vbr)
    for fx in fixtures:
        path = os.path.join(args.fixtures, fx["file"])
        if not os.path.exists(path):
            sys.exit(f"missing fixture {path}: run `make fixtures` (the bench needs the one-hour file too)")
        sources.append((fx["name"], path, fx["mode"] == "vbr"))
    if not any(name.startswith("hour_") for name, _, _ in sources):
        sys.exit("the one-hour CBR fixture is missing: run `make fixtures`")
    for i, (name, seconds, lame, channels, rate, vbr) in enumerate(GENERATED):
        path = os.path.join(media, name + ".mp3")
        print(f"  corpus: {name} ({seconds} s)" + ("" if os.path.exists(path) else ", generating"), flush=True)
        generate(path, seconds, lame, channels, rate, 1000 + i)
        sources.append((name, path, vbr))

    episodes, meta, chunks = [], [], []
    for name, path, vbr in sources:
        feed = "bench-" + name.split("_")[0]
        g = guid(name)
        key = f"{feed}/{g}/audio/{name.replace('_', '-')}_{g[:8]}_audio.mp3"
        dur = duration_ms(path)
        episodes.append({"_id": oid(name), "guid": g, "feed_slug": feed, "source_key": key, "file": path,
                         "duration_ms": dur, "vbr": vbr, "size": os.path.getsize(path), "name": name})
        meta.append({"_id": {"$oid": oid(name)}, "guid": g, "podcast_name": "Bench " + feed,
                     "episode_title": name, "duration_ms": dur})
        chunks.append({"_id": {"$oid": hashlib.sha256(("chunk/" + name).encode()).hexdigest()[:24]},
                       "episode_id": g, "feed_slug": feed, "chunk_index": 0, "start_time": 0.0,
                       "end_time": dur / 1000.0, "text": "bench"})

    write_catalog(args.out, meta, chunks, episodes)
    print(f"  corpus: {len(episodes)} episodes in {args.out}")


def write_catalog(out, meta, chunks, episodes):
    """OUT/catalog/*.json as mongoexport JSON lines (what the MongoDB wire server reads) and OUT/episodes.json."""
    def lines(docs):
        return "".join(json.dumps(d, separators=(",", ":")) + "\n" for d in docs)

    with open(os.path.join(out, "catalog", "episode_metadata.json"), "w") as f:
        f.write(lines(meta))
    with open(os.path.join(out, "catalog", "transcript_chunks_768d.json"), "w") as f:
        f.write(lines(chunks))
    with open(os.path.join(out, "episodes.json"), "w") as f:
        json.dump(episodes, f, indent=1)


if __name__ == "__main__":
    main()
