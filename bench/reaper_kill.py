"""How soon nothing is left of a search's own Ray after kill -9 of its driver.

    python bench/reaper_kill.py [--rounds 3] [--json OUT.json]        (under the lock)

Each round starts ``python -m tune.run --space smoke`` (no --address: the driver starts its own
Ray and its watchdog), waits for the first checkpointed result, notes every process below the
driver (GCS, raylet, dashboard, the dashboard and runtime-env agents, workers, the watchdog),
kills the driver with SIGKILL and times until none of them runs. Unwatched, Ray 2.60's two agents
lived on for about a minute (57-90 s measured). `descendants` and `running` are what
tests/test_search_resilience.py uses to find and watch the same processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AGENTS = {"ray::DashboardAgent", "ray::RuntimeEnvAgent"}


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root`` (pid -> its command name), found by parent pids."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        names[int(entry.name)] = cmd
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = names[child]
            todo.append(child)
    return out


def running(pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` that still run (a zombie waiting for its parent does not)."""
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.append(pid)
    return left


def one_round(root: Path, k: int) -> dict[str, object]:
    storage = root / f"runs{k}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    log = root / f"driver{k}.log"
    with open(log, "wb") as out:
        driver = subprocess.Popen([sys.executable, "-m", "tune.run", "--space", "smoke",
                                   "--storage", str(storage), "--name", "k"], cwd=REPO, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not any(storage.glob("k/trial_*/checkpoint_*")):
            if driver.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no checkpoint: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        processes = descendants(driver.pid)
        tags = {p: _tags(p) for p in processes}
        os.kill(driver.pid, signal.SIGKILL)
        killed = time.monotonic()
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    agents_gone = all_gone = None
    gone: dict[int, float] = {}
    while time.monotonic() - killed < 120:
        left = running(processes)
        now = time.monotonic() - killed
        for p in set(processes) - set(left) - set(gone):
            gone[p] = round(now, 2)
        if agents_gone is None and not [p for p in left if processes[p] in AGENTS]:
            agents_gone = now
        if not left:
            all_gone = now
            break
        time.sleep(0.05)
    return {"processes": sorted(set(processes.values())), "agents_gone_s": agents_gone,
            "all_gone_s": all_gone, "left": {p: processes[p] for p in running(processes)},
            "each": {f"{p} {processes[p].rsplit('/', 1)[-1]} {tags[p]}": gone.get(p)
                     for p in processes}}


def _tags(pid: int) -> str:
    """Which of Ray's marks a process carried, and the watchdog's own arguments."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    marks = [e.split(b"=")[0].decode() for e in env
             if e.startswith((b"RAY_RAYLET_PID=", b"RAY_NODE_ID="))]
    if any(a.endswith(b"reaper.py") for a in cmd):
        marks.append("reaper " + " ".join(a.decode()[:16] for a in cmd[3:]))
    return ",".join(marks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="reaper-"))
    try:
        rounds = [one_round(root, k) for k in range(args.rounds)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    gone = [r["all_gone_s"] for r in rounds if r["all_gone_s"] is not None]
    summary = {"rounds": rounds, "median_all_gone_s": statistics.median(gone) if gone else None,
               "max_all_gone_s": max(gone) if gone else None}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if len(gone) == len(rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
