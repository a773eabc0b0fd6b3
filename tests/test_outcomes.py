"""What became of each trial, and which one ran the defaults (analysis/outcomes.py), read from
run folders on disk by analysis.tables.load_run, as the leaderboard and the report read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis import record
from analysis.record import ParamRange, SchedulerPlan
from analysis.tables import load_run
from tests import run_fixture as fx


def _outcomes(run: Path) -> dict[str, str]:
    trials = load_run(run).trials
    return dict(zip(trials["trial"], trials["outcome"], strict=True))


def _rewrite(run: Path, **changes: object) -> Path:
    record.write(run, record.read(run).replace(**changes))
    return run


def test_without_asha_a_trial_that_stopped_early_stopped_at_its_epoch(tmp_path: Path) -> None:
    run = _rewrite(fx.write_small_run(tmp_path), scheduler=SchedulerPlan("fifo", rungs=(1, 2)))
    got = _outcomes(run)
    assert got["3f2a1002"] == "stopped at epoch 1" and got["3f2a1003"] == "stopped at epoch 2"
    assert got["3f2a1000"] == "completed" and got["3f2a1004"] == "diverged"


def test_asha_names_the_rung_an_epoch_is_and_no_other(tmp_path: Path) -> None:
    run = _rewrite(fx.write_small_run(tmp_path), scheduler=SchedulerPlan("asha", 1, 2, (2, 3)))
    got = _outcomes(run)
    assert got["3f2a1002"] == "stopped at epoch 1"  # epoch 1 is not a rung of this run
    assert got["3f2a1003"] == "stopped by ASHA at rung 1 (epoch 2)"


def test_trials_without_results(tmp_path: Path) -> None:
    run = fx.write_small_run(tmp_path)
    fx.write_trial(run, 6, fx.DEFAULTS, [])
    assert _outcomes(run)["3f2a1006"] == "no results"
    unfinished = _rewrite(run, finished=None)
    assert _outcomes(unfinished)["3f2a1006"] == "running/interrupted"
    # A trial that stopped short of its budget in a run still going may yet report again.
    assert _outcomes(unfinished)["3f2a1002"] == "running/interrupted"


def test_the_last_report_decides_and_an_unknown_budget_is_complete(tmp_path: Path) -> None:
    run = fx.write_small_run(tmp_path)
    # A trial whose last line says it diverged, after earlier lines that did not.
    tdir = fx.write_trial(run, 6, fx.DEFAULTS, [24.0, 24.5], statuses=["running", "running"])
    lines = (tdir / "result.json").read_text().splitlines()
    last = {**json.loads(lines[-1]), "status": "diverged"}
    (tdir / "result.json").write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    assert _outcomes(run)["3f2a1006"] == "diverged"
    # No budget recorded, no max_epochs in the reports and no epochs in the config: a trial
    # that stopped reporting is taken as complete, not as stopped.
    tdir = fx.write_trial(run, 7, fx.DEFAULTS, [24.0])
    rows = [{k: v for k, v in json.loads(x).items() if k not in ("max_epochs", "trial_config")}
            for x in (tdir / "result.json").read_text().splitlines()]
    (tdir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tdir / "trial_config.json").unlink(missing_ok=True)
    got = _outcomes(_rewrite(run, budget=None))
    assert got["3f2a1007"] == "completed" and got["3f2a1002"] == "stopped by ASHA at rung 1 " \
                                                                  "(epoch 1)"
    # Every epoch of the budget reported, the last line not saying so: completed.
    fx.write_trial(run, 8, fx.DEFAULTS, [24.0, 24.5, 25.0, 25.5], statuses=["running"] * 4)
    assert _outcomes(run)["3f2a1008"] == "completed"


@pytest.mark.parametrize("change, defaults", [
    ({}, "3f2a1000"),
    # A float written another way is the same value; a list must match in length and values.
    ({"model_lr": "x1.0000000001"}, "3f2a1000"),
    ({"lr_scheduler_milestones": [0.1]}, None),
    ({"lr_scheduler_milestones": [0.1, 0.8, 0.9]}, None),
    ({"batch_size": 17}, None),
    # A key the trials share says nothing, even where the defaults differ (the run's budget).
    ({"epoch_samples": 1024}, "3f2a1000"),
    # A default the trials have no counterpart for (None) matches no trial's number or list.
    ({"lr_scheduler_gamma": None}, None),
    ({"lr_scheduler_milestones": None}, None),
])
def test_the_defaults_trial_is_the_first_whose_config_matches(tmp_path: Path, change: dict,
                                                              defaults: str | None) -> None:
    run = fx.write_small_run(tmp_path)
    rec = record.read(run)
    assert rec.default_config is not None
    want = dict(rec.default_config)
    for key, value in change.items():
        want[key] = want[key] * 1.0000000001 if value == "x1.0000000001" else value
    _rewrite(run, default_config=want)
    flagged = load_run(run).trials.set_index("trial")["is_defaults"]
    assert list(flagged.index[flagged]) == ([defaults] if defaults else [])


def test_a_searched_choice_of_words_is_compared_as_words(tmp_path: Path) -> None:
    run = fx.write_small_run(tmp_path)  # every trial ran the default optimizer, sgd
    rec = record.read(run)
    _rewrite(run, params=(*rec.params, ParamRange("optimizer", "choice",
                                                         choices=("sgd", "adamw"))))
    assert _flagged(run) == ["3f2a1000"]
    assert rec.default_config is not None
    _rewrite(run, default_config={**rec.default_config, "optimizer": "adamw"})
    assert _flagged(run) == []


def test_a_field_the_trials_differ_in_decides_though_not_searched(tmp_path: Path) -> None:
    # Two trials that differ in a field the record does not list as searched (two values).
    run = tmp_path / "two"
    fx.write_meta(run)
    fx.write_trial(run, 0, {**fx.DEFAULTS, "lr_scheduler_gamma": 0.3}, [24.0])
    fx.write_trial(run, 1, fx.DEFAULTS, [24.0])
    _rewrite(run, params=(ParamRange("model_lr", "loguniform", 1e-4, 1e-1),))
    assert _flagged(run) == ["3f2a1001"]


def _flagged(run: Path) -> list[str]:
    flagged = load_run(run).trials.set_index("trial")["is_defaults"]
    return list(flagged.index[flagged])


def test_no_defaults_without_a_default_config_or_keys_to_compare(tmp_path: Path) -> None:
    run = _rewrite(fx.write_small_run(tmp_path), default_config=None)
    assert not load_run(run).trials["is_defaults"].any()
    # Only keys every trial shares, none searched: nothing tells the defaults apart.
    run = _rewrite(fx.write_small_run(tmp_path / "b"), default_config={"epochs": 4})
    assert not load_run(run).trials["is_defaults"].any()
