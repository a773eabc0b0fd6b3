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
        "trial_id": fx.trial_id(0), "best_psnr": 26.8, "best_epoch": 4, "max_epochs": 4,
        "bicubic_psnr": fx.BICUBIC_PSNR})
    rec = record.read(ref_run)
    capsys.readouterr()
    summarise([winner], spec, ref_run, rec)
    line = next(ln for ln in capsys.readouterr().out.splitlines()
                if ln.startswith("source document's defaults"))
    assert "PSNR 18.600 dB at epoch 2 / 4" in line and "after 4 epochs" in line
