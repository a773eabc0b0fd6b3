"""tune.run's refusals that need no Ray: each bad input is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from trainable.errors import InputError
from tune import run
from tune.ray_edge import environment, state_repair, version

REPO = Path(__file__).resolve().parents[1]


def _args(**kw) -> argparse.Namespace:
    base = {"address": None, "dashboard": False, "verbose": False, "ray_token_file": None}
    return argparse.Namespace(**{**base, **kw})


def test_no_token_is_sent_unless_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):  # restored after the test
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    environment.token_auth_for_address("10.0.0.9:6379", None)
    assert "RAY_AUTH_MODE" not in os.environ and "RAY_AUTH_TOKEN_PATH" not in os.environ
    token = tmp_path / "auth_token"
    token.write_text("t")
    environment.token_auth_for_address("10.0.0.9:6379", str(token))
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(token)


@pytest.mark.parametrize(("address", "name", "message"), [
    ("10.0.0.9:6379", "missing", "no such file"),
    (None, "auth_token", "only applies with --address"),
])
def test_bad_token_file_is_refused(tmp_path: Path, address, name, message) -> None:
    (tmp_path / "auth_token").write_text("t")
    with pytest.raises(InputError, match=message):
        environment.token_auth_for_address(address, str(tmp_path / name))


def _refused(tmp_path: Path, address: str) -> subprocess.CompletedProcess[str]:
    """``python -m tune.run --address ADDRESS`` as a user runs it, in a process of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    # A hang guard, not a timing: Ray's own client would retry for about 14 minutes.
    return subprocess.run([sys.executable, "-m", "tune.run", "--space", "smoke", "--storage",
                           str(tmp_path / "runs"), "--name", "bad", "--address", address],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_an_address_where_nothing_listens_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: now nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = _refused(tmp_path, f"127.0.0.1:{port}")
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in done.stderr
    assert f"--address 127.0.0.1:{port}: nothing listens there" in line
    assert not (tmp_path / "runs").exists()


def test_an_address_where_something_else_listens_is_refused(tmp_path: Path) -> None:
    """A real listening socket that is not Ray (an HTTP server): not a Ray GCS, in seconds."""
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        done = _refused(tmp_path, address)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and f"--address {address}: something listens there, but it is " \
        "not a Ray GCS" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("address", ["10.0.0.9", "10.0.0.9:x", ":6379", "10.0.0.9:70000"])
def test_an_address_that_is_not_host_port_is_refused(address: str) -> None:
    from tune.ray_edge import cluster

    with pytest.raises(InputError, match=f"--address {address}: not an address; use HOST:PORT"):
        cluster.check(address, "--address", None)


def test_a_stale_ray_start_record_is_not_joined(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """Without --address, a new local Ray: never the last `ray start` cluster that Ray recorded
    in its temp dir (a dead one made CI wait minutes on its GCS and then fail)."""
    import ray
    from ray._private import services

    (tmp_path / "ray_current_cluster").write_text("192.0.2.2:36539")  # a cluster long gone
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # Ray's own resolver: address None follows the record, "local" does not.
    assert services.canonicalize_bootstrap_address(None, str(tmp_path)) == "192.0.2.2:36539"
    assert services.canonicalize_bootstrap_address("local", str(tmp_path)) is None
    seen: list[object] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda address=None, **_: seen.append(address))
    assert run._start_ray(_args(), None) is True  # started here: this driver's own Ray
    # A cluster is joined at the address `_cluster_address` resolved and checked.
    assert run._start_ray(_args(address="auto"), "10.0.0.9:6379") is False
    assert seen == ["local", "10.0.0.9:6379"]


def test_resume_rebuilds_the_space_from_the_run_record_not_the_file(tmp_path):
    """An edited or moved space file does not change what a resumed run trains."""
    import yaml

    from tune.run import _resume_spec
    from tune.space import load_space, with_overrides

    started = with_overrides(load_space("smoke"), trials=3)
    space = tmp_path / "mine.yaml"
    space.write_text(yaml.safe_dump({**started.document, "trials": 9,
                                     "config": {"batch_size": 32, "use_amp": False}}))
    from analysis.record import RunRecord, SchedulerPlan

    rec = RunRecord("r", (), str(space), dict(started.document), started.params, None,
                    SchedulerPlan("asha"), None, None, None, overrides={"trials": 3})
    for _ in ("edited", "moved"):
        spec = _resume_spec(rec, tmp_path)
        assert spec.trials == 3 and spec.base == started.base and spec.params == started.params
        space.unlink(missing_ok=True)
    # A record from before the copy was kept falls back to the file as it is now.
    space.write_text(yaml.safe_dump({**started.document, "trials": 9}))
    assert _resume_spec(rec.replace(space=None), tmp_path).trials == 3


def test_another_ray_version_is_named_once_and_its_private_files_are_not_repaired(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert version.known()  # the pinned version is the tested one
    monkeypatch.setattr(version, "installed", lambda: "2.71.0")
    monkeypatch.setattr(version, "_warned", False)
    assert not version.known()
    with caplog.at_level("WARNING", logger="tune"):
        assert not version.check() and not version.check()
        (tmp_path / "experiment_state-2026-01-02_03-04-05.json").write_text("")  # cut short
        assert state_repair.repair_state(tmp_path, tmp_path) == []
    said = [r.getMessage() for r in caplog.records]
    assert sum("Ray 2.71.0 is installed" in m for m in said) == 1
    assert any("not repaired" in m for m in said)


# --- refusals and no-ops before Ray starts (subprocesses: "ray" must stay out of sys.modules) ---
REPO = Path(__file__).resolve().parents[1]
# Runs `tune.run.main` on the arguments after it and says whether Ray got imported. A machine
# without CUDA is simulated (`torch.cuda.is_available` patched) so the GPU refusal is checked on
# any machine.
_PROBE = ("import sys, torch\n"
          "torch.cuda.is_available = lambda: False\n"
          "from tune.run import main\n"
          "rc = main(sys.argv[1:]); print('RAY' if 'ray' in sys.modules else 'NORAY'); sys.exit(rc)")


def _probe(*args: str):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` with its size and modification time (ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def test_resume_of_a_finished_run_says_so_and_starts_nothing(tmp_path: Path) -> None:
    """Issue 20, item 1: no Ray, nothing written, exit 0, and where the results are."""
    from analysis import record
    from tests import run_fixture as fx
    from tune.space import load_space

    run_dir = fx.write_small_run(tmp_path, "done")
    # As a finished search leaves it: its space kept in the record, Ray's experiment state.
    smoke = load_space("smoke")
    record.write(run_dir, record.read(run_dir).replace(space=dict(smoke.document),
                                                       space_file=str(smoke.path)))
    (run_dir / "experiment_state-2026-11-26_10-00-00.json").write_text("{}")
    before = _listing(tmp_path)
    probe = _probe("--storage", str(tmp_path), "--resume", "done")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert probe.stdout.strip().endswith("NORAY")
    said = probe.stdout.strip().splitlines()[:-1]
    assert len(said) == 1 and "finished" in said[0] and "nothing to resume" in said[0]
    assert f"python -m analysis {run_dir}" in said[0]
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "start"])
def test_gpus_asked_of_a_machine_without_one_are_refused_before_ray(tmp_path: Path,
                                                                    dry_run: bool) -> None:
    """Issue 20, item 2: one line, exit 2, no Ray, no run folder left behind."""
    storage = tmp_path / "runs"
    storage.mkdir()
    args = ["--space", "smoke", "--storage", str(storage), "--name", "gpu", "--data", "builtin",
            "--gpus-per-trial", "1", *(["--dry-run"] if dry_run else [])]
    probe = _probe(*args)
    assert probe.returncode == 2, probe.stdout + probe.stderr
    assert probe.stdout.strip() == "NORAY"
    err = probe.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --gpus-per-trial 1"), probe.stderr
    assert "0 GPUs" in err[0]
    assert list(storage.iterdir()) == []


def test_ray_and_optuna_output_stays_out_of_the_terminal_unless_verbose(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20, item 4: Ray's experiment box and /tmp/ray TensorBoard hint (its new output
    engine prints them at verbose=0), its token-auth notice, Optuna's study line. Issue 24, item
    5: Ray's words on a failed attempt (Tune's traceback, the raylet's lines, the analysis's
    "Failed to fetch metrics") are kept out without -v, and reach the user with it."""
    import logging
    import sys

    import optuna
    import ray._private.worker

    for name in ("RAY_AIR_NEW_OUTPUT", "RAY_AUTH_MODE", "RAY_ADDRESS",
                 "TUNE_PRINT_ALL_TRIAL_ERRORS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(ray._private.worker, "_worker_logs_enabled", True)
    fetch = logging.getLogger("ray.tune.analysis.experiment_analysis")
    monkeypatch.setattr(fetch, "level", logging.NOTSET)
    before = optuna.logging.get_verbosity()
    try:
        environment.driver_env(verbose=True)
        assert "RAY_AIR_NEW_OUTPUT" not in os.environ
        assert "TUNE_PRINT_ALL_TRIAL_ERRORS" not in os.environ
        assert ray._private.worker._worker_logs_enabled and fetch.level == logging.NOTSET
        environment.driver_env(verbose=False)
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
        assert os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] == "0"
        assert not ray._private.worker._worker_logs_enabled and fetch.level == logging.ERROR
        assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    finally:
        optuna.logging.set_verbosity(before)
    monkeypatch.delitem(sys.modules, "ray", raising=False)  # restored after the test
    environment.local_token_auth("10.0.0.9:6379", verbose=False)  # a cluster: as the user set it
    environment.local_token_auth(None, verbose=True)
    assert "RAY_AUTH_MODE" not in os.environ
    environment.local_token_auth(None, verbose=False)  # the mode Ray would pick, named
    assert os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's own choice stands
    environment.local_token_auth(None, verbose=False)
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


def _resumable(tmp_path: Path, data: str, name: str = "half") -> Path:
    """A run folder an interrupted search left: its space (on ``data``) kept in the record, Ray's
    experiment state, not finished."""
    from analysis import record
    from tests import run_fixture as fx
    from tune.space import load_space

    run_dir = fx.write_small_run(tmp_path, name, finished=False)
    smoke = load_space("smoke")
    record.write(run_dir, record.read(run_dir).replace(
        space={**smoke.document, "data": data}, space_file=str(smoke.path)))
    (run_dir / "experiment_state-2026-11-26_10-00-00.json").write_text("{}")
    return run_dir


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "start"])
@pytest.mark.parametrize("case", ["empty data", "finished name", "resume on empty data",
                                  "resume of a running search"])
def test_the_dry_run_refuses_what_a_start_refuses(tmp_path: Path, case: str,
                                                  dry_run: bool) -> None:
    """Issue 27, item 7: `--dry-run` runs a start's own checks (`tune.run._check_before_ray`,
    the run name, the resume state): each case is one line and exit 2 in both, before Ray,
    and leaves the storage as it was."""
    from tests import run_fixture as fx
    from tune.run_folder import lock

    storage = tmp_path / "runs"
    empty = tmp_path / "empty"
    empty.mkdir()
    held = None
    if case == "empty data":
        args = ["--space", "smoke", "--name", "new", "--data", str(empty)]
        said = "has no subfolders"
    elif case == "finished name":
        fx.write_small_run(storage, "done")
        args = ["--space", "smoke", "--name", "done"]
        said = "a finished run of this name exists"
    elif case == "resume on empty data":
        _resumable(storage, str(empty))
        args = ["--resume", "half"]
        said = "has no subfolders"
    else:
        held = lock(_resumable(storage, "builtin"))  # this process is "the running search"
        args = ["--resume", "half"]
        said = "another search is writing this run right now"
    storage.mkdir(exist_ok=True)
    before = _listing(storage)
    probe = _probe("--storage", str(storage), *args, *(["--dry-run"] if dry_run else []))
    assert probe.returncode == 2, probe.stdout + probe.stderr
    assert probe.stdout.strip() == "NORAY"
    err = probe.stderr.strip().splitlines()
    assert err and err[-1].startswith("error: ") and said in err[-1], probe.stderr
    assert _listing(storage) == before
    del held


def test_a_dry_run_that_passes_names_its_run_folder(tmp_path: Path) -> None:
    probe = _probe("--space", "smoke", "--storage", str(tmp_path / "runs"), "--name", "fresh",
                   "--dry-run")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert f"Run folder:   {tmp_path / 'runs' / 'fresh'} (a new run" in probe.stdout
    assert "data checked: train" in probe.stderr and "test" in probe.stderr  # as a start does
    assert not (tmp_path / "runs").exists()


def _vimeo_tree(root: Path, *, test_list: bool) -> Path:
    import numpy as np
    from PIL import Image

    names = ["00001/0001", "00002/0001", "00002/0002", "00003/0001"]
    for k, name in enumerate(names):
        for i in range(1, 8):
            (root / "sequences" / name).mkdir(parents=True, exist_ok=True)
            rgb = np.random.default_rng(k * 8 + i).integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / "sequences" / name / f"im{i}.png")
    (root / "sep_trainlist.txt").write_text("\n".join(names[:3]) + "\n")
    if test_list:
        (root / "sep_testlist.txt").write_text(names[3] + "\n")
    return root


def test_the_start_check_covers_the_test_split(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 25: a search never opens the test split, yet the retraining after it needs one."""
    from trainable.errors import DataError
    from tune.space import load_space, with_overrides

    root = _vimeo_tree(tmp_path / "vimeo", test_list=False)
    (root / "sep_testlist.txt").write_text("00003/0001\n")
    spec = with_overrides(load_space("smoke"), data=str(root))
    monkeypatch.setenv("ESPCN_TUNE_CACHE", str(tmp_path / "cache"))
    run.check_data(spec)  # a whole tree passes
    (root / "sep_testlist.txt").unlink()
    with pytest.raises(DataError, match="missing list file .*sep_testlist.txt"):
        run.check_data(spec)


def test_a_missing_test_list_is_refused_at_start(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 25: found at start (exit 2, one line, no Ray, no run folder), not after training."""
    monkeypatch.setenv("ESPCN_TUNE_CACHE", str(tmp_path / "cache"))
    root = _vimeo_tree(tmp_path / "vimeo", test_list=False)
    storage = tmp_path / "runs"
    storage.mkdir()
    probe = _probe("--space", "smoke", "--storage", str(storage), "--name", "notest",
                   "--data", str(root))
    assert probe.returncode == 2, probe.stdout + probe.stderr
    assert probe.stdout.strip() == "NORAY"
    err = [ln for ln in probe.stderr.strip().splitlines() if ln.startswith("error")]
    assert len(err) == 1 and "missing list file" in err[0] and "sep_testlist.txt" in err[0]
    assert list(storage.iterdir()) == []
