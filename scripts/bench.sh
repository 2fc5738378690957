#!/usr/bin/env bash
# FlashCopy copy-engine benchmark: flashtrack full copy and incremental resync against QEMU's
# incremental backup (qemu-storage-daemon, blockdev-backup sync=bitmap) and against the
# device limit measured with fio. See BENCHMARKS.md for what it measures and the last results.
#
#   scripts/bench.sh [--quick] [--rounds N] [--no-build] [--keep]
#
#   --quick     smoke run: 2 rounds, 1 GiB volumes, 2 s fio runs (numbers are not results)
#   --rounds N  interleaved rounds (default 5; at least 5 for a result)
#   --no-build  use the binaries already in target/release
#   --keep      keep the scratch directory (for debugging)
#   --pprc      then run the PPRC benchmark too (scripts/bench/pprc.sh with the same --quick
#               and --rounds, after this one's sites are stopped; its own results directory)
#   --rflash    then run the remote FlashCopy benchmark too (scripts/bench/rflash.sh, the same
#               way; after the PPRC one when both are asked for)
#
# Environment:
#   DSCLI=PATH        the dscli used for the end-to-end timings (default target/release/dscli).
#                     When it has no FlashCopy verbs the dscli rows are skipped and reported
#                     as missing.
#   BENCH_TMP=DIR     where the scratch directory goes (default /var/tmp; must be a disk, not
#                     tmpfs, since the device limit is measured there). Everything there
#                     is preallocated: 11 x the volume size + 1 GiB must be free (23 GiB,
#                     --quick 12 GiB), plus 2 x + 1 GiB for the loop-device row (else skipped)
#
# Rows (each one its own flashd site or qemu-storage-daemon, own files, same data and dirty sets):
#   qemu         qemu-storage-daemon, raw files, cache.direct=off (buffered)
#   qemu-direct  qemu-storage-daemon, raw files, cache.direct=on, aio=native (io_uring if not)
#   uring, sync  flashd with FLASHTRACK_IO=uring / sync, file-backed volumes (buffered)
#                                                            -> compared with qemu
#   udirect      flashd (uring) with FLASHTRACK_COPY_DIRECT=1: copies between the file-backed
#                volumes use O_DIRECT descriptors (host I/O stays buffered) -> with qemu-direct
#   direct       (root, when there is room) flashd (uring) with a device pool on a loop device
#                (losetup --direct-io=on), opened O_DIRECT; secondary -> with qemu-direct
#   dscli-uring, dscli-sync  the uring/sync sites timed end to end through dscli -> with qemu
#   fio          64 KiB random read and write IOPS at qd32, O_DIRECT: the device limit
#
# Every round runs each case for every row back to back, in two groups (buffered: qemu first,
# then ours; O_DIRECT: qemu-direct first, then ours); the whole order flips every round, so
# slow drifts of this noisy VM hit both sides of a ratio alike. As root, page caches are
# dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every timed copy, so every copy
# reads its source cold. Results: bench-results/bench-<UTC time>.json and .md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
ROUNDS=5
BUILD=1
KEEP=0
PPRC=0
RFLASH=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --pprc) PPRC=1 ;;
        --rflash) RFLASH=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"; exit 0 ;;
        *) echo "bench: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
CAP=2              # GiB per volume
FIO_SECS=5
if [ "$QUICK" = 1 ]; then
    ROUNDS=2; CAP=1; FIO_SECS=2
