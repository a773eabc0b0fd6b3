"""``python -m trainable.data build|check``: build a data tree's frame caches ahead of a search, or
check every frame of it.

``build`` decodes the splits (train, val and test by default) into this machine's frame cache, on
every core, with a progress bar: a search (or training) started afterwards maps them at once. On
a cluster, run it on each node (in the cluster's setup commands, say): the cache is per machine.
``check`` decodes every frame of the splits once, in parallel, and writes nothing. Both go on
past bad frames and end with one list of every one of them (file and reason), exit code 2.

The data come from a config (``--config``, ``--set``) as for ``python -m trainable``, or from
``--data`` and the other data options alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from trainable.config import DataSpec
from trainable.config_file import load_config
from trainable.errors import BadFrames, InputError
from trainable.sources import SPLITS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainable.data",
                                description=__doc__.split("\n\n")[0].split(": ", 1)[-1])
    p.add_argument("command", choices=("build", "check"),
                   help="build: decode into the frame cache; check: decode every frame, write "
                        "nothing")
    p.add_argument("--config", help="YAML file of TrainConfig keys: its data, data_lr, scale and "
                                     "cache_dir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable)")
    p.add_argument("--data", help="'builtin', a Vimeo90K root or a folder of clip folders "
                                  "(overrides the config's)")
    p.add_argument("--splits", default=",".join(SPLITS),
                   help=f"comma-separated splits (default: {','.join(SPLITS)})")
    p.add_argument("--workers", type=int, metavar="N",
                   help="decoding processes (default: every core this process may use)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the result")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    try:
        return _run(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _spec(args: argparse.Namespace) -> DataSpec:
    sets = list(args.set)
    if args.data:
        data = args.data if args.data == "builtin" else str(Path(args.data).resolve())
        sets.append(f"data={data}")
    return load_config(args.config, sets).data_spec


def _splits(value: str) -> tuple[str, ...]:
    splits = tuple(s.strip() for s in value.split(",") if s.strip())
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise InputError(f"--splits {value!r}: each must be one of {', '.join(SPLITS)}")
    return tuple(dict.fromkeys(splits))


def _run(args: argparse.Namespace) -> int:
    from trainable.store import check_splits, open_split

    if args.workers is not None and args.workers < 1:
        raise InputError(f"The value of `--workers` is {args.workers}, but must be >= 1.")
    spec, splits = _spec(args), _splits(args.splits)
    start = time.perf_counter()
    # Every split planned first (list files, folders, every frame's header): a bad frame anywhere
    # is listed now, with all the others, not after the first split's decoding.
    counts = check_splits(spec, splits, decode=args.command == "check", workers=args.workers)
    if args.command == "check":
        print(f"checked: every frame of {', '.join(f'{s} ({n} clips)' for s, n in counts.items())}"
              f" decoded in {time.perf_counter() - start:.1f} s; no bad frame")
        return 0
    problems: list[str] = []
    for split in splits:  # each split built even when one before it met bad frames
        try:
            data = open_split(spec, split, workers=args.workers)
        except BadFrames as e:
            problems += e.problems
            continue
        size = sum(g.hr.nbytes + g.lr.nbytes for g in data.groups)
        print(f"{split}: {data.num_clips} clips, {size / 1e9:.2f} GB in {data.folder}")
    if problems:
        raise BadFrames(problems, f"building {', '.join(splits)} of {spec.data}")
    print(f"built in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
