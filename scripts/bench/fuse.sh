#!/usr/bin/env bash
# FUSE view benchmark: fio 64 KiB random writes (libaio, iodepth 16, O_DIRECT) into a file on
# ext4 mounted from a loop device on a flashtrack volume file (flashd run --mount), against the
# same on a loop device over a plain backing file of the same size in the same directory.
# All filesystems are made the same way; the flashtrack volume is sparse (-sam ese) like the
# plain files; no FlashCopy relationship. Three cases:
#   fuse       loop (--direct-io=on) on the volume file; flashd writes its file-backed volume
#              through the page cache (durable at fsync/FLUSH)
#   plain      loop (buffered) on a plain file: the same caching as flashd's file backing,
#              so the headline ratio is fuse / plain
#   plain-dio  loop (--direct-io=on) on a plain file: every write goes to the disk
#
#   scripts/bench/fuse.sh [--rounds N] [--secs S] [--no-build] [--keep]
#
#   --rounds N  interleaved rounds (default 5; the order of the two cases flips every round)
#   --secs S    seconds per fio run (default 10)
#   --no-build  use the binaries already in target/release
#   --keep      keep the scratch directory
#
# Environment: BENCH_TMP=DIR, where the scratch directory goes (default /var/tmp; a disk,
# not tmpfs). Needs root (loop devices, mount, /dev/fuse), fio, mkfs.ext4, python3.
# Results: bench-results/fuse-<UTC time>.json and .md; the table is printed too.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

ROUNDS=5
SECS=10
BUILD=1
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "fuse.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
GIB=2          # volume and plain file size
FILE_SIZE=1G   # the fio file inside each filesystem
IMG=IBM.2107-75FA120

