"""Learning-rate schedules (trainable.schedule, TrainConfig.lr_at): each against its closed form,
the refusals, a resume with a changed budget, exact resume mid-warm-up and mid-restart, and
patience."""

from __future__ import annotations

import json
import math

import pytest
import torch

from trainable.config import TrainConfig
from trainable.errors import ConfigError
from trainable.loop import Trainer

# A budget of 1,000 samples, 10 per update: 100 updates.
BUDGET = dict(epochs=10, epoch_samples=100, batch_size=10)
T, U = 1000, 10


def cfg(**over) -> TrainConfig:
    return TrainConfig.from_dict({**BUDGET, "model_lr": 1.0, **over})


def cos_from(start: float, q: float) -> float:
    """PyTorch's CosineAnnealingLR from 1 to ``start``'s floor, written out: eta_min + (1 -
    eta_min) (1 + cos(pi q)) / 2."""
    return start + (1 - start) * (1 + math.cos(math.pi * q)) / 2


@pytest.mark.parametrize("s", range(0, T, 10))
def test_multistep_is_the_source_documents_multisteplr(s: int) -> None:
    c = cfg(lr_scheduler_milestones=[0.3, 0.7], lr_scheduler_gamma=0.5)
    assert c.lr_at(s) == 0.5 ** ((s >= 300) + (s >= 700))


@pytest.mark.parametrize("s", range(0, T, 10))
def test_warm_up_is_linear_then_the_schedule(s: int) -> None:
    c = cfg(warmup_fraction=0.2, lr_scheduler_milestones=[0.5], lr_scheduler_gamma=0.1)
    warm = min(1.0, (s + U) / (0.2 * T))
    assert c.lr_at(s) == pytest.approx(warm * (0.1 if s >= 500 else 1.0), rel=1e-12)


@pytest.mark.parametrize("s", range(0, T, 10))
def test_cosine_decays_from_the_end_of_the_warm_up_to_its_floor(s: int) -> None:
    c = cfg(lr_schedule="cosine", lr_min_fraction=0.01, warmup_fraction=0.1)
    warm = min(1.0, (s + U) / (0.1 * T))
    q = max(s / T - 0.1, 0.0) / 0.9
    assert c.lr_at(s) == pytest.approx(warm * cos_from(0.01, q), rel=1e-12)


def test_cosine_ends_at_its_floor_and_stays_there() -> None:
    c = cfg(lr_schedule="cosine", lr_min_fraction=0.05, lr_cosine_end=0.6)
    assert c.lr_at(0) == 1.0
    assert c.lr_at(600) == pytest.approx(0.05) and c.lr_at(990) == pytest.approx(0.05)


@pytest.mark.parametrize("mult, starts", [(1.0, [0, 200, 400, 600, 800]),
                                          (2.0, [0, 100, 300, 700])])
def test_restarts_cycle_back_to_the_full_lr(mult: float, starts: list[int]) -> None:
    period = 0.2 if mult == 1.0 else 0.1
    c = cfg(lr_schedule="cosine_restarts", lr_restart_period=period, lr_restart_mult=mult,
            lr_min_fraction=0.0)
    bounds = [*starts, None]
    for k, start in enumerate(starts):
        length = period * T * mult**k
        end = bounds[k + 1] if bounds[k + 1] is not None else T
        for s in range(start, min(end, T), 10):
            assert c.lr_at(s) == pytest.approx(cos_from(0.0, (s - start) / length), abs=1e-12), s
        assert c.lr_at(start) == pytest.approx(1.0)  # every restart goes back to the full LR


@pytest.mark.parametrize("given, key", [
    ({"lr_schedule": "cosine", "lr_scheduler_gamma": 0.3}, "lr_scheduler_gamma"),
    ({"lr_schedule": "cosine", "lr_scheduler_milestones": [0.5]}, "lr_scheduler_milestones"),
    ({"lr_min_fraction": 0.1}, "lr_min_fraction"),
    ({"lr_schedule": "cosine", "lr_restart_period": 0.2}, "lr_restart_period"),
    ({"lr_schedule": "cosine_restarts", "lr_cosine_end": 0.9}, "lr_cosine_end"),
])
def test_a_setting_of_another_schedule_is_refused_by_name(given: dict, key: str) -> None:
    # In a file it would otherwise be silently ignored.
    with pytest.raises(ConfigError, match=rf"`{key}` .* applies only to lr_schedule"):
        cfg(**given)


