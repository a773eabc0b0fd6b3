"""An Optuna trial and its trial folder name each other (issue 20, item 9): ``ray_trial_id`` and
``trial_dir`` user attributes on the Optuna trial, the Optuna number in the folder's
``optuna_trial.json``, in trials.parquet and on the leaderboard."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pandas as pd
import pytest

from analysis import leaderboard, run_folder
from analysis.tables import load_run
from tests import run_fixture as fx
from tune.search import METRIC, make_searcher, study_journal
from tune.space import load_space


def test_the_searcher_links_each_optuna_trial_and_its_folder(tmp_path: Path) -> None:
    spec = dataclasses.replace(load_space("smoke"), include_defaults=False)  # 4 epochs
    searcher = make_searcher(spec, tmp_path).searcher
    for t in ("aaaa0001", "bbbb0002"):
        searcher.suggest(t)
    # The folders as Ray names them: its own counter, so "trial_0002" is Optuna's #1.
    first, second = tmp_path / "trial_0001_aaaa0001", tmp_path / "trial_0002_bbbb0002"
    first.mkdir()
    searcher.on_trial_result("aaaa0001", {METRIC: 20.0, "epoch": 1})
    searcher.on_trial_result("bbbb0002", {METRIC: 21.0, "epoch": 1})  # its folder: not yet
    second.mkdir()
    searcher.on_trial_complete("bbbb0002", {METRIC: 21.5, "epoch": 2, "status": "running"})
    study = optuna.load_study(study_name="smoke", storage=searcher._storage)
    link = ("ray_trial_id", "trial_dir")  # beside the params' user form (tune.sampling)
    attrs = {t.number: {k: v for k, v in t.user_attrs.items() if k in link} for t in study.trials}
    assert attrs == {0: {"ray_trial_id": "aaaa0001", "trial_dir": first.name},
                     1: {"ray_trial_id": "bbbb0002", "trial_dir": second.name}}
    for folder, number, ray_id in ((first, 0, "aaaa0001"), (second, 1, "bbbb0002")):
        assert json.loads((folder / run_folder.OPTUNA_FILE).read_text()) == {
            "study": "smoke", "number": number, "ray_trial_id": ray_id}
    assert study_journal(tmp_path).is_file()


def test_the_leaderboard_and_tables_give_the_optuna_number(tmp_path: Path) -> None:
    run_dir = fx.write_run_with_reference(tmp_path)
    for index in range(4):  # the study's #k is trial_000(k+1), as in a real run
        run_folder.write_optuna_trial(fx.trial_dir(run_dir, index), "smoke", index,
                                      fx.trial_id(index))
    run = load_run(run_dir)
    numbers = dict(zip(run.trials["trial"], run.trials["optuna_trial"], strict=True))
    assert numbers[fx.trial_id(2)] == 2 and numbers["reference"] is pd.NA
    heads, rows = leaderboard.table_rows(run)
    col = heads.index("optuna #")
    assert col == 2  # right after the trial id
    by_trial = {r[1]: r[col] for r in rows}
    assert by_trial == {fx.trial_id(0): "0", fx.trial_id(1): "1", fx.trial_id(2): "2",
                        fx.trial_id(3): "3", "reference": "-"}
    # A run without links (grid, PBT, an older run) shows no such column.
    plain = load_run(fx.write_small_run(tmp_path))
    assert "optuna #" not in leaderboard.table_rows(plain)[0]


@pytest.mark.slow
def test_a_real_search_links_every_trial(smoke_run: Path) -> None:
    study = optuna.load_study(study_name="smoke", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_journal(smoke_run)))))
    folders = sorted(p for p in smoke_run.glob("trial_*") if p.is_dir())
    assert len(folders) == len(study.trials) == 6
    by_number = {t.number: t for t in study.trials}
    for folder in folders:
        link = json.loads((folder / run_folder.OPTUNA_FILE).read_text())
        t = by_number[link["number"]]
        assert {k: t.user_attrs.get(k) for k in ("trial_dir", "ray_trial_id")} == {
            "trial_dir": folder.name, "ray_trial_id": link["ray_trial_id"]}
        assert folder.name.endswith(link["ray_trial_id"])
