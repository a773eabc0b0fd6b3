"""Stop the processes a dead local Ray node left behind.

When a driver that started its own Ray is killed (kill -9), Ray's GCS and raylet go with it
(they share its fate), and so do the trial workers, within seconds. Two agents do not: Ray 2.60's
dashboard agent and runtime-env agent notice that the raylet is gone, log that they are exiting,
and then hang for about a minute, reparented to init (measured: about 180 MB together, gone after
57 to 90 s; a resume started meanwhile ran beside them).

A process is the node's when any of these holds (measured on Ray 2.60):

- its environment says ``RAY_RAYLET_PID=<the node's raylet>``: the raylet sets it for every
  process it starts, the agents and the workers;
- its environment says ``RAY_NODE_ID=<node>``: the agents carry it only when they start after the
  driver has set it in its own environment, which is a race (under ``python -m tune.run`` they
  started without it, and a reaper that looked only for it left them running);
- its command line names the node's session folder (``--session-dir=``, ``--log_dir=``...): the
  GCS, the raylet, the log monitor and the dashboard's own processes, which carry neither.

The node is dead when no raylet started with ``--node_id=<node>`` runs any more. Only this user's
processes are looked at, and only those of a dead node are stopped, so a live Ray (this run's own,
or anyone else's) is never touched; a raylet pid that now belongs to a live raylet (a pid reused)
is not followed.

Run as a script (``python reaper.py NODE_ID [RAYLET_PID [SESSION_DIR]]``) by the driver right
after it starts Ray: it waits for the driver's end (its stdin closes, whether the driver exits or
is killed), then stops what the node left behind. Standard library only, so it costs a few MB
while it waits.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

PROC = Path("/proc")
POLL_S = 0.2  # how often the watchdog looks after the driver's end


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


def _is_raylet(args: list[bytes]) -> bool:
    return any(os.path.basename(a) == b"raylet" for a in args[:1])


def node_processes(node_id: str, raylet_pid: int | None = None,
                   session_dir: str | None = None) -> tuple[bool, list[int]]:
    """Whether the node's raylet still runs, and the pids of the node's other processes."""
    node_tag = f"RAY_NODE_ID={node_id}".encode()
    raylet_tag = f"RAY_RAYLET_PID={raylet_pid}".encode() if raylet_pid else None
    flag = f"--node_id={node_id}".encode()
    session = os.path.normpath(session_dir).encode() if session_dir else None
    processes = _own_processes()
    # A raylet pid that a live raylet holds now is that raylet's, never the dead node's.
    if raylet_tag and any(pid == raylet_pid and _is_raylet(c.split(b"\0"))
                          and flag not in c.split(b"\0") for pid, _, c in processes):
        raylet_tag = None
    raylet_alive, pids = False, []
    for pid, environ, cmdline in processes:
        args = cmdline.split(b"\0")
        if flag in args and _is_raylet(args):
            raylet_alive = True
            continue
        env = environ.split(b"\0")
        if (node_tag in env or (raylet_tag is not None and raylet_tag in env)
                or (session is not None and _names(args, session))):
            pids.append(pid)
    return raylet_alive, pids


def _names(args: list[bytes], session: bytes) -> bool:
    """Whether a command line has an option that names the session folder or a path inside it
    (``--session-dir=S``, ``--log_dir=S/logs``), as Ray's own processes do; a person's ``less
    S/logs/raylet.out`` does not."""
    return any(a.startswith(b"--") and (a.endswith(b"=" + session) or b"=" + session + b"/" in a)
               for a in args)


def reap(node_id: str | None, raylet_pid: int | None = None,
         session_dir: str | None = None) -> list[int]:
    """Kill the processes of ``node_id`` when its raylet is gone; the pids killed."""
    if not node_id:
        return []
    raylet_alive, pids = node_processes(node_id, raylet_pid, session_dir)
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


def wait_and_reap(node_id: str, raylet_pid: int | None = None, session_dir: str | None = None,
                  timeout: float = 60.0) -> None:
    """After the driver's end: stop what the node leaves once its raylet is gone (at once after
    kill -9; after Ray's own shutdown when the driver ended normally)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raylet_alive, pids = node_processes(node_id, raylet_pid, session_dir)
        if not raylet_alive:
            if not pids:
                return
            reap(node_id, raylet_pid, session_dir)
        time.sleep(POLL_S)


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 3 or (len(argv) > 1 and not argv[1].isdigit()):
        print("usage: reaper.py NODE_ID [RAYLET_PID [SESSION_DIR]]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver
    sys.stdin.buffer.read()  # until the driver ends
    wait_and_reap(argv[0], int(argv[1]) if len(argv) > 1 else None,
                  argv[2] if len(argv) > 2 else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
