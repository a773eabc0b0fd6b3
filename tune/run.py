"""``python -m tune.run --space lr_sched.yaml``: search training hyper-parameters on Ray Tune.

ASHA stops poor configurations early (its rungs are in epochs of a fixed sample count), Optuna's
TPE proposes the next ones, and every trial runs the real AMP training loop. The run folder
(``--storage/--name``) holds Ray's experiment, the Optuna study, checkpoints and
its own record (``espcn_tune.record``); ``python -m analysis`` and ``python -m analysis.export``
read it afterwards.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from trainable.errors import InputError
from trainable.names import safe_name

log = logging.getLogger("tune")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tune.run", description=__doc__.split("\n")[0])
    p.add_argument("--space", default="lr_sched.yaml",
                   help="search-space file: a bare name is looked up in search_spaces/")
    p.add_argument("--name", help="run name (default: <space>-<time>)")
    p.add_argument("--storage", default="runs", help="folder holding run folders (default: ./runs)")
    p.add_argument("--num-samples", type=int, help="number of trials (overrides `trials`)")
    p.add_argument("--max-concurrent", type=int, help="trials running at once")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions share a GPU")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial")
    p.add_argument("--data", help="'builtin', a Vimeo90K root or a folder of clips")
    p.add_argument("--address", help="join an existing Ray cluster, e.g. 'auto'")
    p.add_argument("--ray-token-file", metavar="PATH",
                   help="with --address: send this Ray auth token to the cluster (token auth); "
                        "without it no local token is sent")
    p.add_argument("--resume", metavar="NAME", help="finish an interrupted run of this name")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the space and print the plan; starts no Ray")
    p.add_argument("--seed", type=int, help="seed for the searcher and the trials")
    p.add_argument("--dashboard", action="store_true", help="start Ray's dashboard (localhost)")
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray's own progress output")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return _main(args, argv)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the search started (Ray's start, data decoding)
        print("\ninterrupted", file=sys.stderr)
        return 130


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    data = args.data
    if data and data != "builtin":
        data = str(Path(data).resolve())  # trials run in another working directory
    return {"trials": args.num_samples, "max_concurrent": args.max_concurrent,
            "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
            "data": data, "seed": args.seed}


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    from tune.ray_edge import environment, processes, state_repair, version
    from tune.run_folder import is_run_folder, lock, now, read_meta, versions, write_meta
    from tune.space import describe_plan, load_space, with_overrides

    storage = _storage(args.storage)
    if args.name is not None:
        safe_name(args.name, "`--name`")
    if args.resume:
        run_dir = storage / safe_name(args.resume, "`--resume`")
        if not run_dir.is_dir():
            raise InputError(f"--resume {args.resume}: no run of that name in {storage}")
        meta = read_meta(run_dir)
        if not any(run_dir.glob(state_repair.RAY_STATE_FILES[0].format("*"))):
            raise InputError(f"{run_dir}: this search never started (no Ray experiment state), "
                             f"so there is nothing to resume; remove the folder and start it "
                             f"again with --name {run_dir.name}")
        spec = _resume_spec(meta, run_dir)
    else:
        spec = with_overrides(load_space(args.space), **_overrides(args))
        if spec.base.data != "builtin" and not Path(spec.base.data).exists():
            raise InputError(f"--data {spec.base.data}: no such folder")
    if args.dry_run:
        print(describe_plan(spec))
        return 0

    if not args.resume:
        name = args.name or safe_name(f"{spec.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}",
                                      "the run name made from the space file's name (use --name)")
        run_dir = storage / name
        if is_run_folder(run_dir):
            raise InputError(f"{run_dir}: a run of this name exists; finish it with "
                             f"--resume {name}, or choose another --name")
    held = lock(run_dir)  # noqa: F841 - released when the process ends
    started = now()
    _prepare_data(spec)
    environment.token_auth_for_address(args.address, args.ray_token_file)
    import ray

    version.check()
    environment.driver_env()
    if args.resume:  # what the killed driver's own Ray left behind
        stopped = processes.reap_node(meta.get("ray_node_id"))
        if stopped:
            log.info("stopped %d Ray processes the interrupted search left running",
                     len(stopped))
    started_local = _start_ray(args)
    node_id = processes.local_node_id() if started_local else None
    reaper = processes.start_reaper(node_id)  # noqa: F841 - its pipe closes when this process ends
    _check_resources(spec, ray.cluster_resources())
    if args.resume:
        recorded = meta.get("ray_session_dir")
        changed = state_repair.repair_state(run_dir, Path(recorded) if recorded else None)
        if changed:
            log.warning("finished the copy of Ray's files the killed driver left half done (%s)",
                        ", ".join(changed))
        # The next repair reads only this driver's session.
        write_meta(run_dir, {**read_meta(run_dir), "ray_session_dir": state_repair.session_dir(),
                             "ray_node_id": node_id})
    try:
        tuner = _make_tuner(spec, run_dir, resume=bool(args.resume), verbose=args.verbose)
    except BaseException:
        if not args.resume:
            _unclaim(run_dir)
        raise
    if not args.resume:
        # Only now, with the Tuner built: a start refused above must not claim the run name.
        write_meta(run_dir, _new_meta(spec, run_dir, args, argv, versions(), started, node_id))
    reference = _start_reference(spec, run_dir)
    resume_cmd = f"python -m tune.run --storage {shlex.quote(str(storage))} --resume {run_dir.name}"
    from tune.run_readme import write_readme

    readme = write_readme(run_dir, read_meta(run_dir), resume_cmd)
    print(f"run folder: {run_dir} (what is where: {readme})", flush=True)
    from tune.ray_edge.signals import SigintWatch

    sigint = SigintWatch()
    try:
        grid = tuner.fit()
        interrupted = sigint.interrupted()
        if reference is not None and not interrupted:
            _finish_reference(reference)
        meta = read_meta(run_dir)
        from tune.summary import summarise

        meta["finished"] = None if interrupted else now()
        best = summarise(grid, spec, run_dir, meta)
        meta["best_trial"] = best
        write_meta(run_dir, meta)
        write_readme(run_dir, meta, resume_cmd, best)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        sigint.restore()
    if interrupted:
        print(f"\ninterrupted; resume with:\n  {resume_cmd}", file=sys.stderr)
        return 130
    return 0 if best is not None else 1


def _resume_spec(meta: dict[str, Any], run_dir: Path):
    """The spec of the run being resumed, from the copy of its space in the run record."""
    from tune.run_folder import meta_path
    from tune.space import load_space, spec_from_document, with_overrides

    doc = meta.get("space_document")
    if isinstance(doc, dict):
        return spec_from_document(doc, Path(str(meta.get("space_file", "space.yaml"))),
                                  f"{meta_path(run_dir)} (the space the run started with)")
    # A run recorded before the record kept its space: the file, as it is now.
    log.warning("%s keeps no copy of its space; reading %s as it is now", meta_path(run_dir),
                meta.get("space_file"))
    return with_overrides(load_space(meta["space_file"]), **meta.get("overrides", {}))


def _start_reference(spec, run_dir: Path):
    """Train the source document's defaults beside the search (a Ray task with one trial's
    resources) where they lie outside the space; None where there is nothing to run."""
    from tune import reference

    if not spec.include_defaults or spec.reference_inside or reference.is_finished(run_dir):
        return None
    import ray

    cfg = reference.reference_config(spec.base).replace(num_threads=max(1, int(spec.cpus_per_trial)))
    task = ray.remote(num_cpus=spec.cpus_per_trial, num_gpus=spec.gpus_per_trial,
                      max_retries=2)(reference.train_reference)
    log.info("reference run (the source document's defaults at this budget) in %s",
             reference.reference_dir(run_dir))
    return task.remote(cfg, str(reference.reference_dir(run_dir)), spec.gpus_per_trial)


def _finish_reference(ref) -> None:
    """Wait for the reference run; its failure is reported, never fatal to the search."""
    import ray

    try:
        ray.get(ref)
    except Exception as e:  # noqa: BLE001 - the search's own results stand without it
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        log.warning("the reference run failed: %s", first)


def _unclaim(run_dir: Path) -> None:
    """Undo what a refused start made: the Optuna journal (a new run refuses an existing one, so
    it is this start's own), the lock file, and the folder when that leaves it empty."""
    from tune.run_folder import LOCK_FILE
    from tune.search import study_journal

    for path in (study_journal(run_dir), run_dir / LOCK_FILE):
        path.unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:  # not empty: something else is there; leave it
        pass


def _storage(value: str) -> Path:
    storage = Path(value).resolve()
    if storage.exists() and not storage.is_dir():
        raise InputError(f"--storage {value}: is a file, but must be a folder that holds run "
                         "folders")
    return storage


def _start_ray(args: argparse.Namespace) -> bool:
    """Start (or join, with --address) Ray; True when this driver started a local Ray."""
    import ray

    if ray.is_initialized():  # a caller's own Ray (the tests' session)
        return False
    joins = bool(args.address or os.environ.get("RAY_ADDRESS"))
    # A local instance binds to loopback only; --address joins a cluster as it is set up.
    local = {} if args.address else {"_node_ip_address": "127.0.0.1"}
    try:
        ray.init(address=args.address, include_dashboard=args.dashboard,
                 dashboard_host="127.0.0.1", log_to_driver=args.verbose,
                 configure_logging=args.verbose, **local)
    except (ConnectionError, ValueError) as e:
        if not args.address:
            raise
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        hint = ("" if args.ray_token_file or os.environ.get("RAY_AUTH_MODE") else
                "; if the cluster uses token auth, pass --ray-token-file with its token")
        raise InputError(f"--address {args.address}: cannot join a Ray cluster there "
                         f"({first}){hint}") from None
    return not joins


def _new_meta(spec, run_dir: Path, args, argv, vers, started, node_id: str | None
              ) -> dict[str, Any]:
    from trainable.evaluate import convention
    from tune.ray_edge.state_repair import session_dir
    from tune.reference import reference_config

    # The source document's defaults at this run's budget, on its data: the reference run, and
    # what the analysis and --retrain compare the winner against.
    defaults = reference_config(spec.base) if spec.include_defaults else None
    return {
        "name": run_dir.name,
        "command": ["python", "-m", "tune.run", *argv],
        "space_file": str(spec.path.resolve()),
        "overrides": {k: v for k, v in _overrides(args).items() if v is not None},
        "spec": spec.to_dict(),
        # The space as this run started, command-line overrides applied: a resume rebuilds the
        # spec from this copy, never from the file, which may have been edited or moved since.
        "space_document": dict(spec.document),
        "searched": [p.name for p in spec.params],
        "metric": "psnr",
        "mode": "max",
        "max_epochs": spec.base.epochs,
        "epoch_samples": spec.base.epoch_samples,
        "validation_interval": spec.base.validation_interval,
        "scheduler": {"type": spec.scheduler, "grace_period": spec.grace_period,
                      "reduction_factor": spec.reduction_factor,
                      "rungs": spec.rungs() if spec.scheduler == "asha" else []},
        "evaluation": "PSNR/SSIM on " + convention(spec.base.crop_border),
        "default_config": defaults.to_dict() if defaults else None,
        "versions": vers,
        "ray_session_dir": session_dir(),
        "ray_node_id": node_id,  # the local Ray this driver started (None: it joined one)
        "started": started,
        "finished": None,
    }


def _prepare_data(spec) -> None:
    """Decode the data set into the machine's frame cache once, before any trial starts."""
    from trainable.store import open_split

    cfg = spec.base
    for split in ("train", "val"):
        data = open_split(cfg.data, split, scale=cfg.scale, data_lr=cfg.data_lr,
                          cache_dir=cfg.cache_dir)
        log.info("data %s: %d clips, %d target frames (%s)", split, data.num_clips,
                 data.num_targets, data.source)


def _check_resources(spec, resources: dict[str, float]) -> None:
    gpus = resources.get("GPU", 0.0)
    if spec.gpus_per_trial > 0 and gpus < spec.gpus_per_trial:
        raise InputError(f"--gpus-per-trial {spec.gpus_per_trial}: the Ray cluster has "
                         f"{gpus:g} GPUs; use --gpus-per-trial 0 to run on the CPU")
    if spec.cpus_per_trial > resources.get("CPU", 0.0):
        raise InputError(f"--cpus-per-trial {spec.cpus_per_trial}: the Ray cluster has "
                         f"{resources.get('CPU', 0):g} CPUs")
    where = (f"{spec.gpus_per_trial:g} GPU per trial ({gpus:g} GPUs in the cluster)"
             if spec.gpus_per_trial else "the CPU (no GPU requested)")
    per_gpu = math.floor(1 / spec.gpus_per_trial) if spec.gpus_per_trial else 0
    log.info("running on %s, %g CPUs per trial%s", where, spec.cpus_per_trial,
             f", up to {per_gpu} trials per GPU" if per_gpu > 1 else "")


def _make_tuner(spec, run_dir: Path, *, resume: bool, verbose: bool):
    from ray import tune

    from tune.progress import ProgressPrinter
    from tune.ray_edge import trials as ray_trials
    from tune.search import METRIC, MODE, make_scheduler, make_searcher, param_space
    from tune.trial import run_trial

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec, cpus=spec.cpus_per_trial,
                             run_dir=str(run_dir)),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})
    if resume:
        return tune.Tuner.restore(str(run_dir), trainable, resume_unfinished=True,
                                  resume_errored=True)
    run_config = tune.RunConfig(
        name=run_dir.name,
        storage_path=str(run_dir.parent),
        checkpoint_config=ray_trials.checkpoint_config(spec.scheduler, METRIC, MODE),
        failure_config=tune.FailureConfig(max_failures=2),
        callbacks=[ProgressPrinter(spec, str(run_dir))],
        verbose=2 if verbose else 0,
    )
    tune_config = tune.TuneConfig(
        metric=METRIC, mode=MODE, scheduler=make_scheduler(spec),
        # Concurrency is capped by the searcher (ConcurrencyLimiter); a second cap here would turn
        # synchronous HyperBand off and is ignored for random/grid anyway.
        search_alg=make_searcher(spec, run_dir), num_samples=spec.trials,
        reuse_actors=ray_trials.REUSE_ACTORS, trial_dirname_creator=ray_trials.trial_dirname)
    return tune.Tuner(trainable, param_space=param_space(spec), tune_config=tune_config,
                      run_config=run_config)


if __name__ == "__main__":
    raise SystemExit(main())
