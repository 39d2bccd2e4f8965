#!/usr/bin/env bash
# Trim benchmark: clips per second cut from local files by `clipproxy trim` (release build) next to
# the old system's `ffmpeg -ss S -i SOURCE -t 30 -c copy`, on the same clips, in the same run.
# Both are timed as whole processes (start-up, probe, cut, write), the way each is invoked.
# Usage: bench/trim.sh [ROUNDS]     writes bench/results/trim-<date>.json
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
fixtures=Tests/Fixtures/generated/media
swift build -c release --product clipproxy --scratch-path .build-release >/dev/null
bin=$(swift build -c release --scratch-path .build-release --show-bin-path)/clipproxy
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# The same clips for both tools: several sources (CBR, VBR, MPEG-2, the one-hour episode) and starts.
clips=()
for f in m1_44k_stereo_cbr128 m1_32k_stereo_vbr m2_24k_stereo_vbr m1_44k_lowrate_vbr m1_44k_id3; do
  for s in 0 12345 30000; do clips+=("$fixtures/$f.mp3 $s"); done
done
for s in 60000 1800000 2700000 3500000; do clips+=("$fixtures/hour_cbr64_44k_mono.mp3 $s"); done
for clip in "${clips[@]}"; do set -- $clip; [ -f "$1" ] || { echo "missing fixture $1: run make fixtures" >&2; exit 1; }; done

run_clipproxy() { for clip in "${clips[@]}"; do set -- $clip; "$bin" trim "$1" --start-ms "$2" -o "$work/c.mp3" >/dev/null; done; }
run_ffmpeg() {
  for clip in "${clips[@]}"; do set -- $clip
    ffmpeg -nostdin -v error -y -ss "$(awk "BEGIN{print $2/1000}")" -i "$1" -t 30 -c copy "$work/f.mp3"
  done
}
seconds() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); awk "BEGIN{print $t1-$t0}"; }

best_clip=999999; best_ff=999999
for _ in $(seq "$rounds"); do   # alternate the two so machine noise hits both alike
  c=$(seconds run_clipproxy); f=$(seconds run_ffmpeg)
  best_clip=$(awk "BEGIN{print ($c<$best_clip)?$c:$best_clip}"); best_ff=$(awk "BEGIN{print ($f<$best_ff)?$f:$best_ff}")
done
n=${#clips[@]}
clip_rate=$(awk "BEGIN{printf \"%.1f\", $n/$best_clip}")
ff_rate=$(awk "BEGIN{printf \"%.1f\", $n/$best_ff}")
ratio=$(awk "BEGIN{printf \"%.2f\", $best_ff/$best_clip}")
date=$(date -u +%Y-%m-%d)
printf '%-34s %10s\n' "tool ($n clips, best of $rounds)" "clips/s"
printf '%-34s %10s\n' "clipproxy trim (release)" "$clip_rate"
printf '%-34s %10s\n' "ffmpeg -ss -i -t 30 -c copy" "$ff_rate"
printf '%-34s %10s\n' "ratio clipproxy / ffmpeg" "${ratio}x"
cat > "bench/results/trim-$date.json" <<JSON
{"benchmark": "trim", "date": "$date", "clips": $n, "rounds": $rounds,
 "clipproxy_clips_per_s": $clip_rate, "ffmpeg_copy_clips_per_s": $ff_rate, "ratio": $ratio,
 "machine": "$(nproc) cores, $(uname -m)"}
JSON
echo "wrote bench/results/trim-$date.json"
