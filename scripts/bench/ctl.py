#!/usr/bin/env python3
"""Timed protocol steps for scripts/bench.sh (standard library only).

flashtrack side: JSON lines over the site's control.sock (flashtrack::control, protocol v3).
QEMU side: QMP over qemu-storage-daemon's monitor socket.

Every timed subcommand prints one JSON object on stdout: {"secs": ..., ...}. The clock is
time.monotonic(), started just before the request line is written and stopped when the reply
(flashtrack: the FlashWait reply with out_of_sync 0) or the event (QEMU: BLOCK_JOB_COMPLETED)
is read.
"""
import json
import socket
import sys
import time

PROTOCOL = 3
WAIT_MS = 600_000


def die(msg, prog="ctl.py"):
    print(f"{prog}: {msg}", file=sys.stderr)
    sys.exit(1)


class Control:
    """flashd control socket: one request line out, one response line back."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.f = self.s.makefile("rb")

    def call(self, request):
        self.s.sendall(json.dumps({"version": PROTOCOL, "request": request}).encode() + b"\n")
        line = self.f.readline()
        if not line:
            die("flashd closed the control connection")
        return json.loads(line)


class StrictControl(Control):
    """The control connection for the benchmark drivers: answers `Ok`'s payload, and a
    refused request ends the run with `prog`'s name."""

    prog = "ctl.py"

    def call(self, request):
        resp = super().call(request)
        if "Err" in resp:
            die(f"{next(iter(request))}: {resp['Err']}", self.prog)
        return resp["Ok"]


def options(record=True, persist=True):
    return {
        "record": record,
        "persist": persist,
        "nocopy": False,
        "tgtinhibit": False,
        "freeze": False,
        "tgtpprc": False,
        "tgtoffline": False,
        "tgtse": False,
        "seqnum": 0,
    }


def check_items(resp, what):
    ok = resp.get("Ok")
    if not isinstance(ok, dict) or "Items" not in ok:
        die(f"{what}: unexpected reply {resp}")
    for item in ok["Items"]:
        if "Err" in item["result"]:
            die(f"{what}: {item['object']}: {item['result']['Err']}")


def wait_view(c, image, pair):
    resp = c.call({"FlashWait": {"image": image, "pairs": [pair], "timeout_ms": WAIT_MS}})
    views = resp.get("Ok", {}).get("Flash")
    if views is None:
        die(f"FlashWait: unexpected reply {resp}")
    for v in views:
        if [v["record"]["source"], v["record"]["target"]] == pair:
            return v
    die(f"FlashWait: pair {pair} missing from {resp}")


def flash(sock, verb, image, src, tgt):
    """mkflash/resyncflash -record -persist, then FlashWait: seconds from the request to the
    wait reply with out_of_sync 0."""
    pair = [src, tgt]
    c = Control(sock)
    if verb == "create":
        req = {"FlashCreate": {"image": image, "pairs": [pair], "options": options()}}
    else:
        req = {"FlashResync": {"image": image, "pairs": [pair], "options": options(), "seqnum": None}}
    t0 = time.monotonic()
    resp = c.call(req)
    t1 = time.monotonic()
    check_items(resp, verb)
    v = wait_view(c, image, pair)
    t2 = time.monotonic()
    if v["out_of_sync"] != 0:
        die(f"{verb}: FlashWait timed out with {v['out_of_sync']} tracks out of sync")
    print(json.dumps({"secs": t2 - t0, "request_secs": t1 - t0, "copied": v["copied"]}))


def flash_remove(sock, image, src, tgt):
    c = Control(sock)
    resp = c.call({"FlashList": {"image": image}})
    views = resp.get("Ok", {}).get("Flash", [])
    if not any([v["record"]["source"], v["record"]["target"]] == [src, tgt] for v in views):
        return
    wd = {"tgtonly": False, "cp": False, "resettgtinhibit": False, "seqnum": None}
    check_items(c.call({"FlashRemove": {"image": image, "pairs": [[src, tgt]], "withdraw": wd}}), "rmflash")


def flash_state(sock, image, src, tgt):
    c = Control(sock)
    resp = c.call({"FlashList": {"image": image}})
    for v in resp.get("Ok", {}).get("Flash", []):
        if [v["record"]["source"], v["record"]["target"]] == [src, tgt]:
            print(json.dumps({"out_of_sync": v["out_of_sync"], "copied": v["copied"], "state": v["record"]["state"]}))
            return
    die("no such relationship")


