#!/usr/bin/env python3
"""Helpers for scripts/bench/pprc.sh (standard library only).

flashd side: JSON lines over the site's control.sock, the requests dscli sends
(flashtrack::control). `lspprc` is the `PprcList` request and `resumepprc` is `PprcResume`;
the timed steps send them directly so the clock covers the engine, not dscli's start.

  pprc.py drain SOCK IMAGE REMOTE SRC TGT TYPE POLL_MS
      resumepprc SRC:TGT (TYPE mmir|gcp), then PprcList every POLL_MS until the pair's Out Of
      Sync Tracks is 0. Prints {"tracks": out-of-sync before, "secs": request sent -> first
      poll that saw 0, "request_secs", "polls", "phase"}.
  pprc.py state SOCK IMAGE SRC
      {"out_of_sync", "phase", "reason", "kind"} of the pair whose source (at IMAGE) is SRC.
  pprc.py until SOCK IMAGE SRC PHASE TIMEOUT_S
      poll (20 ms) until the pair is in PHASE with 0 out of sync; fails after TIMEOUT_S.
  pprc.py fio FIO_JSON LAT_LOG
      one line of JSON from a fio run: iops, and the latency (submission to completion) of
      every write from its per-I/O log: median, p99, p99.9, min, max, in microseconds.
  pprc.py report RAW META OUT_JSON OUT_MD
      medians, ratios and verdicts from the raw records.
"""
import json
import math
import socket
import statistics
import sys
import time

import ctl  # noqa: E402 (scripts/bench/ctl.py: the control socket)

KINDS = {"mmir": "MetroMirror", "gcp": "GlobalCopy"}


def die(msg):
    print(f"pprc.py: {msg}", file=sys.stderr)
    sys.exit(1)


class Control(ctl.StrictControl):
    prog = "pprc.py"

    def pair(self, image, src):
        for v in self.call({"PprcList": {"image": image}})["Pprc"]:
            r = v["record"]
            if r["role"] == "Primary" and r["local"] == src:
                return v
        die(f"no PPRC pair with source {src:04X} at {image}")


def vol(s):
    return int(s, 16)


def view_json(v):
    r = v["record"]
    return {"out_of_sync": v["out_of_sync"], "phase": r["phase"], "reason": r["reason"], "kind": r["kind"]}


def drain(sock, image, remote, src, tgt, kind, poll_ms):
    c = Control(sock)
    before = c.pair(image, src)
    spec = {"kind": KINDS[kind], "nocopy": False, "tgtread": False, "critmode": False}
    req = {"PprcResume": {"image": image, "remote": remote, "pairs": [[src, tgt]], "spec": spec}}
    t0 = time.monotonic()
    resp = c.call(req)
    t1 = time.monotonic()
    for item in resp["Items"]:
        if "Err" in item["result"]:
            die(f"resumepprc {item['object']}: {item['result']['Err']}")
    polls = 0
    while True:
        v = c.pair(image, src)
        polls += 1
        if v["out_of_sync"] == 0:
            break
        if v["record"]["phase"] == "Suspended":
            die(f"the pair suspended during the drain ({v['record']['reason']}), {v['out_of_sync']} tracks left")
        time.sleep(poll_ms / 1000)
    t2 = time.monotonic()
    print(json.dumps({"tracks": before["out_of_sync"], "secs": t2 - t0, "request_secs": t1 - t0,
                      "polls": polls, "phase": v["record"]["phase"]}))


def until(sock, image, src, phase, timeout):
    c = Control(sock)
    deadline = time.monotonic() + timeout
    while True:
        v = c.pair(image, src)
        if v["record"]["phase"] == phase and v["out_of_sync"] == 0:
            return
        if time.monotonic() > deadline:
            die(f"pair {src:04X}: still {view_json(v)} after {timeout} s (want {phase}, 0 out of sync)")
        time.sleep(0.02)


