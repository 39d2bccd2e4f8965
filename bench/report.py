"""Publishes a serving-benchmark run: the table on stdout, bench/results/<date>.json,
bench/RESULTS.md and bench/results/chart.png. Targets are checked here, and printed met or not."""
import datetime
import json
import os
import platform
import subprocess

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(HERE)


def fmt(v, unit="", digits=1):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        v = round(v, digits)
    return f"{v}{unit}"


def two(d, a, b, digits=1):
    """"x ms / y ms" of two latencies of one result."""
    return f"{fmt(d[a], ' ms', digits)} / {fmt(d[b], ' ms', digits)}"


def targets(s):
    """(name, target text, measured text, met: True/False/None for not measured)."""
    out = []
    hits = s.get("hits")
    if hits:
        out.append(("hits: requests/s vs nginx", "≥ 0.9×", f"{hits['rps_ratio']}×", hits["rps_ratio"] >= 0.9))
        out.append(("hits: p99 vs nginx", "≤ 1.2×", f"{hits['p99_ratio']}×", hits["p99_ratio"] <= 1.2))
        if hits.get("cpu_per_hit_ratio") is not None:
            out.append(("hits: CPU per hit vs nginx", "≤ 1.5×", f"{hits['cpu_per_hit_ratio']}×", hits["cpu_per_hit_ratio"] <= 1.5))
        if hits.get("request_metrics_cpu_per_hit_ratio") is not None:
            ratio = hits["request_metrics_cpu_per_hit_ratio"]
            out.append(("hits: CPU per hit with the request metrics / without (fresh processes, median of rounds)", "≤ 1.03×", f"{ratio}×", ratio <= 1.03))
    m = s.get("misses")
    if m and m.get("speedup_total_p50"):
        out.append(("misses: whole clip, old path / clipproxy (p50)", "≥ 15×", f"{m['speedup_total_p50']}×",
                    m["speedup_total_p50"] >= 15))
        r = m["clipproxy"]["source_over_clip_max"]
        out.append(("misses: source bytes / clip bytes (worst clip)", "≤ 1.05×", f"{r}×", r is not None and r <= 1.05))
        w = m["clipproxy"].get("s3_waited_max")
        if w is not None:
            out.append(("misses: S3 requests the first byte waits on (worst miss)", "exactly 1", str(w), w == 1))
        own = m["clipproxy"].get("overhead_own_p50_ms")
        if own is not None:
            out.append(("misses: TTFB minus the source GET's own, as clipproxy timed it (p50)", "≤ 2 ms", f"{own} ms", own <= 2))
        elif m["clipproxy"].get("overhead_p50_ms") is not None:  # results from before clipproxy logged its own view
            o = m["clipproxy"]["overhead_p50_ms"]
            out.append(("misses: TTFB minus the source GET's own (p50)", "≤ 2 ms", f"{o} ms", o <= 2))
    sm = s.get("snapped_misses")
    if sm and sm.get("ttfb_p50_ratio") is not None:
        out.append(("snapped misses: TTFB p50, snapped / exact miss of the same episodes", "≤ 1.2×", f"{sm['ttfb_p50_ratio']}×",
                    sm["ttfb_p50_ratio"] <= 1.2))
        r = sm["snapped"]["source_over_clip_max"]
        out.append(("snapped misses: source bytes / clip bytes (worst snapped clip)", "≤ 1.1×", f"{r}×", r is not None and r <= 1.1))
    ml = s.get("misses_s3_latency")
    if ml and ml.get("speedup_total_p50"):
        out.append((f"misses, S3 first byte +{ml['s3_first_byte_delay_ms']} ms: old path / clipproxy (p50)", "≥ 10×",
                    f"{ml['speedup_total_p50']}×", ml["speedup_total_p50"] >= 10))
    c = s.get("coalescing")
    if c:
        out.append((f"coalescing: source reads for {c['requests']} requests", "exactly 1", str(c["source_gets"]),
                    c["source_gets"] == 1 and c["ok"] == c["requests"]))
    for name, kind in (("hour_cbr64_44k_mono", "CBR"), ("hour_vbr_v5_44k_mono", "VBR")):
        ce = s.get("cold_episodes", {}).get(name)
        if ce:
            b = ce["clipproxy"]["source_bytes"]
            out.append((f"cold 1-hour {kind} episode: bytes read for its first clip (at {ce['start_ms'] // 1000} s)", "≤ 2 MB",
                        f"{b / 1e6:.2f} MB", b <= 2_000_000 and ce["clipproxy"]["status"] == 200))
    j = s.get("json_api")
    if j:
        if j.get("available"):
            p50 = j["clipproxy"]["p50_ms"]
            out.append(("JSON API, cached clip: p50", "≤ 2 ms", f"{p50} ms", p50 is not None and p50 <= 2))
        else:
            out.append(("JSON API, cached clip: p50", "≤ 2 ms", "not available", None))
    sc = s.get("slow_clients")
    if sc:
        pk = sc["clipproxy"]["peak_mb"]
        out.append((f"{sc['clients']} slow clients: clipproxy peak memory", "≤ 150 MB", f"{pk} MB",
                    pk <= 150 and sc["clipproxy"]["ok"] == sc["clients"]))
    return out


