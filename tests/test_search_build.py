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
from ray.tune.search.sample import Categorical, Integer

from trainable.errors import InputError
from tune.sampling import SpaceSampler, sampled_names
from tune.search import (
    METRIC,
    concurrency_cap,
    make_scheduler,
    make_searcher,
    param_space,
    study_journal,
)
from tune.space import SearchSpec, asha_rungs, load_space


def load_text(tmp_path: Path, text: str) -> SearchSpec:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return load_space(str(path))


def _suggested(spec: SearchSpec, n: int = 1) -> tuple[list[dict], optuna.Study]:
    """``n`` trials of the spec's define-by-run sampler on a fresh TPE study."""
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    sampler = SpaceSampler(spec)
    return [sampler(study.ask()) for _ in range(n)], study


@pytest.mark.parametrize("name", ["lr_sched", "batch_accum", "full", "optim", "smoke"])
def test_the_sampler_asks_optuna_what_rays_domains_asked(name):
    """The define-by-run space suggests, in the same order, the distributions Ray's OptunaSearch
    makes of Ray's domains, under the user's names; a milestone list as its count and its drops
    in the user's form (issue 27: the study held the searcher's encoding, lr_milestone_1 and
    lr_milestone_2_rel, sampled even for a one-drop trial)."""
    from ray import tune

    spec = load_space(name)
    (values,), study = _suggested(spec)
    trial = study.trials[0]
    before: list[tuple[str, object]] = []

    def ray(domain):  # Ray's own conversion of one domain (its names may hold no "/")
        return OptunaSearch.convert_search_space({"x": domain})["x"]

    for p in spec.params:
        if p.kind == "milestones":
            marks = values[p.name]
            if p.count[0] < p.count[1]:
                before.append((f"{p.name}/count",
                               ray(tune.choice(list(range(p.count[0], p.count[1] + 1))))))
            low = p.low
            for k, mark in enumerate(marks, 1):  # each drop between the one before it and high
                before.append((f"{p.name}/{k}", ray(tune.uniform(low, p.high))))
                low = trial.params[f"{p.name}/{k}"]
                assert mark == pytest.approx(low, abs=1e-6)
            assert trial.user_attrs[p.name] == marks  # the list itself, as the trial trains
        elif p.kind == "loguniform":
            before.append((p.name, ray(tune.loguniform(p.low, p.high))))
        elif p.kind == "uniform":
            before.append((p.name, ray(tune.uniform(p.low, p.high))))
        elif p.kind == "randint":
            before.append((p.name, ray(tune.randint(p.low, p.high + 1))))
        else:
            before.append((p.name, ray(tune.choice(list(p.choices)))))
    assert list(trial.distributions.items()) == before
    assert set(trial.params) <= set(sampled_names(spec))
    assert list(values) == [p.name for p in spec.params]  # the user's form, nothing else


def test_the_study_holds_only_the_drops_a_trial_has():
    values, study = _suggested(load_space("lr_sched"), 12)
    counts = set()
    for v, trial in zip(values, study.trials, strict=True):
        marks = v["lr_scheduler_milestones"]
        counts.add(len(marks))
        assert {k for k in trial.params if k.startswith("lr_scheduler_milestones")} == {
            "lr_scheduler_milestones/count",
            *(f"lr_scheduler_milestones/{k}" for k in range(1, len(marks) + 1))}
        assert trial.user_attrs == {"lr_scheduler_milestones": marks}
        assert not [k for k in trial.params if k.startswith("lr_milestone")]
    assert counts == {1, 2}


def test_a_choice_of_lists_is_stored_as_each_lists_text(tmp_path):
    spec = load_text(tmp_path, "params:\n  lr_scheduler_milestones: {choice: [[0.5], [0.2, 0.7]]}\n"
                               "search: {algorithm: random}\n")
    values, study = _suggested(spec, 8)
    for v, trial in zip(values, study.trials, strict=True):
        assert trial.params["lr_scheduler_milestones"] == str(v["lr_scheduler_milestones"])
    assert study.trials[0].distributions["lr_scheduler_milestones"].choices == ("[0.5]",
                                                                                 "[0.2, 0.7]")


def test_a_trial_gets_its_milestones_as_a_list_of_fractions():
    values, _ = _suggested(load_space("full"), 12)
    for v in values:
        marks = v["lr_scheduler_milestones"]
        assert isinstance(marks, list) and 1 <= len(marks) <= 2
        assert all(0.05 <= m <= 0.95 for m in marks) and marks == sorted(marks)
        assert not [k for k in v if k.startswith("lr_milestone") or "/" in k]


