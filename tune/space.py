"""The search space's public face: load a file into a validated, frozen `SearchSpec`, describe it.

The spec flows one way: `tune._spec_types` (SearchSpec, constants; imports nothing from
`tune`) <- `tune._spec_checks` and `tune._space_rules` (the rules that build one) <- `tune._plan_text`
(the text that describes one) <- this module, which re-exports the public names. How the searcher samples
the ranges is `tune.sampling`'s (with `tune.milestones`).
This module must not import ray: the CLI's ``--dry-run`` builds and prints the plan without it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import search_spaces
from trainable.errors import ConfigError, did_you_mean
from trainable.yaml_io import read_yaml
from tune import _space_rules as rules
from tune._plan_text import plan_lines
from tune._spec_checks import Checker
from tune._spec_types import (
    ALGORITHMS,
    KINDS,
    METRIC,
    MODE,
    SCHEDULERS,
    TIME_ATTR,
    ParamRange,
    SearchSpec,
    asha_rungs,
    grid_points,
)


# --- loading --------------------------------------------------------------------------------------
def shipped_spaces() -> list[str]:
    return sorted(p.stem for p in search_spaces.DIR.glob("*.yaml"))


def resolve_space_path(name_or_path: str | Path) -> Path:
    """A bare name ("lr_sched" or "lr_sched.yaml") is a shipped space; anything else a path.

    A bare name that is not shipped but exists in the working directory is used as a path, so
    ``my_space.yaml`` works from where it lives.
    """
    given = Path(name_or_path)
    if given.parent == Path(".") and given.name not in ("", ".", ".."):
        name = given.name if given.suffix in (".yaml", ".yml") else f"{given.name}.yaml"
        shipped = search_spaces.DIR / name
        if shipped.is_file() or not given.is_file():
            given = shipped
    if not given.is_file():
        guess = (did_you_mean(given.stem, shipped_spaces()) if given.parent == search_spaces.DIR
                 else "")
        raise ConfigError(
            f"search space {str(name_or_path)!r} not found{guess}: {given} is not a file; "
            f"shipped spaces: {', '.join(shipped_spaces()) or '(none)'}"
        )
    return given


def load_space(name_or_path: str | Path) -> SearchSpec:
    path = resolve_space_path(name_or_path)
    return _build(read_yaml(path, "search-space file"), path, str(path))


def spec_from_document(doc: Any, path: Path, label: str) -> SearchSpec:
    """A spec from a document already read (the run record's copy of the space a run started
    with), validated by the same rules as a file."""
    return _build(doc, path, label)


def _build(doc: Any, path: Path, label: str) -> SearchSpec:
    check = Checker(label)
    fields_ = rules.resolve(check, check.mapping("", doc))
    return SearchSpec(path=path, document=copy.deepcopy(dict(doc or {})), **fields_)


def with_overrides(
    spec: SearchSpec,
    *,
    trials: int | None = None,
    max_concurrent: int | None = None,
    cpus_per_trial: float | None = None,
    gpus_per_trial: float | None = None,
    fuse: int | None = None,
    data: str | None = None,
    seed: int | None = None,
) -> SearchSpec:
    """``spec`` with command-line values replacing the file's (None keeps the file's).

    A new ``seed`` seeds the trials and the searcher alike (it drops a pinned `search.seed`),
    so ``--seed`` always gives an independent replicate.
    """
    doc: dict[str, Any] = copy.deepcopy(dict(spec.document))
    resources = dict(doc.get("resources") or {})
    for key, value in (("trials", trials), ("max_concurrent", max_concurrent),
                       ("data", data), ("seed", seed)):
        if value is not None:
            doc[key] = value
    if seed is not None and isinstance(doc.get("search"), Mapping):
        doc["search"] = {k: v for k, v in doc["search"].items() if k != "seed"}
    if cpus_per_trial is not None:
        resources["cpus"] = cpus_per_trial
    if gpus_per_trial is not None:
        resources["gpus"] = gpus_per_trial
    if fuse is not None:
        resources["fuse"] = fuse
    if resources:
        doc["resources"] = resources
    return _build(doc, spec.path, f"{spec.path} (with command-line overrides)")


# --- the --dry-run text ---------------------------------------------------------------------------
def describe_plan(spec: SearchSpec) -> str:
    return "\n".join(plan_lines(spec))


__all__ = [
    "ALGORITHMS", "KINDS", "METRIC", "MODE", "SCHEDULERS", "TIME_ATTR", "ParamRange", "SearchSpec",
    "asha_rungs", "describe_plan", "grid_points", "load_space", "resolve_space_path", "shipped_spaces",
    "with_overrides",
]
