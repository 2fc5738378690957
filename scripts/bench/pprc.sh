#!/usr/bin/env bash
# PPRC benchmark: Metro Mirror host write latency, Global Copy drain rate against link caps,
# and the bytes a resume after an outage puts on the link. See BENCHMARKS.md "PPRC".
#
#   scripts/bench/pprc.sh [--rounds N] [--quick] [--tcp] [--only LIST] [--no-build] [--keep]
#
#   --rounds N   interleaved rounds (default 5; the order of the cases flips every round)
#   --quick      smoke run: 2 rounds, 3 s fio runs, 1024 resume tracks (numbers are not results)
#   --tcp        two flashd over loopback TCP (site B runs --link-listen) instead of one flashd
#                with two storage images (the in-process link; the same link code above the
#                byte stream)
#   --only LIST  comma-separated subset of latency,drain,resume (default: all three)
#   --no-build   use the binaries already in target/release
#   --keep       keep the scratch directory (sites, logs, fio output)
#
# Environment:
#   PPRC_BENCH_LAT_SECS=S     fio seconds per latency run (default 10; --quick 3)
#   PPRC_BENCH_LAT_GIB=N      size of the latency volume (default 1)
#   PPRC_BENCH_GC_GIB=N       the Global Copy volume, all of it rewritten before each drain
#                             (default 1: ~10 s at 100 MiB/s)
#   PPRC_BENCH_RESUME_TRACKS=K  distinct tracks written during the outage (default 4096)
#   PPRC_BENCH_POLL_MS=MS     lspprc poll interval of the drain (default 20)
#   BENCH_TMP=DIR             scratch directory parent (default /var/tmp; a disk, not tmpfs).
#                             Needs 2 x (LAT_GIB + GC_GIB + 1) GiB + 1 GiB free.
#
# What runs (storage images A = IBM.2107-75FA120 -> B = IBM.2107-75FA150; three PPRC paths,
# each on its own port pair, so each test has its own mirror link, line settings and counters):
#   1. latency  path 10:11 (I0000:I0000), pair 1000:1100 Metro Mirror. fio nbd engine, 4 KiB
#               random writes at queue depth 1 to A/1000: no pair (rmpprc), and the pair in Full
#               Duplex at chlink -latency 0, 1 and 5 ms (one way). Median and p99 latency.
#   2. drain    path 12:13 (I0001:I0001), pair 1200:1300 Global Copy. pausepprc, rewrite every
#               track (flashio write --random), chlink -bw 100 | 400 | unlimited, resumepprc,
#               poll lspprc's out-of-sync count (the control request PprcList) until 0.
#   3. resume   path 14:15 (I0002:I0002), pair 1400:1500 Metro Mirror. chlink -outage on, write
#               K distinct tracks (flashio dirty), -outage off, lslink -l counters, resumepprc,
#               wait for Full Duplex, counters again: bytes on the link vs K x 64 KiB.
# Every round runs each case of each test; the order of the latency and drain cases flips
# every round. Results: bench-results/pprc-<UTC time>/ (raw.jsonl, results.json, report.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

ROUNDS=5
QUICK=0
TCP=0
ONLY=latency,drain,resume
BUILD=1
KEEP=0
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift ;;
        --quick) QUICK=1 ;;
        --tcp) TCP=1 ;;
        --only) ONLY=$2; shift ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"; exit 0 ;;
        *) echo "pprc.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
LAT_SECS=${PPRC_BENCH_LAT_SECS:-10}
RESUME_K=${PPRC_BENCH_RESUME_TRACKS:-4096}
if [ "$QUICK" = 1 ]; then
    [[ " ${ARGS[*]} " == *" --rounds "* ]] || ROUNDS=2
    LAT_SECS=${PPRC_BENCH_LAT_SECS:-3}
    RESUME_K=${PPRC_BENCH_RESUME_TRACKS:-1024}
fi
LAT_GIB=${PPRC_BENCH_LAT_GIB:-1}
GC_GIB=${PPRC_BENCH_GC_GIB:-1}
POLL_MS=${PPRC_BENCH_POLL_MS:-20}
RESUME_GIB=1
IA=IBM.2107-75FA120
IB=IBM.2107-75FA150
want() { [[ ",$ONLY," == *",$1,"* ]]; }