def test_randint_high_is_inclusive(tmp_path):
    spec = load_text(tmp_path, "params:\n  gradient_accumulation_steps: {randint: [1, 4]}\n"
                               "search: {algorithm: random}\n")
    values, study = _suggested(spec, 40)
    assert {v["gradient_accumulation_steps"] for v in values} == {1, 2, 3, 4}
    assert study.trials[0].distributions["gradient_accumulation_steps"] == \
        optuna.distributions.IntDistribution(1, 4)


def test_pbt_and_grid_get_rays_domains_in_the_users_form(tmp_path):
    spec = load_text(tmp_path, "params:\n  gradient_accumulation_steps: {randint: [1, 4]}\n"
                               "  lr_scheduler_milestones: {choice: [[0.5], [0.2, 0.7]]}\n"
                               "search: {algorithm: random}\nscheduler: {type: pbt}\n")
    space = param_space(spec)
    domain = space["gradient_accumulation_steps"]
    assert isinstance(domain, Integer) and (domain.lower, domain.upper) == (1, 5)
    assert isinstance(space["lr_scheduler_milestones"], Categorical)
    assert space["lr_scheduler_milestones"].categories == [[0.5], [0.2, 0.7]]
    assert param_space(load_space("full")) == {}, "Optuna samples; Ray's param_space is empty"


def test_a_grid_is_its_points_listed(tmp_path):
    spec = load_text(tmp_path, "params:\n  batch_size: {grid: [8, 16]}\nsearch: {algorithm: grid}\n"
                               "trials: 2\n")
    searcher = make_searcher(spec, tmp_path)
    assert param_space(spec) == {"batch_size": None}  # where Ray writes each point
    assert searcher._points_to_evaluate == [{"batch_size": 8}, {"batch_size": 16}] * 2


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
          lr_scheduler_gamma: {uniform: [0.05, 0.5]}
          seed: {grid: [0, 1]}
        search: {algorithm: random}
        scheduler: {type: pbt}
        """)
    pbt = make_scheduler(spec)
    assert isinstance(pbt, PopulationBasedTraining)
    assert pbt._hyperparam_mutations["optimizer"] == ["sgd", "adam"], "choices step, not multiply"
    assert "seed" not in pbt._hyperparam_mutations
    clipped = pbt._custom_explore_fn({"model_lr": 0.12, "lr_scheduler_gamma": -0.1,
                                      "optimizer": "adam"})
    assert clipped == {"model_lr": 0.1, "lr_scheduler_gamma": 0.05, "optimizer": "adam"}


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
    assert param_space(spec) == {}
    first = searcher.suggest("t1")
    assert first == spec.default_values() == {"model_lr": 0.01, "lr_scheduler_milestones":
                                              [0.1, 0.8], "lr_scheduler_gamma": 0.1}
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
    first = spec.trial_config(searcher.suggest("t1"))
    assert first.optimizer == "adam" and first.lr_scheduler_milestones != (0.1, 0.8)


def test_optuna_searcher_survives_save_and_restore(tmp_path):
    spec = load_space("smoke")
    searcher = make_searcher(spec, tmp_path).searcher
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
        draws.append(searcher.suggest("t1"))
    assert draws[0] == draws[1]


def test_existing_study_is_refused(tmp_path):
    study_journal(tmp_path).write_text("")
    with pytest.raises(InputError, match="already exists"):
        make_searcher(load_space("smoke"), tmp_path)


def test_random_searcher_samples_through_optuna(tmp_path):
    spec = load_text(tmp_path, "params:\n  model_lr: {loguniform: [1.0e-3, 0.1]}\n"
                               "search: {algorithm: random, seed: 4}\nmax_concurrent: 3\n")
    searcher = make_searcher(spec, tmp_path)
    assert isinstance(searcher, ConcurrencyLimiter) and searcher.max_concurrent == 3
    assert isinstance(searcher.searcher._sampler, optuna.samplers.RandomSampler)
    assert searcher.suggest("t1") == {"model_lr": 0.01}  # the defaults first: inside the space
    assert 1e-3 <= searcher.suggest("t2")["model_lr"] <= 0.1
    assert study_journal(tmp_path).is_file()


def test_random_search_covers_a_grid_once_per_sample(tmp_path):
    spec = load_text(tmp_path, "params:\n  model_lr: {loguniform: [1.0e-3, 0.1]}\n"
                               "  batch_size: {grid: [8, 32]}\n  residual: {grid: [false, true]}\n"
                               "search: {algorithm: random}\ntrials: 3\ninclude_defaults: false\n")
    assert spec.total_trials() == 12
    values, _ = _suggested(spec, 12)
    combos = [(v["batch_size"], v["residual"]) for v in values]
    assert sorted(combos) == sorted([(b, r) for b in (8, 32) for r in (False, True)] * 3)
    assert len({v["model_lr"] for v in values}) == 12


def test_grid_search_runs_on_rays_own_generator(tmp_path):
    spec = load_text(tmp_path, "params:\n  batch_size: {grid: [8, 16]}\nsearch: {algorithm: grid}\n")
    assert isinstance(make_searcher(spec, tmp_path), BasicVariantGenerator)
    assert not study_journal(tmp_path).exists()


def test_hyperband_gets_no_concurrency_cap(tmp_path):
    spec = dataclasses.replace(load_space("lr_sched"), scheduler="hyperband")
    assert concurrency_cap(spec) is None
    assert isinstance(make_searcher(spec, tmp_path), OptunaSearch)



CONDITIONAL = """\
params:
  lr_schedule:
    choice:
      multistep: {lr_scheduler_milestones: {milestones: {count: [1, 2], low: 0.05, high: 0.95}},
                  lr_scheduler_gamma: {uniform: [0.05, 0.5]}}
      cosine: {lr_min_fraction: {loguniform: [1.0e-3, 1.0e-1]}}
  warmup_fraction: {uniform: [0.0, 0.1]}
