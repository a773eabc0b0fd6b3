"""A real two-node Ray cluster: two network namespaces that this test makes (10.231.0.1 and
10.231.0.2 on a veth pair, no route anywhere else), a Ray node in each started with `ray start`
and token auth as docs/clusters.md says, the smoke search across both, and the worker node
killed by PID mid-trial (its raylet, agents and trial workers, as a machine that dies).

The harness is bench/two_nodes.py's (BENCHMARKS.md has its figures). It skips, saying why,
where namespaces cannot be made (not root, no `ip`); it sends traffic only inside its own
namespaces, stops only the processes inside them (by PID; never `ray stop`, which stops every Ray
on the machine), and removes them at the end, also on failure. Its Ray record
(``ray_current_cluster``) and token live in a folder of its own, removed at the end: the user's
``~/.ray/auth_token`` and ``/tmp/ray/ray_current_cluster`` are not touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from benches import load_bench

from analysis import leaderboard
from analysis.tables import load_run

pytestmark = pytest.mark.slow

TWO_NODES = load_bench("two_nodes")


def _fingerprint(path: Path) -> tuple[float, bytes] | None:
    try:
        return path.stat().st_mtime, path.read_bytes()
    except OSError:
        return None


@pytest.fixture
def cluster(ray_session, clip_root):
    """The two namespaces and a Ray node in each; gone afterwards, whatever happened. The
    session's own Ray (``ray_session``) runs beside them: two clusters on one host."""
    reason = TWO_NODES.unavailable()
    if reason:
        pytest.skip(reason)
    watched = [Path("/tmp/ray/ray_current_cluster"), Path.home() / ".ray" / "auth_token"]
    before = [_fingerprint(p) for p in watched]
    root = Path(tempfile.mkdtemp(prefix="e24-", dir="/tmp"))  # short: Ray's socket paths
    hosts = TWO_NODES.TwoHosts()
    try:
        with hosts:
            yield TWO_NODES.start_cluster(hosts, root, Path(os.environ["ESPCN_TUNE_CACHE"]))
    except TWO_NODES.NamespacesUnavailable as e:
        pytest.skip(str(e))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in names for n in hosts.names.values()), names
    assert [_fingerprint(p) for p in watched] == before, "the test touched the user's Ray files"


def test_a_search_survives_a_node_lost_mid_trial_on_a_real_two_node_cluster(cluster, clip_root,
                                                                              ray_session):
    storage = cluster.root / "runs"
    token = ["--ray-token-file", str(cluster.token_file)]
    # Refused in seconds, before any run folder: no Ray at an address on the cluster's network,
    # a token the head refuses, `auto` with two clusters on the host; and, once joined, GPUs
    # this cluster does not have.
    for address, args, says in (
            (f"{TWO_NODES.UNUSED_IP}:6379", token, "no answer within 3 s"),
            (TWO_NODES.ADDRESS, [], "refused the connection: it uses token auth"),
            ("auto", [], "Ray clusters run on this machine ("),
            (TWO_NODES.ADDRESS, [*token, "--gpus-per-trial", "1", "--data", str(clip_root)],
             "--gpus-per-trial 1.0: the Ray cluster has 0 GPUs")):
        rc, err, _ = TWO_NODES.refusal(cluster, storage, address, *args)
        lines = err.strip().splitlines()
        assert rc == 2 and says in lines[-1] and "Traceback" not in err, err
        assert len(lines) == 1 or "--gpus" in says, err  # before the data's log lines
        assert not list(storage.glob("*/*")), "a refused start must not claim the run name"
        if address == "auto":  # it names the clusters found
            assert TWO_NODES.ADDRESS in err and ray_session in err, err

    loss = TWO_NODES.search_and_kill(cluster, storage, "nodes", "smoke", str(clip_root),
                                     extra=["--cpus-per-trial", "1"])
    out = loss.output
    assert loss.rc == 0, out[-4000:]
    assert loss.killed_trial and loss.killed_pids, "no trial ran on the worker node"
    # Trials ran on both nodes; the retry on the head.
    assert set(loss.trials_per_node) == {TWO_NODES.HEAD_IP, TWO_NODES.WORKER_IP}, loss
    run = load_run(loss.run_dir)
    assert run.finished
    for row in run.results.groupby("trial")["epoch"]:
        assert list(row[1]) == list(range(1, len(row[1]) + 1)), row  # none lost, none twice
    assert loss.epochs_lost == 0 and loss.epochs_redone == 0, loss
    assert loss.resumed_from == loss.epoch_at_kill, loss
    trials = run.trials.set_index("dir")
    assert not trials["outcome"].isin(["running/interrupted", "no results", "error"]).any(), \
        trials["outcome"]
    killed = trials.loc[loss.killed_trial]
    assert killed["retries"] == 1 and not killed["error"], killed
    ranked = leaderboard.rank(run.trials)
    scored = ranked[~ranked["error"] & ranked["psnr"].notna()]
    assert loss.killed_trial in set(scored["dir"])  # ranked by its PSNR with the others
    assert list(scored["psnr"]) == sorted(scored["psnr"], reverse=True)
    attempts = TWO_NODES._attempts(Path(loss.run_dir) / loss.killed_trial)
    assert [a["node_ip"] for a in attempts] == [TWO_NODES.WORKER_IP, TWO_NODES.HEAD_IP]
    assert "finished" not in attempts[0] and attempts[1]["finished"]
    assert all(a["hostname"] and a["node_id"] and a["pid"] for a in attempts)
    # One project line, and none of Ray's own output.
    retry = [line for line in out.splitlines() if line.startswith("[retry]")]
    trial_id = loss.killed_trial.rsplit("_", 1)[1]
    assert len(retry) == 1 and trial_id in retry[0] and f"node {TWO_NODES.WORKER_IP}" in retry[0]
    assert f"from epoch {loss.epoch_at_kill}" in retry[0], retry
    for leak in ("Traceback", "ActorUnavailableError", "\x1b[", "Failed to fetch metrics",
                 "(raylet)"):
        assert leak not in out, (leak, out[-4000:])
    # The README written while it ran told how to resume it on this cluster with this token.
    assert f"--address {TWO_NODES.ADDRESS} --ray-token-file {cluster.token_file}" in \
        loss.readme_during_run
