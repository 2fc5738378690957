#!/usr/bin/env python3
"""Helpers for scripts/bench/rflash.sh (standard library only).

flashd side: JSON lines over the site's control.sock, the requests dscli sends
(flashtrack::control, protocol v3). `resyncremoteflash` is `RemoteFlash { FlashResync }` and
`lsremoteflash` is `RemoteFlash { FlashList }`, both sent from image A's conduit LSS over the
PPRC path to image B; `resyncflash` / `lsflash` at B are `FlashResync` / `FlashList` with
image B. The timed steps send them directly, so the clock covers the engine and the link,
not dscli's start.

  rflash.py measure SOCK A B CONDUIT SRC TGT MODE POLL_MS
      MODE remote: resyncremoteflash -record -persist SRC:TGT through A's CONDUIT LSS, then
      lsremoteflash every POLL_MS until the pair shows 0 out-of-sync tracks.
      MODE local: resyncflash -record -persist SRC:TGT at B, then lsflash at B the same way.
      Meanwhile an observer (a second control connection, opened before the clock starts)
      sends FlashWait for the pair at B as soon as the command has answered: its reply marks
      the moment B's copy finished, whichever way the command came. The link counters of A's
      end (LinkList, what lslink -l shows) are read before the command and after the end.
      Prints one JSON object (times in seconds from the command's first byte):
        cmd       the command's reply            (command time)
        copied_at the observer's reply           (B's copy complete)
        bounded   the observer answered at once (<1 ms): the copy was done before the command
                  answered, copied_at is then an upper bound
        e2e       the first poll that saw 0      (end to end)
        polls     polls sent (the last one saw 0); poll_ms_sum = their own durations
        last_poll_ms  the duration of the poll that saw 0
        copied    tracks B copied in this increment (FlashView.copied)
        tx/rx/msgs_out/msgs_in  the link's bytes and messages at A's end over the whole step
  rflash.py wait-remote SOCK A B CONDUIT SRC TGT TIMEOUT_S
      lsremoteflash every 50 ms until SRC:TGT shows 0 out of sync (the initial copy).
  rflash.py report RAW META OUT_JSON OUT_MD
      medians, differences and verdicts from the raw records.
"""
import json
import socket
import statistics
import sys
import threading
import time

import ctl  # noqa: E402 (scripts/bench/ctl.py: the control socket)



def die(msg):
    print(f"rflash.py: {msg}", file=sys.stderr)
    sys.exit(1)


class Control(ctl.StrictControl):
    prog = "rflash.py"


def options():
    return {"record": True, "persist": True, "nocopy": False, "tgtinhibit": False, "freeze": False,
            "tgtpprc": False, "tgtoffline": False, "tgtse": False, "seqnum": 0}


def vol(s):
    return int(s, 16)


def remote(a, conduit, req):
    return {"RemoteFlash": {"image": a, "conduit": conduit, "srcss": None, "request": req}}


def view_of(reply, pair):
    for v in reply.get("Flash", []):
        if [v["record"]["source"], v["record"]["target"]] == pair:
            return v
    die(f"pair {pair[0]:04X}:{pair[1]:04X} missing from {reply}")


def check_items(reply, what):
    for item in reply.get("Items", []):
        if "Err" in item["result"]:
            die(f"{what} {item['object']}: {item['result']['Err']}")
    if "Items" not in reply:
        die(f"{what}: unexpected reply {reply}")


def link_counters(c, a):
    links = c.call({"LinkList": {"image": a}})["Links"]
    s = [l["stats"] or {} for l in links]
    return [sum(x.get(k, 0) for x in s) for k in ("tx_bytes", "rx_bytes", "tx_messages", "rx_messages")]