log() { printf '[pprc-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for t in fio python3; do command -v $t >/dev/null 2>&1 || die "$t missing (scripts/install-deps.sh)"; done
fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd ioengine"
[ "$RESUME_K" -le $((RESUME_GIB * 16384)) ] || die "PPRC_BENCH_RESUME_TRACKS is above the $((RESUME_GIB * 16384)) tracks of the resume volume"

if [ "$BUILD" = 1 ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
BIN=$ROOT/target/release
for b in flashd dscli flashio; do [ -x "$BIN/$b" ] || die "$BIN/$b missing (build first)"; done
PY=$ROOT/scripts/bench/pprc.py

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/flashtrack-pprc-bench.XXXXXX")
HA=$W/home-a
HB=$HA
[ "$TCP" = 1 ] && HB=$W/home-b
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    if [ "$KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need=$(( (2 * (LAT_GIB + GC_GIB + RESUME_GIB) + 1) * 1024 * 1024 ))
avail=$(df -Pk "$W" | awk 'NR==2 {print $4}')
[ "$avail" -ge "$need" ] || die "$W has $((avail / 1024 / 1024)) GiB free, needs $((need / 1024 / 1024)) GiB"

# ---- load sampler: how busy the machine was ---------------------------------------------------
OTHERS=$(ps -eo pcpu=,comm= --sort=-pcpu | head -5 | awk '{printf "%s%s %s%%", (NR>1?", ":""), $2, $1}')
(while :; do echo "$(date +%s) $(cut -d' ' -f1 /proc/loadavg)" >>"$W/load.txt"; sleep 2; done) &
PIDS+=($!)
STAT0=$(head -1 /proc/stat)
T_START=$(date +%s.%N)

# ---- sites ----------------------------------------------------------------------------------------
start_flashd() { # HOME LOGNAME [ARGS...]
    local h=$1 name=$2; shift 2
    "$BIN/flashd" run --home "$h" "$@" >"$W/$name.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "$h/control.sock" ] && break; sleep 0.1; done
    [ -S "$h/control.sock" ] || die "flashd ($h) did not start: $(cat "$W/$name.out")"
}
dsa() { "$BIN/dscli" -bnr off -hmc1 "unix:$HA/control.sock" "$@"; }
dsb() { "$BIN/dscli" -bnr off -hmc1 "unix:$HB/control.sock" "$@"; }
ok() { local out; out=$("$@" 2>&1) || die "$*: $out"; }
PAIR="-dev $IA -remotedev $IB"

if [ "$TCP" = 1 ]; then
    "$BIN/flashd" image create --home "$HA" "$IA" >/dev/null
    "$BIN/flashd" image create --home "$HB" "$IB" >/dev/null
    "$BIN/flashd" key set --home "$HB" "$("$BIN/flashd" key show --home "$HA")" >/dev/null
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    start_flashd "$HB" flashd-b --link-listen "127.0.0.1:$PORT"
    WWNN_B=$(dsb lssi -fmt delim -hdr off | awk -F, -v id="$IB" '$2 == id {print $5}')
    "$BIN/flashd" peer add --home "$HA" --wwnn "$WWNN_B" --addr "127.0.0.1:$PORT" >/dev/null
    start_flashd "$HA" flashd-a
    log "two flashd: $IA in $HA, $IB in $HB listening on 127.0.0.1:$PORT (loopback TCP link)"
else
    "$BIN/flashd" image create --home "$HA" "$IA" >/dev/null
    "$BIN/flashd" image create --home "$HA" "$IB" >/dev/null
    start_flashd "$HA" flashd
    WWNN_B=$(dsa lssi -fmt delim -hdr off | awk -F, -v id="$IB" '$2 == id {print $5}')
    log "one flashd, images $IA and $IB in $HA (in-process link)"
fi
[ -n "$WWNN_B" ] || die "no WWNN for $IB"
S=$HA/nbd.sock
FLASHD_PIDS=$(cat "$HA/flashd.pid")
[ "$TCP" = 1 ] && FLASHD_PIDS="$FLASHD_PIDS $(cat "$HB/flashd.pid")"
sched() { # -> "flashd_ticks busy_ticks total_ticks": CPU time of the flashd processes (every
    # thread, exited ones included) and of the whole machine, in USER_HZ ticks
    local p t=0
    for p in $FLASHD_PIDS; do t=$((t + $(awk '{print $14 + $15}' /proc/"$p"/stat))); done
    echo "$t $(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)"
}
sched_json() { # BEFORE AFTER -> "flashd_cpu_s": ..., "busy_cpu_s": ..., "interval_s": ...
    python3 -c 'import os,sys; a, b = [list(map(int, x.split())) for x in sys.argv[1:3]]; hz = os.sysconf("SC_CLK_TCK"); n = os.cpu_count()
print(f"\"flashd_cpu_s\": {(b[0]-a[0])/hz:.3f}, \"busy_cpu_s\": {(b[1]-a[1])/hz:.3f}, \"interval_s\": {(b[2]-a[2])/hz/n:.3f}")' "$1" "$2"
}
IO_BACKEND=$(grep -o 'io backend [a-z_]*' "$HA/flashd.log" | head -1 | cut -d' ' -f3 || true)

ok dsa mkfbvol -dev "$IA" -extpool P0 -cap "$LAT_GIB" -sam standard 1000
ok dsa mkfbvol -dev "$IA" -extpool P0 -cap "$GC_GIB" -sam standard 1200
ok dsa mkfbvol -dev "$IA" -extpool P0 -cap "$RESUME_GIB" -sam standard 1400
ok dsb mkfbvol -dev "$IB" -extpool P1 -cap "$LAT_GIB" -sam standard 1100
ok dsb mkfbvol -dev "$IB" -extpool P1 -cap "$GC_GIB" -sam standard 1300
ok dsb mkfbvol -dev "$IB" -extpool P1 -cap "$RESUME_GIB" -sam standard 1500
ok dsa mkpprcpath $PAIR -remotewwnn "$WWNN_B" -srclss 10 -tgtlss 11 I0000:I0000
ok dsa mkpprcpath $PAIR -remotewwnn "$WWNN_B" -srclss 12 -tgtlss 13 I0001:I0001
ok dsa mkpprcpath $PAIR -remotewwnn "$WWNN_B" -srclss 14 -tgtlss 15 I0002:I0002
dsa lspprcpath -dev "$IA" -fmt delim -hdr off | grep -q Failed && die "a path failed: $(dsa lspprcpath -dev "$IA")"

log "writing every track of $IA/1000, 1200, 1400 (random data), then the initial copies"
for v in 1000:$LAT_GIB 1200:$GC_GIB 1400:$RESUME_GIB; do
    "$BIN/flashio" --socket "$S" write --random --seed 1 --length "${v#*:}G" "$IA/${v%:*}" >/dev/null
done
want drain && ok dsa mkpprc $PAIR -type gcp -wait 1200:1300
want resume && ok dsa mkpprc $PAIR -type mmir -wait 1400:1500

RAW=$W/raw.jsonl
: >"$RAW"
record() { # TEST CASE ROUND JSON
    python3 -c 'import json,sys; d=dict(test=sys.argv[1], case=sys.argv[2], round=int(sys.argv[3])); d.update(json.loads(sys.argv[4])); print(json.dumps(d))' \
        "$1" "$2" "$3" "$4" >>"$RAW"
    log "round $3 $1 $2: $4"
}
link_counters() { # SS:TT -> "bytes_out bytes_in msgs_out msgs_in"
    dsa lslink -dev "$IA" -l -fmt json "$1" |
        python3 -c 'import json,sys; l=json.load(sys.stdin); assert len(l)==1, l; l=l[0]; print(l["bytes out"], l["bytes in"], l["msgs out"], l["msgs in"])'
}
state() { python3 "$PY" state "$HA/control.sock" "$IA" "$1"; }
has_pair() { dsa lspprc -dev "$IA" -fmt delim -hdr off -s 2>/dev/null | grep -q "^$1:"; }

# ---- 1. Metro Mirror host write latency ------------------------------------------------------
latency_case() { # ROUND CASE
    local r=$1 c=$2 lat
    if [ "$c" = nopair ]; then
        has_pair 1000 && ok dsa rmpprc $PAIR -quiet 1000:1100
    else
        lat=${c#mm}
        if ! has_pair 1000; then
            ok dsa chlink -dev "$IA" -latency 0 10:11
            ok dsa mkpprc $PAIR -type mmir -wait 1000:1100
        fi
        python3 "$PY" until "$HA/control.sock" "$IA" 1000 FullDuplex 60
        ok dsa chlink -dev "$IA" -latency "$lat" 10:11
    fi
    local out=$W/fio-lat-$c-$r.json s0 s1
    s0=$(sched)
    fio --name=pprc-lat --ioengine=nbd --uri="nbd+unix:///$IA/1000?socket=$S" --rw=randwrite --bs=4k \
        --iodepth=1 --size="${LAT_GIB}G" --time_based --runtime="$LAT_SECS" --randrepeat=0 \
        --lat_percentiles=1 --write_lat_log="$W/lat-$c-$r" --log_avg_msec=0 \
        --output-format=json --output="$out" >/dev/null 2>&1 || die "fio failed ($out)"
    s1=$(sched)
    if [ "$c" != nopair ]; then
        local st; st=$(state 1000)
        [[ "$st" == *'"phase": "FullDuplex"'* ]] || die "pair 1000:1100 left Full Duplex during the run: $st"
    fi
    local j; j=$(python3 "$PY" fio "$out" "$W/lat-$c-$r"_lat.1.log)
    record latency "$c" "$r" "${j%\}}, $(sched_json "$s0" "$s1")}"
}

# ---- 2. Global Copy drain ---------------------------------------------------------------------
drain_case() { # ROUND CASE SEED
    local r=$1 c=$2 seed=$3 bw
    case $c in cap100) bw=100 ;; cap400) bw=400 ;; *) bw=unlimited ;; esac
    ok dsa pausepprc $PAIR 1200:1300
    "$BIN/flashio" --socket "$S" write --random --seed "$seed" --length "${GC_GIB}G" "$IA/1200" >/dev/null
    ok dsa chlink -dev "$IA" -bw "$bw" 12:13
    local before after j s0 s1
    before=$(link_counters 12:13)
    s0=$(sched)
    j=$(python3 "$PY" drain "$HA/control.sock" "$IA" "$IB" 1200 1300 gcp "$POLL_MS")
    s1=$(sched)
    after=$(link_counters 12:13)
    local tx=$(( $(echo "$after" | cut -d' ' -f1) - $(echo "$before" | cut -d' ' -f1) ))
    [ "$(dsa lspprc -dev "$IA" -l -fmt delim -hdr off 1200 | cut -d, -f5)" = 0 ] || die "lspprc does not show 0 out of sync for 1200"
    record drain "$c" "$r" "${j%\}}, \"bw\": \"$bw\", \"tx_bytes\": $tx, $(sched_json "$s0" "$s1")}"
}

# ---- 3. bytes on the link for a resume after an outage -----------------------------------------
resume_case() { # ROUND SEED
    local r=$1 seed=$2
    python3 "$PY" until "$HA/control.sock" "$IA" 1400 FullDuplex 60
    ok dsa chlink -dev "$IA" -outage on 14:15
    local frac k st oos
    frac=$(python3 -c "print($RESUME_K / ($RESUME_GIB * 16384))")
    k=$("$BIN/flashio" --socket "$S" dirty --fraction "$frac" --seed "$seed" "$IA/1400")
    st=$(state 1400)
    oos=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["out_of_sync"])' "$st")
    [[ "$st" == *'"phase": "Suspended"'* ]] || die "pair 1400:1500 did not suspend in the outage: $st"
    ok dsa chlink -dev "$IA" -outage off 14:15
    sleep 0.2
    local before after
    before=$(link_counters 14:15)
    ok dsa resumepprc $PAIR -type mmir 1400:1500
    python3 "$PY" until "$HA/control.sock" "$IA" 1400 FullDuplex 120
    sleep 0.5 # the Full Duplex notice to the secondary
    after=$(link_counters 14:15)
    python3 - "$before" "$after" "$k" "$oos" >"$W/resume.json" <<'EOF'
import json, sys
b, a = [list(map(int, x.split())) for x in sys.argv[1:3]]
d = [y - x for x, y in zip(b, a)]
print(json.dumps({"k": int(sys.argv[3]), "oos_before": int(sys.argv[4]), "tx": d[0], "rx": d[1], "msgs_out": d[2], "msgs_in": d[3]}))
EOF
    record resume outage "$r" "$(cat "$W/resume.json")"
}

