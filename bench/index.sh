#!/usr/bin/env bash
# Index benchmark: insert and lookup rates of LMDB and of the clip store (release build).
# Usage: bench/index.sh     writes bench/results/index-<date>.json
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product IndexBench --scratch-path .build-release >/dev/null
bin=$(swift build -c release --scratch-path .build-release --show-bin-path)/IndexBench
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
date=$(date -u +%Y-%m-%d)
"$bin" "$work/index" | tee "bench/results/index-$date.json"
echo "wrote bench/results/index-$date.json"
