# Sourced by the bench scripts that time one clipproxy on the embedded default over the fixtures
# (catalog files, source directory), on loopback. Run from the repository root. Sets: $fixtures,
# $bin (a release build unless CLIPPROXY_BIN names a binary), $work (removed at exit), $episodes
# (the ids with source audio); defines start_server NAME (sets $server, $base, $err),
# stop_server, and ms URL (curl's time_total in ms; any status but 200 fails).
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

start_server() {  # $1: a name for the server's own cache
  local dir=$work/$1 log=$work/$1.out
  mkdir -p "$dir"
  err=$dir/err
  CLIPPROXY_HTTP_PORT=0 CLIPPROXY_CACHE_DIR=$dir/cache CLIPPROXY_SECOND_TIER_DIR=$dir/l2 CLIPPROXY_CATALOG_KIND=file \
    CLIPPROXY_CATALOG_DIR=$fixtures/catalog CLIPPROXY_SOURCE_KIND=dir CLIPPROXY_SOURCE_DIR=$fixtures/source \
    "$bin" serve >"$log" 2>"$err" &
  server=$!
  for _ in $(seq 100); do grep -q "listening on" "$log" 2>/dev/null && break; sleep 0.1; done
  base=$(grep -o 'http://[0-9.]*:[0-9]*' "$log" | head -1)
  [ -n "$base" ] || { echo "clipproxy serve did not start: $(tail -5 "$err")" >&2; exit 1; }
}
ms() { curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$1" | awk -v url="$1" '$1 != 200 { print "HTTP " $1 " for " url > "/dev/stderr"; exit 1 } { printf "%.2f\n", $2 * 1000 }'; }
