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

# The rows in display order. The QEMU rows first; every flashtrack row is compared with the
# QEMU of its kind: buffered rows with qemu (cache.direct=off), O_DIRECT rows with qemu-direct
# (cache.direct=on).
QEMUS = ("qemu", "qemu-direct")
ORDER = ["qemu", "qemu-direct", "uring", "sync", "udirect", "direct", "dscli-uring", "dscli-sync"]
PEER = {
    "uring": "qemu",
    "sync": "qemu",
    "dscli-uring": "qemu",
    "dscli-sync": "qemu",
    "udirect": "qemu-direct",
    "direct": "qemu-direct",
}
# Which rows each target is judged on.
RESYNC_PAIRS = {"buffered": ("qemu", ["uring", "sync"]), "odirect": ("qemu-direct", ["udirect"])}
LIMIT_MAIN, LIMIT_SECONDARY = "udirect", "direct"
COST_ROWS = ["uring", "sync", "udirect"]


def spread(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "values": xs}


def med(s):
    return s["median"] if s else None


def main():
    raw_path, meta, out_json, out_md = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    rows = [json.loads(line) for line in open(raw_path) if line.strip()]
    by = defaultdict(dict)  # (case, impl) -> round -> row
    for r in rows:
        by[(r["case"], r["impl"])][r["round"]] = r
    rounds = sorted({r["round"] for r in rows})
    fractions = meta["fractions"]
    cases = ["full"] + [f"resync{f}" for f in fractions]
    rank = {i: n for n, i in enumerate(ORDER)}
    impls = sorted({i for (c, i) in by if c in cases}, key=lambda i: (rank.get(i, len(ORDER)), i))
    ours = [i for i in impls if i not in QEMUS]
    peer = {i: PEER.get(i, "qemu") for i in ours}

    def rec(case, impl, rnd):
        return by.get((case, impl), {}).get(rnd)

    def secs(case, impl, rnd):
        r = rec(case, impl, rnd)
        return r["secs"] if r else None

    def tps(case, impl, rnd):
        r = rec(case, impl, rnd)
        return r["tracks"] / r["secs"] if r else None

    result = {
        "meta": meta,
        "rounds": rounds,
        "compared_with": peer,
        "cases": {},
        "ratios_vs_qemu": {},
        "fio": {},
        "targets": {},
    }

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

    # throughput ratio ours / our row's QEMU per round (same tracks, so QEMU secs / our secs)
    for c in cases:
        result["ratios_vs_qemu"][c] = {}
        for i in ours:
            per = []
            for r in rounds:
                a, b = tps(c, i, r), tps(c, peer[i], r)
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

    # the control request's own latency (FlashCreate / FlashResync reply, before the copy
    # finishes): the fixed, durable part of mkflash / resyncflash
    request = {}
    for c in cases:
        request[c] = {}
        for i in ours:
            rs = [rec(c, i, r) for r in rounds]
            rs = [r for r in rs if r and "request_secs" in r]
            if rs:
                request[c][i] = {
                    "secs": spread([r["request_secs"] for r in rs]),
                    "share_of_copy_time": spread([r["request_secs"] / r["secs"] for r in rs]),
                }
    result["request_secs"] = request

    # ---- targets
    t = result["targets"]
    t["resync_vs_qemu"] = {
        "target": f">= {TARGET_RESYNC_VS_QEMU}x the throughput of QEMU's incremental backup of the same kind "
        "(median of per-round ratios), judged on both pairs",
    }
    for kind, (q, judged) in RESYNC_PAIRS.items():
        judged = [i for i in judged if i in ours]
        medians = {f"{i} {f:.0%}": med(result["ratios_vs_qemu"][f"resync{f}"][i]) for f in fractions for i in judged}
        vals = [v for v in medians.values() if v is not None]
        t["resync_vs_qemu"][kind] = {
            "compared_with": q,
            "rows": judged,
            "medians": medians,
            "measured": bool(vals),
            "pass": bool(vals) and all(v >= TARGET_RESYNC_VS_QEMU for v in vals),
        }
    t["resync_vs_qemu"]["pass"] = all(t["resync_vs_qemu"][k]["pass"] for k in RESYNC_PAIRS)

    def limit_fractions(i):
        return {c: vs_limit[c][i]["median"] for c in cases if vs_limit[c].get(i)}

    main_fr = limit_fractions(LIMIT_MAIN)
    t["odirect_vs_fio_limit"] = {
        "target": f"O_DIRECT copy >= {TARGET_FRACTION_OF_LIMIT:.0%} of the fio limit",
        "judged_on": LIMIT_MAIN,
        "odirect_measured": bool(main_fr),
        "fraction_of_limit": main_fr,
        "secondary": {
            "row": LIMIT_SECONDARY,
            "why": "device pool on a loop device (losetup --direct-io=on), not judged",
            "fraction_of_limit": limit_fractions(LIMIT_SECONDARY),
        },
        "buffered_full_copy_fraction_of_limit": {
            i: med(vs_limit["full"].get(i)) for i in RESYNC_PAIRS["buffered"][1] if i in impls
        },
        "pass": bool(main_fr) and all(v >= TARGET_FRACTION_OF_LIMIT for v in main_fr.values()),
    }
    cost_rows = [i for i in COST_ROWS if i in ours]
    t["resync1_cost"] = {
        "target": f"resync at {fractions[0]:.0%} <= {TARGET_RESYNC1_COST:.0%} of a full copy's time",
        "medians": {i: med(cost.get(i)) for i in cost_rows},
        "pass": bool(cost_rows) and all(cost.get(i) and cost[i]["median"] <= TARGET_RESYNC1_COST for i in cost_rows),
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

    def verdict(ok, measured=True):
        return f"**{'PASS' if ok else 'MISS'}**" if measured else "**MISS (not measured)**"

    L = []
    m = meta
    qc = m.get("qemu_cache", {})
    L.append(f"Command: `{m['command']}` — {len(rounds)} interleaved rounds, {m['volume_gib']} GiB volumes, "
             f"caches dropped before every timed copy: {'yes' if m['drop_caches'] else 'no'}. "
             f"QEMU rows: `qemu` {qc.get('qemu', 'cache.direct=off')}, `qemu-direct` {qc.get('qemu-direct', '?')}. "
             f"Machine: {m['nproc']} vCPUs, kernel {m['kernel']}, {m['qemu']}, {m['fio']}, flashtrack {m['git']}. "
             f"Wall time {m['wall_secs']} s.")
    L.append("")
    L.append("Rows: `uring`/`sync` flashd file-backed volumes, buffered copies (I/O backend io_uring / pread-pwrite); "
             "`udirect` the same on io_uring with `FLASHTRACK_COPY_DIRECT=1` (O_DIRECT copies); "
             "`direct` a device pool on a loop device (O_DIRECT); `dscli-*` the uring/sync sites through dscli, "
             "end to end. Each flashtrack row is compared with the QEMU of its kind: "
             + ", ".join(f"`{i}` with `{peer[i]}`" for i in ours) + ".")
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
    L.append("Throughput ratio flashtrack / QEMU of the same kind, median of per-round ratios [min–max] "
             "(>1 = flashtrack faster):")
    L.append("")
    L.append("| case | " + " | ".join(f"{i} vs {peer[i]}" for i in ours) + " |")
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
    req_rows = [i for i in ours if any(i in request[c] for c in cases)]
    if req_rows:
        L.append("Resync request latency: the durable part of resyncflash (mkflash for the full copy) before the "
                 "copy — seconds from the FlashResync/FlashCreate request to its reply, median [min–max], and "
                 "(in parentheses) its median share of the whole copy time:")
        L.append("")
        L.append("| case | " + " | ".join(req_rows) + " |")
        L.append("|---|" + "---|" * len(req_rows))
        for c in cases:
            cells = []
            for i in req_rows:
                q = request[c].get(i)
                cells.append(f"{fs(q['secs'])} ({q['share_of_copy_time']['median']:.0%})" if q else "n/a")
            L.append(f"| {label(c)} | " + " | ".join(cells) + " |")
        L.append("")
    L.append("| target | result | verdict |")
    L.append("|---|---|---|")
    tr = t["resync_vs_qemu"]
    for kind, what in (("buffered", "buffered"), ("odirect", "O_DIRECT")):
        p = tr[kind]
        L.append(f"| resync >= {TARGET_RESYNC_VS_QEMU}x QEMU, {what}: {'/'.join(p['rows']) or 'no row'} vs "
                 f"{p['compared_with']} | "
                 + (", ".join(f"{k}: {v:.2f}x" for k, v in p["medians"].items() if v is not None) or "not measured")
                 + f" | {verdict(p['pass'], p['measured'])} |")
    to = t["odirect_vs_fio_limit"]
    sec = to["secondary"]["fraction_of_limit"]
    secondary = ("; secondary, not judged: `direct` (loop-device pool) "
                 + ", ".join(f"{label(k)} {v:.0%}" for k, v in sec.items())) if sec else ""
    L.append(f"| O_DIRECT >= {TARGET_FRACTION_OF_LIMIT:.0%} of fio limit: {to['judged_on']} | "
             + (", ".join(f"{label(k)} {v:.0%}" for k, v in to["fraction_of_limit"].items()) or "not measured")
             + secondary + f" | {verdict(to['pass'], to['odirect_measured'])} |")
    tc = t["resync1_cost"]
    L.append(f"| resync {fractions[0]:.0%} <= {TARGET_RESYNC1_COST:.0%} of full: {'/'.join(tc['medians'])} | "
             + (", ".join(f"{k}: {v:.1%}" for k, v in tc["medians"].items() if v is not None) or "not measured")
             + f" | {verdict(tc['pass'], any(v is not None for v in tc['medians'].values()))} |")
    L.append("")
    with open(out_md, "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
