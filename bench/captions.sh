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
fixtures=$PWD/Tests/Fixtures/generated
[ -f "$fixtures/episodes.json" ] || { echo "no fixtures in $fixtures: run make fixtures" >&2; exit 1; }
bin=${CLIPPROXY_BIN:-}
if [ -z "$bin" ]; then
  swift build -c release --product clipproxy --scratch-path .build-release >/dev/null
  bin=$(swift build -c release --scratch-path .build-release --show-bin-path)/clipproxy
fi
work=$(mktemp -d); server=""
stop_server() { if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; server=""; fi; }
trap 'stop_server; rm -rf "$work"' EXIT
# Episodes with source audio (ids from the fixture manifest).
mapfile -t episodes < <(python3 -c 'import json,sys; [print(e["_id"]) for e in json.load(open(sys.argv[1])) if e["source_key"]]' "$fixtures/episodes.json")
start_ms=12345

start_server() {  # $1: a name for the server's own cache; sets $server and $base
  local dir=$work/$1 log=$work/$1.out
  mkdir -p "$dir"
  CLIPPROXY_HTTP_PORT=0 CLIPPROXY_CACHE_DIR=$dir/cache CLIPPROXY_CLIPSTORE_DIR=$dir/l2 CLIPPROXY_CATALOG_KIND=file \
    CLIPPROXY_CATALOG_DIR=$fixtures/catalog CLIPPROXY_SOURCE_KIND=dir CLIPPROXY_SOURCE_DIR=$fixtures/source \
    "$bin" serve >"$log" 2>"$dir/err" &
  server=$!
  for _ in $(seq 100); do grep -q "listening on" "$log" 2>/dev/null && break; sleep 0.1; done
  base=$(grep -o 'http://[0-9.]*:[0-9]*' "$log" | head -1)
  [ -n "$base" ] || { echo "clipproxy serve did not start: $(tail -5 "$dir/err")" >&2; exit 1; }
}
ms() { curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$1" | awk -v url="$1" '$1 != 200 { print "HTTP " $1 " for " url > "/dev/stderr"; exit 1 } { printf "%.2f\n", $2 * 1000 }'; }
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