config: {residual: true}
"""


@pytest.mark.parametrize("algorithm", ["optuna", "random"])
def test_a_conditional_space_is_searched_as_one(tmp_path, algorithm):
    spec = load_text(tmp_path, CONDITIONAL + f"search: {{algorithm: {algorithm}}}\n"
                                             "include_defaults: false\n")
    searcher = make_searcher(spec, tmp_path)
    seen = set()
    for i in range(12):
        values = searcher.suggest(f"t{i}")
        cfg = spec.trial_config(values)  # exactly the chosen branch's keys, in the user's form
        seen.add(values["lr_schedule"])
        if values["lr_schedule"] == "cosine":
            assert set(values) == {"lr_schedule", "lr_min_fraction", "warmup_fraction"}
            assert cfg.lr_scheduler_gamma is None and 1e-3 <= cfg.lr_min_fraction <= 0.1
        else:
            assert set(values) == {"lr_schedule", "lr_scheduler_milestones",
                                   "lr_scheduler_gamma", "warmup_fraction"}
        searcher.on_trial_complete(f"t{i}", {METRIC: 20.0 + i, "epoch": spec.base.epochs})
    assert seen == {"multistep", "cosine"}
    study = optuna.load_study(study_name="space", storage=searcher.searcher._storage)
    names = set().union(*(t.params for t in study.trials))
    assert {"lr_min_fraction@cosine", "lr_scheduler_gamma@multistep"} <= names
    assert names <= set(sampled_names(spec))


def test_a_conditional_grid_runs_every_point_on_rays_generator(tmp_path):
    spec = load_text(tmp_path, """\
        params:
          lr_schedule:
            grid:
              multistep: {lr_scheduler_gamma: {grid: [0.1, 0.5]}}
              cosine: {lr_min_fraction: {grid: [0.01]}}
        search: {algorithm: grid}
        """)
    searcher = make_searcher(spec, tmp_path)
    assert isinstance(searcher, BasicVariantGenerator)
    assert param_space(spec) == {"lr_schedule": None, "lr_scheduler_gamma": None,
                                 "lr_min_fraction": None}
    points = [{**param_space(spec), **p} for p in searcher._points_to_evaluate]  # as Ray fills
    assert [spec.trial_config(p).lr_schedule for p in points] == ["multistep", "multistep",
                                                                  "cosine"]


def test_the_defaults_inside_a_conditional_space_are_told_to_optuna_first(tmp_path):
    spec = load_text(tmp_path, "params:\n  lr_schedule:\n    choice:\n      multistep: "
                               "{lr_scheduler_gamma: {uniform: [0.05, 0.5]}}\n      cosine: "
                               "{lr_min_fraction: {uniform: [0.0, 0.1]}}\n")
    assert spec.reference_inside
    searcher = make_searcher(spec, tmp_path)
    assert searcher.suggest("t1") == {"lr_schedule": "multistep", "lr_scheduler_gamma": 0.1}


def test_progress_lines_show_the_chosen_branchs_parameters():
    from tune.progress import ProgressPrinter

    line = ProgressPrinter(load_space("schedules"))._params(
        {"model_lr": 1e-3, "lr_schedule": "cosine", "lr_min_fraction": 0.01,
         "warmup_fraction": 0.05})
    assert line == "model_lr=0.001 lr_schedule=cosine lr_min_fraction=0.01 warmup_fraction=0.05"
