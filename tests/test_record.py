"""The run record (analysis/record.py) on its own: the round trip of every field, the schema-1
reader, the parameter ranges' forms. Fast, no run folder beyond one written here."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from pathlib import Path

import pytest

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


def test_a_record_without_its_optional_sections_round_trips(tmp_path: Path) -> None:
    # FULL has every section; a run may have none of these (a grid search has no search plan, a
    # run still going no winner), another scheduler, a conditional grid and a grid of lists.
    sparse = FULL.replace(
        budget=None, search=None, best_trial=None, scheduler=SchedulerPlan("hyperband", 1, 4),
        params=(ParamRange("m", "grid", choices=((0.1, 0.5), (0.3,))),
                ParamRange("s", "grid", choices=("cosine", "step"), branches=(
                    ("cosine", (ParamRange("lr_min_fraction", "uniform", 0.0, 0.1),)),
                    ("step", ())))))
    assert (sparse.budget, sparse.search, sparse.best_trial) == (None, None, None)
    no_bicubic = FULL.replace(best_trial=dataclasses.replace(FULL.best_trial, bicubic_psnr=None))
    for rec in (sparse, no_bicubic):
        record.write(tmp_path, rec)
        assert record.read(tmp_path) == rec


def test_a_value_json_has_no_form_for_is_written_as_its_text(tmp_path: Path) -> None:
    # YAML reads an unquoted 2026-12-01 as a date; the space document keeps what the file said.
    record.write(tmp_path, FULL.replace(space={"note": datetime.date(2026, 12, 1)}))
    assert record.read(tmp_path).space == {"note": "2026-12-01"}


def _v1(**over: object) -> dict:
    """A schema-1 record as the code before the typed record wrote it."""
    return {"name": "old", "command": ["python", "-m", "tune.run"], "space_file": "/s.yaml",
            "spec": {"params": {"model_lr": {"loguniform": [1e-4, 1e-2]},
                                "lr_scheduler_milestones": {"milestones": [1, 2, 0.1, 0.9]}},
                     "search": {"algorithm": "optuna", "seed": 3, "n_startup_trials": 5}},
            "searched": ["model_lr", "lr_scheduler_milestones"], "max_epochs": 8,
            "epoch_samples": 512, "validation_interval": 2,
            "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 3,
                          "rungs": [2, 6]},
            "space_document": {"trials": 4}, "ray_session_dir": "/tmp/ray/s",
            "ray_node_id": "n1", "overrides": {"trials": 4}, "metric": "psnr", "mode": "max",
            **over}


def test_a_schema_1_record_reads_into_the_typed_one() -> None:
    rec = RunRecord.from_json(_v1(), "old")
    assert rec.schema == 1 and rec.name == "old" and rec.command == ("python", "-m", "tune.run")
    assert rec.params == (ParamRange("model_lr", "loguniform", 1e-4, 1e-2),
                          ParamRange("lr_scheduler_milestones", "milestones", 0.1, 0.9,
                                     count=(1, 2)))
    assert rec.budget == Budget(8, 512, 2)
    assert rec.search == SearchPlan("optuna", 3, 5)
    assert rec.scheduler == SchedulerPlan("asha", 2, 3, (2, 6))
    assert rec.space == {"trials": 4} and rec.overrides == {"trials": 4}
    assert (rec.ray_session_dir, rec.ray_node_id) == ("/tmp/ray/s", "n1")
    # Sections an old record may lack: no budget, the searched names from the spec, no space.
    bare = RunRecord.from_json(_v1(searched=None, max_epochs=None, space_document="x",
                                   spec={"params": {"model_lr": {"uniform": [0, 1]}}}), "old")
    assert bare.budget is None and bare.space is None and bare.search is None
    assert bare.searched == ["model_lr"]
    # The searched names, where given, are the record's params (not the spec's every range); a
    # search plan without its algorithm was TPE's; an old winner may lack its path and bicubic.
    older = RunRecord.from_json(_v1(searched=["lr_scheduler_milestones"],
                                    spec={"params": _v1()["spec"]["params"], "search": {"seed": 1}},
                                    best_trial={"trial_id": "t", "best_psnr": 20, "best_epoch": 2}),
                                "old")
    assert [p.name for p in older.params] == ["lr_scheduler_milestones"]
    assert older.search == SearchPlan("optuna", 1)
    assert older.best_trial == BestTrial("t", 20.0, 2, None, {}, "")
    assert RunRecord.from_json({}, "empty") == RunRecord(
        name="", command=(), space_file=None, space=None, params=(), budget=None,
        scheduler=SchedulerPlan("asha"), search=None, evaluation=None, default_config=None,
        schema=1)


@pytest.mark.parametrize("defn, want", [
    ({"milestones": {"count": 2, "low": 0.1, "high": 0.5}},
     ParamRange("m", "milestones", 0.1, 0.5, count=(2, 2))),
    ({"milestones": [1, 3, 0.2, 0.8]}, ParamRange("m", "milestones", 0.2, 0.8, count=(1, 3))),
    ({"randint": [2, 9]}, ParamRange("m", "randint", 2.0, 9.0)),
    ({"grid": [[0.1, 0.5], 3]}, ParamRange("m", "grid", choices=((0.1, 0.5), 3))),
    ({"uniform": [1, 2], "choice": [1]}, ParamRange("m", "unrecorded")),
    ([1, 2], ParamRange("m", "unrecorded")),
    ({"uniform": [1, 2, 3]}, ParamRange("m", "unrecorded")),
    ({"milestones": {"count": [1, 2], "low": 0.1}}, ParamRange("m", "unrecorded")),
    ({"normal": [0, 1]}, ParamRange("m", "unrecorded")),
    ({"uniform": ["a", 1]}, ParamRange("m", "unrecorded")),
])
def test_a_range_reads_from_the_space_files_form_or_is_unrecorded(defn: object,
                                                                   want: ParamRange) -> None:
    assert ParamRange.from_json("m", defn) == want


@pytest.mark.parametrize("p, words", [
    (PARAMS[0], "loguniform [0.0001, 0.01]"),
    (PARAMS[2], "randint [8, 32] (both included)"),
    (PARAMS[3], "choice of adam, sgd"),
    (PARAMS[4], "grid of true, false"),
    (PARAMS[5], "1-3 LR drops between 20% and 90% of the budget"),
    (ParamRange("m", "milestones", 0.125, 0.5, count=(1, 1)),
     "1 LR drop between 12.5% and 50% of the budget"),
    (ParamRange("m", "milestones", 0.1, 0.5, count=(2, 2)), "2 LR drops between 10% and 50% of "
                                                            "the budget"),
    (ParamRange("m", "grid", choices=((0.1, 0.5), (0.3,))), "grid of [0.1, 0.5], [0.3]"),
    (ParamRange("m", "unrecorded"), "range not recorded"),
    (ParamRange("m", "choice", choices=("AdamW", None)), "choice of AdamW, None"),  # as written
])
def test_each_range_in_words(p: ParamRange, words: str) -> None:
    assert p.describe() == words


def test_milestone_scalars_for_plots() -> None:
    varying = PARAMS[5]  # 1-3 drops
    names = ["lr_scheduler_milestones/count", "lr_scheduler_milestones/first",
             "lr_scheduler_milestones/last"]
    assert varying.scalar_names() == names
    assert varying.scalars([0.3, 0.5, 0.7]) == dict(zip(names, [3, 0.3, 0.7], strict=True))
    assert varying.scalars([]) == dict(zip(names, [0, None, None], strict=True))
    assert varying.scalars("no") == dict.fromkeys(names)
    one = ParamRange("m", "milestones", 0.1, 0.5, count=(1, 1))
    assert one.scalar_names() == ["m/first"] and one.scalars((0.25,)) == {"m/first": 0.25}
    two = ParamRange("m", "milestones", 0.1, 0.5, count=(2, 2))
    assert two.scalar_names() == ["m/first", "m/last"]
    assert varying.scalar_range("lr_scheduler_milestones/count") == ParamRange(
        "lr_scheduler_milestones/count", "choice", choices=(1, 2, 3))
    assert varying.scalar_range("lr_scheduler_milestones/last") == ParamRange(
        "lr_scheduler_milestones/last", "uniform", 0.2, 0.9)
    assert varying.scalar_range("lr_scheduler_milestones") is varying
    assert PARAMS[0].scalar_names() == ["model_lr"] and PARAMS[0].scalars(0.1) == {"model_lr": 0.1}
    assert PARAMS[0].scalar_range("model_lr") is PARAMS[0]


@pytest.mark.parametrize("value, marks", [
    ([0.1, 0.5], [0.1, 0.5]), ((0.2,), [0.2]), ([], []), (None, None), ("0.1", None),
    ({"a": 1}, None), ([0.1, "x"], None), ([0.1, float("nan")], None), (3, None),
    ({0.5: 1}, None), (b"ab", None),  # iterable as numbers, but no list
])
def test_milestone_list(value: object, marks: list[float] | None) -> None:
    assert record.milestone_list(value) == marks


def test_branches_are_searched_and_active_only_when_chosen() -> None:
    cond = PARAMS[6]
    assert FULL.searched == ["model_lr", "momentum", "batch_size", "optimizer", "residual",
                             "lr_scheduler_milestones", "lr_schedule", "lr_min_fraction",
                             "lr_scheduler_gamma"]
    assert FULL.param("lr_scheduler_gamma") == cond.branches[1][1][0]
    assert FULL.param("nothing") is None
    assert [p.name for p in record.active(PARAMS, {"lr_schedule": "cosine"})][-1] == \
        "lr_min_fraction"
    assert len(record.active(PARAMS, {"lr_schedule": "multistep"})) == len(PARAMS) + 2
    assert len(record.active(PARAMS, {})) == len(PARAMS)
    assert cond.active("linear") == ()
    assert PARAMS[0].log and not PARAMS[1].log and PARAMS[2].numeric and not PARAMS[3].numeric


def test_bad_folders_are_one_line_each(tmp_path: Path) -> None:
    with pytest.raises(record.RunFolderError, match="no such folder"):
        record.read(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(record.RunFolderError, match="is a file, but a run folder"):
        record.read(tmp_path / "file")
    runs = tmp_path / "runs"
    for i in range(7):
        (runs / f"r{i}").mkdir(parents=True)
        record.write(runs / f"r{i}", FULL)
    with pytest.raises(record.RunFolderError, match=r"no espcn_tune.record\); run folders inside "
                                                    r"it: .*r0, .*r4 and 2 more$"):
        record.read(runs)
    (runs / "r0" / "sub").mkdir()
    with pytest.raises(record.RunFolderError, match=r"not an espcn-tune run folder \(there is no "
                                                    r"espcn_tune.record\)$"):
        record.read(runs / "r0" / "sub")
    (runs / "r1" / record.META_FILE).write_text("[1, 2]")
    with pytest.raises(record.RunFolderError, match="expected a JSON object, got list"):
        record.read(runs / "r1")
    (runs / "r2" / record.META_FILE).write_text("{not json")
    with pytest.raises(record.RunFolderError, match="unreadable run record"):
        record.read(runs / "r2")
    bad = runs / "r3" / record.META_FILE  # each message names the file
    bad.write_text(json.dumps({**FULL.to_json(), "budget": {"epochs": 2}}))
    with pytest.raises(record.RunFolderError,
                       match=rf"^{re.escape(str(bad))}: unreadable run record \(KeyError"):
        record.read(runs / "r3")
    bad.write_text(json.dumps({**FULL.to_json(), "schema": record.SCHEMA + 1}))
    with pytest.raises(record.RunFolderError, match=rf"^{re.escape(str(bad))}: schema 3 is newer "
                                                    r"than this espcn-tune reads \(2\)"):
        record.read(runs / "r3")


@pytest.mark.parametrize("runs, hint", [
    (0, ""), (5, "; run folders inside it: .*r0, .*r4"),
    (6, "; run folders inside it: .*r0, .*r4 and 1 more")])
def test_a_folder_of_runs_names_at_most_five_of_them(tmp_path: Path, runs: int, hint: str) -> None:
    for i in range(runs):
        (tmp_path / f"r{i}").mkdir()
        record.write(tmp_path / f"r{i}", FULL)
    with pytest.raises(record.RunFolderError, match=r"no espcn_tune.record\)" + hint + "$"):
        record.read(tmp_path)


def test_a_folder_that_cannot_be_listed_gets_no_hint(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)  # as root, chmod cannot refuse a listing
    with pytest.raises(record.RunFolderError, match=r"no espcn_tune.record\)$"):
        record.read(tmp_path)


def test_a_run_recorded_under_the_old_name_is_read_and_moved_on_write(tmp_path: Path) -> None:
    record.write(tmp_path, FULL)
    (tmp_path / record.META_FILE).rename(tmp_path / record.LEGACY_META_FILE)
    assert record.exists(tmp_path) and record.read(tmp_path) == FULL
    record.write(tmp_path, FULL.replace(finished=None))  # the new name, the old one gone
    assert not (tmp_path / record.LEGACY_META_FILE).exists()
    assert record.read(tmp_path).finished is None
    # Both names (a copy put back by hand): the new one is the record.
    (tmp_path / record.LEGACY_META_FILE).write_text(json.dumps(FULL.to_json()))
    assert record.read(tmp_path).finished is None
