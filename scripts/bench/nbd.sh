#!/usr/bin/env bash
# NBD host-path benchmark (issue 4), standalone:
#
#  1. qemu-img bench, 64 KiB writes and reads at queue depth 32, over NBD (Unix socket)
#     against flashd and against qemu-nbd serving a raw file of the same size with the same
#     cache mode (buffered page cache, flush = fdatasync: qemu-nbd --cache=writeback). The
#     flashd volume is the source of a recording relationship (mkflash -record -persist,
#     its copy finished), so every write also sets change-recording bits. Ratio per round =
#     qemu-nbd seconds / flashd seconds (> 1: flashd is faster); target >= 1.0 both ways.
#  2. Host 4 KiB random writes at queue depth 16 (fio's nbd ioengine) to a fully written
#     source volume while its background copy runs (mkflash without -nocp), against the same
#     with no relationship. Ratio per round = IOPS during the copy / IOPS without; target
#     >= 0.5. A third run per round has a -nocp relationship (copy-on-write, no copier), to
#     tell the copy-on-write's cost from the background copier's. The copy starts 0.5 s into the fio run; the summary says how much of the run it
#     overlapped (a copy that ends early flatters the ratio).
#
# Rounds are interleaved (the order flips every round); medians of per-round ratios and the
# spread (min..max) are reported. Output: bench-results/nbd-<UTC>.json and a markdown table.
#
#   scripts/bench/nbd.sh [--rounds N] [--no-build] [--keep]
#
# Environment:
#   NBD_BENCH_GIB=N        volume size for case 1 (default 1)
#   NBD_BENCH_COPY_GIB=N   source size for case 2 (default 8, as in the issue; 2 for a quick run)
#   NBD_BENCH_FIO_SECS=N   fio run time per measurement in case 2 (default 4)
#   BENCH_TMP=DIR          scratch directory parent (default /var/tmp; a disk, not tmpfs)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

ROUNDS=5
BUILD=1
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "nbd.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
GIB=${NBD_BENCH_GIB:-1}
COPY_GIB=${NBD_BENCH_COPY_GIB:-8}
FIO_SECS=${NBD_BENCH_FIO_SECS:-4}
IMG=IBM.2107-75FA120

