"""RUN_DIR/README.txt: written at the start of a search and rewritten at its end."""

from __future__ import annotations

from pathlib import Path

from analysis import record
from analysis.record import BestTrial, RunRecord
from tests import run_fixture as fx
from tune.run_readme import write_readme

RESUME = "python -m tune.run --storage runs --resume smoke"


def _record(run_dir: Path, finished: bool) -> RunRecord:
    fx.write_meta(run_dir, finished=finished)
    return record.read(run_dir)


def test_at_the_start_it_says_what_is_searched_and_how_to_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "smoke"
    text = write_readme(run_dir, _record(run_dir, finished=False), RESUME).read_text()
    for name in fx.SEARCHED:
        assert f"  {name}: " in text
    assert "loguniform [0.0001, 0.1]" in text  # the range, not just the name
    # What the milestones mean, not the searcher's encoding of them.
    assert "lr_scheduler_milestones: 2 LR drops between 5% and 90% of the budget" in text
    assert "python -m tune.run --space smoke.yaml" in text and RESUME in text
    assert "not finished" in text and "not yet known" in text and "best trial so far:" in text
    for where in ("report/index.html", "analysis/*.parquet", "export/", "reference/",
                  f"python -m analysis {run_dir}", f"python -m analysis.retrain {run_dir}"):
        assert where in text, where


def test_at_the_end_it_names_the_best_trial(tmp_path: Path) -> None:
    run_dir = tmp_path / "smoke"
    write_readme(run_dir, _record(run_dir, finished=False), RESUME)
    best = BestTrial(fx.WINNER, 26.8, 4, fx.BICUBIC_PSNR, {}, str(run_dir / "t1"))
    rec = _record(run_dir, finished=True).replace(best_trial=best)
    text = write_readme(run_dir, rec, RESUME).read_text()
    assert f"{fx.WINNER}: 26.800 dB at epoch 4, +2.98 dB over bicubic" in text
    assert "finished 2026-11-26T10:30:00Z" in text and "not yet known" not in text
    assert "\nbest trial:\n" in text and "so far" not in text  # issue 27: it is over
    # A finished run is not offered a resume (issue 20, item 1: a resume of it starts nothing).
    assert RESUME not in text and "nothing to resume, the search finished" in text
    assert not list(run_dir.glob(".*tmp"))
