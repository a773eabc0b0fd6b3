"""The search-space layer without Ray: loading, one test per validation rule, encoding, plan text."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import search_spaces
from trainable.config import TrainConfig
from trainable.errors import ConfigError, InputError
from tune import milestones
from tune.sampling import searcher_point
from tune.space import (
    SearchSpec,
    describe_plan,
    load_space,
    resolve_space_path,
    shipped_spaces,
    with_overrides,
)

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = "params:\n  model_lr: {loguniform: [1.0e-4, 5.0e-2]}\n"


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path: Path, text: str) -> SearchSpec:
    return load_space(str(write(tmp_path, text)))


def fails(tmp_path: Path, text: str, match: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as info:
        load_space(str(path))
    assert str(path) in str(info.value), "every message names the file"
    return info.value


# --- shipped files ----------------------------------------------------------------------------------
def test_the_five_spaces_are_shipped():
    assert {"lr_sched", "batch_accum", "full", "optim", "smoke"} <= set(shipped_spaces())


@pytest.mark.parametrize("name", shipped_spaces())
def test_shipped_space_loads_and_plans(name):
    spec = load_space(name)
    plan = describe_plan(spec)
    assert str(spec.path) in plan
    assert "per trial" in plan
    # Only full.yaml asks for a GPU (packed 8 per card); the others fit a CPU.
    assert ("CPU only" in plan) == (spec.gpus_per_trial == 0) == (name != "full")
    assert "rungs at epochs " + ", ".join(map(str, spec.rungs())) in plan
    assert spec.rungs(), "every shipped file stops trials early"
    assert spec.trial_config(spec.default_values()) == spec.base.replace()


@pytest.mark.parametrize("name", shipped_spaces())
def test_shipped_lines_carry_a_reason(name):
    for line in (search_spaces.DIR / f"{name}.yaml").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "  # " in line, f"{name}.yaml: no reason on {line!r}"


def test_lr_sched_plan():
    """The main job: LR schedule on the base recipe, the source defaults beside it."""
    spec = load_space("lr_sched")
    plan = describe_plan(spec)
    assert spec.rungs() == [spec.grace_period, 3 * spec.grace_period]
    assert spec.grace_period % spec.base.validation_interval == 0
    assert "18 epochs x 4,096 samples = 73,728 training samples" in plan
    assert "1 CPU, 0 GPU per trial (CPU only)" in plan
    assert f"Optuna TPE (seed 0, {spec.n_startup_trials} random startup trials)" in plan
    assert "trained once beside the search" in plan and not spec.reference_inside
    for line in ("residual                     false -> true", "optimizer                    sgd -> adam",
                 "patch_size                   17 -> 32", "epochs                       100 -> 18"):
        assert line in plan


def test_the_plan_shows_a_float_as_a_float(tmp_path):
    """A choice of [1.0, 2.0] is not [1, 2] (a choice of integers) in the dry run's plan."""
    spec = load_space(write(tmp_path, "params:\n  lr_scheduler_gamma: {choice: [0.5, 1.0]}\n"
                                      "  model_lr: {uniform: [1.0e-3, 2.0e-2]}\n"))
    plan = describe_plan(spec)
    assert "choice [0.5, 1.0]" in plan and "uniform [0.001, 0.02]" in plan


