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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis import record
from trainable.errors import InputError
from trainable.names import safe_name
from tune.space import SearchSpec

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
    p.add_argument("--fuse", type=int, metavar="N",
                   help="train up to N trials of one shape as one network per GPU (fused "
                        "trials; `resources.fuse`); 1: each trial alone")
    p.add_argument("--data", help="'builtin', a Vimeo90K root or a folder of clips")
    p.add_argument("--address", help="join an existing Ray cluster, e.g. 'auto'")
    p.add_argument("--ray-token-file", metavar="PATH",
                   help="with --address: send this Ray auth token to the cluster (token auth); "
                        "without it no local token is sent")
    p.add_argument("--max-failures", type=int, default=2, metavar="N",
                   help="retry a failed trial (an error, a lost node) up to N times from its "
                        "latest checkpoint (default 2; a resume keeps the run's)")
    p.add_argument("--resume", metavar="NAME", help="finish an interrupted run of this name")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the space and print the plan; starts no Ray")
    p.add_argument("--check-data", action="store_true",
                   help="before the search, decode every frame of the data once (in parallel, "
                        "with a progress bar) and list every bad one; without it only the "
                        "frames' headers are checked at start")
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
            "fuse": args.fuse,
            "data": data, "seed": args.seed}


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    storage = _storage(args.storage)
    if args.resume:
        return _resume(args, storage)
    return _start(args, argv, storage)


# --- a new run -----------------------------------------------------------------------------------
def _start(args: argparse.Namespace, argv: list[str], storage: Path) -> int:
    from tune.run_folder import now
    from tune.space import describe_plan, load_space, with_overrides

    if args.name is not None:
        safe_name(args.name, "`--name`")
    if args.max_failures < 0:
        raise InputError(f"The value of `--max-failures` is {args.max_failures}, but must be 0 "
                         "or more (retries of a failed trial)")
    spec = with_overrides(load_space(args.space), **_overrides(args))
    name = args.name or safe_name(f"{spec.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}",
                                  "the run name made from the space file's name (use --name)")
    run_dir = storage / name
    _refuse_existing(run_dir, storage)
    address = _cluster_address(args)  # a bad one is refused in seconds, before the data is read
    _check_before_ray(spec, args)
    if args.dry_run:
        print(describe_plan(spec))
        print(f"Run folder:   {run_dir} (a new run; checked, nothing written there yet)")
        return 0
    held = _claim(run_dir)  # noqa: F841 - released when the process ends
    started = now()
    try:  # a start refused before the search runs must not claim the run name
        ray_run = _start_ray_for(spec, args, address, resume=False)
        tuner = _make_tuner(spec, run_dir, resume=False, verbose=args.verbose,
                            max_failures=args.max_failures)
    except BaseException:
        _unclaim(run_dir)
        raise
    rec = _new_record(spec, run_dir, args, argv, started, ray_run)
    record.write(run_dir, rec)
    return _search(tuner, spec, run_dir, rec, ray_run.resume_command(storage, run_dir))


def _refuse_existing(run_dir: Path, storage: Path) -> None:
    if not record.exists(run_dir):
        return
    if record.read(run_dir).finished:
        raise InputError(f"{run_dir}: a finished run of this name exists (its results: python -m "
                         f"analysis {shlex.quote(str(run_dir))}); choose another --name")
    raise InputError(f"{run_dir}: a run of this name exists; finish it with --storage "
                     f"{shlex.quote(str(storage))} --resume {run_dir.name}, or choose another "
                     "--name")


