"""A trial's attempts and how it ended: ``placement.jsonl`` (one line per attempt, written as it
starts, closed as it ends), ``trial_state.json`` (the driver's word on failures), the outcome
and the leaderboard drawn from them, and the resume command of a run on a cluster. No Ray; the
real retried trials are in test_search_resilience.py and test_cluster.py."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis import leaderboard, run_folder
from analysis.tables import load_run
from tests import run_fixture as fx
from tune.run import RayRun


def test_an_attempt_keeps_its_start_line_when_it_is_killed_and_is_closed_when_it_ends(
        tmp_path: Path) -> None:
    from tune.trial import attempt

    with attempt(tmp_path, {"node_ip": "10.231.0.2", "pid": 11}) as first:
        first.note(resumed_from_epoch=2)
        killed = run_folder.read_attempts(tmp_path)  # what a kill -9 here leaves
    assert killed == [{"attempt": 1, "node_ip": "10.231.0.2", "pid": 11,
                       "resumed_from_epoch": 2}]
    with pytest.raises(ValueError, match="bad"), attempt(tmp_path, {"node_ip": "10.231.0.1"}):
        raise ValueError("bad\nsecond line")
    with pytest.raises(SystemExit), attempt(tmp_path, {"node_ip": "10.231.0.1"}):
        raise SystemExit(0)  # how Ray stops a trial's function: an end, not an error
    lines = run_folder.read_attempts(tmp_path)
    assert [a["attempt"] for a in lines] == [1, 2, 3]
    assert lines[0]["resumed_from_epoch"] == 2 and "finished" in lines[0]
    assert lines[1]["error"] == "ValueError: bad" and "finished" in lines[1]
    assert "error" not in lines[2] and "finished" in lines[2]
    assert len((tmp_path / run_folder.PLACEMENT_FILE).read_text().splitlines()) == 3


def test_a_trial_completed_after_a_retry_is_completed_and_ranked_by_its_psnr(
        tmp_path: Path) -> None:
    """Ray leaves error.txt behind after a failed attempt even when the retry completes: the
    outcome comes from the driver's word and the results, and the trial can win."""
    run = fx.write_small_run(tmp_path)
    p = {"model_lr": 0.03, "lr_scheduler_gamma": 0.1, "lr_scheduler_milestones": [0.5, 0.8],
         "batch_size": 16}
    fx.write_trial(run, 6, p, [25.0, 26.0, 27.0, 28.0], failures=1, checkpoint_epochs=(4,))
    fx.write_trial(run, 7, p, [24.0, 24.5], failures=3, error=True)  # no retry left
    assert (fx.trial_dir(run, 6) / "error.txt").is_file()
    loaded = load_run(run)
    t = loaded.trials.set_index("trial")
    assert t.loc[fx.trial_id(6), "outcome"] == "completed" and not t.loc[fx.trial_id(6), "error"]
    assert t.loc[fx.trial_id(6), "retries"] == 1
    assert t.loc[fx.trial_id(7), "outcome"] == "error" and t.loc[fx.trial_id(7), "error"]
    assert t.loc[fx.trial_id(7), "retries"] == 2
    assert t.loc[fx.trial_id(1), "retries"] == 0  # never failed
    assert leaderboard.winner(loaded)["trial"] == fx.trial_id(6)
    ranked = leaderboard.rank(loaded.trials)
    assert set(ranked["trial"][-2:]) == {fx.ERRORED, fx.trial_id(7)}  # errors last
    text = leaderboard.render(loaded)
    assert "completed (retried 1x)" in text and "error (retried 2x)" in text


def test_a_run_from_before_the_trial_state_judges_by_its_results(tmp_path: Path) -> None:
    """No trial_state.json: error.txt means error only where the results do not show the end."""
    run = fx.write_small_run(tmp_path)
    p = {"model_lr": 0.03, "lr_scheduler_gamma": 0.1, "lr_scheduler_milestones": [0.5, 0.8],
         "batch_size": 16}
    fx.write_trial(run, 6, p, [25.0, 26.0, 27.0, 28.0], error=True)  # completed after a retry
    t = load_run(run).trials.set_index("trial")
    assert t.loc[fx.trial_id(6), "outcome"] == "completed"
    assert t.loc[fx.trial_id(6), "retries"] is pd.NA  # how often: not recorded
    assert t.loc[fx.ERRORED, "outcome"] == "error"  # 2 of 4 epochs and error.txt
    assert "completed (retried)" in leaderboard.render(load_run(run))


def test_an_unreadable_trial_state_is_none(tmp_path: Path) -> None:
    (tmp_path / run_folder.TRIAL_STATE_FILE).write_text(json.dumps({"failures": "x"}))
    assert run_folder.read_trial_state(tmp_path) is None
    run_folder.write_trial_state(tmp_path, run_folder.TrialState(2, errored=True))
    assert run_folder.read_trial_state(tmp_path) == run_folder.TrialState(2, True)


def test_the_resume_command_of_a_cluster_run_repeats_its_address_and_token(
        tmp_path: Path) -> None:
    token = tmp_path / "auth_token"
    on_cluster = RayRun(None, None, None, "10.231.0.1:6379", str(token))
    assert on_cluster.resume_command(tmp_path / "runs", tmp_path / "runs" / "r1") == (
        f"python -m tune.run --storage {tmp_path / 'runs'} --resume r1 --address "
        f"10.231.0.1:6379 --ray-token-file {token}")
    local = RayRun(None, "ab" * 28, None)
    assert local.resume_command(Path("runs"), Path("runs/r1")) == \
        "python -m tune.run --storage runs --resume r1"
