"""Ties with the winner, and ASHA's cut at each rung: paired per-frame PSNR differences within two
standard errors of zero."""

from __future__ import annotations

from pathlib import Path
from statistics import fmean

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis import leaderboard
from analysis.__main__ import main
from analysis.tables import load_run
from analysis.ties import RungCut
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

    # Every trial trained as far as the winner (2 epochs): each is compared with it.
    trial(0, [shifted(-1.0), BASE])
    trial(1, [shifted(-1.2), shifted(0.0, NOISE)])
    trial(2, [shifted(-1.2), shifted(-0.3, NOISE)])  # worse on every frame
    trial(3, None, [28.0, 29.0])  # a run from before per-frame PSNR
    trial(4, [BASE[:5], BASE[:5]], [29.0, 29.5])  # other frames: nothing to pair
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
    assert marks == {WINNER: "winner", NOISY: "yes", FADED: "yes", WORSE: "no", MISSING: "",
                     SHORT: ""}
    assert main([str(tie_run), "--no-report", "--tables-dir", str(tmp_path)]) == 0
    assert " tied " in capsys.readouterr().out
    # trials.parquet holds the same words as the leaderboard (issue 20, item 7: the winner was
    # True there and "ref" here; issue 27: "ref" read as the reference run's row).
    table = pq.read_table(tmp_path / "trials.parquet").to_pandas().set_index("trial")["tied"]
    assert {t: None if pd.isna(v) else v for t, v in table.items()} == {
        t: m or None for t, m in marks.items()}


def test_tied_with_needs_paired_frames() -> None:
    assert leaderboard.tied_with(BASE, shifted(0.0, NOISE)) is True
    assert leaderboard.tied_with(BASE, shifted(-0.3, NOISE)) is False
    assert leaderboard.tied_with(BASE, None) is None
    assert leaderboard.tied_with(BASE, BASE[:-1]) is None
    assert leaderboard.tied_with([30.0], [29.0]) is None


def test_the_winner_mark_goes_to_the_winner_even_when_the_reference_run_ranks_first(
        tmp_path: Path) -> None:
    """The reference run beside the search is never the winner: ties are against the best
    searched trial, and that trial is the one marked "winner", whatever its rank."""
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
    assert rows[fx.trial_id(0)][col] == "winner" and rows[fx.trial_id(1)][col] == "yes"
    assert rows["reference"][col] == ""  # it recorded no per-frame PSNR


# --- ASHA's cut at each rung (issue 27, item 3) ----------------------------------------------------
W, B, C, D, E = (fx.trial_id(i) for i in range(5))


@pytest.fixture(scope="module")
def rung_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rungs at epochs 1 and 2 of 4. At rung 1, W and B go on (B the last in); C is stopped
    within noise of B, D clearly below it, E clearly above it (ASHA's asynchronous judgement).
    At rung 2 W goes on and B is stopped, within noise of each other."""
    run = tmp_path_factory.mktemp("rungs") / "rungs"
    fx.write_meta(run)

    def trial(i: int, frames: list[list[float]]) -> None:
        fx.write_trial(run, i, {**fx.DEFAULTS, "model_lr": 1e-3 * (i + 1)},
                       [round(fmean(f), 4) for f in frames], psnr_frames=frames)

    trial(0, [shifted(0.0), shifted(0.1), shifted(0.5), shifted(0.6)])
    trial(1, [shifted(-0.2), shifted(0.1, NOISE)])
    trial(2, [shifted(-0.2, NOISE)])
    trial(3, [shifted(-0.6, NOISE)])
    trial(4, [shifted(0.3, NOISE)])
    return run


def test_each_rung_says_where_the_cut_fell_and_who_was_within_noise_of_it(rung_run: Path) -> None:
    first, second = leaderboard.rung_story(load_run(rung_run))
    assert (first.rung, first.epoch, first.last_in, first.first_out) == (1, 1, B, E)
    assert set(first.went_on) == {W, B} and set(first.stopped) == {C, D, E}
    # C is within noise of B, so B (which went on) is at the cut too; W went on clearly.
    assert first.marks == {W: "clear", B: "tie", C: "tie", D: "below", E: "above"}
    assert sorted(first.at_cut) == sorted([B, C])
    assert (second.last_in, second.first_out, sorted(second.at_cut)) == (W, B, sorted([W, B]))
    assert "2 of 5 within noise of it" in first.describe()
    assert "which of those went on was a coin toss" in second.describe()
    assert "1 stopped clearly above the last in" in first.describe()


def test_a_cut_without_a_tie_on_the_frames_is_not_called_clear() -> None:
    """The paired test sees only the frames' noise: every trial of a search trains with its one
    seed, and another seed moved a trial at the main job's first rung by 0.004-0.006 dB (std),
    more than the 0.0042 dB its cut fell across (BENCHMARKS.md, "Another seed")."""
    cut = RungCut(rung=1, epoch=3, went_on=("a",), stopped=("b",),
                  psnr={"a": 29.6934, "b": 29.6892}, last_in="a", first_out="b",
                  marks={"a": "clear", "b": "below"}, gaps={"a": 0.0042, "b": -0.0042})
    said = cut.describe()
    assert "0.0042 dB apart; none within noise of it on these frames" in said
    assert "clear cut" not in said and "share one seed" in said


def test_the_leaderboard_marks_each_trial_at_its_cut_and_compares_only_equals_with_the_winner(
        rung_run: Path) -> None:
    """A trial stopped at epoch 1 or 2 is not compared with the winner's epoch-4 frames (it was
    "no" for every one of them); it is judged at its rung instead."""
    run = load_run(rung_run)
    heads, rows = leaderboard.table_rows(run)
    tied, cut = heads.index("tied"), heads.index("at cut")
    marks = {r[1]: (r[tied], r[cut]) for r in rows}
    # With each trial's PSNR there against the trial across the cut (B: against C, whom it is
    # tied with, not against E, the best stopped).
    assert marks == {W: ("winner", "tie r2 +0.005"), B: ("", "tie r1 +0.005, tie r2 -0.005"),
                     C: ("", "tie r1 -0.005"), D: ("", "below r1 -0.405"),
                     E: ("", "above r1 +0.495")}
    text = leaderboard.render(run)
    assert "ASHA's cut at each rung:" in text
    assert "rung 1 (epoch 1): 5 trials, 2 went on; the cut fell between" in text
    # The report says the same, and trials.parquet holds the same marks.
    from analysis.report import _leaderboard
    from analysis.summary import summarise

    page = _leaderboard(run, summarise(run))
    assert "<h3>ASHA's cut at each rung</h3>" in page and first_line(run) in page
    assert leaderboard.cut_column(run).tolist() == [marks[t][1] for t in run.trials["trial"]]


def first_line(run) -> str:
    import html

    return html.escape(leaderboard.rung_story(run)[0].describe())
