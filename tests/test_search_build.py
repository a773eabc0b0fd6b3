"""Building Ray Tune objects from a spec: no Ray cluster is started except in the `slow` test."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import optuna
import pytest
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
)
from ray.tune.schedulers.async_hyperband import _Bracket
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.sample import Categorical, Float, Integer

from trainable.errors import InputError
from tune.search import (
    METRIC,
    MODE,
    concurrency_cap,
    make_scheduler,
    make_searcher,
    param_space,
    study_journal,
)
from tune.space import MILESTONE_FIRST, SearchSpec, asha_rungs, load_space, milestone_rel


def load_text(tmp_path: Path, text: str) -> SearchSpec:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return load_space(str(path))


def test_param_space_domains():
    space = param_space(load_space("full"))
    assert isinstance(space["model_lr"], Float) and space["model_lr"].lower == 1e-4
    assert isinstance(space["batch_size"], Categorical)
    assert space["batch_size"].categories == [8, 16, 32, 64]
    assert isinstance(space[milestone_rel(2)], Float)


def test_randint_high_is_inclusive(tmp_path):
    spec = load_text(tmp_path, "params:\n  gradient_accumulation_steps: {randint: [1, 4]}\n")
    domain = param_space(spec)["gradient_accumulation_steps"]
    assert isinstance(domain, Integer) and (domain.lower, domain.upper) == (1, 5)


def test_grid_becomes_grid_search(tmp_path):
    spec = load_text(tmp_path, "params:\n  batch_size: {grid: [8, 16]}\nsearch: {algorithm: grid}\n")
    assert param_space(spec) == {"batch_size": {"grid_search": [8, 16]}}


@pytest.mark.parametrize("name", ["lr_sched", "batch_accum", "full", "optim", "smoke"])
def test_asha_from_shipped_spaces(name):
    spec = load_space(name)
    scheduler = make_scheduler(spec)
    assert isinstance(scheduler, ASHAScheduler)
    assert scheduler._time_attr == "epoch" and scheduler._max_t == spec.base.epochs
    assert scheduler._metric is None and scheduler._mode is None, "TuneConfig sets them"
    ray_rungs = sorted(m for m, _ in scheduler._brackets[0]._rungs if m < spec.base.epochs)
    assert ray_rungs == spec.rungs()


def test_rungs_match_ray_brackets():
    for epochs in range(1, 90):
        for grace in range(1, epochs + 1):
            for rf in (2, 3, 4, 5):
                ray_rungs = sorted(m for m, _ in _Bracket(grace, epochs, rf, 0)._rungs
                                   if m < epochs)
                assert asha_rungs(epochs, grace, rf) == ray_rungs, (epochs, grace, rf)


@pytest.mark.parametrize("kind, cls", [("fifo", FIFOScheduler), ("hyperband", HyperBandScheduler),
                                       ("median", MedianStoppingRule)])
def test_other_schedulers(kind, cls):
    spec = dataclasses.replace(load_space("lr_sched"), scheduler=kind)
    assert type(make_scheduler(spec)) is cls


def test_pbt_mutations_stay_in_range(tmp_path):
    spec = load_text(tmp_path, """\
        params:
          model_lr: {loguniform: [1.0e-3, 0.1]}
          optimizer: {choice: [sgd, adam]}
          lr_scheduler_milestones: {milestones: {}}
          seed: {grid: [0, 1]}
        search: {algorithm: random}
        scheduler: {type: pbt}
        """)
    pbt = make_scheduler(spec)
    assert isinstance(pbt, PopulationBasedTraining)
    assert pbt._hyperparam_mutations["optimizer"] == ["sgd", "adam"], "choices step, not multiply"
    assert "seed" not in pbt._hyperparam_mutations
    clipped = pbt._custom_explore_fn({"model_lr": 0.12, MILESTONE_FIRST: 1.1,
                                      milestone_rel(2): -0.1, "optimizer": "adam"})
    assert clipped == {"model_lr": 0.1, MILESTONE_FIRST: 0.95, milestone_rel(2): 0.0,
                       "optimizer": "adam"}


INSIDE = """\
params:
  model_lr: {loguniform: [1.0e-4, 5.0e-2]}
  lr_scheduler_milestones: {milestones: {count: [1, 2], low: 0.05, high: 0.95}}
  lr_scheduler_gamma: {uniform: [0.05, 0.5]}
