"""The one strict YAML reader: config files (`python -m trainable --config`), search-space files
(`tune.run --space`) and ``--set`` values all go through it.

It lives in `trainable`, the bottom layer, so `tune` can import it without `trainable` importing
`tune`. Safe loading only (no Python objects), and it refuses what PyYAML would accept silently or
fail on with a traceback: a duplicate key (PyYAML keeps the last one), a file that is not UTF-8
text, a binary file. Each failure is a `ConfigError` of one line naming the file (and the line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from trainable.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key (a list); construct_mapping names it below
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {first + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def read_yaml(path: Path, kind: str) -> Any:
    """Parse the file at ``path``; ``kind`` ("config file", "search-space file") names it in errors.

    Messages read "PATH: ..." or "PATH:LINE: invalid YAML: ...", always on one line.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {kind} ({e.strerror or e})") from None
    if b"\x00" in data:
        raise ConfigError(f"{path}: a binary file (NUL byte at offset {data.index(0)}), not "
                          f"YAML text; a {kind} must be UTF-8 YAML text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start}); a {kind} must be "
                          "UTF-8 YAML text") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, where: str, *, lines: bool = True) -> Any:
    """Parse ``text`` (a file's contents, a ``--set`` value); ``where`` starts every message,
    followed by ":LINE" where the error has one and ``lines`` (a file) asks for it."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.reader.ReaderError as e:
        char = chr(e.character) if isinstance(e.character, int) else e.character
        raise ConfigError(f"{where}: not YAML text (character {char!r} at position "
                          f"{e.position} is not allowed)") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f":{mark.line + 1}" if mark is not None and lines else ""
        raise ConfigError(f"{where}{at}: invalid YAML: {_one_line(e.problem or e)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML: {_one_line(e)}") from None


def _one_line(problem: object) -> str:
    return " ".join(str(problem).split())