def measure(sock, a, b, conduit, src, tgt, mode, poll_ms):
    pair = [src, tgt]
    c = Control(sock)
    obs = Control(sock)
    resync = {"FlashResync": {"image": b, "pairs": [pair], "options": options(), "seqnum": None}}
    ls = {"FlashList": {"image": b}}
    if mode == "remote":
        resync, ls = remote(a, conduit, resync), remote(a, conduit, ls)
    before = view_of(c.call({"FlashList": {"image": b}}), pair)
    if before["out_of_sync"] != 0:
        die(f"{mode}: {before['out_of_sync']} tracks still out of sync before the resync")
    l0 = link_counters(c, a)
    seen = {}

    def observe():
        o0 = time.monotonic()
        v = obs.call({"FlashWait": {"image": b, "pairs": [pair], "timeout_ms": 600_000}})
        seen["t"] = time.monotonic()
        seen["wait"] = seen["t"] - o0
        seen["view"] = view_of(v, pair)

    t0 = time.monotonic()
    reply = c.call(resync)
    t1 = time.monotonic()
    th = threading.Thread(target=observe)
    th.start()
    check_items(reply, mode)
    polls, poll_sum, last = 0, 0.0, 0.0
    while True:
        p0 = time.monotonic()
        v = view_of(c.call(ls), pair)
        p1 = time.monotonic()
        polls += 1
        poll_sum += p1 - p0
        last = p1 - p0
        if v["out_of_sync"] == 0:
            break
        if p1 - t0 > 600:
            die(f"{mode}: still {v['out_of_sync']} out of sync after 600 s")
        time.sleep(poll_ms / 1000)
    t2 = time.monotonic()
    th.join()
    l1 = link_counters(c, a)
    d = [y - x for x, y in zip(l0, l1)]
    if seen["view"]["out_of_sync"] != 0:
        die(f"{mode}: FlashWait answered with {seen['view']['out_of_sync']} out of sync")
    print(json.dumps({"cmd": t1 - t0, "copied_at": seen["t"] - t0, "bounded": seen["wait"] < 0.001,
                      "e2e": t2 - t0, "polls": polls, "poll_ms_sum": poll_sum * 1000, "last_poll_ms": last * 1000,
                      "copied": v["copied"], "tx": d[0], "rx": d[1], "msgs_out": d[2], "msgs_in": d[3]}))


def wait_remote(sock, a, b, conduit, src, tgt, timeout):
    c = Control(sock)
    deadline = time.monotonic() + timeout
    while True:
        v = view_of(c.call(remote(a, conduit, {"FlashList": {"image": b}})), [src, tgt])
        if v["out_of_sync"] == 0:
            return
        if time.monotonic() > deadline:
            die(f"{src:04X}:{tgt:04X}: {v['out_of_sync']} tracks out of sync after {timeout} s")
        time.sleep(0.05)


def main():
    if len(sys.argv) < 2:
        die(__doc__)
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "measure":
        measure(a[0], a[1], a[2], vol(a[3]), vol(a[4]), vol(a[5]), a[6], float(a[7]))
    elif cmd == "wait-remote":
        wait_remote(a[0], a[1], a[2], vol(a[3]), vol(a[4]), vol(a[5]), float(a[6]))
    elif cmd == "report":
        report(a[0], json.loads(a[1]), a[2], a[3])
    else:
        die(f"unknown command {cmd}")