for r in $(seq 1 "$ROUNDS"); do
    if want latency; then
        cases=(nopair mm0 mm1 mm5); [ $((r % 2)) = 0 ] && cases=(mm5 mm1 mm0 nopair)
        for c in "${cases[@]}"; do latency_case "$r" "$c"; done
    fi
    if want drain; then
        cases=(cap100 cap400 uncapped); [ $((r % 2)) = 0 ] && cases=(uncapped cap400 cap100)
        i=0
        for c in "${cases[@]}"; do i=$((i + 1)); drain_case "$r" "$c" $((100 + 10 * r + i)); done
    fi
    want resume && resume_case "$r" $((1000 + r))
done
T_END=$(date +%s.%N)
STAT1=$(head -1 /proc/stat)

# ---- report -------------------------------------------------------------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench-results/pprc-$STAMP
mkdir -p "$OUT"
CMD="scripts/bench/pprc.sh ${ARGS[*]}"
EXTRA=$(python3 - <<EOF
import json
print(json.dumps({
  "command": """$CMD""".strip(), "transport": "tcp" if $TCP else "in-process",
  "rounds": $ROUNDS, "quick": bool($QUICK), "lat_secs": $LAT_SECS, "lat_gib": $LAT_GIB, "gc_gib": $GC_GIB,
  "resume_tracks": $RESUME_K, "poll_ms": $POLL_MS, "io_backend": "$IO_BACKEND",
}))
EOF
)
META=$(python3 "$ROOT/scripts/bench/machine.py" "$W/load.txt" "$STAT0" "$STAT1" "$ROOT" "$(python3 -c "print($T_END - $T_START)")" "$OTHERS" "$EXTRA")
cp "$RAW" "$OUT/raw.jsonl"
cp "$W/load.txt" "$OUT/load.txt"
python3 "$PY" report "$OUT/raw.jsonl" "$META" "$OUT/results.json" "$OUT/report.md" >/dev/null
cat "$OUT/report.md"
log "results: ${OUT#$ROOT/}/ (report.md, results.json, raw.jsonl, load.txt)"
