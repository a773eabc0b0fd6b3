"""Train one early-fusion video ESPCN configuration: `train(cfg, out) -> Summary`.

The names load on first use, so ``import trainable.config`` (as tune and analysis do) neither
pulls in torch nor makes the package import its own modules back (an import cycle).
"""

from importlib import import_module
from typing import Any

__all__ = ["SplitScores", "Summary", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("trainable.training"), name)
    raise AttributeError(f"module 'trainable' has no attribute {name!r}")
