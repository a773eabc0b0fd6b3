"""Stop the processes of a local Ray node whose driver is gone.

When a driver that started its own Ray is killed (kill -9), Ray's GCS and raylet go with it
(they share its fate), and so do the trial workers, within a second. Two agents do not: Ray
2.60's dashboard agent and runtime-env agent notice that the raylet is gone, log that they are
exiting, and then hang for about a minute, reparented to init (measured: about 180 MB together,
gone after 57 to 90 s; a resume started meanwhile ran beside them).

Which processes are the node's (measured on Ray 2.60, bench/reaper_kill.py):

- the raylet's children: the agents and the workers. Once the raylet is gone they are init's, so
  the watchdog notes them (pid and start time, against a reused pid) while the driver runs;
- a process whose environment says ``RAY_RAYLET_PID=<the node's raylet>`` or ``RAY_NODE_ID=<node>``:
  the workers carry the first. The agents carry them only sometimes: ``RAY_NODE_ID`` only when
  they start after the driver set it in its own environment, and in one start of five neither
  was in their ``/proc/PID/environ`` (most likely overwritten by their process title, which
  ``setproctitle`` writes into that memory). Hence the note above;
- a process whose command line names the node's session folder (``--session-dir=``,
  ``--log_dir=``...): the GCS, the raylet, the log monitor and the dashboard's own processes;
- the raylet itself (``--node_id=<node>``): it may outlive the driver, waiting for its GCS.

Only this user's processes are looked at, and only for the node that this driver started, once
the driver is gone: the node is of no use without it. A live Ray (anyone else's) is never
touched; a raylet pid that now belongs to another node's raylet (a pid reused) is not followed.

Run as a script (``python reaper.py NODE_ID [RAYLET_PID [SESSION_DIR]]``) by the driver right
after it starts Ray: it watches until the driver's end (its stdin closes, whether the driver
exits or is killed), then stops what the node left behind. Standard library only, so it costs a
few MB while it waits.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path

PROC = Path("/proc")
POLL_S = 0.2  # how often the watchdog looks after the driver's end
NOTE_S = 1.0  # how often it notes the raylet's children while the driver runs


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


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a running process; None: gone or a zombie."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[19]))


def children(parent: int) -> dict[int, int]:
    """Every process below ``parent`` (pid -> start time), this user's or not."""
    below: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    try:
        entries = [e.name for e in os.scandir(PROC) if e.name.isdigit()]
    except OSError:
        return {}
    for name in entries:
        stat = _stat(int(name))
        if stat is not None:
            below.setdefault(stat[0], []).append(int(name))
            started[int(name)] = stat[1]
    out, todo = {}, [parent]
    while todo:
        for child in below.get(todo.pop(), []):
            out[child] = started[child]
            todo.append(child)
    return out


def _is_raylet(args: list[bytes]) -> bool:
    return any(os.path.basename(a) == b"raylet" for a in args[:1])


def node_processes(node_id: str, raylet_pid: int | None = None,
                   session_dir: str | None = None) -> tuple[bool, list[int]]:
    """Whether the node's raylet still runs, and the pids of the node's other processes that
    say so themselves (environment, command line)."""
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


def _raylets(node_id: str) -> list[int]:
    flag = f"--node_id={node_id}".encode()
    return [pid for pid, _, cmdline in _own_processes()
            if flag in cmdline.split(b"\0") and _is_raylet(cmdline.split(b"\0"))]


def reap(node_id: str | None, raylet_pid: int | None = None, session_dir: str | None = None,
         noted: dict[int, int] | None = None) -> list[int]:
    """Kill every process of ``node_id`` (its raylet, what says it is the node's, and the
    ``noted`` children of its raylet that still run with the start time noted); the pids
    killed. Only for the node of a driver that is gone."""
    if not node_id:
        return []
    pids = [*_raylets(node_id), *node_processes(node_id, raylet_pid, session_dir)[1]]
    for pid, started in (noted or {}).items():
        stat = _stat(pid)
        if stat is not None and stat[1] == started:
            pids.append(pid)
    killed = []
    for pid in dict.fromkeys(pids):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            pass
    return killed


def wait_and_reap(node_id: str, raylet_pid: int | None = None, session_dir: str | None = None,
                  noted: dict[int, int] | None = None, timeout: float = 10.0) -> None:
    """After the driver's end: stop every process of the node, until none is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not reap(node_id, raylet_pid, session_dir, noted):
            return
        time.sleep(POLL_S)


def watch(raylet_pid: int | None) -> dict[int, int]:
    """Until this process's stdin closes (the driver's end), note the raylet's children every
    ``NOTE_S``; what was noted (pid -> start time)."""
    noted: dict[int, int] = {}
    fd = sys.stdin.buffer.fileno()
    while True:
        if raylet_pid:
            noted.update(children(raylet_pid))
        ready, _, _ = select.select([fd], [], [], NOTE_S)
        if ready and not os.read(fd, 4096):
            return noted


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 3 or (len(argv) > 1 and not argv[1].isdigit()):
        print("usage: reaper.py NODE_ID [RAYLET_PID [SESSION_DIR]]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver
    raylet_pid = int(argv[1]) if len(argv) > 1 and int(argv[1]) > 0 else None
    noted = watch(raylet_pid)
    wait_and_reap(argv[0], raylet_pid, argv[2] if len(argv) > 2 else None, noted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