@pytest.mark.parametrize("given, key", [
    ({"lr_schedule": "linear"}, "lr_schedule"),
    ({"warmup_fraction": 1.0}, "warmup_fraction"),
    ({"warmup_fraction": -0.1}, "warmup_fraction"),
    ({"lr_schedule": "cosine", "lr_min_fraction": 1.5}, "lr_min_fraction"),
    ({"lr_schedule": "cosine", "warmup_fraction": 0.5, "lr_cosine_end": 0.4}, "lr_cosine_end"),
    ({"lr_schedule": "cosine_restarts", "lr_restart_period": 0.0}, "lr_restart_period"),
    ({"lr_schedule": "cosine_restarts", "lr_restart_mult": 0.5}, "lr_restart_mult"),
    ({"early_stop_patience": -1}, "early_stop_patience"),
])
def test_bad_values_name_their_key(given: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"`{key}`"):
        cfg(**given)


@pytest.mark.parametrize("schedule", ["multistep", "cosine", "cosine_restarts"])
def test_every_schedule_round_trips_and_takes_its_own_defaults(schedule: str) -> None:
    c = cfg(lr_schedule=schedule)
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert (c.lr_scheduler_gamma is None) == (schedule != "multistep")
    assert (c.lr_min_fraction == 0.0) == (schedule != "multistep")
    # Switching the schedule drops the old one's settings instead of refusing them.
    assert c.replace(lr_schedule="multistep").lr_scheduler_milestones == (0.1, 0.8)


@pytest.mark.parametrize("over", [
    {"lr_scheduler_milestones": [0.3, 0.7], "warmup_fraction": 0.1},
    {"lr_schedule": "cosine", "warmup_fraction": 0.05, "lr_min_fraction": 0.1},
    {"lr_schedule": "cosine_restarts", "lr_restart_period": 0.15, "lr_restart_mult": 2.0},
])
def test_a_budget_change_keeps_every_position_in_samples(over: dict) -> None:
    old = cfg(**over)
    longer = TrainConfig.from_dict({**old.to_dict(), "epochs": 25}).rescaled_budget(10)
    for s in range(0, T, U):  # the part the run has trained: the same LR, update by update
        assert longer.lr_at(s) == pytest.approx(old.lr_at(s), rel=1e-7, abs=1e-12), s


def test_a_shorter_budget_drops_the_milestones_it_no_longer_reaches() -> None:
    old = cfg(lr_scheduler_milestones=[0.3, 0.7])
    shorter = TrainConfig.from_dict({**old.to_dict(), "epochs": 5}).rescaled_budget(10)
    assert shorter.lr_scheduler_milestones == (0.6,)


# --- exact resume, and patience, in the real loop ---------------------------------------------------
TINY = dict(epochs=6, epoch_samples=64, batch_size=8, validation_interval=1, use_amp=False,
            patch_size=8, num_threads=1)


@pytest.mark.parametrize("over", [
    {"lr_schedule": "cosine", "warmup_fraction": 0.5},  # the resume lands inside the warm-up
    {"lr_schedule": "cosine_restarts", "lr_restart_period": 0.25, "lr_restart_mult": 2.0,
     "warmup_fraction": 0.1},  # ... inside the second cycle
])
def test_resume_is_exact_mid_warm_up_and_mid_restart(tiny_train, tiny_val, tmp_path, over) -> None:
    config = TrainConfig(**{**TINY, **over})
    straight = Trainer(config, tiny_train, tiny_val)
    straight.run()
    first = Trainer(config, tiny_train, tiny_val)
    first.run_interval()
    first.run_interval()
    assert first.cfg.lr_at(first.samples_seen) < first.cfg.model_lr  # not at the full LR there
    first.save(tmp_path / "state.pt")
    resumed = Trainer(config, tiny_train, tiny_val)
    resumed.load(tmp_path / "state.pt")
    resumed.run()
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in straight.history]