def watch_copy(sock, image, src, tgt, secs):
    """Polls one relationship every 0.1 s on one connection for `secs` seconds (or until its
    copy ends) and prints {"copy_secs": seconds until out_of_sync reached 0 or null,
    "copy_mib_s": the copier's rate over the watch}. One process for the whole watch: a
    python3 start per poll costs ~0.2 s of CPU here, which on 2 vCPUs would be taken from the
    very host I/O being measured."""
    c = Control(sock)

    def oos():
        for v in c.call({"FlashList": {"image": image}}).get("Ok", {}).get("Flash", []):
            if [v["record"]["source"], v["record"]["target"]] == [src, tgt]:
                return v["out_of_sync"]
        die("no such relationship")

    t0 = time.monotonic()
    first = last = oos()
    done = None
    while time.monotonic() - t0 < secs:
        last = oos()
        if last == 0:
            done = round(time.monotonic() - t0, 2)
            break
        time.sleep(0.1)
    rate = (first - last) * 64 / 1024 / max(time.monotonic() - t0, 1e-3)
    print(json.dumps({"copy_secs": done, "copy_mib_s": round(rate, 1)}))


def backend(sock):
    c = Control(sock)
    resp = c.call("Hello")
    print(resp["Ok"]["Hello"]["io_backend"])


class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.f = self.s.makefile("rb")
        self.events = []
        self.read()  # greeting
        self.cmd("qmp_capabilities")

    def read(self):
        line = self.f.readline()
        if not line:
            die("qemu-storage-daemon closed the QMP connection")
        return json.loads(line)

    def send(self, execute, arguments=None):
        msg = {"execute": execute}
        if arguments is not None:
            msg["arguments"] = arguments
        self.s.sendall(json.dumps(msg).encode() + b"\n")

    def reply(self, what):
        while True:
            m = self.read()
            if "event" in m:
                self.events.append(m)
                continue
            if "error" in m:
                die(f"QMP {what}: {m['error']}")
            return m["return"]

    def cmd(self, execute, arguments=None):
        self.send(execute, arguments)
        return self.reply(execute)

    def event(self, name, job):
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name and e.get("data", {}).get("device") == job:
                    return self.events.pop(i)
            m = self.read()
            if "event" in m:
                self.events.append(m)


def qmp_backup(path, mode, src, tgt, bitmap):
    """full: one transaction clears the bitmap and starts a full backup (the bitmap then
    records from that instant on, like mkflash -record). bitmap: blockdev-backup
    sync=bitmap bitmap-mode=on-success. Seconds from the command to BLOCK_JOB_COMPLETED."""
    q = Qmp(path)
    job = f"bk{int(time.monotonic() * 1000)}"
    backup = {"job-id": job, "device": src, "target": tgt}
    if mode == "full":
        backup["sync"] = "full"
        args = {
            "actions": [
                {"type": "block-dirty-bitmap-clear", "data": {"node": src, "name": bitmap}},
                {"type": "blockdev-backup", "data": backup},
            ]
        }
        t0 = time.monotonic()
        q.send("transaction", args)
    else:
        backup.update({"sync": "bitmap", "bitmap": bitmap, "bitmap-mode": "on-success"})
        t0 = time.monotonic()
        q.send("blockdev-backup", backup)
    q.reply(mode)
    e = q.event("BLOCK_JOB_COMPLETED", job)
    t1 = time.monotonic()
    d = e["data"]
    if d.get("error"):
        die(f"backup job failed: {d['error']}")
    print(json.dumps({"secs": t1 - t0, "bytes": d.get("len"), "offset": d.get("offset")}))


def qmp_bitmap_add(path, node, name):
    q = Qmp(path)
    q.cmd("block-dirty-bitmap-add", {"node": node, "name": name, "granularity": 65536})


def qmp_bitmap_count(path, node, name):
    q = Qmp(path)
    for n in q.cmd("query-named-block-nodes", {"flat": True}):
        if n.get("node-name") == node:
            for b in n.get("dirty-bitmaps", []):
                if b.get("name") == name:
                    print(b["count"] // 65536)
                    return
    die("bitmap not found")


def qmp_quit(path):
    q = Qmp(path)
    q.send("quit")


def main():
    if len(sys.argv) < 2:
        die("usage: ctl.py COMMAND ARGS...")
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd in ("create", "resync"):
        flash(a[0], cmd, a[1], int(a[2], 16), int(a[3], 16))
    elif cmd == "remove":
        flash_remove(a[0], a[1], int(a[2], 16), int(a[3], 16))
    elif cmd == "state":
        flash_state(a[0], a[1], int(a[2], 16), int(a[3], 16))
    elif cmd == "watch":
        watch_copy(a[0], a[1], int(a[2], 16), int(a[3], 16), float(a[4]))
    elif cmd == "backend":
        backend(a[0])
    elif cmd == "qmp-backup":
        qmp_backup(a[0], a[1], a[2], a[3], a[4])
    elif cmd == "qmp-bitmap-add":
        qmp_bitmap_add(a[0], a[1], a[2])
    elif cmd == "qmp-bitmap-count":
        qmp_bitmap_count(a[0], a[1], a[2])
    elif cmd == "qmp-quit":
        qmp_quit(a[0])
    else:
        die(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
