"""The report's figures: the bicubic line stays inside the axes."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import figures
from analysis.tables import load_run
from tests import run_fixture as fx


@pytest.mark.parametrize("psnrs", [[18.0, 19.5], [30.0, 31.0]], ids=["all-below", "all-above"])
def test_psnr_limits_include_bicubic_when_every_trial_is_far_from_it(
        tmp_path: Path, psnrs: list[float]) -> None:
    run_dir = tmp_path / "far"
    fx.write_meta(run_dir)
    for i, psnr in enumerate(psnrs):
        fx.write_trial(run_dir, i, {**fx.DEFAULTS, "model_lr": 1e-3 * (i + 1)}, [psnr - 1, psnr])
    run = load_run(run_dir)
    ax = figures._figure(4, 3).subplots()
    figures._bicubic_line(ax, run)
    figures._psnr_limits(ax, run.results["psnr"], run)
    low, high = ax.get_ylim()
    assert low < fx.BICUBIC_PSNR < high
    assert low < min(psnrs) - 1 and max(psnrs) < high  # the trials stay in view too


def _drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures the functions draw, caught instead of written."""
    caught: list = []

    def save(fig, path):  # noqa: ANN001, ANN202
        caught.append(fig)
        return path

    monkeypatch.setattr(figures, "_save", save)
    return caught


@pytest.mark.parametrize("psnrs", [[18.0, 19.5], [24.5, 30.0]], ids=["all-below", "straddling"])
def test_every_psnr_axis_draws_bicubic_inside_it_and_shades_below(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, psnrs: list[float]) -> None:
    from analysis import importance

    run_dir = tmp_path / "run"
    fx.write_meta(run_dir)
    for i, psnr in enumerate(psnrs):
        fx.write_trial(run_dir, i, {**fx.DEFAULTS, "model_lr": 1e-3 * (i + 1)}, [psnr - 1, psnr])
    run = load_run(run_dir)
    dists = importance.distributions(run)
    caught = _drawn(monkeypatch)
    winner = fx.trial_id(1)
    figures.learning_curves(run, winner, tmp_path / "a.png")
    figures.best_so_far(run, tmp_path / "b.png")
    figures.psnr_vs_params(run, dists, "best_psnr", winner, tmp_path / "c.png")
    axes = [ax for fig in caught for ax in fig.axes if ax.get_visible()]
    assert len(axes) >= 1 + 2 + 1
    for ax in axes:
        low, high = ax.get_ylim()
        levels = [line.get_ydata()[0] for line in ax.get_lines()
                  if line.get_color() == "tab:red" and line.get_linestyle() == "--"]
        assert levels and all(low < y < high for y in levels), ax.get_title()
        assert levels[0] == pytest.approx(fx.BICUBIC_PSNR)
        shaded = [p for p in ax.patches if p.get_facecolor()[0] > 0.7 and p.get_alpha() == 0.07]
        assert shaded, f"no shading below bicubic on {ax.get_xlabel()!r}"
    caught.clear()
    figures.parallel_coordinates(run, dists, "best_psnr", winner, tmp_path / "d.png")
    ax = caught[0].axes[0]  # beside it: the colour bar
    marks = [line.get_ydata()[0] for line in ax.get_lines()
             if isinstance(line.get_color(), str) and line.get_color() == "tab:red"]
    assert len(marks) == 1 and -0.08 <= marks[0] <= 1.08


# --- issue 20, items 14-17: figures that read ---------------------------------------------------
def _overlap(a, b) -> bool:
    """Whether two display-space boxes share more than a pixel."""
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > 1) and (min(a.y1, b.y1) - max(a.y0, b.y0) > 1)


def _drawn_figure(monkeypatch: pytest.MonkeyPatch, draw) -> object:  # noqa: ANN001
    caught = _drawn(monkeypatch)
    draw()
    (fig,) = caught
    fig.canvas.draw()
    return fig


