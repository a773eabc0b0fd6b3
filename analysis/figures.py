"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot state,
no display needed). Each function writes one PNG and returns its path.

Diverged trials report PSNR 0 dB; the PSNR axes start just below the lowest real value and say so,
instead of squashing every curve into the top of the plot. Every PSNR axis holds the bicubic
baseline as a dashed red line with the region below it shaded, so a gain reads at a glance.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from optuna.distributions import BaseDistribution, CategoricalDistribution

from analysis import _io
from analysis.importance import Importance, is_log
from analysis.leaderboard import counted, format_value
from analysis.tables import Run

_STYLE = {  # outcome family -> (colour, line style, label)
    "completed": ("tab:blue", "-", "completed"),
    "stopped": ("tab:gray", "-", "stopped early (ASHA)"),
    "diverged": ("tab:orange", "-", "diverged"),
    "infeasible": ("tab:brown", "-", "infeasible"),
    "error": ("tab:red", ":", "error (never ranked)"),
    "running": ("tab:purple", "-", "running/interrupted"),
    "no results": ("tab:gray", ":", "no results"),
}
_DPI = 110
PANELS = ("LR (nearest)", "bicubic", "defaults", "winner", "ground truth")  # crop_comparison


def learning_curves(run: Run, winner: str, path: Path) -> Path:
    """PSNR vs epoch for every trial; ASHA rungs as vertical lines; winner and defaults marked."""
    fig = _figure(9, 5.5)
    ax = fig.subplots()
    outcomes = dict(zip(run.trials["trial"], run.trials["outcome"], strict=True))
    defaults = set(run.trials.loc[run.trials["is_defaults"], "trial"])
    used = set()
    for trial, rows in run.results.groupby("trial", sort=False):
        family = _family(outcomes.get(trial, "running"))
        colour, style, _ = _STYLE[family]
        used.add(family)
        if trial == winner or trial in defaults:
            continue  # drawn on top below
        ax.plot(rows["epoch"], rows["psnr"], style, color=colour, alpha=0.5, lw=1, marker="o",
                ms=3)
    for trial in sorted(defaults):
        rows = run.results[run.results["trial"] == trial]
        ax.plot(rows["epoch"], rows["psnr"], "--", color="tab:green", lw=2, marker="o", ms=4,
                label=f"defaults ({trial})")
    rows = run.results[run.results["trial"] == winner]
    ax.plot(rows["epoch"], rows["psnr"], "-", color="black", lw=2.5, marker="o", ms=5,
            label=f"winner ({winner})")
    for k, rung in enumerate(run.rungs, start=1):
        ax.axvline(rung, color="tab:cyan", lw=1, ls="-.", alpha=0.8)
        ax.annotate(f"rung {k}", (rung, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="tab:cyan")
    _bicubic_line(ax, run)
    handles = [Line2D([], [], color=_STYLE[f][0], ls=_STYLE[f][1], label=_STYLE[f][2])
               for f in _STYLE if f in used]
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], *handles], fontsize=8, loc="lower right")
    _psnr_limits(ax, run.results["psnr"], run)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    samples = run.record.budget.epoch_samples if run.record.budget else "?"
    ax.set_xlabel(f"epoch ({samples} training samples each)")
    ax.set_ylabel("validation PSNR (dB)")
    ax.set_title(f"{run.name}: learning curves of {counted(run.trials)}")
    return _save(fig, path)


def best_so_far(run: Run, path: Path) -> Path:
    """Best PSNR found so far against the training samples all trials had consumed by then (and
    against wall-clock time), reports taken in the order they happened."""
    fig = _figure(11, 4.5)
    ax_samples, ax_time = fig.subplots(1, 2, sharey=True)
    res = run.results.merge(run.trials[["trial", "error", "started_at"]], on="trial", how="left")
    res = res.sort_values(["timestamp", "started_at", "epoch"], kind="mergesort",
                          na_position="last")
    step = res.groupby("trial")["samples"].diff().fillna(res["samples"]).astype(float)
    samples = step.cumsum()
    valid = res["psnr"].where(~res["error"].astype(bool))
    best = valid.cummax()
    start = run.trials["started_at"].min()
    minutes = (res["timestamp"] - start) / 60.0
    for ax, x, label in ((ax_samples, samples, "training samples consumed by all trials"),
                         (ax_time, minutes, "wall-clock minutes since the first trial started")):
        ax.step(x, best, where="post", color="black", lw=2, label="best so far")
        ax.scatter(x, valid.where(valid > 0), s=6, color="tab:blue", alpha=0.35,
                   label="each validation")
        ax.set_xlabel(label)
        _bicubic_line(ax, run)
        _psnr_limits(ax, run.results["psnr"], run)
    ax_samples.set_ylabel("validation PSNR (dB)")
    ax_samples.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{run.name}: best-so-far PSNR (errored trials' samples count, their PSNR "
                 "does not)", fontsize=10)
    return _save(fig, path)


