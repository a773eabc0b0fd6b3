"""A `TrainConfig` from a YAML file and ``--set KEY=VALUE`` overrides: what ``python -m trainable
--config`` and ``python -m trainable.upscale --config`` read, validated once as a whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainable.config import TrainConfig
from trainable.errors import ConfigError
from trainable.yaml_io import parse_yaml, read_yaml


def load_config(path: str | Path | None, overrides: list[str]) -> TrainConfig:
    """The file's keys (or the defaults) with each ``--set KEY=VALUE`` on top, validated once."""
    values: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        loaded = read_yaml(Path(path), "config file")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        values.update(loaded or {})
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        values[key.strip()] = parse_yaml(raw, f"--set {item!r}", lines=False)
    if overrides:
        where += " with --set"
    return TrainConfig.from_dict(values, where=where)
