"""Which differences between trials are within noise: the paired per-frame test, and ASHA's cut
at each rung.

Two validations of the same frames are *tied* when the mean of their paired per-frame PSNR
differences is within two standard errors of zero (`tied_with`). The leaderboard uses it against
the winner; here it also tells the story of each ASHA rung.

At a rung (an epoch where ASHA compares the trials that reach it) some trials went on and the
others were stopped. The cut falls between the weakest trial that went on (the *last in*) and
the best one stopped there (the *first out*), by their PSNR at that epoch. A trial is *at the
cut* when its per-frame PSNRs at that epoch are tied with those of the trial across the cut from
it (a stopped trial with the last in, a trial that went on with the first out), and so is the
trial it is tied with: among the trials at the cut, which went on was a coin toss. A stopped
trial clearly better than the last in (ASHA compares each trial with the results recorded at the
rung *so far*, so a later, weaker trial can still go on) is *above* the cut; one clearly worse is
*below* it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import pandas as pd

from analysis.tables import FRAMES


def tied_with(reference: Sequence[float] | None, frames: Sequence[float] | None) -> bool | None:
    """Whether the mean of the paired differences ``frames - reference`` is within two standard
    errors (std with ddof=1 over sqrt(n)) of zero; None when either is missing, their lengths
    differ or there are fewer than 2 frames."""
    if not (_is_frames(reference) and _is_frames(frames)) or len(reference) != len(frames):
        return None
    if len(frames) < 2:  # no standard error from one frame
        return None
    diff = [f - r for f, r in zip(frames, reference, strict=True)]
    se = statistics.stdev(diff) / math.sqrt(len(diff))
    return abs(statistics.fmean(diff)) <= 2 * se


@dataclass(frozen=True)
class RungCut:
    """ASHA's cut at one rung (see the module)."""

    rung: int  # counted from 1
    epoch: int
    went_on: tuple[str, ...]  # trials that validated at this epoch and trained past it
    stopped: tuple[str, ...]  # trials stopped here
    psnr: dict[str, float]  # each of them: its PSNR at this epoch
    last_in: str | None  # the weakest that went on
    first_out: str | None  # the best stopped
    # Each trial against the one across the cut: "tie" (at the cut), "above" or "below" (a
    # stopped trial clearly above or below the last in); absent where nothing can be paired.
    marks: dict[str, str]
    # Each trial's PSNR here minus that of the trial across the cut from it (dB).
    gaps: dict[str, float]

    @property
    def at_cut(self) -> list[str]:
        return [t for t, m in self.marks.items() if m == "tie"]

    def describe(self) -> str:
        """One line: where the cut fell and how many trials were within noise of it."""
        n = len(self.went_on) + len(self.stopped)
        head = (f"rung {self.rung} (epoch {self.epoch}): {n} trial{'s' if n != 1 else ''}, "
                f"{len(self.went_on)} went on")
        if self.last_in is None or self.first_out is None:
            return head + ("; none stopped" if self.first_out is None else "; none went on")
        apart = self.psnr[self.last_in] - self.psnr[self.first_out]
        cut = (f"; the cut fell between {self.psnr[self.last_in]:.4f} dB ({self.last_in}, the "
               f"weakest that went on) and {self.psnr[self.first_out]:.4f} dB "
               f"({self.first_out}, the best stopped), {abs(apart):.4f} dB "
               f"{'apart' if apart >= 0 else 'the wrong way round'}")
        if not self.marks:
            return head + cut + "; no per-frame PSNRs to test it with"
        tied = len(self.at_cut)
        verdict = (f"{tied} of {n} within noise of it (paired per-frame test): which of those "
                   "went on was a coin toss" if tied else
                   "none within noise of it on these frames (paired per-frame test); but the "
                   "trials share one seed, and another moves each by about as much as a small "
                   "gap (docs/analysis.md)")
        above = [t for t, m in self.marks.items() if m == "above"]
        late = (f"; {len(above)} stopped clearly above the last in (ASHA judges each trial "
                "against the results at the rung so far)" if above else "")
        return head + cut + "; " + verdict + late


