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
