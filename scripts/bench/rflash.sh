#!/usr/bin/env bash
# Remote FlashCopy benchmark: resyncremoteflash end to end through a conduit LSS against the
# same increment as a local resyncflash at the remote image, at mirror-link one-way latency 0
# and 5 ms. The difference should be the in-band round trips, not data. See BENCHMARKS.md
# "Remote FlashCopy".
#
#   scripts/bench/rflash.sh [--rounds N] [--quick] [--latencies LIST] [--copy-rate MIB] [--no-build] [--keep]
#
#   --rounds N        interleaved rounds (default 9; the order of the cases flips every round)
#   --quick           smoke run: 2 rounds (numbers are not results)
#   --latencies LIST  comma-separated one-way latencies in ms (default 0,5)
#   --copy-rate MIB   run flashd with --copy-rate MIB (the background copy limited to MIB MiB/s,
#                     so it leaves the 2 vCPUs room: a diagnosis, not the result)
#   --no-build        use the binaries already in target/release
#   --keep            keep the scratch directory (site, logs)
#
# Environment:
#   RFLASH_BENCH_GIB=N        volume size (default 1 = 16,384 tracks)
#   RFLASH_BENCH_FRACTIONS=L  dirty fractions (default 0,0.01,0.05,0.25; 0 = nothing to copy, the
#                             control row: the commands' round trips with no copy running)
#   RFLASH_BENCH_POLL_MS=MS   sleep between lsremoteflash / lsflash polls (default 5)
#   BENCH_TMP=DIR             scratch directory parent (default /var/tmp; a disk, not tmpfs).
#                             Needs 6 x GIB + 1 GiB free.
#
# What runs: one flashd, storage images A = IBM.2107-75FA120 (primaries) and
# B = IBM.2107-75FA150 (secondaries), one PPRC path 10:11 (I0000:I0000, so one mirror link),
# two Metro Mirror pairs A/1000 -> B/1100 and A/1001 -> B/1102, both Full Duplex, every track
# written first (random data). B/1100 -> B/1101 is made with `mkremoteflash -record -persist`
# through the conduit A/10 (its initial copy waited for with lsremoteflash); B/1102 -> B/1103
# with a local `mkflash -record -persist -wait` at B. The local twin has its own secondary
# because the engine allows one incremental relationship per source (the script checks that
# `mkflash -record -persist 1100:1103` is refused). Each round, for each latency and each
# dirty fraction f: at latency 0, `flashio dirty --fraction f` with the same seed writes the
# same random distinct tracks to A/1000 and A/1001 (mirrored to 1100 and 1102, recorded by
# their FlashCopy relationships); chlink -latency L; then, in alternating order,
#   remote  resyncremoteflash 1100:1101 through A/10, lsremoteflash until 0 out of sync;
#   local   resyncflash 1102:1103 at B, lsflash at B until 0 out of sync;
# with an observer's FlashWait at B marking when B's copy finished, and the link's lslink -l
# counters before and after. Results: bench-results/rflash-<UTC time>/ (raw.jsonl,
# results.json, report.md, load.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

ROUNDS=9
QUICK=0
LATS=0,5
COPY_RATE=
BUILD=1
KEEP=0
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift ;;
        --quick) QUICK=1 ;;
        --latencies) LATS=$2; shift ;;
        --copy-rate) COPY_RATE=$2; shift ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"; exit 0 ;;
        *) echo "rflash.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    [[ " ${ARGS[*]} " == *" --rounds "* ]] || ROUNDS=2
fi
GIB=${RFLASH_BENCH_GIB:-1}
FRACS=${RFLASH_BENCH_FRACTIONS:-0,0.01,0.05,0.25}
POLL_MS=${RFLASH_BENCH_POLL_MS:-5}
IA=IBM.2107-75FA120
IB=IBM.2107-75FA150
CONDUIT=10
IFS=, read -r -a LAT_LIST <<<"$LATS"
IFS=, read -r -a FRAC_LIST <<<"$FRACS"

