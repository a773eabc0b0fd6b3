"""Mutation testing (issue 26): mutmut over one module at a time, against that module's own tests.

    flock /tmp/espcn-heavy.lock nice -n 19 python bench/mutation.py trainable/schedule.py
    python bench/mutation.py --list          # the modules and the test command of each

mutmut (``pip install -e ".[mutation]"``) plants one small bug at a time in the module (an
operator swapped, a constant changed, an argument dropped, ...) and runs the tests that reach the
mutated function; a mutant that no test fails *survived*. mutmut reads its settings from the
``pyproject.toml`` beside it and writes its mutated copy (``mutants/``) there, so each module is
run in a scratch copy of the committed tree (``--scratch``, /tmp/espcn-mutation/<module> by
default) whose ``pyproject.toml`` gets a ``[tool.mutmut]`` section naming the module and its
tests (`MODULES`): mutmut first runs those tests once to learn which test reaches which function,
then each mutant runs only those, stopping at the first failure (``-x``).

It prints mutmut's counts, the score (killed, timeouts included, over the mutants some test
reaches: "no tests" are those only a GPU, or no test at all, would run) and every mutant left
alive; ``--show`` prints their diffs. docs/development.md lists the survivors and why each is
left; BENCHMARKS.md has the scores. Not part of .ci/run: a run takes minutes (schedule, metrics,
record) to hours (fused.py: about 3.5 h) on 2 cores; `mutmut run NAME...` in the
scratch copy runs chosen mutants (a random sample of them estimates the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["trainable", "tune", "analysis", "search_spaces"]

# Each module's own test files: fast ones, ``-m "not slow"`` (the real Ray searches reach most
# modules too, at minutes per mutant). Only those: every mutant runs the tests that reach its
# function, and a broader file costs each mutant its fixtures (test_analysis.py's report runs
# `python -m analysis` once per worker, 6 s), so a survivor is killed by a test in the module's
# own file.
MODULES: dict[str, list[str]] = {
    "trainable/schedule.py": ["tests/test_schedule.py"],
    "trainable/metrics.py": ["tests/test_metrics.py"],
    "trainable/fused_update.py": ["tests/test_fused_update.py"],
    "trainable/fused.py": ["tests/test_fused.py"],
    "trainable/graphed.py": ["tests/test_graph.py"],
    "trainable/fused_graph.py": ["tests/test_graph.py"],
    "trainable/sampler.py": ["tests/test_sampler_device.py", "tests/test_loop.py"],
    "tune/fusion.py": ["tests/test_fusion.py"],
    "analysis/record.py": ["tests/test_record.py"],
    # A retried trial's outcome (trial_state.json, issue 24) is tested beside its attempts.
    "analysis/outcomes.py": ["tests/test_outcomes.py", "tests/test_trial_attempts.py"],
}
MARKER = "not slow"


def test_command(module: str) -> str:
    return f'python -m pytest -x -q -m "{MARKER}" ' + " ".join(MODULES[module])


def _mutmut_section(module: str) -> str:
    # forkserver: mutmut's own advice for torch (a fork of a process that ran torch's threads can
    # hang); the first collection is shared by every mutant.
    return "\n".join([
        "", "[tool.mutmut]",
        f"source_paths = {json.dumps(PACKAGES)}",
        f"only_mutate = {json.dumps([module])}",
        f"pytest_add_cli_args_test_selection = {json.dumps(MODULES[module])}",
        f"pytest_add_cli_args = {json.dumps(['-m', MARKER, '-p', 'no:cacheprovider'])}",
        'process_isolation = "forkserver"',
        "use_git_change_detection = false",
        "",
    ])


def _scratch_copy(module: str, scratch: Path) -> None:
    """The committed tree (HEAD: a bug planted by hand in the working tree meanwhile stays out
    of it) in ``scratch``, with the module's mutmut settings."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
    with (scratch / "pyproject.toml").open("a", encoding="utf-8") as f:
        f.write(_mutmut_section(module))


def _mutmut(args: list[str], scratch: Path, capture: bool = False) -> str:
    # The scratch copy's packages, not the ones PYTHONPATH or the editable install point at.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=scratch, env=env,
                         check=not capture, capture_output=capture, text=True)
    return out.stdout if capture else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("module", nargs="?", choices=sorted(MODULES))
    ap.add_argument("--list", action="store_true", help="the modules and their test commands")
    ap.add_argument("--scratch", type=Path, help="where to copy the tree (default: /tmp/...)")
    ap.add_argument("--show", action="store_true", help="print each survivor's diff")
    ap.add_argument("--max-children", type=int, default=2)
    args = ap.parse_args(argv)
    if args.list or not args.module:
        for module in MODULES:
            print(f"{module:28s} {test_command(module)}")
        return 0
    module = args.module
    scratch = args.scratch or Path("/tmp/espcn-mutation") / Path(module).stem
    _scratch_copy(module, scratch)
    print(f"{module}: mutants tested by: {test_command(module)}", flush=True)
    _mutmut(["run", "--max-children", str(args.max_children)], scratch)
    _mutmut(["export-cicd-stats"], scratch)
    stats = json.loads((scratch / "mutants" / "mutmut-cicd-stats.json").read_text())
    results = _mutmut(["results", "--all", "true"], scratch, capture=True)
    alive = [(m.group(1), m.group(2)) for m in re.finditer(r"^\s*(\S+): (.+)$", results, re.M)
             if m.group(2) not in ("killed", "timeout")]
    reached = stats["total"] - stats["no_tests"] - stats.get("skipped", 0)
    killed = stats["killed"] + stats["timeout"]
    print(f"\n{module}: {json.dumps(stats)}")
    print(f"{module}: {killed} of {reached} mutants that the tests reach killed "
          f"({100 * killed / max(reached, 1):.1f}%); {stats['no_tests']} reached by no test")
    for name, status in alive:
        print(f"  {status:12s} {name}")
        if args.show:
            print(_mutmut(["show", name], scratch, capture=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
