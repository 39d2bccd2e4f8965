#!/usr/bin/env bash
# Serving benchmarks: clipproxy (release build) next to nginx and a re-creation of the old system,
# on moto (S3) and the MongoDB wire server. See bench/README.md.
# Usage: bench/serving.sh            full run: writes bench/results/<date>.json, bench/RESULTS.md, chart
#        BENCH_QUICK=1 bench/serving.sh   smoke run with small counts (writes <date>-quick.json only)
#        CLIPPROXY_BIN=/path/to/clipproxy bench/serving.sh   measure a binary built elsewhere
#        CLIPPROXY_BASELINES='[{"label": "previous main", "bin": "/path/to/clipproxy"}]' bench/serving.sh
#            also run those builds' (or settings', with "env") hits in the same rounds: what a change cost
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/ensure-deps.sh bench

# Bench-only Python packages go into the same .venv, stamped like scripts/ensure-deps.sh does.
stamp=.venv/.bench-requirements.sha256
want=$(sha256sum bench/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing bench/requirements.txt into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r bench/requirements.txt
  echo "$want" > "$stamp"
fi

if [ -z "${CLIPPROXY_BIN:-}" ]; then
  echo "==> swift build -c release --product clipproxy"
  swift build -c release --product clipproxy --scratch-path .build-release >/dev/null
  CLIPPROXY_BIN=$(swift build -c release --scratch-path .build-release --show-bin-path)/clipproxy
fi
echo "==> corpus (bench/work/corpus)"
.venv/bin/python bench/make_corpus.py
echo "==> serving scenarios"
exec .venv/bin/python bench/serving.py --clipproxy "$CLIPPROXY_BIN"
