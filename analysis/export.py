"""``python -m analysis.export RUN_DIR``: the winner's (or any trial's) config and weights.

Writes ``--out`` (default ``RUN_DIR/export/<trial>.<format>``) and, beside it, ``<out stem>.pt``:
the weights-only state dict of the trial's checkpoint (the best-PSNR one for ``--scope best``, the
latest for ``--scope last``), loadable with ``torch.load(p, weights_only=True)`` into
``EarlyFusionESPCN(frames, scale, residual)``. Both writes are atomic; an existing file is never
replaced without ``--force`` (a weights file holding exactly the same tensors is left as it is, so
several formats of one trial can share it). A trial without a kept checkpoint gets its config and
a warning.

``--format py`` writes the source repository's ``config.py`` (`analysis.source_repo`) and, beside
it, ``<out stem>.pth.tar``: the weights in that repository's checkpoint format
(`trainable.weights.source_checkpoint`; none for a residual network, which it cannot run). It
scores the weights on the test split, in our convention and the source's, for the file's header,
and prints the header's lines naming what the trial used that the source's train.py does not run.

``--retrain [--seeds N] [--trial ID] [--out DIR]`` (an alias of ``python -m analysis.retrain``)
instead retrains the winner's (or ``--trial``'s)
config and the source document's defaults from scratch to the full budget with N fresh seeds, and
scores the best validated weights of each on the held-out test split next to bicubic: numbers free
of the selection bias of the search's best validation score. It writes ``DIR/retrain.json``
(default ``RUN_DIR/retrain/``) and one ``python -m trainable`` output folder per retraining beside
it; see ``analysis.retrain``. ``--format`` does not apply to it.

Exit status: 0 written; 1 a file could not be written; 2 bad input (not a run, no finished trials,
an unknown trial id, an existing output without --force, data without a test split for --retrain).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from analysis import _io
from analysis.config_files import FORMATS, render
from analysis.record import RunFolderError
from analysis.run_folder import CHECKPOINT_STATE, EXPORT_SUBDIR, CheckpointInfo, pick_checkpoint
from analysis.tables import Run, load_run
from trainable.errors import InputError
from trainable.names import inside, safe_name

log = logging.getLogger("analysis.export")



@dataclass
class ExportResult:
    trial: str
    config_path: Path
    weights_path: Path | None
    weights_written: bool  # False when an identical weights file was already there
    checkpoint: CheckpointInfo | None
    warnings: list[str] = field(default_factory=list)
    source_weights_path: Path | None = None  # --format py: the .pth.tar beside it
    not_run: list[str] = field(default_factory=list)  # --format py: what the source does not run
    scores: list[str] = field(default_factory=list)  # --format py: the test split, both ways


def export_trial(run: Run, trial_id: str | None = None, fmt: str = "yaml", out: Path | None = None,
                 force: bool = False, scope: str = "best", score: bool = True) -> ExportResult:
    """Export a trial (default: the leaderboard winner for ``scope``). ``score`` (py only): score
    the weights on the test split for the header. Raises InputError on bad input, OSError when a
    write fails."""
    from analysis import leaderboard

    if fmt not in FORMATS:
        raise InputError(f"The value of `--format` is {fmt!r}, but must be one of {FORMATS}.")
    row = leaderboard.winner(run, scope) if trial_id is None else run.trial(trial_id)
    trial = str(row["trial"])
    notes: list[str] = []
    if row["error"]:
        notes.append(f"trial {trial} errored ({row['error_summary']}); exporting it anyway")
    if not isinstance(row["config"], str):
        raise RunFolderError(f"{run.run_dir / row['dir']}: trial {trial} reported no results, so "
                             "its full config is unknown; nothing to export")
    config = json.loads(row["config"])
    if out is None:
        export_dir = run.run_dir / EXPORT_SUBDIR
        out = inside(export_dir / f"{safe_name(trial, 'the trial id')}.{fmt}", export_dir,
                     "the export file")
    out = Path(out)
    if out.suffix == ".pt" or out.name.endswith(".pth.tar"):
        raise InputError(f"--out {out}: the {out.suffix} name is reserved for the weights file "
                         "beside it")
    checkpoint = pick_checkpoint(run.run_dir / row["dir"], scope)
    state = None
    if checkpoint is None:
        notes.append(f"trial {trial} has no kept checkpoint in {run.run_dir / row['dir']}; "
                     "writing its config without weights")
    else:
        state = _model_state(checkpoint.path / CHECKPOINT_STATE, config)
        scored_epoch = _int(row["best_epoch"] if scope == "best" else row["epochs_trained"])
        if checkpoint.epoch is not None and checkpoint.epoch != scored_epoch:
            notes.append(f"trial {trial}: no checkpoint of epoch {scored_epoch} was kept; the "
                         f"weights come from epoch {checkpoint.epoch} ({checkpoint.path.name})")
    weights = out.with_suffix(".pt") if state is not None else None
    if out.exists() and not force:
        raise InputError(f"{out}: already exists; pass --force to replace it")
    write_weights = False
    if weights is not None and state is not None:
        write_weights = _must_write_weights(weights, state, force)
    source: dict[str, Any] | None = None
    source_path, scores, missing = None, [], []
    if fmt == "py":
        from analysis import source_repo

        missing = source_repo.not_run(config)
        if state is not None and not config.get("residual"):
            source_path = out.with_name(out.stem + ".pth.tar")
            source = _source_checkpoint(state, config, row, scope, checkpoint)
            if not _must_write_weights(source_path, state, force):
                source = None
        if state is not None and score:
            scores = _test_scores(config, state)
    text = render(fmt, config, _provenance(run, row, scope, checkpoint, weights),
                  source_weights=None if source_path is None else source_path.resolve(),
                  scores=scores)
    if write_weights and weights is not None and state is not None:
        _io.write_atomic(weights, lambda tmp: _save_state(state, tmp))
    if source is not None and source_path is not None:
        _io.write_atomic(source_path, lambda tmp: _save_state(source, tmp))
    _io.write_text_atomic(out, text)
    for note in notes:
        log.warning("%s", note)
    return ExportResult(trial, out, weights, write_weights, checkpoint, notes, source_path,
                        missing, scores)


# --- private helpers -----------------------------------------------------------------------------
def _model_state(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's model weights, prefix-free, verified against the trial's architecture."""
    from trainable.weights import checkpoint_weights

    return checkpoint_weights(path, config.get("frames", 3), config.get("scale", 4),
                              config.get("residual", False))


