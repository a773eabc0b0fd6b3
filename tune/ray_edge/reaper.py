"""Stop the processes a dead local Ray node left behind.

When a driver that started its own Ray is killed (kill -9), Ray's GCS and raylet go with it
(they share its fate), and so do the trial workers. Two agents do not: Ray 2.60's dashboard
agent and runtime-env agent notice that the raylet is gone, log that they are exiting, and then
hang for about a minute, reparented to init (measured: about 180 MB together, gone after 57 to
90 s; a resume started meanwhile ran beside them).

A process belongs to a node when its environment says ``RAY_NODE_ID=<node>``, which Ray sets
for every process the raylet starts; the node is dead when no raylet started with
``--node_id=<node>`` runs any more. Only this user's processes are looked at, and only those of a
dead node are stopped, so a live Ray (this run's own, or anyone else's) is never touched.

Run as a script (``python reaper.py NODE_ID``) by the driver right after it starts Ray: it waits
for the driver's end (its stdin closes, whether the driver exits or is killed), then stops what
the node left behind. Standard library only, so it costs a few MB while it waits.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

PROC = Path("/proc")


def _own_processes() -> list[tuple[int, bytes, bytes]]:
    """(pid, environ, cmdline) of this user's processes; empty where there is no /proc."""
    out = []
    uid, me = os.getuid(), os.getpid()
    try:
        entries = list(os.scandir(PROC))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            environ = (PROC / entry.name / "environ").read_bytes()
            cmdline = (PROC / entry.name / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not readable
            continue
        out.append((int(entry.name), environ, cmdline))
    return out


def node_processes(node_id: str) -> tuple[bool, list[int]]:
    """Whether the node's raylet still runs, and the pids of the node's other processes."""
    tag = f"RAY_NODE_ID={node_id}".encode()
    flag = f"--node_id={node_id}".encode()
    raylet_alive, pids = False, []
    for pid, environ, cmdline in _own_processes():
        args = cmdline.split(b"\0")
        if flag in args and any(os.path.basename(a) == b"raylet" for a in args):
            raylet_alive = True
        elif tag in environ.split(b"\0"):
            pids.append(pid)
    return raylet_alive, pids


def reap(node_id: str) -> list[int]:
    """Kill the processes of ``node_id`` when its raylet is gone; the pids killed."""
    if not node_id:
        return []
    raylet_alive, pids = node_processes(node_id)
    if raylet_alive:
        return []
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            pass
    return killed


def wait_and_reap(node_id: str, timeout: float = 60.0) -> None:
    """After the driver's end: give Ray's own shutdown time, then stop what is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raylet_alive, pids = node_processes(node_id)
        if not raylet_alive:
            if pids:
                reap(node_id)
                time.sleep(0.5)
                continue
            return
        time.sleep(0.5)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: reaper.py NODE_ID", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver
    sys.stdin.buffer.read()  # until the driver ends
    wait_and_reap(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
