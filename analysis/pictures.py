"""The report's pictures: one crop of three test frames shown five ways.

LR (nearest-neighbour enlarged), bicubic, the source document's defaults (the reference run's
weights, else the defaults trial's; left out with a note when neither kept a checkpoint), the
winner and the ground truth, each labelled with its PSNR on the crop (Y, 8-bit, no border crop).
The three frames are spread evenly over the first clip group of the test split; the crop is where
the winner and bicubic differ most (largest mean absolute difference over the three frames), so
the picture shows what the search bought rather than a flat patch of sky. A few frames, on the
CPU: cheap next to the rest of the report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from analysis import figures, leaderboard
from analysis.tables import Run
from trainable.errors import InputError
from trainable.imaging import upscale_bicubic
from trainable.metrics import psnr, to_uint8
from trainable.model import EarlyFusionESPCN
from trainable.store import SplitData

log = logging.getLogger(__name__)

N_FRAMES = 3
CROP = 72  # HR pixels per side, shrunk to fit smaller frames
_STRIDE = 4  # HR pixels between candidate crop positions


@dataclass(frozen=True)
class Pictures:
    """What the picture shows, for the report's text: the PSNRs beside the image."""

    path: Path | None  # the PNG, None when no picture could be drawn
    frames: list[str] = field(default_factory=list)  # "clip0 frame 3", one per row
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, height, width in HR pixels
    psnr: dict[str, list[float]] = field(default_factory=dict)  # panel -> PSNR per frame
    notes: list[str] = field(default_factory=list)  # panels left out, and why


def open_test_split(config: dict[str, Any]) -> SplitData:
    """The test split the winner's config names (decoded into the frame cache once)."""
    from trainable.config import TrainConfig
    from trainable.store import open_split

    cfg = TrainConfig.from_dict(config, where="the winner's config")
    return open_split(cfg.data, "test", scale=cfg.scale, data_lr=cfg.data_lr,
                      cache_dir=cfg.cache_dir)


def draw(run: Run, winner: str, path: Path, scope: str = "best",
         data: SplitData | None = None) -> Pictures:
    """Draw the comparison into ``path``; ``data`` defaults to the winner's test split. Anything
    missing (weights, data) gives a Pictures without a path and a note saying why."""
    row = run.trial(winner)
    if not isinstance(row["config"], str):
        return Pictures(None, notes=[f"the winner {winner} reported no config"])
    config = json.loads(row["config"])
    try:
        models = _models(run, row, config, scope)
        if "winner" not in models:
            return Pictures(None, notes=[f"the winner {winner} kept no checkpoint"])
        data = data if data is not None else open_test_split(config)
    except InputError as e:  # RunFolderError and DataError are InputErrors
        return Pictures(None, notes=[str(e)])
    notes = [] if "defaults" in models else [
        "no defaults panel: neither a reference run nor a defaults trial kept a checkpoint"]
    return _draw(models, data, path, notes)


# --- private helpers -----------------------------------------------------------------------------
def _models(run: Run, row: Any, config: dict[str, Any], scope: str
            ) -> dict[str, EarlyFusionESPCN]:
    from analysis.run_folder import CHECKPOINT_STATE, pick_checkpoint
    from trainable.weights import build_model, checkpoint_weights

    found = {"winner": (row, config)}
    trials = run.trials
    refs = trials[leaderboard.is_reference(trials)]
    defaults = refs if not refs.empty else trials[trials["is_defaults"].astype(bool)]
    for _, d in defaults.iterrows():
        if isinstance(d["config"], str):
            found["defaults"] = (d, json.loads(d["config"]))
            break
    models = {}
    for name, (r, cfg) in found.items():
        checkpoint = pick_checkpoint(run.run_dir / r["dir"], scope)
        if checkpoint is None:
            continue
        shape = (cfg.get("frames", 3), cfg.get("scale", 4), cfg.get("residual", False))
        state = checkpoint_weights(checkpoint.path / CHECKPOINT_STATE, *shape)
        models[name] = build_model(state, *shape, checkpoint.path)
    return models


def _targets(data: SplitData) -> tuple[int, list[tuple[int, int]]]:
    """(group index, N_FRAMES (clip, frame) pairs spread evenly over that group's targets)."""
    g = data.groups[0]
    pairs = [(i, c) for i in range(g.hr.shape[0]) for c in g.centres]
    picks = np.linspace(0, len(pairs) - 1, min(N_FRAMES, len(pairs))).round().astype(int)
    return 0, [pairs[k] for k in dict.fromkeys(picks.tolist())]


def _window(lr: np.ndarray, clip: int, centre: int, frames: int) -> torch.Tensor:
    t_len = lr.shape[1]
    times = [min(max(centre + k - frames // 2, 0), t_len - 1) for k in range(frames)]
    return torch.from_numpy(np.stack([lr[clip, t] for t in times]))[None].float().div_(255.0)


def _draw(models: dict[str, EarlyFusionESPCN], data: SplitData, path: Path,
          notes: list[str]) -> Pictures:
    gi, targets = _targets(data)
    g, s = data.groups[gi], data.scale
    truth = torch.from_numpy(np.stack([g.hr[c, t] for c, t in targets]))  # (n, H, W) uint8
    lr = torch.from_numpy(np.stack([g.lr[c, t] for c, t in targets]))
    outputs: dict[str, torch.Tensor] = {
        "LR (nearest)": lr.repeat_interleave(s, 1).repeat_interleave(s, 2),
        "bicubic": to_uint8(upscale_bicubic(lr[:, None].float() / 255.0, s)[:, 0]),
    }
    with torch.no_grad():
        for name in ("defaults", "winner"):
            if name in models:
                m = models[name]
                outputs[name] = torch.cat([to_uint8(m.predict(_window(g.lr, c, t, m.frames))[:, 0])
                                           for c, t in targets])
    outputs["ground truth"] = truth
    top, left, h, w = _crop(outputs["winner"], outputs["bicubic"], s)
    crops = {k: v[:, top : top + h, left : left + w] for k, v in outputs.items()}
    scores = {k: psnr(v, crops["ground truth"]).tolist() for k, v in crops.items()
              if k != "ground truth"}
    labels = [f"{data.groups[gi].names[c]} frame {t}" for c, t in targets]
    figures.crop_comparison(crops, scores, labels, (top, left, h, w), path)
    return Pictures(path, labels, (top, left, h, w), scores, notes)


def _crop(winner: torch.Tensor, bicubic: torch.Tensor, scale: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the CROP-sized window with the largest mean |winner - bicubic| over
    the frames; top and left on the LR grid, so the LR panel shows whole LR pixels."""
    _, big_h, big_w = winner.shape
    h = min(CROP, big_h) // scale * scale
    w = min(CROP, big_w) // scale * scale
    diff = (winner.float() - bicubic.float()).abs().mean(0)[None, None]
    stride = max(scale, _STRIDE // scale * scale)
    means = F.avg_pool2d(diff, (h, w), stride=stride)[0, 0]
    k = int(means.argmax())
    return (k // means.shape[1]) * stride, (k % means.shape[1]) * stride, h, w
