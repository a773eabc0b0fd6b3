"""The report's pictures: crops of test frames from different clips, shown five ways.

LR (nearest-neighbour enlarged), bicubic, the source document's defaults (the reference run's
weights, else the defaults trial's; left out with a note when neither kept a checkpoint), the
winner and the ground truth, each labelled with its PSNR on the crop (Y, 8-bit, no border crop).

One row per clip, for up to three clips taken round-robin over the split's clip groups (the
built-in data: one group per video) and spread evenly within a group, each at its middle target
frame; each row's crop is where the winner gains most over bicubic on that frame (the largest
drop of the squared error, so a textured region, not a flat patch of sky where a tiny error
halves). One more row shows where the winner loses most to bicubic over those frames, when it
loses anywhere. A few frames on the CPU: cheap next to the rest of the report.
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
    """What the picture shows, for the report's text: one entry per row, top to bottom."""

    path: Path | None  # the PNG, None when no picture could be drawn
    frames: list[str] = field(default_factory=list)  # "bikes/0003 frame 3", one per row
    crops: list[tuple[int, int, int, int]] = field(default_factory=list)  # top, left, h, w (HR)
    # Why each crop: "gains most" (or "loses least", where the winner gains nowhere on the
    # frame), and "loses most" for the last row when it loses anywhere.
    kinds: list[str] = field(default_factory=list)
    psnr: dict[str, list[float]] = field(default_factory=dict)  # panel -> PSNR per row
    notes: list[str] = field(default_factory=list)  # panels left out, and why


def open_test_split(config: dict[str, Any]) -> SplitData:
    """The test split the winner's config names (decoded into the frame cache once)."""
    from trainable.config import TrainConfig
    from trainable.store import open_split

    cfg = TrainConfig.from_dict(config, where="the winner's config")
    return open_split(cfg.data_spec, "test")


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


def _targets(data: SplitData) -> list[tuple[int, int, int]]:
    """Up to N_FRAMES (group, clip, frame) from different clips: round-robin over the groups,
    spread evenly over each group's clips, each clip's middle target frame."""
    queues = []
    for gi, g in enumerate(data.groups):
        n = g.hr.shape[0]
        order = np.linspace(0, n - 1, min(N_FRAMES, n)).round().astype(int)
        queues.append([(gi, int(c), g.centres[len(g.centres) // 2]) for c in dict.fromkeys(order)])
    picks: list[tuple[int, int, int]] = []
    while len(picks) < N_FRAMES and any(queues):
        for q in queues:
            if q and len(picks) < N_FRAMES:
                picks.append(q.pop(0))
    return picks


def _window(lr: np.ndarray, clip: int, centre: int, frames: int) -> torch.Tensor:
    t_len = lr.shape[1]
    times = [min(max(centre + k - frames // 2, 0), t_len - 1) for k in range(frames)]
    return torch.from_numpy(np.stack([lr[clip, t] for t in times]))[None].float().div_(255.0)


def _frame_outputs(models: dict[str, EarlyFusionESPCN], data: SplitData, gi: int, clip: int,
                   t: int) -> dict[str, torch.Tensor]:
    """Every panel of one whole frame, (H, W) uint8."""
    g, s = data.groups[gi], data.scale
    lr = torch.from_numpy(np.array(g.lr[clip, t]))  # a copy: the cache is a read-only memmap
    out = {"LR (nearest)": lr.repeat_interleave(s, 0).repeat_interleave(s, 1),
           "bicubic": to_uint8(upscale_bicubic(lr[None, None].float() / 255.0, s)[0, 0])}
    with torch.no_grad():
        for name in ("defaults", "winner"):
            if name in models:
                m = models[name]
                out[name] = to_uint8(m.predict(_window(g.lr, clip, t, m.frames))[0, 0])
    out["ground truth"] = torch.from_numpy(np.array(g.hr[clip, t]))
    return out


def _draw(models: dict[str, EarlyFusionESPCN], data: SplitData, path: Path,
          notes: list[str]) -> Pictures:
    rows: list[tuple[str, str, tuple[int, int, int, int], dict[str, torch.Tensor]]] = []
    worst: tuple[float, str, tuple[int, int, int, int], dict[str, torch.Tensor]] | None = None
    for gi, clip, t in _targets(data):
        outputs = _frame_outputs(models, data, gi, clip, t)
        label = f"{data.groups[gi].names[clip]} frame {t}"
        gain, loss = windows_of_change(outputs["winner"], outputs["bicubic"],
                                       outputs["ground truth"], data.scale)
        # A winner worse than bicubic everywhere on the frame still shows where it comes closest.
        rows.append((label, "gains most" if gain[0] > 0 else "loses least", gain[1], outputs))
        if loss is not None and (worst is None or loss[0] < worst[0]):
            worst = (loss[0], label, loss[1], outputs)
    if worst is not None:
        rows.append((worst[1], "loses most", worst[2], worst[3]))
    crops = {name: [o[name][top : top + h, left : left + w] for _, _, (top, left, h, w), o in rows]
             for name in rows[0][3]}
    scores = {name: [float(psnr(c[None], truth[None])[0])
                     for c, truth in zip(v, crops["ground truth"], strict=True)]
              for name, v in crops.items() if name != "ground truth"}
    labels = [f"{label}\n{kind} ({scores['winner'][k] - scores['bicubic'][k]:+.2f} dB)"
              for k, (label, kind, _, _) in enumerate(rows)]
    figures.crop_comparison(crops, scores, labels, [r[2] for r in rows], path)
    return Pictures(path, [r[0] for r in rows], [r[2] for r in rows], [r[1] for r in rows],
                    scores, notes)


def windows_of_change(winner: torch.Tensor, bicubic: torch.Tensor, truth: torch.Tensor,
                      scale: int) -> tuple[tuple[float, tuple[int, int, int, int]],
                                           tuple[float, tuple[int, int, int, int]] | None]:
    """The CROP-sized windows (top, left, h, w) of one (H, W) frame where the winner removes the
    most squared error relative to bicubic and where it adds the most, each with that change
    (bicubic's minus the winner's, in mean squared 8-bit levels); the second is None when the
    winner is nowhere worse. Windows start on the LR grid, so the LR panel shows whole pixels."""
    big_h, big_w = truth.shape
    h = min(CROP, big_h) // scale * scale
    w = min(CROP, big_w) // scale * scale
    err_w = (winner.float() - truth.float()) ** 2
    err_b = (bicubic.float() - truth.float()) ** 2
    stride = max(scale, _STRIDE // scale * scale)
    change = F.avg_pool2d((err_b - err_w)[None, None], (h, w), stride=stride)[0, 0]

    def window(k: int) -> tuple[int, int, int, int]:
        return (k // change.shape[1]) * stride, (k % change.shape[1]) * stride, h, w

    best, worst = int(change.argmax()), int(change.argmin())
    lost = float(change.flatten()[worst])
    return ((float(change.flatten()[best]), window(best)),
            (lost, window(worst)) if lost < 0 else None)
