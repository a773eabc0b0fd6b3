"""One story in every output (issue 20, items 6, 7, 11): the same epoch, tie mark, times and
counts wherever a run's numbers are shown (progress lines, end-of-search summary, leaderboard,
trials.parquet, report)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from analysis import leaderboard
from analysis.tables import load_run
from tests import run_fixture as fx


@pytest.fixture
def ref_run(tmp_path: Path) -> Path:
    return fx.write_run_with_reference(tmp_path)


def test_the_reference_runs_psnr_is_given_at_the_epoch_it_was_reached_everywhere(
        ref_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its best PSNR (18.6) came at epoch 2 of 4: the leaderboard, the progress lines and the
    end-of-search summary all say epoch 2."""
    from analysis import record
    from tune.progress import ProgressPrinter
    from tune.space import load_space
    from tune.summary import summarise

    heads, rows = leaderboard.table_rows(load_run(ref_run))
    ref = next(r for r in rows if r[1] == "reference")
    assert (ref[heads.index("PSNR")], ref[heads.index("at epoch")]) == ("18.60", "2")

    spec = load_space("smoke")  # the source document's defaults lie outside it: run beside it
    assert spec.include_defaults and not spec.reference_inside
    assert ProgressPrinter(spec, str(ref_run))._reference().endswith(
        "reference 18.600 dB at epoch 2")

    winner = SimpleNamespace(error=None, path=str(ref_run / "t0"), config={
        "model_lr": 0.02, "lr_scheduler_milestones": [0.5, 0.8]}, metrics={
        "trial_id": fx.trial_id(0), "epoch": 4, "best_psnr": 26.8, "best_epoch": 4, "max_epochs": 4,
        "bicubic_psnr": fx.BICUBIC_PSNR})
    rec = record.read(ref_run)
    capsys.readouterr()
    summarise([winner], spec, ref_run, rec)
    line = next(ln for ln in capsys.readouterr().out.splitlines()
                if ln.startswith("source document's defaults"))
    assert "PSNR 18.600 dB at epoch 2 / 4" in line and "after 4 epochs" in line


def test_every_validation_of_the_reference_run_gets_its_progress_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 27, item 6: the reference's lines came only when a trial reported, and only its
    latest (the main job showed epochs 6, 15 and 18). The driver looks between the trials'
    results too (`on_step_end` of Ray's loop, every few seconds), and prints each validation
    once."""
    from analysis import run_folder
    from tune.progress import ProgressPrinter
    from tune.space import load_space

    run_dir = tmp_path / "r"
    fx.write_meta(run_dir)
    folder = fx.write_reference(run_dir)
    rows = run_folder.read_results(folder)
    run_folder.write_results(folder, rows[:1])  # one validation so far
    printer = ProgressPrinter(load_space("smoke"), str(run_dir))

    def epochs_said() -> list[str]:
        out = capsys.readouterr().out.splitlines()
        return [ln.split("/")[0] for ln in out if "reference (source defaults)" in ln]

    printer.on_step_end(0, [])  # no trial has reported anything
    assert epochs_said() == ["[epoch   1"]
    run_folder.write_results(folder, rows[:3])  # two more while no trial reports
    printer.on_step_end(1, [])  # too soon: looked a moment ago
    assert epochs_said() == []
    printer._reference_looked -= 60
    printer.on_step_end(2, [])
    assert epochs_said() == ["[epoch   2", "[epoch   3"]
    run_folder.write_results(folder, rows)
    printer._reference()  # at a trial's result
    printer._reference()
    assert epochs_said() == ["[epoch   4"]


def test_every_output_counts_the_trials_and_the_reference_run_apart(
        ref_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 11: the report said "trials 5: 3 completed, 2 stopped early" (the reference counted
    as a completed trial) where the leaderboard said "4 trial(s) and the reference run"."""
    import re

    from analysis import figures
    from analysis.compare import render_comparison
    from analysis.report import write_report
    from analysis.summary import summarise

    run = load_run(ref_run)
    s = summarise(run)
    assert (s.n_trials, s.outcomes, s.reference_outcome) == (
        4, {"completed": 2, "stopped early": 2}, "completed")
    words = "4 trials and the reference run"
    assert words in leaderboard.header(run)
    titles: list[str] = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: titles.extend(
        ax.get_title() for ax in fig.axes) or path)
    figures.learning_curves(run, s.winner, tmp_path / "lc.png")
    assert any(t.endswith(f"learning curves of {words}") for t in titles)
    monkeypatch.undo()
    from analysis import pictures

    monkeypatch.setattr(pictures, "draw", lambda *a, **k: pictures.Pictures(None))  # no data
    page = write_report(run, tmp_path / "report").read_text()
    facts = dict(re.findall(r"<tr><th>([^<]*)</th><td>([^<]*)</td></tr>", page))
    assert facts["trials"] == "4: 2 completed, 2 stopped early; and the reference run (completed)"
    assert facts["training samples, all trials"] == "5,632 (and 2,048 for the reference run)"
    assert "4: 2 completed, 2 stopped early; and the reference run" in render_comparison(run, run)


def test_importance_and_figures_use_the_users_names_for_a_milestone_list(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 19: a milestone list of 1-2 drops is its count, first and last drop under the space
    file's own name, never the searcher's scalars (lr_milestone_1, lr_milestone_2_rel)."""
    from analysis import figures, importance, record
    from analysis.record import ParamRange

    run_dir = tmp_path / "counts"
    fx.write_meta(run_dir)
    rec = record.read(run_dir)
    record.write(run_dir, rec.replace(params=(
        ParamRange("model_lr", "loguniform", 1e-4, 1e-1),
        ParamRange("lr_scheduler_milestones", "milestones", 0.05, 0.95, count=(1, 2)))))
    drops = [[0.3], [0.2, 0.7], [0.5], [0.4, 0.9], [0.6, 0.8]]
    for i, (m, best) in enumerate(zip(drops, [25.0, 26.0, 24.5, 25.5, 26.4], strict=True)):
        fx.write_trial(run_dir, i, {**fx.DEFAULTS, "model_lr": 1e-3 * (i + 1),
                                    "lr_scheduler_milestones": m}, [best - 1, best])
    run = load_run(run_dir)
    names = ["model_lr", "lr_scheduler_milestones/count", "lr_scheduler_milestones/first",
             "lr_scheduler_milestones/last"]
    dists = importance.distributions(run)
    assert list(dists) == names
    imp = importance.param_importances(run)
    assert imp.values is not None and set(imp.values) <= set(names)
    assert run.trials.set_index("trial").loc[fx.trial_id(1), "lr_scheduler_milestones/count"] == 2
    caught: list = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: caught.append(fig) or path)
    figures.psnr_vs_params(run, dists, "best_psnr", fx.trial_id(4), tmp_path / "p.png")
    figures.importance_bars(imp, tmp_path / "i.png")
    labels = [a.get_xlabel() for a in caught[0].axes if a.get_visible()]
    bars = [t.get_text() for t in caught[1].axes[0].get_yticklabels()]
    assert labels == names and set(bars) <= set(names)