def _lr_run(tmp_path: Path, lrs: list[float], psnrs: list[float], low: float = 1e-3,
            high: float = 5e-2) -> Path:
    """Trials whose model_lr spans less than two decades, as in the smoke space."""
    from analysis import record
    from analysis.record import ParamRange

    run_dir = tmp_path / "lr"
    fx.write_meta(run_dir)
    rec = record.read(run_dir)
    params = tuple(ParamRange("model_lr", "loguniform", low, high) if p.name == "model_lr" else p
                   for p in rec.params)
    record.write(run_dir, rec.replace(params=params))
    for i, (lr, psnr) in enumerate(zip(lrs, psnrs, strict=True)):
        fx.write_trial(run_dir, i, {**fx.DEFAULTS, "model_lr": lr, "batch_size": (8, 16, 32)[i % 3],
                                    "lr_scheduler_milestones": [0.1 + 0.1 * i, 0.85]},
                       [psnr - 1, psnr])
    return run_dir


@pytest.mark.parametrize(("low", "high"), [(1e-3, 5e-2), (1e-4, 1e-2), (1e-4, 1e-1), (1e-6, 1.0)],
                         ids=["smoke", "main-job", "three-decades", "six-decades"])
def test_log_axis_tick_labels_never_run_into_each_other(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, low: float, high: float) -> None:
    from analysis import importance

    lrs = [1.4e-3, 4.6e-3, 8.6e-3, 2.2e-2, 4.1e-2]
    run = load_run(_lr_run(tmp_path, lrs, [17.0, 18.3, 22.1, 25.3, 22.3], low, high))
    fig = _drawn_figure(monkeypatch, lambda: figures.psnr_vs_params(
        run, importance.distributions(run), "best_psnr", fx.trial_id(3), tmp_path / "p.png"))
    ax = next(a for a in fig.axes if a.get_xlabel() == "model_lr")
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
              if t.get_visible() and t.get_text()]
    left, right = ax.get_xlim()
    shown = [t for t in labels if left <= t.get_position()[0] <= right]
    assert len(shown) >= 2
    boxes = [t.get_window_extent(renderer) for t in shown]
    assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), [
        t.get_text() for t in shown]


def test_psnr_vs_params_legend_covers_no_panel_and_the_reference_is_labelled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis import importance

    run = load_run(fx.write_run_with_reference(tmp_path))
    fig = _drawn_figure(monkeypatch, lambda: figures.psnr_vs_params(
        run, importance.distributions(run), "best_psnr", fx.trial_id(0), tmp_path / "p.png"))
    renderer = fig.canvas.get_renderer()
    legends = [*fig.legends, *(a.get_legend() for a in fig.axes if a.get_legend())]
    assert len(legends) == 1
    box = legends[0].get_window_extent(renderer)
    panels = [a for a in fig.axes if a.get_visible()]
    assert not any(_overlap(box, a.get_tightbbox(renderer)) for a in panels)
    ref = run.trial("reference")
    for ax in panels:
        col = run.scalar_columns[ax.get_xlabel()]
        drawn = {c.get_label(): c.get_offsets() for c in ax.collections}
        # 18.6 dB, far below the trials: a marked offset at the bottom edge, its PSNR labelled.
        (x, y), = drawn["reference run (source defaults): 18.60 dB, below this scale"]
        assert y < ax.get_ylim()[0] + 0.1 * (ax.get_ylim()[1] - ax.get_ylim()[0])
        if ax.get_xlabel() != "batch_size":
            assert x == pytest.approx(float(ref[col]))
        searched = sum(len(v) for k, v in drawn.items() if k in {
            "completed", "stopped early (ASHA)", "diverged", "error (never ranked)"})
        assert searched == 4  # the reference is not among the trials' outcomes


