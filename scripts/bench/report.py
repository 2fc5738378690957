#!/usr/bin/env python3
"""Summarise scripts/bench.sh's raw measurements: medians, per-round ratios with their spread
(min/max), the fio device limit and the targets. Writes one JSON file and one Markdown file.

usage: report.py RAW.jsonl META-JSON OUT.json OUT.md
"""
import json
import statistics
import sys
from collections import defaultdict

TRACK = 65536
# The targets (from the project brief); one place.
TARGET_RESYNC_VS_QEMU = 1.5  # resync throughput at least 1.5x QEMU's incremental backup
TARGET_FRACTION_OF_LIMIT = 0.90  # O_DIRECT copy at least 90% of the fio limit
TARGET_RESYNC1_COST = 0.02  # resync at 1% dirty costs at most 2% of a full copy


def spread(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "values": xs}


def main():
    raw_path, meta, out_json, out_md = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    rows = [json.loads(line) for line in open(raw_path) if line.strip()]
    by = defaultdict(dict)  # (case, impl) -> round -> row
    for r in rows:
        by[(r["case"], r["impl"])][r["round"]] = r
    rounds = sorted({r["round"] for r in rows})
    fractions = meta["fractions"]
    cases = ["full"] + [f"resync{f}" for f in fractions]
    impls = sorted({i for (c, i) in by if c in cases}, key=lambda i: (i != "qemu", i.startswith("dscli"), i))
    ours = [i for i in impls if i != "qemu"]

    def secs(case, impl, rnd):
        r = by.get((case, impl), {}).get(rnd)
        return r["secs"] if r else None

    def tps(case, impl, rnd):
        r = by.get((case, impl), {}).get(rnd)
        return r["tracks"] / r["secs"] if r else None

    result = {"meta": meta, "rounds": rounds, "cases": {}, "ratios_vs_qemu": {}, "fio": {}, "targets": {}}

    for c in cases:
        result["cases"][c] = {}
        for i in impls:
            if (c, i) not in by:
                continue
            tracks = [by[(c, i)][r]["tracks"] for r in rounds if r in by[(c, i)]]
            result["cases"][c][i] = {
                "tracks": statistics.median(tracks),
                "secs": spread([secs(c, i, r) for r in rounds]),
                "tracks_per_sec": spread([tps(c, i, r) for r in rounds]),
            }

    # throughput ratio ours/QEMU per round (same tracks, so QEMU secs / our secs)
    for c in cases:
        result["ratios_vs_qemu"][c] = {}
        for i in ours:
            per = []
            for r in rounds:
                a, b = tps(c, i, r), tps(c, "qemu", r)
                per.append(a / b if a and b else None)
            result["ratios_vs_qemu"][c][i] = spread(per)

    # fio device limit per round: 1/(1/R + 1/W) tracks/s
    R = [by.get(("fio-randread", "fio"), {}).get(r, {}).get("iops") for r in rounds]
    W = [by.get(("fio-randwrite", "fio"), {}).get(r, {}).get("iops") for r in rounds]
    lim = [1 / (1 / a + 1 / b) if a and b else None for a, b in zip(R, W)]
    result["fio"] = {"read_iops": spread(R), "write_iops": spread(W), "limit_tracks_per_sec": spread(lim)}
    limit_by_round = dict(zip(rounds, lim))

    vs_limit = {}
    for c in cases:
        vs_limit[c] = {}
        for i in impls:
            per = [
                (tps(c, i, r) / limit_by_round[r]) if tps(c, i, r) and limit_by_round.get(r) else None for r in rounds
            ]
            vs_limit[c][i] = spread(per)
    result["fraction_of_fio_limit"] = vs_limit

    small = f"resync{fractions[0]}"
    cost = {}
    for i in impls:
        per = [
            (secs(small, i, r) / secs("full", i, r)) if secs(small, i, r) and secs("full", i, r) else None
            for r in rounds
        ]
        cost[i] = spread(per)
    result["resync_small_over_full"] = cost

    # ---- targets
    t = result["targets"]
    main_impls = [i for i in ("uring", "sync") if i in ours]
    per_frac = {}
    for f in fractions:
        for i in main_impls:
            s = result["ratios_vs_qemu"][f"resync{f}"][i]
            per_frac[f"{i} {f:.0%}"] = s["median"] if s else None
    vals = [v for v in per_frac.values() if v is not None]
    t["resync_vs_qemu"] = {
        "target": f">= {TARGET_RESYNC_VS_QEMU}x QEMU incremental backup throughput (median of per-round ratios)",
        "medians": per_frac,
        "pass": bool(vals) and all(v >= TARGET_RESYNC_VS_QEMU for v in vals),
    }
    buffered = {i: vs_limit["full"][i]["median"] if vs_limit["full"].get(i) else None for i in main_impls}
    direct = {c: vs_limit[c]["direct"]["median"] for c in cases if vs_limit[c].get("direct")}
    t["odirect_vs_fio_limit"] = {
        "target": f"O_DIRECT copy >= {TARGET_FRACTION_OF_LIMIT:.0%} of the fio limit",
        "odirect_measured": bool(direct),
        "why": "measured on a device pool (loop device, --direct-io=on); file backings are buffered",
        "direct_fraction_of_limit": direct,
        "buffered_full_copy_fraction_of_limit": buffered,
        "pass": bool(direct) and all(v >= TARGET_FRACTION_OF_LIMIT for v in direct.values()),
    }
    t["resync1_cost"] = {
        "target": f"resync at {fractions[0]:.0%} <= {TARGET_RESYNC1_COST:.0%} of a full copy's time",
        "medians": {i: cost[i]["median"] if cost.get(i) else None for i in main_impls},
        "pass": all(cost.get(i) and cost[i]["median"] <= TARGET_RESYNC1_COST for i in main_impls),
    }

    with open(out_json, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")

    # ---- markdown
    def fs(s, fmt="{:.3f}"):
        if not s:
            return "n/a"
        return f"{fmt.format(s['median'])} [{fmt.format(s['min'])}–{fmt.format(s['max'])}]"

    def label(c):
        return "full copy" if c == "full" else f"resync {float(c[6:]):.0%}"

    L = []
    m = meta
    L.append(f"Command: `{m['command']}` — {len(rounds)} interleaved rounds, {m['volume_gib']} GiB volumes, "
             f"caches dropped before every timed copy: {'yes' if m['drop_caches'] else 'no'}; "
             f"QEMU cache.direct=off like our buffered file backings. Machine: {m['nproc']} vCPUs, "
             f"kernel {m['kernel']}, {m['qemu']}, {m['fio']}, flashtrack {m['git']}. Wall time {m['wall_secs']} s.")
    L.append("")
    L.append("Seconds per copy, median [min–max] over rounds; tracks are 64 KiB:")
    L.append("")
    L.append("| case | tracks | " + " | ".join(impls) + " |")
    L.append("|---|---|" + "---|" * len(impls))
    for c in cases:
        cells = [fs(result["cases"][c][i]["secs"]) if i in result["cases"][c] else "n/a" for i in impls]
        tr = next(iter(result["cases"][c].values()))["tracks"] if result["cases"][c] else "?"
        L.append(f"| {label(c)} | {tr:.0f} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Tracks per second, median [min–max]:")
    L.append("")
    L.append("| case | " + " | ".join(impls) + " |")
    L.append("|---|" + "---|" * len(impls))
    for c in cases:
        cells = [fs(result["cases"][c][i]["tracks_per_sec"], "{:.0f}") if i in result["cases"][c] else "n/a"
                 for i in impls]
        L.append(f"| {label(c)} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Throughput ratio flashtrack / QEMU, median of per-round ratios [min–max] (>1 = flashtrack faster):")
    L.append("")
    L.append("| case | " + " | ".join(ours) + " |")
    L.append("|---|" + "---|" * len(ours))
    for c in cases:
        L.append(f"| {label(c)} | " + " | ".join(fs(result["ratios_vs_qemu"][c][i], "{:.2f}") for i in ours) + " |")
    L.append("")
    fio = result["fio"]
    L.append(f"Device limit (fio, 64 KiB random, qd32, direct=1, io_uring, {m['fio_secs']} s per run): "
             f"read {fs(fio['read_iops'], '{:.0f}')} IOPS, write {fs(fio['write_iops'], '{:.0f}')} IOPS, "
             f"limit 1/(1/R+1/W) = {fs(fio['limit_tracks_per_sec'], '{:.0f}')} tracks/s.")
    L.append("")
    L.append("Copy throughput as a fraction of that limit (per round), median [min–max]:")
    L.append("")
    L.append("| case | " + " | ".join(impls) + " |")
    L.append("|---|" + "---|" * len(impls))
    for c in cases:
        L.append(f"| {label(c)} | " + " | ".join(fs(vs_limit[c][i], "{:.2f}") for i in impls) + " |")
    L.append("")
    L.append(f"Resync {fractions[0]:.0%} time / full copy time (per round), median [min–max]: "
             + ", ".join(f"{i} {fs(cost[i], '{:.3f}')}" for i in impls))
    L.append("")
    L.append("| target | result | verdict |")
    L.append("|---|---|---|")
    tr = t["resync_vs_qemu"]
    L.append(f"| resync >= {TARGET_RESYNC_VS_QEMU}x QEMU | "
             + ", ".join(f"{k}: {v:.2f}x" for k, v in tr["medians"].items() if v is not None)
             + f" | **{'PASS' if tr['pass'] else 'MISS'}** |")
    to = t["odirect_vs_fio_limit"]
    if to["odirect_measured"]:
        L.append("| O_DIRECT >= 90% of fio limit | device pool on a loop device (--direct-io=on): "
                 + ", ".join(f"{label(k)} {v:.0%}" for k, v in to["direct_fraction_of_limit"].items())
                 + f" of the limit | **{'PASS' if to['pass'] else 'MISS'}** |")
    else:
        L.append("| O_DIRECT >= 90% of fio limit | not measured (needs root and a loop device); buffered full copy: "
                 + ", ".join(f"{k} {v:.0%}" for k, v in to["buffered_full_copy_fraction_of_limit"].items() if v is not None)
                 + " of the limit | **MISS (not measurable)** |")
    tc = t["resync1_cost"]
    L.append(f"| resync {fractions[0]:.0%} <= 2% of full | "
             + ", ".join(f"{k}: {v:.1%}" for k, v in tc["medians"].items() if v is not None)
             + f" | **{'PASS' if tc['pass'] else 'MISS'}** |")
    L.append("")
    with open(out_md, "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
