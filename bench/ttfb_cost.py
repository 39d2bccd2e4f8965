#!/usr/bin/env python3
"""What waiting for the source before the status line costs a cold clip (issue: never break a response).

    bench/ttfb_cost.py --before BIN --after BIN [--rounds 2] [--out bench/results]

Runs the misses scenario of serving.py (same corpus, same seeded starts, same moto + MongoDB set-up)
with two clipproxy builds, alternating which goes first, and compares per miss: the time to the
status line, to the first body byte, to the first audio byte (the byte after the Info frame: what a
listener waits for) and to the whole clip. `before` sends its headers and the Info frame before the
source answers; `after` waits for the source's first bytes. Medians over the rounds' p50s.
"""
import argparse
import datetime
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import serving  # noqa: E402

FIELDS = ("head_p50_ms", "ttfb_p50_ms", "first_audio_byte_p50_ms", "total_p50_ms")


def run_misses(binary, quick):
    args = argparse.Namespace(clipproxy=binary, quick=quick, out=None)
    bench = serving.Bench(args)
    try:
        bench.setup()
        bench.warm_index()
        bench.misses()
    finally:
        bench.stop_all()
    misses = bench.results["scenarios"]["misses"]
    if misses["ok"] != misses["clips"]:
        raise SystemExit(f"{binary}: only {misses['ok']} of {misses['clips']} misses were good; see bench/work/run/logs")
    return misses["clipproxy"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="clipproxy built from the previous commit")
    ap.add_argument("--after", required=True, help="clipproxy built from this commit")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    runs = {"before": [], "after": []}
    for round_ in range(args.rounds):
        order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
        for who in order:
            serving.log(f"==> round {round_ + 1}: {who}")
            runs[who].append(run_misses(getattr(args, who), args.quick))
    summary = {who: {f: round(statistics.median(r[f] for r in rs), 2) for f in FIELDS} for who, rs in runs.items()}
    summary["cost_first_audio_byte_p50_ms"] = round(summary["after"]["first_audio_byte_p50_ms"] - summary["before"]["first_audio_byte_p50_ms"], 2)
    summary["cost_total_p50_ms"] = round(summary["after"]["total_p50_ms"] - summary["before"]["total_p50_ms"], 2)
    result = {"date": datetime.date.today().isoformat(), "rounds": args.rounds, "quick": args.quick, "summary": summary, "runs": runs}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"ttfb-cost-{result['date']}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{'ms (p50 over misses, median of rounds)':<40} {'before':>8} {'after':>8}")
    for field in FIELDS:
        print(f"{field:<40} {summary['before'][field]:>8} {summary['after'][field]:>8}")
    print(f"first audio byte costs {summary['cost_first_audio_byte_p50_ms']} ms, whole clip {summary['cost_total_p50_ms']} ms; written {path}")


if __name__ == "__main__":
    main()
