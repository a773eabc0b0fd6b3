"""A real two-node Ray cluster on one machine, and a search that loses a node mid-trial.

    python bench/two_nodes.py [--space smoke] [--json OUT.json]      (as root; under the lock)

Two network namespaces joined by a veth pair, each with its own address (head 10.231.0.1, worker
10.231.0.2) and no route anywhere else, so nothing sent inside them leaves them. In them, Ray
nodes started with ``ray start`` exactly as docs/clusters.md says (token generated with ``ray
get-auth-token --generate``, ``RAY_AUTH_MODE=token`` on the head, the worker and ``ray status``,
``--node-ip-address`` on both, the driver given ``--ray-token-file``). The search's driver runs
in the head's namespace; once a trial on the worker node has reported an epoch, every process
of the worker node (its raylet, agents and trial workers) is killed by PID, as a machine that
dies. Measured: wall time, attempts and trials on each node, and for the trial that lost its
node the epochs lost and redone and the seconds from the kill to its retry's first result; also
how long the driver takes to refuse an address where no Ray answers, and a refused token.

The nodes' HOME (``~/.ray/auth_token``) and Ray's temp folder (``RAY_TMPDIR``: session folders
and the ``ray_current_cluster`` record) are in a folder of their own, removed at the end, so
neither the user's token nor the record that ``ray.init`` and ``--address auto`` read is
touched. At the end (also on failure) every process in the two namespaces is stopped by PID and
the namespaces are deleted; ``ray stop``, which stops every Ray on the machine, is never used.

`TwoHosts`, `start_cluster` and `search_and_kill` are what tests/test_cluster.py runs too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HEAD_IP, WORKER_IP = "10.231.0.1", "10.231.0.2"
PORT = 6379
ADDRESS = f"{HEAD_IP}:{PORT}"
UNUSED_IP = "10.231.0.9"  # on the namespaces' network, where no host answers


class NamespacesUnavailable(Exception):
    """Network namespaces cannot be made here; the message says why."""


def unavailable() -> str | None:
    """Why this machine cannot have the two namespaces (None: it may)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to make network namespaces"
    if not Path("/proc/self/ns/net").exists():
        return "no network namespaces in this kernel (/proc/self/ns/net)"
    return None