# --- a resume ------------------------------------------------------------------------------------
def _resume(args: argparse.Namespace, storage: Path) -> int:
    from tune.ray_edge.state_repair import RAY_STATE_FILES, repair_state
    from tune.run_folder import in_use
    from tune.space import describe_plan

    run_dir = storage / safe_name(args.resume, "`--resume`")
    if not run_dir.is_dir():
        raise InputError(f"--resume {args.resume}: no run of that name in {storage}")
    rec = record.read(run_dir)
    if rec.finished:  # nothing to do: no Ray, nothing written
        print(f"{run_dir}: this run finished at {rec.finished}; nothing to resume. Its results: "
              f"python -m analysis {shlex.quote(str(run_dir))}")
        return 0
    if not any(run_dir.glob(RAY_STATE_FILES[0].format("*"))):
        raise InputError(f"{run_dir}: this search never started (no Ray experiment state), "
                         f"so there is nothing to resume; remove the folder and start it "
                         f"again with --name {run_dir.name}")
    spec = _resume_spec(rec, run_dir)
    if in_use(run_dir):  # what `_claim` refuses below, said before the data is opened
        raise InputError(f"{run_dir}: another search is writing this run right now; wait for it "
                         "to finish")
    address = _cluster_address(args)  # a bad one is refused in seconds, before the data is read
    _check_before_ray(spec, args)
    if args.dry_run:
        print(describe_plan(spec))
        print(f"Run folder:   {run_dir} (a resume; checked, nothing written there yet)")
        return 0
    held = _claim(run_dir)  # noqa: F841 - released when the process ends
    ray_run = _start_ray_for(spec, args, address, resume=True, killed_node=rec.ray_node_id,
                             killed_session=rec.ray_session_dir)
    changed = repair_state(run_dir, Path(rec.ray_session_dir) if rec.ray_session_dir else None)
    if changed:
        log.warning("finished the copy of Ray's files the killed driver left half done (%s)",
                    ", ".join(changed))
    # The next repair reads only this driver's session.
    rec = rec.replace(ray_session_dir=ray_run.session_dir, ray_node_id=ray_run.node_id)
    record.write(run_dir, rec)
    tuner = _make_tuner(spec, run_dir, resume=True, verbose=args.verbose)
    return _search(tuner, spec, run_dir, rec, ray_run.resume_command(storage, run_dir))


def _resume_spec(rec: record.RunRecord, run_dir: Path) -> SearchSpec:
    """The spec of the run being resumed, from the copy of its space in the run record."""
    from tune.space import load_space, spec_from_document, with_overrides

    if isinstance(rec.space, Mapping):
        return spec_from_document(rec.space, Path(rec.space_file or "space.yaml"),
                                  f"{record.path(run_dir)} (the space the run started with)")
    # A run recorded before the record kept its space: the file, as it is now.
    log.warning("%s keeps no copy of its space; reading %s as it is now", record.path(run_dir),
                rec.space_file)
    if not rec.space_file:
        raise InputError(f"{record.path(run_dir)}: records neither its space nor its space file; "
                         "this run cannot be resumed")
    return with_overrides(load_space(rec.space_file), **rec.overrides)


# --- both: the search itself ---------------------------------------------------------------------
def _search(tuner: Any, spec: SearchSpec, run_dir: Path, rec: record.RunRecord,
            resume_cmd: str) -> int:
    """Run the Tuner (and the reference run beside it) to the end or to Ctrl-C."""
    from tune.ray_edge.signals import SigintWatch
    from tune.run_folder import now
    from tune.run_readme import write_readme
    from tune.summary import summarise

    reference = _start_reference(spec, run_dir)
    readme = write_readme(run_dir, rec, resume_cmd)
    print(f"run folder: {run_dir} (what is where: {readme})", flush=True)
    sigint = SigintWatch()
    best = None
    try:
        grid = tuner.fit()
        interrupted = sigint.interrupted()
        if reference is not None and not interrupted:
            _finish_reference(reference)
        best = summarise(grid, spec, run_dir, rec)
        rec = rec.replace(finished=None if interrupted else now(), best_trial=best)
        record.write(run_dir, rec)
        write_readme(run_dir, rec, resume_cmd)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        sigint.restore()
        if spec.fuse > 1:
            from tune import fusion

            fusion.stop_engines()
    if interrupted:
        print(f"\ninterrupted; resume with:\n  {resume_cmd}", file=sys.stderr)
        return 130
    return 0 if best is not None else 1


def _start_reference(spec: SearchSpec, run_dir: Path) -> Any:
    """Train the source document's defaults beside the search (a Ray task with one trial's
    resources) where they lie outside the space; None where there is nothing to run."""
    from tune import reference

    if not spec.include_defaults or spec.reference_inside or reference.is_finished(run_dir):
        return None
    import ray

    cfg = reference.reference_config(spec.base).replace(num_threads=max(1, int(spec.cpus_per_trial)))
    # Beside fused trials on a card, whose engine holds 0.9 of it (`tune.fusion`): the rest.
    gpus = spec.gpus_per_trial if spec.fuse == 1 or not spec.gpus_per_trial else 0.1
    task = ray.remote(num_cpus=spec.cpus_per_trial, num_gpus=gpus,
                      max_retries=2)(reference.train_reference)
    log.info("reference run (the source document's defaults at this budget) in %s",
             reference.reference_dir(run_dir))
    return task.remote(cfg, str(reference.reference_dir(run_dir)), spec.params, gpus)