log() { printf '[rflash-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 missing (scripts/install-deps.sh)"

if [ "$BUILD" = 1 ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
BIN=$ROOT/target/release
for b in flashd dscli flashio; do [ -x "$BIN/$b" ] || die "$BIN/$b missing (build first)"; done
PY=$ROOT/scripts/bench/rflash.py

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/flashtrack-rflash-bench.XXXXXX")
H=$W/home
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

need=$(( (6 * GIB + 1) * 1024 * 1024 ))
avail=$(df -Pk "$W" | awk 'NR==2 {print $4}')
[ "$avail" -ge "$need" ] || die "$W has $((avail / 1024 / 1024)) GiB free, needs $((need / 1024 / 1024)) GiB"

# ---- load sampler: how busy the machine was ---------------------------------------------------
OTHERS=$(ps -eo pcpu=,comm= --sort=-pcpu | head -5 | awk '{printf "%s%s %s%%", (NR>1?", ":""), $2, $1}')
(while :; do echo "$(date +%s) $(cut -d' ' -f1 /proc/loadavg)" >>"$W/load.txt"; sleep 2; done) &
PIDS+=($!)
STAT0=$(head -1 /proc/stat)
T_START=$(date +%s.%N)

# ---- the site ---------------------------------------------------------------------------------
"$BIN/flashd" image create --home "$H" "$IA" >/dev/null
"$BIN/flashd" image create --home "$H" "$IB" >/dev/null
"$BIN/flashd" run --home "$H" ${COPY_RATE:+--copy-rate "$COPY_RATE"} >"$W/flashd.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$H/control.sock" ] && break; sleep 0.1; done
[ -S "$H/control.sock" ] || die "flashd did not start: $(cat "$W/flashd.out")"
SOCK=$H/control.sock
S=$H/nbd.sock
FLASHD_PID=$(cat "$H/flashd.pid")
ds() { "$BIN/dscli" -bnr off -hmc1 "unix:$SOCK" "$@"; }
ok() { local out; out=$("$@" 2>&1) || die "$*: $out"; }
PAIR="-dev $IA -remotedev $IB"
WWNN_B=$(ds lssi -fmt delim -hdr off | awk -F, -v id="$IB" '$2 == id {print $5}')
[ -n "$WWNN_B" ] || die "no WWNN for $IB"
IO_BACKEND=$(grep -o 'io backend [a-z_]*' "$H/flashd.log" | head -1 | cut -d' ' -f3 || true)
log "one flashd, images $IA (A, primaries) and $IB (B, secondaries) in $H (in-process link)"

sched() { # -> "flashd_ticks busy_ticks total_ticks" (USER_HZ ticks)
    echo "$(awk '{print $14 + $15}' /proc/"$FLASHD_PID"/stat) $(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)"
}
sched_json() { # BEFORE AFTER -> "flashd_cpu_s": ..., "busy_cpu_s": ..., "interval_s": ...
    python3 -c 'import os,sys; a, b = [list(map(int, x.split())) for x in sys.argv[1:3]]; hz = os.sysconf("SC_CLK_TCK"); n = os.cpu_count()
print(f"\"flashd_cpu_s\": {(b[0]-a[0])/hz:.3f}, \"busy_cpu_s\": {(b[1]-a[1])/hz:.3f}, \"interval_s\": {(b[2]-a[2])/hz/n:.3f}")' "$1" "$2"
}

ok ds mkfbvol -dev "$IA" -extpool P0 -cap "$GIB" -sam standard 1000 1001
ok ds mkfbvol -dev "$IB" -extpool P1 -cap "$GIB" -sam standard 1100-1103
ok ds mkpprcpath $PAIR -remotewwnn "$WWNN_B" -srclss 10 -tgtlss 11 I0000:I0000
ds lspprcpath -dev "$IA" -fmt delim -hdr off | grep -q Failed && die "the path failed: $(ds lspprcpath -dev "$IA")"

log "writing every track of $IA/1000 and 1001 (random data), then the Metro Mirror initial copies"
for v in 1000 1001; do
    "$BIN/flashio" --socket "$S" write --random --seed 1 --length "${GIB}G" "$IA/$v" >/dev/null
done
ok ds mkpprc $PAIR -type mmir -wait 1000:1100 1001:1102
st=$(ds lspprc $PAIR -fmt delim -hdr off 1000:1100 1001:1102 2>&1) || die "lspprc: $st"
[ "$(grep -c 'Full Duplex' <<<"$st")" = 2 ] || die "the pairs are not Full Duplex: $st"

log "mkremoteflash -record -persist 1100:1101 through $IA/$CONDUIT, mkflash -record -persist 1102:1103 at $IB"
ok ds mkremoteflash -dev "$IB" -conduit "$IA/$CONDUIT" -record -persist 1100:1101
python3 "$PY" wait-remote "$SOCK" "$IA" "$IB" "$CONDUIT" 1100 1101 300
# The local twin cannot share 1100: one incremental relationship per source.
if refusal=$(ds mkflash -dev "$IB" -record -persist 1100:1103 2>&1); then
    die "mkflash -record -persist 1100:1103 was accepted beside 1100:1101 (expected a refusal): $refusal"
fi
log "as expected, a second incremental relationship on 1100 is refused: $(tr '\n' ' ' <<<"$refusal")"
ok ds mkflash -dev "$IB" -record -persist -wait 1102:1103
ds lsremoteflash -dev "$IB" -conduit "$IA/$CONDUIT" -l >"$W/lsremoteflash.txt" 2>&1 || die "lsremoteflash: $(cat "$W/lsremoteflash.txt")"
grep -q '^1100:1101' "$W/lsremoteflash.txt" || die "lsremoteflash does not show 1100:1101: $(cat "$W/lsremoteflash.txt")"

RAW=$W/raw.jsonl
: >"$RAW"
record() { # ROUND LAT FRAC MODE JSON
    python3 -c 'import json,sys; d=dict(round=int(sys.argv[1]), lat_ms=float(sys.argv[2]), fraction=float(sys.argv[3]), mode=sys.argv[4]); d.update(json.loads(sys.argv[5])); print(json.dumps(d))' \
        "$@" >>"$RAW"
    log "round $1 L=$2 f=$3 $4: $5"
}

measure() { # ROUND LAT FRAC MODE K
    local r=$1 lat=$2 f=$3 mode=$4 k=$5 src tgt j s0 s1
    if [ "$mode" = remote ]; then src=1100; tgt=1101; else src=1102; tgt=1103; fi
    sync # the dirty writes and the last copy reach the disk: no writeback runs into the timed copy
    s0=$(sched)
    j=$(python3 "$PY" measure "$SOCK" "$IA" "$IB" "$CONDUIT" "$src" "$tgt" "$mode" "$POLL_MS")
    s1=$(sched)
    local copied; copied=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["copied"])' "$j")
    [ "$copied" = "$k" ] || die "$mode $src:$tgt copied $copied tracks, $k were written"
    record "$r" "$lat" "$f" "$mode" "${j%\}}, \"k\": $k, $(sched_json "$s0" "$s1")}"
}

