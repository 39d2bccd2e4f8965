#!/usr/bin/env bash
# Waveform peaks cost: GET /clips/<episode>/<start>.json next to the clip's own cold GET, on the
# embedded default over the fixtures (catalog files, source directory), loopback, one request at
# a time. Per episode with audio, each on a fresh server (so every cold column also pays the
# episode's resolve and index):
#   clip cold          GET the clip (resolve, index, cut: the fill the peaks depend on)
#   peaks, cold clip   GET .json with nothing cached (resolve, index, cut, decode)
#   peaks, stored clip GET .json once the clip is in the local store (decode only), with the
#                      server's CPU for it (utime + stime from /proc/<pid>/stat, before and after)
#   peaks, stored      GET .json again (a read from the local store)
# Usage: bench/peaks.sh   (CLIPPROXY_BIN=path to skip the release build, e.g. a debug binary)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/embedded_server.sh
start_ms=12345
ticks=$(getconf CLK_TCK)

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }  # utime + stime of the server
wait_log() { for _ in $(seq 100); do grep -q "$1" "$err" && return 0; sleep 0.05; done; echo "no '$1' in the log" >&2; exit 1; }
stats() { sort -n | awk '{ v[NR] = $1 } END { printf "%8.2f %8.2f %8.2f", v[int((NR + 1) / 2)], v[NR], v[1] }'; }

for kind in clip peaks_cold peaks_after_clip peaks_stored cpu_ms decode_ms; do : >"$work/$kind"; done
for id in "${episodes[@]}"; do
  start_server "clip-$id"
  ms "$base/clips/$id/$start_ms" >>"$work/clip"
  stop_server

  start_server "cold-$id"
  ms "$base/clips/$id/$start_ms.json" >>"$work/peaks_cold"
  stop_server

  start_server "stored-$id"
  ms "$base/clips/$id/$start_ms" >/dev/null
  wait_log "fill finished"
  sleep 0.2  # the clip's second-tier copy runs after the fill: keep it out of the CPU sample
  before=$(cpu_ticks)
  ms "$base/clips/$id/$start_ms.json" >>"$work/peaks_after_clip"
  wait_log "peaks copied to the second tier"
  after=$(cpu_ticks)
  awk -v a="$before" -v b="$after" -v t="$ticks" 'BEGIN { printf "%.1f\n", (b - a) * 1000 / t }' >>"$work/cpu_ms"
  grep -o 'peaks.decode_ms=[0-9]*' "$err" | head -1 | cut -d= -f2 >>"$work/decode_ms"
  ms "$base/clips/$id/$start_ms.json" >>"$work/peaks_stored"
  stop_server
done

printf '%-46s %8s %8s %8s\n' "${#episodes[@]} episodes, 30 s clips from $start_ms ms" p50 max min
printf '%-46s %s\n' "GET clip, cold (the fill)" "$(stats <"$work/clip")"
printf '%-46s %s\n' "GET .json, cold clip (fill + decode)" "$(stats <"$work/peaks_cold")"
printf '%-46s %s\n' "GET .json, clip already stored (decode)" "$(stats <"$work/peaks_after_clip")"
printf '%-46s %s\n' "  server CPU for it (utime+stime)" "$(stats <"$work/cpu_ms")"
printf '%-46s %s\n' "  decode alone (log peaks.decode_ms)" "$(stats <"$work/decode_ms")"
printf '%-46s %s\n' "GET .json, peaks stored (local store)" "$(stats <"$work/peaks_stored")"
echo "milliseconds (curl time_total, loopback; CPU in clock ticks of 1/$ticks s); binary: $bin; $(nproc) cores"