log() { printf '[nbd-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for t in qemu-img qemu-nbd fio python3; do command -v $t >/dev/null 2>&1 || die "$t missing (scripts/install-deps.sh)"; done
fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd ioengine"

if [ "$BUILD" = 1 ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
BIN=$ROOT/target/release
for b in flashd dscli flashio; do [ -x "$BIN/$b" ] || die "$BIN/$b missing (build first)"; done

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/flashtrack-nbd-bench.XXXXXX")
H=$W/home
PIDS=()
cleanup() {
    set +e
    if [ -f "$H/flashd.pid" ]; then
        local p; p=$(cat "$H/flashd.pid")
        kill -TERM "$p" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    fi
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 0.3
    if [ "$KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
RAW=$W/raw.jsonl
: > "$RAW"
export FLASHTRACK_HOME=$H
ds() { local out; out=$("$BIN/dscli" "$@") || die "dscli $*: $out"; }

# ---- flashd: one site, volumes 1000/1001 (case 1) and 1200/1201 (case 2) --------------------
"$BIN/flashd" image create --home "$H" "$IMG" >/dev/null
"$BIN/flashd" run --home "$H" >"$W/flashd.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$H/control.sock" ] && break; sleep 0.1; done
[ -S "$H/control.sock" ] || die "flashd did not start: $(cat "$W/flashd.out")"
ds mkfbvol -dev "$IMG" -extpool P0 -cap "$GIB" -sam standard 1000-1001
ds mkfbvol -dev "$IMG" -extpool P0 -cap "$COPY_GIB" -sam standard 1200-1201
NBD="nbd+unix:///$IMG/1000?socket=$H/nbd.sock"
log "filling $IMG/1000 ($GIB GiB) and $IMG/1200 ($COPY_GIB GiB) with random data"
"$BIN/flashio" --socket "$H/nbd.sock" write --random --seed 1 --length "${GIB}G" "$IMG/1000" >/dev/null
"$BIN/flashio" --socket "$H/nbd.sock" write --random --seed 2 --length "${COPY_GIB}G" "$IMG/1200" >/dev/null
"$BIN/dscli" mkflash -dev "$IMG" -record -persist -wait 1000:1001 >/dev/null
log "recording relationship 1000:1001 established, copy finished"

# ---- qemu-nbd on a raw file of the same size, same cache mode --------------------------------
fallocate -l "${GIB}G" "$W/q.raw"
"$BIN/flashio" --socket "$H/nbd.sock" read --length "${GIB}G" --output "$W/q.raw" "$IMG/1000" >/dev/null
qemu-nbd -f raw --cache=writeback --aio=threads -t -e 8 -k "$W/qnbd.sock" --pid-file="$W/qnbd.pid" "$W/q.raw" &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$W/qnbd.sock" ] && break; sleep 0.1; done
[ -S "$W/qnbd.sock" ] || die "qemu-nbd did not start"
QNBD="nbd+unix:///?socket=$W/qnbd.sock"
log "qemu-nbd $(qemu-nbd --version | head -1 | awk '{print $2}'): --cache=writeback --aio=threads"

COUNT=$((GIB * 16384)) # one pass over the volume in 64 KiB requests
bench() { # URI WRITE(0/1) -> seconds
    local w=(); [ "$2" = 1 ] && w=(-w)
    qemu-img bench -f raw -t writeback "${w[@]}" -c "$COUNT" -d 32 -s 64k "$1" 2>&1 |
        awk '/Run completed in/ {print $4}'
}
record() { # ROUND CASE IMPL VALUE [extra json]
    python3 -c 'import json,sys; d=dict(round=int(sys.argv[1]), case=sys.argv[2], impl=sys.argv[3], value=float(sys.argv[4])); d.update(json.loads(sys.argv[5])); print(json.dumps(d))' \
        "$1" "$2" "$3" "$4" "${5:-{\}}" >> "$RAW"
    log "round $1 $2 $3: $4 ${5:-}"
}

# ---- case 2 helpers -----------------------------------------------------------------------------
oos() { # -> out-of-sync tracks of 1200:1201 (0 once the copy ended and it was withdrawn)
    local j
    j=$(python3 "$ROOT/scripts/bench/ctl.py" state "$H/control.sock" "$IMG" 1200 1201 2>/dev/null) || { echo 0; return; }
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])["out_of_sync"])' "$j"
}
fio_iops() { # -> IOPS of 4 KiB random writes, qd 16, for FIO_SECS
    # Start from clean pages: the last run's (or the fill's) writeback would otherwise land
    # in this run, on 2 vCPUs, at random.
    sync
    fio --name=hostw --ioengine=nbd --uri="nbd+unix:///$IMG/1200?socket=$H/nbd.sock" \
        --rw=randwrite --bs=4k --iodepth=16 --size="${COPY_GIB}G" --time_based --runtime="$FIO_SECS" \
        --randrepeat=0 --output-format=json --output="$W/fio.json" >/dev/null 2>&1 || die "fio failed"
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["iops"])' "$W/fio.json"
}

for r in $(seq 1 "$ROUNDS"); do
    # Case 1: order flips every round.
    impls=(flashd qemu-nbd); [ $((r % 2)) = 0 ] && impls=(qemu-nbd flashd)
    for mode in write read; do
        w=0; [ $mode = write ] && w=1
        for impl in "${impls[@]}"; do
            uri=$NBD; [ "$impl" = qemu-nbd ] && uri=$QNBD
            s=$(bench "$uri" $w); [ -n "$s" ] || die "qemu-img bench on $impl failed"
            record "$r" "bench-$mode" "$impl" "$s"
        done
    done
    # Case 2: with and without a background copy, order flipping too; and, to tell the
    # copy-on-write's share from the background copier's, a -nocp relationship (no copier).
    cases=(nocopy copy cowonly); [ $((r % 2)) = 0 ] && cases=(cowonly copy nocopy)
    for c in "${cases[@]}"; do
        "$BIN/dscli" rmflash -dev "$IMG" -quiet 1200:1201 >/dev/null 2>&1 || true
        if [ "$c" = copy ]; then
            # fio starts first; the copy begins 0.5 s into its run, and we time how long the
            # copy keeps running (copy_secs null: it outlived the fio run).
            fio_iops > "$W/iops" &
            fpid=$!
            sleep 0.5
            ds mkflash -dev "$IMG" 1200:1201
            # One watcher process polls the copy: a python3 per poll would cost the host I/O.
            watch=$(python3 "$ROOT/scripts/bench/ctl.py" watch "$H/control.sock" "$IMG" 1200 1201 \
                "$(awk -v s="$FIO_SECS" 'BEGIN {print s - 0.5}')")
            wait "$fpid" || die "fio failed"
            record "$r" randwrite-4k copy "$(cat "$W/iops")" "${watch%\}}, \"oos_after\": $(oos)}"
        elif [ "$c" = cowonly ]; then
            ds mkflash -dev "$IMG" -nocp 1200:1201
            iops=$(fio_iops)
            record "$r" randwrite-4k cowonly "$iops"
        else
            iops=$(fio_iops)
            record "$r" randwrite-4k nocopy "$iops"
        fi
    done
    "$BIN/dscli" rmflash -dev "$IMG" -quiet 1200:1201 >/dev/null 2>&1 || true