def _finish_reference(ref: Any) -> None:
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


def _cluster_address(args: argparse.Namespace) -> str | None:
    """The Ray cluster this run joins (``--address``, else RAY_ADDRESS), resolved and checked in
    seconds (`tune.ray_edge.cluster`); None: a Ray of its own, or the caller's, already running.
    Sets the token settings first: Ray reads them when it is imported."""
    from tune.ray_edge import cluster, environment

    environment.token_auth_for_address(args.address, args.ray_token_file)
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # a caller's own Ray (the tests' session)
        return None
    flag, address = (("--address", args.address) if args.address else
                     ("RAY_ADDRESS", os.environ.get("RAY_ADDRESS")))
    if not address:
        return None
    address = cluster.resolve(address, flag)
    cluster.check(address, flag, args.ray_token_file)
    return address


def _start_ray(args: argparse.Namespace, address: str | None) -> bool:
    """Start Ray, or join the cluster at ``address`` (`_cluster_address`); True when this driver
    started a local Ray."""
    import ray

    if ray.is_initialized():  # a caller's own Ray (the tests' session)
        return False
    # Without an address, "local": ray.init(address=None) would join the last `ray start`
    # cluster recorded in /tmp/ray/ray_current_cluster, even a dead one (it then waits minutes
    # on its GCS), and this driver would take that cluster for its own. Joining one is
    # `--address auto` (docs/clusters.md).
    try:
        ray.init(address=address or "local", include_dashboard=args.dashboard,
                 dashboard_host="127.0.0.1", log_to_driver=args.verbose,
                 configure_logging=args.verbose)
    except (ConnectionError, ValueError) as e:
        if not address:
            raise
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        hint = ("" if args.ray_token_file or os.environ.get("RAY_AUTH_MODE") else
                "; if the cluster uses token auth, pass --ray-token-file with its token")
        raise InputError(f"--address {address}: cannot join a Ray cluster there "
                         f"({first}){hint}") from None
    return address is None


@dataclass(frozen=True)
class RayRun:
    """The Ray this driver runs its search on."""

    session_dir: str | None  # its session folder, the only place a later state repair reads
    node_id: str | None  # the local node it started (None: it joined a cluster)
    reaper: Any  # the watchdog process; its pipe closes when this driver ends
    address: str | None = None  # the cluster it joined (None: a Ray of its own)
    token_file: str | None = None  # the token it sent that cluster (--ray-token-file)

    def resume_command(self, storage: Path, run_dir: Path) -> str:
        """The command that finishes this run, on the same cluster with the same token."""
        cmd = ["python", "-m", "tune.run", "--storage", str(storage), "--resume", run_dir.name]
        if self.address:
            cmd += ["--address", self.address]
        if self.token_file:
            cmd += ["--ray-token-file", str(Path(self.token_file).expanduser().resolve())]
        return shlex.join(cmd)


def _start_ray_for(spec: SearchSpec, args: argparse.Namespace, address: str | None, *,
                   resume: bool, killed_node: str | None = None,
                   killed_session: str | None = None) -> RayRun:
    """Decode train and val into the frame cache, then start (or join) Ray with every Ray
    setting the search needs (`_check_before_ray` has checked the data)."""
    from tune.ray_edge import environment, processes, state_repair, version

    _prepare_data(spec)
    environment.local_token_auth(address, args.verbose)
    import ray

    version.check()
    environment.driver_env(args.verbose)
    if resume:  # what the killed driver's own Ray left behind
        stopped = processes.reap_node(killed_node, killed_session)
        if stopped:
            log.info("stopped %d Ray processes the interrupted search left running",
                     len(stopped))
    started_local = _start_ray(args, address)
    node_id = processes.local_node_id() if started_local else None
    session = state_repair.session_dir()
    reaper = processes.start_reaper(node_id, session)
    _check_resources(spec, ray.cluster_resources())
    return RayRun(session, node_id, reaper, address, args.ray_token_file if address else None)