fi
FRACTIONS=(0.01 0.05 0.25)
IMG=IBM.2107-75FA120
SRC=1000
TGT=1001

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- tools --------------------------------------------------------------------------------
need=()
command -v qemu-io >/dev/null 2>&1 || need+=(qemu-utils)
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v qemu-storage-daemon >/dev/null 2>&1 || need+=(qemu-system-common)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing ${need[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        die "missing ${need[*]} (install them, or run as root with apt-get)"
    fi
fi
QSD=$(command -v qemu-storage-daemon)

if [ "$BUILD" = 1 ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
BIN=$ROOT/target/release
for b in flashd dscli flashio; do [ -x "$BIN/$b" ] || die "$BIN/$b missing (build first)"; done
DSCLI=${DSCLI:-$BIN/dscli}
CTL="python3 $ROOT/scripts/bench/ctl.py"
HAVE_DSCLI_FLASH=0
if "$DSCLI" help resyncflash 2>/dev/null | grep -q -- '-wait'; then HAVE_DSCLI_FLASH=1; fi

DROP=0
if [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/drop_caches ]; then DROP=1; fi
cold() {
    sync
    if [ "$DROP" = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

# ---- scratch and cleanup -------------------------------------------------------------------
W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/flashtrack-bench.XXXXXX")
PIDS=()
stop_pidfile() { # FILE: TERM the process it names and wait up to 10 s for it to go
    [ -f "$1" ] || return 0
    local p; p=$(cat "$1")
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
}
cleanup() {
    set +e
    for h in "$W"/home-*; do stop_pidfile "$h/flashd.pid"; done
    for q in qemu qemu-direct; do stop_pidfile "$W/$q.pid"; done
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    [ -n "${LOOPDEV:-}" ] && losetup -d "$LOOPDEV" 2>/dev/null
    if [ "$KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
RAW=$W/raw.jsonl
: > "$RAW"
mkdir -p "$W/sets"

# Disk space: every volume and raw file is preallocated. Three file-backed flashd sites and two
# qemu-storage-daemons hold 2 x CAP GiB each, fio's file CAP GiB; the loop-device row (which is
# secondary) needs 2 x CAP + 1 GiB more and is left out when that much is not free.
AVAIL=$(df --output=avail -B1G "$W" | tail -1 | tr -d ' ')
NEED=$((5 * 2 * CAP + CAP + 1))
NEED_LOOP=$((2 * CAP + 1))
[ "$AVAIL" -ge "$NEED" ] || die "$W has $AVAIL GiB free; the benchmark needs $NEED GiB (+$NEED_LOOP for the loop-device row)"

now() { echo "$EPOCHREALTIME"; }
# record ROUND CASE IMPL JSON-WITH-secs: one raw record (the JSON's fields are kept, e.g.
# request_secs from ctl.py)
record() {
    python3 -c 'import json,sys; d=json.loads(sys.argv[4]); d.update(round=int(sys.argv[1]), case=sys.argv[2], impl=sys.argv[3]); print(json.dumps(d))' \
        "$1" "$2" "$3" "$4" >> "$RAW"
    log "round $1 $2 $3: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.3f s" % d["secs"], "(%s tracks)" % d.get("tracks", "?"))' "$4")"
}

# ---- flashtrack sites: file-backed volumes in P0 ------------------------------------------
# uring and sync: one per I/O backend, buffered copies. udirect: io_uring with
# FLASHTRACK_COPY_DIRECT=1, so background copies go through O_DIRECT descriptors.
start_site() { # SITE BACKEND [ENV=VALUE...]
    local name=$1 be=$2 h=$W/home-$1
    shift 2
    "$BIN/flashd" image create --home "$h" "$IMG" >/dev/null
    env FLASHTRACK_IO="$be" "$@" "$BIN/flashd" run --home "$h" >"$W/flashd-$name.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "$h/control.sock" ] && break; sleep 0.1; done
    [ -S "$h/control.sock" ] || die "flashd ($name) did not start: $(cat "$W/flashd-$name.out")"
    FLASHTRACK_HOME=$h "$BIN/dscli" mkfbvol -dev "$IMG" -extpool P0 -cap "$CAP" -sam standard "$SRC-$TGT" >/dev/null
    local got; got=$($CTL backend "$h/control.sock")
    [ "$got" = "$be" ] || die "flashd in $h runs the $got backend, not $be"
    log "site $h: flashd backend $got${*:+ ($*)}, 2 x $CAP GiB standard volumes"
    "$BIN/flashio" --socket "$h/nbd.sock" write --random --seed 1 --length "${CAP}G" "$IMG/$SRC" >/dev/null
}

# udirect's flashd must have turned O_DIRECT copies on, and (once it has copied) must not have
# fallen back to buffered copies.
check_udirect_log() { # WHEN
    local l=$W/home-udirect/flashd.log
    grep -q "use O_DIRECT" "$l" || die "udirect ($1): flashd.log does not say it uses O_DIRECT: $(cat "$l")"
    if grep -q "no O_DIRECT copies" "$l"; then
        die "udirect ($1): flashd fell back to buffered copies: $(grep "no O_DIRECT copies" "$l")"
    fi
    log "checked udirect ($1): flashd.log says O_DIRECT copies, no fallback"
}

# ---- flashtrack O_DIRECT on a device: a pool on a loop device (root only) ------------------
# Device pools are opened O_DIRECT. A loop device (--direct-io=on) over a preallocated file on
# the same disk; a secondary O_DIRECT row (udirect is the main one).
LOOPDEV=
start_site_direct() {
    local h=$W/home-direct img=$W/direct.img
    [ "$(id -u)" = 0 ] && command -v losetup >/dev/null 2>&1 || { log "not root or no losetup: no loop-device row"; return 1; }
    [ "$AVAIL" -ge $((NEED + NEED_LOOP)) ] || { log "$AVAIL GiB free, the loop-device row needs $NEED_LOOP GiB more: no loop-device row"; return 1; }
    fallocate -l "$((2 * CAP + 1))G" "$img" || return 1
    LOOPDEV=$(losetup -f --show --direct-io=on "$img") || { log "losetup failed: no loop-device row"; return 1; }
    "$BIN/flashd" image create --home "$h" "$IMG" >/dev/null
    FLASHTRACK_IO=uring "$BIN/flashd" run --home "$h" >"$W/flashd-direct.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "$h/control.sock" ] && break; sleep 0.1; done
    [ -S "$h/control.sock" ] || die "flashd (direct) did not start: $(cat "$W/flashd-direct.out")"
    FLASHTRACK_HOME=$h "$BIN/dscli" mkextpool -dev "$IMG" -rankgrp 0 -stgtype fb -path "$LOOPDEV" direct >/dev/null
    FLASHTRACK_HOME=$h "$BIN/dscli" mkfbvol -dev "$IMG" -extpool P4 -cap "$CAP" -sam standard "$SRC-$TGT" >/dev/null
    "$BIN/flashio" --socket "$h/nbd.sock" write --random --seed 1 --length "${CAP}G" "$IMG/$SRC" >/dev/null
    log "site $h: O_DIRECT pool P4 on $LOOPDEV, 2 x $CAP GiB volumes, io_uring"
}

# ---- QEMU: qemu-storage-daemons with raw files ------------------------------------------
# qemu: cache.direct=off, like our buffered copies. qemu-direct: cache.direct=on, aio=native
# (io_uring when native does not start), like udirect. Each daemon has its own files
# ($W/NAME-src.raw, $W/NAME-tgt.raw), NBD export of the source ($W/NAME-nbd.sock), QMP
# socket ($W/NAME-qmp.sock), pid file ($W/NAME.pid) and 64 KiB dirty bitmap.
declare -A BITMAP=([qemu]=b0 [qemu-direct]=b1)
declare -A QAIO=()
qsd_try() { # NAME DIRECT AIO
    local n=$1
    "$QSD" \
        --blockdev "driver=file,filename=$W/$n-src.raw,node-name=src-file,cache.direct=$2,aio=$3" \
        --blockdev driver=raw,file=src-file,node-name=src \
        --blockdev "driver=file,filename=$W/$n-tgt.raw,node-name=tgt-file,cache.direct=$2,aio=$3" \
        --blockdev driver=raw,file=tgt-file,node-name=tgt \
        --nbd-server "addr.type=unix,addr.path=$W/$n-nbd.sock" \
        --export type=nbd,id=e0,node-name=src,name=src,writable=on \
        --chardev "socket,path=$W/$n-qmp.sock,server=on,wait=off,id=qmp0" --monitor chardev=qmp0 \
        --pidfile "$W/$n.pid" --daemonize 2>"$W/$n.err"
}
start_qsd() { # NAME DIRECT(on|off) AIO [FALLBACK-AIO]
    local n=$1 f
    for f in "$n-src.raw" "$n-tgt.raw"; do
        truncate -s "${CAP}G" "$W/$f"
        fallocate -l "${CAP}G" "$W/$f" # preallocated, like -sam standard
    done
    QAIO[$n]=$3
    if ! qsd_try "$n" "$2" "$3"; then
        [ -n "${4:-}" ] || die "$n: qemu-storage-daemon did not start: $(cat "$W/$n.err")"
        log "$n: aio=$3 failed ($(cat "$W/$n.err")); trying aio=$4"
        rm -f "$W/$n-nbd.sock" "$W/$n-qmp.sock" "$W/$n.pid"
        QAIO[$n]=$4
        qsd_try "$n" "$2" "$4" || die "$n: qemu-storage-daemon did not start: $(cat "$W/$n.err")"
    fi
    log "$n: qemu-storage-daemon $("$QSD" --version | head -1 | awk '{print $3}'): raw files, cache.direct=$2, aio=${QAIO[$n]}, NBD export of the source"
    "$BIN/flashio" --socket "$W/$n-nbd.sock" write --random --seed 1 --length "${CAP}G" src >/dev/null
    $CTL qmp-bitmap-add "$W/$n-qmp.sock" src "${BITMAP[$n]}"
}

# ---- the cases -----------------------------------------------------------------------------
ours_full() { # ROUND SITE
    local h=$W/home-$2 j
    $CTL remove "$h/control.sock" "$IMG" "$SRC" "$TGT"
    cold
    j=$($CTL create "$h/control.sock" "$IMG" "$SRC" "$TGT")
    record "$1" full "$2" "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["tracks"]=d["copied"]; print(json.dumps(d))' "$j")"
}

dscli_full() { # ROUND SITE
    local h=$W/home-$2 t0 t1
    $CTL remove "$h/control.sock" "$IMG" "$SRC" "$TGT"
    cold
    t0=$(now)
    FLASHTRACK_HOME=$h "$DSCLI" mkflash -dev "$IMG" -record -persist -wait "$SRC:$TGT" >/dev/null
    t1=$(now)
    local st; st=$($CTL state "$h/control.sock" "$IMG" "$SRC" "$TGT")
    record "$1" full "dscli-$2" "$(python3 -c 'import json,sys; s=json.loads(sys.argv[3]); assert s["out_of_sync"]==0, s; print(json.dumps({"secs": float(sys.argv[2])-float(sys.argv[1]), "tracks": s["copied"]}))' "$t0" "$t1" "$st")"
}

qemu_full() { # ROUND NAME
    local j
    cold
    j=$($CTL qmp-backup "$W/$2-qmp.sock" full src tgt "${BITMAP[$2]}")
    record "$1" full "$2" "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["tracks"]=d["bytes"]//65536; print(json.dumps(d))' "$j")"
}

# SOCKET EXPORT FRACTION SEED LIST REF -> prints the number of tracks written. The first side
# to write a round's set keeps its list as REF; every other side must write the same tracks.
dirty() {
    "$BIN/flashio" --socket "$1" dirty "$2" --fraction "$3" --seed "$4" --list "$5" >/dev/null
    if [ -f "$6" ]; then cmp -s "$5" "$6" || die "dirty set $5 differs from $6"; else cp "$5" "$6"; fi
    wc -l < "$5"
}

ours_resync() { # ROUND FRACTION SEED SITE
    local h=$W/home-$4 list=$W/sets/r$1-$2-$4 n j
    n=$(dirty "$h/nbd.sock" "$IMG/$SRC" "$2" "$3" "$list" "$W/sets/r$1-$2-ref")
    cold
    j=$($CTL resync "$h/control.sock" "$IMG" "$SRC" "$TGT")
    record "$1" "resync$2" "$4" "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); n=int(sys.argv[2]); assert d["copied"]==n, ("copied", d["copied"], "written", n); d["tracks"]=n; print(json.dumps(d))' "$j" "$n")"
}

dscli_resync() { # ROUND FRACTION SEED SITE
    local h=$W/home-$4 list=$W/sets/r$1-$2-dscli-$4 n t0 t1 st
    n=$(dirty "$h/nbd.sock" "$IMG/$SRC" "$2" "$3" "$list" "$W/sets/r$1-$2-ref")
    cold
    t0=$(now)
    FLASHTRACK_HOME=$h "$DSCLI" resyncflash -dev "$IMG" -record -persist -wait "$SRC:$TGT" >/dev/null
    t1=$(now)
    st=$($CTL state "$h/control.sock" "$IMG" "$SRC" "$TGT")
    record "$1" "resync$2" "dscli-$4" "$(python3 -c 'import json,sys; s=json.loads(sys.argv[3]); n=int(sys.argv[4]); assert s["out_of_sync"]==0 and s["copied"]==n, s; print(json.dumps({"secs": float(sys.argv[2])-float(sys.argv[1]), "tracks": n}))' "$t0" "$t1" "$st" "$n")"
}

qemu_resync() { # ROUND FRACTION SEED NAME
    local q=$4 list=$W/sets/r$1-$2-$4 n bm j
    n=$(dirty "$W/$q-nbd.sock" src "$2" "$3" "$list" "$W/sets/r$1-$2-ref")
    bm=$($CTL qmp-bitmap-count "$W/$q-qmp.sock" src "${BITMAP[$q]}")
    [ "$bm" = "$n" ] || die "$q: bitmap holds $bm granules, $n tracks were written"
    cold
    j=$($CTL qmp-backup "$W/$q-qmp.sock" bitmap src tgt "${BITMAP[$q]}")
    record "$1" "resync$2" "$q" "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); n=int(sys.argv[2]); assert d["bytes"]==n*65536, d; d["tracks"]=n; print(json.dumps(d))' "$j" "$n")"
}

fio_case() { # ROUND rw
    local out=$W/fio-$1-$2.json
    cold
    fio --name="$2" --filename="$W/fio.dat" --size="${CAP}G" --rw="$2" --bs=64k --direct=1 \
        --ioengine=io_uring --iodepth=32 --numjobs=1 --time_based --runtime="$FIO_SECS" \
        --output-format=json >"$out"
    local iops
    iops=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print(j["read" if sys.argv[2]=="randread" else "write"]["iops"])' "$out" "$2")
    record "$1" "fio-$2" fio "{\"secs\": $FIO_SECS, \"iops\": $iops}"
}

verify() { # TAG: target file equals source file
    cmp -s "$2" "$3" || die "$1: target differs from source after the copy"
    log "verified $1: target == source"
}

# ---- setup ---------------------------------------------------------------------------------
T_START=$(now)
log "scratch $W ($AVAIL GiB free); rounds $ROUNDS; volumes $CAP GiB; drop caches: $([ "$DROP" = 1 ] && echo yes || echo 'no (not root)')"
[ "$HAVE_DSCLI_FLASH" = 1 ] || log "$DSCLI has no FlashCopy verbs (resyncflash -wait): dscli end-to-end rows are skipped"
start_site uring uring
start_site sync sync
start_site udirect uring FLASHTRACK_COPY_DIRECT=1
grep -q "use O_DIRECT" "$W/home-udirect/flashd.log" || die "udirect: flashd did not turn O_DIRECT copies on: $(cat "$W/home-udirect/flashd.log")"
HAVE_DIRECT=0
start_site_direct && HAVE_DIRECT=1
start_qsd qemu off threads
start_qsd qemu-direct on native io_uring
# fio's file: laid out (written) once, so it is preallocated and allocated
fio --name=layout --filename="$W/fio.dat" --size="${CAP}G" --rw=write --bs=1M --direct=1 \
    --ioengine=io_uring --iodepth=16 --output-format=json >/dev/null
VOL() { echo "$W/home-$1/$IMG/pools/P0/${IMG}_$2.vol"; }
for f in "$(VOL sync $SRC)" "$(VOL udirect $SRC)" "$W/qemu-src.raw" "$W/qemu-direct-src.raw"; do
    cmp -s "$(VOL uring $SRC)" "$f" || die "the sources differ: $(VOL uring $SRC) and $f"
done
# Warm-up (untimed): the first copy into each preallocated target converts its unwritten
# extents; every timed copy after it overwrites allocated blocks, for every row.
log "warm-up: first full copy on each side (untimed)"
for s in uring sync udirect; do $CTL create "$W/home-$s/control.sock" "$IMG" "$SRC" "$TGT" >/dev/null; done
[ "$HAVE_DIRECT" = 1 ] && $CTL create "$W/home-direct/control.sock" "$IMG" "$SRC" "$TGT" >/dev/null
for q in qemu qemu-direct; do $CTL qmp-backup "$W/$q-qmp.sock" full src tgt "${BITMAP[$q]}" >/dev/null; done
check_udirect_log "after the warm-up copy"

# Two groups, each led by its QEMU: buffered rows (compared with qemu) and O_DIRECT rows
# (compared with qemu-direct).
BUFFERED=(qemu uring sync)
[ "$HAVE_DSCLI_FLASH" = 1 ] && BUFFERED+=(dscli-uring dscli-sync)
DIRECT=(qemu-direct udirect)
[ "$HAVE_DIRECT" = 1 ] && DIRECT+=(direct)

run_full() { # ROUND IMPL
    case "$2" in
        qemu*) qemu_full "$1" "$2" ;;
        dscli-*) dscli_full "$1" "${2#dscli-}" ;;
        *) ours_full "$1" "$2" ;;
    esac
}
run_resync() { # ROUND FRACTION SEED IMPL
    case "$4" in
        qemu*) qemu_resync "$1" "$2" "$3" "$4" ;;
        dscli-*) dscli_resync "$1" "$2" "$3" "${4#dscli-}" ;;
        *) ours_resync "$1" "$2" "$3" "$4" ;;
    esac
}

