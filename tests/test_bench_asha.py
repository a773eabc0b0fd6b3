"""bench/asha_vs_fifo.py reads finished runs only: a search still running (or interrupted) is
neither reported nor retrained, and --read-only never trains anything."""

import pytest
from benches import load_bench
from run_fixture import DEFAULTS, write_meta, write_small_run, write_trial

from analysis.tables import load_run


def _bench():
    return load_bench("asha_vs_fifo")


@pytest.fixture
def storage(tmp_path, monkeypatch):
    import analysis.retrain

    def no_training(*_a, **_k):
        raise AssertionError("trained")

    monkeypatch.setattr(analysis.retrain, "retrain", no_training)
    write_small_run(tmp_path, "fifo-random-seed0", finished=True)
    write_small_run(tmp_path, "fifo-random-seed1", finished=False)  # a search still running
    return tmp_path


def test_read_only_reports_finished_runs_and_trains_nothing(storage, capsys):
    bench = _bench()
    assert bench.main(["--read-only", "--variants", "fifo-random", "--seeds", "0", "1", "2",
                       "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "not retrained: fifo-random seed 0" in out
    assert "unfinished: fifo-random seed 1" in out and "--resume fifo-random-seed1" in out
    assert "not run: fifo-random seed 2" in out
    assert '"seed": 0' in out and '"seed": 1' not in out


def test_a_run_still_in_progress_is_not_retrained_or_started_again(storage, capsys, monkeypatch):
    bench = _bench()
    monkeypatch.setattr(bench.subprocess, "run", lambda *_a, **_k: pytest.fail("started a search"))
    assert bench.main(["--variants", "fifo-random", "--seeds", "1", "--storage", str(storage)]) == 0
    assert "unfinished: fifo-random seed 1" in capsys.readouterr().out


def test_the_halving_replay_keeps_the_best_at_each_rung_and_counts_their_epochs(tmp_path):
    run_dir = tmp_path / "fifo"
    write_meta(run_dir, max_epochs=4)
    # 9 trials over 4 epochs. Trial 8 leads at epoch 1, trial 7 at epoch 2, and trial 6, third
    # at epoch 1 and second at epoch 2, ends best.
    finals = [20.0 + i / 10 for i in range(9)]
    curves = [[20 + i / 10, 20 + i / 10, f, f] for i, f in enumerate(finals)]
    curves[6] = [20.75, 20.9, 30.0, 30.0]
    curves[7][1] = 21.0
    for i, psnrs in enumerate(curves):
        write_trial(run_dir, i, DEFAULTS, psnrs)
    replay = load_bench("asha_vs_fifo").halving_replay(load_run(run_dir), rungs=(1, 2))
    # 9 -> 3 go on after epoch 1 -> 1 after epoch 2: (9 + 3 + 1 * 2) / 36 epochs.
    assert replay["floor"]["share"] == pytest.approx(14 / 36)
    assert replay["floor"]["gap_db"] == pytest.approx(20.7 - 30.0)  # trial 7 went on, not 6
    assert replay["ceil"]["share"] == pytest.approx(14 / 36)  # ceil(3 / 3) is 1 too
