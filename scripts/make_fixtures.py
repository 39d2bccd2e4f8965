#!/usr/bin/env python3
"""Generate the MP3 test fixtures, the demo catalog and the demo source bucket.

    python3 scripts/make_fixtures.py [--out DIR] [--hour]

DIR defaults to Tests/Fixtures/generated under the repository root.  The output is
deterministic (the same bytes on every run with the same tools) and the run is
idempotent: a stamp file records a hash of this script and of the tool versions, and a
re-run with a matching stamp exits at once.  Every file is written under a temporary
name and renamed into place, and the stamp is written last, so an interrupted run is
never mistaken for a complete one.

Layout of DIR:
    media/*.mp3, media/not_mp3.*    audio fixtures and inputs for error tests
    fixtures.json                   what each fixture is (version, rate, tags, ...)
    catalog/*.json                  mongoexport JSON lines: episode_metadata, transcript_chunks_768d
    source/<feed>/<guid>/audio/...  the source bucket, as a directory
    episodes.json                   manifest: episode _id, guid, feed, fixture, source key

The one-hour fixture (hour_cbr64_44k_mono.mp3) is built only with --hour or
FIXTURES_HOUR=1.  Needs ffmpeg, lame and espeak-ng on PATH.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
import wave

SCRIPT_PATH = os.path.realpath(__file__)
REPO_ROOT = os.path.dirname(os.path.dirname(SCRIPT_PATH))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "Fixtures", "generated")
TOOLS = ("ffmpeg", "lame", "espeak-ng")
STAMP_NAME = ".stamp.json"
WORK_NAME = ".work"
# Subdirectories and files of DIR that belong to this script (and may be replaced).
OWNED_DIRS = ("media", "catalog", "source")
OWNED_FILES = ("fixtures.json", "episodes.json")

FFMPEG_QUIET = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
FFMPEG_BITEXACT = ["-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1"]

SPEECH_RATE = 22050  # what espeak-ng writes
CHIRP_RATE = 11025   # chirps are synthesised at this rate, then resampled (cheap)

# Two paragraphs spoken by two voices: varied, non-repeating speech for correlation tests.
SPEECH = [
    ("en-us", 160, 50,
     "Welcome to the daily tones, a podcast about nothing in particular. "
     "Seven tired sailors counted forty-two lanterns on the harbour wall. "
     "The quick brown fox jumps over the lazy dog, twice on Sundays. "
     "Our first guest collects clocks that never quite agree with each other. "
     "She says the loudest one ticks at exactly one hundred and thirteen beats a minute. "
     "Meanwhile, the weather in Lisbon was warm, with a light breeze from the west. "
     "Please remember to rate the show, and tell a friend who likes sine waves."),
    ("en-gb-x-rp", 150, 38,
     "In today's second half we discuss bit reservoirs, frame headers and padding bytes. "
     "A frame of layer three audio holds eleven hundred and fifty two samples. "
     "Cutting at the wrong place leaves a short click, or thirty milliseconds of silence. "
     "Zebras, quartz, jigsaw puzzles and vexing fjords make a fine pangram collection. "
     "Number nine, number nine, number nine, said the voice on the old tape. "
     "Thank you for listening; the next episode arrives on Thursday morning at six."),
]


class FixtureError(Exception):
    pass


# --------------------------------------------------------------------------------------
# Fixture table
# --------------------------------------------------------------------------------------

def fixture(name, version, rate, channels, lame_args, duration, seed, *, mode,
            xing=True, crc=False, noise=0.05, chirp=(180.0, 2400.0), speech_offset=0.0,
            wrap=None):
    return {
        "name": name, "version": version, "rate": rate, "channels": channels,
        "lame_args": lame_args, "duration": duration, "seed": seed, "mode": mode,
        "xing": xing, "crc": crc, "noise": noise, "chirp": chirp,
        "speech_offset": speech_offset, "wrap": wrap,
    }


FIXTURES = [
    fixture("m1_44k_stereo_cbr128", "1", 44100, 2, ["-b", "128", "-m", "s"], 72.0, 101,
            mode="cbr"),
    fixture("m1_48k_mono_cbr64", "1", 48000, 1, ["-b", "64", "-m", "m"], 66.0, 102,
            mode="cbr", speech_offset=7.5, chirp=(2600.0, 150.0)),
    fixture("m1_32k_stereo_vbr", "1", 32000, 2, ["-V", "4", "-m", "s"], 70.0, 103,
            mode="vbr", speech_offset=15.0, chirp=(300.0, 3000.0)),
    fixture("m1_44k_joint_vbr_v2", "1", 44100, 2, ["-V", "2", "-m", "j"], 68.5, 104,
            mode="vbr", speech_offset=22.25),
    # lame leaves out the Info tag when a CBR frame is too small to hold it (104-byte
    # frames here and in the MPEG-2.5 one below), so these two have none.
    fixture("m2_22k_mono_cbr32", "2", 22050, 1, ["-b", "32", "-m", "m"], 64.0, 105,
            mode="cbr", xing=False, speech_offset=31.0, chirp=(120.0, 1800.0)),
    fixture("m2_24k_stereo_vbr", "2", 24000, 2, ["-V", "5", "-m", "s"], 73.0, 106,
            mode="vbr", speech_offset=40.5),
    fixture("m25_11k_mono_cbr16", "2.5", 11025, 1, ["-b", "16", "-m", "m"], 62.0, 107,
            mode="cbr", xing=False, speech_offset=3.0, chirp=(100.0, 1500.0)),
    fixture("m1_44k_cbr_noinfo", "1", 44100, 2, ["-t", "-b", "96", "-m", "j"], 61.0, 108,
            mode="cbr", xing=False, speech_offset=11.0),
    fixture("m1_44k_vbr_noxing", "1", 44100, 2, ["-t", "-V", "5", "-m", "j"], 65.0, 109,
            mode="vbr", xing=False, speech_offset=27.0, chirp=(2200.0, 200.0)),
    fixture("m1_44k_id3", "1", 44100, 2, ["-b", "128", "-m", "j"], 67.0, 110,
            mode="cbr", speech_offset=35.0, wrap="id3"),
    fixture("m1_44k_id3x2_ape", "1", 44100, 2, ["-b", "128", "-m", "s"], 63.0, 111,
            mode="cbr", speech_offset=49.0, wrap="id3x2_ape"),
    # -V 9 with mono at 44.1 kHz: 32 kbit/s frames of 104 bytes, a reservoir of up to
    # 511 bytes reaches several frames back.  Quiet noise keeps the bitrate low.
    fixture("m1_44k_lowrate_vbr", "1", 44100, 1, ["-V", "9", "-m", "m"], 71.0, 112,
            mode="vbr", noise=0.02, chirp=None, speech_offset=18.0),
    fixture("m1_44k_crc", "1", 44100, 2, ["-p", "-b", "128", "-m", "j"], 69.0, 113,
            mode="cbr", crc=True, speech_offset=55.0),
]

HOUR = fixture("hour_cbr64_44k_mono", "1", 44100, 1, ["-b", "64", "-q", "7", "-m", "m"],
               3600.0, 114, mode="cbr", chirp=(150.0, 1800.0), speech_offset=0.0)

BAD_INPUTS = ["not_mp3.wav", "not_mp3.ogg", "empty.mp3", "random.mp3", "truncated.mp3",
              "huge_id3.mp3", "garbage_between.mp3"]

# Episodes of the demo catalog.  _id values are fixed; the first is the example in README.md.
EPISODES = [
    {"oid": "685ba776e4f9ec2f0756267a", "guid": "0e983347-7815-4b33-8a7e-2b1c9f0e1a11",
     "feed": "the-daily-tones", "podcast": "The Daily Tones",
     "title": "Clocks That Disagree", "date": "2024-05-01T06:00:00.000Z",
     "fixture": "m1_44k_stereo_cbr128", "stem": "2024-05-01-clocks-that-disagree",
     "decoys": True},
    {"oid": "685ba776e4f9ec2f0756267b", "guid": "substack:160734941",
     "feed": "substack-show", "podcast": "The Substack Show",
     "title": "Bit Reservoirs, Explained", "date": "2024-06-12T09:30:00.000Z",
     "fixture": "m1_32k_stereo_vbr", "stem": "bit-reservoirs-explained"},
    # The guid is itself 24 hex digits and is not the _id of any episode_metadata document.
    {"oid": "685ba776e4f9ec2f0756267c", "guid": "5d41402abc4b2a76b9719d91",
     "feed": "hex-guid-radio", "podcast": "Hex Guid Radio",
     "title": "Episode Five", "date": "2023-11-20T18:00:00.000Z",
     "fixture": "m2_22k_mono_cbr32", "stem": "episode-5"},
    {"oid": "685ba776e4f9ec2f0756267d", "guid": "tag:example.org,2024:ep-10",
     "feed": "tagged-and-covered", "podcast": "Tagged and Covered",
     "title": "Cover Art Special", "date": "2024-02-29T12:00:00.000Z",
     "fixture": "m1_44k_id3", "stem": "cover-art-special"},
    {"oid": "685ba776e4f9ec2f0756267e", "guid": "e2c7f1d0-3b1a-4c55-9d7e-6a5b4c3d2e1f",
     "feed": "low-rate-talk", "podcast": "Low Rate Talk",
     "title": "Whispering at Thirty-Two Kilobits", "date": "2024-08-08T08:08:08.000Z",
     "fixture": "m1_44k_lowrate_vbr", "stem": "whispering"},
    {"oid": "685ba776e4f9ec2f0756267f", "guid": "a1b2c3d4-0000-4000-8000-000000000006",
     "feed": "the-daily-tones", "podcast": "The Daily Tones",
     "title": "Twenty-Four Kilohertz", "date": "2024-05-02T06:00:00.000Z",
     "fixture": "m2_24k_stereo_vbr", "stem": "2024-05-02-twenty-four-khz"},
    # Listed in the catalog, but no source audio exists for it (404 "no source audio").
    {"oid": "685ba776e4f9ec2f07562680", "guid": "9b2f6c1e-missing-audio-0001",
     "feed": "the-daily-tones", "podcast": "The Daily Tones",
     "title": "The Episode That Never Was", "date": "2024-05-03T06:00:00.000Z",
     "fixture": None, "stem": None},
]

HOUR_EPISODE = {
    "oid": "685ba776e4f9ec2f07562681", "guid": "f00dcafe-1111-4222-8333-444455556666",
    "feed": "long-form-radio", "podcast": "Long Form Radio",
    "title": "The Whole Hour", "date": "2024-09-01T00:00:00.000Z",
    "fixture": "hour_cbr64_44k_mono", "stem": "the-whole-hour"}


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------

def run(cmd, **kw):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if proc.returncode != 0:
        raise FixtureError("command failed (exit %d): %s\n%s" % (
            proc.returncode, " ".join(cmd), proc.stderr.decode("utf-8", "replace")[-2000:]))
    return proc.stdout


def check_tools():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise FixtureError("required tool(s) not found on PATH: %s "
                           "(install with: apt-get install -y ffmpeg lame espeak-ng)"
                           % ", ".join(missing))
    versions = {}
    for tool, args in (("ffmpeg", ["-version"]), ("lame", ["--version"]),
                       ("espeak-ng", ["--version"])):
        out = run([tool] + args).decode("utf-8", "replace").strip().splitlines()
        versions[tool] = out[0].strip() if out else ""
    return versions


def atomic_write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp-%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def publish(src, dst):
    """Move a finished file into place (same file system, so the rename is atomic)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(src, "rb") as f:
        os.fsync(f.fileno())
    os.replace(src, dst)