# ---- rounds --------------------------------------------------------------------------------
for r in $(seq "$ROUNDS"); do
    log "=== round $r of $ROUNDS"
    # order: odd rounds each QEMU before our rows, even rounds the whole order reversed
    order=("${BUFFERED[@]}" "${DIRECT[@]}")
    if [ $((r % 2)) = 0 ]; then
        rev=(); for ((i = ${#order[@]} - 1; i >= 0; i--)); do rev+=("${order[i]}"); done; order=("${rev[@]}")
    fi
    if [ $((r % 2)) = 1 ]; then fio_order=(randread randwrite); else fio_order=(randwrite randread); fi
    for rw in "${fio_order[@]}"; do fio_case "$r" "$rw"; done
    for impl in "${order[@]}"; do run_full "$r" "$impl"; done
    for f in "${FRACTIONS[@]}"; do
        # the same seeded set for every side in this round (a new set each round)
        seed=$((r * 1000 + $(echo "$f" | tr -dc 0-9 | sed 's/^0*//')))
        for impl in "${order[@]}"; do run_resync "$r" "$f" "$seed" "$impl"; done
    done
    if [ "$r" = 1 ]; then
        for s in uring sync udirect; do verify "flashtrack $s" "$(VOL $s $SRC)" "$(VOL $s $TGT)"; done
        check_udirect_log "after round 1"
        for q in qemu qemu-direct; do verify "$q" "$W/$q-src.raw" "$W/$q-tgt.raw"; done
        if [ "$HAVE_DIRECT" = 1 ]; then
            "$BIN/flashio" --socket "$W/home-direct/nbd.sock" compare "$IMG/$SRC" "$IMG/$TGT" >/dev/null \
                || die "flashtrack direct: target differs from source after the copy"
            log "verified flashtrack direct: target == source"
        fi
    fi
done
T_END=$(now)

# ---- report --------------------------------------------------------------------------------
mkdir -p "$ROOT/bench-results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench-results/bench-$STAMP
META=$(python3 - "$@" <<EOF
import json, subprocess
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return ""
print(json.dumps({
  "command": "scripts/bench.sh" + (" --quick" if $QUICK else "") + " --rounds $ROUNDS",
  "quick": bool($QUICK), "rounds": $ROUNDS, "volume_gib": $CAP, "fio_secs": $FIO_SECS,
  "fractions": [float(x) for x in "${FRACTIONS[*]}".split()],
  "drop_caches": bool($DROP),
  "qemu_cache": {"qemu": "cache.direct=off,aio=${QAIO[qemu]}", "qemu-direct": "cache.direct=on,aio=${QAIO[qemu-direct]}"},
  "loop_device_row": bool($HAVE_DIRECT),
  "dscli": "$DSCLI", "dscli_flash": bool($HAVE_DSCLI_FLASH),
  "nproc": sh("nproc"), "kernel": sh("uname -r"), "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
  "mem": sh("free -g | awk '/Mem:/{print \$2\" GiB\"}'"),
  "qemu": sh("$QSD --version | head -1"), "fio": sh("fio --version"),
  "git": sh("git -C $ROOT rev-parse --short HEAD") + (" (dirty)" if sh("git -C $ROOT status --porcelain -- engine cli") else ""),
  "wall_secs": round($T_END - $T_START, 1),
}))
EOF
)
python3 "$ROOT/scripts/bench/report.py" "$RAW" "$META" "$OUT.json" "$OUT.md"
cat "$OUT.md"
log "results: ${OUT#$ROOT/}.json and .md (wall $(python3 -c "print(round($T_END-$T_START))") s)"

if [ "$PPRC" = 1 ] || [ "$RFLASH" = 1 ]; then
    cleanup
    trap - EXIT
    more_args=(--no-build --rounds "$ROUNDS")
    [ "$QUICK" = 1 ] && more_args+=(--quick)
    [ "$KEEP" = 1 ] && more_args+=(--keep)
    if [ "$PPRC" = 1 ]; then "$ROOT/scripts/bench/pprc.sh" "${more_args[@]}"; fi
    if [ "$RFLASH" = 1 ]; then exec "$ROOT/scripts/bench/rflash.sh" "${more_args[@]}"; fi
fi
