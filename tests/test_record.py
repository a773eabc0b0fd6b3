"""The run record (analysis/record.py) on its own: the round trip of every field, the schema-1
reader, the parameter ranges' forms. Fast, no run folder beyond one written here."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from analysis import record
from analysis.record import BestTrial, Budget, ParamRange, RunRecord, SchedulerPlan, SearchPlan

# Every kind of range the space file has, a conditional choice among them.
PARAMS = (
    ParamRange("model_lr", "loguniform", 1e-4, 1e-2),
    ParamRange("momentum", "uniform", 0.5, 0.99),
    ParamRange("batch_size", "randint", 8, 32),
    ParamRange("optimizer", "choice", choices=("adam", "sgd")),
    ParamRange("residual", "grid", choices=(True, False)),
    ParamRange("lr_scheduler_milestones", "milestones", 0.2, 0.9, count=(1, 3)),
    ParamRange("lr_schedule", "choice", choices=("cosine", "multistep"), branches=(
        ("cosine", (ParamRange("lr_min_fraction", "uniform", 0.0, 0.1),)),
        ("multistep", (ParamRange("lr_scheduler_gamma", "choice", choices=(0.1, 0.3)),
                       ParamRange("lr_scheduler_milestones", "milestones", 0.1, 0.8,
                                  count=(2, 2)))),
    )),
)

# Every field away from its default (a reader that dropped one would go unseen otherwise).
FULL = RunRecord(
    name="full", command=("python", "-m", "tune.run", "--space", "x.yaml", "--fuse", "2"),
    space_file="/spaces/x.yaml", space={"params": {"model_lr": {"loguniform": [1e-4, 1e-2]}},
                                        "trials": 8},
    params=PARAMS, budget=Budget(6, 256, 2),
    scheduler=SchedulerPlan("asha", 2, 3, (2, 6)), search=SearchPlan("random", 7, 4),
    evaluation="Y channel, crop 4", default_config={"model_lr": 1e-3, "epochs": 6},
    versions={"torch": "2.13.0", "ray": "2.60.0"}, metric="loss", mode="min",
    ray_session_dir="/tmp/ray/session_1", ray_node_id="abc123", started="2026-12-01T10:00:00Z",
    finished="2026-12-01T11:00:00Z",
    best_trial=BestTrial("3f2a1001", 27.5, 4, 25.1, {"model_lr": 2e-3}, "trial_0001_3f2a1001"),
    overrides={"trials": 8, "fuse": 2},
)


def test_full_record_sets_every_field_away_from_its_default() -> None:
    # The round trips below are only as good as this: a field added at its default would not
    # be checked by them.
    for f in dataclasses.fields(RunRecord):
        value = getattr(FULL, f.name)
        if f.name == "schema":  # what this version writes; schema 1 is read in its own tests
            continue
        if f.default is not dataclasses.MISSING:
            assert value != f.default, f.name
        elif f.default_factory is not dataclasses.MISSING:
            assert value != f.default_factory(), f.name
        assert value not in (None, (), {}, ""), f.name
    assert FULL.schema == record.SCHEMA


def test_every_field_round_trips_through_the_file(tmp_path: Path) -> None:
    assert RunRecord.from_json(json.loads(json.dumps(FULL.to_json())), "x") == FULL
    record.write(tmp_path, FULL)
    assert record.read(tmp_path) == FULL
    assert not (tmp_path / (record.META_FILE + ".tmp")).exists()
    for f in dataclasses.fields(RunRecord):  # field by field, to name the one that is lost
        assert getattr(record.read(tmp_path), f.name) == getattr(FULL, f.name), f.name


def test_the_json_form_is_the_space_files_and_sections() -> None:
    d = FULL.to_json()
    assert d["schema"] == 2 and d["ray"] == {"session_dir": "/tmp/ray/session_1",
                                             "node_id": "abc123"}
    assert d["params"]["model_lr"] == {"loguniform": [1e-4, 1e-2]}
    assert d["params"]["optimizer"] == {"choice": ["adam", "sgd"]}
    assert d["params"]["lr_scheduler_milestones"] == {"milestones": {"count": [1, 3], "low": 0.2,
                                                                     "high": 0.9}}
    assert d["params"]["lr_schedule"] == {"choice": {
        "cosine": {"lr_min_fraction": {"uniform": [0.0, 0.1]}},
        "multistep": {"lr_scheduler_gamma": {"choice": [0.1, 0.3]},
                      "lr_scheduler_milestones": {"milestones": {"count": [2, 2], "low": 0.1,
                                                                 "high": 0.8}}}}}
    assert d["budget"] == {"epochs": 6, "epoch_samples": 256, "validation_interval": 2}
    assert d["scheduler"] == {"type": "asha", "grace_period": 2, "reduction_factor": 3,
                              "rungs": [2, 6]}
    assert d["search"] == {"algorithm": "random", "seed": 7, "n_startup_trials": 4}
    assert d["best_trial"]["params"] == {"model_lr": 2e-3}
    assert d["overrides"] == {"trials": 8, "fuse": 2} and d["command"][-1] == "2"
