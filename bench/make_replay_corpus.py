#!/usr/bin/env python3
"""The replay bench's corpus: long synthetic episodes, their MongoDB catalog and transcript chunks.

    python bench/make_replay_corpus.py [--episodes 48] [--out bench/work/replay-corpus] [--seed 23]
        [--min-minutes 20] [--max-minutes 120]

Episodes are 20 to 120 minutes long, in a mix of encodings a podcast host serves (CBR 32 to
128 kbit/s, MPEG-1 and MPEG-2, mono and stereo, and LAME VBR). Encoding hours of audio would take
far longer than the bench itself, so each encoding is made once as a 97-second segment (speech-like
material: bench/make_corpus.py's tone and wandering pink noise), cut by stream copy to 3,675 frames
(a whole number of the 49-frame padding pattern of constant-bitrate MPEG audio, so repeats continue
the pattern and a CBR episode stays a plain CBR file). An episode is those frames repeated as bytes
(never re-encoded), then one ffmpeg stream copy (`-c copy`) writes its Info/Xing frame. Each
segment starts with an empty bit reservoir, so every joint is a valid MP3 stream. An episode takes
well under a second to make; files are kept and only missing ones are made.

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
from serving import mp3_frame_length  # noqa: E402

HERE = os.path.dirname(os.path.realpath(__file__))
SEGMENT_S = 97
LOOP_FRAMES = 75 * 49  # 3,675 frames: 96 s at 44.1 kHz (1,152 samples) and at 22.05 kHz (576)

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


def loopable(segment, path):
    """The segment cut to LOOP_FRAMES frames by stream copy. A constant-bitrate MPEG stream pads
    frames in a pattern that repeats every 49 frames (at 44.1/22.05 kHz), so a segment of a
    multiple of 49 frames repeats into one unbroken pattern: the looped episode is a plain CBR
    file (clipproxy models it from two small reads instead of scanning it)."""
    if os.path.exists(path) and os.path.getsize(path) > 0:
        return path
    tmp = path + ".tmp"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", segment, "-c", "copy",
                    "-frames:a", str(LOOP_FRAMES), "-fflags", "+bitexact", "-map_metadata", "-1", "-f", "mp3", tmp],
                   check=True)
    os.replace(tmp, path)
    return path


def audio_frames(path):
    """The MPEG audio frames of a file made by ffmpeg: its bytes after the ID3v2 tag and the Info/Xing frame."""
    with open(path, "rb") as f:
        data = f.read()
    p = 0
    if data[:3] == b"ID3":
        p = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    first = mp3_frame_length(data[p:p + 4])
    if not first:
        raise SystemExit(f"{path}: no MPEG audio frame after the tag")
    return data[p + first:], first


def episode_file(path, seg, seconds):
    """The segment's frames repeated to `seconds` (whole segments, then whole frames of the next), then
    one stream copy by ffmpeg, which writes the Info/Xing frame (frame count, TOC) of the result."""
    if os.path.exists(path) and os.path.getsize(path) > 0:
        return
    frames, _ = audio_frames(seg)
    per_second = len(frames) / (LOOP_FRAMES * seconds_per_frame(frames))
    want = int(seconds * per_second)
    body = frames * (want // len(frames)) + cut_at_frame(frames, want % len(frames))
    raw = path + ".raw"
    with open(raw, "wb") as f:
        f.write(body)
    tmp = path + ".tmp"
    try:
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "mp3", "-i", raw,
                        "-c", "copy", "-fflags", "+bitexact", "-map_metadata", "-1", "-f", "mp3", tmp], check=True)
        os.replace(tmp, path)
    finally:
        os.remove(raw)


def seconds_per_frame(frames):
    """Seconds of audio in one frame of this stream (from its first header)."""
    version = (frames[1] >> 3) & 3
    rate = [44100, 48000, 32000][(frames[2] >> 2) & 3] // {3: 1, 2: 2, 0: 4}[version]
    return (1152 if version == 3 else 576) / rate


def cut_at_frame(frames, limit):
    """The longest run of whole frames from the start of `frames` that is at most `limit` bytes."""
    p = 0
    while p + 4 <= len(frames):
        n = mp3_frame_length(frames[p:p + 4])
        if not n or p + n > limit:
            break
        p += n
    return frames[:p]


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

    def segment_of(encoding):
        """The encoding's segment, made the first time an episode needs it."""
        name, lame, channels, rate, _, _ = encoding
        path = os.path.join(media, f"segment_{name}.mp3")
        generate(path, SEGMENT_S, lame, channels, rate, 2300 + ENCODINGS.index(encoding))
        return loopable(path, os.path.join(media, f"loop_{name}.mp3"))

    episodes, meta, chunks = [], [], []
    weights = [e[5] for e in ENCODINGS]
    for n in range(args.episodes):
        encoding = rng.choices(ENCODINGS, weights)[0]
        minutes = rng.randint(args.min_minutes, args.max_minutes)
        name = f"ep{n:03d}_{encoding[0]}_{minutes}min"
        path = os.path.join(media, name + ".mp3")
        episode_file(path, segment_of(encoding), minutes * 60)
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