def parallel_coordinates(run: Run, dists: dict[str, BaseDistribution], value_column: str,
                         winner: str, path: Path) -> Path | None:
    """One line per finished trial through its (normalised) searched values and its PSNR."""
    names = list(dists)
    if not names:
        return None
    trials = run.trials[~run.trials["error"].astype(bool)]
    trials = trials[np.isfinite(trials[value_column].astype(float))]
    if trials.empty:
        return None
    fig = _figure(max(6.0, 1.8 * (len(names) + 1)), 5)
    ax = fig.subplots()
    columns, labels = [], []
    for name in names:
        norm, ticks = _normalise(trials[run.scalar_columns[name]], dists[name])
        columns.append(norm)
        labels.append(ticks)
    value = trials[value_column].astype(float)
    positive = value[value > 0]
    bicubic = _bicubic(run)
    shown = [*positive, *([bicubic] if bicubic is not None else [])]
    lo, hi = (min(shown), max(shown)) if shown else (0.0, 1.0)
    columns.append(((value - lo) / (hi - lo) if hi > lo else value * 0 + 0.5).clip(lower=-0.05))
    labels.append([(0.0, f"{lo:.2f}"), (1.0, f"{hi:.2f}")])
    data = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    colours = colormaps["viridis"](np.clip(data[:, -1], 0, 1))
    xs = np.arange(len(names) + 1)
    for row, colour, trial in zip(data, colours, trials["trial"], strict=True):
        lw, alpha = (3.0, 1.0) if trial == winner else (1.0, 0.6)
        ax.plot(xs, row, color="black" if trial == winner else colour, lw=lw, alpha=alpha)
    if bicubic is not None and hi > lo:
        b = (bicubic - lo) / (hi - lo)
        ax.plot([xs[-1] - 0.25, xs[-1] + 0.25], [b, b], "--", color="tab:red", lw=1.5)
        ax.fill_between([xs[-1] - 0.25, xs[-1] + 0.25], -0.08, b, color="tab:red", alpha=0.07,
                        lw=0)
        ax.annotate(f"bicubic {bicubic:.2f}", (xs[-1], b), xytext=(-4, 0),
                    textcoords="offset points", fontsize=7, color="tab:red", ha="right",
                    va="center")
    for x, ticks in zip(xs, labels, strict=True):
        ax.axvline(x, color="black", lw=0.8)
        for y, text in ticks:
            ax.annotate(text, (x, y), xytext=(4, 0), textcoords="offset points", fontsize=7,
                        va="center")
    ax.set_xticks(xs, [*names, "PSNR (dB)"], fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.08)
    ax.set_title(f"{run.name}: searched parameters vs {value_column} (winner in black; "
                 f"log axes for log-scale parameters)", fontsize=10)
    return _save(fig, path)


def importance_bars(imp: Importance, path: Path) -> Path | None:
    if not imp.values:
        return None
    names = list(imp.values)[::-1]
    fig = _figure(7, 0.5 * len(names) + 1.5)
    ax = fig.subplots()
    ax.barh(names, [imp.values[n] for n in names], color="tab:blue")
    ax.set_xlabel("share of importance")
    ax.set_title(f"parameter importance ({imp.evaluator}, {imp.n_trials} trials)", fontsize=10)
    return _save(fig, path)


def psnr_vs_params(run: Run, dists: dict[str, BaseDistribution], value_column: str, winner: str,
                   path: Path) -> Path | None:
    """One scatter per searched parameter: its value against the trial's PSNR."""
    names = list(dists)
    if not names:
        return None
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _figure(4.2 * ncols, 3.4 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    trials = run.trials
    value = trials[value_column].astype(float)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes, names, strict=False):
        dist, col = dists[name], run.scalar_columns[name]
        x = trials[col]
        if isinstance(dist, CategoricalDistribution):
            index = {c: i for i, c in enumerate(dist.choices)}
            x = x.map(lambda v, index=index: index.get(v, np.nan)).astype(float)
            x = x + rng.uniform(-0.12, 0.12, len(x))
            ax.set_xticks(range(len(dist.choices)), [format_value(c) for c in dist.choices])
        elif is_log(dist):
            ax.set_xscale("log")
        for family, (colour, _, label) in _STYLE.items():
            mask = trials["outcome"].map(_family) == family
            if mask.any():
                ax.scatter(x[mask], value[mask], s=16, color=colour, label=label,
                           marker="x" if family == "error" else "o", alpha=0.8)
        win = trials["trial"] == winner
        ax.scatter(x[win], value[win], s=90, facecolors="none", edgecolors="black", lw=2,
                   label="winner")
        _bicubic_line(ax, run)
        _psnr_limits(ax, value, run)
        ax.set_xlabel(name)
        ax.set_ylabel(f"{value_column} (dB)")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{run.name}: PSNR against each searched parameter", fontsize=10)
    return _save(fig, path)


