"""Render one trial's full config as YAML, JSON or the source repository's ``config.py``.

- YAML: the plain ``TrainConfig`` mapping under a comment header, so ``yaml.safe_load`` gives what
  ``TrainConfig.from_dict`` (and ``python -m trainable --config``) takes as-is, and a search space
  can use it as its ``config:`` base.
- JSON: ``{"provenance": {...}, "config": {...}}``; load ``["config"]``.
- py: a drop-in ``config.py`` for the source repository, every name its train.py and test.py
  read (`analysis.source_repo`, which owns that format).
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any

import yaml

from trainable.config import TrainConfig

FORMATS = ("yaml", "json", "py")


def render(fmt: str, config: dict[str, Any], provenance: dict[str, Any], *,
           source_weights: Path | None = None, scores: list[str] | None = None) -> str:
    """Text of the config file; raises ConfigError if ``config`` is not a valid TrainConfig.
    ``source_weights``, ``scores`` (py only): the .pth.tar written beside it, the test-split
    lines for its header. ``num_threads`` is left to torch (0): a trial's is the search's
    per-trial share of the cores (a Ray packing setting), and would pin a training elsewhere to
    one thread."""
    plain = TrainConfig.from_dict(config, where="the trial's config").replace(
        num_threads=0).to_dict()
    if fmt == "yaml":
        return _yaml(plain, provenance)
    if fmt == "json":
        return json.dumps({"provenance": _finite(provenance), "config": plain}, indent=2) + "\n"
    if fmt == "py":
        from analysis import source_repo

        return source_repo.render(plain, provenance_lines(provenance),
                                  trial=str(provenance["trial"]), weights=source_weights,
                                  scores=scores or [])
    raise ValueError(f"The value of `fmt` is {fmt!r}, but must be one of {FORMATS}.")


def provenance_lines(provenance: dict[str, Any]) -> list[str]:
    """``key: value`` lines for a comment header (nested mappings flattened with dots)."""
    lines = []
    for key, value in provenance.items():
        if isinstance(value, dict):
            lines += [f"{key}.{sub}" for sub in provenance_lines(value)]
        elif isinstance(value, list):
            lines.append(f"{key}: {shlex.join(map(str, value))}")
        else:
            lines.append(f"{key}: {value}")
    return [" ".join(line.split()) for line in lines]  # no newline may escape a comment


# --- private helpers -----------------------------------------------------------------------------
def _header(provenance: dict[str, Any], title: str) -> str:
    return "".join(f"# {line}\n" for line in [title, *provenance_lines(provenance)]) + "\n"


def _yaml(config: dict[str, Any], provenance: dict[str, Any]) -> str:
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=True)
    title = ("espcn-tune export: a full TrainConfig (python -m trainable --config FILE, or a "
             "search space's `config:` base)")
    return _header(provenance, title) + body


def _finite(v: Any) -> Any:
    """JSON has no NaN: unknown numbers become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v
