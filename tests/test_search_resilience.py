"""The search driver under stress: kill -9 and resume, a trial whose process dies (retried, or
out of retries), Ctrl-C, a second driver on the same run, fractional-GPU packing on fake GPUs,
and the checks made before Ray starts. Real searches, kept tiny (a few epochs of 128 samples on
six small clips, 2 CPUs). A real two-node cluster is test_cluster.py's.

Drivers started as subprocesses join the session's Ray (``--address``); the in-process calls to
``main`` reuse it because it is already initialised.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from benches import load_bench

from analysis import record
from trainable.errors import InputError
from tune.ray_edge.state_repair import repair_state
from tune.run import main
from tune.run_folder import lock

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _space(tmp_path: Path, name: str, *, trials: int, epochs: int, max_concurrent: int,
           epoch_samples: int = 128, extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        params:
          model_lr: {{loguniform: [1.0e-3, 5.0e-2]}}
        config: {{batch_size: 8, use_amp: false}}
        budget: {{epochs: {epochs}, epoch_samples: {epoch_samples}, validation_interval: 1}}
        scheduler: {{type: fifo}}
        search: {{n_startup_trials: {trials}}}
        trials: {trials}
        max_concurrent: {max_concurrent}
        include_defaults: false
        """) + extra)
    return path


def _env() -> dict[str, str]:
    """The environment of a driver subprocess: the session's frame cache (ESPCN_TUNE_CACHE, set by
    the `ray_session` fixture), unbuffered output, and the import path of this checkout. Ray's own
    RAY_AUTH_MODE (set in this process by the session's ray.init) is dropped on purpose: the CLI
    sends the token only when told to (``--ray-token-file``, added by `_start_driver`)."""
    env = dict(os.environ)
    env.pop("RAY_AUTH_MODE", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _start_driver(args: list[str], log: Path) -> subprocess.Popen:
    if "--address" in args:  # the session's Ray has token auth on: the user's explicit ask
        args = [*args, "--ray-token-file", str(Path.home() / ".ray" / "auth_token")]
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "tune.run", *args], cwd=REPO, env=_env(),
                                stdout=out, stderr=subprocess.STDOUT)


def _results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            break
    return out


def _trial_dirs(run_dir: Path) -> list[Path]:
    if not run_dir.exists():
        return []
    return sorted(p for p in run_dir.iterdir()
                  if p.is_dir() and (p / "params.json").exists() and p.name != "reference")


