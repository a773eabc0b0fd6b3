"""Edge warnings (analysis.edges) and where they are printed: the end-of-search summary,
`python -m analysis` and the report."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from analysis.edges import edge_warnings
from analysis.record import ParamRange
from analysis.report import write_report
from analysis.summary import summarise
from analysis.tables import load_run
from tests import run_fixture as fx

LR = {"model_lr": {"loguniform": [1e-4, 5e-2]}}
GAMMA = {"lr_scheduler_gamma": {"uniform": [0.05, 0.5]}}


def warn(spec: dict, values: list[dict]) -> list[str]:
    """Edge lines for ranges in the space file's form."""
    return edge_warnings([ParamRange.from_json(n, d) for n, d in spec.items()], values)


def test_winner_at_the_top_of_a_log_range() -> None:
    assert warn(LR, [{"model_lr": 0.0435}, {"model_lr": 1e-3}]) == [
        "model_lr: the winner 0.0435 is at the top of [0.0001, 0.05]; the optimum may lie "
        "above it: widen the range"]


def test_winner_at_the_top_of_a_linear_range() -> None:
    assert warn({"g": {"uniform": [0, 1]}}, [{"g": 0.97}]) == [
        "g: the winner 0.97 is at the top of [0, 1]; the optimum may lie above it: widen the range"]
    assert warn({"n": {"randint": [2, 102]}}, [{"n": 100}]) == [
        "n: the winner 100 is at the top of [2, 102]; the optimum may lie above it: widen the "
        "range"]


def test_winner_at_the_bottom() -> None:
    assert warn(GAMMA, [{"lr_scheduler_gamma": 0.06}]) == [
        "lr_scheduler_gamma: the winner 0.06 is at the bottom of [0.05, 0.5]; the optimum may lie "
        "below it: widen the range"]


def test_most_of_the_top_quarter_at_an_edge() -> None:
    # 32 trials: the top quarter is 8; the winner in the middle, 7 of the 8 at the top.
    values = [{"g": 0.5}, *({"g": 0.99} for _ in range(7)), *({"g": 0.2} for _ in range(24))]
    assert warn({"g": {"uniform": [0, 1]}}, values) == [
        "g: 7 of the top 8 trials are at the top of [0, 1]; the optimum may lie above them: "
        "widen the range"]
    # Half of the top quarter is not most of it.
    half = [{"g": 0.5}, *({"g": 0.99} for _ in range(4)), *({"g": 0.2} for _ in range(27))]
    assert warn({"g": {"uniform": [0, 1]}}, half) == []
    # The winner and most of the quarter: one line that says both.
    both = [{"g": 0.02}, *({"g": 0.01} for _ in range(5)), *({"g": 0.5} for _ in range(26))]
    assert warn({"g": {"uniform": [0, 1]}}, both) == [
        "g: the winner 0.02 and 6 of the top 8 trials are at the bottom of [0, 1]; the optimum "
        "may lie below them: widen the range"]


def test_values_in_the_middle_give_no_line() -> None:
    values = [{"model_lr": 3e-3, "lr_scheduler_gamma": 0.2}, {"model_lr": 1e-3,
                                                              "lr_scheduler_gamma": 0.3}]
    assert warn({**LR, **GAMMA}, values) == []


def test_choice_and_grid_parameters_are_skipped() -> None:
    spec = {"batch_size": {"choice": [8, 16, 32]}, "residual": {"grid": [False, True]}}
    assert warn(spec, [{"batch_size": 32, "residual": True}]) == []


def test_the_five_percent_is_measured_on_the_parameters_own_scale() -> None:
    log = {"x": {"loguniform": [1e-4, 1e-1]}}
    linear = {"x": {"uniform": [1e-4, 1e-1]}}
    # 0.071 is 95.0% of three decades but only 71% of the linear width.
    assert "at the top" in warn(log, [{"x": 0.071}])[0]
    assert warn(linear, [{"x": 0.071}]) == []
    # 3e-3 is 2.9% of the linear width but halfway up the decades.
    assert "at the bottom" in warn(linear, [{"x": 3e-3}])[0]
    assert warn(log, [{"x": 3e-3}]) == []


