"""Ties with the winner: paired per-frame PSNR differences within two standard errors of zero."""

from __future__ import annotations

from pathlib import Path
from statistics import fmean

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis import leaderboard
from analysis.__main__ import main
from analysis.tables import load_run
from tests import run_fixture as fx

BASE = [30.0, 31.2, 29.5, 32.0, 30.8, 28.9, 31.5, 30.3]  # the winner's frames
# Frame-to-frame noise with a mean of -0.005 dB and a standard error of about 0.017 dB.
NOISE = [0.05, -0.03, 0.02, -0.06, 0.04, -0.01, 0.03, -0.08]
WINNER, NOISY, WORSE, MISSING, SHORT, FADED = (fx.trial_id(i) for i in range(6))


def shifted(shift: float, noise: list[float] | None = None) -> list[float]:
    return [b + shift + n for b, n in zip(BASE, noise or [0.0] * len(BASE), strict=True)]


@pytest.fixture(scope="module")
def tie_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ties") / "ties"
    fx.write_meta(run)

    def trial(i: int, frames: list[list[float]] | None, psnrs: list[float] | None = None) -> None:
        params = {**fx.DEFAULTS, "model_lr": 1e-3 * (i + 1)}
        psnrs = psnrs or [round(fmean(f), 4) for f in frames or []]
        fx.write_trial(run, i, params, psnrs, psnr_frames=frames)

    trial(0, [shifted(-1.0), BASE])
    trial(1, [shifted(0.0, NOISE)])
    trial(2, [shifted(-0.3, NOISE)])  # worse on every frame
    trial(3, None, [29.0])  # a run from before per-frame PSNR
    trial(4, [BASE[:5]], [29.5])  # other frames: nothing to pair
    trial(5, [shifted(0.0, NOISE[::-1]), shifted(-1.0)])  # tied at its best, not at its last
    return run


def tied(run: Path, scope: str) -> dict[str, bool | None]:
    ranked = leaderboard.rank(load_run(run).trials, scope)
    return {t: None if v is pd.NA else bool(v)
            for t, v in zip(ranked["trial"], ranked["tied"], strict=True)}


def test_noise_is_tied_worse_on_every_frame_is_not_missing_is_blank(tie_run: Path) -> None:
    t = tied(tie_run, "best")
    assert t[WINNER] is True  # the reference
    assert t[NOISY] is True and t[FADED] is True
    assert t[WORSE] is False
    assert t[MISSING] is None and t[SHORT] is None


def test_last_scope_pairs_each_trials_last_validation(tie_run: Path) -> None:
    t = tied(tie_run, "last")
    assert t[FADED] is False and t[NOISY] is True


def test_printed_leaderboard_and_trials_table_carry_the_marks(
        tie_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    heads, rows = leaderboard.table_rows(load_run(tie_run))
    col = heads.index("tied")
    marks = {r[1]: r[col] for r in rows}
    assert marks == {WINNER: "ref", NOISY: "yes", FADED: "yes", WORSE: "no", MISSING: "",
                     SHORT: ""}
    assert main([str(tie_run), "--no-report", "--tables-dir", str(tmp_path)]) == 0
    assert " tied " in capsys.readouterr().out
    # trials.parquet holds the same words as the leaderboard (issue 20, item 7: the winner was
    # True there and "ref" here).
    table = pq.read_table(tmp_path / "trials.parquet").to_pandas().set_index("trial")["tied"]
    assert {t: None if pd.isna(v) else v for t, v in table.items()} == {
        t: m or None for t, m in marks.items()}


def test_tied_with_needs_paired_frames() -> None:
    assert leaderboard.tied_with(BASE, shifted(0.0, NOISE)) is True
    assert leaderboard.tied_with(BASE, shifted(-0.3, NOISE)) is False
    assert leaderboard.tied_with(BASE, None) is None
    assert leaderboard.tied_with(BASE, BASE[:-1]) is None
    assert leaderboard.tied_with([30.0], [29.0]) is None


def test_the_reference_mark_goes_to_the_winner_even_when_the_reference_run_ranks_first(
        tmp_path: Path) -> None:
    """The reference run beside the search is never the winner: ties are against the best
    searched trial, and that trial is the one marked "ref", whatever its rank."""
    run_dir = tmp_path / "refwins"
    fx.write_meta(run_dir)
    fx.write_trial(run_dir, 0, {**fx.DEFAULTS, "model_lr": 1e-3}, [29.0],
                   psnr_frames=[shifted(-1.0)])
    fx.write_trial(run_dir, 1, {**fx.DEFAULTS, "model_lr": 2e-3}, [28.9],
                   psnr_frames=[shifted(-1.0, NOISE)])
    fx.write_reference(run_dir, [31.0])
    rows = {r[1]: r for r in leaderboard.table_rows(load_run(run_dir))[1]}
    heads = leaderboard.table_rows(load_run(run_dir))[0]
    col = heads.index("tied")
    assert rows["reference"][0] == "1"  # ranked first, but not the tie reference
    assert rows[fx.trial_id(0)][col] == "ref" and rows[fx.trial_id(1)][col] == "yes"
    assert rows["reference"][col] == ""  # it recorded no per-frame PSNR
