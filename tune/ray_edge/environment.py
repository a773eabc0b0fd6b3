"""Ray's settings that must be in the environment before ``import ray`` or before the Tuner is
built: snapshot timing, the token for a cluster, and Ray's own output, which the driver keeps out
of the terminal unless ``-v`` is given (its lines are `tune.progress`'s)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from trainable.errors import InputError


def driver_env(verbose: bool = False) -> None:
    """Ray's settings for the driver, before the Tuner is built."""
    # Experiment state after every result, so a resume after kill -9 repeats nothing.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    # ...which Ray then warns about at every report; the snapshot is tiny next to a trial's work.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if verbose:
        return
    # Ray 2.60's default output engine prints its "Configuration for experiment" box (search
    # algorithm, scheduler, trials) and "To visualize your results with TensorBoard, run:
    # tensorboard --logdir /tmp/ray/.../driver_artifacts" at any verbosity, verbose=0 included
    # (ray/tune/experimental/output.py, `experiment_started`); that folder is Ray's staging copy,
    # and the summary names the run folder instead. The legacy engine, Ray's documented
    # RAY_AIR_NEW_OUTPUT=0, prints nothing at verbose=0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    quiet_failures()
    # Optuna's "A new study created in Journal with name: ..." (INFO) on every start.
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def quiet_failures() -> None:
    """Keep Ray's own words on a failed attempt out of the terminal (without -v): the driver
    says it in one line instead (`tune.progress`: the trial, its node, the epoch its retry starts
    from; error.txt keeps the traceback). After a node loss Ray 2.60 printed (measured):

    - Tune's "Trial task failed for trial ..." with the whole traceback (``ActorUnavailableError
      ... Socket closed``); Ray's documented TUNE_PRINT_ALL_TRIAL_ERRORS=0 turns it off;
    - the raylet's error messages, which the driver's listener prints with their colour codes
      whatever ``log_to_driver`` says; ``ray._private.worker._worker_logs_enabled`` (the switch
      Ray's own debugger uses to mute them) turns them off;
    - at the end, ExperimentAnalysis's "Failed to fetch metrics for N trial(s)" for a trial
      that had not reported yet: its logger is set to errors only."""
    import logging

    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    import ray._private.worker

    ray._private.worker._worker_logs_enabled = False
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def local_token_auth(address: str | None, verbose: bool) -> None:
    """Name token auth for a Ray this driver starts itself, so that Ray does not announce it.

    A new local Ray 2.60 turns token auth on by itself when RAY_AUTH_MODE is unset and says so
    at every start ("Token authentication is enabled for this Ray cluster. Set
    RAY_AUTH_MODE=disabled to opt out", `_warn_token_auth_enabled`). Setting the mode it would
    choose anyway, RAY_AUTH_MODE=token (Ray's documented switch), starts the same cluster, token
    made in ~/.ray/auth_token if missing, without the notice. Only for a local start (a cluster
    is joined as the user set it up: `token_auth_for_address`), only where the user set no mode,
    and only before ``import ray``: Ray reads the mode into its config when it is imported."""
    joins = address or os.environ.get("RAY_ADDRESS")
    if verbose or joins or "RAY_AUTH_MODE" in os.environ or "ray" in sys.modules:
        return
    os.environ["RAY_AUTH_MODE"] = "token"


def token_auth_for_address(address: str | None, token_file: str | None) -> None:
    """Send this machine's Ray token to a cluster only when the user asked for it.

    Ray 2.60 starts every local cluster with token auth (the token in ~/.ray/auth_token), and
    a driver sends the token only in token mode. Turning that on by itself for any ``--address``
    would hand the local token to whatever host the address names, so it is the user's call:
    ``--ray-token-file PATH`` (or their own RAY_AUTH_MODE=token, which Ray reads as it is)."""
    if token_file is None:
        return
    if not address:
        raise InputError("--ray-token-file: only applies with --address (a local Ray makes its "
                         "own token)")
    path = Path(token_file).expanduser()
    if not path.is_file():
        raise InputError(f"--ray-token-file {token_file}: no such file")
    # Before ray is imported: Ray reads both when it loads its config.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path.resolve())

