"""``python -m analysis RUN_DIR``: leaderboard, Parquet tables and an HTML report of one run.

Writes ``RUN_DIR/analysis/results.parquet`` and ``trials.parquet`` (``--tables-dir`` elsewhere) and
the report into ``RUN_DIR/report/`` (``--report-dir``); both are derived files and are rewritten
on every call. Never needs Ray: works on finished and interrupted runs.

Exit status: 0 done; 1 an output could not be written; 2 bad input (not a run folder, a run where
no trial finished a validation without error, a bad option).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from analysis._io import positive_int
from analysis.run_folder import REPORT_SUBDIR, TABLES_SUBDIR
from trainable.errors import InputError

log = logging.getLogger("analysis")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Rank the trials of an espcn-tune run, write its tables (Parquet) and an "
                    "HTML report. Reads the run folder only; Ray is not needed.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder, runs/NAME")
    p.add_argument("--scope", choices=("best", "last"), default="best",
                   help="rank by the best validated PSNR of each trial (default) or by its last")
    p.add_argument("--report-dir", type=Path, metavar="PATH",
                   help=f"where the report goes (default RUN_DIR/{REPORT_SUBDIR})")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report and figures")
    p.add_argument("--tables-dir", type=Path, metavar="PATH",
                   help="where results.parquet and trials.parquet go "
                        f"(default RUN_DIR/{TABLES_SUBDIR})")
    p.add_argument("--compare", type=Path, metavar="RUN_DIR2",
                   help="also print this run and RUN_DIR2 side by side")
    p.add_argument("--top", type=positive_int, metavar="N",
                   help="print only the first N rows of the leaderboard (the report keeps all)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse already printed
        return int(e.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)
    from analysis import leaderboard
    from analysis.tables import load_run, write_tables

    try:
        run = load_run(args.run_dir)
        leaderboard.winner(run, args.scope)  # zero finished trials: stop before writing anything
        other = load_run(args.compare) if args.compare else None
        if other is not None:
            leaderboard.winner(other, args.scope)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    print(leaderboard.render(run, args.scope, args.top))
    from analysis.summary import edge_warnings

    at_edges = edge_warnings(run, args.scope)
    if at_edges:
        print("\nRanges that may be too narrow:")
        print("\n".join(f"  {line}" for line in at_edges))
    if other is not None:
        from analysis.compare import render_comparison

        print()
        print(render_comparison(run, other, args.scope))
    written: list[Path] = []
    try:
        # trials.parquet carries the tie marks of this scope's ranking and those at each rung.
        tied = run.trials.assign(tied=leaderboard.tied_column(run, args.scope),
                                 at_cut=leaderboard.cut_column(run))
        written += write_tables(dataclasses.replace(run, trials=tied),
                                args.tables_dir or run.run_dir / TABLES_SUBDIR)
        if not args.no_report:
            from analysis.report import write_report

            written.append(write_report(run, args.report_dir or run.run_dir / REPORT_SUBDIR,
                                        args.scope))
    except OSError as e:
        print(f"error: cannot write {e.filename or 'an output'}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    print()
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