def fio(path, log):
    """fio's own percentiles come from a histogram with ~1.6% wide bins (2473.984 µs, then
    2506.752...), too coarse to see 100 µs at 5 ms; the median and p99 are therefore taken
    from the per-I/O latency log (--write_lat_log, --log_avg_msec=0: one line per write,
    latency in ns), exact. fio's histogram values are kept beside them."""
    job = json.load(open(path))["jobs"][0]["write"]
    lat = job["lat_ns"]
    pct = lat.get("percentile", {})  # present with --lat_percentiles=1
    v = sorted(int(line.split(",")[1]) for line in open(log) if line.strip())
    if not v:
        die(f"{log} is empty")
    rank = lambda q: v[max(0, math.ceil(q * len(v)) - 1)] / 1000  # nearest rank
    us = lambda ns: ns / 1000
    j0 = json.load(open(path))["jobs"][0]
    fio_cpu_s = (j0["usr_cpu"] + j0["sys_cpu"]) / 100 * j0["job_runtime"] / 1000
    print(json.dumps({"iops": job["iops"], "samples": len(v), "fio_cpu_s": round(fio_cpu_s, 3),
                      "p50_us": statistics.median(v) / 1000, "p99_us": rank(0.99), "p999_us": rank(0.999),
                      "mean_us": us(lat["mean"]), "min_us": v[0] / 1000, "max_us": v[-1] / 1000,
                      "fio_p50_us": pct.get("50.000000", 0) / 1000 or None,
                      "fio_p99_us": pct.get("99.000000", 0) / 1000 or None}))


# ---- report ---------------------------------------------------------------------------------