config: {use_amp: false}
budget: {epochs: 18, epoch_samples: 2048, validation_interval: 2}
"""


def test_optuna_searcher_suggests_defaults_first_when_they_lie_inside(tmp_path):
    (tmp_path / "inside.yaml").write_text(INSIDE)
    spec = load_space(tmp_path / "inside.yaml")
    assert spec.reference_inside
    searcher = make_searcher(spec, tmp_path)
    assert isinstance(searcher, ConcurrencyLimiter) and searcher.max_concurrent == 2
    inner = searcher.searcher
    assert isinstance(inner, OptunaSearch)
    assert inner._sampler._n_startup_trials == 5
    assert searcher.set_search_properties(METRIC, MODE, param_space(spec))
    first = searcher.suggest("t1")
    assert first == pytest.approx(spec.default_point())
    assert spec.trial_config(first) == spec.base
    second = searcher.suggest("t2")
    cfg = spec.trial_config(second)
    assert 1e-4 <= cfg.model_lr <= 5e-2 and all(0 < m < 1 for m in cfg.lr_scheduler_milestones)
    searcher.on_trial_complete("t1", {METRIC: 25.0, "epoch": 18})
    assert study_journal(tmp_path).is_file()
    study = optuna.load_study(study_name="inside", storage=inner._storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]


def test_a_reference_outside_the_space_is_no_trial_of_the_study(tmp_path):
    spec = load_space("lr_sched")  # residual + Adam base: the defaults run beside the search
    assert spec.include_defaults and not spec.reference_inside
    searcher = make_searcher(spec, tmp_path)
    assert searcher.set_search_properties(METRIC, MODE, param_space(spec))
    first = spec.trial_config(searcher.suggest("t1"))
    assert first.optimizer == "adam" and first.lr_scheduler_milestones != (0.1, 0.8)


def test_optuna_searcher_survives_save_and_restore(tmp_path):
    spec = load_space("smoke")
    searcher = make_searcher(spec, tmp_path).searcher
    searcher.set_search_properties(METRIC, MODE, param_space(spec))
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", {METRIC: 25.0, "epoch": 4})
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = OptunaSearch()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert [t.value for t in restored._ot_study.trials] == [25.0]
    assert restored.suggest("t2") is not None


def test_stopped_trials_are_pruned_with_their_curve_at_epochs(tmp_path):
    """Ray's own OptunaSearch tells an ASHA-stopped trial COMPLETE at its rung's value and drops its
    last validation from the curve; ours tells it PRUNED with every validation at its epoch."""
    from tune.ray_edge.optuna_search import PruningOptunaSearch

    spec = dataclasses.replace(load_space("smoke"), include_defaults=False)  # 4 epochs
    searcher = make_searcher(spec, tmp_path).searcher
    assert isinstance(searcher, PruningOptunaSearch)
    searcher.set_search_properties(METRIC, MODE, param_space(spec))
    for t in ("stopped", "done", "diverged", "failed"):
        searcher.suggest(t)
    searcher.on_trial_result("stopped", {METRIC: 24.0, "epoch": 1, "training_iteration": 1})
    searcher.on_trial_complete("stopped", {METRIC: 24.5, "epoch": 2, "training_iteration": 2,
                                           "status": "running"})
    for epoch in (1, 2, 3, 4):  # Ray hands the last result over twice: here and on complete
        searcher.on_trial_result("done", {METRIC: 24.0 + epoch, "epoch": epoch})
    searcher.on_trial_complete("done", {METRIC: 28.0, "epoch": 4, "status": "completed"})
    searcher.on_trial_complete("diverged", {METRIC: 0.0, "epoch": 1, "status": "diverged"})
    searcher.on_trial_complete("failed", None, error=True)
    study = optuna.load_study(study_name="smoke", storage=searcher._storage)
    got = {t.number: (t.state.name, t.value, t.intermediate_values) for t in study.trials}
    assert got == {
        0: ("PRUNED", 24.5, {1: 24.0, 2: 24.5}),
        1: ("COMPLETE", 28.0, {1: 25.0, 2: 26.0, 3: 27.0, 4: 28.0}),
        2: ("COMPLETE", 0.0, {1: 0.0}),  # a bad configuration, not a stopped one
        3: ("FAIL", None, {}),
    }
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tuner.restore brings the subclass back
    restored = PruningOptunaSearch(time_attr="epoch", max_t=1)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored._max_t == 4 and len(restored._ot_study.trials) == 4


def test_same_seed_same_suggestions(tmp_path):
    spec = dataclasses.replace(load_space("smoke"), include_defaults=False)
    draws = []
    for run in ("a", "b"):
        searcher = make_searcher(spec, tmp_path / run)
        searcher.set_search_properties(METRIC, MODE, param_space(spec))
        draws.append(searcher.suggest("t1"))
    assert draws[0] == draws[1]


def test_existing_study_is_refused(tmp_path):
    study_journal(tmp_path).write_text("")
    with pytest.raises(InputError, match="already exists"):
        make_searcher(load_space("smoke"), tmp_path)


def test_random_searcher(tmp_path):
    spec = load_text(tmp_path, "params:\n  model_lr: {loguniform: [1.0e-3, 0.1]}\n"
                               "search: {algorithm: random, seed: 4}\nmax_concurrent: 3\n")
    searcher = make_searcher(spec, tmp_path)
    assert isinstance(searcher, BasicVariantGenerator)
    assert searcher._points_to_evaluate == [{"model_lr": 0.01}]
    assert searcher.max_concurrent == 3
    assert not study_journal(tmp_path).exists()


def test_hyperband_gets_no_concurrency_cap(tmp_path):
    spec = dataclasses.replace(load_space("lr_sched"), scheduler="hyperband")
    assert concurrency_cap(spec) is None
    assert isinstance(make_searcher(spec, tmp_path), OptunaSearch)