def spread(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt(s, digits=1, scale=1000.0):
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'] * scale)} [{f.format(s['min'] * scale)}–{f.format(s['max'] * scale)}]"


def others(rec):
    """vCPUs that processes other than flashd used during a measurement (python included)."""
    busy = rec["busy_cpu_s"] - rec["flashd_cpu_s"]
    return max(0.0, busy) / rec["interval_s"] if rec["interval_s"] > 0 else 0.0


def report(raw_path, meta, out_json, out_md):
    rows = [json.loads(line) for line in open(raw_path) if line.strip()]
    lats = sorted({r["lat_ms"] for r in rows})
    fracs = sorted({r["fraction"] for r in rows})
    rounds = sorted({r["round"] for r in rows})
    P = meta["poll_ms"] / 1000

    def by(lat, f, mode):
        return {r["round"]: r for r in rows if r["lat_ms"] == lat and r["fraction"] == f and r["mode"] == mode}

    res = {"meta": meta, "raw": rows, "cases": {}, "verdicts": []}
    md = ["# Remote FlashCopy benchmark (one flashd, two storage images, in-process link)", ""]
    md.append(f"Command: `{meta['command']}` — {len(rounds)} interleaved rounds, flashtrack {meta['git']}, "
              f"wall {meta['wall_secs']:.0f} s, {meta['gib']} GiB volumes, io backend {meta['io_backend']}.")
    md.append("")
    md.append(f"Machine: {meta['nproc']} vCPUs ({meta['cpu'].strip()}), {meta['mem']}, kernel {meta['kernel']}. "
              f"Load average (1 min) during the run: median {meta['load']['median']:.2f} "
              f"[{meta['load']['min']:.2f}–{meta['load']['max']:.2f}]; CPU busy {meta['cpu_busy_pct']:.0f}% of "
              f"{meta['nproc']} vCPUs over the run (ours included), steal {meta['cpu_steal_pct']:.1f}%. "
              f"Busiest other processes at the start: {meta['others']}.")
    md.append("")
    if meta.get("copy_rate", "unlimited") != "unlimited":
        md.append(f"**flashd ran with `--copy-rate {meta['copy_rate']}`** (the background copy limited to "
                  f"{meta['copy_rate']} MiB/s): a diagnosis run, not the result.")
        md.append("")
    md.append("What is timed (ms from the command's first byte on the control socket, median [min–max] over rounds; "
              "Δ = remote − local, per round, then the median):")
    md.append("")
    md.append("* **command**: `resyncremoteflash -record -persist 1100:1101` through the conduit "
              f"{meta['conduit']} (one in-band request) / `resyncflash -record -persist 1102:1103` at B, until its reply.")
    md.append("* **copy done**: B's background copy finished, seen by an observer's `FlashWait` at B sent "
              "as soon as the command answered (the same for both; independent of the polls).")
    md.append(f"* **end to end**: the first `lsremoteflash` (in band) / `lsflash` (at B) that shows 0 out-of-sync "
              f"tracks; polls start when the command answers and sleep {meta['poll_ms']} ms between them.")
    md.append("")
    md.append("Expected, with one-way latency L and poll sleep P: the command is one in-band round trip "
              "(Δ command = 2L); B starts copying when the command reaches it, L later than a local command, and "
              "copies the same tracks the same way (Δ copy done = L); the end is seen by the first poll that reads B "
              "after the copy finished — remote polls read B L after they leave and answer L later, one every P + 2L "
              "— so the remote lag from copy done to end is L to 3L + P (mean 2L + P/2) against 0 to P locally "
              "(mean P/2): Δ end to end = L + 2L = 3L on average, 2L − P to 4L + P in one round. Every poll is one "
              "in-band request, but the polls during the copy overlap it; only the command's way out and the last "
              "poll's round trip are on the critical path.")
    md.append("")

    md.append("The 0% row is the control: nothing to copy, so the commands' and polls' round trips are all there "
              "is, and every in-band request is on the critical path (Δ end to end = (1 + polls) × 2L).")
    md.append("")
    md.append("## Command and copy")
    md.append("")
    md.append("| L ms | dirty | tracks | local command | remote command | Δ command | 2L | local copy done | remote copy done | Δ copy done | L | busy vCPUs besides flashd |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for lat in lats:
        for f in fracs:
            lo, re_ = by(lat, f, "local"), by(lat, f, "remote")
            common = sorted(r for r in lo if r in re_)
            if not common:
                continue
            L = lat / 1000
            k = re_[common[0]]["k"]
            e = {"lat_ms": lat, "fraction": f, "k": k, "rounds": len(common)}
            for m, d in (("local", lo), ("remote", re_)):
                for key in ("cmd", "copied_at", "e2e"):
                    e[f"{m}_{key}"] = spread([d[r][key] for r in common])
                e[f"{m}_detect"] = spread([d[r]["e2e"] - d[r]["copied_at"] for r in common])
                e[f"{m}_polls"] = spread([d[r]["polls"] for r in common])
                e[f"{m}_bounded"] = sum(d[r]["bounded"] for r in common)
            for key in ("cmd", "copied_at", "e2e"):
                e[f"d_{key}"] = spread([re_[r][key] - lo[r][key] for r in common])
            e["d_detect"] = spread([(re_[r]["e2e"] - re_[r]["copied_at"]) - (lo[r]["e2e"] - lo[r]["copied_at"]) for r in common])
            e["inband_requests"] = spread([1 + re_[r]["polls"] for r in common])
            e["inband_ms"] = spread([re_[r]["cmd"] * 1000 + re_[r]["poll_ms_sum"] for r in common])
            e["link_bytes"] = spread([re_[r]["tx"] + re_[r]["rx"] for r in common])
            e["link_msgs"] = spread([re_[r]["msgs_out"] + re_[r]["msgs_in"] for r in common])
            e["local_link_bytes"] = max(lo[r]["tx"] + lo[r]["rx"] for r in common)
            e["link_share"] = spread([(re_[r]["tx"] + re_[r]["rx"]) / (k * 65536) for r in common]) if k else None
            e["others_vcpus"] = spread([others(x[r]) for r in common for x in (lo, re_)])
            res["cases"][f"{lat:g}ms/{f:g}"] = e
            md.append(f"| {lat:g} | {f:.0%} | {k} | {fmt(e['local_cmd'])} | {fmt(e['remote_cmd'])} | **{fmt(e['d_cmd'])}** | "
                      f"{2 * lat:g} | " + (f"{fmt(e['local_copied_at'], 0)} | {fmt(e['remote_copied_at'], 0)} | **{fmt(e['d_copied_at'])}** | "
                                           if k else "- | - | - | ") +
                      f"{lat:g} | {fmt(e['others_vcpus'], 2, 1)} |")
    md.append("")
    bounded = sum(e["local_bounded"] + e["remote_bounded"] for e in res["cases"].values() if e["k"])
    if bounded:
        md.append(f"({bounded} observations had the copy already done when the command answered: their copy-done "
                  "time is the command's reply, an upper bound.)")
        md.append("")

    md.append("## End to end, in-band round trips and link bytes")
    md.append("")
    md.append("| L ms | dirty | local end to end | remote end to end | Δ end to end | expected Δ (3L; one round 2L−P…4L+P) | "
              "lag copy done → end, local / remote | in-band requests (1 + polls) | (1 + polls) × 2L | their time ms | link bytes out + in (messages) | of the dirty bytes |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for e in res["cases"].values():
        lat = e["lat_ms"]
        lo_w, hi_w = max(0.0, 2 * lat - meta["poll_ms"]), 4 * lat + meta["poll_ms"]
        md.append(f"| {lat:g} | {e['fraction']:.0%} | {fmt(e['local_e2e'], 0)} | {fmt(e['remote_e2e'], 0)} | **{fmt(e['d_e2e'])}** | "
                  f"{(f'{3 * lat:g} ({lo_w:g}…{hi_w:g})' if e['k'] else '(1 + polls) × 2L')} | {e['local_detect']['median'] * 1000:.1f} / {e['remote_detect']['median'] * 1000:.1f} | "
                  f"{fmt(e['inband_requests'], 0, 1)} | {e['inband_requests']['median'] * 2 * lat:g} | {fmt(e['inband_ms'], 0, 1)} | "
                  f"{e['link_bytes']['median']:.0f} ({e['link_msgs']['median']:.0f}) | "
                  f"{(format(e['link_share']['max'], '.4%') + ' of ' + str(e['k'] * 65536)) if e['k'] else '-'} |")
    md.append("")
    md.append("Link bytes: `LinkList` (what `lslink -l` shows) at A's end, bytes out + in, before the remote command and "
              "after its last poll; the local resync moved "
              f"{max(e['local_link_bytes'] for e in res['cases'].values())} bytes over the link at most. The share is "
              "the largest over rounds.")
    md.append("")

    # Verdicts.
    for e in res["cases"].values():
        lat, f = e["lat_ms"], e["fraction"]
        name = f"L={lat:g} ms, {f:.0%} dirty"
        z = res["cases"].get(f"0ms/{f:g}")
        if lat > 0:
            over0 = z["d_cmd"]["median"] if z else 0.0
            tol = 0.2 * 2 * lat / 1000
            dev = e["d_cmd"]["median"] - over0 - 2 * lat / 1000
            res["verdicts"].append({"target": f"{name}: Δ command − Δ command at 0 ms = 2L = {2 * lat:g} ms (±20% = ±{tol * 1000:.1f} ms)",
                                    "measured": f"{e['d_cmd']['median'] * 1000:.2f} − {over0 * 1000:.2f} = "
                                                f"{(e['d_cmd']['median'] - over0) * 1000:.2f} ms ({dev * 1000:+.2f})",
                                    "pass": abs(dev) <= tol})
        else:
            res["verdicts"].append({"target": f"{name}: Δ command ≈ 0 (within 1 ms: the in-band hop's own cost)",
                                    "measured": f"{e['d_cmd']['median'] * 1000:+.2f} ms",
                                    "pass": abs(e["d_cmd"]["median"]) <= 0.001})
        if not e["k"]:
            # The control row copies nothing: every in-band request is on the critical path.
            if lat > 0 and z:
                n = e["inband_requests"]["median"]
                exp = n * 2 * lat / 1000
                got = e["d_e2e"]["median"] - z["d_e2e"]["median"]
                res["verdicts"].append({"target": f"{name}: Δ end to end − Δ at 0 ms = (1 + polls) × 2L = {n:g} × {2 * lat:g} ms (±20%)",
                                        "measured": f"{got * 1000:.2f} ms ({(got - exp) * 1000:+.2f})",
                                        "pass": abs(got - exp) <= 0.2 * exp})
            continue
        noise = max(0.002, 0.1 * e["local_copied_at"]["median"])
        dev = e["d_copied_at"]["median"] - lat / 1000
        res["verdicts"].append({"target": f"{name}: Δ copy done = L = {lat:g} ms (within noise: ±max(2 ms, 10% of local) = ±{noise * 1000:.1f} ms)",
                                "measured": f"{e['d_copied_at']['median'] * 1000:.1f} ms ({dev * 1000:+.1f})",
                                "pass": abs(dev) <= noise})
        lo_w, hi_w = lat / 1000, (3 * lat) / 1000 + P
        rd = e["remote_detect"]["median"]
        res["verdicts"].append({"target": f"{name}: remote lag copy done → end in [L, 3L + P] = [{lo_w * 1000:g}, {hi_w * 1000:g}] ms (+1 ms)",
                                "measured": f"{rd * 1000:.1f} ms (local {e['local_detect']['median'] * 1000:.1f})",
                                "pass": lo_w - 0.001 <= rd <= hi_w + 0.001})
        res["verdicts"].append({"target": f"{name}: link bytes during the remote resync < 1% of the dirty bytes",
                                "measured": f"{e['link_bytes']['max']:.0f} B = {e['link_share']['max']:.4%}",
                                "pass": e["link_share"]["max"] < 0.01})
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


if __name__ == "__main__":
    main()