def _source_checkpoint(state: dict[str, Any], config: dict[str, Any], row: Any, scope: str,
                       checkpoint: CheckpointInfo | None) -> dict[str, Any]:
    """The weights as the source repository's checkpoint: ``epoch`` counts the source's epochs
    (the checkpoint's samples over `source_repo.config_epochs`' epoch), ``best_psnr`` and
    ``best_ssim`` are the search's validation scores (our convention) of that checkpoint."""
    from analysis import source_repo
    from trainable.weights import source_checkpoint

    plan = source_repo.config_epochs(config)
    epoch = checkpoint.epoch if checkpoint is not None and checkpoint.epoch else 0
    samples = epoch * int(config["epoch_samples"])
    psnr, ssim = ("best_psnr", "best_ssim") if scope == "best" else ("last_psnr", "last_ssim")
    return source_checkpoint(
        state, epoch=round(samples / plan.samples_per_epoch) if plan.samples_per_epoch else 0,
        best_psnr=_float(row[psnr]) or 0.0, best_ssim=_float(row[ssim]) or 0.0)


def _test_scores(config: dict[str, Any], state: dict[str, Any]) -> list[str]:
    """The weights on the test split, in our convention and the source repository's; one line
    saying why not where the data cannot be read."""
    from trainable.config import TrainConfig
    from trainable.evaluate import (
        Convention,
        bicubic_predictor,
        model_predictor,
        score_conventions,
        source_convention,
    )
    from trainable.loop import resolve_device
    from trainable.store import open_split
    from trainable.weights import build_model

    cfg = TrainConfig.from_dict(config, where="the trial's config")
    try:
        data = open_split(cfg.data_spec, "test")
    except InputError as e:
        return [f"not scored: {e}"]
    device = resolve_device("auto")
    model = build_model(state, cfg.frames, cfg.scale, cfg.residual, Path("the checkpoint"))
    model.to(device)
    kinds = (Convention(cfg.crop_border), source_convention(cfg.scale))
    m = score_conventions(model_predictor(model), data, frames=cfg.frames, device=device,
                          conventions=kinds)
    b = score_conventions(bicubic_predictor(cfg.frames, cfg.scale), data, frames=cfg.frames,
                          device=device, conventions=kinds)
    lines = [f"{m[0].frames} frames of {data.source}, test split (held out of the search):"]
    for who, c, mine, bic in (("ours", kinds[0], m[0], b[0]),
                              ("as the source's test.py scores", kinds[1], m[1], b[1])):
        lines.append(f"PSNR {mine.psnr:.3f} dB  SSIM {mine.ssim:.4f}  bicubic {bic.psnr:.3f} dB  "
                     f"gain {mine.psnr - bic.psnr:+.3f} dB: {who} ({c.describe()})")
    return lines


def _save_state(state: dict[str, Any], tmp: Path) -> None:
    import torch

    torch.save(state, tmp)


def _must_write_weights(path: Path, state: dict[str, Any], force: bool) -> bool:
    if force or not path.exists():
        return True
    import torch

    from trainable.weights import WeightsError, read_network

    try:
        existing = read_network(path).state  # either format, in EarlyFusionESPCN's names
    except WeightsError:  # an unreadable file simply is not "the same weights"
        existing = None
    same = (isinstance(existing, dict) and existing.keys() == state.keys()
            and all(torch.equal(existing[k], state[k]) for k in state))
    if not same:
        raise InputError(f"{path}: already exists (other weights); pass --force to replace it")
    log.info("%s already holds these weights; left as it is", path)
    return False


