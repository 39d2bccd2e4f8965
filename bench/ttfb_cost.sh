#!/usr/bin/env bash
# Builds clipproxy at BASE (default: the commit before the one that made cold clips wait for the
# source before their status line) and at the working tree, both in release mode, and compares
# their misses (bench/ttfb_cost.py). Usage: bench/ttfb_cost.sh [BASE]
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-549e136}
[ -x .venv/bin/python ] || scripts/ensure-deps.sh bench
work=bench/work/base-$base
if [ ! -d "$work" ]; then
  git worktree add --detach "$work" "$base" >/dev/null
fi
echo "==> release builds: $base and the working tree"
swift build -c release --product clipproxy --package-path "$work" --scratch-path .build-base >/dev/null
swift build -c release --product clipproxy --scratch-path .build-release >/dev/null
before=$(swift build -c release --package-path "$work" --scratch-path .build-base --show-bin-path)/clipproxy
after=$(swift build -c release --scratch-path .build-release --show-bin-path)/clipproxy
.venv/bin/python bench/make_corpus.py
exec .venv/bin/python bench/ttfb_cost.py --before "$before" --after "$after" "${@:2}"
