"""bench/asha_vs_fifo.py reads finished runs only: a search still running (or interrupted) is
neither reported nor retrained, and --read-only never trains anything."""

import pytest
from benches import load_bench
from run_fixture import write_small_run


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
