"""Real searches on Ray Tune (one local Ray for the session, tiny clips, 2 CPUs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analysis import record
from tune.run import main

pytestmark = pytest.mark.slow


def _results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _trial_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.iterdir()
                  if p.is_dir() and (p / "params.json").exists() and p.name != "reference")


def test_smoke_search_asha_stops_a_trial_early(smoke_run):
    rec = record.read(smoke_run)
    assert rec.finished and rec.best_trial is not None and rec.best_trial.trial_id
    assert rec.budget is not None
    trials = _trial_dirs(smoke_run)
    assert len(trials) == 6
    last = [_results(t)[-1] for t in trials]
    assert all(not (t / "error.txt").exists() for t in trials)
    stopped = [r for r in last if r["epoch"] < rec.budget.epochs]
    completed = [r for r in last if r["status"] == "completed"]
    assert stopped, "ASHA stopped no trial"
    assert completed, "no trial ran the whole budget"
    assert all(re.fullmatch(r"trial_\d{4}_[0-9a-f]{8}", t.name) for t in trials)
    # The budget unit is epochs of a fixed sample count, whatever the batch size.
    assert all(r["samples"] == r["epoch"] * rec.budget.epoch_samples for r in last)


def test_a_trial_is_reproduced_bit_for_bit_by_a_solo_run_of_its_config(smoke_run, tmp_path):
    # What a user does to check a winner: train its own trial_config.json alone. One patch
    # stream (the host sampler draws what the trial drew) makes every validation equal.
    import torch

    from trainable.__main__ import main as train

    done = next(t for t in _trial_dirs(smoke_run) if _results(t)[-1]["status"] == "completed")
    threads = torch.get_num_threads()
    try:
        assert train(["--config", str(done / "trial_config.json"), "--out", str(tmp_path / "solo"),
                      "--no-test", "-q"]) == 0
    finally:
        torch.set_num_threads(threads)
    solo = torch.load(tmp_path / "solo" / "checkpoint.pt", weights_only=True)["history"]
    trial = _results(done)
    assert len(trial) == 4 and [h["psnr"] for h in solo] == [r["psnr"] for r in trial]
    assert [h["loss"] for h in solo] == [r["loss"] for r in trial]


def test_smoke_search_trains_the_source_documents_defaults_beside_it(smoke_run):
    """smoke.yaml trains batch 8, so the source document's defaults lie outside its space: they
    run once beside the search at its budget, as the reference, and are no trial of the study."""
    ref = smoke_run / "reference"
    rows = _results(ref)
    cfg = json.loads((ref / "trial_config.json").read_text())
    rec = record.read(smoke_run)
    assert rec.budget is not None and rec.default_config is not None
    assert {**cfg, "num_threads": 0} == {**rec.default_config, "num_threads": 0}
    assert (cfg["model_lr"], cfg["batch_size"], cfg["optimizer"], cfg["residual"]) == (
        0.01, 16, "sgd", False)
    assert cfg["lr_scheduler_milestones"] == pytest.approx([0.1, 0.8])
    assert cfg["epochs"] == rec.budget.epochs and rows[-1]["status"] == "completed"
    assert [r["epoch"] for r in rows] == list(range(1, rec.budget.epochs + 1))
    assert all(r["trial_id"] == "reference" for r in rows)
    assert (ref / "checkpoint_latest" / "trainer.pt").is_file()
    # The first trial is TPE's own: no trial ran the defaults' model_lr and milestones.
    firsts = [_results(t)[0]["trial_config"] for t in _trial_dirs(smoke_run)]
    assert not any(c["lr_scheduler_milestones"] == pytest.approx([0.1, 0.8]) for c in firsts)


def test_smoke_search_keeps_optuna_study_and_capped_checkpoints(smoke_run):
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(next(smoke_run.glob("*journal*")))))
    study = optuna.load_study(study_name=None, storage=storage) if len(
        storage.get_all_studies()) == 1 else None
    assert study is not None
    states = {t.state for t in study.trials}
    # ASHA-stopped trials are PRUNED: see test_smoke_search_tells_optuna_which_trials_asha_stopped
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert len(study.trials) == 6
    for t in _trial_dirs(smoke_run):
        assert len(list(t.glob("checkpoint_*"))) <= 2  # best by PSNR + the latest


def test_diverging_trial_ends_as_diverged_and_the_search_completes(ray_session, clip_root,
                                                                   tmp_path):
    space = tmp_path / "diverge.yaml"
    space.write_text(
        "params:\n  model_lr: {grid: [1.0e-3, 1.0e+6]}\n"
        "config: {batch_size: 8, momentum: 0.0}\n"
        "budget: {epochs: 3, epoch_samples: 512, validation_interval: 1}\n"
        "scheduler: {type: fifo}\nsearch: {algorithm: grid}\ninclude_defaults: false\n")
    rc = main(["--space", str(space), "--storage", str(tmp_path), "--name", "nan",
               "--data", str(clip_root)])
    assert rc == 0
    last = {json.loads((t / "params.json").read_text())["model_lr"]: _results(t)[-1]
            for t in _trial_dirs(tmp_path / "nan")}
    assert last[1e6]["status"] == "diverged"
    assert last[1e6]["psnr"] == 0.0  # the documented finite worst case
    assert last[1e-3]["status"] == "completed"


@pytest.mark.parametrize("scheduler", [
    "{type: fifo}", "{type: hyperband, reduction_factor: 2}", "{type: median, grace_period: 1}",
    "{type: pbt, perturbation_interval: 1}"])
def test_every_listed_scheduler_finishes_a_smoke_search(scheduler, ray_session, clip_root,
                                                          tmp_path):
    """ASHA runs in `smoke_run`; the README lists these too. PBT needs every checkpoint it may
    clone kept (it errored 2 of 6 trials with the best-plus-latest cap)."""
    space = tmp_path / "sched.yaml"
    search = "random" if "pbt" in scheduler else "optuna"
    space.write_text(
        "params:\n  model_lr: {loguniform: [1.0e-3, 5.0e-2]}\n"
        "config: {batch_size: 8, use_amp: false}\n"
        "budget: {epochs: 3, epoch_samples: 256, validation_interval: 1}\n"
        f"scheduler: {scheduler}\nsearch: {{algorithm: {search}}}\n"
        "trials: 4\ninclude_defaults: false\n")
    rc = main(["--space", str(space), "--storage", str(tmp_path), "--name", "sched",
               "--data", str(clip_root)])
    assert rc == 0
    trials = _trial_dirs(tmp_path / "sched")
    assert len(trials) == 4
    assert not [t.name for t in trials if (t / "error.txt").exists()]
    assert all(_results(t) for t in trials)


def test_smoke_search_tells_optuna_which_trials_asha_stopped(smoke_run):
    import optuna

    from tune.search import study_journal

    rec = record.read(smoke_run)
    assert rec.budget is not None
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_journal(smoke_run))))
    study = optuna.load_study(study_name="smoke", storage=storage)
    by_state = {}
    for t in study.trials:
        by_state.setdefault(t.state.name, []).append(t)
    last = {t.name: _results(t)[-1]["epoch"] for t in _trial_dirs(smoke_run)}
    stopped = sum(1 for e in last.values() if e < rec.budget.epochs)
    assert len(by_state.get("PRUNED", [])) == stopped > 0
    assert set(by_state) == {"PRUNED", "COMPLETE"}
    for t in study.trials:  # every validation is on the curve, at its epoch
        assert t.intermediate_values and max(t.intermediate_values) <= rec.budget.epochs
        assert t.value == t.intermediate_values[max(t.intermediate_values)]


def test_without_v_the_terminal_shows_our_lines_and_none_of_rays(clip_root, tmp_path):
    """Issue 20, item 4. A driver that starts its own Ray (the token-auth notice is a local
    start's), in a subprocess with nothing of the session's Ray in its environment."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    space = tmp_path / "quiet.yaml"
    space.write_text(
        "params:\n  model_lr: {loguniform: [1.0e-3, 5.0e-2]}\n"
        "config: {batch_size: 8, use_amp: false}\n"
        "budget: {epochs: 1, epoch_samples: 64, validation_interval: 1}\n"
        "scheduler: {type: fifo}\ntrials: 1\ninclude_defaults: false\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AIR_NEW_OUTPUT")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    env["ESPCN_TUNE_CACHE"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-m", "tune.run", "--space", str(space), "--storage",
                           str(tmp_path / "runs"), "--name", "quiet", "--data", str(clip_root)],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "[start]" in out and "=== quiet: 1 trials" in out and "tensorboard --logdir" in out
    for ray_says in ("Configuration for experiment", "Search algorithm", "/tmp/ray",
                     "To visualize your results with TensorBoard", "Token authentication",
                     "View detailed results here", "Started a local Ray instance",
                     "A new study created"):
        assert ray_says not in out, (ray_says, out[-4000:])


def test_a_conditional_space_searches_end_to_end(ray_session, clip_root, tmp_path):
    """The schedule family and each family's own parameters, TPE over the conditional space,
    ASHA stopping, then the analysis of a run whose trials hold different parameters."""
    from analysis.__main__ import main as analysis_main
    from analysis.tables import load_run

    space = tmp_path / "families.yaml"
    space.write_text(
        "params:\n  model_lr: {loguniform: [1.0e-3, 5.0e-2]}\n"
        "  lr_schedule:\n    choice:\n"
        "      multistep: {lr_scheduler_gamma: {uniform: [0.05, 0.5]}}\n"
        "      cosine: {lr_min_fraction: {loguniform: [1.0e-3, 1.0e-1]}}\n"
        "      cosine_restarts: {lr_restart_period: {uniform: [0.2, 0.5]}}\n"
        "  warmup_fraction: {uniform: [0.0, 0.2]}\n"
        "config: {batch_size: 8, use_amp: false}\n"
        "budget: {epochs: 2, epoch_samples: 256, validation_interval: 1}\n"
        "scheduler: {grace_period: 1, reduction_factor: 2}\n"
        "search: {n_startup_trials: 6}\ntrials: 6\ninclude_defaults: false\n")
    rc = main(["--space", str(space), "--storage", str(tmp_path), "--name", "families",
               "--data", str(clip_root), "--seed", "3"])
    assert rc == 0
    trials = _trial_dirs(tmp_path / "families")
    assert len(trials) == 6 and not [t for t in trials if (t / "error.txt").exists()]
    for t in trials:
        params = json.loads((t / "params.json").read_text())  # the user's form, per family
        family = params["lr_schedule"]
        own = {"multistep": "lr_scheduler_gamma", "cosine": "lr_min_fraction",
               "cosine_restarts": "lr_restart_period"}[family]
        assert set(params) == {"model_lr", "lr_schedule", "warmup_fraction", own}
        config = json.loads((t / "trial_config.json").read_text())
        assert config["lr_schedule"] == family and config[own] == params[own]
    run = load_run(tmp_path / "families")
    assert run.trials["lr_schedule"].nunique() >= 2
    assert analysis_main([str(tmp_path / "families"), "--no-report"]) == 0


def _event_files(folder: Path) -> tuple[dict[str, list[int]], dict[str, str]]:
    """The scalar tags of the event files directly in ``folder`` with their steps, and the
    HParams they hold (name -> value as text)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    scalars: dict[str, list[int]] = {}
    hparams: dict[str, str] = {}
    for f in sorted(folder.glob("events.out.tfevents*")):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                plugin = v.metadata.plugin_data
                if plugin.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(plugin.content)
                    if data.HasField("session_start_info"):
                        for k, x in data.session_start_info.hparams.items():
                            kind = x.WhichOneof("kind")
                            hparams[k] = str(getattr(x, kind))
                elif plugin.plugin_name == "scalars":
                    scalars.setdefault(v.tag, []).append(event.step)
    return scalars, hparams


def test_the_reference_runs_tensorboard_curves_overlay_the_trials(smoke_run):
    """Issue 20, item 8: the reference run's event files carry the tags Ray's logger writes for
    a trial, at the same steps, with HParams of the searched parameters; its time stamps are
    counted from its own start, as Ray counts a trial's (item 7)."""
    from analysis.tables import load_run

    rec = record.read(smoke_run)
    assert rec.budget is not None
    trial_tags, trial_hparams = _event_files(_trial_dirs(smoke_run)[0])
    ref_tags, ref_hparams = _event_files(smoke_run / "reference")
    assert not (smoke_run / "reference" / "tb").exists()
    # At the samples trained, as the trials' (issue 27: Ray's training_iteration before).
    samples = [e * rec.budget.epoch_samples for e in range(1, rec.budget.epochs + 1)]
    for tag in ("ray/tune/psnr", "ray/tune/ssim", "ray/tune/loss", "ray/tune/gain_db"):
        assert ref_tags[tag] == samples and tag in trial_tags
    assert set(ref_tags) <= set(trial_tags)
    # What only a trial has is Ray's own bookkeeping of it.
    ray_own = {"done", "should_checkpoint", "time_this_iter_s", "time_since_restore",
               "iterations_since_restore"}
    assert {t.removeprefix("ray/tune/") for t in set(trial_tags) - set(ref_tags)} <= ray_own
    assert set(ref_hparams) == set(trial_hparams) and ref_hparams["model_lr"] == "0.01"
    assert ref_hparams["lr_scheduler_milestones"] == "[0.1, 0.8]"
    started = json.loads((smoke_run / "reference" / "placement.jsonl").read_text()
                         .splitlines()[0])["started"]
    ref = load_run(smoke_run).trial("reference")
    assert ref["started_at"] == pytest.approx(started, abs=1.0)
    assert ref["time_s"] > 0 and ref["ended_at"] > ref["started_at"]


def test_a_conditional_grid_runs_each_choice_with_its_own_points(ray_session, clip_root,
                                                                  tmp_path):
    space = tmp_path / "grid.yaml"
    space.write_text(
        "params:\n  lr_schedule:\n    grid:\n"
        "      multistep: {lr_scheduler_gamma: {grid: [0.1, 0.5]}}\n"
        "      cosine: {lr_min_fraction: {grid: [0.01]}}\n"
        "config: {batch_size: 8, use_amp: false}\n"
        "budget: {epochs: 1, epoch_samples: 128, validation_interval: 1}\n"
        "scheduler: {type: fifo}\nsearch: {algorithm: grid}\ninclude_defaults: false\n")
    rc = main(["--space", str(space), "--storage", str(tmp_path), "--name", "grid",
               "--data", str(clip_root)])
    assert rc == 0
    configs = sorted((c["lr_schedule"], c["lr_scheduler_gamma"], c["lr_min_fraction"])
                     for c in (_results(t)[-1]["trial_config"] for t in _trial_dirs(tmp_path / "grid")))
    assert configs == [("cosine", None, 0.01), ("multistep", 0.1, None), ("multistep", 0.5, None)]