def link_or_copy(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = dst + ".tmp-%d" % os.getpid()
    if os.path.exists(tmp):
        os.unlink(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def khz(rate):
    return ("%g" % (rate / 1000.0))


def json_bytes(obj):
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------
# MPEG audio frame headers (enough to find frames and check what we produced)
# --------------------------------------------------------------------------------------

BITRATES = {
    "1": [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    "2": [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
}
RATES = {"1": [44100, 48000, 32000], "2": [22050, 24000, 16000], "2.5": [11025, 12000, 8000]}
VERSIONS = {0: "2.5", 2: "2", 3: "1"}


def parse_header(b, pos):
    """Layer III header at b[pos:pos+4] -> dict, or None if it is not a valid one."""
    if pos + 4 > len(b) or b[pos] != 0xFF or (b[pos + 1] & 0xE0) != 0xE0:
        return None
    version = VERSIONS.get((b[pos + 1] >> 3) & 3)
    if version is None or ((b[pos + 1] >> 1) & 3) != 1:  # reserved version / not layer III
        return None
    br_index = b[pos + 2] >> 4
    sr_index = (b[pos + 2] >> 2) & 3
    if br_index in (0, 15) or sr_index == 3:
        return None
    bitrate = BITRATES["1" if version == "1" else "2"][br_index] * 1000
    rate = RATES[version][sr_index]
    padding = (b[pos + 2] >> 1) & 1
    channels = 1 if (b[pos + 3] >> 6) == 3 else 2
    coef = 144 if version == "1" else 72
    if version == "1":
        side = 17 if channels == 1 else 32
    else:
        side = 9 if channels == 1 else 17
    return {"version": version, "rate": rate, "bitrate": bitrate, "channels": channels,
            "crc": (b[pos + 1] & 1) == 0, "length": coef * bitrate // rate + padding,
            "side_info": side}


def id3v2_end(b, pos=0):
    """Offset after every ID3v2 tag that starts at pos (tags may follow each other)."""
    while b[pos:pos + 3] == b"ID3" and len(b) >= pos + 10:
        size = 0
        for x in b[pos + 6:pos + 10]:
            size = (size << 7) | (x & 0x7F)
        pos += 10 + size + (10 if b[pos + 5] & 0x10 else 0)
    return pos


def frame_offsets(b, start):
    """Offsets of consecutive frames from start; stops at the first non-frame."""
    offsets = []
    pos = start
    while True:
        h = parse_header(b, pos)
        if h is None:
            break
        offsets.append(pos)
        pos += h["length"]
    return offsets, pos


def xing_tag(b, pos):
    h = parse_header(b, pos)
    at = pos + 4 + (2 if h["crc"] else 0) + h["side_info"]
    tag = b[at:at + 4]
    if tag in (b"Xing", b"Info"):
        return tag.decode()
    # Some encoders put the tag at the offset that ignores the CRC; accept it there too.
    at -= 2 if h["crc"] else 0
    tag = b[at:at + 4]
    return tag.decode() if tag in (b"Xing", b"Info") else None


# --------------------------------------------------------------------------------------
# Tags written by hand: ID3v2.3, ID3v2.4 with footer, APEv2, ID3v1
# --------------------------------------------------------------------------------------

def syncsafe(n):
    if n >= 1 << 28:
        raise FixtureError("value too large for a syncsafe integer: %d" % n)
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def id3v23_frame(fid, body):
    return fid.encode("ascii") + struct.pack(">I", len(body)) + b"\x00\x00" + body


def id3v24_frame(fid, body):
    return fid.encode("ascii") + syncsafe(len(body)) + b"\x00\x00" + body


def id3v23_text(fid, text):
    return id3v23_frame(fid, b"\x00" + text.encode("latin-1"))


def id3v24_text(fid, text):
    return id3v24_frame(fid, b"\x03" + text.encode("utf-8"))


def id3v23_tag(frames, padding=0):
    body = b"".join(frames) + b"\x00" * padding
    return b"ID3\x03\x00\x00" + syncsafe(len(body)) + body


def id3v24_tag_with_footer(frames):
    body = b"".join(frames)  # a tag with a footer carries no padding
    return (b"ID3\x04\x00\x10" + syncsafe(len(body)) + body +
            b"3DI\x04\x00\x10" + syncsafe(len(body)))


def id3v1_tag(title, artist, album, year, comment, track, genre):
    def field(s, n):
        raw = s.encode("latin-1")[:n]
        return raw + b"\x00" * (n - len(raw))
    tag = (b"TAG" + field(title, 30) + field(artist, 30) + field(album, 30) +
           field(year, 4) + field(comment, 28) + b"\x00" + bytes([track, genre]))
    assert len(tag) == 128
    return tag


def apev2_tag(items):
    body = b""
    for key, value in items:
        raw = value.encode("utf-8")
        body += struct.pack("<II", len(raw), 0) + key.encode("ascii") + b"\x00" + raw
    size = len(body) + 32  # items + footer, not the header
    contains_header = 1 << 31
    is_header = 1 << 29

    def block(flags):
        return b"APETAGEX" + struct.pack("<IIII", 2000, size, len(items), flags) + b"\x00" * 8

    return block(contains_header | is_header) + body + block(contains_header)


# --------------------------------------------------------------------------------------
# Audio synthesis
# --------------------------------------------------------------------------------------

def make_speech(work):
    """Speak the paragraphs with espeak-ng and join them (with pauses) into one WAV."""
    pcm = bytearray()
    gap = b"\x00\x00" * int(SPEECH_RATE * 0.6)
    for i, (voice, speed, pitch, text) in enumerate(SPEECH):
        path = os.path.join(work, "speech_%d.wav" % i)
        run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path, text])
        with wave.open(path, "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SPEECH_RATE, 1, 2):
                raise FixtureError("unexpected espeak-ng output format in %s" % path)
            pcm += w.readframes(w.getnframes())
        pcm += gap
    out = os.path.join(work, "speech.wav")
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SPEECH_RATE)
        w.writeframes(bytes(pcm))
    return out


def mix_graph(fx, nsamples):
    """filter_complex for speech (input 0, looped) + seeded noise + slow chirp."""
    rate, channels, seed = fx["rate"], fx["channels"], fx["seed"]
    secs = fx["duration"] + 2
    offset = int(round(fx["speech_offset"] * SPEECH_RATE))
    parts = [
        "[0:a]atrim=start_sample=%d,asetpts=N/SR/TB,aresample=%d,"
        "aformat=sample_fmts=dbl:channel_layouts=mono[sp]" % (offset, rate)]
    labels = ["[sp]"]
    for ch in range(channels):
        parts.append("anoisesrc=r=%d:c=white:seed=%d:a=%g:d=%g,"
                     "aformat=sample_fmts=dbl:channel_layouts=mono[n%d]"
                     % (rate, seed * 10 + ch, fx["noise"], secs, ch))
        labels.append("[n%d]" % ch)
    if fx["chirp"]:
        f0, f1 = fx["chirp"]
        for ch in range(channels):
            a, b = (f0, f1) if ch == 0 else (f1, f0)  # the right channel sweeps the other way
            k = (b - a) / (2.0 * fx["duration"])
            parts.append("aevalsrc=exprs='0.1*sin(2*PI*(%g*t+%.12g*t*t))':s=%d:d=%g,"
                         "aresample=%d,aformat=sample_fmts=dbl:channel_layouts=mono[c%d]"
                         % (a, k, CHIRP_RATE, secs, rate, ch))
            labels.append("[c%d]" % ch)
    # amerge numbers the inputs' channels in order: speech=c0, noise=c1.., chirp after.
    idx = {lab: i for i, lab in enumerate(labels)}
    gains = [0.6, 0.45]
    exprs = []
    for ch in range(channels):
        terms = ["%g*c%d" % (gains[ch], idx["[sp]"]), "c%d" % idx["[n%d]" % ch]]
        if fx["chirp"]:
            terms.append("c%d" % idx["[c%d]" % ch])
        exprs.append("c%d=%s" % (ch, "+".join(terms)))
    layout = "mono" if channels == 1 else "stereo"
    parts.append("%samerge=inputs=%d,pan=%s|%s,atrim=end_sample=%d,aformat=sample_fmts=s16"
                 % ("".join(labels), len(labels), layout, "|".join(exprs), nsamples))
    return ";".join(parts)


def synth_cmd(fx, speech, nsamples):
    return (FFMPEG_QUIET + ["-stream_loop", "-1", "-i", speech,
                            "-filter_complex", mix_graph(fx, nsamples)] +
            FFMPEG_BITEXACT + ["-f", "s16le", "-c:a", "pcm_s16le", "-"])


def encode(fx, speech, out_path):
    """ffmpeg (raw PCM on a pipe) -> lame -> out_path."""
    nsamples = int(round(fx["duration"] * fx["rate"]))
    lame = (["lame", "--quiet", "--nohist", "-r", "--signed", "--little-endian",
             "--bitwidth", "16", "-s", khz(fx["rate"]), "--resample", khz(fx["rate"])] +
            fx["lame_args"] + ["-", out_path])
    synth = subprocess.Popen(synth_cmd(fx, speech, nsamples), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    enc = subprocess.Popen(lame, stdin=synth.stdout, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    synth.stdout.close()
    enc_out, enc_err = enc.communicate()
    synth_err = synth.stderr.read()
    synth.wait()
    if synth.returncode != 0:
        raise FixtureError("ffmpeg synthesis failed for %s:\n%s"
                           % (fx["name"], synth_err.decode("utf-8", "replace")[-2000:]))
    if enc.returncode != 0:
        raise FixtureError("lame failed for %s:\n%s"
                           % (fx["name"], (enc_out + enc_err).decode("utf-8", "replace")))


def cover_jpeg(work):
    path = os.path.join(work, "cover.jpg")
    run(FFMPEG_QUIET + ["-f", "lavfi", "-i", "testsrc2=size=480x480:rate=1:duration=1",
                        "-frames:v", "1", "-vf", "noise=alls=12:allf=u:all_seed=4242",
                        "-c:v", "mjpeg", "-q:v", "4", "-pix_fmt", "yuvj420p",
                        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
                        "-f", "image2", path])
    return read(path)


# --------------------------------------------------------------------------------------
# Fixture builders
# --------------------------------------------------------------------------------------

def wrap_id3(audio, cover):
    apic = id3v23_frame("APIC", b"\x00" + b"image/jpeg\x00" + b"\x03" + b"Cover\x00" + cover)
    comm = id3v23_frame("COMM", b"\x00" + b"eng" + b"\x00" +
                        b"clipproxy test fixture with cover art")
    tag = id3v23_tag([
        id3v23_text("TIT2", "Cover Art Special"),
        id3v23_text("TPE1", "Tagged and Covered"),
        id3v23_text("TALB", "clipproxy fixtures"),
        id3v23_text("TYER", "2024"),
        id3v23_text("TRCK", "10"),
        comm, apic], padding=2048)
    v1 = id3v1_tag("Cover Art Special", "Tagged and Covered", "clipproxy fixtures", "2024",
                   "fixture 10", 10, 101)
    return tag + audio + v1


def wrap_id3x2_ape(audio):
    first = id3v23_tag([id3v23_text("TIT2", "First of two tags"),
                        id3v23_text("TPE1", "clipproxy")], padding=300)
    second = id3v24_tag_with_footer([
        id3v24_text("TIT2", "Zweiter Tag \u2014 \u00fcn\u00efc\u00f6d\u00e9 (ID3v2.4)"),
        id3v24_text("TDRC", "2024-05-01"),
        id3v24_text("TCON", "Speech")])
    ape = apev2_tag([("Title", "Two ID3v2 tags and an APE tag"), ("Artist", "clipproxy"),
                     ("Album", "clipproxy fixtures"), ("Year", "2024"), ("Track", "11")])
    v1 = id3v1_tag("Two ID3v2 tags and an APE tag", "clipproxy", "clipproxy fixtures", "2024",
                   "fixture 11", 11, 101)
    return first + second + audio + ape + v1


def build_fixture(fx, speech, cover, work, media):
    raw = os.path.join(work, fx["name"] + ".raw.mp3")
    encode(fx, speech, raw)
    if fx["wrap"]:
        audio = read(raw)
        data = wrap_id3(audio, cover) if fx["wrap"] == "id3" else wrap_id3x2_ape(audio)
        with open(raw, "wb") as f:
            f.write(data)
    dst = os.path.join(media, fx["name"] + ".mp3")
    publish(raw, dst)
    return dst


def describe(fx, path):
    """The fixtures.json entry, checked against the bytes actually produced."""
    b = read(path)
    start = id3v2_end(b)
    offsets, end = frame_offsets(b, start)
    if len(offsets) < 10:
        raise FixtureError("%s: could not walk its frames" % path)
    first = parse_header(b, offsets[0])
    tag = xing_tag(b, offsets[0])
    has_v1 = b[-128:-125] == b"TAG"
    ape_end = len(b) - (128 if has_v1 else 0)
    has_ape = b[ape_end - 32:ape_end - 24] == b"APETAGEX"
    audio_frames = offsets[1:] if tag else offsets
    bitrates = sorted({parse_header(b, o)["bitrate"] for o in audio_frames})
    crc = all(parse_header(b, o)["crc"] for o in audio_frames)
    want = {"version": fx["version"], "rate": fx["rate"], "channels": fx["channels"],
            "xing": fx["xing"], "crc": fx["crc"], "cbr": fx["mode"] == "cbr"}
    got = {"version": first["version"], "rate": first["rate"], "channels": first["channels"],
           "xing": tag is not None, "crc": crc, "cbr": len(bitrates) == 1}
    if want != got:
        raise FixtureError("%s: produced %r, wanted %r" % (path, got, want))
    if tag and tag != ("Info" if fx["mode"] == "cbr" else "Xing"):
        raise FixtureError("%s: %s tag in a %s file" % (path, tag, fx["mode"]))
    return {
        "name": fx["name"],
        "file": "media/%s.mp3" % fx["name"],
        "mpeg_version": fx["version"],
        "sample_rate": fx["rate"],
        "channels": fx["channels"],
        "mode": fx["mode"],
        "has_xing": tag is not None,
        "id3v2": start > 0,
        "id3v1": has_v1,
        "ape": has_ape,
        "crc": crc,
        "nominal_duration_s": fx["duration"],
        "lame_args": fx["lame_args"],
        "bitrates_kbps": [x // 1000 for x in bitrates],
        "frames": len(offsets),
        "first_frame_offset": offsets[0],
        "audio_end_offset": end,
        "size": len(b),
        "sha256": hashlib.sha256(b).hexdigest(),
    }


def build_bad_inputs(speech, work, media, m1_path):
    five = fixture("five", "1", 44100, 1, [], 5.0, 200, mode="cbr", speech_offset=2.0)
    nsamples = 5 * 44100
    for ext, codec in (("wav", ["-c:a", "pcm_s16le", "-f", "wav"]),
                       ("ogg", ["-c:a", "libvorbis", "-q:a", "3", "-f", "ogg"])):
        tmp = os.path.join(work, "not_mp3." + ext)
        run(FFMPEG_QUIET + ["-stream_loop", "-1", "-i", speech,
                            "-filter_complex", mix_graph(five, nsamples)] +
            FFMPEG_BITEXACT + codec + [tmp])
        publish(tmp, os.path.join(media, "not_mp3." + ext))

    atomic_write(os.path.join(media, "empty.mp3"), b"")
    atomic_write(os.path.join(media, "random.mp3"), random.Random(20240501).randbytes(64 * 1024))

    m1 = read(m1_path)
    atomic_write(os.path.join(media, "truncated.mp3"), m1[:10000])

    # A header that claims a 256 MB tag, then a few KB of real frames.
    offsets, _ = frame_offsets(m1, 0)
    audio = m1[offsets[1]:offsets[1 + 10]]
    atomic_write(os.path.join(media, "huge_id3.mp3"),
                 b"ID3\x03\x00\x00" + syncsafe((1 << 28) - 1) + audio)

    # Garbage with fake sync words between frames at three places.
    rng = random.Random(77)
    fakes = [b"\xff\xfb\x90\x64", b"\xff\xf3\x48\xc4", b"\xff\xe3\x18\xc4", b"\xff\xff\xff",
             b"\xff\xfa", b"\xff\xe0\x00\x00"]
    out = bytearray()
    cuts = [50, len(offsets) // 2, len(offsets) - 20]
    prev = 0
    for n, cut in enumerate(cuts):
        out += m1[prev:offsets[cut]]
        junk = bytearray(rng.randbytes(150 + 70 * n))
        for i, fake in enumerate(fakes):
            at = 10 + i * 23 + n
            junk[at:at + len(fake)] = fake
        out += junk
        prev = offsets[cut]
    out += m1[prev:]
    atomic_write(os.path.join(media, "garbage_between.mp3"), bytes(out))


# --------------------------------------------------------------------------------------
# Catalog and source bucket
# --------------------------------------------------------------------------------------

def oid_for(*parts):
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:24]


def build_catalog(out, described, cover):
    catalog = os.path.join(out, "catalog")
    source = os.path.join(out, "source")
    for d in (catalog, source):
        if os.path.isdir(d):
            shutil.rmtree(d)
    sentences = [s.strip() + "." for _, _, _, text in SPEECH for s in text.split(". ") if s]
    episodes = [e for e in EPISODES] + ([HOUR_EPISODE] if HOUR["name"] in described else [])
    meta_lines, chunk_lines, manifest = [], [], []
    for ep in episodes:
        fx = ep["fixture"]
        desc = described.get(fx)
        if fx is not None and desc is None:
            continue
        duration_s = desc["nominal_duration_s"] if desc else 60.0
        duration_ms = int(round(duration_s * 1000))
        meta_lines.append({
            "_id": {"$oid": ep["oid"]}, "guid": ep["guid"], "podcast_name": ep["podcast"],
            "episode_title": ep["title"], "published_date": {"$date": ep["date"]},
            "duration_ms": duration_ms})
        step = 15.0 if duration_s < 600 else 600.0
        t, idx = 0.0, 0
        while t < duration_s:
            end = min(duration_s, t + step)
            chunk_lines.append({
                "_id": {"$oid": oid_for(ep["guid"], str(idx))}, "episode_id": ep["guid"],
                "feed_slug": ep["feed"], "chunk_index": idx, "start_time": t,
                "end_time": end, "text": sentences[(idx + len(manifest)) % len(sentences)]})
            t, idx = end, idx + 1
        key = None
        if desc:
            key = "%s/%s/audio/%s_%s_audio.mp3" % (ep["feed"], ep["guid"], ep["stem"],
                                                   ep["guid"][:8])
            link_or_copy(os.path.join(out, desc["file"]), os.path.join(source, key))
            if ep.get("decoys"):
                folder = os.path.join(source, ep["feed"], ep["guid"], "audio")
                atomic_write(os.path.join(folder, "cover.jpg"), cover)
                atomic_write(os.path.join(folder, "notes_audio.txt"),
                             b"Show notes: not the audio you are looking for.\n")
                # Ends in _audio.mp3, but with the wrong 8 characters before it.
                link_or_copy(os.path.join(out, "media", "m25_11k_mono_cbr16.mp3"),
                             os.path.join(folder, "trailer_00000000_audio.mp3"))
        manifest.append({"_id": ep["oid"], "guid": ep["guid"], "feed_slug": ep["feed"],
                         "fixture": fx, "source_key": key, "duration_ms": duration_ms})

    def lines(docs):
        return "".join(json.dumps(d, separators=(",", ":"), ensure_ascii=False) + "\n"
                       for d in docs).encode("utf-8")

    atomic_write(os.path.join(catalog, "episode_metadata.json"), lines(meta_lines))
    atomic_write(os.path.join(catalog, "transcript_chunks_768d.json"), lines(chunk_lines))
    atomic_write(os.path.join(out, "episodes.json"), json_bytes(manifest))
    return manifest


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def script_hash(versions):
    h = hashlib.sha256(read(SCRIPT_PATH))
    h.update(json.dumps(versions, sort_keys=True).encode())
    return h.hexdigest()


def load_stamp(path):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def stamp_files_ok(out, stamp):
    for rel, size in stamp.get("files", {}).items():
        try:
            if os.path.getsize(os.path.join(out, rel)) != size:
                return False
        except OSError:
            return False
    return True


def list_files(out):
    files = {}
    for root, dirs, names in os.walk(out):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            if n.startswith("."):
                continue
            p = os.path.join(root, n)
            files[os.path.relpath(p, out)] = os.path.getsize(p)
    return files


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    ap.add_argument("--hour", action="store_true",
                    help="also build the one-hour fixture (or set FIXTURES_HOUR=1)")
    args = ap.parse_args(argv)
    want_hour = args.hour or os.environ.get("FIXTURES_HOUR", "") not in ("", "0")
    out = os.path.abspath(args.out)

    versions = check_tools()
    digest = script_hash(versions)
    stamp_path = os.path.join(out, STAMP_NAME)
    stamp = load_stamp(stamp_path)
    same = bool(stamp) and stamp.get("hash") == digest and stamp_files_ok(out, stamp)
    if same and (stamp.get("hour") or not want_hour):
        print("fixtures up to date in %s" % out)
        return 0

    t_start = time.monotonic()
    os.makedirs(out, exist_ok=True)
    if os.path.exists(stamp_path):
        os.unlink(stamp_path)
    reuse_base = same  # only the hour fixture is missing
    if not reuse_base:
        for d in OWNED_DIRS:
            if os.path.isdir(os.path.join(out, d)):
                shutil.rmtree(os.path.join(out, d))
        for f in OWNED_FILES:
            if os.path.exists(os.path.join(out, f)):
                os.unlink(os.path.join(out, f))
    work = os.path.join(out, WORK_NAME)
    if os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work)
    media = os.path.join(out, "media")
    os.makedirs(media, exist_ok=True)

    speech = make_speech(work)
    cover = cover_jpeg(work)
    todo = [] if reuse_base else list(FIXTURES)
    if want_hour:
        todo.append(HOUR)
    hour_seconds = None
    jobs = max(1, min(4, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {}
        # Start the long one first so the short ones fill the other workers meanwhile.
        for fx in sorted(todo, key=lambda f: -f["duration"]):
            started = time.monotonic()
            fut = pool.submit(build_fixture, fx, speech, cover, work, media)
            futures[fut] = (fx, started)
        for fut in concurrent.futures.as_completed(futures):
            fx, started = futures[fut]
            fut.result()
            if fx is HOUR:
                hour_seconds = time.monotonic() - started
    if not reuse_base:
        build_bad_inputs(speech, work, media, os.path.join(media, FIXTURES[0]["name"] + ".mp3"))

    described = {}
    for fx in FIXTURES + [HOUR]:
        path = os.path.join(media, fx["name"] + ".mp3")
        if os.path.exists(path):
            described[fx["name"]] = describe(fx, path)
    atomic_write(os.path.join(out, "fixtures.json"), json_bytes({
        "fixtures": list(described.values()),
        "bad_inputs": BAD_INPUTS,
        "bad_input_files": ["media/" + n for n in BAD_INPUTS],
        "tools": versions,
    }))
    manifest = build_catalog(out, described, cover)
    shutil.rmtree(work)

    files = list_files(out)
    has_hour = HOUR["name"] in described
    atomic_write(stamp_path, json_bytes({"hash": digest, "hour": has_hour, "files": files}))

    seen, total = set(), 0
    for rel in files:  # count hard-linked copies (source/ and media/) once
        st = os.stat(os.path.join(out, rel))
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    print("generated %d fixtures, %d bad inputs, %d episodes in %s (%d files, %.1f MB) in %.1f s"
          % (len(described), len(BAD_INPUTS), len(manifest), out, len(files), total / 1e6,
             time.monotonic() - t_start))
    if hour_seconds is not None:
        print("hour fixture: %.1f s to generate" % hour_seconds)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FixtureError as e:
        print("make_fixtures.py: error: %s" % e, file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("make_fixtures.py: interrupted", file=sys.stderr)
        sys.exit(130)
