"""Two runs side by side: what each found, what it cost, and how the winners' configs differ."""

from __future__ import annotations

from typing import Any

from analysis.leaderboard import format_value
from analysis.summary import RunSummary, format_duration, summarise
from analysis.tables import Run


def render_comparison(a: Run, b: Run, scope: str = "best") -> str:
    sa, sb = summarise(a, scope), summarise(b, scope)
    label = "best PSNR" if scope == "best" else "last PSNR"
    rows: list[tuple[str, str, str]] = [
        ("run folder", str(a.run_dir), str(b.run_dir)),
        ("finished", _yes(sa.finished), _yes(sb.finished)),
        ("trials", _trials(sa), _trials(sb)),
        (f"{label} (winner)", f"{sa.psnr:.2f} dB", f"{sb.psnr:.2f} dB"),
        ("SSIM", f"{sa.ssim:.4f}", f"{sb.ssim:.4f}"),
        ("gain over bicubic", f"{sa.gain_over_bicubic:+.2f} dB", f"{sb.gain_over_bicubic:+.2f} dB"),
        ("winner", sa.winner, sb.winner),
        ("reached at epoch", str(sa.epoch), str(sb.epoch)),
        ("winner over defaults", _defaults(sa), _defaults(sb)),
        ("training samples, all trials", f"{sa.total_samples:,}", f"{sb.total_samples:,}"),
        ("wall time", format_duration(sa.wall_time_s), format_duration(sb.wall_time_s)),
    ]
    params = list(dict.fromkeys([*sa.winner_params, *sb.winner_params]))
    rows.append(("winner's searched values:", "", ""))
    rows += [(f"  {p}", _param(sa.winner_params, p), _param(sb.winner_params, p)) for p in params]
    differing = sorted(k for k in {*sa.winner_config, *sb.winner_config}
                       if sa.winner_config.get(k) != sb.winner_config.get(k))
    rows.append(("winners' full configs differ in:", "" if differing else "nothing", ""))
    rows += [(f"  {k}", _param(sa.winner_config, k), _param(sb.winner_config, k))
             for k in differing]
    heads = ("", sa.name, sb.name)
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [heads, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"Comparison by {label} (scope={scope})"
    notes = []
    if sa.evaluation != sb.evaluation:
        notes.append("WARNING: the runs were scored with different evaluation conventions, so "
                     f"their PSNRs are not comparable:\n  {sa.name}: {sa.evaluation}\n"
                     f"  {sb.name}: {sb.evaluation}")
    else:
        notes.append(f"Evaluation (both): {sa.evaluation}")
    return "\n".join([title, *notes, "", *lines])


# --- private helpers -----------------------------------------------------------------------------
def _yes(flag: bool) -> str:
    return "yes" if flag else "no (running or interrupted)"


def _trials(s: RunSummary) -> str:
    return s.trials_text()


def _defaults(s: RunSummary) -> str:
    if s.defaults is None:
        return "no defaults trial"
    return f"{s.defaults.winner_minus_defaults:+.2f} dB (defaults {s.defaults.psnr:.2f} dB)"


def _param(values: dict[str, Any], key: str) -> str:
    if key not in values:
        return "-"
    v = values[key]
    return ", ".join(map(format_value, v)) if isinstance(v, list) else format_value(v)