def test_milestones_first_against_the_bottom_last_against_the_top() -> None:
    spec = {"lr_scheduler_milestones": {"milestones": {"count": [1, 2], "low": 0.05, "high": 0.9}}}
    assert "the winner [0.3, 0.88] is at the top of [0.05, 0.9]" in warn(
        spec, [{"lr_scheduler_milestones": [0.3, 0.88]}])[0]
    assert "at the bottom" in warn(spec, [{"lr_scheduler_milestones": [0.06, 0.5]}])[0]
    assert warn(spec, [{"lr_scheduler_milestones": [0.2, 0.7]}]) == []


def test_analysis_prints_and_reports_the_winners_edge(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.__main__ import main

    run_dir = fx.write_small_run(tmp_path)  # the winner's gamma 0.05 is the range's low end
    line = ("lr_scheduler_gamma: the winner 0.05 is at the bottom of [0.05, 0.5]; the optimum "
            "may lie below it: widen the range")
    assert main([str(run_dir), "--no-report"]) == 0
    assert f"\nRanges that may be too narrow:\n  {line}\n" in capsys.readouterr().out
    run = load_run(run_dir)
    assert summarise(run).edge_warnings == [line]
    assert line in write_report(run, tmp_path / "report").read_text()


def test_end_of_search_summary_prints_edge_lines(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tune.space import load_space
    from tune.summary import summarise as end_of_search

    space = tmp_path / "edge.yaml"
    space.write_text("params:\n  model_lr: {loguniform: [1.0e-4, 5.0e-2]}\n"
                     "budget: {epochs: 2, epoch_samples: 64, validation_interval: 1}\n"
                     "include_defaults: false\n")
    spec = load_space(space)

    def result(i: int, lr: float, psnr: float) -> SimpleNamespace:
        metrics = {"trial_id": f"t{i}", "epoch": 2, "best_psnr": psnr, "best_epoch": 2,
                   "max_epochs": 2, "bicubic_psnr": 30.0}
        return SimpleNamespace(error=None, metrics=metrics, config={"model_lr": lr},
                               path=str(tmp_path / f"t{i}"))

    grid = [result(0, 1e-3, 29.0), result(1, 0.0435, 30.5), result(2, 3e-3, 29.5)]
    from analysis import record

    rec = record.RunRecord("run", (), None, None, spec.params, None,
                           record.SchedulerPlan("asha"), None, "Y PSNR", None)
    best = end_of_search(grid, spec, tmp_path / "run", rec)
    assert best is not None and best.trial_id == "t1"
    assert ("ranges that may be too narrow:\n  model_lr: the winner 0.0435 is at the top of "
            "[0.0001, 0.05]; the optimum may lie above it: widen the range\n"
            in capsys.readouterr().out)


def test_end_of_search_summary_names_the_winners_branch_parameters(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis import record
    from tune.space import load_space
    from tune.summary import summarise as end_of_search

    spec = load_space("schedules")
    config = {"model_lr": 1e-3, "lr_schedule": "cosine", "lr_min_fraction": 0.02,
              "warmup_fraction": 0.05}
    metrics = {"trial_id": "t0", "epoch": 18, "best_psnr": 30.3, "best_epoch": 18,
               "max_epochs": 18, "bicubic_psnr": 28.8}
    grid = [SimpleNamespace(error=None, metrics=metrics, config=config, path=str(tmp_path))]
    rec = record.RunRecord("run", (), None, None, spec.params, None,
                           record.SchedulerPlan("asha"), None, "Y PSNR", None)
    best = end_of_search(grid, spec, tmp_path / "run", rec)
    assert best is not None and best.params == config
    assert "  lr_min_fraction: 0.02\n" in capsys.readouterr().out