def crop_comparison(crops: dict[str, list[Any]], scores: dict[str, list[float]],
                    labels: list[str], where: list[tuple[int, int, int, int]], path: Path) -> Path:
    """One row per crop, one column per way of making it (``crops``: name -> one (h, w) uint8
    tensor per row), each titled with its PSNR on the crop (``scores``; none for the ground
    truth); ``labels`` name each row's frame and why its crop was chosen, ``where`` gives each
    crop's (top, left, h, w) in HR pixels."""
    names = [p for p in PANELS if p in crops]
    rows = len(labels)
    fig = _figure(2.2 * len(names) + 0.6, 2.4 * rows + 0.5)
    axes = np.atleast_2d(fig.subplots(rows, len(names), squeeze=False))
    for r, label in enumerate(labels):
        top, left, _, _ = where[r]
        for c, name in enumerate(names):
            ax = axes[r, c]
            ax.imshow(crops[name][r].numpy(), cmap="gray", vmin=0, vmax=255,
                      interpolation="nearest")
            title = name if name == "ground truth" else f"{name}\n{scores[name][r]:.2f} dB"
            ax.set_title(title, fontsize=8, fontweight="bold" if name == "winner" else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{label}\nrow {top}, column {left}", fontsize=8)
    h, w = where[0][2:] if where else (0, 0)
    fig.suptitle(f"{h}x{w} HR crops of different clips: where the winner gains most over "
                 "bicubic, and where it loses most (Y, PSNR on the crop)", fontsize=9)
    return _save(fig, path)


# --- private helpers -----------------------------------------------------------------------------
def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    return _io.write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))


def _family(outcome: str) -> str:
    if outcome.startswith("stopped"):
        return "stopped"
    return outcome if outcome in _STYLE else "running"


def _bicubic(run: Run) -> float | None:
    """The run's bicubic PSNR on the validation split (the median over trials' records of it)."""
    bicubic = run.trials["bicubic_psnr"].dropna()
    return None if bicubic.empty else float(bicubic.median())


def _bicubic_line(ax: Axes, run: Run) -> None:
    bicubic = _bicubic(run)
    if bicubic is not None:
        ax.axhline(bicubic, color="tab:red", lw=1, ls="--", alpha=0.7,
                   label=f"bicubic {bicubic:.2f} dB")


def _psnr_limits(ax: Axes, psnr: pd.Series, run: Run) -> None:
    """Y limits around the real PSNRs and the bicubic line, so the baseline is always in view,
    however far above or below it every trial lies; the region below bicubic is shaded."""
    real = psnr[np.isfinite(psnr) & (psnr > 0)]
    bicubic = _bicubic(run)
    shown = [*real, *([bicubic] if bicubic is not None else [])]
    if not shown:
        return
    low = min(shown) - 0.5
    if bicubic is not None:
        ax.axhspan(low, bicubic, color="tab:red", alpha=0.07, lw=0, zorder=0)
        ax.annotate("shaded: below bicubic", (0.5, 0.01), xycoords="axes fraction", fontsize=7,
                    color="tab:red", ha="center", alpha=0.8)
    ax.set_ylim(low, max(shown) + 0.4)
    if (psnr[np.isfinite(psnr)] < low).any():
        ax.annotate("diverged trials (0 dB) lie below the axis", (0.01, 0.01),
                    xycoords="axes fraction", fontsize=7, color="tab:orange")


def _normalise(values: pd.Series, dist: BaseDistribution,
               ) -> tuple[pd.Series, list[tuple[float, str]]]:
    """Map a parameter's values onto [0, 1] and return the tick labels for its axis."""
    if isinstance(dist, CategoricalDistribution):
        n = max(len(dist.choices) - 1, 1)
        index = {c: i for i, c in enumerate(dist.choices)}
        ticks = [(i / n, format_value(c)) for i, c in enumerate(dist.choices)]
        return values.map(lambda v: index.get(v, np.nan) / n), ticks
    v = values.astype(float)
    lo, hi = float(dist.low), float(dist.high)
    if is_log(dist):
        v, lo_t, hi_t = np.log10(v), math.log10(lo), math.log10(hi)
    else:
        lo_t, hi_t = lo, hi
    norm = (v - lo_t) / (hi_t - lo_t) if hi_t > lo_t else v * 0 + 0.5
    return norm, [(0.0, format_value(lo)), (1.0, format_value(hi))]