done

mkdir -p "$ROOT/bench-results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench-results/nbd-$STAMP.json
python3 - "$RAW" "$OUT" "$GIB" "$COPY_GIB" "$FIO_SECS" "$ROUNDS" <<'EOF'
import json, statistics, sys
raw, out, gib, copy_gib, secs, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rows = [json.loads(l) for l in open(raw)]
def by(case, impl):
    return {r["round"]: r for r in rows if r["case"] == case and r["impl"] == impl}
res = {"gib": gib, "copy_gib": copy_gib, "fio_secs": secs, "rounds": rounds, "raw": rows, "summary": {}}
table = ["| case | flashd | peer | median ratio | spread | target |", "|---|---|---|---|---|---|"]
for mode in ("write", "read"):
    f, q = by("bench-" + mode, "flashd"), by("bench-" + mode, "qemu-nbd")
    ratios = [q[k]["value"] / f[k]["value"] for k in f if k in q]
    mb = lambda s: gib * 1024 / s
    med = statistics.median(ratios)
    res["summary"]["bench-" + mode] = {"median_ratio": med, "min": min(ratios), "max": max(ratios),
        "flashd_mib_s": statistics.median(mb(v["value"]) for v in f.values()),
        "qemu_nbd_mib_s": statistics.median(mb(v["value"]) for v in q.values())}
    s = res["summary"]["bench-" + mode]
    table.append(f"| qemu-img bench 64k qd32 {mode} | {s['flashd_mib_s']:.0f} MiB/s | qemu-nbd {s['qemu_nbd_mib_s']:.0f} MiB/s | {med:.2f}x | {min(ratios):.2f}..{max(ratios):.2f} | >= 1.0x {'met' if med >= 1.0 else 'MISSED'} |")
c, n = by("randwrite-4k", "copy"), by("randwrite-4k", "nocopy")
ratios = [c[k]["value"] / n[k]["value"] for k in c if k in n]
# Share of each fio run the copy overlapped (it starts 0.5 s in).
overlap = [min(1.0, (v["copy_secs"] if v["copy_secs"] is not None else secs) / secs) for v in c.values()]
med = statistics.median(ratios)
res["summary"]["randwrite-4k"] = {"median_ratio": med, "min": min(ratios), "max": max(ratios),
    "copy_iops": statistics.median(v["value"] for v in c.values()),
    "nocopy_iops": statistics.median(v["value"] for v in n.values()),
    "copy_still_running_at_end": sum(1 for v in c.values() if v["oos_after"] > 0),
    "median_overlap": statistics.median(overlap),
    "copy_mib_s": statistics.median(v.get("copy_mib_s", 0) for v in c.values())}
s = res["summary"]["randwrite-4k"]
table.append(f"| fio nbd 4k randwrite qd16, {copy_gib} GiB source, during its copy | {s['copy_iops']:.0f} IOPS | no relationship {s['nocopy_iops']:.0f} IOPS | {med:.2f} | {min(ratios):.2f}..{max(ratios):.2f} | >= 0.50 {'met' if med >= 0.5 else 'MISSED'} |")
w = by("randwrite-4k", "cowonly")
if w:
    cr = [w[k]["value"] / n[k]["value"] for k in w if k in n]
    res["summary"]["randwrite-4k-cowonly"] = {"median_ratio": statistics.median(cr), "min": min(cr), "max": max(cr),
        "cowonly_iops": statistics.median(v["value"] for v in w.values())}
    table.append(f"| the same, -nocp relationship (copy-on-write only, no copier) | {statistics.median(v['value'] for v in w.values()):.0f} IOPS | no relationship | {statistics.median(cr):.2f} | {min(cr):.2f}..{max(cr):.2f} | (shows the copier's share) |")
json.dump(res, open(out, "w"), indent=1)
print("\n".join(table))
print(f"\n{rounds} interleaved rounds; the copy overlapped a median {s['median_overlap']:.0%} of each {secs} s fio run and outlived {s['copy_still_running_at_end']}/{len(c)} of them; while the host wrote, it copied a median {s['copy_mib_s']:.0f} MiB/s (the copier yields to hosts: flash/copier.rs).")
EOF
log "results: $OUT"
