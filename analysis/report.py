"""A report folder: ``index.html`` plus the PNG figures it shows.

The HTML is self-contained: the figures are embedded (base64) and also written beside it, each
image linking to its PNG file; the page loads nothing from the internet, so it can be mailed,
archived or opened offline.
"""

from __future__ import annotations

import base64
import html
import logging
import shlex
from datetime import datetime, timezone
from pathlib import Path

from analysis import _io, figures, importance, leaderboard, pictures
from analysis.summary import RunSummary, format_duration, summarise
from analysis.tables import Run

log = logging.getLogger(__name__)

INDEX = "index.html"
_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:nth-child(2),th:nth-child(2),td:last-child{text-align:left}
table.facts td{text-align:left}
tr.winner{background:#e6f4e6;font-weight:600} tr.error{color:#a00}
.note{color:#555;font-size:13px} img{max-width:100%;border:1px solid #ddd}
code{background:#f4f4f4;padding:0 3px}
"""


def write_report(run: Run, report_dir: str | Path, scope: str = "best") -> Path:
    """Write the figures and index.html into ``report_dir``; returns the HTML's path. The
    pictures decode a few frames of the winner's test split (cached) and run two models on them."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(run, scope)
    value_column = "best_psnr" if scope == "best" else "last_psnr"
    dists = importance.distributions(run)
    imp = importance.param_importances(run, value_column)
    branches = importance.branch_importances(run, value_column)
    made = {
        "learning_curves": figures.learning_curves(run, summary.winner,
                                                   report_dir / "learning_curves.png"),
        "best_so_far": figures.best_so_far(run, report_dir / "best_so_far.png"),
        "parallel_coordinates": figures.parallel_coordinates(
            run, dists, value_column, summary.winner, report_dir / "parallel_coordinates.png"),
        "importance": figures.importance_bars(imp, report_dir / "importance.png"),
        "psnr_vs_params": figures.psnr_vs_params(run, dists, value_column, summary.winner,
                                                 report_dir / "psnr_vs_params.png"),
    }
    pics = pictures.draw(run, summary.winner, report_dir / "pictures.png", scope)
    page = _page(run, summary, made, imp, pics, branches)
    return _io.write_text_atomic(report_dir / INDEX, page)


# --- private helpers -----------------------------------------------------------------------------
def _page(run: Run, s: RunSummary, made: dict[str, Path | None], imp: importance.Importance,
          pics: pictures.Pictures, branches: dict[str, importance.Importance] | None = None
          ) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>espcn-tune: {e(s.name)}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>espcn-tune run <code>{e(s.name)}</code></h1>",
             f"<p class='note'>{e(leaderboard.header(run, s.scope))}</p>",
             "<h2>Result</h2>", _result(s), "<h2 id='pictures'>Pictures</h2>", _pictures(pics),
             "<h2>Run</h2>", _facts(run, s),
             "<h2>Leaderboard</h2>", _leaderboard(run, s),
             "<h2>Searched ranges</h2>", _edges(s)]
    captions = {
        "learning_curves": "Validation PSNR against epoch for every trial, on the trials' own "
                           "scale (the reference run in a panel of its own where it lies far "
                           "below them). Vertical lines: the ASHA rungs, where trials were "
                           "compared and the weaker stopped, each with how many trials were "
                           "within noise of its cut; a hollow circle is where a trial was "
                           "stopped, those stopped at one rung spread sideways so each shows.",
        "best_so_far": "Best PSNR the search had found so far against the training samples its "
                       "trials had consumed (left) and against wall-clock time (right). The "
                       "reference run's validations (green) are drawn against time only, when "
                       "they came; they are no part of the search's samples or best (triangles "
                       "at the edge, their PSNR in the legend, where they lie beyond the "
                       "trials' scale).",
        "parallel_coordinates": "Each line is one finished trial through its searched values "
                                "(normalised per axis) to its PSNR, coloured by that PSNR on "
                                "the trials' scale; the winner in black, the reference run "
                                "dashed green, its PSNR written at the end where it lies below "
                                "the axis.",
        "psnr_vs_params": "PSNR against each searched parameter, on the trials' scale; errored "
                          "trials as crosses, the reference run as a green diamond (a "
                          "triangle at the edge, its PSNR in the legend, where it lies beyond "
                          "the trials' scale).",
    }
    for key in ("learning_curves", "best_so_far", "parallel_coordinates", "psnr_vs_params"):
        parts.append(_figure(made.get(key), captions[key]))
    parts.append("<h2>Parameter importance</h2>")
    parts.append(_importance(imp, s.scope))
    parts.append(_figure(made.get("importance"), ""))
    for label, within in (branches or {}).items():  # a conditional choice's own parameters
        parts.append(f"<h3>Among the trials with {html.escape(label)}</h3>")
        parts.append(_importance(within, s.scope))
    errored = run.trials[run.trials["error"].astype(bool)]
    if not errored.empty:
        parts.append("<h2>Errored trials (never ranked)</h2><ul>")
        parts += [f"<li><code>{e(str(t.trial))}</code> ({e(str(t.dir))}): {e(str(t.error_summary))}</li>"
                  for t in errored.itertuples()]
        parts.append("</ul>")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    parts.append(f"<p class='note'>Written by <code>python -m analysis</code> at {stamp} from "
                 f"{e(str(run.run_dir))}.</p></body></html>")
    return "\n".join(parts)


def _result(s: RunSummary) -> str:
    e = html.escape
    rows = [
        ("winner", f"{s.winner} (reached at epoch {s.epoch})"),
        ("PSNR / SSIM", f"{s.psnr:.2f} dB / {s.ssim:.4f}"),
        ("gain over bicubic", f"{s.gain_over_bicubic:+.2f} dB (bicubic {s.bicubic_psnr:.2f} dB)"),
    ]
    d = s.defaults
    if d is None:
        rows.append(("source defaults",
                     "none found (no reference run; no trial ran the source document's defaults)"))
    else:
        rows.append(("source defaults", f"{d.trial}: {d.psnr:.2f} dB, {d.outcome}, "
                                       f"{d.epochs_trained} epochs, {d.gain_over_bicubic:+.2f} dB "
                                       "over bicubic"))
        rows.append(("winner over defaults", f"{d.winner_minus_defaults:+.2f} dB"))
        if d.equal_budget:
            epoch, w, dd = d.equal_budget
            rows.append(("at the defaults' budget", f"by epoch {epoch}: winner {w:.2f} dB vs "
                                                     f"defaults {dd:.2f} dB ({w - dd:+.2f} dB)"))
    searched = ", ".join(f"{k}={leaderboard.format_value(v)}" for k, v in s.winner_params.items())
    rows.append(("winner's searched values", searched))
    return "<table class='facts'>" + "".join(
        f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows) + "</table>"


def _pictures(p: pictures.Pictures) -> str:
    e = html.escape
    notes = "".join(f"<p class='note'>{e(n)}.</p>" for n in p.notes)
    if p.path is None:
        return f"<p>No pictures.</p>{notes}"
    _, _, h, w = p.crops[0]
    clips = len(p.kinds) - p.kinds.count("loses most")
    caption = (f"{h}x{w} crops (HR pixels) of test frames from {clips} different clips, five "
               "ways. Each clip's crop is where the winner gains most over bicubic on that frame "
               "(the largest drop of the squared error against the ground truth; \"loses least\" "
               "where it gains nowhere on the frame)"
               + ("; the last row is where it loses most to bicubic over these frames"
                  if "loses most" in p.kinds else "; it loses to bicubic nowhere on them")
               + ". PSNR on the Y channel of the crop, 8-bit, no border crop.")
    names = list(p.psnr)
    table = ["<table><tr><th>frame</th><th>crop</th>"
             + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>"]
    for k, frame in enumerate(p.frames):
        top, left, _, _ = p.crops[k]
        table.append(f"<tr><td>{e(frame)}</td><td>{e(p.kinds[k])}, row {top}, column {left}</td>"
                     + "".join(f"<td>{p.psnr[n][k]:.2f} dB</td>" for n in names) + "</tr>")
    table.append("</table>")
    return _figure(p.path, caption) + "".join(table) + notes


def _facts(run: Run, s: RunSummary) -> str:
    e = html.escape
    r = run.record
    b = r.budget
    sched = r.scheduler
    rows = [
        ("command", shlex.join(r.command) or "not recorded"),
        ("space file", str(r.space_file or "not recorded")),
        ("searched", "; ".join(f"{p.name}: {p.describe()}" for p in run.ranges())),
        ("started / finished", f"{r.started} / {r.finished or 'not finished'}"),
        ("wall time", format_duration(s.wall_time_s)),
        ("trials", s.trials_text()),
        ("training samples, all trials", f"{s.total_samples:,}" + (
            f" (and {s.reference_samples:,} for the reference run)"
            if s.reference_outcome is not None else "")),
        ("budget per trial", f"{b.epochs} epochs of {b.epoch_samples} samples, validation every "
                             f"{b.validation_interval}" if b else "not recorded"),
        ("scheduler", sched.type + (f", grace {sched.grace_period}, reduction factor "
                                    f"{sched.reduction_factor}, rungs at epochs "
                                    f"{', '.join(map(str, sched.rungs)) or 'none'}"
                                    if sched.type == "asha" else "")),
        ("evaluation", s.evaluation),
        ("versions", ", ".join(f"{k} {v}" for k, v in r.versions.items())),
    ]
    return "<table class='facts'>" + "".join(
        f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows) + "</table>"


def _leaderboard(run: Run, s: RunSummary) -> str:
    e = html.escape
    heads, rows = leaderboard.table_rows(run, s.scope)
    out = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in heads) + "</tr>"]
    for row in rows:
        cls = "winner" if row[1] == s.winner else "error" if row[-1].startswith("error") else ""
        out.append(f"<tr class='{cls}'>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    out.append("</table><p class='note'>tied: the trial's per-frame PSNRs, paired with the "
               "winner's on the same validation frames, differ by a mean within two standard "
               "errors of zero (yes) or not (no); only trials that trained as far as the winner "
               "are compared with it, and none where the run recorded no per-frame PSNR.")
    cuts = leaderboard.rung_story(run)
    if cuts:
        out.append(" at cut: the same test at each ASHA rung against the trial across the cut "
                   "(a stopped trial against the weakest that went on, a trial that went on "
                   "against the best stopped): tie r1 (within noise of the cut at rung 1), "
                   "below or above r1 (a stopped trial clearly below or above it), each with "
                   "its PSNR there minus that trial's, in dB: a few thousandths that the test "
                   "still tells apart are told apart on these frames only.</p>")
        out.append("<h3>ASHA's cut at each rung</h3><ul>"
                   + "".join(f"<li>{e(cut.describe())}</li>" for cut in cuts) + "</ul>")
    else:
        out.append("</p>")
    return "".join(out)


def _edges(s: RunSummary) -> str:
    e = html.escape
    if not s.edge_warnings:
        return ("<p>No searched parameter has the winner, or most of the top quarter of trials, "
                "within 5% of an edge of its range (measured on its own scale).</p>")
    items = "".join(f"<li>{e(line)}</li>" for line in s.edge_warnings)
    return (f"<ul>{items}</ul><p class='note'>Within 5% of the range's width from an edge, "
            "measured on the parameter's own scale (log for log-uniform).</p>")


def _importance(imp: importance.Importance, scope: str) -> str:
    e = html.escape
    if imp.values is None:
        return f"<p>{e(imp.reason or 'not available')}.</p>"
    rows = "".join(f"<tr><td>{e(k)}</td><td>{v:.3f}</td></tr>" for k, v in imp.values.items())
    top = (f" (what the best {imp.target_quantile:.0%} of them share against all of them)"
           if imp.target_quantile is not None else "")
    note = (f"Optuna's {imp.evaluator} on an in-memory study of the {imp.n_trials} finished, "
            f"non-errored trials{top}, each valued by its {scope} PSNR. Trials stopped early by "
            "ASHA count with the PSNR they had reached, which favours settings that learn fast.")
    caveats = "".join(f"<li>{e(c)}</li>" for c in imp.caveats)
    warn = (f"<p class='note' style='color:#a00'>Do not read these shares alone:</p>"
            f"<ul class='note' style='color:#a00'>{caveats}</ul>" if caveats else "")
    return (f"<table><tr><th>parameter</th><th>importance</th></tr>{rows}</table>"
            f"<p class='note'>{e(note)}</p>{warn}")


def _figure(path: Path | None, caption: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<figure><a href='{html.escape(path.name)}'><img alt='{html.escape(path.stem)}' "
            f"src='data:image/png;base64,{data}'></a>"
            f"<figcaption class='note'>{html.escape(caption)}</figcaption></figure>")
