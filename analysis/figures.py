"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot state,
no display needed). Each function writes one PNG and returns its path.

Diverged trials report PSNR 0 dB; the PSNR axes start just below the lowest real value and say so,
instead of squashing every curve into the top of the plot. Every PSNR axis holds the bicubic
baseline as a dashed red line with the region below it shaded, so a gain reads at a glance.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator
from matplotlib.transforms import blended_transform_factory
from optuna.distributions import CategoricalDistribution

from analysis import _io, leaderboard
from analysis.importance import Distribution, Importance, is_log
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
# One colour per choice of a conditional choice (no green: the reference; no red: bicubic).
BRANCH_COLOURS = ("tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                  "tab:cyan")
PANELS = ("LR (nearest)", "bicubic", "defaults", "winner", "ground truth")  # crop_comparison


def learning_curves(run: Run, winner: str, path: Path) -> Path:
    """PSNR vs epoch for every trial, on the trials' own scale; ASHA's rungs as vertical lines,
    each with how many trials were within noise of its cut (`analysis.ties`); a trial stopped
    at a rung ends in a hollow marker, the trials stopped at one rung spread sideways so that
    each shows. The reference run, where its PSNRs lie far below the trials', gets a panel of
    its own underneath."""
    refs = _reference_ids(run)
    searched = run.results[~run.results["trial"].isin(refs)]
    reference = run.results[run.results["trial"].isin(refs)]
    apart = _off_scale(reference["psnr"], searched["psnr"], run)
    fig = _figure(9, 6.5 if apart else 5.5)
    if apart:
        ax, ref_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        ax, ref_ax = fig.subplots(), None
    outcomes = dict(zip(run.trials["trial"], run.trials["outcome"], strict=True))
    defaults = set(run.trials.loc[run.trials["is_defaults"], "trial"]) - refs
    shift = _rung_spread(run, searched, outcomes)
    used: set[str] = set()
    for trial, rows in searched.groupby("trial", sort=False):
        if trial == winner or trial in defaults:
            continue  # drawn on top below
        family = _family(outcomes.get(str(trial), "running"))
        colour, style, _ = _STYLE[family]
        used.add(family)
        x = rows["epoch"].astype(float).to_numpy(copy=True)
        x[-1] += shift.get(str(trial), 0.0)
        ax.plot(x, rows["psnr"], style, color=colour, alpha=0.6, lw=1, marker="o", ms=3)
        if family == "stopped":  # where it was stopped
            ax.plot(x[-1:], rows["psnr"].iloc[-1:], "o", ms=6, mfc="white", mec=colour, mew=1.5)
    for trial in sorted(defaults):
        rows = searched[searched["trial"] == trial]
        ax.plot(rows["epoch"], rows["psnr"], "--", color="tab:green", lw=2, marker="o", ms=4,
                label=f"defaults ({trial})")
    rows = searched[searched["trial"] == winner]
    ax.plot(rows["epoch"], rows["psnr"], "-", color="black", lw=2.5, marker="o", ms=5,
            label=f"winner ({winner})")
    for trial in sorted(refs):
        rows = reference[reference["trial"] == trial]
        (ref_ax or ax).plot(rows["epoch"], rows["psnr"], "--", color="tab:green", lw=2,
                            marker="D", ms=4, label="reference run (source defaults)")
    cuts = {c.epoch: c for c in leaderboard.rung_story(run)}
    for axis in (ax, ref_ax):
        if axis is not None:
            for rung in run.rungs:
                axis.axvline(rung, color="tab:cyan", lw=1, ls="-.", alpha=0.8)
    if run.rungs:  # named above the axes, where no curve or the bicubic line can strike them
        top = ax.secondary_xaxis("top")
        top.set_xticks(run.rungs, [_rung_label(k, cuts.get(e)) for k, e in
                                   enumerate(run.rungs, 1)])
        top.tick_params(labelsize=8, colors="tab:cyan", length=0)
    _bicubic_line(ax, run)
    _psnr_limits(ax, searched["psnr"] if apart else run.results["psnr"], run)
    if ref_ax is not None:
        _bicubic_line(ref_ax, run)
        _psnr_limits(ref_ax, reference["psnr"], run, note=False)
        ref_ax.set_ylabel("reference run\n(own scale, dB)", fontsize=8)
        ref_ax.tick_params(labelsize=8)
    handles = [Line2D([], [], color=_STYLE[f][0], ls=_STYLE[f][1], label=_STYLE[f][2])
               for f in _STYLE if f in used]
    if "stopped" in used:
        handles.append(Line2D([], [], ls="", marker="o", mfc="white", mec=_STYLE["stopped"][0],
                              mew=1.5, label="stopped here (one rung's spread sideways)"))
    legend: dict[str, Any] = {}  # one entry per label, whichever panel drew it
    for axis in (ax, ref_ax):
        if axis is not None:
            for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
    legend.update({str(h.get_label()): h for h in handles})
    fig.legend(list(legend.values()), list(legend), fontsize=8, loc="outside lower center",
               ncols=3, frameon=False)
    (ref_ax or ax).xaxis.set_major_locator(MaxNLocator(integer=True))
    samples = run.record.budget.epoch_samples if run.record.budget else "?"
    (ref_ax or ax).set_xlabel(f"epoch ({samples} training samples each)")
    ax.set_ylabel("validation PSNR (dB)")
    ax.set_title(f"{run.name}: learning curves of {counted(run.trials)}")
    return _save(fig, path)


def _rung_label(k: int, cut: Any) -> str:
    """"rung 1", and how many trials were within noise of its cut where that is known."""
    if cut is None or not cut.marks:
        return f"rung {k}"
    n = len(cut.went_on) + len(cut.stopped)
    return f"rung {k}: {len(cut.at_cut)} of {n} at the cut"


def _rung_spread(run: Run, searched: pd.DataFrame, outcomes: dict[str, str]
                 ) -> dict[str, float]:
    """How far sideways (in epochs) each stopped trial's last point is drawn: the trials
    stopped at one epoch spread over a quarter of a validation interval either side, in the
    order they were created (not by PSNR, which would draw a slope no trial ran), so that eight
    trials within 0.01 dB are eight points, not one."""
    interval = run.record.budget.validation_interval if run.record.budget else 1
    last = searched.groupby("trial", sort=False).tail(1)
    stopped = last[[outcomes.get(str(t), "").startswith("stopped") for t in last["trial"]]]
    out: dict[str, float] = {}
    for _, group in stopped.groupby("epoch"):
        order = group["trial"].tolist()
        if len(order) > 1:
            width = interval / 4
            out.update({str(t): -width + 2 * width * i / (len(order) - 1)
                        for i, t in enumerate(order)})
    return out


def progress_points(run: Run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every validation in the order it happened: the search's trials' (with ``samples_x``, the
    training samples all of them had consumed by then, errored trials' included; ``valid``, the
    PSNR where the trial did not error; ``best``, the best so far) and the reference run's
    beside the search (its samples are no part of the search's). Both carry ``minutes`` since
    the first start."""
    res = run.results.merge(run.trials[["trial", "error", "started_at"]], on="trial", how="left")
    ref_ids = set(run.trials.loc[leaderboard.is_reference(run.trials), "trial"])
    res = res.sort_values(["timestamp", "started_at", "epoch"], kind="mergesort",
                          na_position="last")
    res["minutes"] = (res["timestamp"] - run.trials["started_at"].min()) / 60.0
    search = res[~res["trial"].isin(ref_ids)].copy()
    step = search.groupby("trial")["samples"].diff().fillna(search["samples"]).astype(float)
    search["samples_x"] = step.cumsum()
    search["valid"] = search["psnr"].where(~search["error"].astype(bool))
    search["best"] = search["valid"].cummax()
    ref = res[res["trial"].isin(ref_ids)].copy()
    return search, ref


def best_so_far(run: Run, path: Path) -> Path:
    """Best PSNR the search had found so far against the training samples its trials had
    consumed by then (and against wall-clock time), reports taken in the order they happened,
    on the trials' scale. The reference run is no part of the search's samples nor of its best:
    its validations are drawn only against time, when they came (at the axis's edge, with
    their PSNR, where they lie beyond the trials' scale)."""
    fig = _figure(11, 4.8)
    ax_samples, ax_time = fig.subplots(1, 2, sharey=True)
    search, ref = progress_points(run)
    for ax, x, label in (
            (ax_samples, "samples_x", "training samples consumed by the search's trials"),
            (ax_time, "minutes", "wall-clock minutes since the first trial started")):
        ax.step(search[x], search["best"], where="post", color="black", lw=2,
                label="best so far")
        ax.scatter(search[x], search["valid"].where(search["valid"] > 0), s=6, color="tab:blue",
                   alpha=0.35, label="each validation")
        ax.set_xlabel(label)
        _bicubic_line(ax, run)
        _psnr_limits(ax, search["psnr"], run)
    if not ref.empty:
        _reference_points(ax_time, ref["minutes"], ref["psnr"],
                          "reference run (source defaults), beside the search")
    ax_samples.set_ylabel("validation PSNR (dB)")
    _figure_legend(fig, [ax_samples, ax_time])
    fig.suptitle(f"{run.name}: best-so-far PSNR (errored trials' samples count, their PSNR "
                 "does not)", fontsize=10)
    return _save(fig, path)


def parallel_coordinates(run: Run, dists: dict[str, Distribution], value_column: str,
                         winner: str, path: Path) -> Path | None:
    """One line per finished trial through its (normalised) searched values and its PSNR, its
    colour the PSNR (colour bar), both on the trials' own scale; the winner in black, the
    reference run dashed green, its PSNR written at the axis's end where it lies beyond it."""
    names = list(dists)
    if not names:
        return None
    trials = run.trials[~run.trials["error"].astype(bool)]
    trials = trials[np.isfinite(trials[value_column].astype(float))]
    if trials.empty:
        return None
    fig = _figure(max(6.0, 1.8 * (len(names) + 1)) + 1.2, 5.3)
    ax = fig.subplots()
    columns, labels = [], []
    for name in names:
        norm, ticks = _normalise(trials[run.scalar_columns[name]], dists[name])
        columns.append(norm)
        labels.append(ticks)
    value = trials[value_column].astype(float)
    refs = _reference_ids(run)
    is_ref = trials["trial"].isin(refs)
    positive = value[(value > 0) & ~is_ref]  # the scale is the search's, not the reference's
    bicubic = _bicubic(run)
    shown = [*positive, *([bicubic] if bicubic is not None else [])]
    lo, hi = (min(shown), max(shown)) if shown else (0.0, 1.0)
    columns.append(((value - lo) / (hi - lo) if hi > lo else value * 0 + 0.5).clip(-0.05, 1.05))
    b = (bicubic - lo) / (hi - lo) if bicubic is not None and hi > lo else None
    # The PSNR axis's ticks, except where the bicubic label already stands.
    labels.append([(float((v - lo) / (hi - lo)), f"{v:.2f}") for v in _psnr_ticks(lo, hi)
                   if hi > lo and (b is None or abs((v - lo) / (hi - lo) - b) > 0.07)])
    data = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    cmap = colormaps["viridis"]
    # The colours spread over the trials above bicubic where most are: one poor trial far below
    # would otherwise paint every good one the same (those below bicubic get the darkest).
    above = positive[positive > bicubic] if bicubic is not None else positive.iloc[:0]
    c_lo = bicubic if bicubic is not None and len(above) >= 2 and len(above) < len(positive) \
        else lo
    colour_norm = Normalize(c_lo, hi) if hi > c_lo else Normalize(lo, hi)
    colours = cmap(np.clip(colour_norm(value.to_numpy()), 0, 1))
    xs = np.arange(len(names) + 1)
    for row, colour, trial, v in zip(data, colours, trials["trial"], value, strict=True):
        if trial == winner:
            ax.plot(xs, row, color="black", lw=3.0, label="winner", zorder=3)
        elif trial in refs:
            ax.plot(xs, row, "--", color="tab:green", lw=2.0, zorder=2,
                    label="reference run (source defaults)")
            if not lo <= v <= hi:  # beyond the trials' scale: its PSNR at the end it points to
                ax.annotate(f"reference {v:.2f} dB ({'below' if v < lo else 'above'} this axis)",
                            (xs[-1], row[-1]), xytext=(6, 0), textcoords="offset points",
                            fontsize=7, color="tab:green", va="center")
        else:
            ax.plot(xs, row, color=colour, lw=1.0, alpha=0.6)
    if b is not None:
        ax.plot([xs[-1] - 0.25, xs[-1] + 0.25], [b, b], "--", color="tab:red", lw=1.5)
        ax.fill_between([xs[-1] - 0.25, xs[-1] + 0.25], -0.08, b, color="tab:red", alpha=0.07,
                        lw=0)
        # Above its line and right of the axis, where the PSNR ticks are: nothing strikes it.
        ax.annotate(f"bicubic {bicubic:.2f}", (xs[-1], b), xytext=(4, 2),
                    textcoords="offset points", fontsize=7, color="tab:red", ha="left",
                    va="bottom")
    for x, ticks in zip(xs.tolist(), labels, strict=True):
        ax.axvline(x, color="black", lw=0.8)
        for y, text in ticks:  # on a pale box: lines end at the axis ends, where these sit
            ax.annotate(text, (x, y), xytext=(4, 0), textcoords="offset points", fontsize=7,
                        va="center", zorder=4,
                        bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none",
                              "alpha": 0.8})
    ax.set_xticks(xs, [*names, "PSNR (dB)"], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.3, xs[-1] + (1.3 if (~value.between(lo, hi) & is_ref).any() else 0.7))
    ax.set_ylim(-0.08, 1.08)
    bar = fig.colorbar(ScalarMappable(norm=colour_norm, cmap=cmap), ax=ax, pad=0.01,
                       fraction=0.04)
    below = " (below bicubic: the darkest)" if colour_norm.vmin != lo else ""
    bar.set_label(f"line colour: {_value_words(value_column)} (dB){below}", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    _figure_legend(fig, [ax])
    ax.set_title(f"{run.name}: searched parameters vs {_value_words(value_column)} (log axes "
                 "for log-scale parameters)", fontsize=10)
    return _save(fig, path)


def importance_bars(imp: Importance, path: Path) -> Path | None:
    """The shares as bars, and under them, in red, every reason not to trust them
    (`Importance.caveats`): the figure carries its own warning wherever it goes."""
    if not imp.values:
        return None
    names = list(imp.values)[::-1]
    notes = [textwrap.fill(f"- {c}", 120, subsequent_indent="  ") for c in imp.caveats]
    lines = sum(n.count("\n") + 1 for n in notes) + 1 if notes else 0
    bars_h, notes_h = 0.5 * len(names) + 1.5, 0.14 * lines
    fig = _figure(8, bars_h + notes_h)
    if notes:
        ax, note_ax = fig.subplots(2, 1, height_ratios=[bars_h, notes_h])
        note_ax.set_axis_off()
        note_ax.text(0.01, 1.0, "Do not read these shares alone:\n" + "\n".join(notes),
                     fontsize=7, color="tab:red", va="top", ha="left",
                     transform=blended_transform_factory(fig.transFigure, note_ax.transAxes))
    else:
        ax = fig.subplots()
    ax.barh(names, [imp.values[n] for n in names], color="tab:blue")
    ax.set_xlabel("share of importance")
    evaluator = imp.evaluator.removesuffix("ImportanceEvaluator")
    top = (f"the best {imp.target_quantile:.0%} against all of "
           if imp.target_quantile is not None else "")
    ax.set_title(f"parameter importance: {evaluator}, {top}{imp.n_trials} trials", fontsize=10)
    return _save(fig, path)


def psnr_vs_params(run: Run, dists: dict[str, Distribution], value_column: str, winner: str,
                   path: Path) -> Path | None:
    """One scatter per searched parameter: its value against the trial's PSNR, on the trials'
    own scale. A choice's values sit exactly on their ticks; the reference run is drawn apart,
    labelled (at the axis's edge, with its PSNR, where it lies beyond the trials' scale); one
    legend for all panels, below them."""
    names = list(dists)
    if not names:
        return None
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _figure(4.2 * ncols, 3.4 * nrows + 0.6)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    trials = run.trials
    value = trials[value_column].astype(float)
    is_ref = leaderboard.is_reference(trials)
    in_search_defaults = trials["is_defaults"].astype(bool) & ~is_ref
    for ax, name in zip(axes, names, strict=False):
        dist, col = dists[name], run.scalar_columns[name]
        x = param_positions(trials[col], dist)
        if isinstance(dist, CategoricalDistribution):
            ax.set_xticks(range(len(dist.choices)), [format_value(c) for c in dist.choices])
            ax.set_xlim(-0.5, len(dist.choices) - 0.5)
        elif is_log(dist):
            _log_axis(ax, float(dist.low), float(dist.high))
        _scatter_trials(ax, x, value, run, ~is_ref)
        if in_search_defaults.any():
            ax.scatter(x[in_search_defaults], value[in_search_defaults], s=70,
                       facecolors="none", edgecolors="tab:green", lw=1.5,
                       label="defaults (a trial of the search)")
        win = trials["trial"] == winner
        ax.scatter(x[win], value[win], s=90, facecolors="none", edgecolors="black", lw=2,
                   label="winner")
        _bicubic_line(ax, run)
        _psnr_limits(ax, value[~is_ref], run)
        if is_ref.any():
            _reference_points(ax, x[is_ref], value[is_ref], "reference run (source defaults)")
        ax.set_xlabel(name)
        ax.set_ylabel(f"{_value_words(value_column)} (dB)")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    _figure_legend(fig, list(axes[: len(names)]))
    fig.suptitle(f"{run.name}: PSNR against each searched parameter", fontsize=10)
    return _save(fig, path)


def _scatter_trials(ax: Any, x: pd.Series, value: pd.Series, run: Run, among: pd.Series) -> None:
    """The trials' points: coloured by outcome, or, in a run with a conditional choice (the
    schedule family), one colour per choice, filled when the trial completed and hollow when it
    stopped early (crosses for errors)."""
    trials = run.trials
    families = trials["outcome"].map(_family)
    choice = next((p for p in run.record.params if p.branches), None)
    if choice is None:
        for family, (colour, _, label) in _STYLE.items():
            mask = (families == family) & among
            if mask.any():
                ax.scatter(x[mask], value[mask], s=16, color=colour, label=label,
                           marker="x" if family == "error" else "o", alpha=0.8)
        return
    column = trials[run.param_columns[choice.name]]
    for k, option in enumerate(choice.choices):
        colour = BRANCH_COLOURS[k % len(BRANCH_COLOURS)]
        mine = (column == option) & among
        for kind, mask in (("completed", mine & (families == "completed")),
                           ("other", mine & ~families.isin(["completed", "error"])),
                           ("error", mine & (families == "error"))):
            if not mask.any():
                continue
            label = f"{choice.name} {option}" if kind == "completed" else (
                f"{choice.name} {option}, stopped early or unfinished" if kind == "other"
                else f"{choice.name} {option}, error (never ranked)")
            style = ({"color": colour} if kind != "other"
                     else {"facecolors": "none", "edgecolors": colour})
            ax.scatter(x[mask], value[mask], s=18, label=label, alpha=0.85,
                       marker="x" if kind == "error" else "o", **style)


def param_positions(values: pd.Series, dist: Distribution) -> pd.Series:
    """Where a parameter's values sit on its axis: a choice on its tick (the choice's index,
    exactly: no jitter that would read as a value between the choices), a number as itself."""
    if isinstance(dist, CategoricalDistribution):
        index = {c: i for i, c in enumerate(dist.choices)}
        return values.map(lambda v: index.get(v, np.nan)).astype(float)
    return values.astype(float)


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
    fig.suptitle(f"{h}x{w} HR crops of different clips: where the winner does best against "
                 "bicubic, and where it does worst (Y, PSNR on the crop)", fontsize=9)
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


def _value_words(value_column: str) -> str:
    return {"best_psnr": "best validated PSNR", "last_psnr": "last PSNR"}.get(value_column,
                                                                              value_column)


def _figure_legend(fig: Figure, axes: list[Axes]) -> None:
    """One legend for the figure, below its panels, where it covers no point and no note."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncols=min(len(handles), 4), fontsize=8, frameon=False)


def _log_ticks(low: float, high: float) -> list[float]:
    """A few ticks for a log axis over [low, high]: 1-3 steps over at most about three decades,
    whole decades beyond (every few where there are many); the ends where fewer than two fit."""
    decades = math.log10(high / low)
    subs = (1.0, 3.0) if decades <= 3.2 else (1.0,)
    step = max(1, math.ceil(decades / 6)) if decades > 3.2 else 1
    ticks = [m * 10.0**e for e in range(math.floor(math.log10(low)),
                                        math.ceil(math.log10(high)) + 1, step) for m in subs]
    ticks = [t for t in ticks if low / 1.0001 <= t <= high * 1.0001]
    return ticks if len(ticks) >= 2 else sorted({low, *ticks, high})


def _tick_text(value: float, log: bool = True) -> str:
    """A tick's label, short enough that neighbours never meet: on a log axis ``1e-4``, ``3e-4``
    (not ``0.0001``, ``0.0003``), plain numbers from 0.01 to 1000."""
    if not log or value == 0 or 1e-2 <= abs(value) < 1e3:
        return format_value(value)
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _psnr_ticks(low: float, high: float) -> list[float]:
    """A few round PSNR values over [low, high], the ends included."""
    inner = [float(t) for t in MaxNLocator(4).tick_values(low, high) if low < t < high]
    return [low, *inner, high]


def _log_axis(ax: Axes, low: float, high: float, axis: str = "x") -> None:
    """A log axis over [low, high] with a few labelled ticks that never run into each other
    (`_log_ticks`, `_tick_text`); no minor labels."""
    ticks = _log_ticks(low, high)
    labels = [_tick_text(t) for t in ticks]
    pad = 10 ** (0.04 * max(math.log10(high / low), 0.1))
    if axis == "x":
        ax.set_xscale("log")
        ax.set_xlim(low / pad, high * pad)
        ax.set_xticks(ticks, labels)
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.set_yscale("log")
        ax.set_ylim(low / pad, high * pad)
        ax.set_yticks(ticks, labels)
        ax.yaxis.set_minor_locator(NullLocator())


def _bicubic(run: Run) -> float | None:
    """The run's bicubic PSNR on the validation split (the median over trials' records of it)."""
    bicubic = run.trials["bicubic_psnr"].dropna()
    return None if bicubic.empty else float(bicubic.median())


def _bicubic_line(ax: Axes, run: Run) -> None:
    bicubic = _bicubic(run)
    if bicubic is not None:
        ax.axhline(bicubic, color="tab:red", lw=1, ls="--", alpha=0.7,
                   label=f"bicubic {bicubic:.2f} dB")


def _psnr_limits(ax: Axes, psnr: pd.Series, run: Run, note: bool = True) -> None:
    """Y limits around the real PSNRs and the bicubic line, so the baseline is always in view,
    however far above or below it every trial lies; the region below bicubic is shaded. The
    margins scale with the span, so that trials within a dB of each other are not squashed."""
    psnr = psnr.astype(float)
    real = psnr[np.isfinite(psnr) & (psnr > 0)]
    bicubic = _bicubic(run)
    shown = [*real, *([bicubic] if bicubic is not None else [])]
    if not shown:
        return
    pad = min(0.5, max(0.1, 0.15 * (max(shown) - min(shown))))
    low = min(shown) - pad
    if bicubic is not None:
        ax.axhspan(low, bicubic, color="tab:red", alpha=0.07, lw=0, zorder=0)
        if note:
            ax.annotate("shaded: below bicubic", (0.5, 0.01), xycoords="axes fraction",
                        fontsize=7, color="tab:red", ha="center", alpha=0.8)
    ax.set_ylim(low, max(shown) + pad)
    if (psnr[np.isfinite(psnr)] < low).any():
        ax.annotate("diverged trials (0 dB) lie below the axis", (0.01, 0.01),
                    xycoords="axes fraction", fontsize=7, color="tab:orange")


def _reference_ids(run: Run) -> set[str]:
    return {str(t) for t in run.trials.loc[leaderboard.is_reference(run.trials), "trial"]}


def _off_scale(reference: pd.Series, searched: pd.Series, run: Run) -> bool:
    """Whether the reference run's PSNRs lie so far from the trials' (and bicubic) that one axis
    for both would stretch it by half again and squash the trials: it gets its own place."""
    ref = reference.astype(float)
    ref = ref[np.isfinite(ref) & (ref > 0)]
    real = searched.astype(float)
    real = real[np.isfinite(real) & (real > 0)]
    bicubic = _bicubic(run)
    shown = [*real, *([bicubic] if bicubic is not None else [])]
    if ref.empty or not shown:
        return False
    span = max(max(shown) - min(shown), 0.5)
    return bool(max(max(shown), ref.max()) - min(min(shown), ref.min()) > 1.5 * span)


def _reference_points(ax: Axes, x: pd.Series, y: pd.Series, label: str) -> None:
    """The reference run's points on an axis scaled to the trials (limits set first): inside it
    as green diamonds; outside it at the edge it lies beyond, as green triangles pointing there,
    their PSNR in the legend's label (a marked offset: no text in the panel to collide with)."""
    low, high = ax.get_ylim()
    y = y.astype(float)
    keep = np.isfinite(y) & (y > 0) & np.isfinite(x.astype(float))
    x, y = x[keep], y[keep]
    inside = (y >= low) & (y <= high)
    if inside.any():
        ax.scatter(x[inside], y[inside], s=30, marker="D", color="tab:green", label=label,
                   zorder=3)
    for side, mask, edge, marker in (("below", y < low, low, "v"), ("above", y > high, high, "^")):
        if not mask.any():
            continue
        at = edge + (high - low) * (0.03 if side == "below" else -0.03)
        values = y[mask]
        text = (f"{values.iloc[-1]:.2f} dB" if len(values) == 1 else
                f"{values.min():.2f} to {values.max():.2f} dB")
        ax.scatter(x[mask], [at] * int(mask.sum()), s=40, marker=marker, color="tab:green",
                   label=f"{label}: {text}, {side} this scale", zorder=3, clip_on=False)


def _normalise(values: pd.Series, dist: Distribution,
               ) -> tuple[pd.Series, list[tuple[float, str]]]:
    """Map a parameter's values onto [0, 1] and return the tick labels for its axis."""
    if isinstance(dist, CategoricalDistribution):
        n = max(len(dist.choices) - 1, 1)
        index = {c: i for i, c in enumerate(dist.choices)}
        ticks = [(i / n, format_value(c)) for i, c in enumerate(dist.choices)]
        return values.map(lambda v: index.get(v, np.nan) / n), ticks
    v = values.astype(float)
    lo, hi = float(dist.low), float(dist.high)
    marks: list[float]
    if is_log(dist):
        v, lo_t, hi_t = v.transform(np.log10), math.log10(lo), math.log10(hi)
        marks = _log_ticks(lo, hi)
        where = [math.log10(t) for t in marks]
    else:
        lo_t, hi_t = lo, hi
        inner = [float(t) for t in MaxNLocator(4).tick_values(lo, hi) if lo <= t <= hi]
        marks = sorted({lo, *inner, hi})
        where = marks
    if hi_t <= lo_t:
        return v * 0 + 0.5, [(0.5, format_value(lo))]
    norm = (v - lo_t) / (hi_t - lo_t)
    spots = [((w - lo_t) / (hi_t - lo_t), t) for w, t in zip(where, marks, strict=True)]
    # Ends always labelled; an inner tick only where it stands clear of its neighbours.
    kept: list[tuple[float, float]] = []
    for y, t in spots:
        if y in (spots[0][0], spots[-1][0]) or (all(abs(y - k) > 0.08 for k, _ in kept)
                                                 and abs(y - spots[-1][0]) > 0.08):
            kept.append((y, t))
    return norm, [(y, _tick_text(t, is_log(dist))) for y, t in kept]