def spread(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def others(rec):
    """vCPUs that processes other than flashd (and fio) used during a measurement."""
    busy = rec["busy_cpu_s"] - rec["flashd_cpu_s"] - rec.get("fio_cpu_s", 0)
    return max(0.0, busy) / rec["interval_s"] if rec["interval_s"] > 0 else 0.0


def fmt(s, digits=0, scale=1.0):
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'] * scale)} [{f.format(s['min'] * scale)}–{f.format(s['max'] * scale)}]"


def report(raw_path, meta, out_json, out_md):
    rows = [json.loads(line) for line in open(raw_path) if line.strip()]
    rounds = sorted({r["round"] for r in rows})
    by = lambda test, case: {r["round"]: r for r in rows if r["test"] == test and r["case"] == case}
    res = {"meta": meta, "raw": rows, "latency": {}, "drain": {}, "resume": {}, "verdicts": []}
    md = []
    tcp = meta.get("transport") == "tcp"
    md.append(f"# PPRC benchmark ({'two flashd over loopback TCP' if tcp else 'one flashd, two storage images, in-process link'})")
    md.append("")
    md.append(f"Command: `{meta['command']}` — {len(rounds)} interleaved rounds, flashtrack {meta['git']}, "
              f"wall {meta['wall_secs']:.0f} s.")
    md.append("")
    md.append(f"Machine: {meta['nproc']} vCPUs ({meta['cpu'].strip()}), {meta['mem']}, kernel {meta['kernel']}, {meta['fio']}. "
              f"Load average (1 min) during the run: median {meta['load']['median']:.2f} "
              f"[{meta['load']['min']:.2f}–{meta['load']['max']:.2f}]; CPU busy {meta['cpu_busy_pct']:.0f}% of "
              f"{meta['nproc']} vCPUs over the run (ours included), steal {meta['cpu_steal_pct']:.1f}%. "
              f"Busiest other processes at the start: {meta['others']}.")
    md.append("")

    # 1. Metro Mirror host write latency.
    lat_cases = [c for c in ("nopair", "mm0", "mm1", "mm5") if by("latency", c)]
    if lat_cases:
        base = by("latency", "nopair")
        md.append("## 1. Host write latency, Metro Mirror")
        md.append("")
        md.append(f"fio `--ioengine=nbd --rw=randwrite --bs=4k --iodepth=1 --lat_percentiles=1`, "
                  f"{meta['lat_secs']} s per run over {meta['lat_gib']} GiB of volume 1000 (written in full first); "
                  f"`nopair` is the same volume with no pair (rmpprc), `mmL` the Metro Mirror pair 1000:1100 (path 10:11) in Full "
                  f"Duplex with `chlink -latency L` (one way, ms). Latency = submission to completion of every write "
                  f"(fio's per-I/O `lat` log), µs, median [min–max] over rounds of each run's median / p99. flashd CPU: "
                  f"its processes' CPU time (/proc/PID/stat) over the run / writes done; "
                  f""
                  f"other processes: CPU time of the whole machine (/proc/stat) minus flashd's and fio's over the run, "
                  f"in vCPUs (of {meta['nproc']}): the load other work put on the machine meanwhile.")
        md.append("")
        md.append("| case | one-way ms | IOPS | median µs | p99 µs | added vs no pair (median) µs | expected 2×one-way µs | beyond 2×one-way µs (vs mm0) | flashd CPU µs / write | other processes, vCPUs |")
        md.append("|---|---|---|---|---|---|---|---|---|---|")
        for c in lat_cases:
            d = by("latency", c)
            L = {"nopair": None, "mm0": 0, "mm1": 1, "mm5": 5}[c]
            s = {k: spread([d[r][k] for r in d]) for k in ("iops", "p50_us", "p99_us", "p999_us")}
            s["cpu_us_per_write"] = spread([d[r]["flashd_cpu_s"] * 1e6 / d[r]["samples"] for r in d])
            s["others_vcpus"] = spread([others(d[r]) for r in d])
            entry = dict(s)
            added = beyond = None
            if L is not None and base:
                common = [r for r in d if r in base]
                added = spread([d[r]["p50_us"] - base[r]["p50_us"] for r in common])
                entry["added_us"] = added
                mm0 = by("latency", "mm0")
                common0 = [r for r in d if r in mm0]
                if common0:
                    beyond = spread([d[r]["p50_us"] - mm0[r]["p50_us"] - 2000 * L for r in common0])
                    entry["beyond_rtt_us"] = beyond
                    entry["expected_us"] = 2000 * L
            res["latency"][c] = entry
            md.append(f"| {c} | {'-' if L is None else L} | {fmt(s['iops'])} | {fmt(s['p50_us'])} | {fmt(s['p99_us'])} | "
                      f"{fmt(added) if added else '-'} | {'-' if L is None else 2000 * L} | "
                      f"{fmt(beyond) if beyond and L else '-'} | {fmt(s['cpu_us_per_write'])} | {fmt(s['others_vcpus'], 2)} |")
        md.append("")
        if base and by("latency", "mm0"):
            mm0 = by("latency", "mm0")
            common = [r for r in mm0 if r in base]
            ratio = spread([mm0[r]["p50_us"] / base[r]["p50_us"] for r in common])
            ratio99 = spread([mm0[r]["p99_us"] / base[r]["p99_us"] for r in common])
            iops = spread([mm0[r]["iops"] / base[r]["iops"] for r in common])
            res["latency"]["mm0_over_nopair"] = {"p50": ratio, "p99": ratio99, "iops": iops}
            md.append(f"Metro Mirror at 0 ms over no pair, median of per-round ratios [min–max]: median latency "
                      f"**{ratio['median']:.2f}×** [{ratio['min']:.2f}–{ratio['max']:.2f}], p99 {ratio99['median']:.2f}× "
                      f"[{ratio99['min']:.2f}–{ratio99['max']:.2f}], IOPS {iops['median']:.2f}× [{iops['min']:.2f}–{iops['max']:.2f}].")
            md.append("")
        for c, L in (("mm1", 1), ("mm5", 5)):
            e = res["latency"].get(c, {})
            if "beyond_rtt_us" in e:
                b = e["beyond_rtt_us"]["median"]
                ok = abs(b) <= 0.1 * 2000 * L
                res["verdicts"].append({"target": f"MM at {L} ms one way adds ~1 RTT ({2 * L} ms) over MM at 0 ms (within 10%)",
                                        "measured": f"{b:+.0f} µs beyond {2 * L} ms ({b / (20 * L):+.1f}%)",
                                        "pass": ok})

    # 2. Global Copy drain.
    drain_cases = [c for c in ("cap100", "cap400", "uncapped") if by("drain", c)]
    if drain_cases:
        md.append("## 2. Global Copy drain rate")
        md.append("")
        md.append(f"Pair 1200:1300 (Global Copy, path 12:13, {meta['gc_gib']} GiB volume): `pausepprc`, every track rewritten over NBD "
                  f"(`flashio write --random`, so the primary's page cache holds them), `chlink -bw`, then `resumepprc` "
                  f"and `PprcList` (what `lspprc` asks) every {meta['poll_ms']} ms until Out Of Sync Tracks is 0. "
                  f"Rate = tracks × 64 KiB / (resume request → first poll at 0). Link rate = bytes the link sent "
                  f"meanwhile (frames, `lslink -l` bytes out) / the same time. flashd vCPUs busy = CPU time of flashd "
                  f"(/proc/PID/stat) / drain time; other processes = the machine's CPU time (/proc/stat) minus flashd's "
                  f"over the drain, in vCPUs (of {meta['nproc']}).")
        md.append("")
        md.append("| cap | tracks | seconds | MiB/s | of the cap | link MiB/s (framing included) | resume request ms | flashd vCPUs busy | other processes, vCPUs |")
        md.append("|---|---|---|---|---|---|---|---|---|")
        for c in drain_cases:
            d = by("drain", c)
            cap = {"cap100": 100, "cap400": 400, "uncapped": None}[c]
            mib = spread([d[r]["tracks"] * 64 / 1024 / d[r]["secs"] for r in d])
            link = spread([d[r]["tx_bytes"] / 2**20 / d[r]["secs"] for r in d])
            secs = spread([d[r]["secs"] for r in d])
            req = spread([d[r]["request_secs"] * 1000 for r in d])
            busy = spread([d[r]["flashd_cpu_s"] / d[r]["interval_s"] for r in d])
            waiting = spread([others(d[r]) for r in d])
            entry = {"mib_s": mib, "secs": secs, "link_mib_s": link, "request_ms": req, "flashd_vcpus": busy,
                     "others_vcpus": waiting, "tracks": int(statistics.median(d[r]["tracks"] for r in d))}
            frac = None
            if cap:
                frac = spread([d[r]["tracks"] * 64 / 1024 / d[r]["secs"] / cap for r in d])
                entry["of_cap"] = frac
                res["verdicts"].append({"target": f"Global Copy drain >= 90% of a {cap} MiB/s cap",
                                        "measured": f"{mib['median']:.1f} MiB/s = {frac['median']:.1%} [{frac['min']:.1%}–{frac['max']:.1%}]",
                                        "pass": frac["median"] >= 0.9})
            res["drain"][c] = entry
            md.append(f"| {cap or 'none'} | {entry['tracks']} | {fmt(secs, 3)} | {fmt(mib, 1)} | "
                      f"{fmt(frac, 1, 100) + ' %' if frac else '-'} | {fmt(link, 1)} | {fmt(req, 1)} | {fmt(busy, 2)} | {fmt(waiting, 2)} |")
        md.append("")

    # 3. Bytes on the link for a resume after an outage.
    d = by("resume", "outage")
    if d:
        md.append("## 3. Bytes on the link for a resume after an outage")
        md.append("")
        md.append(f"Pair 1400:1500 (Metro Mirror, Full Duplex), path 14:15: `chlink -outage on`, K distinct "
                  f"tracks written (`flashio dirty`; the first write suspends the pair), `chlink -outage off`, "
                  f"`lslink -l` counters, `resumepprc -type mmir`, wait for Full Duplex and 0 out of sync, "
                  f"`lslink -l` again. Payload = K × 64 KiB; overhead = (bytes out + bytes in) / payload − 1.")
        md.append("")
        md.append("| K tracks | payload bytes | bytes out | bytes in | messages out / in | overhead (out only) | overhead (out + in) |")
        md.append("|---|---|---|---|---|---|---|")
        ov = spread([(d[r]["tx"] + d[r]["rx"]) / (d[r]["k"] * 65536) - 1 for r in d])
        ovtx = spread([d[r]["tx"] / (d[r]["k"] * 65536) - 1 for r in d])
        r0 = d[sorted(d)[0]]
        res["resume"] = {"overhead": ov, "overhead_tx": ovtx, "k": r0["k"]}
        md.append(f"| {r0['k']} | {r0['k'] * 65536} | {r0['tx']} | {r0['rx']} | {r0['msgs_out']} / {r0['msgs_in']} | "
                  f"{fmt(ovtx, 3, 100)} % | {fmt(ov, 3, 100)} % |")
        md.append("")
        md.append(f"(bytes and messages of round {sorted(d)[0]}; the overheads are medians [min–max] over rounds. "
                  f"Out of sync before the resume, median: {statistics.median(d[r]['oos_before'] for r in d):.0f}.)")
        md.append("")
        res["verdicts"].append({"target": "resume after an outage: bytes on the link within 2% of K × 64 KiB",
                                "measured": f"{ov['median']:+.3%} (out + in), {ovtx['median']:+.3%} (out only)",
                                "pass": abs(ov["median"]) <= 0.02})

    if res["verdicts"]:
        md.append("## Verdicts")
        md.append("")
        md.append("| target | measured (median) | verdict |")
        md.append("|---|---|---|")
        for v in res["verdicts"]:
            md.append(f"| {v['target']} | {v['measured']} | {'PASS' if v['pass'] else '**MISS**'} |")
        md.append("")
    json.dump(res, open(out_json, "w"), indent=1)
    open(out_md, "w").write("\n".join(md) + "\n")
    print("\n".join(md))


def main():
    if len(sys.argv) < 2:
        die(__doc__)
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "drain":
        drain(a[0], a[1], a[2], vol(a[3]), vol(a[4]), a[5], float(a[6]))
    elif cmd == "state":
        print(json.dumps(view_json(Control(a[0]).pair(a[1], vol(a[2])))))
    elif cmd == "until":
        until(a[0], a[1], vol(a[2]), a[3], float(a[4]))
    elif cmd == "fio":
        fio(a[0], a[1])
    elif cmd == "report":
        report(a[0], json.loads(a[1]), a[2], a[3])
    else:
        die(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
