"""Train one early-fusion video ESPCN configuration: `train(cfg, out) -> Summary`."""

from trainable.train import SplitScores, Summary, train

__all__ = ["SplitScores", "Summary", "train"]