def table_rows(s):
    """(scenario, metric, clipproxy, peer, peer name)."""
    rows = []
    h = s.get("hits")
    if h:
        c, n = h["best"]["clipproxy"], h["best"]["nginx"]
        rows += [("1 hits (wrk, 64 conns)", "requests/s", fmt(c["rps"], "", 0), fmt(n["rps"], "", 0), "nginx sendfile"),
                 ("", "p50 / p99", two(c, "p50_ms", "p99_ms", 2),
                  two(n, "p50_ms", "p99_ms", 2), ""),
                 ("", "CPU / peak memory", f"{c['cpu_pct']}% / {c['peak_mb']} MB", f"{n['cpu_pct']}% / {n['peak_mb']} MB", ""),
                 ("", "CPU ms per hit", fmt(c.get("cpu_ms_per_hit"), " ms", 4), fmt(n.get("cpu_ms_per_hit"), " ms", 4), "")]
        if c.get("fast_path_share") is not None:
            rows.append(("", "answered by the fast path", f"{100 * c['fast_path_share']:.1f}%", "", ""))
        for b in h.get("baselines", []):
            other, change = h["best"][b["label"]], b["clipproxy_change"]
            rows += [(f"1b hits, same rounds", "requests/s", fmt(c["rps"], "", 0), fmt(other["rps"], "", 0), b["label"]),
                     ("", "p99", fmt(c["p99_ms"], " ms", 2), fmt(other["p99_ms"], " ms", 2), ""),
                     ("", "CPU ms per hit", fmt(c.get("cpu_ms_per_hit"), " ms", 4), fmt(other.get("cpu_ms_per_hit"), " ms", 4), ""),
                     ("", "clipproxy against it", f"requests/s {change['rps']:+.1%}, p99 {change['p99']:+.1%}, "
                                                 f"CPU per hit {change['cpu_per_hit']:+.1%}", "", "")]
    m = s.get("misses")
    if m:
        c, o = m["clipproxy"], m["old"]
        rows += [(f"2 misses ({m['ok']} cold clips)", "TTFB p50 / p99",
                  two(c, "ttfb_p50_ms", "ttfb_p99_ms"),
                  two(o, "ttfb_p50_ms", "ttfb_p99_ms"), "old path (ffmpeg)"),
                 ("", "whole clip p50 / p99", two(c, "total_p50_ms", "total_p99_ms"),
                  two(o, "total_p50_ms", "total_p99_ms"), ""),
                 ("", "server CPU per miss", f"{c.get('cpu_ms_per_miss')} ms", f"{o.get('cpu_ms_per_miss')} ms (API + ffmpeg)", ""),
                 ("", "S3 requests waited on (worst) / our overhead p50 (GET timed by clipproxy; by the byte counter)",
                  f"{c.get('s3_waited_max')} / {fmt(c.get('overhead_own_p50_ms'), ' ms', 2)}; {fmt(c.get('overhead_p50_ms'), ' ms', 2)}", "", ""),
                 ("3 source bytes per miss", "p50 bytes (× clip)",
                  f"{c['source_bytes_per_miss_p50']:,} ({c['source_over_clip_p50']}×, worst {c['source_over_clip_max']}×)",
                  f"{o['source_bytes_per_miss_p50']:,} ({o['source_over_clip_p50']}×)", "")]
    for name, label in (("snapped_misses", "2c snapped misses"), ("snapped_misses_s3_latency", "2d snapped misses, S3 first byte +15 ms")):
        sm = s.get(name)
        if not sm:
            continue
        sn, x = sm["snapped"], sm["exact"]
        rows += [(f"{label} ({sm['ok']} episodes)", "TTFB p50 / p99", two(sn, "ttfb_p50_ms", "ttfb_p99_ms"),
                  two(x, "ttfb_p50_ms", "ttfb_p99_ms"), "exact miss, same episode"),
                 ("", "TTFB p50, snapped / exact", f"{sm.get('ttfb_p50_ratio')}×", "", ""),
                 ("", "source bytes / clip p50 (worst); source GETs (worst)",
                  f"{sn['source_over_clip_p50']}× ({sn['source_over_clip_max']}×); {sn['source_gets_max']}",
                  f"{x['source_over_clip_p50']}× ({x['source_over_clip_max']}×); {x['source_gets_max']}", "")]
    ml = s.get("misses_s3_latency")
    if ml:
        c, o = ml["clipproxy"], ml["old"]
        rows += [(f"2b misses, S3 first byte +{ml['s3_first_byte_delay_ms']} ms ({ml['ok']} cold clips)", "TTFB p50 / p99",
                  two(c, "ttfb_p50_ms", "ttfb_p99_ms"), two(o, "ttfb_p50_ms", "ttfb_p99_ms"), "old path (ffmpeg)"),
                 ("", "whole clip p50 / p99", two(c, "total_p50_ms", "total_p99_ms"), two(o, "total_p50_ms", "total_p99_ms"), ""),
                 ("", "S3 requests waited on (worst) / our overhead p50",
                  f"{c.get('s3_waited_max')} / {fmt(c.get('overhead_p50_ms'), ' ms', 2)}", "", "")]
    co = s.get("coalescing")
    if co:
        c = co["clipproxy"]
        rows += [(f"4 coalescing ({co['requests']} at once)", "source GETs / bytes",
                  f"{co['source_gets']} / {co['source_bytes']:,}",
                  f"{co['old']['source_gets']} / {co['old']['source_bytes']:,} for {co['old']['requests']} requests "
                  f"({co['old'].get('ran_ffmpeg')} ran ffmpeg)", "old path"),
                 ("", "whole clip p50 / p99 / max",
                  f"{fmt(c['total_p50_ms'], ' ms')} / {fmt(c['total_p99_ms'], ' ms')} / {fmt(c['total_max_ms'], ' ms')}",
                  f"{fmt(co['old']['total_p50_ms'], ' ms')} / – / {fmt(co['old']['total_max_ms'], ' ms')}", ""),
                 ("", "TTFB p50 / p99", two(c, "ttfb_p50_ms", "ttfb_p99_ms"), "", "")]
        cached, floor = co.get("clipproxy_cached"), co.get("nginx_cached")
        if cached and floor:
            rows += [(f"4b same {co['requests']} at once, clip stored", "whole clip p50 / max",
                      two(cached, "total_p50_ms", "total_max_ms"),
                      two(floor, "total_p50_ms", "total_max_ms"), "nginx sendfile")]
    for name, ce in s.get("cold_episodes", {}).items():
        c, o = ce["clipproxy"], ce["old"]
        rows += [(f"5 cold {name} ({ce['episode_bytes'] / 1e6:.1f} MB)", "source bytes / TTFB / whole",
                  f"{c['source_bytes'] / 1e6:.2f} MB / {fmt(c['ttfb_ms'], ' ms')} / {fmt(c['total_ms'], ' ms')}",
                  f"{o['source_bytes'] / 1e6:.2f} MB / {fmt(o['ttfb_ms'], ' ms')} / {fmt(o['total_ms'], ' ms')}", "old path")]
    j = s.get("json_api")
    if j:
        if j.get("available"):
            c, o = j["clipproxy"], j["old"]
            rows += [("6 JSON API, cached (1 conn)", "p50 / p99",
                      two(c, "p50_ms", "p99_ms", 2),
                      f"{fmt(o['p50_ms'], ' ms', 2)} / {fmt(o['p99_ms'], ' ms', 2)} (published: 156–205 ms)",
                      "old path re-created"),
                     ("", "requests/s", fmt(c["rps"], "", 0), fmt(o["rps"], "", 0), "")]
        else:
            rows += [("6 JSON API, cached", "p50 / p99", "not available", "–", j.get("detail", ""))]
    sc = s.get("slow_clients")
    if sc:
        c, n = sc["clipproxy"], sc["nginx"]
        rows += [(f"7 {sc['clients']} slow clients ({sc['seconds']} s)", "peak memory / CPU",
                  f"{c['peak_mb']} MB / {c['cpu_s']} s ({c['cpu_pct']}%)",
                  f"{n['peak_mb']} MB / {n['cpu_s']} s ({n['cpu_pct']}%)", "nginx sendfile"),
                 ("", "served / TTFB p99", f"{c['ok']} / {fmt(c['ttfb_p99_ms'], ' ms')}",
                  f"{n['ok']} / {fmt(n['ttfb_p99_ms'], ' ms')}", "")]
    return rows


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def chart(s, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    fig.suptitle("clipproxy vs its peers (same run, same machine)")

    def bars(ax, labels, values, title, ylabel, log=False, colors=("#2b7bba", "#aaaaaa")):
        vals = [v or 0 for v in values]
        b = ax.bar(labels, vals, color=colors[: len(vals)])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        for rect, v in zip(b, values):
            ax.annotate(fmt(v), (rect.get_x() + rect.get_width() / 2, rect.get_height()), ha="center", va="bottom", fontsize=9)

    h = s.get("hits")
    if h:
        bars(axes[0][0], ["clipproxy", "nginx"], [h["best"]["clipproxy"]["rps"], h["best"]["nginx"]["rps"]],
             "1 hits: requests/s (wrk, 64 connections)", "requests/s")
    m = s.get("misses")
    if m:
        bars(axes[0][1], ["clipproxy", "old path"], [m["clipproxy"]["total_p50_ms"], m["old"]["total_p50_ms"]],
             "2 misses: whole clip as the client sees it, p50 (ms)", "ms")
        ax = axes[1][0]
        labels = ["clipproxy\nmiss", "old path\nmiss"]
        values = [m["clipproxy"]["source_bytes_per_miss_p50"] / 1e6, m["old"]["source_bytes_per_miss_p50"] / 1e6]
        ce = s.get("cold_episodes", {})
        for name, short in (("hour_cbr64_44k_mono", "1 h CBR"), ("hour_vbr_v5_44k_mono", "1 h VBR")):
            if name in ce:
                labels += [f"clipproxy\ncold {short}", f"old path\ncold {short}"]
                values += [ce[name]["clipproxy"]["source_bytes"] / 1e6, ce[name]["old"]["source_bytes"] / 1e6]
        bars(ax, labels, values, "3/5 source bytes read per clip (MB, log scale)", "MB", log=True,
             colors=["#2b7bba", "#aaaaaa"] * 3)
        ax.tick_params(axis="x", labelsize=7)
    sc = s.get("slow_clients")
    if sc:
        bars(axes[1][1], ["clipproxy", "nginx"], [sc["clipproxy"]["peak_mb"], sc["nginx"]["peak_mb"]],
             f"7 {sc['clients']} slow clients: peak memory (MB)", "MB")
        axes[1][1].axhline(150, color="#cc3333", linestyle="--", linewidth=1)
        axes[1][1].annotate("target 150 MB", (0.5, 150), color="#cc3333", fontsize=8, ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def publish(results, args, rendered_from=None):
    s = results["scenarios"]
    now = datetime.datetime.now(datetime.timezone.utc)
    if rendered_from:  # keep the run's own date, commit and machine
        now = datetime.datetime.fromisoformat(rendered_from["date"])
    date = now.strftime("%Y-%m-%d")
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no", "--", "Sources", "Package.swift"],
                           capture_output=True, text=True).stdout.strip()
    machine = f"{os.cpu_count()} cores, {platform.machine()}, {platform.release()}"
    if not rendered_from:
        results.update({"date": now.isoformat(timespec="seconds"), "commit": commit + ("+local changes" if dirty else ""),
                        "machine": machine, "quick": bool(args.quick)})
    machine = results["machine"]
    tg = targets(s)
    results["targets"] = [{"target": t, "goal": g, "measured": v, "met": met} for t, g, v, met in tg]
    rows = table_rows(s)

    header = ("scenario", "metric", "clipproxy", "peer", "peer is")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(5)]
    print()
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
    print()
    for t, g, v, met in tg:
        print(f"{'MET   ' if met else ('MISSED' if met is False else 'N/A   ')}  {t}: {v} (target {g})")

    out_dir = os.path.join(HERE, "work") if args.quick else args.out  # smoke runs are not published
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, f"{date}-quick.json" if args.quick else f"{date}.json")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    print(f"wrote {os.path.relpath(json_path, REPO)}")
    if args.quick:
        print("quick mode (BENCH_QUICK=1): RESULTS.md and the chart are left as they are")
        return
    chart_path = os.path.join(args.out, "chart.png")
    chart(s, chart_path)
    notes_path = os.path.join(HERE, "results", "NOTES.md")
    notes = open(notes_path).read() if os.path.exists(notes_path) else ""
    md = [f"# Serving benchmark results",
          "",
          f"Run of `make bench` on {now.strftime('%Y-%m-%d %H:%M UTC')}, commit `{results['commit']}`, {machine}, "
          f"{results['duration_s']} s. Every peer ran in the same run on the same machine (shared with other "
          "work, so read the ratios, not the absolute numbers). Raw numbers: "
          f"[`results/{os.path.basename(json_path)}`](results/{os.path.basename(json_path)}). How each scenario "
          "is measured: [README.md](README.md).",
          "",
          "![chart](results/chart.png)",
          "",
          "## Targets",
          "",
          markdown_table(("target", "goal", "measured", "met"),
                         [(t, g, v, "**yes**" if met else ("**NO**" if met is False else "not measured")) for t, g, v, met in tg]),
          "",
          "## Table",
          "",
          markdown_table(header, rows),
          ""]
    mem = results.get("clipproxy_memory")
    if mem:
        md += ["## clipproxy's resident memory through the run (MB)", "",
               "VmHWM is the peak since the last reset (each measured scenario resets it first).", "",
               markdown_table(("after", "VmRSS", "RssAnon", "RssFile", "VmHWM"),
                              [(m["after"], m["VmRSS"], m["RssAnon"], m["RssFile"], m["VmHWM"]) for m in mem]), ""]
    maps = results.get("clipproxy_mappings")
    if maps:
        md += ["Largest resident mappings of clipproxy (MB): "
               + "; ".join(f"at {label}: " + ", ".join(f"{name} {mb}" for name, mb in rows) for label, rows in maps.items()), ""]
    if notes:
        md += [notes.strip(), ""]
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("\n".join(md))
    print("wrote bench/RESULTS.md and bench/results/chart.png")


if __name__ == "__main__":
    # Re-renders RESULTS.md and the chart from a saved full run (after editing results/NOTES.md):
    #   .venv/bin/python bench/report.py bench/results/<date>.json
    import argparse
    import sys

    saved = json.load(open(sys.argv[1]))
    publish(saved, argparse.Namespace(quick=False, out=os.path.dirname(os.path.abspath(sys.argv[1]))), rendered_from=saved)