log() { printf '[fuse-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (loop devices, mount, /dev/fuse)"
[ -e /dev/fuse ] || die "/dev/fuse is missing"
scripts/install-deps.sh || true
for t in fio mkfs.ext4 losetup python3; do command -v $t >/dev/null || die "$t is missing"; done

if [ "$BUILD" = 1 ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
BIN=$ROOT/target/release
for b in flashd dscli; do [ -x "$BIN/$b" ] || die "$BIN/$b missing (build first)"; done

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/flashtrack-fuse-bench.XXXXXX")
HOME_DIR=$W/home
VIEW=$W/view
FLASHD_PID=
LOOPS=()
MOUNTS=()
cleanup() {
    set +e
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m"; done
    for l in "${LOOPS[@]}"; do losetup -d "$l"; done
    if [ -n "$FLASHD_PID" ]; then
        kill "$FLASHD_PID" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$FLASHD_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    grep -q " $VIEW " /proc/mounts && umount -l "$VIEW"
    if [ "$KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

# ---- flashd with the FUSE view, one sparse volume ---------------------------------------------
export FLASHTRACK_HOME=$HOME_DIR
"$BIN/flashd" run --home "$HOME_DIR" --mount "$VIEW" >"$W/flashd.out" 2>&1 &
FLASHD_PID=$!
for _ in $(seq 100); do [ -S "$HOME_DIR/control.sock" ] && break; sleep 0.1; done
[ -S "$HOME_DIR/control.sock" ] || die "flashd did not start: $(cat "$W/flashd.out")"
"$BIN/flashd" image create --home "$HOME_DIR" $IMG >/dev/null
"$BIN/dscli" mkfbvol -extpool P0 -cap $GIB -sam ese 1000 >/dev/null
VOLFILE=$VIEW/$IMG/1000
[ -f "$VOLFILE" ] || die "$VOLFILE is not there"
IO_BACKEND=$(grep -o 'io backend [a-z_]*' "$HOME_DIR/flashd.log" | head -1 | cut -d' ' -f3)

# ---- the plain side: a sparse file of the same size, same directory's disk --------------------
PLAIN=$W/plain.img
truncate -s ${GIB}G "$PLAIN"

setup() { # name file dio -> mounts ext4 at $W/mnt-name
    local name=$1 file=$2 dio=$3 dev
    dev=$(losetup -f --show --direct-io="$dio" "$file")
    LOOPS+=("$dev")
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dev"
    mkdir -p "$W/mnt-$name"
    mount "$dev" "$W/mnt-$name"
    MOUNTS+=("$W/mnt-$name")
    log "$name: $file on $dev, ext4 at $W/mnt-$name"
}
truncate -s ${GIB}G "$PLAIN-dio"
setup fuse "$VOLFILE" on
setup plain "$PLAIN" off
setup plain-dio "$PLAIN-dio" on

RAW=$W/raw.jsonl
: >"$RAW"
run_fio() { # round case
    local round=$1 case=$2 out
    sync
    out=$W/fio-$case-$round.json
    fio --name=randwrite --filename="$W/mnt-$case/fio.dat" --size=$FILE_SIZE --rw=randwrite --bs=64k \
        --iodepth=16 --ioengine=libaio --direct=1 --runtime="$SECS" --time_based --group_reporting \
        --output-format=json --output="$out" >/dev/null
    python3 - "$out" "$round" "$case" >>"$RAW" <<'EOF'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]["write"]
print(json.dumps({"round": int(sys.argv[2]), "case": sys.argv[3], "iops": job["iops"],
                  "mib_s": job["bw_bytes"] / 2**20, "clat_p50_us": job["clat_ns"]["percentile"]["50.000000"] / 1000,
                  "clat_p99_us": job["clat_ns"]["percentile"]["99.000000"] / 1000}))
EOF
    log "round $round $case: $(tail -1 "$RAW")"
}

for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="fuse plain plain-dio"; else order="plain-dio plain fuse"; fi
    for c in $order; do run_fio "$r" "$c"; done
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench-results
OUT=bench-results/fuse-$STAMP
META=$(printf '{"rounds":%s,"secs":%s,"volume_gib":%s,"fio_file":"%s","io_backend":"%s","kernel":"%s","cpus":%s,"commit":"%s"}' \
    "$ROUNDS" "$SECS" "$GIB" "$FILE_SIZE" "$IO_BACKEND" "$(uname -r)" "$(nproc)" "$(git rev-parse --short HEAD)")
python3 - "$RAW" "$META" "$OUT.json" "$OUT.md" <<'EOF'
import json, statistics, sys
raw, meta, out_json, out_md = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = [json.loads(l) for l in open(raw) if l.strip()]
def col(case, key):
    return [r[key] for r in sorted(rows, key=lambda r: r["round"]) if r["case"] == case]
def spread(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "values": xs}
CASES = ("fuse", "plain", "plain-dio")
res = {k: {c: spread(col(c, k)) for c in CASES} for k in ("iops", "mib_s", "clat_p50_us", "clat_p99_us")}
# Per-round ratios (rounds are interleaved, so a drift of the VM hits both sides alike).
res["ratio_fuse_over_plain"] = spread([f / p for f, p in zip(col("fuse", "iops"), col("plain", "iops"))])
res["ratio_fuse_over_plain_dio"] = spread([f / p for f, p in zip(col("fuse", "iops"), col("plain-dio", "iops"))])
json.dump({"meta": meta, "results": res, "raw": rows}, open(out_json, "w"), indent=1)
lines = [
    f"FUSE view vs plain loop: fio randwrite 64 KiB, libaio, iodepth 16, O_DIRECT, ext4 on a loop device, "
    f"{meta['rounds']} interleaved rounds x {meta['secs']} s, {meta['fio_file']} file on a {meta['volume_gib']} GiB volume "
    f"(flashd io backend {meta['io_backend']}, kernel {meta['kernel']}, {meta['cpus']} CPUs, commit {meta['commit']})",
    "",
    "| case | IOPS (median) | MiB/s (median) | IOPS min-max | p50 clat µs | p99 clat µs |",
    "|---|---|---|---|---|---|",
]
for c, name in (("fuse", "loop (dio) on flashtrack FUSE file"), ("plain", "loop (buffered) on plain file"),
                ("plain-dio", "loop (dio) on plain file")):
    i, m = res["iops"][c], res["mib_s"][c]
    lines.append(f"| {name} | {i['median']:.0f} | {m['median']:.0f} | {i['min']:.0f}-{i['max']:.0f} | "
                 f"{res['clat_p50_us'][c]['median']:.0f} | {res['clat_p99_us'][c]['median']:.0f} |")
r, d = res["ratio_fuse_over_plain"], res["ratio_fuse_over_plain_dio"]
lines += ["", f"FUSE / plain (buffered) IOPS, median of per-round ratios: **{r['median']:.2f}x** (min {r['min']:.2f}, max {r['max']:.2f})",
          "", f"FUSE / plain-dio IOPS, median of per-round ratios: {d['median']:.2f}x (min {d['min']:.2f}, max {d['max']:.2f})"]
open(out_md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
log "results: $OUT.json $OUT.md"