def _new_record(spec: SearchSpec, run_dir: Path, args: argparse.Namespace, argv: list[str],
                started: str, ray_run: RayRun) -> record.RunRecord:
    from trainable.evaluate import convention
    from tune.reference import reference_config
    from tune.run_folder import versions

    base = spec.base
    return record.RunRecord(
        name=run_dir.name,
        command=("python", "-m", "tune.run", *argv),
        space_file=str(spec.path.resolve()),
        space=dict(spec.document),
        overrides={k: v for k, v in _overrides(args).items() if v is not None},
        params=spec.params,
        budget=record.Budget(base.epochs, base.epoch_samples, base.validation_interval),
        scheduler=record.SchedulerPlan(spec.scheduler, spec.grace_period, spec.reduction_factor,
                                       tuple(spec.rungs())),
        search=record.SearchPlan(spec.algorithm, spec.search_seed, spec.n_startup_trials),
        evaluation="PSNR/SSIM on " + convention(base.crop_border),
        default_config=reference_config(base).to_dict() if spec.include_defaults else None,
        versions=versions(),
        ray_session_dir=ray_run.session_dir,
        ray_node_id=ray_run.node_id,
        started=started,
    )


def _check_before_ray(spec: SearchSpec, args: argparse.Namespace) -> None:
    """Every check of a start or a resume that needs no Ray, in the order they run; `--dry-run`
    runs exactly these (and stops), so that what it passes a real start passes too. The run name
    and the run folder's state are checked by the caller before this."""
    if spec.base.data != "builtin" and not Path(spec.base.data).exists():
        raise InputError(f"--data {spec.base.data}: no such folder")
    _check_local_gpus(spec, args)
    # The data last: every split the search needs (test too), each frame's header or with
    # --check-data each frame decoded; a missing list or bad frames fail here, in seconds.
    # The caches are built after (`_prepare_data`), by a real start only.
    check_data(spec, decode_all=args.check_data)


def _check_local_gpus(spec: SearchSpec, args: argparse.Namespace) -> None:
    """GPUs asked of a local Ray on a machine without one: refused before Ray starts, in
    ``--dry-run`` too (Ray would start, wait for a GPU that never comes, and fail seconds later).
    A cluster (``--address``) or a caller's own Ray is judged by its resources instead."""
    ray = sys.modules.get("ray")
    joins = args.address or os.environ.get("RAY_ADDRESS") or (ray and ray.is_initialized())
    if spec.gpus_per_trial <= 0 or joins:
        return
    import torch

    if not torch.cuda.is_available():
        raise InputError(f"--gpus-per-trial {spec.gpus_per_trial:g} (or `resources.gpus` in "
                         f"{spec.path.name}): this machine has 0 GPUs (torch sees no CUDA "
                         "device); use --gpus-per-trial 0 to run on the CPU, or --address to "
                         "join a cluster that has GPUs")


def _claim(run_dir: Path) -> Any:
    from tune.run_folder import lock

    return lock(run_dir)


# Every split a search needs: train and val for its trials, test for `analysis.retrain` after it.
SEARCH_SPLITS = ("train", "val", "test")


def check_data(spec: SearchSpec, *, decode_all: bool = False) -> None:
    """Every split the search will need, checked at once before anything starts (no Ray, no run
    folder; a dry run may call it too): the list files (the test list included), folders and
    every frame's header, or with ``decode_all`` every frame decoded. A BadFrames (exit 2) lists
    every bad frame of them all; a split already cached is taken as it is (its key holds every
    frame's stamp)."""
    from trainable.store import check_splits

    counts = check_splits(spec.base.data_spec, SEARCH_SPLITS, decode=decode_all)
    log.info("data checked%s: %s", " (every frame decoded)" if decode_all else "",
             ", ".join(f"{split} {n} clips" for split, n in counts.items()))


def _prepare_data(spec: SearchSpec) -> None:
    """Decode train and val into the machine's frame cache once, before any trial starts (after
    `check_data`)."""
    from trainable.store import open_split

    cfg = spec.base
    for split in ("train", "val"):
        data = open_split(cfg.data_spec, split)
        log.info("data %s: %d clips, %d target frames", split, data.num_clips, data.num_targets)


