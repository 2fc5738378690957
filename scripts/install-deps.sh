#!/usr/bin/env bash
# Installs the host tools the tests and the demo use (real NBD clients, filesystems, fio),
# when they are missing and we may (root with apt). Tests that still lack a tool say why they
# skip. Safe to run repeatedly.
set -u
need=()
command -v qemu-io  >/dev/null 2>&1 || need+=(qemu-utils)
command -v nbdinfo  >/dev/null 2>&1 || need+=(libnbd-bin)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v mkfs.xfs >/dev/null 2>&1 || need+=(xfsprogs)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v fio      >/dev/null 2>&1 || need+=(fio)
command -v losetup  >/dev/null 2>&1 || need+=(mount)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing ${need[*]} and cannot install them here (need root and apt-get)" >&2
    exit 1
fi
echo "install-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null