def _placements(trial_dir: Path) -> list[dict]:
    path = trial_dir / "placement.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for(proc: subprocess.Popen, log: Path, what: str, cond, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cond()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"driver exited (rc {proc.returncode}) before {what}:\n"
                        f"{log.read_text()[-4000:]}")
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    pytest.fail(f"no {what} within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


# --- kill -9 and resume ------------------------------------------------------------------------

def test_kill_9_then_resume_repeats_nothing_and_continues_from_the_newest_checkpoint(
        ray_session, clip_root, tmp_path, capsys):
    import optuna

    trials, epochs = 3, 4
    space = _space(tmp_path, "crash", trials=trials, epochs=epochs, max_concurrent=1)
    storage = tmp_path / "runs"
    run_dir = storage / "crash"
    log = tmp_path / "driver.log"
    proc = _start_driver(["--space", str(space), "--storage", str(storage), "--name", "crash",
                          "--data", str(clip_root), "--address", ray_session], log)
    try:
        def one_done_and_one_checkpointed():
            done, live = {}, []
            for t in _trial_dirs(run_dir):
                # Kept as read now: Ray copies result.json again after every step, and the kill
                # may cut that copy short (the resume then finishes it).
                data = (t / "result.json").read_bytes() if (t / "result.json").exists() else b""
                lines = data.decode().splitlines() if data.endswith(b"\n") else []
                if any(json.loads(x).get("status") == "completed" for x in lines if x.strip()):
                    done[t] = data
                elif lines and any(t.glob("checkpoint_*")):
                    live.append(t)  # the driver has recorded a result of it
            return (*next(iter(done.items())), live[0]) if done and live else None

        finished, finished_bytes, interrupted = _wait_for(
            proc, log, "a finished and a checkpointed trial", one_done_and_one_checkpointed,
            timeout=240)

        # While the driver is alive, a second driver on the same run is refused before Ray.
        assert main(["--resume", "crash", "--storage", str(storage)]) == 2
        assert "another search is writing this run" in capsys.readouterr().err
        assert main(["--space", str(space), "--storage", str(storage), "--name", "crash",
                     "--data", str(clip_root)]) == 2
        assert "--resume crash" in capsys.readouterr().err

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        killed_at = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seen_before = len(_results(interrupted))
    assert seen_before < epochs, "the driver was killed too late to test a mid-trial resume"

    rc = main(["--resume", "crash", "--storage", str(storage)])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    assert record.read(run_dir).finished

    # The finished trial was not rerun: its results are untouched.
    assert (finished / "result.json").read_bytes() == finished_bytes
    # The interrupted trial went on from its newest checkpoint: epochs 1..4 once each, the later
    # ones reported after the kill, none of the earlier ones repeated.
    res = _results(interrupted)
    assert [r["epoch"] for r in res] == list(range(1, epochs + 1)), [r["epoch"] for r in res]
    before = [r["epoch"] for r in res if r["timestamp"] < killed_at]
    assert before and before == list(range(1, len(before) + 1)), before
    assert all(r["timestamp"] >= killed_at for r in res[len(before):])
    assert res[-1]["samples"] == epochs * 128
    resumed = [p["resumed_from_epoch"] for p in _placements(interrupted)
               if "resumed_from_epoch" in p]
    assert resumed == [len(before)], _placements(interrupted)

    dirs = _trial_dirs(run_dir)
    assert len(dirs) == trials
    for t in dirs:
        assert _results(t)[-1]["status"] == "completed", t.name
        assert not (t / "error.txt").exists(), t.name
        # The trial's own files land in the run folder, also for trials on a reused actor.
        assert (t / "trial_config.json").exists(), t.name
        assert _placements(t), t.name

    journal = run_dir / "optuna_journal.log"
    jstorage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))
    studies = jstorage.get_all_studies()
    assert len(studies) == 1
    study = optuna.load_study(study_name=studies[0].study_name, storage=jstorage)
    assert len(study.trials) == trials, [t.state for t in study.trials]
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}