def test_choices_sit_exactly_on_their_ticks(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A choice (batch_size; a milestone count) is plotted on its tick, never jittered so that
    2 reads as 1.85 or 2.2."""
    from analysis import importance

    run = load_run(fx.write_small_run(tmp_path))
    dists = importance.distributions(run)
    fig = _drawn_figure(monkeypatch, lambda: figures.psnr_vs_params(
        run, dists, "best_psnr", fx.WINNER, tmp_path / "p.png"))
    ax = next(a for a in fig.axes if a.get_xlabel() == "batch_size")
    ticks = {round(t, 9): label.get_text() for t, label in zip(
        ax.get_xticks(), ax.get_xticklabels(), strict=True)}
    for c in ax.collections:
        for x, _ in c.get_offsets():
            assert round(float(x), 9) in ticks
    expected = dict(zip(run.trials["trial"], run.trials["batch_size"], strict=True))
    positions = figures.param_positions(run.trials["batch_size"], dists["batch_size"])
    for trial, pos in zip(run.trials["trial"], positions, strict=True):
        assert ticks[round(pos, 9)] == str(expected[trial])


def test_best_so_far_places_the_reference_run_at_its_own_minutes(tmp_path: Path) -> None:
    """It ran from the start: its points sit at its own minutes; the search's best never takes
    its PSNR, and its samples are no part of the search's."""
    run = load_run(fx.write_run_with_reference(tmp_path))
    search, ref = figures.progress_points(run)
    stamps = [fx.T0 + 7.0 * e for e in range(1, 5)]
    assert ref["minutes"].tolist() == pytest.approx([(t - fx.T0) / 60 for t in stamps])
    assert "samples_x" not in ref
    assert search["best"].max() == run.results.loc[run.results["trial"] != "reference",
                                                   "psnr"].max()
    assert not search["trial"].eq("reference").any()


def test_best_so_far_draws_the_reference_against_time_only_as_a_marked_offset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27, item 1: its points sat at "samples consumed by the search's trials", which
    means nothing for a run beside the search, and its 18.6 dB squashed the trials' axis. On the
    trials' scale, its validations lie below it: triangles at the bottom edge at their minutes,
    their PSNRs in the legend."""
    run = load_run(fx.write_run_with_reference(tmp_path))
    fig = _drawn_figure(monkeypatch, lambda: figures.best_so_far(run, tmp_path / "b.png"))
    _, ref = figures.progress_points(run)
    ax_samples, ax_time = fig.axes[:2]
    assert not [c for c in ax_samples.collections if c.get_label().startswith("reference")]
    ((label, points),) = [(c.get_label(), c.get_offsets()) for c in ax_time.collections
                          if c.get_label().startswith("reference run")]
    assert [p[0] for p in points] == pytest.approx(ref["minutes"].tolist())
    low, high = ax_time.get_ylim()
    trials = run.results.loc[run.results["trial"] != "reference", "psnr"]
    assert low < trials.min() and ref["psnr"].max() < low  # the trials' scale, not the reference's
    assert all(low < p[1] < low + 0.1 * (high - low) for p in points)
    assert "below this scale" in label and f"{ref['psnr'].min():.2f} to" in label


def test_rung_labels_sit_above_the_curves_and_the_bicubic_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = load_run(fx.write_small_run(tmp_path))
    fig = _drawn_figure(monkeypatch, lambda: figures.learning_curves(
        run, fx.WINNER, tmp_path / "l.png"))
    renderer = fig.canvas.get_renderer()
    main_ax = next(a for a in fig.axes if a.get_ylabel())
    top = main_ax.get_window_extent(renderer).y1
    rungs = [t for t in fig.findobj(lambda o: hasattr(o, "get_text"))
             if str(t.get_text()).startswith("rung ") and t.get_visible()]
    assert sorted(t.get_text() for t in rungs) == ["rung 1", "rung 2"]
    assert all(t.get_window_extent(renderer).y0 >= top for t in rungs)


def test_parallel_coordinates_bicubic_label_stands_clear_and_colours_have_a_scale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every trial below bicubic: bicubic is the PSNR axis's top, where its label met the top
    tick's and the dashed line struck through both."""
    from analysis import importance

    lrs = [1.4e-3, 4.6e-3, 8.6e-3, 2.2e-2]
    run = load_run(_lr_run(tmp_path, lrs, [17.0, 18.3, 22.1, 21.3]))
    fig = _drawn_figure(monkeypatch, lambda: figures.parallel_coordinates(
        run, importance.distributions(run), "best_psnr", fx.trial_id(2), tmp_path / "c.png"))
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    texts = [t for t in ax.texts if t.get_visible()]
    (label,) = [t for t in texts if t.get_text().startswith("bicubic")]
    box = label.get_window_extent(renderer)
    (line,) = [ln for ln in ax.get_lines()
               if isinstance(ln.get_color(), str) and ln.get_color() == "tab:red"]
    _, y = ax.transData.transform((0, line.get_ydata()[0]))
    assert not box.y0 < y < box.y1  # the dashed line does not strike through it
    assert not any(_overlap(box, t.get_window_extent(renderer)) for t in texts if t is not label)
    bars = [a for a in fig.axes[1:] if "line colour" in a.get_ylabel()]
    assert len(bars) == 1 and "PSNR" in bars[0].get_ylabel()
    low, high = bars[0].get_ylim()
    assert low == pytest.approx(17.0) and high == pytest.approx(fx.BICUBIC_PSNR)


# --- issue 27, item 1: the trials on their own scale ----------------------------------------------
def _crowded_run(tmp_path: Path) -> Path:
    """As the main job: the trials within a dB of each other above bicubic (23.82), four stopped
    at rung 1 within 0.01 dB, one at rung 2, the winner the only one completed, the reference run
    5 dB below them all."""
    run = tmp_path / "crowded"
    fx.write_meta(run)
    p = {**fx.DEFAULTS, "model_lr": 1e-3}

    def trial(i: int, params: dict, psnrs: list[float]) -> None:
        noise = [0.3, -0.2, 0.1, -0.4, 0.2, 0.0]  # mean 0: per-frame PSNRs around each mean
        frames = [[p + noise[(k + i) % 6] for k in range(6)] for p in psnrs]
        fx.write_trial(run, i, params, psnrs, psnr_frames=frames)

    trial(0, p, [24.70, 24.95, 25.10, 25.20])  # the winner, completed
    trial(1, {**p, "model_lr": 2e-3}, [24.69, 24.80])  # stopped at rung 2: one completed
    for i, psnr in enumerate([24.690, 24.692, 24.695, 24.699], 2):  # stopped at rung 1
        trial(i, {**p, "model_lr": 3e-4 * i}, [psnr])
    fx.write_reference(run, [18.2, 18.6, 18.5, 18.47])
    return run


def test_learning_curves_keep_the_trials_scale_and_show_every_stopped_trial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = load_run(_crowded_run(tmp_path))
    fig = _drawn_figure(monkeypatch, lambda: figures.learning_curves(
        run, fx.trial_id(0), tmp_path / "l.png"))
    main_ax, ref_ax = [a for a in fig.axes if a.get_ylabel()]
    low, high = main_ax.get_ylim()
    assert low > 23.0 and high < 25.7  # bicubic and the trials; not the reference's 18 dB
    assert "reference run" in ref_ax.get_ylabel()
    assert [ln for ln in ref_ax.get_lines() if ln.get_label().startswith("reference run")]
    # The four trials stopped at rung 1 (epoch 1) are four hollow markers side by side.
    ends = sorted(float(ln.get_xdata()[0]) for ln in main_ax.get_lines()
                  if ln.get_marker() == "o" and ln.get_markerfacecolor() == "white")
    assert len(ends) == 5 and ends[-1] == 2.0  # and the one stopped at rung 2, alone there
    assert len(set(ends[:4])) == 4 and all(0.6 < x < 1.4 for x in ends[:4])
    # Every entry of the legend is drawn in its colour: no "completed" without a line of it.
    drawn = {ln.get_color() for a in (main_ax, ref_ax) for ln in a.get_lines()}
    for handle in fig.legends[0].legend_handles:
        assert handle.get_color() in drawn or handle.get_markeredgecolor() in drawn, \
            handle.get_label()
    labels = [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))
              if str(t.get_text()).startswith("rung 1")]
    assert labels and "at the cut" in labels[0]


def test_parallel_coordinates_colour_the_trials_not_the_reference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis import importance

    run = load_run(_crowded_run(tmp_path))
    fig = _drawn_figure(monkeypatch, lambda: figures.parallel_coordinates(
        run, importance.distributions(run), "best_psnr", fx.trial_id(0), tmp_path / "c.png"))
    ax = fig.axes[0]
    (bar,) = [a for a in fig.axes[1:] if "line colour" in a.get_ylabel()]
    assert bar.get_ylim() == pytest.approx((fx.BICUBIC_PSNR, 25.2))
    notes = [t.get_text() for t in ax.texts]
    assert "reference 18.60 dB (below this axis)" in notes
    # The log-scale model_lr axis is labelled between its ends too (1e-4 ... 0.1).
    assert {"1e-4", "3e-4", "1e-3", "3e-3", "0.01", "0.03", "0.1"} <= set(notes)
