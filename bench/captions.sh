#!/usr/bin/env bash
# Captions latency: GET /clips/<episode>/<start>.vtt next to the clip's own GET, on the embedded
# default over the fixtures (catalog files, source directory), loopback, one client at a time.
# Cold: the first request for an episode on a fresh server (resolve, index, plan; for captions the
# transcript, for the clip the cut). Warm: the same URL again, ROUNDS times (median and p90).
# Each kind gets a fresh server of its own, so the clip's cold request also pays the episode's
# resolve and index. Usage: bench/captions.sh [ROUNDS]   (CLIPPROXY_BIN=path to skip the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
source bench/embedded_server.sh
start_ms=12345

stats() { sort -n | awk '{ v[NR] = $1 } END { p90 = int(NR * 0.9 + 0.5); if (p90 < 1) p90 = 1; printf "%8.2f %8.2f %8.2f", v[int((NR + 1) / 2)], v[p90], v[NR] }'; }

measure() {  # $1: kind name, $2: URL suffix ("" for the clip, ".vtt" for the captions)
  start_server "$1"
  : >"$work/$1.cold"; : >"$work/$1.warm"
  for id in "${episodes[@]}"; do
    ms "$base/clips/$id/$start_ms$2" >>"$work/$1.cold"
    for _ in $(seq "$rounds"); do ms "$base/clips/$id/$start_ms$2" >>"$work/$1.warm"; done
  done
  stop_server
}
measure captions .vtt
measure clip ""

printf '%-26s %26s   %26s\n' "" "cold, first per episode" "warm, $rounds per episode"
printf '%-26s %8s %8s %8s   %8s %8s %8s\n' "request (${#episodes[@]} episodes)" p50 p90 max p50 p90 max
for kind in captions clip; do
  label=$([ "$kind" = captions ] && echo "GET .../$start_ms.vtt" || echo "GET .../$start_ms (clip)")
  printf '%-26s %s   %s\n' "$label" "$(stats <"$work/$kind.cold")" "$(stats <"$work/$kind.warm")"
done
echo "milliseconds, curl time_total, loopback; binary: $bin; $(nproc) cores"
