"""What a killed driver's own Ray leaves running: record the node, start the watchdog
(`tune.ray_edge.reaper`), stop what a dead node left behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tune.ray_edge.version import known


def local_node_id() -> str | None:
    """The id of the Ray node this driver started (call after ``ray.init``), recorded so that a
    resume can stop what a killed driver's node left behind."""
    import ray

    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # noqa: BLE001 - another Ray version: no reaping, never a failed start
        return None


def reap_node(node_id: str | None, session_dir: str | None = None) -> list[int]:
    """Stop the processes of a killed driver's local Ray node (the resume's second look after the
    watchdog's); the pids stopped."""
    from tune.ray_edge import reaper

    return reaper.reap(node_id, session_dir=session_dir) if node_id and known() else []


def raylet_pid(node_id: str) -> int | None:
    """The pid of the raylet of ``node_id`` running on this machine (None: none found)."""
    from tune.ray_edge import reaper

    flag = f"--node_id={node_id}".encode()
    for pid, _, cmdline in reaper._own_processes():
        args = cmdline.split(b"\0")
        if flag in args and os.path.basename(args[0]) == b"raylet":
            return pid
    return None


def start_reaper(node_id: str | None, session_dir: str | None) -> subprocess.Popen[bytes] | None:
    """A watchdog that outlives this driver and stops every process of its Ray node when the
    driver ends, even by kill -9 (`tune.ray_edge.reaper`). Returns the process (its stdin, held
    open by this driver, is the signal); None where there is nothing to watch."""
    import sys

    if not node_id or not known() or not Path("/proc").is_dir():
        return None
    raylet = raylet_pid(node_id)
    script = Path(__file__).with_name("reaper.py")
    args = [node_id, str(raylet or 0), *([session_dir] if session_dir else [])]
    return subprocess.Popen([sys.executable, "-I", str(script), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)