def rung_cuts(results: pd.DataFrame, trials: pd.DataFrame, rungs: Sequence[int],
              skip: Collection[str] = ()) -> list[RungCut]:
    """The cut at each rung (epochs ``rungs``) among the trials in ``trials`` (the tables'
    columns ``trial``, ``outcome``, ``error``), their validations in ``results`` (``trial``,
    ``epoch``, ``psnr``, `FRAMES`); errored trials and ``skip`` (the reference run beside the
    search) take no part. A rung no trial was stopped at or went on from is left out."""
    outcomes = {str(t): str(o) for t, o, err in zip(trials["trial"], trials["outcome"],
                                                     trials["error"], strict=True)
                if not err and str(t) not in skip}
    last_epoch = results.groupby("trial")["epoch"].max().to_dict()
    cuts = []
    for k, epoch in enumerate(rungs, 1):
        here = results[(results["epoch"] == epoch) & results["trial"].isin(list(outcomes))]
        psnr = {str(t): float(p) for t, p in zip(here["trial"], here["psnr"], strict=True)
                if math.isfinite(float(p)) and float(p) > 0}  # a diverged trial's 0 dB is no score
        frames = {str(t): f for t, f in zip(here["trial"], here[FRAMES], strict=True)}
        went_on = tuple(t for t in psnr if last_epoch[t] > epoch)
        # Stopped here: its last validation is this rung's, and the scheduler ended it.
        stopped = tuple(t for t in psnr
                        if last_epoch[t] == epoch and outcomes[t].startswith("stopped"))
        if not went_on and not stopped:
            continue
        last_in = min(went_on, key=lambda t: psnr[t], default=None)
        first_out = max(stopped, key=lambda t: psnr[t], default=None)
        marks: dict[str, str] = {}
        gaps: dict[str, float] = {}
        if last_in is not None and first_out is not None:
            for t in (*went_on, *stopped):
                other = first_out if t in went_on else last_in
                gaps[t] = psnr[t] - psnr[other]
                mark = _mark(frames.get(other), frames.get(t), gaps[t], t in stopped)
                if mark is not None:
                    marks[t] = mark
            # A trial another is tied with across the cut is at the cut too, its gap to the
            # nearest of those.
            tied_out = [t for t in stopped if marks.get(t) == "tie"]
            tied_in = [t for t in went_on if marks.get(t) == "tie"]
            if tied_out:
                marks[last_in] = "tie"
                gaps[last_in] = psnr[last_in] - max(psnr[t] for t in tied_out)
            if tied_in:
                marks[first_out] = "tie"
                gaps[first_out] = psnr[first_out] - min(psnr[t] for t in tied_in)
        cuts.append(RungCut(k, epoch, went_on, stopped, {t: psnr[t] for t in (*went_on, *stopped)},
                            last_in, first_out, marks, gaps))
    return cuts


def cut_marks(cuts: Sequence[RungCut]) -> dict[str, str]:
    """Each trial's marks over the rungs it was judged at, in words for a table column, with
    its PSNR there against the trial across the cut: "tie r1 -0.002" (at the cut of rung 1,
    0.002 dB under the last in), "below r2 -0.129", "above r1 +0.010" (stopped ones only),
    joined by commas; a trial that went on clearly above every cut gets none. A gap of a few
    thousandths of a dB that the paired test still calls "below" is told apart on these frames
    only: the gap says how little that is."""
    out: dict[str, list[str]] = {}
    for cut in cuts:
        for t, mark in cut.marks.items():
            if mark != "clear":
                out.setdefault(t, []).append(f"{mark} r{cut.rung} {cut.gaps[t]:+.3f}")
    return {t: ", ".join(m) for t, m in out.items()}


# --- private helpers -----------------------------------------------------------------------------
def _mark(other: Any, frames: Any, ahead: float, stopped: bool) -> str | None:
    """``frames`` against ``other`` across the cut (``ahead``: its PSNR minus the other's)."""
    tied = tied_with(other, frames)
    if tied is None:
        return None
    if tied:
        return "tie"
    if not stopped:
        return "clear"  # went on, clearly above the best stopped: nothing to tell
    return "above" if ahead > 0 else "below"


def _is_frames(v: Any) -> TypeGuard[Sequence[float]]:
    return isinstance(v, Sequence) and not isinstance(v, str)
