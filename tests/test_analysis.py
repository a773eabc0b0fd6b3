"""analysis: tables, leaderboard, report and `python -m analysis` on synthetic run folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis import importance, leaderboard
from analysis.__main__ import main
from analysis.report import write_report
from analysis.tables import load_run, write_tables
from tests import run_fixture as fx

ROOT = Path(__file__).resolve().parents[1]
BEST_ORDER = ["3f2a1001", "3f2a1000", "3f2a1003", "3f2a1004", "3f2a1002",
              "3f2a1005"]
LAST_ORDER = ["3f2a1001", "3f2a1000", "3f2a1003", "3f2a1002", "3f2a1004",
              "3f2a1005"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_small_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """The CLI run once on a private copy (it writes into the run folder)."""
    run = fx.write_small_run(tmp_path_factory.mktemp("cli"))
    other = fx.write_synthetic_run(run.parent, "other", n_trials=12, n_reports=6, seed=3)
    out = subprocess.run([sys.executable, "-m", "analysis", str(run), "--compare", str(other)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    return run, out.returncode, out.stdout + out.stderr


# --- tables --------------------------------------------------------------------------------------
def test_trials_table_outcomes_and_flags(small_run: Path) -> None:
    run = load_run(small_run)
    t = run.trials.set_index("trial")
    assert list(run.trials["trial"]) == [fx.trial_id(i) for i in range(6)]
    assert t.loc["3f2a1000", "outcome"] == "completed"
    assert t.loc["3f2a1002", "outcome"] == "stopped by ASHA at rung 1 (epoch 1)"
    assert t.loc["3f2a1003", "outcome"] == "stopped by ASHA at rung 2 (epoch 2)"
    assert t.loc["3f2a1004", "outcome"] == "diverged"
    assert t.loc["3f2a1005", "outcome"] == "error"
    assert list(t.index[t["is_defaults"]]) == ["3f2a1000"]
    assert list(t.index[t["error"]]) == ["3f2a1005"]
    assert t.loc["3f2a1000", "best_psnr"] == 25.6 and t.loc["3f2a1000", "best_epoch"] == 2
    assert t.loc["3f2a1000", "last_psnr"] == 25.2
    assert t.loc["3f2a1004", "last_psnr"] == 0.0
    assert t.loc["3f2a1001", "samples_trained"] == 4 * 512
    assert t.loc["3f2a1001", "gain_db"] == pytest.approx(26.8 - fx.BICUBIC_PSNR)
    assert set(fx.SEARCHED) | set(fx.SCALARS) <= set(run.trials.columns)
    assert run.searched == fx.SEARCHED and list(run.scalar_columns) == fx.SCALARS
    # The milestones in the user's form: the list of fractions, and its first and last for plots;
    # the searcher's scalars are nowhere.
    assert t.loc["3f2a1001", "lr_scheduler_milestones"] == [0.5, 0.8]
    assert t.loc["3f2a1001", "lr_scheduler_milestones/first"] == 0.5
    assert t.loc["3f2a1001", "lr_scheduler_milestones/last"] == 0.8
    assert not [c for c in run.trials.columns if c.startswith("lr_milestone")]
    assert json.loads(t.loc["3f2a1001", "config"])["model_lr"] == 0.02


def test_a_run_from_before_the_typed_record_reads_the_same(tmp_path: Path) -> None:
    # Schema 1, Ray's own folder names, the searcher's scalars in params.json: the tables hold
    # the same user-form values as for a run written today.
    today = load_run(fx.write_small_run(tmp_path / "today"))
    old = load_run(fx.make_legacy(fx.write_small_run(tmp_path / "old")))
    assert old.record.schema == 1 and old.record.params == today.record.params
    assert old.record.budget == today.record.budget and old.rungs == today.rungs
    keep = ["trial", *fx.SEARCHED, *fx.SCALARS, "best_psnr", "outcome", "is_defaults"]
    pd.testing.assert_frame_equal(old.trials[keep], today.trials[keep])
    assert importance.distributions(old) == importance.distributions(today)


def test_unfinished_run_marks_stopped_trials_as_interrupted(tmp_path: Path) -> None:
    run = load_run(fx.write_small_run(tmp_path, finished=False))
    t = run.trials.set_index("trial")["outcome"]
    assert t["3f2a1002"] == t["3f2a1003"] == "running/interrupted"
    assert t["3f2a1001"] == "completed" and t["3f2a1005"] == "error"


def test_truncated_result_line_is_skipped(tmp_path: Path) -> None:
    path = fx.write_small_run(tmp_path)
    result = fx.trial_dir(path, 1) / "result.json"
    with result.open("a") as f:
        f.write('{"epoch": 5, "psnr": 3')  # a write cut by a kill
    assert load_run(path).trials.set_index("trial").loc["3f2a1001", "n_reports"] == 4


def test_ray_260_trial_folders_without_results(tmp_path: Path) -> None:
    # Ray 2.60 names trial folders "<trainable>_<8 hex id>_<index>_<params>_<date>"; a trial
    # that has not reported yet has an empty result.json and its trial_config.json.
    run = tmp_path / "starting"
    fx.write_meta(run, finished=False)
    for index, trial_id in ((2, "0badcafe"), (1, "ffff0001"), (10, "12345678")):
        tdir = run / f"run_trial_{trial_id}_{index}_model_lr=0.01_2026-11-26_10-35-56"
        tdir.mkdir()
        (tdir / "params.json").write_text(json.dumps(fx.DEFAULTS))
        (tdir / "result.json").write_text("")
        (tdir / "trial_config.json").write_text(json.dumps(fx.trial_config(fx.DEFAULTS)))
    (run / ".espcn_tune.lock").write_text("123\n")
    loaded = load_run(run)
    assert list(loaded.trials["trial"]) == ["ffff0001", "0badcafe", "12345678"]
    assert set(loaded.trials["outcome"]) == {"running/interrupted"}
    assert loaded.trials["is_defaults"].tolist() == [True, False, False]  # the first one
    assert loaded.trials["lr_scheduler_milestones"][0] == [0.1, 0.8]
    assert main([str(run), "--no-report"]) == 2  # nothing to rank yet


def test_short_trial_folder_names(tmp_path: Path) -> None:
    from tune.ray_edge.trials import trial_dirname

    class Trial:  # what trial_dirname reads of Ray's Trial
        trial_id = "4f99c683"
        experiment_tag = "7_model_lr=0.0012,lr_scheduler_gamma=0.34"

    assert trial_dirname(Trial()) == "trial_0007_4f99c683"
    run = tmp_path / "short"
    fx.write_meta(run, finished=False)
    for index, trial_id in ((12, "0badcafe"), (3, "ffff0001")):
        tdir = run / f"trial_{index:04d}_{trial_id}"
        tdir.mkdir()
        (tdir / "params.json").write_text(json.dumps(fx.DEFAULTS))
        (tdir / "result.json").write_text("")
    assert list(load_run(run).trials["trial"]) == ["ffff0001", "0badcafe"]  # by number


def test_a_run_recorded_under_the_old_name_is_read_and_moved_on_write(tmp_path: Path) -> None:
    from analysis import record

    run = fx.write_small_run(tmp_path)
    (run / record.META_FILE).rename(run / record.LEGACY_META_FILE)
    rec = record.read(run)
    assert load_run(run).record == rec and record.exists(run)
    record.write(run, rec.replace(finished="later"))
    assert not (run / record.LEGACY_META_FILE).exists()
    assert record.read(run).finished == "later"


def test_the_record_round_trips_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    from analysis import record

    run = fx.write_small_run(tmp_path)
    rec = record.read(run)
    assert record.RunRecord.from_json(rec.to_json(), "x") == rec
    newer = {**rec.to_json(), "schema": record.SCHEMA + 1}
    (run / record.META_FILE).write_text(json.dumps(newer))
    with pytest.raises(record.RunFolderError, match="newer than this espcn-tune reads"):
        record.read(run)


def test_infeasible_report_is_not_a_validation(tmp_path: Path) -> None:
    run = fx.write_small_run(tmp_path)
    oom = {"epoch": 4, "samples": 0, "max_epochs": 4, "psnr": 0.0, "ssim": 0.0, "best_psnr": 0.0,
           "status": "infeasible", "reason": "CUDA out of memory. Tried to allocate 2.00 GiB"}
    tdir = fx.write_trial(run, 6, fx.DEFAULTS, [24.9])
    with (tdir / "result.json").open("a") as f:
        f.write(json.dumps({**oom, "trial_id": "3f2a1006"}) + "\n")
    tdir = fx.write_trial(run, 7, fx.DEFAULTS, [])
    (tdir / "result.json").write_text(json.dumps({**oom, "trial_id": "3f2a1007"}) + "\n")
    loaded = load_run(run)
    t = loaded.trials.set_index("trial")
    assert t.loc["3f2a1006", "outcome"] == t.loc["3f2a1007", "outcome"] == "infeasible"
    assert t.loc["3f2a1006", "epochs_trained"] == 1 and t.loc["3f2a1006", "best_psnr"] == 24.9
    assert "out of memory" in t.loc["3f2a1007", "reason"]
    assert len(loaded.results[loaded.results["trial"] == "3f2a1007"]) == 0
    ranked = list(leaderboard.rank(loaded.trials)["trial"])
    assert ranked[-2:] == ["3f2a1007", fx.ERRORED]  # unscored, then errored


def test_parquet_round_trip(small_run: Path, tmp_path: Path) -> None:
    run = load_run(small_run)
    results_path, trials_path = write_tables(run, tmp_path)
    assert len(run.results) == 4 + 4 + 1 + 2 + 2 + 2  # every report of every trial
    for path, frame in ((results_path, run.results), (trials_path, run.trials)):
        by_pandas = pd.read_parquet(path)
        by_arrow = pq.read_table(path).to_pandas()
        assert len(by_pandas) == len(by_arrow) == len(frame)
        assert list(by_pandas.columns) == list(frame.columns)
        pd.testing.assert_frame_equal(by_pandas, by_arrow)
        pd.testing.assert_frame_equal(by_pandas.astype(object), frame.reset_index(drop=True)
                                      .astype(object), check_dtype=False)
    assert json.loads(pq.read_schema(trials_path).metadata[b"espcn_tune.searched"]) == fx.SEARCHED


# --- leaderboard ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("scope", "order"), [("best", BEST_ORDER), ("last", LAST_ORDER)])
def test_leaderboard_order(small_run: Path, scope: str, order: list[str]) -> None:
    run = load_run(small_run)
    ranked = leaderboard.rank(run.trials, scope)
    assert list(ranked["trial"]) == order
    assert list(ranked["rank"]) == list(range(1, 7))
    assert leaderboard.winner(run, scope)["trial"] == "3f2a1001"


def test_errored_trial_with_highest_psnr_ranks_last(small_run: Path) -> None:
    ranked = leaderboard.rank(load_run(small_run).trials)
    assert ranked.iloc[-1]["trial"] == fx.ERRORED
    assert ranked.iloc[-1]["psnr"] == ranked["psnr"].max()


def test_ties_go_to_the_earlier_epoch_then_the_trial_id(small_run: Path) -> None:
    trials = load_run(small_run).trials.copy()
    trials["error"] = False
    trials["best_psnr"] = 25.0
    trials["best_epoch"] = [3, 2, 2, 1, 4, 2]
    ranked = leaderboard.rank(trials, "best")
    assert list(ranked["trial"]) == ["3f2a1003", "3f2a1001", "3f2a1002", "3f2a1005",
                                     "3f2a1000", "3f2a1004"]


def test_render_says_which_best_and_the_convention(small_run: Path) -> None:
    run = load_run(small_run)
    text = leaderboard.render(run, "best")
    assert "best validated PSNR" in text and fx.EVALUATION in text
    assert "[defaults]" in text and "model_lr" in text and "gain dB" in text
    assert "last validation" in leaderboard.render(run, "last")
    assert "more trial(s) not shown" in leaderboard.render(run, "best", top=2)


def test_unknown_scope_is_refused(small_run: Path) -> None:
    with pytest.raises(ValueError, match="scope"):
        leaderboard.rank(load_run(small_run).trials, "median")


# --- importance ----------------------------------------------------------------------------------
def test_distributions_from_spec_and_inferred(small_run: Path, tmp_path: Path) -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    dists = importance.distributions(load_run(small_run))
    assert list(dists) == fx.SCALARS
    assert dists["model_lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert dists["batch_size"] == CategoricalDistribution([8, 16, 32])
    assert dists["lr_scheduler_milestones/first"] == FloatDistribution(0.05, fx.MILESTONE_HIGH)
    assert dists["lr_scheduler_milestones/last"] == FloatDistribution(0.05, fx.MILESTONE_HIGH)
    path = fx.write_small_run(tmp_path)
    meta_file = path / "espcn_tune.record"
    meta = json.loads(meta_file.read_text())
    meta["params"]["batch_size"] = {"choice": [16, 32]}  # 8 is widened
    meta_file.write_text(json.dumps(meta))
    assert importance.distributions(load_run(path))["batch_size"] == CategoricalDistribution(
        [16, 32, 8])
    meta["params"] = {name: {} for name in meta["params"]}  # ranges not recorded
    meta_file.write_text(json.dumps(meta))
    inferred = importance.distributions(load_run(path))
    assert isinstance(inferred["model_lr"], FloatDistribution) and inferred["model_lr"].log
    assert isinstance(inferred["batch_size"], CategoricalDistribution)


def test_importance_needs_two_trials(small_run: Path, tmp_path: Path) -> None:
    imp = importance.param_importances(load_run(small_run))
    assert imp.values and set(imp.values) <= set(fx.SCALARS)
    assert imp.n_trials == 5  # the errored trial is left out
    lone = tmp_path / "lone"
    fx.write_meta(lone)
    fx.write_trial(lone, 0, fx.DEFAULTS, [24.0, 25.0, 25.5, 25.6])
    few = importance.param_importances(load_run(lone))
    assert few.values is None and "not enough trials" in (few.reason or "")


def test_importance_says_when_its_shares_cannot_be_trusted(small_run: Path) -> None:
    """Issue 27, item 2: the shares gave model_lr 0.017 while the scatter showed the trials at
    lr 6.6e-3 0.5 dB below the rest. Each result names why not to trust it, and the figure
    carries the same sentences."""
    run = load_run(small_run)
    imp = importance.param_importances(run)
    assert imp.target_quantile == 0.5  # at least 3 of the 5 in the top group, at most half
    few, budgets = imp.caveats[:2]
    assert few == "only 5 trials: the shares are noisy below 20"
    assert budgets.startswith("3 of 5 trials ended before the full budget (stopped by ASHA, "
                              "diverged) and are valued at the PSNR they had reached (at epoch "
                              "1, 2 against 4)")
    assert importance.target_quantile(12) == 0.25 and importance.target_quantile(40) == 0.1
    # The scatter's plainest trend against a small share: said, naming both.
    scored = [({"model_lr": lr, "lr_scheduler_gamma": g}, v) for lr, g, v in [
        (1e-4, 0.3, 29.70), (3e-4, 0.1, 29.71), (1e-3, 0.4, 30.3), (2e-3, 0.2, 29.69),
        (6e-3, 0.35, 29.2), (7e-3, 0.15, 29.1)]]
    said = importance._caveats(run, "best_psnr", None, {"lr_scheduler_gamma": 0.9,
                                                        "model_lr": 0.1}, scored)
    assert any(c.startswith("the scatter disagrees: model_lr has the plainest trend with the "
                            "PSNR (Spearman rho -0.77 over 6 trials) but a share of 0.100")
               for c in said), said
    assert not any("disagrees" in c for c in importance._caveats(
        run, "best_psnr", None, {"lr_scheduler_gamma": 0.1, "model_lr": 0.9}, scored))


def test_the_importance_figure_carries_its_caveats(small_run: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis import figures

    caught: list = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: caught.append(fig) or path)
    imp = importance.param_importances(load_run(small_run))
    figures.importance_bars(imp, tmp_path / "i.png")
    text = " ".join(t.get_text() for t in caught[0].findobj(lambda o: hasattr(o, "get_text")))
    assert "Do not read these shares alone" in text
    assert "only 5 trials" in text.replace("\n", " ")


# --- report --------------------------------------------------------------------------------------
def test_report_renders(cli_run: tuple) -> None:
    run, code, output = cli_run  # the CLI wrote the report with write_report
    assert code == 0, output
    html_path = run / "report" / "index.html"
    html = html_path.read_text()
    pngs = sorted(p.name for p in html_path.parent.glob("*.png"))
    assert pngs == ["best_so_far.png", "importance.png", "learning_curves.png",
                    "parallel_coordinates.png", "pictures.png", "psnr_vs_params.png"]
    for name in pngs:
        assert (html_path.parent / name).stat().st_size > 1000
        assert f"href='{name}'" in html
    assert html.count("data:image/png;base64,") == len(pngs)
    assert "http://" not in html and "https://" not in html  # nothing fetched
    assert fx.WINNER in html and "winner over defaults" in html and fx.EVALUATION in html


def test_report_with_one_trial_says_not_enough(tmp_path: Path) -> None:
    lone = tmp_path / "lone"
    fx.write_meta(lone)
    fx.write_trial(lone, 0, fx.DEFAULTS, [24.0, 25.0])
    html = write_report(load_run(lone), tmp_path / "report").read_text()
    assert "not enough trials" in html


# --- CLI -----------------------------------------------------------------------------------------
def test_cli_prints_leaderboard_writes_tables_report_and_compares(cli_run: tuple) -> None:
    run, code, output = cli_run
    assert code == 0, output
    assert "Traceback" not in output
    first = [ln.split()[1] for ln in output.splitlines() if ln.strip().startswith("1 ")][0]
    assert first == fx.WINNER
    assert (run / "analysis" / "results.parquet").is_file()
    assert (run / "analysis" / "trials.parquet").is_file()
    assert (run / "report" / "index.html").is_file()
    assert "Comparison by best PSNR" in output and "other" in output
    assert "training samples, all trials" in output and "wall time" in output
    assert "winner's searched values" in output


def test_cli_no_report_and_top(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fx.write_small_run(tmp_path)
    assert main([str(run), "--no-report", "--top", "2", "--scope", "last",
                 "--tables-dir", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "scope=last" in out and "4 more trial(s) not shown" in out
    assert not (run / "report").exists() and (tmp_path / "t" / "trials.parquet").is_file()


def test_cli_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "not an espcn-tune run folder" in err
    assert main([str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    run = fx.write_small_run(tmp_path / "runs")
    assert main([str(run), "--compare", str(tmp_path)]) == 2  # checked before anything is written
    assert str(tmp_path) in capsys.readouterr().err and not (run / "analysis").exists()


def test_cli_zero_finished_trials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "broken"
    fx.write_meta(run)
    fx.write_trial(run, 0, fx.DEFAULTS, [24.0], error=True)
    fx.write_trial(run, 1, fx.DEFAULTS, [])  # started, never reported
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "no finished trials" in err and str(run) in err
    assert not (run / "analysis").exists()


def test_module_entry_point_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert str(tmp_path) in out.stderr and "Traceback" not in out.stderr


# --- a conditional space (issue 19): parameters only some trials have ------------------------------
def test_a_conditional_run_leaves_other_branches_parameters_empty(tmp_path: Path) -> None:
    run = load_run(fx.write_conditional_run(tmp_path))
    t = run.trials.set_index("trial")
    assert run.searched == ["lr_schedule", "lr_scheduler_gamma", "lr_min_fraction", "model_lr"]
    cosine, multistep = fx.trial_id(3), fx.trial_id(0)
    assert pd.isna(t.loc[cosine, "lr_scheduler_gamma"]) and t.loc[cosine, "lr_min_fraction"] == 0.0011
    assert pd.isna(t.loc[multistep, "lr_min_fraction"]) and t.loc[multistep, "lr_scheduler_gamma"] == 0.1
    tables, trials_file = write_tables(run, tmp_path / "tables")
    read = pd.read_parquet(trials_file).set_index("trial")
    assert read["lr_min_fraction"].isna().sum() == 3 and read["lr_scheduler_gamma"].isna().sum() == 3
    text = leaderboard.render(run)
    assert "cosine" in text and "multistep" in text


def test_a_conditional_runs_importance_is_shared_then_per_choice(tmp_path: Path) -> None:
    run = load_run(fx.write_conditional_run(tmp_path))
    shared = importance.param_importances(run)
    assert shared.values is not None and set(shared.values) == {"lr_schedule", "model_lr"}
    within = importance.branch_importances(run)
    assert set(within) == {"lr_schedule multistep", "lr_schedule cosine"}
    assert within["lr_schedule cosine"].n_trials == 3
    assert set(within["lr_schedule cosine"].values or {}) <= {"lr_min_fraction", "model_lr"}


def test_a_conditional_runs_edges_are_judged_per_choice(tmp_path: Path) -> None:
    from analysis.summary import edge_warnings

    lines = edge_warnings(load_run(fx.write_conditional_run(tmp_path)))
    assert ("lr_min_fraction: the best lr_schedule cosine trial's 0.0011 is at the bottom of "
            "[0.001, 0.1]; the optimum may lie below it: widen the range") in lines
    assert any(line.startswith("lr_scheduler_gamma: the best lr_schedule multistep trial's 0.49")
               for line in lines)


def test_a_conditional_runs_report_is_written(tmp_path: Path) -> None:
    run = load_run(fx.write_conditional_run(tmp_path))
    page = write_report(run, tmp_path / "report").read_text()
    assert "Among the trials with lr_schedule cosine" in page


def test_a_conditional_run_colours_its_points_by_choice(tmp_path: Path) -> None:
    from analysis import figures

    run = load_run(fx.write_conditional_run(tmp_path))
    drawn = figures.psnr_vs_params(run, importance.distributions(run), "best_psnr",
                                   fx.trial_id(3), tmp_path / "p.png")
    assert drawn is not None and drawn.stat().st_size > 0
    import matplotlib
    from matplotlib.figure import Figure

    labels: list[str] = []
    real = Figure.legend

    def keep(self, handles=None, labels_=None, *a, **k):  # what the legend names
        labels.extend(labels_ or [])
        return real(self, handles, labels_, *a, **k)

    matplotlib.figure.Figure.legend = keep
    try:
        figures.psnr_vs_params(run, importance.distributions(run), "best_psnr", fx.trial_id(3),
                               tmp_path / "q.png")
    finally:
        matplotlib.figure.Figure.legend = real
    assert "lr_schedule multistep" in labels and "lr_schedule cosine" in labels
    assert "completed" not in labels  # the colours are the families', not the outcomes'