def test_space_module_imports_neither_ray_nor_optuna():
    code = ("import sys; from tune.space import load_space, describe_plan, with_overrides; "
            "describe_plan(with_overrides(load_space('smoke'), trials=3)); "
            "print(sorted(m for m in ('ray', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# --- paths ----------------------------------------------------------------------------------------
def test_bare_names_resolve_to_shipped_files():
    assert resolve_space_path("lr_sched") == search_spaces.DIR / "lr_sched.yaml"
    assert resolve_space_path("lr_sched.yaml") == search_spaces.DIR / "lr_sched.yaml"


def test_paths_are_used_as_given(tmp_path, monkeypatch):
    path = write(tmp_path, MINIMAL, "mine.yaml")
    assert resolve_space_path(str(path)) == path
    monkeypatch.chdir(tmp_path)
    assert resolve_space_path("mine.yaml") == Path("mine.yaml"), "bare name found in the cwd"


def test_missing_file_names_path_and_shipped_spaces(tmp_path):
    with pytest.raises(ConfigError, match=r"not found: .*nope\.yaml.*shipped spaces: .*lr_sched"):
        load_space("nope")
    with pytest.raises(ConfigError, match=str(tmp_path / "gone.yaml")):
        load_space(str(tmp_path / "gone.yaml"))


def test_a_misspelt_shipped_space_gets_a_guess():
    with pytest.raises(ConfigError, match=r"'lr_shed' not found \(did you mean `lr_sched`\?\)"):
        load_space("lr_shed")


def test_config_error_is_input_error():
    assert issubclass(ConfigError, InputError)


# --- YAML -----------------------------------------------------------------------------------------
def test_invalid_yaml_names_file_and_line(tmp_path):
    fails(tmp_path, "params:\n  model_lr: {loguniform: [1, 2}\n", r"space\.yaml:2: invalid YAML")


def test_duplicate_key_names_both_lines(tmp_path):
    text = MINIMAL + "trials: 4\ntrials: 5\n"
    fails(tmp_path, text, r"space\.yaml:4: invalid YAML: duplicate key 'trials' \(first on line 3\)")


def test_document_must_be_a_mapping(tmp_path):
    fails(tmp_path, "- a\n- b\n", "must be a mapping")


def test_exponent_without_dot_is_a_number(tmp_path):
    # PyYAML reads 1e-5 (no dot) as the string "1e-5".
    spec = load_text(tmp_path, "params:\n  model_lr: {loguniform: [1e-5, 1e-2]}\n"
                               "include_defaults: false\n")
    p = spec.params[0]
    assert (p.low, p.high) == (1e-5, 1e-2) and isinstance(p.low, float) and isinstance(p.high, float)


def test_choice_values_take_the_field_type(tmp_path):
    spec = load_text(tmp_path, "params:\n  model_lr: {choice: [1e-3, 1.0e-2, 1]}\n")
    assert spec.params[0].choices == (1e-3, 1e-2, 1.0)
    assert all(type(v) is float for v in spec.params[0].choices)


# --- keys -----------------------------------------------------------------------------------------
def test_unknown_top_level_key_lists_valid_keys(tmp_path):
    fails(tmp_path, MINIMAL + "trails: 3\n",
          r"unknown key `trails` \(did you mean `trials`\?\); valid keys are: budget, config, "
          r"data, include_defaults, ")


def test_unknown_nested_key_names_its_path(tmp_path):
    fails(tmp_path, MINIMAL + "budget: {epoch: 3}\n",
          r"unknown key `budget.epoch` \(did you mean `epochs`\?\); valid keys under `budget` "
          r"are: epoch_samples, epochs, "
          r"validation_interval")


def test_scheduler_keys_depend_on_its_type(tmp_path):
    fails(tmp_path, MINIMAL + "scheduler: {perturbation_interval: 5}\n",
          r"unknown key `scheduler.perturbation_interval`.*; valid keys under `scheduler` with "
          r"type asha are: grace_period, reduction_factor, type")


def test_unknown_param_name(tmp_path):
    fails(tmp_path, "params:\n  learning_rate: {uniform: [0.1, 0.2]}\n",
          r"unknown key `params.learning_rate`.*; valid keys under `params` are: .*model_lr")


def test_budget_fields_cannot_be_searched(tmp_path):
    fails(tmp_path, "params:\n  epochs: {randint: [1, 5]}\n",
          r"`params.epochs` cannot be searched: it is the budget")


def test_unknown_distribution(tmp_path):
    fails(tmp_path, "params:\n  model_lr: {normal: [0.1, 0.2]}\n",
          r"unknown key `params.model_lr.normal`.*; valid keys under `params.model_lr` are: "
          r"choice, grid, loguniform, milestones, randint, uniform")


def test_one_distribution_per_param(tmp_path):
    fails(tmp_path, "params:\n  model_lr: {uniform: [0.1, 0.2], loguniform: [0.1, 0.2]}\n",
          r"`params.model_lr` is .*must name exactly one distribution")


def test_params_must_not_be_empty(tmp_path):
    fails(tmp_path, "trials: 3\n", r"`params` is empty")


def test_config_unknown_key_is_rejected(tmp_path):
    fails(tmp_path, MINIMAL + "config: {lr: 0.1}\n",
          r"\(fixed settings\): unknown key 'lr'; valid keys are: ")


def test_config_value_is_validated(tmp_path):
    fails(tmp_path, MINIMAL + "config: {batch_size: 0}\n",
          r"The value of `batch_size` is 0, but must be >= 1\.")


def test_config_keys_with_their_own_section(tmp_path):
    fails(tmp_path, MINIMAL + "config: {epochs: 3}\n", r"`config.epochs` belongs in `budget.epochs`")


def test_searched_key_cannot_also_be_fixed(tmp_path):
    fails(tmp_path, MINIMAL + "config: {model_lr: 0.1}\n",
          r"`params.model_lr` is searched, so `config.model_lr` cannot also fix it")


# --- distributions ----------------------------------------------------------------------------
def test_low_must_be_below_high(tmp_path):
    fails(tmp_path, "params:\n  lr_scheduler_gamma: {uniform: [0.5, 0.1]}\n",
          r"The value of `params.lr_scheduler_gamma.uniform` is \[0.5, 0.1\], but low must be < "
          r"high\.")


def test_loguniform_needs_positive_low(tmp_path):
    fails(tmp_path, "params:\n  model_lr: {loguniform: [0, 0.1]}\n",
          r"The value of `params.model_lr.loguniform` is \[0.0, 0.1\], but low must be > 0")


def test_randint_low_above_high(tmp_path):
    fails(tmp_path, "params:\n  batch_size: {randint: [9, 8]}\n",
          r"`params.batch_size.randint` is \[9, 8\], but low must be <= high")


def test_bounds_must_be_two_numbers(tmp_path):
    fails(tmp_path, "params:\n  model_lr: {uniform: [0.1]}\n", r"must be a list of two values")
    fails(tmp_path, "params:\n  model_lr: {uniform: [a, 0.1]}\n",
          r"The value of `params.model_lr.uniform\[0\]` is 'a', but must be a number\.")


def test_bounds_are_valid_for_trainconfig(tmp_path):
    fails(tmp_path, "params:\n  lr_scheduler_gamma: {uniform: [0.5, 1.5]}\n",
          r"`params.lr_scheduler_gamma.uniform\[1\]`: The value of `lr_scheduler_gamma` is 1.5, "
          r"but must be in \(0, 1\]")


def test_float_distribution_on_an_integer_field(tmp_path):
    fails(tmp_path, "params:\n  batch_size: {uniform: [8, 64]}\n",
          r"batch_size is int, so uniform cannot sample it; use randint or choice")


def test_empty_choice(tmp_path):
    fails(tmp_path, "params:\n  batch_size: {choice: []}\n",
          r"The value of `params.batch_size.choice` is \[\], but must be a non-empty list")


def test_invalid_choice_value_names_file_and_key(tmp_path):
    fails(tmp_path, "params:\n  batch_size: {choice: [0]}\n",
          r"`params.batch_size.choice\[0\]`: The value of `batch_size` is 0, but must be >= 1\.")


def test_choice_values_must_be_distinct(tmp_path):
    fails(tmp_path, "params:\n  batch_size: {choice: [8, 8]}\n", r"must not repeat a value")


def test_combination_of_extremes_must_be_valid(tmp_path):
    fails(tmp_path, """\
        params:
          batch_size: {choice: [16, 64]}
          gradient_accumulation_steps: {choice: [1, 4]}
        budget: {epoch_samples: 128}
        """, r"the combination batch_size=64, gradient_accumulation_steps=4 gives an invalid "
             r"trial config: The value of `epoch_samples` is 128")


# --- milestones -----------------------------------------------------------------------------------
def test_milestones_outside_unit_interval(tmp_path):
    fails(tmp_path, "params:\n  lr_scheduler_milestones: {milestones: {high: 1.0}}\n",
          r"`params.lr_scheduler_milestones.milestones` is \{'low': 0.05, 'high': 1.0\}, but "
          r"milestones are fractions of the budget: need 0 < low < high < 1")


def test_milestones_count_range(tmp_path):
    fails(tmp_path, "params:\n  lr_scheduler_milestones: {milestones: {count: [1, 4]}}\n",
          r"`params.lr_scheduler_milestones.milestones.count` is \[1, 4\], but must be a count")


def test_milestones_only_for_the_milestones_field(tmp_path):
    fails(tmp_path, "params:\n  model_lr: {milestones: {}}\n",
          r"the milestones distribution only applies to lr_scheduler_milestones")


def test_milestone_list_needs_milestones_distribution(tmp_path):
    fails(tmp_path, "params:\n  lr_scheduler_milestones: {uniform: [0.1, 0.5]}\n",
          r"lr_scheduler_milestones is a list; search it with `milestones`")


def test_milestone_lists_are_no_optuna_choice(tmp_path):
    fails(tmp_path, "params:\n  lr_scheduler_milestones: {choice: [[0.1, 0.8], [0.5]]}\n",
          r"Optuna's categorical values must be scalars")


def test_milestone_lists_work_with_random_search(tmp_path):
    spec = load_text(tmp_path, "params:\n  lr_scheduler_milestones: {choice: [[0.1, 0.8], [0.5]]}\n"
                               "search: {algorithm: random}\n")
    assert spec.trial_config({"lr_scheduler_milestones": [0.5]}).lr_scheduler_milestones == (0.5,)


def test_milestones_are_one_range_with_its_count():
    (p,) = [p for p in load_space("lr_sched").params if p.kind == "milestones"]
    assert (p.name, p.count, p.low, p.high) == ("lr_scheduler_milestones", (1, 2), 0.05, 0.95)
    assert milestones.names(p.name, p.count) == ["lr_scheduler_milestones/count",
                                                 "lr_scheduler_milestones/1",
                                                 "lr_scheduler_milestones/2"]


@pytest.mark.parametrize("drops, expected", [
    ((0.3, 0.625), (0.3, 0.625)),
    ((0.3,), (0.3,)),
    ((0.3, 0.3), (0.3,)),  # coinciding milestones collapse into one
    ((0.1234567891, 0.95), (0.123457, 0.95)),  # rounded to 1e-6 of the budget
])
def test_the_sampled_drops_fold_into_milestones(drops, expected):
    assert milestones.fold(drops) == pytest.approx(expected)


@pytest.mark.parametrize("marks", [(0.1, 0.8), (0.3,), (0.05, 0.95), (0.2, 0.5, 0.9)])
def test_encode_is_folds_inverse(marks):
    point = milestones.encode("m", marks, (1, 3))
    assert point["m/count"] == len(marks)
    assert milestones.fold([point[f"m/{k}"] for k in range(1, point["m/count"] + 1)]) == \
        pytest.approx(marks)


def test_fixed_milestone_count_has_no_count_in_the_study(tmp_path):
    spec = load_text(tmp_path, "params:\n  lr_scheduler_milestones: "
                               "{milestones: {count: 2, low: 0.05, high: 0.9}}\n")
    point = searcher_point(spec, spec.default_values())
    assert point == {"lr_scheduler_milestones/1": 0.1, "lr_scheduler_milestones/2": 0.8}


def test_trial_config_takes_the_users_form_and_numpy_scalars():
    spec = load_space("full")
    values = {k: np.float64(v) if isinstance(v, float) else np.int64(v) if isinstance(v, int)
              else v for k, v in spec.default_values().items()}
    cfg = spec.trial_config(values)
    assert cfg.batch_size == 16 and type(cfg.batch_size) is int
    assert cfg.lr_scheduler_milestones == (0.1, 0.8) and isinstance(cfg, TrainConfig)


def test_trial_config_rejects_unknown_and_missing_keys():
    spec = load_space("lr_sched")
    with pytest.raises(ConfigError, match=r"unknown: batch_size; missing: -"):
        spec.trial_config({**spec.default_values(), "batch_size": 8})
    values = spec.default_values()
    del values["lr_scheduler_milestones"]
    with pytest.raises(ConfigError, match=r"missing: lr_scheduler_milestones"):
        spec.trial_config(values)
    with pytest.raises(ConfigError, match=r"unknown: lr_scheduler_milestones/1"):  # the study's
        spec.trial_config({**spec.default_values(), milestones.drop_name(
            "lr_scheduler_milestones", 1): 0.3})


# --- defaults point -------------------------------------------------------------------------------
def test_default_values_have_exactly_the_searched_keys():
    spec = load_space("optim")
    assert spec.default_values() == {"optimizer": "sgd", "residual": False, "model_lr": 0.01}


def test_defaults_outside_the_space_run_beside_the_search(tmp_path):
    """The reference is a trial TPE learns from only where it lies inside the space."""
    inside = load_text(tmp_path, "params:\n  model_lr: {loguniform: [1.0e-4, 1.0e-1]}\n")
    assert inside.reference_inside and inside.total_trials() == inside.trials
    assert "as the first trial" in describe_plan(inside)
    for text in ("params:\n  model_lr: {loguniform: [1.0e-4, 1.0e-3]}\n",  # lr outside the range
                 "params:\n  lr_scheduler_milestones: {milestones: {count: 1}}\n",  # 1 drop, not 2
                 "params:\n  model_lr: {loguniform: [1.0e-4, 1.0e-1]}\nconfig: {residual: true}\n"):
        spec = load_text(tmp_path, text)
        assert spec.include_defaults and not spec.reference_inside, text
        assert "trained once beside the search" in describe_plan(spec)
    spec = load_text(tmp_path, "params:\n  model_lr: {loguniform: [1.0e-4, 1.0e-3]}\n"
                               "include_defaults: false\n")
    assert not spec.include_defaults and not spec.reference_inside
    assert "Reference:    none" in describe_plan(spec)


def test_reference_config_is_the_source_documents_at_the_runs_budget(tmp_path):
    from trainable.config import TrainConfig
    from tune.reference import reference_config

    spec = load_text(tmp_path, "params:\n  model_lr: {loguniform: [1.0e-4, 1.0e-3]}\n"
                               "config: {residual: true, optimizer: adam, patch_size: 32, "
                               "use_amp: false}\nbudget: {epochs: 6, epoch_samples: 1024, "
                               "validation_interval: 2}\nseed: 3\n")
    ref = reference_config(spec.base)
    run = dict(epochs=6, epoch_samples=1024, validation_interval=2, seed=3, use_amp=False)
    assert ref == TrainConfig(**run)
    assert (ref.optimizer, ref.residual, ref.patch_size, ref.model_lr) == ("sgd", False, 17, 0.01)


# --- scheduler ------------------------------------------------------------------------------------
def test_grace_period_above_epochs(tmp_path):
    fails(tmp_path, MINIMAL + "budget: {epochs: 4, validation_interval: 1}\n"
                              "scheduler: {grace_period: 5}\n",
          r"The value of `scheduler.grace_period` is 5, but must be <= `budget.epochs` \(4\)\.")


def test_grace_period_on_a_validation_epoch(tmp_path):
    fails(tmp_path, MINIMAL + "budget: {validation_interval: 2}\nscheduler: {grace_period: 3}\n",
          r"`scheduler.grace_period` is 3, but must be a multiple of "
          r"`budget.validation_interval` \(2\)")


def test_reduction_factor_below_two(tmp_path):
    fails(tmp_path, MINIMAL + "scheduler: {reduction_factor: 1}\n",
          r"space\.yaml: The value of `scheduler.reduction_factor` is 1, but must be >= 2\.$")


def test_unknown_scheduler(tmp_path):
    fails(tmp_path, MINIMAL + "scheduler: {type: bohb}\n",
          r"`scheduler.type` is 'bohb', but must be one of: asha, fifo, hyperband, median, pbt")


def test_pbt_interval_multiple_of_validation(tmp_path):
    fails(tmp_path, MINIMAL + "budget: {validation_interval: 2}\nsearch: {algorithm: random}\n"
                              "scheduler: {type: pbt, perturbation_interval: 3}\n",
          r"`scheduler.perturbation_interval` is 3, but must be a multiple of "
          r"`budget.validation_interval` \(2\)")


def test_pbt_interval_below_epochs(tmp_path):
    fails(tmp_path, MINIMAL + "budget: {epochs: 10}\nsearch: {algorithm: random}\n"
                              "scheduler: {type: pbt, perturbation_interval: 10}\n",
          r"must be < `budget.epochs` \(10\), or PBT never perturbs")


def test_pbt_refuses_optuna(tmp_path):
    fails(tmp_path, MINIMAL + "scheduler: {type: pbt}\n", r"pbt cannot run with .* optuna")


def test_validation_interval_within_budget(tmp_path):
    fails(tmp_path, MINIMAL + "budget: {epochs: 3, validation_interval: 5}\n",
          r"`budget.validation_interval` is 5, but must be <= `budget.epochs` \(3\)")


def test_budget_values_are_positive_integers(tmp_path):
    fails(tmp_path, MINIMAL + "budget: {epochs: 0}\n",
          r"The value of `budget.epochs` is 0, but must be >= 1\.")


# --- searcher, trials, resources ------------------------------------------------------------------
def test_grid_params_need_a_grid_capable_searcher(tmp_path):
    fails(tmp_path, "params:\n  batch_size: {grid: [8, 16]}\n",
          r"`params.batch_size.grid` needs `search.algorithm` random or grid")


def test_grid_search_needs_only_grid_params(tmp_path):
    fails(tmp_path, "params:\n  model_lr: {loguniform: [1.0e-3, 0.1]}\n"
                    "search: {algorithm: grid}\n",
          r"with `search.algorithm` grid every parameter must be a grid")


def test_grid_search_excludes_the_defaults_trial(tmp_path):
    fails(tmp_path, "params:\n  batch_size: {grid: [8, 16]}\nsearch: {algorithm: grid}\n"
                    "include_defaults: true\n",
          r"The value of `include_defaults` is True, but must be false")
    spec = load_text(tmp_path, "params:\n  batch_size: {grid: [8, 16]}\n"
                               "search: {algorithm: grid}\ntrials: 2\n")
    assert not spec.include_defaults and spec.total_trials() == 4


def test_grid_search_runs_the_grid_once_by_default(tmp_path):
    spec = load_text(tmp_path, "params:\n  batch_size: {grid: [8, 16]}\n"
                               "search: {algorithm: grid}\n")
    assert spec.trials == 1 and spec.total_trials() == 2
    assert "grid: 2 points, each run 1 time(s)" in describe_plan(spec)


def test_random_search_with_a_grid_counts_the_defaults_once(tmp_path):
    spec = load_text(tmp_path, "params:\n  batch_size: {grid: [8, 16, 32]}\n"
                               "  model_lr: {loguniform: [1.0e-3, 0.1]}\n"
                               "search: {algorithm: random}\ntrials: 4\n")
    assert spec.total_trials() == 1 + 3 * 3
    assert "10 (4 samples over a 3-point grid)" in describe_plan(spec)


def test_startup_trials_only_for_optuna(tmp_path):
    fails(tmp_path, MINIMAL + "search: {algorithm: random, n_startup_trials: 3}\n",
          r"unknown key `search.n_startup_trials`.*; valid keys under `search` with algorithm "
          r"random are: algorithm, seed")


def test_trials_at_least_one(tmp_path):
    fails(tmp_path, MINIMAL + "trials: 0\n", r"The value of `trials` is 0, but must be >= 1\.")


def test_trials_must_be_an_integer(tmp_path):
    fails(tmp_path, MINIMAL + "trials: 2.5\n", r"`trials` is 2.5, but must be an integer")
    fails(tmp_path, MINIMAL + "trials: true\n", r"`trials` is True, but must be an integer")


def test_max_concurrent_at_least_one(tmp_path):
    fails(tmp_path, MINIMAL + "max_concurrent: 0\n",
          r"The value of `max_concurrent` is 0, but must be >= 1\.")


def test_negative_resources(tmp_path):
    fails(tmp_path, MINIMAL + "resources: {cpus: -1}\n",
          r"The value of `resources.cpus` is -1, but must be >= 0\.")
    fails(tmp_path, MINIMAL + "resources: {gpus: -0.5}\n",
          r"The value of `resources.gpus` is -0.5, but must be >= 0\.")


def test_gpus_above_one_are_whole(tmp_path):
    fails(tmp_path, MINIMAL + "resources: {gpus: 1.5}\n", r"must be a whole number when above 1")


def test_a_trial_needs_some_resource(tmp_path):
    fails(tmp_path, MINIMAL + "resources: {cpus: 0}\n", r"a trial must ask for some CPU or GPU")


def test_seed_range(tmp_path):
    fails(tmp_path, MINIMAL + "seed: -1\n", r"The value of `seed` is -1, but must be >= 0\.")


def test_search_seed_follows_seed_unless_pinned(tmp_path):
    assert load_text(tmp_path, MINIMAL + "seed: 7\n").search_seed == 7
    spec = load_text(tmp_path, MINIMAL + "seed: 7\nsearch: {seed: 3}\n")
    assert (spec.base.seed, spec.search_seed) == (7, 3)


# --- overrides and snapshot -----------------------------------------------------------------------
def test_with_overrides_replaces_and_revalidates():
    spec = load_space("lr_sched")
    new = with_overrides(spec, trials=3, max_concurrent=4, cpus_per_trial=0.5,
                         gpus_per_trial=0.25, data="/data/vimeo", seed=11)
    assert (new.trials, new.max_concurrent, new.cpus_per_trial, new.gpus_per_trial) == \
        (3, 4, 0.5, 0.25)
    assert (new.base.data, new.base.seed, new.search_seed) == ("/data/vimeo", 11, 11)
    assert new.params == spec.params and new.base.epochs == spec.base.epochs
    assert "0.25 GPU per trial" in describe_plan(new)
    assert with_overrides(spec) == spec, "None keeps the file's values"


def test_with_overrides_seed_replaces_a_pinned_search_seed(tmp_path):
    spec = load_text(tmp_path, MINIMAL + "search: {seed: 3}\n")
    assert with_overrides(spec, seed=5).search_seed == 5


def test_with_overrides_rejects_bad_values():
    with pytest.raises(ConfigError, match=r"command-line overrides\): The value of `trials` is 0"):
        with_overrides(load_space("smoke"), trials=0)


def test_ranges_are_recorded_in_the_space_files_form():
    spec = load_space("lr_sched")
    recorded = json.loads(json.dumps({p.name: p.to_json() for p in spec.params}))
    assert recorded["lr_scheduler_milestones"] == {
        "milestones": {"count": [1, 2], "low": 0.05, "high": 0.95}}
    assert recorded["model_lr"] == {"loguniform": [1e-4, 1e-2]}


@pytest.mark.parametrize("epochs, grace, rf, rungs", [
    (18, 2, 3, [2, 6]),
    (20, 2, 3, [2, 6, 18]),
    (27, 1, 3, [1, 3, 9]),  # 27 is max_t: a trial there is stopped anyway
    (4, 1, 2, [1, 2]),
    (4, 4, 2, []),
])
def test_rungs(tmp_path, epochs, grace, rf, rungs):
    spec = load_text(tmp_path, MINIMAL + f"budget: {{epochs: {epochs}, validation_interval: 1}}\n"
                                         f"scheduler: {{grace_period: {grace}, "
                                         f"reduction_factor: {rf}}}\n")
    assert spec.rungs() == rungs


def test_spec_pickles_for_ray():
    spec = load_space("full")
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_rungs_only_for_asha(tmp_path):
    assert load_text(tmp_path, MINIMAL + "scheduler: {type: fifo}\n").rungs() == []


def test_pbt_cannot_perturb_a_milestone_list(tmp_path):
    fails(tmp_path, "params:\n  lr_scheduler_milestones: {milestones: {}}\n"
                    "search: {algorithm: random}\nscheduler: {type: pbt}\n",
          r"`params.lr_scheduler_milestones.milestones` cannot be searched under `scheduler.type` "
          r"pbt.*as a `choice`")


# --- conditional spaces: per-choice parameters -------------------------------------------------------
SCHEDULES = """\
params:
  lr_schedule:
    choice:
      multistep: {lr_scheduler_milestones: {milestones: {count: [1, 2], low: 0.05, high: 0.95}},
                  lr_scheduler_gamma: {uniform: [0.05, 0.5]}}
      cosine: {lr_min_fraction: {loguniform: [1.0e-3, 1.0e-1]}}
      cosine_restarts:
  warmup_fraction: {uniform: [0.0, 0.1]}
config: {residual: true}
"""


def test_a_choice_can_carry_parameters_of_its_own(tmp_path):
    spec = load_text(tmp_path, SCHEDULES)
    (schedule, warmup) = spec.params
    assert schedule.choices == ("multistep", "cosine", "cosine_restarts")
    assert [(v, [p.name for p in subs]) for v, subs in schedule.branches] == [
        ("multistep", ["lr_scheduler_milestones", "lr_scheduler_gamma"]),
        ("cosine", ["lr_min_fraction"]), ("cosine_restarts", [])]
    assert warmup.name == "warmup_fraction"
    cosine = spec.trial_config({"lr_schedule": "cosine", "lr_min_fraction": 0.01,
                                "warmup_fraction": 0.05})
    assert cosine.lr_min_fraction == 0.01 and cosine.lr_scheduler_gamma is None
    with pytest.raises(ConfigError, match=r"unknown: lr_scheduler_gamma"):
        spec.trial_config({"lr_schedule": "cosine", "lr_min_fraction": 0.01,
                           "lr_scheduler_gamma": 0.2, "warmup_fraction": 0.05})
    plan = describe_plan(spec)
    assert "if lr_schedule is cosine:" in plan and "lr_min_fraction" in plan
    assert "if lr_schedule is cosine_restarts: nothing more" in plan


@pytest.mark.parametrize("block, match", [
    ("      cosin: {}\n", r"`params.lr_schedule.choice.cosin`: The value of `lr_schedule` is "
                          r"'cosin', but must be one of"),
    ("      cosine: {lr_scheduler_gamma: {uniform: [0.05, 0.5]}}\n",
     r"`params.lr_schedule.choice.cosine.lr_scheduler_gamma.uniform\[0\]`: .*applies only to "
     r"lr_schedule multistep"),
    ("      cosine: {lr_min_fraction: {choice: {a: {}}}}\n",
     r"`params.lr_schedule.choice.cosine.lr_min_fraction.choice`: a choice inside a choice"),
    ("      cosine: {warmup_fraction: {uniform: [0.0, 0.1]}}\n",
     r"`params.lr_schedule.choice.cosine.warmup_fraction` is also searched at the top"),
    ("      cosine: {lr_schedule: {choice: [cosine]}}\n", r"is the choice itself"),
    ("      cosine: {lr_min_fracton: {uniform: [0.0, 0.1]}}\n",
     r"unknown key `params.lr_schedule.choice.cosine.lr_min_fracton` \(did you mean "
     r"`lr_min_fraction`\?\)"),
    ("      cosine: {lr_min_fraction: {uniform: [0.0, 0.1], loguniform: [0.1, 0.2]}}\n",
     r"must name exactly one distribution"),
    ("      cosine: [lr_min_fraction]\n", r"`params.lr_schedule.choice.cosine` is \['lr_min"),
    ("      cosine: {epochs: {choice: [1, 2]}}\n", r"unknown key"),
])
def test_each_malformed_conditional_block_is_one_line_naming_the_key(tmp_path, block, match):
    text = ("params:\n  lr_schedule:\n    choice:\n      multistep: {}\n" + block
            + "  warmup_fraction: {uniform: [0.0, 0.1]}\n")
    fails(tmp_path, text, match)


def test_a_conditional_choice_needs_named_choices(tmp_path):
    fails(tmp_path, "params:\n  residual:\n    choice:\n      true: {}\n      false: {}\n",
          r"the choice True is a bool; choices that carry parameters of their own are names")


def test_a_conditional_grid_enumerates_each_choices_own_points(tmp_path):
    from tune.space import grid_points

    spec = load_text(tmp_path, """\
        params:
          lr_schedule:
            grid:
              multistep: {lr_scheduler_gamma: {grid: [0.1, 0.5]}}
              cosine: {lr_min_fraction: {grid: [0.01]}}
          model_lr: {grid: [1.0e-3, 1.0e-2]}
        search: {algorithm: grid}
        trials: 2
        """)
    points = grid_points(spec.params)
    assert spec.grid_size() == 6 == len(points) and spec.total_trials() == 12
    assert {"lr_schedule": "cosine", "lr_min_fraction": 0.01, "model_lr": 1e-3} in points
    assert all(spec.trial_config(p) for p in points)
    fails(tmp_path, "params:\n  lr_schedule:\n    grid:\n      cosine: "
                    "{lr_min_fraction: {uniform: [0.0, 0.1]}}\nsearch: {algorithm: random}\n",
          r"the parameters of a grid's choices are grids too")


def test_patience_belongs_to_single_runs_not_to_a_search(tmp_path):
    fails(tmp_path, MINIMAL + "config: {early_stop_patience: 3}\n",
          r"`config.early_stop_patience` cannot be set in a search space: inside a search ASHA")
    fails(tmp_path, "params:\n  early_stop_patience: {choice: [2, 3]}\n",
          r"`params.early_stop_patience` cannot be searched")


def test_the_defaults_inside_a_conditional_space_are_its_first_trial(tmp_path):
    spec = load_text(tmp_path, """\
        params:
          lr_schedule:
            choice:
              multistep: {lr_scheduler_gamma: {uniform: [0.05, 0.5]}}
              cosine: {lr_min_fraction: {uniform: [0.0, 0.1]}}
          model_lr: {loguniform: [1.0e-3, 1.0e-1]}
        """)
    assert spec.reference_inside
    assert spec.default_values() == {"lr_schedule": "multistep", "lr_scheduler_gamma": 0.1,
                                     "model_lr": 0.01}
