"""Value checks for a search-space file whose messages name file and key (the YAML itself is read by
`trainable.yaml_io`, shared with `python -m trainable --config`).

Kept apart from `tune.space` so that module reads as the schema, not as the plumbing. Every
failure raises `ConfigError` with optuna-style wording: the file, the key path, the value, the rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from trainable.errors import ConfigError, did_you_mean


class Checker:
    """Value checks for one file; ``label`` (the file, maybe with a note) starts every message."""

    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, key: str, value: Any, rule: str) -> NoReturn:
        raise ConfigError(f"{self.label}: The value of `{key}` is {value!r}, but {rule}.")

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.label}: {message}")

    def mapping(self, key: str, value: Any) -> Mapping[str, Any]:
        """A YAML mapping; a missing or empty section (None) reads as {}."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(key, value, "must be a mapping of keys to values")
        return value

    def only_keys(self, key: str, section: Mapping[str, Any], valid: Iterable[str],
                  context: str = "") -> None:
        valid = sorted(valid)
        unknown = sorted(str(k) for k in section if k not in valid)
        if unknown:
            names = ", ".join(f"`{_join(key, k)}`{did_you_mean(k, valid)}" for k in unknown)
            under = f" under `{key}`" if key else ""
            self.error(f"unknown key{'s' if len(unknown) > 1 else ''} {names}; valid keys{under}"
                       f"{' ' + context if context else ''} are: "
                       f"{', '.join(valid) if valid else '(none)'}")

    def number(self, key: str, value: Any) -> float:
        """A finite number; numeric strings count because PyYAML reads `1e-4` as a string."""
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                self.fail(key, value, "must be a number")
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, value, "must be a number")
        if not math.isfinite(value):
            self.fail(key, value, "must be finite")
        return float(value)

    def integer(self, key: str, value: Any, minimum: int | None = None) -> int:
        number = value
        if isinstance(value, str):
            number = self.number(key, value)
        if isinstance(number, bool) or not isinstance(number, int | float):
            self.fail(key, value, "must be an integer")
        if isinstance(number, float) and not (math.isfinite(number) and number.is_integer()):
            self.fail(key, value, "must be an integer")
        number = int(number)
        if minimum is not None and number < minimum:
            self.fail(key, value, f"must be >= {minimum}")
        return number

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(key, value, "must be true or false")
        return value

    def choice(self, key: str, value: Any, options: Iterable[str]) -> str:
        options = tuple(options)
        if value not in options:
            self.fail(key, value, f"must be one of: {', '.join(options)}")
        return str(value)

    def pair(self, key: str, value: Any) -> tuple[Any, Any]:
        if not isinstance(value, list | tuple) or len(value) != 2:
            self.fail(key, value, "must be a list of two values [low, high]")
        return value[0], value[1]


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)