class TwoHosts:
    """Two network namespaces, ``head`` and ``worker``, joined by a veth pair (10.231.0.1/24 and
    10.231.0.2/24), loopback up, no other link or route. Names carry this process's pid, so two
    runs on one machine do not meet. `close` stops every process inside them (by PID) and
    deletes them."""

    def __init__(self) -> None:
        tag = f"e{os.getpid() % 1_000_000}"
        self.names = {"head": f"{tag}h", "worker": f"{tag}w"}
        self._veth = (f"{tag}a", f"{tag}b")
        self._made: list[str] = []

    def __enter__(self) -> TwoHosts:
        reason = unavailable()
        if reason:
            raise NamespacesUnavailable(reason)
        try:
            head, worker = self.names["head"], self.names["worker"]
            a, b = self._veth
            for name in (head, worker):
                _ip("netns", "add", name)
                self._made.append(name)
            _ip("link", "add", a, "type", "veth", "peer", "name", b)
            _ip("link", "set", a, "netns", head)
            _ip("link", "set", b, "netns", worker)
            for name, dev, addr in ((head, a, HEAD_IP), (worker, b, WORKER_IP)):
                _ip("-n", name, "addr", "add", f"{addr}/24", "dev", dev)
                _ip("-n", name, "link", "set", dev, "up")
                _ip("-n", name, "link", "set", "lo", "up")
        except (OSError, subprocess.CalledProcessError) as e:
            self.close()
            detail = getattr(e, "stderr", None) or str(e)
            raise NamespacesUnavailable(f"cannot make network namespaces: {detail}".strip()) \
                from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.names[host], *argv]

    def pids(self, host: str) -> list[int]:
        """Every process inside ``host``'s namespace (they are all this run's)."""
        try:
            ns = os.stat(f"/run/netns/{self.names[host]}")
        except OSError:
            return []
        out = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                st = os.stat(f"/proc/{entry.name}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (ns.st_dev, ns.st_ino):
                out.append(int(entry.name))
        return out

    def kill(self, host: str) -> list[int]:
        """SIGKILL every process in ``host``'s namespace, by PID, until none is left; the pids."""
        killed: list[int] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = [p for p in self.pids(host) if p not in killed or _alive(p)]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                killed.append(pid)
            time.sleep(0.1)
        return sorted(set(killed))

    def close(self) -> None:
        for host in ("worker", "head"):
            if self.names[host] in self._made:
                self.kill(host)
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self._made.clear()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _status(pid)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return ""


# --- the cluster ---------------------------------------------------------------------------------
@dataclass
class Cluster:
    hosts: TwoHosts
    root: Path  # the nodes' HOME and RAY_TMPDIR live here
    env: dict[str, str]  # the environment of every command run against the cluster
    commands: list[str] = field(default_factory=list)  # what was run, for docs/clusters.md

    @property
    def token_file(self) -> Path:
        return self.root / "home" / ".ray" / "auth_token"

    def run(self, host: str, argv: Sequence[str], timeout: float = 120,
            **env: str) -> subprocess.CompletedProcess[str]:
        self.commands.append(" ".join([*(f"{k}={v}" for k, v in env.items()), *argv]))
        return subprocess.run(self.hosts.command(host, argv), env={**self.env, **env},
                              capture_output=True, text=True, timeout=timeout, check=False)

    def popen(self, host: str, argv: Sequence[str], out: Path, **env: str
              ) -> subprocess.Popen[bytes]:
        with open(out, "wb") as f:
            return subprocess.Popen(self.hosts.command(host, argv), env={**self.env, **env},
                                    stdout=f, stderr=subprocess.STDOUT)

    def nodes(self) -> int:
        """Alive nodes, as ``ray status`` (token mode, as the docs say) counts them."""
        done = self.run("head", [_ray(), "status", f"--address={ADDRESS}"], timeout=60,
                        RAY_AUTH_MODE="token")
        active = done.stdout.split("Active:")[1].split("Pending:")[0] if "Active:" in \
            done.stdout else ""
        return sum(1 for line in active.splitlines() if "node_" in line)


def _ray() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else "ray"


def start_cluster(hosts: TwoHosts, root: Path, cache: Path) -> Cluster:
    """Token, head and worker as docs/clusters.md says, each node with one CPU; returns once
    ``ray status`` sees both nodes."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")}
    env.update(HOME=str(home), RAY_TMPDIR=str(root / "tmp"), ESPCN_TUNE_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
               RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    (root / "tmp").mkdir(exist_ok=True)
    cluster = Cluster(hosts, root, env)
    steps = [
        ("head", [_ray(), "get-auth-token", "--generate"], {}),
        ("head", [_ray(), "start", "--head", f"--node-ip-address={HEAD_IP}", f"--port={PORT}",
                  "--num-cpus=1", "--num-gpus=0", "--include-dashboard=false"],
         {"RAY_AUTH_MODE": "token"}),
        ("worker", [_ray(), "start", f"--address={ADDRESS}", f"--node-ip-address={WORKER_IP}",
                    "--num-cpus=1", "--num-gpus=0"], {"RAY_AUTH_MODE": "token"}),
    ]
    for host, argv, extra in steps:
        done = cluster.run(host, argv, **extra)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} (in {host}) exited {done.returncode}:\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    deadline = time.monotonic() + 60
    while cluster.nodes() < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("ray status never showed two nodes")
        time.sleep(1)
    return cluster


@contextmanager
def two_node_cluster(root: Path, cache: Path) -> Iterator[Cluster]:
    """Namespaces and a cluster in them, both gone afterwards (also on failure)."""
    with TwoHosts() as hosts:
        yield start_cluster(hosts, root, cache)


# --- the search, and the node lost mid-trial ---------------------------------------------------
@dataclass
class NodeLoss:
    """What a search on the cluster did when the worker node was killed."""

    rc: int
    output: str
    wall_s: float
    run_dir: str
    attempts_per_node: dict[str, int]  # node IP -> attempts started there
    trials_per_node: dict[str, int]  # node IP -> trials whose first attempt ran there
    killed_trial: str | None  # the trial folder whose attempt died with the node
    killed_pids: list[int]
    epoch_at_kill: int  # the killed trial's last epoch reported before the kill
    resumed_from: int | None  # the epoch its retry resumed from
    epochs_lost: int  # reported before the kill, missing from result.json at the end
    epochs_redone: int  # reported again after the kill, or twice
    kill_to_retry_line_s: float | None  # from the kill to the driver's [retry] line (Ray saw it)
    kill_to_retry_start_s: float | None  # from the kill to the retry's start (its placement)
    kill_to_retry_result_s: float | None  # from the kill to the retry's first new result
    readme_during_run: str  # the run's README.txt as it was when the node was killed


def search_and_kill(cluster: Cluster, storage: Path, name: str, space: str, data: str,
                    extra: Sequence[str] = (), timeout: float = 600) -> NodeLoss:
    """Run the search from the head's namespace; once a trial on the worker node has reported an
    epoch (and the driver has not ended it), kill every process of the worker node by PID."""
    run_dir = storage / name
    log = storage / f"{name}.log"
    storage.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "tune.run", "--space", space, "--storage", str(storage),
            "--name", name, "--data", data, "--address", ADDRESS, "--ray-token-file",
            str(cluster.token_file), *extra]
    started = time.monotonic()
    driver = cluster.popen("head", argv, log)
    victim: tuple[Path, int] | None = None
    killed: list[int] = []
    readme = ""
    killed_at: float | None = None
    first_after: float | None = None
    retry_line: float | None = None
    try:
        while driver.poll() is None:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the search did not end within {timeout:.0f} s")
            if victim is None:
                victim = _running_on_worker(run_dir, log.read_text(errors="replace"))
                if victim is not None:
                    killed_at = time.time()
                    killed = cluster.hosts.kill("worker")
                    readme = (run_dir / "README.txt").read_text()
                    # A result already on its way may still land; no retry reports this soon.
                    while time.time() - killed_at < 2:
                        if retry_line is None and "[retry]" in log.read_text(errors="replace"):
                            retry_line = time.time()
                        time.sleep(0.1)
                    victim = (victim[0], max(_epochs(victim[0]), default=0))
            else:
                if retry_line is None and "[retry]" in log.read_text(errors="replace"):
                    retry_line = time.time()
                if first_after is None and _past(victim):
                    first_after = time.time()
            time.sleep(0.1)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait()
    wall = time.monotonic() - started
    if victim is not None and first_after is None and _past(victim):
        first_after = time.time()  # it came in the last poll
    loss = _figures(driver.returncode, log.read_text(errors="replace"), wall, run_dir, victim,
                    killed, killed_at, first_after, readme)
    if retry_line is not None and killed_at is not None:
        loss.kill_to_retry_line_s = retry_line - killed_at
    return loss


def _running_on_worker(run_dir: Path, output: str) -> tuple[Path, int] | None:
    """A trial whose open attempt is on the worker node, past its first report and not ended by
    the driver: (its folder, its last reported epoch)."""
    if not run_dir.is_dir():
        return None
    for t in sorted(run_dir.glob("trial_*")):
        attempts = _attempts(t)
        if not attempts or attempts[-1].get("node_ip") != WORKER_IP or "finished" in attempts[-1]:
            continue
        epochs = _epochs(t)
        trial_id = t.name.rsplit("_", 1)[-1]
        if epochs and f"[done]    {trial_id}" not in output:
            return t, epochs[-1]
    return None


def _attempts(trial: Path) -> list[dict[str, Any]]:
    from analysis.run_folder import read_attempts

    return read_attempts(trial)


def _epochs(trial: Path) -> list[int]:
    from analysis.run_folder import read_results

    return [r.epoch for r in read_results(trial)]


def _past(victim: tuple[Path, int]) -> bool:
    """Whether the killed trial has a result past the epoch it was killed after. One read of its
    result.json: the retry's Ray rewrites the file, and a second read (as this once did) may
    find it empty (IndexError in .ci/run)."""
    epochs = _epochs(victim[0])
    return bool(epochs) and epochs[-1] > victim[1]


def _figures(rc: int, output: str, wall: float, run_dir: Path, victim: tuple[Path, int] | None,
             killed: list[int], killed_at: float | None, first_after: float | None,
             readme: str) -> NodeLoss:
    from analysis.run_folder import read_results

    attempts: dict[str, int] = {}
    trials: dict[str, int] = {}
    for t in sorted(run_dir.glob("trial_*")):
        lines = _attempts(t)
        for a in lines:
            attempts[str(a.get("node_ip"))] = attempts.get(str(a.get("node_ip")), 0) + 1
        if lines:
            trials[str(lines[0].get("node_ip"))] = trials.get(str(lines[0].get("node_ip")), 0) + 1
    lost = redone = 0
    resumed = retry_start = None
    if victim is not None and killed_at is not None:
        rows = read_results(victim[0])
        final = [r.epoch for r in rows]
        before = {r.epoch for r in rows if (r.timestamp or 0) < int(killed_at)}
        before |= set(range(1, victim[1] + 1))
        lost = len(before - set(final))
        redone = len(final) - len(set(final)) + sum(
            1 for r in rows if r.epoch <= victim[1] and (r.timestamp or 0) > killed_at + 1)
        retry = [a for a in _attempts(victim[0]) if a.get("started", 0) > killed_at]
        resumed = int(retry[0].get("resumed_from_epoch", 0)) if retry else None
        retry_start = float(retry[0]["started"]) - killed_at if retry else None
    return NodeLoss(rc, output, wall, str(run_dir), attempts, trials,
                    victim[0].name if victim else None, killed, victim[1] if victim else 0,
                    resumed, lost, redone, None, retry_start,
                    None if first_after is None or killed_at is None else first_after - killed_at,
                    readme)


# --- refusals ----------------------------------------------------------------------------------
def refusal(cluster: Cluster, storage: Path, address: str, *args: str) -> tuple[int, str, float]:
    """(exit code, stderr, seconds) of a search started from the head's namespace against
    ``address``, with more ``args``."""
    argv = [sys.executable, "-m", "tune.run", "--space", "smoke", "--storage", str(storage),
            "--name", "refused", "--address", address, *args]
    t = time.monotonic()
    done = cluster.run("head", argv, timeout=300)
    return done.returncode, done.stderr, time.monotonic() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="smoke")
    p.add_argument("--data", default="builtin")
    p.add_argument("--json", type=Path, help="write the figures here too")
    p.add_argument("--log", type=Path, help="write the search's whole output here")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="e24-", dir="/tmp"))
    try:
        with two_node_cluster(root, root / "cache") as cluster:
            figures: dict[str, Any] = {"nodes_seen": cluster.nodes()}
            for what, address, token in (
                    ("no_host", f"{UNUSED_IP}:{PORT}", ["--ray-token-file",
                                                        str(cluster.token_file)]),
                    ("no_token", ADDRESS, [])):
                rc, err, secs = refusal(cluster, root / "refused", address, *token)
                figures[f"refused_{what}"] = {"rc": rc, "seconds": round(secs, 1),
                                              "line": err.strip().splitlines()[-1:]}
            loss = search_and_kill(cluster, root / "runs", "two-nodes", args.space, args.data)
            figures["search"] = {k: v for k, v in asdict(loss).items()
                                 if k not in ("output", "readme_during_run")}
            figures["commands"] = cluster.commands
        print(loss.output[-3000:])
        print(json.dumps(figures, indent=2))
        if args.log:
            args.log.write_text(loss.output)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return 0 if loss.rc == 0 else 1
    except NamespacesUnavailable as e:
        print(f"two_nodes: {e}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