def _provenance(run: Run, row: Any, scope: str, checkpoint: CheckpointInfo | None,
                weights: Path | None) -> dict[str, Any]:
    psnr, ssim, epoch, gain = (
        ("best_psnr", "best_ssim", "best_epoch", "gain_db") if scope == "best"
        else ("last_psnr", "last_ssim", "epochs_trained", "last_gain_db"))
    return {
        "run": run.name,
        "run_dir": str(run.run_dir.resolve()),
        "trial": str(row["trial"]),
        "trial_dir": str(row["dir"]),
        "outcome": str(row["outcome"]),
        "scope": scope,
        "psnr": _float(row[psnr]),
        "ssim": _float(row[ssim]),
        "epoch": _int(row[epoch]),
        "epochs_trained": int(row["epochs_trained"]),
        "gain_over_bicubic_db": _float(row[gain]),
        "bicubic_psnr": _float(row["bicubic_psnr"]),
        "bicubic_ssim": _float(row["bicubic_ssim"]),
        "evaluation": run.evaluation,
        "checkpoint": None if checkpoint is None else {
            "path": str(checkpoint.path.relative_to(run.run_dir)),
            "epoch": checkpoint.epoch,
            "psnr": checkpoint.psnr,
        },
        "weights": None if weights is None else weights.name,
        "command": list(run.record.command),
        "space_file": run.record.space_file,
        "versions": dict(run.record.versions),
        "exported": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):  # None, NaN, pd.NA
        return None


def _float(v: Any) -> float | None:
    try:
        return round(float(v), 6)
    except (TypeError, ValueError):
        return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.export",
        description="Export a trial's full config (and its checkpoint's weights) from a run.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder, runs/NAME")
    p.add_argument("--trial", metavar="ID", help="trial id (default: the leaderboard winner)")
    p.add_argument("--format", choices=FORMATS, default="yaml", dest="fmt",
                   help="yaml (default; TrainConfig as-is), json, or py (the source repository's "
                        "config.py, with <PATH stem>.pth.tar beside it)")
    p.add_argument("--out", type=Path, metavar="PATH",
                   help=f"config file to write (default RUN_DIR/{EXPORT_SUBDIR}/<trial>.<format>); "
                        "the weights go to <PATH stem>.pt. With --retrain: the output folder "
                        "(default RUN_DIR/retrain)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.add_argument("--no-score", action="store_true",
                   help="with --format py: do not score the weights on the test split for the "
                        "header (it decodes the test split once)")
    p.add_argument("--scope", choices=("best", "last"), default="best",
                   help="winner and checkpoint by best validated PSNR (default) or by the last one")
    p.add_argument("--retrain", action="store_true",
                   help="retrain the winner's (or --trial's) config and the defaults to the full "
                        "budget with fresh seeds and score both on the test split (retrain.json)")
    p.add_argument("--seeds", type=_io.positive_int, metavar="N",
                   help="with --retrain: seeds per config (default 1; seeds 1000, 1001, ... that "
                        "the search did not use)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)
    if args.retrain:
        return _main_retrain(args)
    if args.seeds is not None:
        print("error: --seeds only applies to --retrain", file=sys.stderr)
        return 2
    result, rc = _io.guarded(lambda: export_trial(load_run(args.run_dir), args.trial, args.fmt,
                                               args.out, args.force, args.scope,
                                               score=not args.no_score))
    if rc:
        return rc
    print(f"trial {result.trial}: wrote {result.config_path}")
    if result.weights_path is not None:
        kept = "" if result.weights_written else " (already there, same weights)"
        print(f"weights: {result.weights_path}{kept}")
    if result.source_weights_path is not None:
        print(f"weights for the source repository: {result.source_weights_path}")
    for line in result.not_run:
        print(f"NOT RUN by the source repository's train.py: {line}")
    for line in result.scores:
        print(f"test: {line}")
    print(next_step(result, args.run_dir))
    return 0


def next_step(result: ExportResult, run_dir: Path) -> str:
    """One line with the command that uses what was written."""
    import shlex

    from trainable.upscale import command_line

    config = result.config_path
    if result.weights_path is None:  # no kept checkpoint: train the config to get weights
        if config.suffix == ".py":
            return (f"no weights were kept; train this configuration with:  python -m analysis."
                    f"retrain {shlex.quote(str(run_dir))} --trial {result.trial}")
        return ("no weights were kept; train this configuration with:  " + shlex.join(
            ["python", "-m", "trainable", "--config", str(config), "--out",
             str(config.with_suffix("")) + "-trained"]))
    if config.suffix == ".py":  # for the source repository
        return (f"in the source repository: cp {shlex.quote(str(config))} config.py && python "
                "train.py   (or python test.py: it scores the .pth.tar exported beside it)")
    return "upscale a video:  " + command_line(result.weights_path, config, "VIDEO",
                                               config.with_name(f"{config.stem}-compare.mp4"),
                                               compare=True)


def _main_retrain(args: argparse.Namespace) -> int:
    """``--retrain``: kept as an alias of ``python -m analysis.retrain``."""
    from analysis import retrain

    return retrain.run_command(args.run_dir, args.trial, args.seeds or 1, args.out, args.force,
                               args.scope)


if __name__ == "__main__":
    raise SystemExit(main())