def test_patience_stops_after_that_many_validations_without_a_new_best(tiny_train, tiny_val,
                                                                       monkeypatch) -> None:
    from trainable import loop
    from trainable.evaluate import Scores

    scores = iter([20.0, 21.0, 20.5, 20.9, 20.2, 25.0])  # best at epoch 2, none better by 4
    monkeypatch.setattr(loop, "score_model", lambda *a, **k: Scores(next(scores), 0.5, 1))
    tr = Trainer(TrainConfig(**{**TINY, "early_stop_patience": 2}), tiny_train, tiny_val)
    seen = []
    tr.run(lambda r, _: seen.append(r))
    assert [r.status for r in seen] == ["running"] * 3 + ["stopped_early"]
    assert tr.done and tr.epoch == 4 and tr.best_epoch == 2


def test_patience_off_by_default_runs_the_whole_budget(tiny_train, tiny_val, monkeypatch) -> None:
    from trainable import loop
    from trainable.evaluate import Scores

    monkeypatch.setattr(loop, "score_model", lambda *a, **k: Scores(20.0, 0.5, 1))
    tr = Trainer(TrainConfig(**TINY), tiny_train, tiny_val)
    tr.run()
    assert tr.status == "completed" and tr.epoch == 6


def test_a_stopped_run_says_so_in_its_summary(clip_root, tmp_path, capsys, monkeypatch) -> None:
    from trainable import loop
    from trainable.__main__ import main
    from trainable.evaluate import Scores

    real = loop.score_model
    scores = iter([20.0, 19.0, 19.5])

    def score(*a, **k):  # made-up validations, so that the best is epoch 1; real weights saved
        real(*a, **k)
        return Scores(next(scores), 0.5, 1)

    monkeypatch.setattr(loop, "score_model", score)
    out = tmp_path / "run"
    rc = main(["--set", f"data={clip_root}", "--set", "epochs=6", "--set", "epoch_samples=32",
               "--set", "batch_size=8", "--set", "patch_size=8", "--set", "use_amp=false",
               "--set", "validation_interval=1", "--set", "early_stop_patience=2",
               "--set", f"cache_dir={tmp_path / 'cache'}", "--out", str(out), "--no-test"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped_early" and summary["epochs"] == 3
    assert summary["early_stop_patience"] == 2 and summary["best_epoch"] == 1
    printed = capsys.readouterr().out
    assert "stopped early: no new best validation in 2 validations" in printed


def _walked_position(t: float, period: float, mult: float) -> float:
    """Where ``t`` lies in its restart cycle, found by walking the cycles one by one."""
    start, length = 0.0, period
    while t >= start + length - 1e-9:
        start, length = start + length, length * mult
    return max((t - start) / length, 0.0)


@pytest.mark.parametrize("period, mult", [(0.1, 1.5), (0.07, 3.0), (0.2, 1.0), (0.05, 1.2)])
def test_the_cycle_position_is_the_walked_ones_over_many_cycles(period: float, mult: float) -> None:
    from trainable.schedule import _cycle_position

    # A fine grid, and every restart exactly (where floating point puts t on either side).
    grid = [i / 997 for i in range(3 * 997)]
    starts, start, length = [], 0.0, period
    while start < 3.0:
        starts.append(start)
        start, length = start + length, length * mult
    for t in grid + starts:
        assert _cycle_position(t, period, mult) == pytest.approx(
            _walked_position(t, period, mult), abs=1e-9), t
    assert all(_cycle_position(s, period, mult) == pytest.approx(0.0, abs=1e-9) for s in starts)
    assert len(starts) > 4


def test_restarts_with_a_growing_period_follow_the_cosine_within_each_cycle() -> None:
    c = cfg(lr_schedule="cosine_restarts", lr_restart_period=0.1, lr_restart_mult=1.5,
            lr_min_fraction=0.1, warmup_fraction=0.05)
    for s in range(0, T, 10):
        t = max(s / T - 0.05, 0.0)
        warm = min(1.0, (s + U) / (0.05 * T))
        want = warm * cos_from(0.1, _walked_position(t, 0.1, 1.5))
        assert c.lr_at(s) == pytest.approx(want, rel=1e-9), s


@pytest.mark.parametrize("t", [1.0, 0.37])
def test_the_cycle_is_found_without_walking_a_billion_cycles(t: float) -> None:
    """The cycle index comes from its closed form, then at most a step or two either way: a
    schedule of very many short cycles costs no more than one of few (a walk from the first
    cycle would take minutes here, and hang the trainer at every update)."""
    from trainable.schedule import _cycle_position

    assert 0.0 <= _cycle_position(t, 1e-9, 1 + 1e-9) < 1.0
