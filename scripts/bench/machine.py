#!/usr/bin/env python3
"""What a benchmark report says of the machine and the noise: the facts every bench script
records (CPU, kernel, memory, fio, the commit), the load average samples taken during the
run, and the CPU busy/steal share from two /proc/stat lines. Prints one JSON object, the
script's own fields (a JSON object, the last argument) merged in.

    machine.py LOAD_FILE STAT0 STAT1 ROOT WALL_SECS OTHERS EXTRA_JSON
"""

import json
import statistics
import subprocess
import sys


def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""


def main():
    load_file, stat0, stat1, root, wall, others, extra = sys.argv[1:8]
    load = [float(line.split()[1]) for line in open(load_file) if line.strip()] or [0.0]
    s0, s1 = [list(map(int, x.split()[1:])) for x in (stat0, stat1)]
    d = [b - a for a, b in zip(s0, s1)]
    total = sum(d) or 1
    idle = d[3] + d[4]  # idle + iowait
    dirty = sh(f"git -C {root} status --porcelain -- engine cli")
    meta = {
        "nproc": sh("nproc"),
        "kernel": sh("uname -r"),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "mem": sh("free -g | awk '/Mem:/{print $2\" GiB RAM\"}'"),
        "fio": sh("fio --version"),
        "git": sh(f"git -C {root} rev-parse --short HEAD") + (" (dirty)" if dirty else ""),
        "wall_secs": float(wall),
        "load": {"median": statistics.median(load), "min": min(load), "max": max(load), "samples": len(load)},
        "cpu_busy_pct": 100.0 * (total - idle) / total,
        "cpu_steal_pct": 100.0 * (d[7] if len(d) > 7 else 0) / total,
        "others": others,
    }
    meta.update(json.loads(extra))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