def _check_resources(spec: SearchSpec, resources: dict[str, float]) -> None:
    gpus = resources.get("GPU", 0.0)
    if spec.gpus_per_trial > 0 and gpus < spec.gpus_per_trial:
        raise InputError(f"--gpus-per-trial {spec.gpus_per_trial}: the Ray cluster has "
                         f"{gpus:g} GPUs; use --gpus-per-trial 0 to run on the CPU")
    if spec.cpus_per_trial > resources.get("CPU", 0.0):
        raise InputError(f"--cpus-per-trial {spec.cpus_per_trial}: the Ray cluster has "
                         f"{resources.get('CPU', 0):g} CPUs")
    if spec.fuse > 1:
        log.info("fused trials on %s: %d per engine", f"{gpus:g} GPUs" if spec.gpus_per_trial
                 else "the CPU", spec.fuse)
        return
    where = (f"{spec.gpus_per_trial:g} GPU per trial ({gpus:g} GPUs in the cluster)"
             if spec.gpus_per_trial else "the CPU (no GPU requested)")
    per_gpu = math.floor(1 / spec.gpus_per_trial) if spec.gpus_per_trial else 0
    log.info("running on %s, %g CPUs per trial%s", where, spec.cpus_per_trial,
             f", up to {per_gpu} trials per GPU" if per_gpu > 1 else "")


def _make_tuner(spec: SearchSpec, run_dir: Path, *, resume: bool, verbose: bool,
                max_failures: int = 2) -> Any:
    from ray import tune

    from tune.progress import ProgressPrinter
    from tune.ray_edge import trials as ray_trials
    from tune.ray_edge.loggers import HParamsLogger
    from tune.ray_edge.trial_states import TrialStates
    from tune.search import METRIC, MODE, make_scheduler, make_searcher, num_samples, param_space

    trainable, spec, extra = _trainable(spec, run_dir)
    if resume:
        return tune.Tuner.restore(str(run_dir), trainable, resume_unfinished=True,
                                  resume_errored=True)
    run_config = tune.RunConfig(
        name=run_dir.name,
        storage_path=str(run_dir.parent),
        checkpoint_config=ray_trials.checkpoint_config(spec.scheduler, METRIC, MODE),
        failure_config=tune.FailureConfig(max_failures=max_failures),
        callbacks=[ProgressPrinter(spec, str(run_dir)), HParamsLogger(spec.params), TrialStates(),
                   *extra],
        verbose=2 if verbose else 0,
    )
    tune_config = tune.TuneConfig(
        metric=METRIC, mode=MODE, scheduler=make_scheduler(spec),
        # Concurrency is capped by the searcher (ConcurrencyLimiter); a second cap here would turn
        # synchronous HyperBand off and is ignored for random/grid anyway.
        search_alg=make_searcher(spec, run_dir), num_samples=num_samples(spec),
        reuse_actors=ray_trials.REUSE_ACTORS, trial_dirname_creator=ray_trials.trial_dirname)
    return tune.Tuner(trainable, param_space=param_space(spec), tune_config=tune_config,
                      run_config=run_config)


def _trainable(spec: SearchSpec, run_dir: Path) -> tuple[Any, SearchSpec, list[Any]]:
    """What Ray runs as a trial, the spec its searcher is built from, and the callbacks it
    needs: a solo trial with its resources, or a fused trial's thin client of the engines
    started here (`tune.fusion`), with the concurrency cap their slots give."""
    import dataclasses

    import ray
    from ray import tune

    from tune import fusion
    from tune.trial import run_trial

    if spec.fuse == 1:
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, spec=spec, cpus=spec.cpus_per_trial,
                                 run_dir=str(run_dir)),
            {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})
        return trainable, spec, []
    engines = fusion.start_engines(spec, run_dir.name, ray.cluster_resources().get("GPU", 0.0))
    log.info("fused trials: %d engine(s), up to %d trials of one shape trained as one network "
             "in each", len(engines), spec.fuse)
    spec = dataclasses.replace(spec, max_concurrent=spec.fuse * len(engines))
    trainable = tune.with_resources(
        tune.with_parameters(fusion.run_member, spec=spec, engines=engines, run_dir=str(run_dir)),
        {"cpu": fusion.CLIENT_CPUS})
    return trainable, spec, [fusion.FusionCallback(engines)]


if __name__ == "__main__":
    raise SystemExit(main())
