"""What a killed driver's own Ray leaves running: record the node, start the watchdog
(`tune.ray_edge.reaper`), stop what a dead node left behind."""

from __future__ import annotations

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


def reap_node(node_id: str | None) -> list[int]:
    """Stop the processes of a dead local Ray node (a killed driver's); the pids stopped."""
    from tune.ray_edge import reaper

    return reaper.reap(node_id) if node_id and known() else []


def start_reaper(node_id: str | None) -> subprocess.Popen[bytes] | None:
    """A watchdog that outlives this driver and stops what its Ray node leaves behind, even after
    kill -9. Returns the process (its stdin, held open by this driver, is the signal); None where
    there is nothing to watch."""
    import sys

    if not node_id or not known() or not Path("/proc").is_dir():
        return None
    script = Path(__file__).with_name("reaper.py")
    return subprocess.Popen([sys.executable, "-I", str(script), node_id], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)

