#!/usr/bin/env bash
# The main job on a fresh machine: build flashtrack, make a throwaway site, create FB and CKD
# volumes with dscli, write and read them over NBD with qemu-io and qemu-img, and show what
# happened. Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || echo "demo: could not install qemu-utils; the NBD steps need qemu-io" >&2
echo "== building"
cargo build --workspace --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug
SITE=$(mktemp -d /tmp/flashtrack-demo.XXXXXX)
export FLASHTRACK_HOME=$SITE
cleanup() {
    if [ -f "$SITE/flashd.pid" ]; then
        kill -TERM "$(cat "$SITE/flashd.pid")" 2>/dev/null || true
        for _ in $(seq 50); do [ -f "$SITE/flashd.pid" ] || break; sleep 0.1; done
    fi
    rm -rf "$SITE"
}
trap cleanup EXIT
step() { printf '\n$ %s\n' "$*"; "$@"; }
IMG=IBM.2107-75FA120
NBD="nbd+unix:///$IMG/1000?socket=$SITE/nbd.sock"

echo "== a throwaway site in $SITE"
step "$BIN/flashd" image create "$IMG"
# dscli starts flashd in the background on first use, like a DS CLI talking to its HMC.
step "$BIN/dscli" lssi -l
step "$BIN/dscli" mkfbvol -dev "$IMG" -extpool P0 -cap 1 -sam ese -name demo_#h 1000-1001
step "$BIN/dscli" mklcu -dev "$IMG" -qty 1 -id 20 -ss 2000
step "$BIN/dscli" mkckdvol -dev "$IMG" -extpool P2 -cap 3339 -name ckd_#h 2000
echo
echo "== a host writes and reads volume 1000 over NBD (qemu-io, a real NBD client)"
step qemu-io -f raw "$NBD" -c 'write -P 0xab 0 4M' -c 'write -P 0xcd 512M 1M' -c 'read -P 0xab 0 4M' -c 'read -P 0 4M 1M' -c flush
step qemu-img info "$NBD"
step "$BIN/flashio" --socket "$SITE/nbd.sock" checksum "$IMG/1000"
step "$BIN/flashio" --socket "$SITE/nbd.sock" compare "$IMG/1000" "$IMG/1001" || echo "(they differ, as they should: only 1000 was written)"
step "$BIN/dscli" lsfbvol -dev "$IMG" -l
step "$BIN/dscli" lsckdvol -dev "$IMG"
step "$BIN/dscli" lsextpool -dev "$IMG"
echo
echo "== sparse usage: 1 GiB volumes, only what was written is allocated"
step du -h --apparent-size "$SITE/$IMG/pools/P0/${IMG}_1000.vol"
step du -h "$SITE/$IMG/pools/P0/${IMG}_1000.vol"
step "$BIN/dscli" rmfbvol -dev "$IMG" -quiet 1001
echo
echo "== flashd log"
cat "$SITE/flashd.log"
echo
echo "demo: done (the site is removed on exit)"
