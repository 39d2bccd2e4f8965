#!/usr/bin/env bash
# Captions latency: GET /clips/<episode>/<start>.vtt next to the clip's own GET, on the embedded
# default over the fixtures (catalog files, source directory), loopback, one client at a time.
# Cold: the first request for an episode on a fresh server (resolve, index, plan; for captions the
# transcript, for the clip the cut). Warm: the same URL again, ROUNDS times (median and p90).
# Each kind gets a fresh server of its own, so the clip's cold request also pays the episode's
# resolve and index. The search endpoint is timed the same way, per query (cold: its hits' episodes
# are resolved for the first time). Usage: bench/captions.sh [ROUNDS]   (CLIPPROXY_BIN=path to skip the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
source bench/embedded_server.sh
start_ms=12345

stats() { sort -n | awk '{ v[NR] = $1 } END { p90 = int(NR * 0.9 + 0.5); if (p90 < 1) p90 = 1; printf "%8.2f %8.2f %8.2f", v[int((NR + 1) / 2)], v[p90], v[NR] }'; }

measure() {  # $1: kind name; then the paths to time, each cold once and warm $rounds times
  local kind=$1; shift
  start_server "$kind"
  : >"$work/$kind.cold"; : >"$work/$kind.warm"
  for path in "$@"; do
    ms "$base$path" >>"$work/$kind.cold"
    for _ in $(seq "$rounds"); do ms "$base$path" >>"$work/$kind.warm"; done
  done
  stop_server
}
clip_paths() { for id in "${episodes[@]}"; do echo "/clips/$id/$start_ms$1"; done; }  # $1: suffix
# Searches: a rare word, two words, the commonest word (capped at 20 hits), and no hit at all.
queries=(lanterns bit+reservoirs the qwxz)
measure captions $(clip_paths .vtt)
measure clip $(clip_paths "")
measure search "${queries[@]/#//api/v1/search?q=}"

printf '%-26s %26s   %26s\n' "" "cold, first per URL" "warm, $rounds per URL"
printf '%-26s %8s %8s %8s   %8s %8s %8s\n' "request (${#episodes[@]} episodes)" p50 p90 max p50 p90 max
for kind in captions clip search; do
  case $kind in
    captions) label="GET .../$start_ms.vtt" ;;
    clip) label="GET .../$start_ms (clip)" ;;
    search) label="GET /api/v1/search (${#queries[@]} q)" ;;
  esac
  printf '%-26s %s   %s\n' "$label" "$(stats <"$work/$kind.cold")" "$(stats <"$work/$kind.warm")"
done
echo "milliseconds, curl time_total, loopback; binary: $bin; $(nproc) cores"
