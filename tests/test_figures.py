"""The report's figures: the bicubic line stays inside the axes."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import figures
from analysis.tables import load_run
from tests import run_fixture as fx


@pytest.mark.parametrize("psnrs", [[18.0, 19.5], [30.0, 31.0]], ids=["all-below", "all-above"])
def test_psnr_limits_include_bicubic_when_every_trial_is_far_from_it(
        tmp_path: Path, psnrs: list[float]) -> None:
    run_dir = tmp_path / "far"
    fx.write_meta(run_dir)
    for i, psnr in enumerate(psnrs):
        fx.write_trial(run_dir, i, {**fx.DEFAULTS, "model_lr": 1e-3 * (i + 1)}, [psnr - 1, psnr])
    run = load_run(run_dir)
    ax = figures._figure(4, 3).subplots()
    figures._bicubic_line(ax, run)
    figures._psnr_limits(ax, run.results["psnr"], run)
    low, high = ax.get_ylim()
    assert low < fx.BICUBIC_PSNR < high
    assert low < min(psnrs) - 1 and max(psnrs) < high  # the trials stay in view too


def _drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures the functions draw, caught instead of written."""
    caught: list = []

    def save(fig, path):  # noqa: ANN001, ANN202
        caught.append(fig)
        return path

    monkeypatch.setattr(figures, "_save", save)
    return caught


@pytest.mark.parametrize("psnrs", [[18.0, 19.5], [24.5, 30.0]], ids=["all-below", "straddling"])
def test_every_psnr_axis_draws_bicubic_inside_it_and_shades_below(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, psnrs: list[float]) -> None:
    from analysis import importance

    run_dir = tmp_path / "run"
    fx.write_meta(run_dir)
    for i, psnr in enumerate(psnrs):
        fx.write_trial(run_dir, i, {**fx.DEFAULTS, "model_lr": 1e-3 * (i + 1)}, [psnr - 1, psnr])
    run = load_run(run_dir)
    dists = importance.distributions(run)
    caught = _drawn(monkeypatch)
    winner = fx.trial_id(1)
    figures.learning_curves(run, winner, tmp_path / "a.png")
    figures.best_so_far(run, tmp_path / "b.png")
    figures.psnr_vs_params(run, dists, "best_psnr", winner, tmp_path / "c.png")
    axes = [ax for fig in caught for ax in fig.axes if ax.get_visible()]
    assert len(axes) >= 1 + 2 + 1
    for ax in axes:
        low, high = ax.get_ylim()
        levels = [line.get_ydata()[0] for line in ax.get_lines()
                  if line.get_color() == "tab:red" and line.get_linestyle() == "--"]
        assert levels and all(low < y < high for y in levels), ax.get_title()
        assert levels[0] == pytest.approx(fx.BICUBIC_PSNR)
        shaded = [p for p in ax.patches if p.get_facecolor()[0] > 0.7 and p.get_alpha() == 0.07]
        assert shaded, f"no shading below bicubic on {ax.get_xlabel()!r}"
    caught.clear()
    figures.parallel_coordinates(run, dists, "best_psnr", winner, tmp_path / "d.png")
    (ax,) = caught[0].axes
    marks = [line.get_ydata()[0] for line in ax.get_lines()
             if isinstance(line.get_color(), str) and line.get_color() == "tab:red"]
    assert len(marks) == 1 and -0.08 <= marks[0] <= 1.08