def test_kill_9_of_a_driver_with_its_own_ray_leaves_no_process_and_the_resume_starts_a_new_one(
        ray_session, clip_root, tmp_path):
    """The driver starts its own local Ray (no --address). kill -9 takes that Ray's GCS and
    raylet down with it; Ray 2.60 then leaves its dashboard and runtime-env agents hanging for
    about a minute (under `python -m tune.run` they carry no RAY_NODE_ID), which the driver's
    watchdog stops at once. Every process of that Ray (found as the driver's descendants, the
    real agents among them) is gone; the session's live Ray is untouched. The resume starts a
    new local Ray, finishes the run, and leaves nothing of either behind."""
    from tune.ray_edge.reaper import node_processes

    # The processes below a pid, and those still running: what bench/reaper_kill.py times.
    watch = load_bench("reaper_kill")
    trials, epochs = 2, 4
    space = _space(tmp_path, "own", trials=trials, epochs=epochs, max_concurrent=1)
    storage = tmp_path / "runs"
    run_dir = storage / "own"
    env = _env()
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "driver.log"
    # The session's own live Ray: its raylet and agents (its idle workers come and go).
    live = {p: n for p, n in watch.descendants(os.getpid()).items() if n in watch.AGENTS
            or n.endswith("/raylet")}
    assert len(live) == 3, live
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tune.run", "--space", str(space),
                                 "--storage", str(storage), "--name", "own",
                                 "--data", str(clip_root)], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        _wait_for(proc, log, "a checkpointed trial", lambda: any(
            _results(t) and any(t.glob("checkpoint_*")) for t in _trial_dirs(run_dir)),
            timeout=240)
        node = record.read(run_dir).ray_node_id
        assert node and node_processes(node)[0], "the driver's own raylet is not running"
        ray_processes = watch.descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    names = set(ray_processes.values())
    assert watch.AGENTS <= names, names

    # Unwatched, the agents exit by themselves after about a minute (measured: 57-90 s); the
    # watchdog stops them at once (BENCHMARKS has the seconds). A hang guard, not a timing.
    deadline = time.monotonic() + 20
    while watch.running(ray_processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {p: ray_processes[p] for p in watch.running(ray_processes)}
    assert not left, f"left behind by the killed driver's Ray: {left}"
    assert set(watch.running(live)) == set(live), "the session's live Ray was touched"

    done = subprocess.run([sys.executable, "-m", "tune.run", "--storage", str(storage),
                           "--resume", "own"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rec = record.read(run_dir)
    assert rec.finished and rec.ray_node_id not in (None, node)  # a new local Ray
    dirs = _trial_dirs(run_dir)
    assert len(dirs) == trials
    for t in dirs:
        assert [r["epoch"] for r in _results(t)] == list(range(1, epochs + 1)), t.name
    deadline = time.monotonic() + 90
    while node_processes(rec.ray_node_id, session_dir=rec.ray_session_dir) != (False, []) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    assert node_processes(rec.ray_node_id, session_dir=rec.ray_session_dir) == (False, [])


# --- a trial that fails and is retried ---------------------------------------------------------

def _open_attempt(trial_dir: Path, number: int) -> dict | None:
    """Attempt ``number`` of the trial while it runs (its line written, not closed)."""
    lines = _placements(trial_dir)
    if len(lines) >= number and "finished" not in lines[number - 1]:
        return lines[number - 1]
    return None


def test_a_trial_retried_after_a_failure_is_ranked_by_its_results_and_one_out_of_retries_errs(
        ray_session, clip_root, tmp_path):
    """Two trials, one retry allowed (``--max-failures 1``). The first trial's process is killed
    once mid-trial: Ray retries it from its checkpoint, it completes, and it is ranked by its
    PSNR as `completed`, retried once, although Ray left error.txt behind. The second's is killed
    on both attempts: no retry left, `error`. The driver says each in one line, no traceback."""
    from analysis import leaderboard
    from analysis.tables import load_run

    epochs = 6
    space = _space(tmp_path, "retry", trials=2, epochs=epochs, max_concurrent=1)
    storage = tmp_path / "runs"
    run_dir = storage / "retry"
    log = tmp_path / "driver.log"
    proc = _start_driver(["--space", str(space), "--storage", str(storage), "--name", "retry",
                          "--data", str(clip_root), "--address", ray_session,
                          "--max-failures", "1"], log)

    def kill(number: int, reported: bool, skip: Path | None = None):
        """A wait condition: kill attempt ``number`` of a trial (not ``skip``) once it runs
        (with ``reported``: once it has a checkpointed result); the trial's folder."""
        def cond():
            for t in _trial_dirs(run_dir):
                line = _open_attempt(t, number) if t != skip else None
                if line and (not reported or (_results(t) and any(t.glob("checkpoint_*")))):
                    os.kill(line["pid"], signal.SIGKILL)
                    return t
            return None
        return cond

    try:
        retried = _wait_for(proc, log, "a first report", kill(1, True), 240)
        _wait_for(proc, log, "its retry", lambda: len(_placements(retried)) >= 2, 240)
        errored = _wait_for(proc, log, "another trial's first report", kill(1, True, retried),
                            240)
        _wait_for(proc, log, "its retry", kill(2, False, retried), 240)
        assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text()
    assert retried != errored and (retried / "error.txt").is_file()  # Ray's leftover
    # The retry went on from the newest checkpoint: every epoch once, none lost or repeated.
    assert [r["epoch"] for r in _results(retried)] == list(range(1, epochs + 1))
    first, second = _placements(retried)
    resumed = second["resumed_from_epoch"]
    assert "finished" not in first and resumed >= 1  # the killed attempt keeps its start line
    assert second["finished"] and "error" not in second
    run = load_run(run_dir)
    t = run.trials.set_index("dir")
    assert t.loc[retried.name, "outcome"] == "completed" and t.loc[retried.name, "retries"] == 1
    assert t.loc[errored.name, "outcome"] == "error" and t.loc[errored.name, "error"]
    assert leaderboard.winner(run)["dir"] == retried.name  # the only trial that finished
    assert "completed (retried 1x)" in leaderboard.render(run)
    retry_id, error_id = (d.name.rsplit("_", 1)[1] for d in (retried, errored))
    assert f"[retry]   {retry_id}  attempt 1 on node " in out
    assert f"died with its node or process; retry 1 of 1 from epoch {resumed}" in out
    assert f"[error]   {error_id}  attempt 2 on node " in out and "no retry left" in out
    assert "Traceback" not in out and "Trial task failed" not in out, out[-4000:]
    assert "=== retry: 2 trials, 1 errored" in out


def test_a_second_holder_of_the_run_folder_lock_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    held = lock(run_dir)
    try:
        with pytest.raises(InputError, match="another search is writing this run"):
            lock(run_dir)
        # Another process is refused too (flock is per open file, so this is not a re-entry).
        probe = subprocess.run(
            [sys.executable, "-c",
             "import sys; from pathlib import Path; from tune.run_folder import lock\n"
             "try:\n    lock(Path(sys.argv[1]))\nexcept Exception as e:\n    print(e); sys.exit(3)",
             str(run_dir)], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
        assert probe.returncode == 3, probe.stdout + probe.stderr
        assert "another search is writing this run" in probe.stdout
    finally:
        held.close()
    lock(run_dir).close()  # released: the next holder gets it


def test_ray_state_cut_short_by_kill_9_is_restored_from_the_sessions_staging_copy(tmp_path):
    # Measured once in the kill -9 test: the driver died while Ray copied its staging folder into
    # the run folder, leaving an empty search_gen_state-*.json, and Tuner.restore hit EOFError.
    from ray import cloudpickle

    session = "2026-01-02_03-04-05"
    run_dir = tmp_path / "runs" / "cut"
    session_dir = tmp_path / "ray" / "session_x"
    staging = session_dir / "artifacts" / session / "cut" / "driver_artifacts"
    state = {"experiment_state": json.dumps({"trial_data": []}).encode(),
             "search_gen_state": cloudpickle.dumps({"counter": 2}),
             "searcher-state": cloudpickle.dumps({"searcher": "optuna"})}
    names = {k: f"{k}-{session}." + ("pkl" if k == "searcher-state" else "json") for k in state}
    for d in (run_dir, staging):
        (d / "trial_1").mkdir(parents=True)
        for k, data in state.items():
            (d / names[k]).write_bytes(data)
    (run_dir / "trial_1" / "result.json").write_text('{"epoch": 1}\n')
    (staging / "trial_1" / "result.json").write_text('{"epoch": 1}\n')
    (run_dir / "espcn_tune.record").write_text('{"finished": "now"}')
    (staging / "espcn_tune.record").write_text('{"finished": null}')  # Ray's stale copy of ours
    assert repair_state(run_dir, session_dir) == []  # all copied: nothing to do

    (run_dir / names["search_gen_state"]).write_bytes(b"")
    (run_dir / "trial_1" / "result.json").write_bytes(b"")
    (staging / "trial_1" / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    assert sorted(repair_state(run_dir, session_dir)) == sorted(
        [names["search_gen_state"], "trial_1/result.json"])
    assert (run_dir / names["search_gen_state"]).read_bytes() == state["search_gen_state"]
    assert (run_dir / "trial_1" / "result.json").read_text().count("epoch") == 2
    assert json.loads((run_dir / "espcn_tune.record").read_text())["finished"] == "now"

    # The driver was killed while writing its own staging copy: that one is never copied over.
    (staging / names["searcher-state"]).write_bytes(b"\x80\x05")
    assert repair_state(run_dir, session_dir) == []
    (run_dir / names["searcher-state"]).write_bytes(b"")
    with pytest.raises(InputError, match="cannot be resumed"):
        repair_state(run_dir, session_dir)


class _RunsOnLoad:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _cut_run_with_staging(tmp_path: Path, session_dir: Path, searcher_state: bytes) -> Path:
    session = "2026-01-02_03-04-05"
    run_dir = tmp_path / "runs" / "cut"
    staging = session_dir / "artifacts" / session / "cut" / "driver_artifacts"
    staging.mkdir(parents=True)
    run_dir.mkdir(parents=True)
    for d in (run_dir, staging):
        (d / f"experiment_state-{session}.json").write_text("{}")
    (staging / f"searcher-state-{session}.pkl").write_bytes(searcher_state)
    (run_dir / f"searcher-state-{session}.pkl").write_bytes(b"")
    return run_dir


def test_repair_reads_only_the_recorded_trusted_session_and_unpickles_nothing(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    evil = pickle.dumps(_RunsOnLoad(marker))
    recorded, other = tmp_path / "ray" / "session_mine", tmp_path / "ray" / "session_other"
    run_dir = _cut_run_with_staging(tmp_path, recorded, evil)
    # A complete copy in a session the run did not record (anyone's, under /tmp/ray): ignored.
    (other / "artifacts" / "t" / "cut" / "driver_artifacts").mkdir(parents=True)
    (other / "artifacts" / "t" / "cut" / "driver_artifacts"
     / "experiment_state-2026-01-02_03-04-05.json").write_text("{}")
    with pytest.raises(InputError, match="the run recorded none"):
        repair_state(run_dir, None)
    # The recorded session's pickle is complete: copied (Ray will read it), never run here.
    staging = recorded / "artifacts"
    staging.chmod(0o775)  # group-writable: anyone in the group could have planted it
    with pytest.raises(InputError, match="cannot be resumed"):
        repair_state(run_dir, recorded)
    staging.chmod(0o755)
    recorded.chmod(0o777)  # as Ray 2.60 makes every session folder
    assert repair_state(run_dir, recorded) == ["searcher-state-2026-01-02_03-04-05.pkl"]
    assert not marker.exists()


def test_an_existing_run_name_is_refused_before_ray_starts(tmp_path):
    run_dir = tmp_path / "taken"
    run_dir.mkdir()
    (run_dir / "espcn_tune.record").write_text("{}")
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from tune.run import main\n"
         "rc = main(sys.argv[1:]); print('RAY' if 'ray' in sys.modules else 'NORAY'); sys.exit(rc)",
         "--space", "smoke", "--storage", str(tmp_path), "--name", "taken", "--data", "builtin"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert probe.returncode == 2, probe.stdout + probe.stderr
    assert "a run of this name exists" in probe.stderr and "--resume taken" in probe.stderr
    assert probe.stdout.strip().endswith("NORAY")


# --- Ctrl-C ------------------------------------------------------------------------------------

def test_ctrl_c_ends_the_driver_with_the_resume_command_and_no_traceback(ray_session, clip_root,
                                                                        tmp_path):
    space = _space(tmp_path, "sigint", trials=2, epochs=6, max_concurrent=1)
    storage = tmp_path / "runs"
    log = tmp_path / "driver.log"
    proc = _start_driver(["--space", str(space), "--storage", str(storage), "--name", "sigint",
                          "--data", str(clip_root), "--address", ray_session], log)
    try:
        _wait_for(proc, log, "a first result", lambda: "[epoch   1/" in log.read_text(),
                  timeout=180)
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the driver did not end within 60 s of SIGINT:\n{log.read_text()[-4000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert rc == 130, text[-4000:]
    assert "--resume sigint" in text, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    assert record.read(storage / "sigint").finished is None

    # The resume finishes the interrupted trial, which Optuna then has whole: not stopped early.
    import optuna

    assert main(["--resume", "sigint", "--storage", str(storage)]) == 0
    dirs = _trial_dirs(storage / "sigint")
    assert [[r["epoch"] for r in _results(t)] for t in dirs] == [list(range(1, 7))] * 2
    study = optuna.load_study(study_name="sigint", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage / "sigint" / "optuna_journal.log"))))
    assert [(t.state.name, sorted(t.intermediate_values)) for t in study.trials] == [
        ("COMPLETE", list(range(1, 7)))] * 2


# --- fractional GPUs on fake GPUs --------------------------------------------------------------

def test_half_gpu_trials_pack_two_per_fake_gpu_and_train_on_the_cpu(ray_session, clip_root,
                                                                    tmp_path):
    # The session's Ray has 2 CPUs and 2 fake GPUs: 4 trials of 0.5 CPU + 0.5 GPU run at once.
    space = _space(tmp_path, "pack", trials=4, epochs=2, max_concurrent=4)
    rc = main(["--space", str(space), "--storage", str(tmp_path), "--name", "pack",
               "--data", str(clip_root), "--gpus-per-trial", "0.5", "--cpus-per-trial", "0.5",
               "--max-concurrent", "4"])
    assert rc == 0
    dirs = _trial_dirs(tmp_path / "pack")
    assert len(dirs) == 4
    runs = []
    for t in dirs:
        placements = _placements(t)
        assert len(placements) == 1, (t.name, placements)
        runs.append(placements[0])
        assert _results(t)[-1]["status"] == "completed"
    devices = [r["cuda_visible_devices"] for r in runs]
    assert sorted(devices) == ["0", "0", "1", "1"], devices  # one id each, two trials per id
    assert not any(r["cuda_available"] for r in runs)  # fake GPUs: torch trained on the CPU
    assert all(r["cuda_device_name"] is None and r["gpu_memory_fraction"] is None for r in runs)
    events = sorted([(r["started"], 1) for r in runs] + [(r["finished"], -1) for r in runs])
    live = peak = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    assert peak > 2, f"at most {peak} trials ran at once: no packing"


def test_a_fractional_trial_caps_its_cuda_memory_at_its_share(monkeypatch):
    import torch

    from tune.trial import cap_gpu_memory

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda fraction, device: calls.append((fraction, device)))
    assert cap_gpu_memory(0.25) == 0.25
    assert cap_gpu_memory(1.0) is None and cap_gpu_memory(0.0) is None  # a whole card, the CPU
    assert calls == [(0.25, 0)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cap_gpu_memory(0.25) is None and calls == [(0.25, 0)]  # fake GPUs: nothing to cap


# --- before Ray: dry run, unknown space --------------------------------------------------------

def test_dry_run_prints_the_plan_without_importing_ray():
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from tune.run import main\n"
         "rc = main(['--space', 'smoke', '--dry-run'])\n"
         "print('RAY' if 'ray' in sys.modules else 'NORAY'); sys.exit(rc)"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    out = probe.stdout
    assert out.strip().endswith("NORAY")
    assert "rungs at epochs 1, 2" in out
    assert "Resources:" in out and "CPU" in out


def test_unknown_space_exits_2_naming_the_file_and_the_shipped_spaces(capsys):
    assert main(["--space", "nonexistent", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "nonexistent.yaml" in err
    for shipped in ("smoke", "lr_sched", "full"):
        assert shipped in err
