"""Render one trial's full config as YAML, JSON or a source-document-style ``config.py``.

- YAML: the plain ``TrainConfig`` mapping under a comment header, so ``yaml.safe_load`` gives what
  ``TrainConfig.from_dict`` (and ``python -m trainable --config``) takes as-is, and a search space
  can use it as its ``config:`` base.
- JSON: ``{"provenance": {...}, "config": {...}}``; load ``["config"]``.
- py: literal assignments only, in the source document's field names, with
  ``lr_scheduler_milestones`` as integer epochs ``int(epochs * fraction)`` as the document wrote
  them. This one is for the original repository; it does not round-trip the fractions exactly.
"""

from __future__ import annotations

import json
import math
import shlex
from typing import Any

import yaml

from trainable.config import TrainConfig

FORMATS = ("yaml", "json", "py")
# The source document's config.py names, in its order; every other field follows them.
_DOCUMENT_FIELDS = ("model_lr", "lr_scheduler_milestones", "lr_scheduler_gamma", "batch_size",
                    "gradient_accumulation_steps", "use_amp", "epochs", "validation_interval")


def render(fmt: str, config: dict[str, Any], provenance: dict[str, Any]) -> str:
    """Text of the config file; raises ConfigError if ``config`` is not a valid TrainConfig."""
    plain = TrainConfig.from_dict(config, where="the trial's config").to_dict()
    if fmt == "yaml":
        return _yaml(plain, provenance)
    if fmt == "json":
        return json.dumps({"provenance": _finite(provenance), "config": plain}, indent=2) + "\n"
    if fmt == "py":
        return _py(plain, provenance)
    raise ValueError(f"The value of `fmt` is {fmt!r}, but must be one of {FORMATS}.")


def milestone_epochs(epochs: int, fractions: list[float]) -> list[int]:
    """``[int(epochs * f) ...]`` as the source document writes it; the epsilon keeps 0.29 * 100
    at 29 despite binary floating point."""
    return [int(epochs * f + 1e-9) for f in fractions]


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


def _py(config: dict[str, Any], provenance: dict[str, Any]) -> str:
    epochs = int(config["epochs"])
    title = "espcn-tune export: config.py in the source document's field names (literals only)"
    notes = [f"`epochs` counts epochs of epoch_samples = {config['epoch_samples']} training "
             "samples (espcn-tune's budget unit), not passes over a whole dataset"]
    values = dict(config)
    document = list(_DOCUMENT_FIELDS)
    if config["lr_schedule"] == "multistep":
        fractions = [float(f) for f in config["lr_scheduler_milestones"]]
        ints = milestone_epochs(epochs, fractions)
        values["lr_scheduler_milestones"] = ints
        notes.insert(0, "lr_scheduler_milestones = "
                        f"[{', '.join(f'int(epochs * {f:g})' for f in fractions)}]")
        if len(set(ints)) < len(ints) or (ints and ints[0] == 0):
            notes.append(f"at {epochs} epochs the milestones collapse to {ints}; "
                         "scale `epochs` and recompute them together")
    else:
        # The source document's config.py knows MultiStepLR only: its milestones and gamma have
        # no meaning here, and what does is not in its fields.
        document = [k for k in document if k not in ("lr_scheduler_milestones",
                                                     "lr_scheduler_gamma")]
        notes.insert(0, f"the source document's config.py cannot express this schedule: "
                        f"lr_schedule {config['lr_schedule']!r} (cosine annealing"
                        f"{' with warm restarts' if config['lr_schedule'] == 'cosine_restarts' else ''}"
                        ") has no field there, and its MultiStepLR fields (lr_scheduler_milestones, "
                        "lr_scheduler_gamma) are left out; espcn-tune's own settings below carry it")
    if config.get("warmup_fraction"):
        notes.insert(1, f"the source document's config.py has no warm-up: warmup_fraction = "
                        f"{config['warmup_fraction']:g} is among espcn-tune's own settings below")
    out = [_header(provenance, title).rstrip("\n")]
    out += [f"# NOTE: {n}" for n in notes]
    out.append("")
    out += [f"{k} = {_literal(values[k])}" for k in document if k in values]
    out.append("")
    out.append("# espcn-tune settings the source document does not have")
    out += [f"{k} = {_literal(v)}" for k, v in values.items() if k not in _DOCUMENT_FIELDS]
    return "\n".join(out) + "\n"


def _literal(v: Any) -> str:
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{v!r} has no Python literal")
    return repr(v)


def _finite(v: Any) -> Any:
    """JSON has no NaN: unknown numbers become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v