case_run() { # ROUND LAT FRAC SEED FLIP
    local r=$1 lat=$2 f=$3 seed=$4 flip=$5 k0 k1
    ok ds chlink -dev "$IA" -latency 0 10:11
    if python3 -c 'import sys; sys.exit(float(sys.argv[1]) != 0)' "$f"; then
        k0=0 # the control row: nothing written, nothing to copy
    else
        k0=$("$BIN/flashio" --socket "$S" dirty --fraction "$f" --seed "$seed" --list "$W/dirty-1000" "$IA/1000")
        k1=$("$BIN/flashio" --socket "$S" dirty --fraction "$f" --seed "$seed" --list "$W/dirty-1001" "$IA/1001")
        [ "$k0" = "$k1" ] && cmp -s "$W/dirty-1000" "$W/dirty-1001" || die "the two primaries got different dirty sets ($k0, $k1)"
    fi
    ok ds chlink -dev "$IA" -latency "$lat" 10:11
    if [ "$flip" = 0 ]; then
        measure "$r" "$lat" "$f" remote "$k0"; measure "$r" "$lat" "$f" local "$k0"
    else
        measure "$r" "$lat" "$f" local "$k0"; measure "$r" "$lat" "$f" remote "$k0"
    fi
}

n=0
for r in $(seq 1 "$ROUNDS"); do
    lats=("${LAT_LIST[@]}"); fracs=("${FRAC_LIST[@]}")
    if [ $((r % 2)) = 0 ]; then
        lats=(); for ((i = ${#LAT_LIST[@]} - 1; i >= 0; i--)); do lats+=("${LAT_LIST[i]}"); done
        fracs=(); for ((i = ${#FRAC_LIST[@]} - 1; i >= 0; i--)); do fracs+=("${FRAC_LIST[i]}"); done
    fi
    for lat in "${lats[@]}"; do
        for f in "${fracs[@]}"; do
            n=$((n + 1))
            case_run "$r" "$lat" "$f" $((1000 + n)) $((n % 2))
        done
    done
done
ok ds chlink -dev "$IA" -latency 0 10:11
T_END=$(date +%s.%N)
STAT1=$(head -1 /proc/stat)

# ---- report -------------------------------------------------------------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench-results/rflash-$STAMP
mkdir -p "$OUT"
CMD="scripts/bench/rflash.sh ${ARGS[*]}"
EXTRA=$(python3 - <<EOF
import json
print(json.dumps({
  "command": """$CMD""".strip(), "rounds": $ROUNDS, "quick": bool($QUICK), "gib": $GIB,
  "poll_ms": $POLL_MS, "copy_rate": "${COPY_RATE:-unlimited}", "io_backend": "$IO_BACKEND", "images": ["$IA", "$IB"], "conduit": "$IA/$CONDUIT",
}))
EOF
)
META=$(python3 "$ROOT/scripts/bench/machine.py" "$W/load.txt" "$STAT0" "$STAT1" "$ROOT" "$(python3 -c "print($T_END - $T_START)")" "$OTHERS" "$EXTRA")
cp "$RAW" "$OUT/raw.jsonl"
cp "$W/load.txt" "$OUT/load.txt"
python3 "$PY" report "$OUT/raw.jsonl" "$META" "$OUT/results.json" "$OUT/report.md" >/dev/null
cat "$OUT/report.md"
log "results: ${OUT#$ROOT/}/ (report.md, results.json, raw.jsonl, load.txt)"
